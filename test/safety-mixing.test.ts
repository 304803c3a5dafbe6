/**
 * Conservative mixing on a synthetic episodic problem: the baseline succeeds with p_b = 0.5, the
 * exploring policy with p_e (better or worse). An episode's success is a Bernoulli draw whose mean
 * is linear in the exploring share of its steps, so the true expected success of every plan is
 * known and the episode-wise constraint can be checked exactly.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/util/rng.js';
import {
  BOUND_KINDS,
  EpsMix,
  ResidualScaleMix,
  StepMix,
  lowerConfidenceBound,
  normalQuantile,
  upperConfidenceBound,
  type BoundKind,
  type ConservativeMixer,
  type EpisodePlan,
  type MixingOptions,
  type MixMode,
} from '../src/safety/index.js';

const H = 20;
const P_BASE = 0.5;
const ALPHA = 0.1;
const DELTA = 0.05;

/**
 * Expected exploring share of a plan before its coin (EpsMix's ε; StepMix's and the scale's s* over
 * the probe coin). The test 'spend f·s* on probes' checks that the coin and the in-episode share
 * really average to it.
 */
function expectedShare(plan: EpisodePlan): number {
  return plan.mode === 'epsmix' ? (plan.params.epsilon as number) : plan.share;
}

/** The share the episode actually ran (after EpsMix's coin). */
function realizedShare(plan: EpisodePlan): number {
  let s = 0;
  for (let t = 0; t < H; t++) s += plan.weightAt(t);
  return s / H;
}

function makeMixer(mode: MixMode, opts: MixingOptions): ConservativeMixer {
  if (mode === 'epsmix') return new EpsMix(opts);
  if (mode === 'stepmix') return new StepMix(opts);
  return new ResidualScaleMix(opts);
}

interface RunStats {
  /** Per repetition: share of episodes whose true expected success broke the constraint. */
  violationRates: number[];
  earlyShare: number;
  lateShare: number;
}

function simulate(
  make: (rep: number) => ConservativeMixer,
  pExplore: number,
  reps: number,
  episodes: number,
  pBase = P_BASE,
): RunStats {
  const violationRates: number[] = [];
  let early = 0;
  let late = 0;
  const earlyN = 100;
  const lateN = 200;
  for (let rep = 0; rep < reps; rep++) {
    const rng = new Rng(10_000 + rep);
    const mixer = make(rep);
    let violations = 0;
    for (let k = 0; k < episodes; k++) {
      const plan = mixer.beginEpisode();
      const s = expectedShare(plan);
      const trueValue = s * pExplore + (1 - s) * pBase;
      if (trueValue < (1 - ALPHA) * pBase - 1e-12) violations++;
      if (k < earlyN) early += s;
      if (k >= episodes - lateN) late += s;
      const r = realizedShare(plan);
      mixer.endEpisode(rng.uniform() < r * pExplore + (1 - r) * pBase, plan);
    }
    violationRates.push(violations / episodes);
  }
  return { violationRates, earlyShare: early / (earlyN * reps), lateShare: late / (lateN * reps) };
}

function meanAndSe(xs: number[]): { mean: number; se: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, xs.length - 1);
  return { mean, se: Math.sqrt(variance / xs.length) };
}

const MODES: MixMode[] = ['epsmix', 'stepmix', 'scale'];
const REPS = 16;
const EPISODES = 1500;

describe('conservative mixing: episode-wise constraint and growth', () => {
  for (const mode of MODES) {
    for (const bound of BOUND_KINDS) {
      it(`${mode} / ${bound}: constraint holds in >= 1 - δ of episodes; share grows when better, stays small when worse`, () => {
        const opts = (rep: number): MixingOptions => ({
          alpha: ALPHA,
          delta: DELTA,
          bound,
          window: 1000,
          horizon: H,
          seed: rep,
          baseline: { value: P_BASE },
        });
        for (const pExplore of [0.2, 0.35, 0.65, 0.85]) {
          const stats = simulate((rep) => makeMixer(mode, opts(rep)), pExplore, REPS, EPISODES);
          const { mean, se } = meanAndSe(stats.violationRates);
          // Hoeffding and empirical Bernstein are finite-sample bounds; Wilson's coverage is
          // asymptotic, so its rate is checked against δ up to the simulation's own noise.
          const slack = bound === 'wilson' ? 3 * se : 0;
          expect(mean, `p_e = ${pExplore}: violation rate ${mean}`).toBeLessThanOrEqual(DELTA + slack);
          const allowed = Math.min(1, (ALPHA * P_BASE) / Math.max(1e-9, P_BASE - pExplore));
          if (pExplore < P_BASE) {
            // Worse than the baseline: exploration never exceeds what the true values allow, on average.
            expect(stats.lateShare, `p_e = ${pExplore}`).toBeLessThanOrEqual(allowed);
            expect(stats.lateShare).toBeLessThanOrEqual(0.35);
          } else {
            // Better: the share grows with evidence; clearly better → mostly exploring by the end.
            expect(stats.lateShare, `p_e = ${pExplore}`).toBeGreaterThan(stats.earlyShare);
            if (pExplore >= 0.85) {
              expect(stats.lateShare).toBeGreaterThan(stats.earlyShare + 0.2);
              expect(stats.lateShare).toBeGreaterThan(bound === 'bernstein' ? 0.5 : 0.9);
            }
          }
        }
      });
    }
  }

  it('with V_base estimated from baseline episodes (upper bound, δ split), the constraint still holds', () => {
    for (const mode of MODES) {
      for (const pExplore of [0.3, 0.8]) {
        const stats = simulate(
          (rep) =>
            makeMixer(mode, {
              alpha: ALPHA,
              delta: DELTA,
              window: 500,
              horizon: H,
              seed: rep,
              baseline: { successes: 100, trials: 200 },
            }),
          pExplore,
          REPS,
          800,
        );
        expect(meanAndSe(stats.violationRates).mean, `${mode}, p_e = ${pExplore}`).toBeLessThanOrEqual(DELTA);
        if (pExplore > P_BASE) expect(stats.lateShare).toBeGreaterThan(stats.earlyShare);
      }
    }
  });

  it('the check can fail: a plug-in estimate instead of a confidence bound breaks the constraint often', () => {
    class PlugInEpsMix extends EpsMix {
      override exploringLowerBound(): number {
        let n = 0;
        let wins = 0;
        for (const r of this.records) {
          if (r.params.explore) {
            n++;
            if (r.success) wins++;
          }
        }
        return n === 0 ? 0 : wins / n;
      }
    }
    const stats = simulate(
      (rep) => new PlugInEpsMix({ alpha: ALPHA, delta: DELTA, seed: rep, baseline: { value: P_BASE } }),
      0.35,
      8,
      600,
    );
    expect(meanAndSe(stats.violationRates).mean).toBeGreaterThan(3 * DELTA);
  });
});

describe('mixing plans', () => {
  it('allowed share follows s* = α·V_base / (V_base − V_low), capped at 1', () => {
    const m = new ResidualScaleMix({ alpha: 0.2, delta: 0.05, baseline: { value: 0.6 } });
    // No evidence: V_low = 0, s* = α.
    expect(m.allowedShare()).toEqual({ share: 0.2, vBase: 0.6, vLow: 0 });
    for (let k = 0; k < 400; k++) m.endEpisode(true, m.beginEpisode());
    const { share, vLow } = m.allowedShare();
    expect(vLow).toBeGreaterThan(0.6);
    expect(share).toBe(1);
    const z = new EpsMix({ alpha: 0.1, delta: 0.05, baseline: { value: 0 } });
    expect(z.allowedShare().share).toBe(1);
  });

  it('StepMix splits s*·H into h full steps and one step at weight ρ', () => {
    const m = new StepMix({
      alpha: 0.13,
      delta: 0.05,
      horizon: 10,
      probeFraction: 0,
      baseline: { value: 0.5 },
    });
    const plan = m.beginEpisode();
    expect(plan.params.h).toBe(1);
    expect(plan.params.rho).toBeCloseTo(0.3, 12);
    expect([0, 1, 2, 3].map((t) => plan.weightAt(t))).toEqual([1, expect.closeTo(0.3, 12), 0, 0]);
    expect(plan.weightAt(50)).toBe(0);
    expect(plan.share).toBeCloseTo(0.13, 12);
    const rec = m.endEpisode(false, plan);
    expect(rec).toMatchObject({ episode: 0, mode: 'stepmix', alpha: 0.13, success: false });
    expect(m.records).toHaveLength(1);
  });

  it('StepMix and scale spend f·s* on probes (whole exploring episodes); coin and share average to s*', () => {
    for (const mode of ['stepmix', 'scale'] as const) {
      const m = makeMixer(mode, {
        alpha: 0.2,
        delta: 0.05,
        horizon: H,
        seed: 5,
        probeFraction: 0.5,
        baseline: { value: 0.8 },
      });
      let probes = 0;
      let realized = 0;
      const n = 4000;
      for (let k = 0; k < n; k++) {
        const plan = m.beginEpisode();
        // V_low stays 0 (exploring episodes fail), so s* stays at α = 0.2 and q = 0.1.
        expect(plan.share).toBeCloseTo(0.2, 12);
        const r = realizedShare(plan);
        expect(plan.realizedShare).toBeCloseTo(r, 12);
        if (plan.params.probe) {
          probes++;
          expect(r).toBe(1);
        } else {
          // (s* − q)/(1 − q) = 0.1/0.9; StepMix realizes it as h = 2 steps and ρ = 0.222 of H = 20.
          expect(r).toBeCloseTo(0.1 / 0.9, 12);
        }
        realized += r;
        m.endEpisode(r === 0, plan);
      }
      expect(probes / n, mode).toBeGreaterThan(0.085);
      expect(probes / n, mode).toBeLessThan(0.115);
      expect(realized / n, mode).toBeGreaterThan(0.19);
      expect(realized / n, mode).toBeLessThan(0.21);
    }
  });

  it('probes find a better residual that diluted episodes cannot show (success only when fully exploring)', () => {
    // The exploring policy succeeds 90% of the time, but only when it runs the whole episode: any
    // partial episode succeeds at the base's 50%. Partial episodes alone leave V_low at 0.
    for (const mode of ['stepmix', 'scale'] as const) {
      const lateShare = (probeFraction: number): number => {
        const rng = new Rng(11);
        const m = makeMixer(mode, {
          alpha: ALPHA,
          delta: DELTA,
          window: 500,
          horizon: H,
          seed: 1,
          probeFraction,
          baseline: { value: P_BASE },
        });
        let late = 0;
        for (let k = 0; k < 1500; k++) {
          const plan = m.beginEpisode();
          if (k >= 1300) late += plan.share;
          m.endEpisode(rng.uniform() < (plan.realizedShare === 1 ? 0.9 : P_BASE), plan);
        }
        return late / 200;
      };
      expect(lateShare(0), mode).toBeLessThan(1.5 * ALPHA);
      expect(lateShare(0.5), mode).toBe(1);
    }
  });

  it('EpsMix plays whole episodes: weight 1 everywhere or 0 everywhere, at rate ε', () => {
    const m = new EpsMix({ alpha: 0.25, delta: 0.05, seed: 3, baseline: { value: 0.8 } });
    let explored = 0;
    const n = 4000;
    for (let k = 0; k < n; k++) {
      const plan = m.beginEpisode();
      expect(plan.params.epsilon).toBe(0.25);
      const w = plan.weightAt(0);
      expect([0, 1]).toContain(w);
      expect(plan.weightAt(7)).toBe(w);
      if (w === 1) explored++;
      // Feed failures only to exploring episodes so V_low stays 0 and ε stays at α.
      m.endEpisode(w === 0, plan);
    }
    expect(explored / n).toBeGreaterThan(0.22);
    expect(explored / n).toBeLessThan(0.28);
  });

  it('cancelEpisode takes a plan back: the next plans are those of a mixer that never began it', () => {
    for (const mode of MODES) {
      const opts = { alpha: 0.3, delta: 0.05, horizon: H, seed: 8, baseline: { value: 0.5 } };
      const a = makeMixer(mode, opts);
      const b = makeMixer(mode, opts);
      const plans = (m: ConservativeMixer, cancelEvery: number): string[] => {
        const out: string[] = [];
        for (let k = 0; out.length < 200; k++) {
          const plan = m.beginEpisode();
          if (cancelEvery && k % cancelEvery === 0) {
            m.cancelEpisode(plan);
            continue;
          }
          out.push(JSON.stringify([plan.episode, plan.share, plan.params]));
          m.endEpisode(plan.realizedShare > 0.5, plan);
        }
        return out;
      };
      expect(plans(a, 3), mode).toEqual(plans(b, 0));
      expect(a.records).toHaveLength(200);
      const open = a.beginEpisode();
      a.cancelEpisode(open);
      expect(() => a.cancelEpisode(open)).toThrow(/not the open episode/);
    }
  });

  it('refuses misuse with fixable errors', () => {
    expect(() => new EpsMix({ alpha: 0, delta: 0.05, baseline: { value: 0.5 } })).toThrow(/alpha/);
    expect(() => new EpsMix({ alpha: 0.1, delta: 1, baseline: { value: 0.5 } })).toThrow(/delta/);
    expect(() => new StepMix({ alpha: 0.1, delta: 0.05, baseline: { value: 0.5 } })).toThrow(/horizon/);
    expect(() => new EpsMix({ alpha: 0.1, delta: 0.05, baseline: { successes: 5, trials: 3 } })).toThrow(
      /baseline/,
    );
    const m = new EpsMix({ alpha: 0.1, delta: 0.05, baseline: { value: 0.5 } });
    const plan = m.beginEpisode();
    expect(() => m.beginEpisode()).toThrow(/still open/);
    m.endEpisode(true, plan);
    expect(() => m.endEpisode(true, plan)).toThrow(/not the open episode/);
  });

  it('resetEvidence forgets the exploring policy and the share falls back to α', () => {
    const m = new ResidualScaleMix({ alpha: 0.1, delta: 0.05, baseline: { value: 0.5 } });
    for (let k = 0; k < 300; k++) m.endEpisode(true, m.beginEpisode());
    expect(m.allowedShare().share).toBe(1);
    m.resetEvidence();
    expect(m.allowedShare().share).toBeCloseTo(0.1, 12);
  });
});

describe('confidence bounds', () => {
  it('normal quantile matches known values', () => {
    expect(normalQuantile(0.975)).toBeCloseTo(1.959964, 5);
    expect(normalQuantile(0.95)).toBeCloseTo(1.644854, 5);
    expect(normalQuantile(0.001)).toBeCloseTo(-3.090232, 5);
    expect(normalQuantile(0.5)).toBe(0);
  });

  it('Hoeffding has its closed form; upper is the mirrored lower; no data means [0, 1]', () => {
    expect(lowerConfidenceBound('hoeffding', 70, 100, 0.05)).toBeCloseTo(
      0.7 - Math.sqrt(Math.log(20) / 200),
      12,
    );
    expect(upperConfidenceBound('wilson', 30, 100, 0.05)).toBeCloseTo(
      1 - lowerConfidenceBound('wilson', 70, 100, 0.05),
      12,
    );
    for (const k of BOUND_KINDS) {
      expect(lowerConfidenceBound(k, 0, 0, 0.05)).toBe(0);
      expect(upperConfidenceBound(k, 0, 0, 0.05)).toBe(1);
    }
    expect(() => lowerConfidenceBound('hoeffding', 3, 2, 0.05)).toThrow(/successes/);
  });

  it('each bound covers the true rate in >= 1 - δ of repeated samples', () => {
    const rng = new Rng(7);
    for (const kind of BOUND_KINDS as readonly BoundKind[]) {
      for (const p of [0.05, 0.3, 0.5, 0.9]) {
        for (const n of [10, 60, 400]) {
          let misses = 0;
          const trials = 2000;
          for (let t = 0; t < trials; t++) {
            let s = 0;
            for (let i = 0; i < n; i++) if (rng.uniform() < p) s++;
            if (lowerConfidenceBound(kind, s, n, 0.1) > p) misses++;
          }
          expect(misses / trials, `${kind} p=${p} n=${n}`).toBeLessThanOrEqual(
            0.1 + 3 * Math.sqrt((0.1 * 0.9) / trials),
          );
        }
      }
    }
  });
});
