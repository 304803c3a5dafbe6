import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ChunkExecutor,
  ComposedPolicy,
  ResidualComposer,
  type ChunkPolicy,
  type ResidualModel,
} from '../src/runtime/compose.js';
import { exportMlpToOnnx, MetaKey, mlpForward, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import type { Policy } from '../src/types.js';
import { Rng } from '../src/util/rng.js';

/** A chunk source whose q-th query (0-based) predicts [100q + 10h + a] for step h, dim a. */
function countingChunks(H: number, A: number, unit = 1): ChunkPolicy & { queries: number } {
  return {
    actionDim: A,
    chunkLength: H,
    queries: 0,
    runChunk(): Float32Array {
      const q = this.queries++;
      return Float32Array.from(
        { length: H * A },
        (_, i) => unit * (100 * q + 10 * Math.floor(i / A) + (i % A)),
      );
    },
  };
}

function run(executor: ChunkExecutor, source: ChunkPolicy, steps: number): number[][] {
  const out: number[][] = [];
  for (let t = 0; t < steps; t++)
    out.push(Array.from(executor.act(new Float32Array(1), (o) => source.runChunk(o)) as Float32Array));
  return out;
}

describe('ChunkExecutor', () => {
  it('open loop executes k of H steps, then re-queries', () => {
    const source = countingChunks(4, 2);
    const ex = new ChunkExecutor(2, 4, { mode: 'open-loop', executeSteps: 2 });
    expect(run(ex, source, 5)).toEqual([
      [0, 1],
      [10, 11],
      [100, 101],
      [110, 111],
      [200, 201],
    ]);
    expect(source.queries).toBe(3);
  });

  it('open loop defaults to the whole chunk and restarts at reset()', () => {
    const source = countingChunks(3, 1);
    const ex = new ChunkExecutor(1, 3);
    expect(run(ex, source, 4).flat()).toEqual([0, 10, 20, 100]);
    ex.reset();
    expect(run(ex, source, 2).flat()).toEqual([200, 210]);
  });

  it('temporal ensembling averages every overlapping prediction with w_i = exp(-m i), oldest first', () => {
    const source = countingChunks(3, 2);
    const m = 0.5;
    const ex = new ChunkExecutor(2, 3, { mode: 'temporal-ensemble', decay: m });
    const got = run(ex, source, 4);
    const w = (i: number): number => Math.exp(-m * i);
    const avg = (preds: number[]): number =>
      preds.reduce((s, p, i) => s + w(i) * p, 0) / preds.reduce((s, _p, i) => s + w(i), 0);
    // Step t sees chunk q (queried at step q) at offset t - q, for the last H chunks.
    const expected = [
      [avg([0]), avg([1])],
      [avg([10, 100]), avg([11, 101])],
      [avg([20, 110, 200]), avg([21, 111, 201])],
      [avg([120, 210, 300]), avg([121, 211, 301])], // chunk 0 no longer covers step 3
    ];
    for (let t = 0; t < 4; t++) for (let a = 0; a < 2; a++) expect(got[t][a]).toBeCloseTo(expected[t][a], 4);
    expect(source.queries).toBe(4);
  });

  it('drops a chunk with NaN so it cannot poison the next steps', () => {
    const ex = new ChunkExecutor(1, 3, { mode: 'open-loop' });
    let q = 0;
    const query = (): Float32Array => (q++ === 0 ? Float32Array.of(1, NaN, 3) : Float32Array.of(7, 8, 9));
    const first = ex.act(new Float32Array(1), query) as Float32Array;
    expect(Number.isNaN(first[0])).toBe(true);
    expect(Array.from(ex.act(new Float32Array(1), query) as Float32Array)).toEqual([7]);
    expect(() => new ChunkExecutor(1, 3, { mode: 'open-loop', executeSteps: 4 })).toThrow(/outside 1..3/);
  });
});

describe('ResidualComposer', () => {
  it('with no residual the composed action is the base, bit for bit (signed zeros included)', () => {
    const composer = new ResidualComposer(5, null, 0.7);
    const base = Float32Array.of(-0, 0, 0.123456789, -1, 1);
    const r = composer.residual(new Float32Array(3), base) as Float32Array;
    expect(Array.from(r)).toEqual([0, 0, 0, 0, 0]);
    const a = composer.compose(base, r);
    for (let i = 0; i < 5; i++) expect(Object.is(a[i], base[i])).toBe(true);
  });

  it('computes clip(base + scale * r, -1, 1) and lets NaN through for the loop to catch', () => {
    const model: ResidualModel = { actionDim: 3, version: 4, residual: () => Float32Array.of(0.5, -1, 2) };
    const composer = new ResidualComposer(3, model, 0.5);
    const base = Float32Array.of(0.2, -0.9, 0.1);
    const r = composer.residual(new Float32Array(1), base) as Float32Array;
    expect(Array.from(composer.compose(base, r))).toEqual([Math.fround(0.2 + 0.25), -1, 1]);
    composer.scale = 0;
    expect(Array.from(composer.compose(base, r))).toEqual(Array.from(base));
    expect(Number.isNaN(composer.compose(Float32Array.of(NaN, 0, 0), r)[0])).toBe(true);
    expect(() => (composer.scale = -0.1)).toThrow(/finite non-negative/);
    expect(() => (composer.scale = NaN)).toThrow(/finite non-negative/);
    expect(() => composer.setResidual({ actionDim: 2, residual: () => new Float32Array(2) })).toThrow(
      /2 action dims but the base has 3/,
    );
  });
});

describe('ComposedPolicy', () => {
  it('wires a synchronous base and residual synchronously and records the step', () => {
    const base: Policy = { actionDim: 2, act: (obs) => Float32Array.of(obs[0], -obs[0]) };
    const residual: ResidualModel = {
      actionDim: 2,
      version: 9,
      residual: (_obs, b) => Float32Array.of(b[1], 1),
    };
    const policy = new ComposedPolicy({ base, residual, scale: 0.5 });
    const a = policy.act(Float32Array.of(0.4));
    expect(a).toBeInstanceOf(Float32Array);
    const last = policy.last!;
    expect(Array.from(last.baseAction)).toEqual([Math.fround(0.4), Math.fround(-0.4)]);
    expect(Array.from(last.residual)).toEqual([Math.fround(-0.4), 1]);
    expect((a as Float32Array)[0]).toBeCloseTo(0.4 - 0.2, 6);
    expect((a as Float32Array)[1]).toBeCloseTo(-0.4 + 0.5, 6);
    expect(last.policyVersion).toBe(9);
    policy.setResidual(null);
    expect(Array.from(policy.act(Float32Array.of(0.4)) as Float32Array)).toEqual(
      Array.from(policy.last!.baseAction),
    );
    expect(policy.last!.policyVersion).toBe(0);
  });

  it('executes a chunked base with temporal ensembling and resets it per episode', () => {
    // Units of 1/1000 keep every prediction inside the [-1, 1] clip.
    const base = countingChunks(2, 1, 1e-3);
    const policy = new ComposedPolicy({ base, chunk: { mode: 'temporal-ensemble', decay: 0 } });
    const steps = [0, 1, 2].map(() => (policy.act(new Float32Array(1)) as Float32Array)[0]);
    const want = [0, (10 + 100) / 2, (110 + 200) / 2].map((v) => v * 1e-3);
    steps.forEach((v, i) => expect(v).toBeCloseTo(want[i], 6));
    policy.reset();
    expect((policy.act(new Float32Array(1)) as Float32Array)[0]).toBeCloseTo(0.3, 6);
  });

  describe('through onnxruntime', () => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'resrt-compose-'));
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('ONNX base + ONNX residual equals the composition of the reference forward passes', async () => {
      const rng = new Rng(40);
      const baseSpec = randomMlpSpec({
        inputs: [{ name: 'obs', dim: 10 }],
        hidden: [32, 32],
        actionDim: 4,
        rng,
      });
      const resSpec = randomMlpSpec({
        inputs: [
          { name: 'obs', dim: 10 },
          { name: 'base_action', dim: 4 },
        ],
        hidden: [32],
        actionDim: 4,
        tanhScale: 0.3,
        rng,
        metadata: { [MetaKey.kind]: 'residual', [MetaKey.version]: '3' },
      });
      writeFileSync(join(dir, 'base.onnx'), exportMlpToOnnx(baseSpec));
      writeFileSync(join(dir, 'res.onnx'), exportMlpToOnnx(resSpec));
      const base = await OnnxPolicy.load(join(dir, 'base.onnx'));
      const residual = await OnnxPolicy.load(join(dir, 'res.onnx'), { residual: true });
      const policy = new ComposedPolicy({ base, residual, scale: 0.8 });
      const obs = Float32Array.from({ length: 10 }, () => rng.normal());
      const a = await policy.act(obs);
      const b = mlpForward(baseSpec, obs);
      const r = mlpForward(resSpec, [obs, b]);
      for (let i = 0; i < 4; i++) expect(a[i]).toBeCloseTo(Math.max(-1, Math.min(1, b[i] + 0.8 * r[i])), 5);
      expect(policy.last!.policyVersion).toBe(3);
      policy.setResidual(null);
      const alone = await policy.act(obs);
      const baseOnly = await base.act(obs);
      for (let i = 0; i < 4; i++)
        expect(Object.is(alone[i], Math.max(-1, Math.min(1, baseOnly[i])))).toBe(true);
      await base.close();
      await residual.close();
    });
  });
});
