import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportMlpToOnnx, MetaKey, mlpForward, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { inferOnce, inspectOnnx, formatInspectReport } from '../src/runtime/onnx-inspect.js';
import {
  attr,
  decodeModel,
  encodeModel,
  floatTensor,
  floatValueInfo,
  int64Tensor,
  type OnnxModel,
  type OnnxNode,
} from '../src/util/onnx-proto.js';
import type { MlpPolicySpec } from '../src/types.js';
import { ResrtError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'resrt-onnx-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function save(name: string, bytes: Uint8Array | string): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function randomVec(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal());
}

/**
 * What torch.onnx.export writes for nn.Sequential(Linear, ReLU, Linear) with dynamic_axes: Gemm
 * with transB=1 and [out, in] weights, input 'input.1', a numbered output, dim_param batch axes,
 * optionally a Reshape to [batch, H, A]; no resrt metadata.
 */
function torchLikeModel(
  spec: MlpPolicySpec,
  opts: { reshapeChunk?: boolean; metadata?: Record<string, string> } = {},
): Uint8Array {
  const nodes: OnnxNode[] = [];
  const inits = [];
  let x = 'input.1';
  spec.layers.forEach((layer, li) => {
    const wt = new Float32Array(layer.inDim * layer.outDim);
    for (let i = 0; i < layer.inDim; i++)
      for (let o = 0; o < layer.outDim; o++) wt[o * layer.inDim + i] = layer.weight[i * layer.outDim + o];
    inits.push(floatTensor(`net.${li * 2}.weight`, [layer.outDim, layer.inDim], wt));
    inits.push(floatTensor(`net.${li * 2}.bias`, [layer.outDim], layer.bias));
    const y = `/net/net.${li * 2}/Gemm_output_0`;
    nodes.push({
      name: `/net/net.${li * 2}/Gemm`,
      opType: 'Gemm',
      input: [x, `net.${li * 2}.weight`, `net.${li * 2}.bias`],
      output: [y],
      attribute: [attr.float('alpha', 1), attr.float('beta', 1), attr.int('transB', 1)],
    });
    x = y;
    if (layer.activation === 'relu') {
      nodes.push({
        name: `/net/net.${li * 2 + 1}/Relu`,
        opType: 'Relu',
        input: [x],
        output: [`/net/net.${li * 2 + 1}/Relu_output_0`],
      });
      x = `/net/net.${li * 2 + 1}/Relu_output_0`;
    }
  });
  const { actionDim, chunkLength } = spec.output;
  let outShape: (number | string)[] = ['batch_size', actionDim * chunkLength];
  if (opts.reshapeChunk) {
    inits.push(int64Tensor('/Constant_output_0', [-1, chunkLength, actionDim]));
    nodes.push({
      name: '/Reshape',
      opType: 'Reshape',
      input: [x, '/Constant_output_0'],
      output: ['/Reshape_output_0'],
    });
    x = '/Reshape_output_0';
    outShape = ['batch_size', chunkLength, actionDim];
  }
  nodes[nodes.length - 1].output[0] = '23';
  const model: OnnxModel = {
    irVersion: 8,
    producerName: 'pytorch',
    producerVersion: '2.3.0',
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'main_graph',
      node: nodes,
      initializer: inits,
      input: [floatValueInfo('input.1', ['batch_size', spec.inputs[0].dim])],
      output: [floatValueInfo('23', outShape)],
    },
    metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
  };
  return encodeModel(model);
}

describe('OnnxPolicy.load', () => {
  it('runs a resrt export and matches mlpForward (single and batched)', async () => {
    const rng = new Rng(10);
    const spec = randomMlpSpec({
      inputs: [{ name: 'obs', dim: 12 }],
      hidden: [64, 64],
      actionDim: 4,
      normalize: true,
      rng,
      metadata: { [MetaKey.kind]: 'base', [MetaKey.obsDim]: '12' },
    });
    const path = save('base.onnx', exportMlpToOnnx(spec));
    const policy = await OnnxPolicy.load(path, { expectObsDim: 12, expectActionDim: 4 });
    expect([policy.obsDim, policy.actionDim, policy.chunkLength]).toEqual([12, 4, 1]);
    const obs = randomVec(rng, 12);
    const a = await policy.act(obs);
    expect(maxAbsDiff(a, mlpForward(spec, obs))).toBeLessThanOrEqual(1e-5);
    const batch = randomVec(rng, 12 * 7);
    const out = await policy.runBatch(batch, 7);
    expect(out.valid).toEqual(Array(7).fill(true));
    expect(maxAbsDiff(out.values, mlpForward(spec, batch))).toBeLessThanOrEqual(1e-5);
    await policy.close();
  });

  it('loads a torch.onnx.export-style file (Gemm transB=1, input.1, dim_param batch)', async () => {
    const rng = new Rng(11);
    const spec = randomMlpSpec({ inputs: [{ name: 'obs', dim: 9 }], hidden: [32, 32], actionDim: 3, rng });
    const path = save('torch.onnx', torchLikeModel(spec));
    const policy = await OnnxPolicy.load(path, { expectObsDim: 9, expectActionDim: 3 });
    expect(policy.layout.feeds[0].name).toBe('input.1');
    expect(policy.layout.outputName).toBe('23');
    expect(policy.layout.fixedBatch).toBeNull();
    const obs = randomVec(rng, 9 * 4);
    const out = await policy.runBatch(obs, 4);
    expect(maxAbsDiff(out.values, mlpForward(spec, obs))).toBeLessThanOrEqual(1e-5);
    await policy.close();
  });

  it('loads a model whose weights live in an external-data file next to it', async () => {
    const rng = new Rng(17);
    const spec = randomMlpSpec({ inputs: [{ name: 'obs', dim: 6 }], hidden: [16], actionDim: 2, rng });
    const model = decodeModel(exportMlpToOnnx(spec));
    const chunks: Uint8Array[] = [];
    let offset = 0;
    for (const t of model.graph.initializer) {
      if (!t.rawData || t.dataType !== 1) continue;
      t.externalData = [
        { key: 'location', value: 'external.onnx.data' },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(t.rawData.length) },
      ];
      t.dataLocation = 1;
      chunks.push(t.rawData);
      offset += t.rawData.length;
      delete t.rawData;
    }
    save('external.onnx.data', Buffer.concat(chunks));
    // The edit changes the graph bytes; drop the stale checksum as a hand edit would.
    model.metadataProps = model.metadataProps?.filter((m) => m.key !== MetaKey.checksum);
    const policy = await OnnxPolicy.load(save('external.onnx', encodeModel(model)));
    const obs = randomVec(rng, 6);
    expect(maxAbsDiff(await policy.runChunk(obs), mlpForward(spec, obs))).toBeLessThanOrEqual(1e-5);
    await policy.close();
  });

  it('reads chunk length from a [batch, H, A] output and from metadata for a flat [batch, H*A] one', async () => {
    const rng = new Rng(12);
    const spec = randomMlpSpec({
      inputs: [{ name: 'obs', dim: 5 }],
      hidden: [16],
      actionDim: 2,
      chunkLength: 6,
      rng,
    });
    const reshaped = await OnnxPolicy.load(
      save('chunk3d.onnx', torchLikeModel(spec, { reshapeChunk: true })),
    );
    expect([reshaped.chunkLength, reshaped.actionDim]).toEqual([6, 2]);
    const flat = await OnnxPolicy.load(
      save(
        'chunkflat.onnx',
        torchLikeModel(spec, { metadata: { [MetaKey.chunkLength]: '6', [MetaKey.actionDim]: '2' } }),
      ),
    );
    expect([flat.chunkLength, flat.actionDim, flat.layout.flatChunk]).toEqual([6, 2, true]);
    const obs = randomVec(rng, 5);
    expect(maxAbsDiff(await flat.runChunk(obs), mlpForward(spec, obs))).toBeLessThanOrEqual(1e-5);
    // Without metadata a flat output is a 12-dim action, which the robot check catches.
    await expect(
      OnnxPolicy.load(save('chunkflat-nometa.onnx', torchLikeModel(spec)), { expectActionDim: 2 }),
    ).rejects.toThrow(/gives 12 action dims but the robot\/task has 2/);
    await reshaped.close();
    await flat.close();
  });

  it('loads residual actors with two inputs in either order, or one concatenated input', async () => {
    const rng = new Rng(13);
    for (const inputs of [
      [
        { name: 'obs', dim: 8 },
        { name: 'base_action', dim: 3 },
      ],
      [
        { name: 'base_action', dim: 3 },
        { name: 'observation', dim: 8 },
      ],
    ]) {
      const spec = randomMlpSpec({
        inputs,
        hidden: [16],
        actionDim: 3,
        tanhScale: 0.5,
        rng,
        metadata: { [MetaKey.kind]: 'residual' },
      });
      const policy = await OnnxPolicy.load(save('residual.onnx', exportMlpToOnnx(spec)), {
        residual: true,
        expectObsDim: 8,
        expectActionDim: 3,
      });
      const obs = randomVec(rng, 8);
      const base = randomVec(rng, 3);
      const refInputs = inputs[0].name === 'obs' ? [obs, base] : [base, obs];
      expect(maxAbsDiff(await policy.residual(obs, base), mlpForward(spec, refInputs))).toBeLessThanOrEqual(
        1e-5,
      );
      await policy.close();
    }
    const concat = randomMlpSpec({ inputs: [{ name: 'x', dim: 11 }], hidden: [16], actionDim: 3, rng });
    const policy = await OnnxPolicy.load(save('residual-concat.onnx', exportMlpToOnnx(concat)), {
      residual: true,
    });
    expect([policy.obsDim, policy.actionDim]).toEqual([8, 3]);
    const x = randomVec(rng, 11);
    expect(
      maxAbsDiff(await policy.residual(x.subarray(0, 8), x.subarray(8)), mlpForward(concat, x)),
    ).toBeLessThanOrEqual(1e-5);
    await expect(policy.runChunk(x.subarray(0, 8))).rejects.toThrow(/residual actor/);
    await policy.close();
  });

  it('applies normalization from metadata or a sidecar JSON before the session', async () => {
    const rng = new Rng(14);
    const baked = randomMlpSpec({
      inputs: [{ name: 'obs', dim: 6 }],
      hidden: [16],
      actionDim: 2,
      normalize: true,
      rng,
    });
    const { mean, std } = baked.inputNormalization!;
    const raw: MlpPolicySpec = { ...baked, inputNormalization: undefined };
    const obs = randomVec(rng, 6);
    const want = mlpForward(baked, obs);

    const withMeta: MlpPolicySpec = {
      ...raw,
      metadata: {
        [MetaKey.obsMean]: JSON.stringify(Array.from(mean)),
        [MetaKey.obsStd]: JSON.stringify(Array.from(std)),
      },
    };
    const metaPolicy = await OnnxPolicy.load(save('meta-norm.onnx', exportMlpToOnnx(withMeta)));
    expect(maxAbsDiff(await metaPolicy.runChunk(obs), want)).toBeLessThanOrEqual(1e-5);
    await metaPolicy.close();

    const path = save('sidecar-norm.onnx', exportMlpToOnnx(raw));
    save('sidecar-norm.onnx.json', JSON.stringify({ obs_mean: Array.from(mean), obs_std: Array.from(std) }));
    const sidecarPolicy = await OnnxPolicy.load(path, { requireNormalization: true });
    expect(maxAbsDiff(await sidecarPolicy.runChunk(obs), want)).toBeLessThanOrEqual(1e-5);
    await sidecarPolicy.close();

    const bare = save('bare.onnx', exportMlpToOnnx(raw));
    await expect(OnnxPolicy.load(bare, { requireNormalization: true })).rejects.toThrow(
      /carries no observation normalization/,
    );
    const badSidecar = save('bad.json', JSON.stringify({ obs_mean: [0, 0], obs_std: [1, 1] }));
    await expect(OnnxPolicy.load(bare, { sidecarPath: badSidecar })).rejects.toThrow(
      /2\/2 values for obs dim 6/,
    );
    const declared = exportMlpToOnnx({ ...raw, metadata: { [MetaKey.normalizationBaked]: 'metadata' } });
    await expect(OnnxPolicy.load(save('declared.onnx', declared))).rejects.toThrow(
      /obs_mean\/resrt.obs_std are missing/,
    );
  });

  it('flags NaN outputs as invalid instead of throwing', async () => {
    const rng = new Rng(15);
    const spec = randomMlpSpec({ inputs: [{ name: 'obs', dim: 4 }], hidden: [8], actionDim: 2, rng });
    const policy = await OnnxPolicy.load(save('nan.onnx', exportMlpToOnnx(spec)));
    const obs = Float32Array.of(1, NaN, 0, 0);
    const a = await policy.act(obs);
    expect(Number.isNaN(a[0])).toBe(true);
    expect(policy.lastRunValid).toBe(false);
    const both = await policy.runBatch(Float32Array.of(1, NaN, 0, 0, 1, 2, 3, 4), 2);
    expect(both.valid).toEqual([false, true]);
    await policy.act(Float32Array.of(0, 0, 0, 0));
    expect(policy.lastRunValid).toBe(true);
    await policy.close();
  });

  it('executes chunked models through the chunk executor in act()', async () => {
    const rng = new Rng(16);
    const spec = randomMlpSpec({
      inputs: [{ name: 'obs', dim: 3 }],
      hidden: [8],
      actionDim: 2,
      chunkLength: 4,
      rng,
    });
    const policy = await OnnxPolicy.load(save('chunk-act.onnx', exportMlpToOnnx(spec)), {
      chunk: { mode: 'open-loop', executeSteps: 2 },
    });
    const o1 = randomVec(rng, 3);
    const o2 = randomVec(rng, 3);
    const c1 = mlpForward(spec, o1);
    const c3 = mlpForward(spec, o2);
    const steps = [await policy.act(o1), await policy.act(o2), await policy.act(o2)];
    expect(maxAbsDiff(steps[0], c1.subarray(0, 2))).toBeLessThanOrEqual(1e-5);
    expect(maxAbsDiff(steps[1], c1.subarray(2, 4))).toBeLessThanOrEqual(1e-5); // open loop: o2 ignored
    expect(maxAbsDiff(steps[2], c3.subarray(0, 2))).toBeLessThanOrEqual(1e-5); // re-queried
    policy.reset();
    expect(maxAbsDiff(await policy.act(o2), c3.subarray(0, 2))).toBeLessThanOrEqual(1e-5);
    await policy.close();
  });
});

describe('OnnxPolicy errors', () => {
  it('names shape mismatches and the fix', async () => {
    const rng = new Rng(20);
    const spec = randomMlpSpec({ inputs: [{ name: 'obs', dim: 7 }], hidden: [8], actionDim: 3, rng });
    const path = save('mismatch.onnx', exportMlpToOnnx(spec));
    const err = await OnnxPolicy.load(path, { expectObsDim: 8 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResrtError);
    expect((err as ResrtError).message).toMatch(
      /input 'obs' takes 7 observation values but the task provides 8/,
    );
    expect((err as ResrtError).hint).toMatch(/obs_names/);
    await expect(OnnxPolicy.load(path, { expectActionDim: 4 })).rejects.toThrow(
      /gives 3 action dims but the robot\/task has 4/,
    );
    const twoInputs = randomMlpSpec({
      inputs: [
        { name: 'obs', dim: 7 },
        { name: 'base_action', dim: 3 },
      ],
      hidden: [8],
      actionDim: 3,
      rng,
    });
    await expect(OnnxPolicy.load(save('two.onnx', exportMlpToOnnx(twoInputs)))).rejects.toThrow(/--residual/);
    const residualMeta = randomMlpSpec({
      inputs: [{ name: 'obs', dim: 7 }],
      hidden: [8],
      actionDim: 3,
      rng,
      metadata: { [MetaKey.kind]: 'residual' },
    });
    await expect(OnnxPolicy.load(save('kind.onnx', exportMlpToOnnx(residualMeta)))).rejects.toThrow(
      /residual actor/,
    );
  });

  it('rejects files that are not ONNX, missing files and edited graphs', async () => {
    await expect(OnnxPolicy.load(save('notes.onnx', 'this is not a model\n'))).rejects.toThrow(
      /is not an ONNX model/,
    );
    await expect(OnnxPolicy.load(save('config.json', JSON.stringify({ obs_mean: [1] })))).rejects.toThrow(
      ResrtError,
    );
    await expect(OnnxPolicy.load(save('zeros.onnx', new Uint8Array(64)))).rejects.toThrow(
      /is not an ONNX model/,
    );
    await expect(OnnxPolicy.load(join(dir, 'missing.onnx'))).rejects.toThrow(/does not exist/);
    const rng = new Rng(21);
    const spec = randomMlpSpec({ inputs: [{ name: 'obs', dim: 3 }], hidden: [4], actionDim: 1, rng });
    const model = decodeModel(exportMlpToOnnx(spec));
    model.graph.initializer[0] = floatTensor(
      model.graph.initializer[0].name,
      model.graph.initializer[0].dims,
      new Float32Array(12),
    );
    await expect(OnnxPolicy.load(save('edited.onnx', encodeModel(model)))).rejects.toThrow(
      /does not match its resrt.checksum/,
    );
  });
});

describe('inspectOnnx / inferOnce', () => {
  it('reports shapes, chunk length, metadata and fit', async () => {
    const rng = new Rng(30);
    const spec = randomMlpSpec({
      inputs: [{ name: 'obs', dim: 5 }],
      hidden: [8],
      actionDim: 2,
      chunkLength: 3,
      rng,
      metadata: { [MetaKey.kind]: 'base', [MetaKey.controlHz]: '20' },
    });
    const path = save('inspect.onnx', exportMlpToOnnx(spec));
    const ok = await inspectOnnx(path, { obsDim: 5, actionDim: 2 });
    expect(ok).toMatchObject({
      kind: 'base',
      obsDim: 5,
      actionDim: 2,
      chunkLength: 3,
      dynamicBatch: true,
      checksum: 'ok',
      fits: true,
      normalization: 'none',
    });
    expect(ok.outputs[0].shape).toEqual(['batch', 3, 2]);
    expect(ok.metadata[MetaKey.controlHz]).toBe('20');
    const bad = await inspectOnnx(path, { obsDim: 6, actionDim: 2 });
    expect(bad.fits).toBe(false);
    expect(bad.problems[0].message).toMatch(/takes 5 observation values but the task provides 6/);
    expect(formatInspectReport(bad)).toMatch(/fits: NO/);

    const rows = await inferOnce(path, [0.1, 0.2, 0.3, 0.4, 0.5]);
    const ref = mlpForward(spec, Float32Array.of(0.1, 0.2, 0.3, 0.4, 0.5));
    expect(rows.length).toBe(3);
    expect(maxAbsDiff(rows.flat(), ref)).toBeLessThanOrEqual(1e-5);
    await expect(inferOnce(path, [1, 2])).rejects.toThrow(/takes 5 values, got 2/);
  });
});
