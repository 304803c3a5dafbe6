// Base + residual fused into one onnxruntime session (fused-graph.ts, fused-policy.ts), checked
// against the two-call composition through real onnxruntime, and the layouts that fall back.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ComposedPolicy } from '../src/runtime/compose.js';
import { fuseBaseAndResidual, unsupportedContent } from '../src/runtime/fused-graph.js';
import { FusedPolicy, loadLoopPolicy, planResidualSwap } from '../src/runtime/fused-policy.js';
import { exportMlpToOnnx, MetaKey, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { decodeModel, encodeModel } from '../src/util/onnx-proto.js';
import { nativeUnavailableReason } from '../src/runtime/ort-sync.js';
import type { MlpPolicySpec } from '../src/types.js';
import { Rng } from '../src/util/rng.js';

const dir = mkdtempSync(join(tmpdir(), 'resrt-fused-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const rng = new Rng(5);
let fileCount = 0;
function save(bytes: Uint8Array): string {
  const path = join(dir, `m${fileCount++}.onnx`);
  writeFileSync(path, bytes);
  return path;
}

const OBS = 9;
const A = 3;
function baseSpec(extra: Partial<Parameters<typeof randomMlpSpec>[0]> = {}): MlpPolicySpec {
  return randomMlpSpec({
    inputs: [{ name: 'obs', dim: OBS }],
    hidden: [32, 32],
    actionDim: A,
    rng,
    ...extra,
  });
}
function residualSpec(
  inputs: { name: string; dim: number }[] = [
    { name: 'obs', dim: OBS },
    { name: 'base_action', dim: A },
  ],
  extra: Partial<Parameters<typeof randomMlpSpec>[0]> = {},
): MlpPolicySpec {
  const spec = randomMlpSpec({ inputs, hidden: [32, 32], actionDim: A, tanhScale: 0.4, rng, ...extra });
  spec.metadata[MetaKey.kind] = 'residual';
  return spec;
}
/** The spec without its baked normalization, the statistics moved to resrt.obs_mean/obs_std. */
function metadataNormalized(spec: MlpPolicySpec, obsDim: number): MlpPolicySpec {
  const mean = Array.from({ length: obsDim }, () => rng.normal(0, 1));
  const std = Array.from({ length: obsDim }, () => rng.range(0.5, 2));
  return {
    ...spec,
    metadata: {
      ...spec.metadata,
      [MetaKey.obsMean]: JSON.stringify(mean),
      [MetaKey.obsStd]: JSON.stringify(std),
    },
  };
}

/** Fused and two-call policies act on the same random observations: equal to the last bit. */
async function expectSameAsTwoCalls(
  basePath: string,
  residualPath: string,
  scale = 0.7,
): Promise<FusedPolicy> {
  const base = await OnnxPolicy.load(basePath);
  const residual = await OnnxPolicy.load(residualPath, { residual: true });
  const planned = await FusedPolicy.plan(base, residual);
  if ('reason' in planned) throw new Error(`not fused: ${planned.reason}`);
  const fused = await FusedPolicy.open(planned.plan, { scale });
  const twoCalls = new ComposedPolicy({ base, residual, scale });
  const obs = new Float32Array(OBS);
  for (let n = 0; n < 50; n++) {
    for (let j = 0; j < OBS; j++) obs[j] = rng.normal(0, 2);
    const want = await twoCalls.act(obs);
    const got = fused.act(obs);
    expect(got).toBeInstanceOf(Float32Array); // native mode: synchronous, no Promise
    expect(Array.from(got as Float32Array)).toEqual(Array.from(want));
    expect(Array.from(fused.last!.baseAction)).toEqual(Array.from(twoCalls.last!.baseAction));
    expect(Array.from(fused.last!.residual)).toEqual(Array.from(twoCalls.last!.residual));
    expect(fused.last!.policyVersion).toBe(twoCalls.last!.policyVersion);
  }
  await base.close();
  await residual.close();
  return fused;
}

describe('fused base + residual', () => {
  it('runs onnxruntime synchronously through its native binding', () => {
    // A dependency bump that moves the binding shows here, not as a quietly slower loop.
    expect(nativeUnavailableReason()).toBe('');
  });

  it('equals the two-call composition bit for bit across residual layouts and normalizations', async () => {
    const base = save(exportMlpToOnnx(baseSpec()));
    // Two inputs (obs, base_action).
    (await expectSameAsTwoCalls(base, save(exportMlpToOnnx(residualSpec())))).close();
    // One concatenated [obs | base_action] input, LayerNorm, baked normalization in both.
    const lnBase = save(exportMlpToOnnx(baseSpec({ layerNorm: true, normalize: true })));
    const concat = residualSpec([{ name: 'x', dim: OBS + A }], { layerNorm: true, normalize: true });
    (await expectSameAsTwoCalls(lnBase, save(exportMlpToOnnx(concat)))).close();
    // Different statistics applied in JS: the fused graph takes one observation input per model.
    const metaBase = save(exportMlpToOnnx(metadataNormalized(baseSpec(), OBS)));
    const metaResidual = save(exportMlpToOnnx(metadataNormalized(residualSpec(), OBS)));
    const fused = await expectSameAsTwoCalls(metaBase, metaResidual, 1);
    await fused.close();
    // A base that outputs a chunk of one ([batch, 1, A]) is flattened for the residual.
    const chunkOfOne = baseSpec();
    chunkOfOne.output = { ...chunkOfOne.output, chunkLength: 1 };
    const model = decodeModel(exportMlpToOnnx(chunkOfOne));
    model.graph.output[0].type!.tensorType!.shape!.dim = [
      { dimParam: 'batch' },
      { dimValue: 1 },
      { dimValue: A },
    ];
    const shapeName = 'shape_1xA';
    model.graph.initializer.push({ name: shapeName, dims: [3], dataType: 7, int64Data: [0, 1, A] });
    const last = model.graph.node[model.graph.node.length - 1];
    last.output = ['flat_action'];
    model.graph.node.push({
      name: 'Reshape_out',
      opType: 'Reshape',
      input: ['flat_action', shapeName],
      output: ['action'],
    });
    model.metadataProps = model.metadataProps!.filter((p) => p.key !== MetaKey.checksum);
    (await expectSameAsTwoCalls(save(encodeModel(model)), save(exportMlpToOnnx(residualSpec())))).close();
  });

  it('gives the same results through the public API when the native binding is not there', async () => {
    const base = await OnnxPolicy.load(save(exportMlpToOnnx(baseSpec())));
    const residual = await OnnxPolicy.load(save(exportMlpToOnnx(residualSpec())), { residual: true });
    const planned = await FusedPolicy.plan(base, residual, { forcePublicApi: true });
    if ('reason' in planned) throw new Error(planned.reason);
    const fused = await FusedPolicy.open(planned.plan, { forcePublicApi: true });
    expect(fused.mode).toBe('public-api');
    const twoCalls = new ComposedPolicy({ base, residual });
    const obs = Float32Array.from({ length: OBS }, () => rng.normal(0, 1));
    const got = fused.act(obs);
    expect(got).toBeInstanceOf(Promise);
    expect(Array.from(await got)).toEqual(Array.from(await twoCalls.act(obs)));
    await fused.close();
    await base.close();
    await residual.close();
  });

  it('swaps to a new residual version without a new base session and records its version', async () => {
    const basePath = save(exportMlpToOnnx(baseSpec()));
    const v1 = residualSpec();
    v1.metadata[MetaKey.version] = '1';
    const v2 = residualSpec();
    v2.metadata[MetaKey.version] = '7';
    const loaded = await loadLoopPolicy(basePath, save(exportMlpToOnnx(v1)));
    expect(loaded.fusion).toBe('fused');
    const policy = loaded.policy as FusedPolicy;
    const v2Path = save(exportMlpToOnnx(v2));
    await policy.replace(await planResidualSwap(basePath, v2Path));
    expect(policy.version).toBe(7);
    const base = await OnnxPolicy.load(basePath);
    const residual = await OnnxPolicy.load(v2Path, { residual: true });
    const twoCalls = new ComposedPolicy({ base, residual });
    const obs = Float32Array.from({ length: OBS }, () => rng.normal(0, 1));
    expect(Array.from(policy.act(obs) as Float32Array)).toEqual(Array.from(await twoCalls.act(obs)));
    expect(policy.last!.policyVersion).toBe(7);
    await loaded.close();
    await base.close();
    await residual.close();
  });

  it('falls back to two calls, with the reason, where the layouts do not allow one graph', async () => {
    const residualPath = save(exportMlpToOnnx(residualSpec()));
    // Action chunks: the chunk executor sits between the base and the residual.
    const chunked = await loadLoopPolicy(save(exportMlpToOnnx(baseSpec({ chunkLength: 4 }))), residualPath);
    expect(chunked.policy).toBeInstanceOf(ComposedPolicy);
    expect(chunked.fusion).toMatch(/action chunks \(H = 4\)/);
    await chunked.close();
    // Different opsets: operators change meaning between them.
    const old = decodeModel(exportMlpToOnnx(baseSpec()));
    old.opsetImport = [{ domain: '', version: 13 }];
    old.metadataProps = old.metadataProps!.filter((p) => p.key !== MetaKey.checksum);
    const mixed = await loadLoopPolicy(save(encodeModel(old)), residualPath);
    expect(mixed.policy).toBeInstanceOf(ComposedPolicy);
    expect(mixed.fusion).toMatch(/opset 13 and the residual opset 17/);
    await mixed.close();
    // Explicitly off, and no residual at all.
    const basePath = save(exportMlpToOnnx(baseSpec()));
    expect((await loadLoopPolicy(basePath, residualPath, { fuse: false })).fusion).toBe('fusion turned off');
    expect((await loadLoopPolicy(basePath, undefined)).fusion).toMatch(/no residual/);
  });

  it('does not fuse files whose content the graph surgery would drop', () => {
    const bytes = exportMlpToOnnx(baseSpec());
    expect(unsupportedContent(bytes)).toBeNull();
    // ModelProto field 25 (model-local functions), as torch's dynamo exporter writes them: the tag
    // (25 << 3 | 2 = 202, varint 0xca 0x01) and an empty FunctionProto.
    const withFunctions = new Uint8Array([...bytes, 0xca, 0x01, 0x00]);
    expect(unsupportedContent(withFunctions)).toMatch(/functions/);
    const role = {
      feeds: [{ name: 'obs', role: 'obs' as const }],
      outputName: 'action',
      obsDim: OBS,
      actionDim: A,
      chunkLength: 1,
    };
    const residualRole = {
      feeds: [
        { name: 'obs', role: 'obs' as const },
        { name: 'base_action', role: 'base_action' as const },
      ],
      outputName: 'action',
      obsDim: OBS,
      actionDim: A,
      chunkLength: 1,
    };
    const outcome = fuseBaseAndResidual(withFunctions, role, exportMlpToOnnx(residualSpec()), residualRole, {
      shareObs: true,
    });
    expect(outcome.ok).toBe(false);
    expect(!outcome.ok && outcome.reason).toMatch(/the base file's model has functions/);
  });
});
