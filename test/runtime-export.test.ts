import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { exportMlpToOnnx, mlpForward, randomMlpSpec, MetaKey } from '../src/runtime/onnx-export.js';
import { decodeModel, decodeModelHeader, graphChecksum } from '../src/util/onnx-proto.js';
import type { MlpPolicySpec } from '../src/types.js';
import { ResrtError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';

async function runOrt(
  bytes: Uint8Array,
  spec: MlpPolicySpec,
  inputs: Float32Array[],
  batch: number,
): Promise<ort.Tensor> {
  const session = await ort.InferenceSession.create(bytes);
  const feeds: Record<string, ort.Tensor> = {};
  spec.inputs.forEach(
    (input, k) => (feeds[input.name] = new ort.Tensor('float32', inputs[k], [batch, input.dim])),
  );
  const out = await session.run(feeds);
  await session.release();
  return out[spec.output.name] as ort.Tensor;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const cases: {
  label: string;
  options: Omit<Parameters<typeof randomMlpSpec>[0], 'rng'>;
  denorm?: boolean;
}[] = [
  {
    label: 'one input, relu',
    options: { inputs: [{ name: 'obs', dim: 11 }], hidden: [64, 64], actionDim: 4 },
  },
  {
    label: 'two inputs (obs, base_action), normalization, tanh scale',
    options: {
      inputs: [
        { name: 'obs', dim: 11 },
        { name: 'base_action', dim: 4 },
      ],
      hidden: [32, 32],
      actionDim: 4,
      tanhScale: 0.2,
      normalize: true,
    },
  },
  {
    label: 'LayerNorm + tanh activations',
    options: {
      inputs: [{ name: 'obs', dim: 9 }],
      hidden: [48, 48],
      actionDim: 3,
      layerNorm: true,
      activation: 'tanh',
    },
  },
  {
    label: 'chunked output with denormalization',
    options: { inputs: [{ name: 'state', dim: 6 }], hidden: [32], actionDim: 2, chunkLength: 8 },
    denorm: true,
  },
];

describe('exportMlpToOnnx round trip through onnxruntime', () => {
  for (const { label, options, denorm } of cases) {
    it(label, async () => {
      const rng = new Rng(label.length);
      const spec = randomMlpSpec({ ...options, rng });
      if (denorm) {
        spec.output.denormalize = {
          mean: Float32Array.from({ length: options.actionDim }, () => rng.normal(0, 0.3)),
          std: Float32Array.from({ length: options.actionDim }, () => rng.range(0.5, 2)),
        };
      }
      const bytes = exportMlpToOnnx(spec);
      for (const batch of [1, 5]) {
        const inputs = spec.inputs.map((i) =>
          Float32Array.from({ length: batch * i.dim }, () => rng.normal(0, 1.5)),
        );
        const out = await runOrt(bytes, spec, inputs, batch);
        const h = spec.output.chunkLength;
        expect(out.dims).toEqual(h > 1 ? [batch, h, spec.output.actionDim] : [batch, spec.output.actionDim]);
        const ref = mlpForward(spec, inputs);
        expect(maxAbsDiff(out.data as Float32Array, ref)).toBeLessThanOrEqual(1e-5);
        if (spec.output.tanhScale)
          for (const v of ref) expect(Math.abs(v)).toBeLessThanOrEqual(spec.output.tanhScale);
      }
    });
  }

  it('writes opset 17, IR 8, a symbolic batch axis and the metadata convention', () => {
    const rng = new Rng(3);
    const spec = randomMlpSpec({
      inputs: [{ name: 'obs', dim: 5 }],
      hidden: [8],
      actionDim: 2,
      chunkLength: 3,
      rng,
      metadata: {
        [MetaKey.kind]: 'base',
        [MetaKey.obsDim]: '5',
        [MetaKey.controlHz]: '50',
        [MetaKey.obsNames]: JSON.stringify(['a', 'b', 'c', 'd', 'e']),
      },
    });
    const bytes = exportMlpToOnnx(spec);
    const model = decodeModel(bytes);
    expect(model.irVersion).toBe(8);
    expect(model.opsetImport).toEqual([{ version: 17 }]);
    expect(model.graph.input[0].type?.tensorType?.shape?.dim?.[0]).toEqual({ dimParam: 'batch' });
    const header = decodeModelHeader(bytes, 'test');
    expect(header.metadata[MetaKey.kind]).toBe('base');
    expect(header.metadata[MetaKey.actionDim]).toBe('2');
    expect(header.metadata[MetaKey.chunkLength]).toBe('3');
    expect(header.metadata[MetaKey.controlHz]).toBe('50');
    expect(header.metadata[MetaKey.checksum]).toBe(graphChecksum(bytes));
  });

  it('checksum changes when a weight changes', () => {
    const rng = new Rng(4);
    const spec = randomMlpSpec({ inputs: [{ name: 'obs', dim: 3 }], hidden: [4], actionDim: 1, rng });
    const a = decodeModelHeader(exportMlpToOnnx(spec), 'a').metadata[MetaKey.checksum];
    spec.layers[0].weight[0] += 1e-3;
    const b = decodeModelHeader(exportMlpToOnnx(spec), 'b').metadata[MetaKey.checksum];
    expect(a).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(b).not.toBe(a);
  });

  it('rejects inconsistent specs with a ResrtError naming the problem', () => {
    const rng = new Rng(5);
    const spec = randomMlpSpec({ inputs: [{ name: 'obs', dim: 3 }], hidden: [4], actionDim: 2, rng });
    expect(() => exportMlpToOnnx({ ...spec, output: { ...spec.output, actionDim: 3 } })).toThrow(
      /last layer outputs 2 values/,
    );
    expect(() => exportMlpToOnnx({ ...spec, inputs: [{ name: 'obs', dim: 4 }] })).toThrow(ResrtError);
    const nan = randomMlpSpec({ inputs: [{ name: 'obs', dim: 3 }], hidden: [4], actionDim: 2, rng });
    nan.layers[1].bias[0] = NaN;
    expect(() => exportMlpToOnnx(nan)).toThrow(/layer 1 bias\[0\] is NaN/);
    expect(() => exportMlpToOnnx({ ...spec, metadata: { [MetaKey.actionDim]: '7' } })).toThrow(/contradicts/);
  });
});
