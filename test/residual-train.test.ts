import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { relabelDemos, trainResidual, type TrainProgress } from '../src/residual/trainer.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import type { DemoSet } from '../src/sim/demos.js';
import { ResrtError } from '../src/util/errors.js';
import { BiasedBase, PointMassEnv, pointMassLearner } from './residual-pointmass.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'resrt-train-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('trainResidual', () => {
  it('learns a residual that beats its biased base by ≥ 20 success points (seeded, in-process)', async () => {
    const progress: TrainProgress[] = [];
    const r = await trainResidual({
      makeEnv: () => new PointMassEnv(),
      base: new BiasedBase(),
      steps: 2500,
      outDir: join(dir, 'learn'),
      seed: 1,
      profile: 'cpu',
      config: pointMassLearner,
      evalEpisodes: 100,
      worker: false,
      onProgress: (p) => progress.push(p),
    });
    const base = r.curve[0].successRate;
    const final = r.curve[r.curve.length - 1].successRate;
    expect(r.curve[0].envSteps).toBe(0);
    expect(r.curve[r.curve.length - 1].envSteps).toBe(2500);
    expect(base).toBeLessThan(0.5);
    expect(final - base).toBeGreaterThanOrEqual(0.2);
    expect(r.updates).toBe(200 + (2500 - 500));
    expect(progress.some((p) => p.phase === 'training' && p.updates > 0)).toBe(true);
    for (const f of [
      'curves.csv',
      'curves.jsonl',
      'success.svg',
      'residual.onnx',
      'checkpoint.json',
      'summary.json',
    ])
      expect(existsSync(join(dir, 'learn', f))).toBe(true);
    const onnx = await OnnxPolicy.load(join(dir, 'learn', 'residual.onnx'), { residual: true });
    const res = await onnx.residual(Float32Array.from([0, 0, 0.5, 0.5]), Float32Array.from([1, 1]));
    expect(res.every((v) => Math.abs(v) <= 0.1 + 1e-6)).toBe(true);
  }, 150_000);

  it('runs the learner in a worker thread, then resumes the run from its checkpoint', async () => {
    const out = join(dir, 'worker');
    const opts = {
      makeEnv: () => new PointMassEnv(),
      base: new BiasedBase(),
      outDir: out,
      seed: 2,
      profile: 'cpu' as const,
      config: { ...pointMassLearner, learningStarts: 200, criticWarmupSteps: 20, utd: 2 },
      evalEpisodes: 20,
      worker: true,
    };
    const first = await trainResidual({ ...opts, steps: 400 });
    expect(first.envSteps).toBe(400);
    expect(first.updates).toBe(20 + 200 * 2);
    expect(readFileSync(join(out, 'curves.csv'), 'utf8').split('\n')[0]).toContain('envSteps,updates');

    await expect(trainResidual({ ...opts, steps: 600 })).rejects.toThrow(/--resume/);

    const second = await trainResidual({ ...opts, steps: 600, resume: true });
    expect(second.resumedFrom).toBe(400);
    expect(second.envSteps).toBe(600);
    expect(second.updates).toBe(20 + 400 * 2);
    expect(second.curve.length).toBeGreaterThan(first.curve.length);
    expect(second.curve[0]).toEqual(first.curve[0]);

    // A checkpoint written before a config key existed resumes with the key's current value; a
    // key both sides know must still match.
    const manifestPath = join(out, 'checkpoint.json');
    const edit = (change: (config: Record<string, unknown>) => void): void => {
      const m = JSON.parse(readFileSync(manifestPath, 'utf8')) as {
        meta: { config: Record<string, unknown> };
      };
      change(m.meta.config);
      writeFileSync(manifestPath, JSON.stringify(m));
    };
    edit((c) => delete c.heldBackBc);
    const third = await trainResidual({ ...opts, steps: 650, resume: true });
    expect(third.resumedFrom).toBe(600);
    edit((c) => (c.gamma = 0.5));
    await expect(trainResidual({ ...opts, steps: 700, resume: true })).rejects.toThrow(/written with config/);
  }, 120_000);

  it('resuming from a checkpoint at an episode end continues exactly like the uninterrupted run', async () => {
    const common = {
      makeEnv: () => new PointMassEnv(),
      base: new BiasedBase(),
      seed: 3,
      profile: 'cpu' as const,
      config: {
        actorHidden: [32, 32],
        criticHidden: [32, 32],
        numCritics: 2,
        batchSize: 64,
        learningStarts: 100,
        criticWarmupSteps: 20,
        utd: 1,
      },
      worker: false,
      evalEvery: 150,
      evalEpisodes: 5,
    };
    const a = await trainResidual({ ...common, steps: 700, outDir: join(dir, 'exact-a') });
    // Evaluation points fall on episode ends, where periodic checkpoints are taken.
    const cut = a.curve.find((p) => p.envSteps >= 300)!.envSteps;
    await trainResidual({ ...common, steps: cut, outDir: join(dir, 'exact-b') });
    const b = await trainResidual({ ...common, steps: 700, outDir: join(dir, 'exact-b'), resume: true });
    expect(b.resumedFrom).toBe(cut);
    expect(b.updates).toBe(a.updates);
    expect(b.curve.map((p) => [p.envSteps, p.successRate])).toEqual(
      a.curve.map((p) => [p.envSteps, p.successRate]),
    );
    expect(
      readFileSync(join(dir, 'exact-b', 'residual.onnx')).equals(
        readFileSync(join(dir, 'exact-a', 'residual.onnx')),
      ),
    ).toBe(true);
  }, 120_000);

  it('stops a diverging run, keeps the last good checkpoint and says so', async () => {
    /** Rewards turn NaN after 400 steps (a broken reward sensor). */
    class BrokenReward extends PointMassEnv {
      private steps = 0;
      override step(action: ArrayLike<number>) {
        const r = super.step(action);
        return ++this.steps > 400 ? { ...r, reward: NaN } : r;
      }
    }
    const out = join(dir, 'diverge');
    const err = await trainResidual({
      makeEnv: () => new BrokenReward(),
      base: new BiasedBase(),
      steps: 2000,
      outDir: out,
      seed: 4,
      profile: 'cpu',
      config: {
        actorHidden: [32, 32],
        criticHidden: [32, 32],
        numCritics: 2,
        batchSize: 64,
        learningStarts: 100,
        criticWarmupSteps: 10,
        nStep: 1,
      },
      worker: false,
      checkpointEvery: 150,
      evalEpisodes: 5,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResrtError);
    expect((err as Error).message).toMatch(/diverged at update \d+.*training stopped.*last good checkpoint/s);
    expect((err as ResrtError).hint).toMatch(/--resume/);
    const manifest = JSON.parse(readFileSync(join(out, 'checkpoint.json'), 'utf8')) as { generation: number };
    expect(manifest.generation).toBeGreaterThanOrEqual(2);
  }, 60_000);

  it('awaits hardware-style environments and bases that answer with promises', async () => {
    /** Answers like a robot link: every call resolves later. */
    class AsyncPointMass extends PointMassEnv {
      override reset(options?: { seed?: number }) {
        const r = super.reset(options);
        return new Promise<typeof r>((resolve) => setTimeout(() => resolve(r), 0)) as never;
      }
      override step(action: ArrayLike<number>) {
        const r = super.step(action);
        return new Promise<typeof r>((resolve) => setImmediate(() => resolve(r))) as never;
      }
    }
    const syncBase = new BiasedBase();
    const asyncBase = { actionDim: 2, act: async (o: Float32Array) => syncBase.act(o) };
    const r = await trainResidual({
      makeEnv: async () => new AsyncPointMass(),
      base: asyncBase,
      steps: 300,
      outDir: join(dir, 'async'),
      seed: 5,
      profile: 'cpu',
      config: {
        actorHidden: [32, 32],
        criticHidden: [32, 32],
        numCritics: 2,
        batchSize: 64,
        learningStarts: 100,
        criticWarmupSteps: 10,
        utd: 1,
      },
      evalEpisodes: 5,
      worker: true,
    });
    expect(r.envSteps).toBe(300);
    expect(r.updates).toBe(10 + 200);
  }, 60_000);

  it('trains with relabelled demonstrations in the replay and checkpoints them', async () => {
    // Demonstrations from the unbiased controller, recorded on the same task.
    const env = new PointMassEnv();
    const expert = new BiasedBase(false);
    const episodes = [];
    for (let e = 0; e < 5; e++) {
      let { obs } = env.reset({ seed: 500 + e });
      const o = [obs];
      const actions = [];
      const rewards = [];
      let end = { terminated: false, truncated: false };
      for (;;) {
        const a = expert.act(obs);
        const r = env.step(a);
        actions.push(a);
        rewards.push(r.reward);
        o.push(r.obs);
        obs = r.obs;
        if (r.terminated || r.truncated) {
          end = { terminated: r.terminated, truncated: r.truncated };
          break;
        }
      }
      episodes.push({ episode: e, seed: 500 + e, success: end.terminated, ...end, obs: o, actions, rewards });
    }
    const demos = demoSet('point-mass', 4, episodes);
    const out = join(dir, 'demos');
    const r = await trainResidual({
      makeEnv: () => new PointMassEnv(),
      base: new BiasedBase(),
      demos,
      steps: 300,
      outDir: out,
      seed: 6,
      profile: 'cpu',
      config: {
        actorHidden: [32, 32],
        criticHidden: [32, 32],
        numCritics: 2,
        batchSize: 64,
        learningStarts: 100,
        criticWarmupSteps: 10,
      },
      evalEpisodes: 5,
      worker: false,
      log: () => {},
    });
    expect(r.updates).toBe(10 + 200);
    const manifest = JSON.parse(readFileSync(join(out, 'checkpoint.json'), 'utf8')) as {
      files: Record<string, unknown>;
    };
    expect(Object.keys(manifest.files).sort()).toEqual(['demos', 'learner', 'online', 'trainer']);
  }, 60_000);

  it('rejects a base or demonstrations that do not fit the environment, saying how to fix it', async () => {
    const wrongBase = { actionDim: 3, act: () => new Float32Array(3) };
    await expect(
      trainResidual({
        makeEnv: () => new PointMassEnv(),
        base: wrongBase,
        steps: 10,
        outDir: join(dir, 'bad1'),
        worker: false,
      }),
    ).rejects.toThrow(/base policy outputs 3 action dims but the environment point-mass takes 2/);
    const demos = demoSet('other', 6, []);
    const err = await trainResidual({
      makeEnv: () => new PointMassEnv(),
      base: new BiasedBase(),
      demos,
      steps: 10,
      outDir: join(dir, 'bad2'),
      worker: false,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResrtError);
    expect((err as ResrtError).hint).toMatch(/resrt collect/);
  });

  it('relabels demonstrations with the base action and keeps the executed demo action', async () => {
    const base = new BiasedBase();
    const obs = [
      Float32Array.from([0, 0, 0.5, 0]),
      Float32Array.from([0.1, 0, 0.5, 0]),
      Float32Array.from([0.2, 0, 0.5, 0]),
    ];
    const actions = [Float32Array.from([1, 0]), Float32Array.from([0.9, 0])];
    const demos = demoSet('point-mass', 4, [
      {
        episode: 0,
        seed: 0,
        success: true,
        terminated: true,
        truncated: false,
        obs,
        actions,
        rewards: [0, 1],
      },
    ]);
    const steps = await relabelDemos(demos, base, 2);
    expect(steps).toHaveLength(2);
    expect(Array.from(steps[0].baseAction)).toEqual(Array.from(base.act(obs[0])));
    expect(Array.from(steps[1].baseAction)).toEqual(Array.from(base.act(obs[1])));
    expect(Array.from(steps[0].nextBaseAction)).toEqual(Array.from(base.act(obs[1])));
    expect(Array.from(steps[0].action)).toEqual([1, 0]);
    expect(steps[1].terminated).toBe(true);
    expect(Array.from(steps[1].nextBaseAction)).toEqual([0, 0]);
  });
});

/** A demonstration set as `readDemos` returns it, for hand-made episodes (2-dim actions). */
function demoSet(task: string, obsDim: number, episodes: DemoSet['episodes']): DemoSet {
  return {
    header: {
      format: 'resrt-demos',
      version: 1,
      task,
      obsDim,
      actionDim: 2,
      obsNames: [],
      actionNames: [],
      controlDt: 0.1,
      createdAt: '',
      source: 'test',
    },
    episodes,
    tornTail: false,
  };
}
