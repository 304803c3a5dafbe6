import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { initEngine, type Engine } from '../src/nn/index.js';
import { makeConfig, type ResidualConfig } from '../src/residual/config.js';
import { DivergenceError, ResidualLearner } from '../src/residual/td3.js';
import { emptySample } from '../src/residual/replay.js';
import { readCheckpoint, writeCheckpoint } from '../src/residual/checkpoint.js';
import { residualPolicySpec, exportResidualOnnx } from '../src/residual/export.js';
import { ResidualActor } from '../src/residual/trainer.js';
import { mlpForward } from '../src/runtime/onnx-export.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import type { MlpPolicySpec } from '../src/types.js';
import { Rng } from '../src/util/rng.js';
import { ResrtError } from '../src/util/errors.js';

const O = 5;
const A = 3;
let engine: Engine;
let dir: string;

const small = (over: Partial<ResidualConfig> = {}): ResidualConfig =>
  makeConfig('cpu', {
    actorHidden: [32, 32],
    criticHidden: [32, 32],
    numCritics: 5,
    targetSubset: 2,
    batchSize: 32,
    criticWarmupSteps: 0,
    policyDelay: 2,
    bufferSize: 1000,
    ...over,
  });

function fill(learner: ResidualLearner, n: number, seed: number): void {
  const rng = new Rng(seed);
  const r = (k: number, s = 1): number[] =>
    Array.from({ length: k }, () => Math.max(-1, Math.min(1, rng.normal(0, s))));
  for (let i = 0; i < n; i++) {
    learner.replay.online.add({
      obs: r(O),
      baseAction: r(A, 0.5),
      action: r(A, 0.5),
      reward: rng.uniform() < 0.2 ? 1 : 0,
      nextObs: r(O),
      nextBaseAction: r(A, 0.5),
      terminated: i % 17 === 16,
      truncated: i % 23 === 22,
    });
  }
}

function policySpec(l: ResidualLearner): MlpPolicySpec {
  return residualPolicySpec({
    layers: l.actorLayers(),
    obsDim: O,
    actionDim: A,
    actionScale: l.cfg.actionScale,
    useBase: true,
    obsMean: l.obsMean,
    obsStd: l.obsStd,
    version: l.actorUpdates,
  });
}

beforeAll(async () => {
  engine = await initEngine({ device: 'cpu' });
  dir = mkdtempSync(join(tmpdir(), 'resrt-learner-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('residual actor initialisation', () => {
  it('outputs exactly zero, so the composed policy is the base, in the engine, the spec and the ONNX file', async () => {
    const l = await ResidualLearner.create(engine, small(), { obsDim: O, actionDim: A }, 7);
    const rng = new Rng(2);
    const obs = Float32Array.from({ length: 4 * O }, () => rng.normal());
    const base = Float32Array.from({ length: 4 * A }, () => rng.range(-1, 1));
    expect(Array.from(await l.act(obs, base, 4))).toEqual(Array(4 * A).fill(0));
    const spec = policySpec(l);
    expect(Array.from(mlpForward(spec, [obs, base]))).toEqual(Array(4 * A).fill(0));

    const basePolicy = { actionDim: A, act: (o: Float32Array) => Float32Array.from([o[0] / 4, -0.5, 1]) };
    const composed = new ResidualActor(basePolicy, () => spec, A);
    const o1 = obs.subarray(0, O);
    expect(Array.from(await composed.act(o1))).toEqual(Array.from(basePolicy.act(o1)));

    const path = join(dir, 'zero.onnx');
    exportResidualOnnx(spec, path);
    const onnx = await OnnxPolicy.load(path, { residual: true });
    expect(Array.from(await onnx.residual(o1, base.subarray(0, A)))).toEqual([0, 0, 0]);
    await l.dispose();
  });
});

describe('export', () => {
  it('the exported residual (spec and ONNX) computes what the trained actor computes', async () => {
    const l = await ResidualLearner.create(engine, small({ actorLr: 1e-2 }), { obsDim: O, actionDim: A }, 9);
    fill(l, 200, 7);
    const { mean, std } = l.computeObsNormalization();
    l.setObsNormalization(mean, std);
    for (let i = 0; i < 20; i++) await l.update();
    const rng = new Rng(8);
    const rows = 5;
    const obs = Float32Array.from({ length: rows * O }, () => rng.normal(0, 2));
    const base = Float32Array.from({ length: rows * A }, () => rng.range(-1, 1));
    const want = await l.act(obs, base, rows);
    expect(want.some((v) => Math.abs(v) > 1e-4)).toBe(true);
    const spec = policySpec(l);
    const viaSpec = mlpForward(spec, [obs, base]);
    viaSpec.forEach((v, i) => expect(v).toBeCloseTo(want[i], 5));
    const path = join(dir, 'trained.onnx');
    exportResidualOnnx(spec, path);
    const onnx = await OnnxPolicy.load(path, { residual: true });
    for (let r = 0; r < rows; r++) {
      const got = await onnx.residual(obs.slice(r * O, (r + 1) * O), base.slice(r * A, (r + 1) * A));
      got.forEach((v, j) => expect(v).toBeCloseTo(want[r * A + j], 5));
    }
    await l.dispose();
  });
});

/** The critic head h of an ensemble as an MlpPolicySpec, for the reference forward pass. */
function headSpec(l: ResidualLearner, target: boolean, h: number): MlpPolicySpec {
  const layers = l.criticHeadLayers(h, target);
  return {
    inputs: [{ name: 'x', dim: layers[0].inDim }],
    layers,
    output: { name: 'q', actionDim: 1, chunkLength: 1 },
    metadata: {},
  };
}

describe('REDQ target', () => {
  it.each(['action', 'residual'] as const)(
    'equals r + γ^n · min over the two drawn target heads, computed by hand (critic input: %s)',
    async (criticInput) => {
      const l = await ResidualLearner.create(
        engine,
        small({ normalizeObs: false, criticInput }),
        { obsDim: O, actionDim: A },
        11,
      );
      fill(l, 200, 1);
      for (let i = 0; i < 10; i++) await l.update(); // move the actor and targets away from their init
      const rng = new Rng(5);
      const B = 6;
      const s = emptySample(B, O, A);
      for (let i = 0; i < B; i++) {
        for (let j = 0; j < O; j++) s.nextObs[i * O + j] = rng.normal();
        for (let j = 0; j < A; j++) s.nextBaseAction[i * A + j] = rng.range(-1, 1);
        s.reward[i] = i % 2;
        s.discount[i] = i === 3 ? 0 : 0.99 ** 3;
      }
      const noise = Float32Array.from({ length: B * A }, () => rng.range(-0.05, 0.05));
      const heads = [3, 1];
      const got = await l.tdTargetValues(s, heads, noise);

      const actorSpec = residualPolicySpec({
        layers: l.actorLayers(true),
        obsDim: O,
        actionDim: A,
        actionScale: l.cfg.actionScale,
        useBase: true,
        obsMean: null,
        obsStd: null,
        version: 0,
      });
      const res = mlpForward(actorSpec, [s.nextObs, s.nextBaseAction]);
      // [s | a] or [s | a_base | (a − a_base)/scale], a the composed, clipped action.
      const W = criticInput === 'action' ? O + A : O + 2 * A;
      const x = new Float32Array(B * W);
      for (let i = 0; i < B; i++) {
        x.set(s.nextObs.subarray(i * O, (i + 1) * O), i * W);
        for (let j = 0; j < A; j++) {
          const baseJ = s.nextBaseAction[i * A + j];
          const r = Math.max(-0.1, Math.min(0.1, res[i * A + j] + noise[i * A + j]));
          const a = Math.max(-1, Math.min(1, baseJ + r));
          if (criticInput === 'action') x[i * W + O + j] = a;
          else {
            x[i * W + O + j] = baseJ;
            x[i * W + O + A + j] = (a - baseJ) / 0.1;
          }
        }
      }
      const q = heads.map((h) => mlpForward(headSpec(l, true, h), x));
      const allHeads = [0, 1, 2, 3, 4].map((h) => mlpForward(headSpec(l, true, h), x));
      for (let i = 0; i < B; i++) {
        const want = s.reward[i] + s.discount[i] * Math.min(q[0][i], q[1][i]);
        expect(got[i]).toBeCloseTo(want, 4);
      }
      // The min over the drawn pair differs from the min over all heads somewhere (else the test is moot).
      const minAll = Array.from({ length: B }, (_, i) => Math.min(...allHeads.map((a) => a[i])));
      expect(minAll.some((m, i) => Math.abs(m - Math.min(q[0][i], q[1][i])) > 1e-4)).toBe(true);
      await l.dispose();
    },
  );

  it('draws distinct heads, and every head over time', async () => {
    const l = await ResidualLearner.create(engine, small(), { obsDim: O, actionDim: A }, 3);
    const seen = new Set<number>();
    for (let i = 0; i < 100; i++) {
      const h = l.drawHeads();
      expect(h).toHaveLength(2);
      expect(h[0]).not.toBe(h[1]);
      h.forEach((x) => seen.add(x));
    }
    expect(seen.size).toBe(5);
    await l.dispose();
  });
});

describe('learner state', () => {
  it('checkpoint → resume gives the same next updates and weights, bit for bit', async () => {
    const cfg = small();
    const a = await ResidualLearner.create(engine, cfg, { obsDim: O, actionDim: A }, 21);
    fill(a, 300, 2);
    a.setObsNormalization(...(Object.values(a.computeObsNormalization()) as [Float32Array, Float32Array]));
    for (let i = 0; i < 15; i++) await a.update();
    const out = join(dir, 'resume');
    writeCheckpoint(out, {
      learner: a.getState(),
      online: a.replay.online,
      demos: null,
      trainer: { k: 1 },
      meta: {},
    });
    const next = [];
    for (let i = 0; i < 6; i++) next.push(await a.update());
    const weightsA = a.getState().tensors;

    // A learner built with another seed and no data takes everything from the checkpoint.
    const ck = readCheckpoint(out);
    expect(ck).not.toBeNull();
    const b = await ResidualLearner.create(engine, cfg, { obsDim: O, actionDim: A }, 999);
    b.setState(ck!.learner, out);
    b.replay.online.restoreFrom(ck!.online);
    expect(ck!.trainer).toEqual({ k: 1 });
    const again = [];
    for (let i = 0; i < 6; i++) again.push(await b.update());
    expect(again).toEqual(next);
    const weightsB = b.getState().tensors;
    weightsA.forEach((t, i) =>
      expect(Buffer.from(weightsB[i].data.buffer).equals(Buffer.from(t.data.buffer))).toBe(true),
    );
    await a.dispose();
    await b.dispose();
  });

  it('a corrupt checkpoint is a ResrtError that says so', async () => {
    const l = await ResidualLearner.create(engine, small(), { obsDim: O, actionDim: A }, 1);
    fill(l, 50, 3);
    const out = join(dir, 'corrupt');
    writeCheckpoint(out, {
      learner: l.getState(),
      online: l.replay.online,
      demos: null,
      trainer: {},
      meta: {},
    });
    const manifest = JSON.parse(readFileSync(join(out, 'checkpoint.json'), 'utf8')) as {
      files: Record<string, { path: string }>;
    };
    const file = join(out, manifest.files.learner.path);
    const bytes = readFileSync(file);
    bytes[bytes.length - 5] ^= 0xff;
    writeFileSync(file, bytes);
    expect(() => readCheckpoint(out)).toThrow(/corrupt/);
    expect(() => readCheckpoint(out)).toThrow(ResrtError);
    writeFileSync(join(out, 'checkpoint.json'), '{"format":');
    expect(() => readCheckpoint(out)).toThrow(ResrtError);
    await l.dispose();
  });

  it('stops with a DivergenceError when the loss turns NaN, keeping the last good state', async () => {
    const l = await ResidualLearner.create(engine, small(), { obsDim: O, actionDim: A }, 5);
    fill(l, 100, 4);
    await l.update();
    const before = l.getState();
    l.replay.online.reward.fill(NaN);
    await expect(l.update()).rejects.toThrow(DivergenceError);
    const after = l.getState();
    expect(after.updates).toBe(before.updates);
    after.tensors.forEach((t, i) => expect(Array.from(t.data)).toEqual(Array.from(before.tensors[i].data)));
    await l.dispose();
  });
});

describe('held-back steps (conservative mixing)', () => {
  /** Only base-action steps, flagged held back: what most of an EpsMix run's replay holds. */
  function fillHeldBack(learner: ResidualLearner, n: number, seed: number, heldBack: boolean): void {
    const rng = new Rng(seed);
    const r = (k: number, s = 1): number[] =>
      Array.from({ length: k }, () => Math.max(-1, Math.min(1, rng.normal(0, s))));
    for (let i = 0; i < n; i++) {
      const base = r(A, 0.5);
      const obs = r(O);
      learner.replay.online.add({
        obs,
        baseAction: base,
        action: base,
        // Success follows the first observation, so the critic has a signal to extrapolate from.
        reward: obs[0] > 0.5 ? 1 : 0,
        nextObs: r(O),
        nextBaseAction: r(A, 0.5),
        terminated: i % 17 === 16,
        truncated: false,
        heldBack,
      });
    }
  }

  async function meanAbsResidual(l: ResidualLearner, seed: number): Promise<number> {
    const rng = new Rng(seed);
    const rows = 64;
    const obs = Float32Array.from({ length: rows * O }, () => rng.normal(0, 1));
    const base = Float32Array.from({ length: rows * A }, () => rng.normal(0, 0.5));
    const res = await l.act(obs, base, rows);
    return res.reduce((s, v) => s + Math.abs(v), 0) / res.length / l.cfg.actionScale;
  }

  it('keeps the actor near the executed residual where mixing held it back, and changes nothing elsewhere', async () => {
    const train = async (
      heldBackBc: number,
      flagged: boolean,
      mixingShare = 0,
    ): Promise<{ drift: number; stats: unknown[] }> => {
      const l = await ResidualLearner.create(
        engine,
        small({ heldBackBc, actorLr: 1e-3 }),
        { obsDim: O, actionDim: A },
        8,
      );
      l.mixingShare = mixingShare;
      fillHeldBack(l, 400, 6, flagged);
      const stats = [];
      for (let i = 0; i < 300; i++) stats.push(await l.update());
      const drift = await meanAbsResidual(l, 9);
      await l.dispose();
      return { drift, stats };
    };
    const free = await train(0, true);
    const kept = await train(0.4, true);
    // Without the term the actor follows the critic's extrapolation off the data; with it, it stays close.
    expect(free.drift).toBeGreaterThan(0.2);
    expect(kept.drift).toBeLessThan(free.drift / 2);
    // Steps that were not held back (unconstrained training) never see the term: identical updates.
    expect((await train(0.4, false)).stats).toEqual((await train(0, false)).stats);
    // Once the mixer explores fully, old held-back steps are plain off-policy data.
    expect((await train(0.4, true, 1)).stats).toEqual(free.stats);
    // In between, the term weighs 1 − share.
    const half = await train(0.4, true, 0.5);
    expect(half.drift).toBeGreaterThan(kept.drift);
    expect(half.drift).toBeLessThan(free.drift);
  });
});

describe('config', () => {
  it('overrides profile values one by one and rejects unknown keys and bad values with a fix', () => {
    const c = makeConfig('gpu', { actorLr: 3e-5 });
    expect(c.actorLr).toBe(3e-5);
    expect(c.numCritics).toBe(10);
    expect(makeConfig('cpu').numCritics).toBeLessThan(10);
    expect(() => makeConfig('cpu', { nope: 1 } as never)).toThrow(/unknown residual config key 'nope'/);
    expect(() => makeConfig('cpu', { targetSubset: 5, numCritics: 2 })).toThrow(ResrtError);
    expect(() => makeConfig('cpu', { actorHidden: [] })).toThrow(/actorHidden/);
    expect(() => makeConfig('cpu', { gamma: 1.5 })).toThrow(/gamma/);
    expect(() => makeConfig('cpu', { criticInput: 'both' as never })).toThrow(
      /criticInput must be 'action' or 'residual'/,
    );
  });
});
