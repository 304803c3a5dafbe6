import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { trainResidual, type TrainStepInfo } from '../src/residual/trainer.js';
import {
  makeMixer,
  mixingEpisode,
  replayMixer,
  validateMixingSpec,
  windowedViolations,
  type MixingEpisode,
  type MixingSpec,
} from '../src/residual/mixing-run.js';
import type { ResidualConfig } from '../src/residual/config.js';
import { ResrtError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';
import { readCheckpoint } from '../src/residual/checkpoint.js';
import { emptySample } from '../src/residual/replay.js';
import { BiasedBase, PointMassEnv } from './residual-pointmass.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'resrt-mixing-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const smallConfig: Partial<ResidualConfig> = {
  actorHidden: [64, 64],
  criticHidden: [64, 64],
  numCritics: 2,
  batchSize: 64,
  utd: 1,
  learningStarts: 300,
  criticWarmupSteps: 100,
  actorLr: 1e-4,
  criticLr: 3e-4,
};

/** The point mass, remembering every action it was sent with the observation it was sent at. */
class RecordingPointMass extends PointMassEnv {
  readonly episodes: { obs: Float32Array; action: Float32Array }[][] = [];
  private current: Float32Array | null = null;
  override reset(options?: { seed?: number }) {
    const r = super.reset(options);
    this.episodes.push([]);
    this.current = r.obs;
    return r;
  }
  override step(action: ArrayLike<number>) {
    const r = super.step(action);
    this.episodes[this.episodes.length - 1].push({ obs: this.current!, action: Float32Array.from(action) });
    this.current = r.obs;
    return r;
  }
}

function clipCompose(base: Float32Array, res: ArrayLike<number>, w: number): Float32Array {
  const out = new Float32Array(base.length);
  for (let i = 0; i < base.length; i++) out[i] = Math.max(-1, Math.min(1, base[i] + w * res[i]));
  return out;
}

describe('trainResidual with conservative mixing', () => {
  it('EpsMix: base-only episodes execute the base exactly; the exploring share grows as the residual improves; records are written', async () => {
    const envs: RecordingPointMass[] = [];
    const base = new BiasedBase();
    const out = join(dir, 'eps');
    const r = await trainResidual({
      makeEnv: () => {
        const e = new RecordingPointMass();
        envs.push(e);
        return e;
      },
      base,
      steps: 1500,
      outDir: out,
      seed: 1,
      profile: 'cpu',
      config: smallConfig,
      evalEpisodes: 40,
      worker: false,
      log: () => {},
      mixing: { mode: 'eps', alpha: 0.1, delta: 0.05, window: 30, baseline: { value: 0.3 } },
    });
    const recs = r.mixing!;
    const train = envs[0];
    expect(recs.length).toBe(r.episodes);
    expect(train.episodes.length).toBe(recs.length);

    // No evidence yet: ε = α·V / (V − 0) = α.
    expect(recs[0].share).toBeCloseTo(0.1, 12);
    // The share moves only on evidence: until an exploring episode succeeds it stays at α.
    const firstWin = recs.findIndex((x) => x.params.explore && x.success);
    expect(firstWin).toBeGreaterThan(0);
    expect(recs.slice(0, firstWin + 1).every((x) => Math.abs(x.share - 0.1) < 1e-12)).toBe(true);
    expect(recs[0].params.epsilon).toBe(recs[0].share);

    let baseOnly = 0;
    let exploringDiffers = 0;
    for (const rec of recs) {
      const steps = train.episodes[rec.episode];
      expect(steps.length).toBe(rec.steps);
      expect(rec.realizedShare).toBe(rec.params.explore ? 1 : 0);
      for (const s of steps) {
        const b = base.act(s.obs);
        if (!rec.params.explore) {
          expect(Array.from(s.action)).toEqual(Array.from(b));
          baseOnly++;
        } else if (s.action.some((v, i) => v !== b[i])) exploringDiffers++;
      }
    }
    expect(baseOnly).toBeGreaterThan(200);
    expect(exploringDiffers).toBeGreaterThan(200);

    // The learner's replay marks exactly the base-only steps as held back (its TD3+BC rows).
    const online = readCheckpoint(out)!.online;
    const expected = recs.flatMap((x) => Array<number>(x.steps).fill(x.params.explore ? 0 : 1));
    const sample = emptySample(1, online.obsDim, online.actionDim);
    const stored = Array.from({ length: online.added }, (_, l) => {
      online.writeNStep(l, 1, 0.99, sample, 0);
      return sample.heldBack[0];
    });
    expect(stored).toEqual(expected);

    // The exploring policy succeeded, so the mixer gave it the whole share; the residual improved.
    expect(r.finalEval!.successRate).toBeGreaterThan(r.baseEval!.successRate + 0.3);
    const last = recs.slice(-20);
    expect(last.every((x) => x.share === 1)).toBe(true);
    expect(last.filter((x) => x.params.explore).length).toBeGreaterThan(15);
    // vLow rose with the exploring episodes' successes.
    expect(recs[recs.length - 1].vLow).toBeGreaterThan(recs[0].vLow);

    const lines = readFileSync(join(out, 'mixing.jsonl'), 'utf8').trim().split('\n');
    expect(lines.map((l) => JSON.parse(l) as unknown)).toEqual(JSON.parse(JSON.stringify(recs)) as unknown);
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as {
      mixing: { episodes: number };
    };
    expect(summary.mixing.episodes).toBe(recs.length);
  }, 80_000);

  it("StepMix: each step executes clip(base + w_t·residual) with w_t from the episode's (h, ρ)", async () => {
    const envs: RecordingPointMass[] = [];
    const base = new BiasedBase();
    const seen: TrainStepInfo[] = [];
    const r = await trainResidual({
      makeEnv: () => {
        const e = new RecordingPointMass();
        envs.push(e);
        return e;
      },
      base,
      steps: 300,
      outDir: join(dir, 'step'),
      seed: 2,
      profile: 'cpu',
      config: {
        ...smallConfig,
        actorHidden: [32, 32],
        criticHidden: [32, 32],
        learningStarts: 100,
        criticWarmupSteps: 10,
      },
      evalEpisodes: 5,
      worker: false,
      log: () => {},
      // s* = α = 0.13 at first. Probes (q = 0.5·0.13) run all 40 steps; the other episodes run
      // (s* − q)/(1 − q)·H = 2.78 steps: two exploring steps, step 2 at ρ = 0.78, then the base.
      mixing: { mode: 'step', alpha: 0.13, delta: 0.05, probeFraction: 0.5, baseline: { value: 0.3 } },
      onTrainStep: (s) => seen.push({ ...s, residual: Float32Array.from(s.residual) }),
    });
    const recs = r.mixing!;
    const first = recs.filter((x) => x.share === recs[0].share);
    expect(recs[0].share).toBeCloseTo(0.13, 12);
    expect(first.some((x) => x.params.probe)).toBe(true);
    for (const rec of first) {
      expect(rec.params.horizon).toBe(40);
      if (rec.params.probe) expect([rec.params.h, rec.params.rho, rec.realizedShare]).toEqual([40, 0, 1]);
      else {
        expect(rec.params.h).toBe(2);
        expect(rec.params.rho).toBeCloseTo(((0.13 - 0.065) / (1 - 0.065)) * 40 - 2, 9);
        expect(rec.realizedShare).toBeCloseTo((0.13 - 0.065) / (1 - 0.065), 12);
      }
    }
    let i = 0;
    let mixedStepChecked = 0;
    for (const rec of recs) {
      const steps = envs[0].episodes[rec.episode];
      const { h, rho } = rec.params as { h: number; rho: number };
      for (let t = 0; t < steps.length; t++, i++) {
        const info = seen[i];
        expect([info.episode, info.step]).toEqual([rec.episode, t]);
        const w = t < h ? 1 : t === h ? rho : 0;
        expect(info.weight).toBe(w);
        const b = base.act(steps[t].obs);
        expect(Array.from(steps[t].action)).toEqual(Array.from(clipCompose(b, info.residual, w)));
        if (w === 0) expect(Array.from(steps[t].action)).toEqual(Array.from(b));
        if (w > 0 && w < 1 && info.residual.some((v) => v !== 0)) mixedStepChecked++;
      }
    }
    expect(i).toBe(seen.length);
    expect(mixedStepChecked).toBeGreaterThan(3);
    expect(
      readFileSync(join(dir, 'step', 'mixing.jsonl'), 'utf8')
        .trim()
        .split('\n'),
    ).toHaveLength(recs.length);
  }, 40_000);

  it('resumes a mixed run to the same plans and outcomes as the uninterrupted one', async () => {
    const common = {
      makeEnv: () => new PointMassEnv(),
      base: new BiasedBase(),
      seed: 3,
      profile: 'cpu' as const,
      config: {
        ...smallConfig,
        actorHidden: [32, 32],
        criticHidden: [32, 32],
        learningStarts: 100,
        criticWarmupSteps: 10,
      },
      worker: false,
      evalEvery: 150,
      evalEpisodes: 5,
      log: () => {},
      mixing: {
        mode: 'eps',
        alpha: 0.4,
        delta: 0.2,
        bound: 'wilson',
        window: 20,
        baseline: 'initial-eval',
      } as MixingSpec,
    };
    const a = await trainResidual({ ...common, steps: 500, outDir: join(dir, 'resume-a') });
    const cut = a.curve.find((p) => p.envSteps >= 200)!.envSteps;
    await trainResidual({ ...common, steps: cut, outDir: join(dir, 'resume-b') });
    await expect(
      trainResidual({
        ...common,
        mixing: { ...common.mixing, alpha: 0.2 },
        steps: 500,
        outDir: join(dir, 'resume-b'),
        resume: true,
      }),
    ).rejects.toThrow(/mixing settings/);
    const b = await trainResidual({ ...common, steps: 500, outDir: join(dir, 'resume-b'), resume: true });
    expect(b.mixing).toEqual(a.mixing);
    // The training outcomes come back whole, the episodes before the resume included.
    expect(b.trainEpisodes).toEqual(a.trainEpisodes);
    expect(b.trainEpisodes.length).toBe(b.episodes);
    expect(readFileSync(join(dir, 'resume-b', 'mixing.jsonl'), 'utf8')).toBe(
      readFileSync(join(dir, 'resume-a', 'mixing.jsonl'), 'utf8'),
    );
    // The baseline came from the step-0 evaluation (5 episodes), through its upper bound.
    expect(a.mixing![0].vBase).toBeGreaterThanOrEqual(a.baseEval!.successRate);
  }, 60_000);

  it('a resumed StepMix or scale mixer replays its probe coins and continues with the same plans', () => {
    for (const mode of ['step', 'scale'] as const) {
      const spec: MixingSpec = { mode, alpha: 0.2, delta: 0.1, window: 50, baseline: { value: 0.5 } };
      const ctx = { horizon: 30, seed: 4, initialEval: null };
      type Mixer = ReturnType<typeof makeMixer>;
      // Runs n episodes whose success rises with the realized share; returns each plan.
      const play = (m: Mixer, n: number, outcomes: Rng, records?: MixingEpisode[]): string[] =>
        Array.from({ length: n }, () => {
          const plan = m.beginEpisode();
          const success = outcomes.uniform() < 0.3 + 0.6 * plan.realizedShare;
          records?.push(mixingEpisode(spec, plan, success, 0, 30));
          m.endEpisode(success, plan);
          return JSON.stringify([plan.share, plan.params]);
        });
      const original = makeMixer(spec, ctx);
      const records: MixingEpisode[] = [];
      play(original, 300, new Rng(9), records);
      expect(records.filter((r) => r.params.probe).length, mode).toBeGreaterThan(5);
      const resumed = makeMixer(spec, ctx);
      replayMixer(resumed, records);
      expect(resumed.allowedShare()).toEqual(original.allowedShare());
      expect(play(resumed, 100, new Rng(10))).toEqual(play(original, 100, new Rng(10)));
      // Other probe settings do not replay the same episodes.
      expect(() => replayMixer(makeMixer({ ...spec, probeFraction: 0 }, ctx), records)).toThrow(/replay/);
    }
  });

  it('refuses bad mixing settings before training, with the fix', async () => {
    const bad: unknown[] = [
      { mode: 'eps', alpha: 0, delta: 0.05, baseline: { value: 0.5 } },
      { mode: 'eps', alpha: 1.2, delta: 0.05, baseline: { value: 0.5 } },
      { mode: 'eps', alpha: 0.1, delta: 1, baseline: { value: 0.5 } },
      { mode: 'eps', alpha: 0.1, delta: 0.05 },
      { mode: 'eps', alpha: 0.1, delta: 0.05, baseline: { value: 1.5 } },
      { mode: 'eps', alpha: 0.1, delta: 0.05, baseline: { successes: 5, trials: 3 } },
      { mode: 'mix', alpha: 0.1, delta: 0.05, baseline: { value: 0.5 } },
      { mode: 'step', alpha: 0.1, delta: 0.05, window: 0, baseline: { value: 0.5 } },
      { mode: 'scale', alpha: 0.1, delta: 0.05, probeFraction: 1.5, baseline: { value: 0.5 } },
    ];
    for (const spec of bad) {
      expect(() => validateMixingSpec(spec as MixingSpec)).toThrow(ResrtError);
      const err = await trainResidual({
        makeEnv: () => new PointMassEnv(),
        base: new BiasedBase(),
        steps: 10,
        outDir: join(dir, 'bad'),
        worker: false,
        log: () => {},
        mixing: spec as MixingSpec,
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ResrtError);
      expect((err as Error).message).toMatch(/fix:/);
    }
    expect(() =>
      validateMixingSpec({ mode: 'scale', alpha: 0.1, delta: 0.05, baseline: 'initial-eval' }),
    ).not.toThrow();
  });

  it('counts windowed violations of (1 − α)·baseline', () => {
    const o = [1, 1, 0, 0, 0, 1, 1, 1].map((x) => x === 1);
    // Windows of 3: 2/3, 1/3, 0, 1/3, 2/3, 1 against 0.5 → three below. With W = 3 and a 0.5
    // threshold only 0/3 is significant at δ = 0.2 (P = 0.125), and nothing at δ = 0.1.
    expect(windowedViolations(o, 3, 0.5, 0.2)).toEqual({
      windows: 6,
      violations: 3,
      fraction: 0.5,
      significant: 1,
      significantFraction: 1 / 6,
    });
    expect(windowedViolations(o, 3, 0.5, 0.1).significant).toBe(0);
    // A window exactly at the threshold is not a violation.
    expect(windowedViolations([true, false], 2, 0.5, 0.05).violations).toBe(0);
    expect(windowedViolations([true], 2, 0.5, 0.05)).toEqual({
      windows: 0,
      violations: 0,
      fraction: null,
      significant: 0,
      significantFraction: null,
    });
    expect(() => windowedViolations(o, 0, 0.5, 0.05)).toThrow(ResrtError);
    expect(() => windowedViolations(o, 3, 0.5, 0)).toThrow(ResrtError);
  });

  it('flags significant windows at most δ of the time for a run exactly at the threshold', () => {
    // Bernoulli episodes at p: about half the windows of a run at p = threshold are below it, but
    // the significant ones stay under δ; a run 15 points under the threshold is flagged often.
    const rng = new Rng(7);
    // Sliding windows overlap, so the fraction needs many episodes to settle near its expectation
    // (P(Bin(50, 0.45) ≤ 16) = 0.043 here).
    const run = (p: number): boolean[] => Array.from({ length: 400_000 }, () => rng.uniform() < p);
    const atThreshold = windowedViolations(run(0.45), 50, 0.45, 0.05);
    expect(atThreshold.fraction).toBeGreaterThan(0.35);
    expect(atThreshold.significantFraction).toBeLessThan(0.05);
    expect(atThreshold.significantFraction).toBeGreaterThan(0.035);
    const below = windowedViolations(run(0.3), 50, 0.45, 0.05);
    expect(below.significantFraction).toBeGreaterThan(0.5);
  });
});
