/**
 * Conservative mixing between the baseline (base policy alone) and the exploring policy (base +
 * residual), after "Near-optimal Conservative Exploration in RL under Episode-wise Constraints"
 * (StepMix, EpsMix). Each episode must keep its expected success ≥ (1 − α)·V_base with probability
 * ≥ 1 − δ. All three mixers compute one number per episode, the largest exploring share s* that the
 * pessimistic value model allows, and differ only in how an episode realizes that share:
 *
 *   pessimistic value of share s:   V(s) = s·V_low + (1 − s)·V_base
 *   constraint V(s) ≥ (1 − α)·V_base  ⇔  s ≤ s* = α·V_base / (V_base − V_low)   (s* = 1 if V_low ≥ V_base)
 *
 *   EpsMix: the whole episode explores with probability ε = s*, else runs the baseline.
 *   StepMix: explore for the first h steps, mix one step with weight ρ, baseline after, h + ρ = s·H.
 *   Scale:   the residual is scaled by λ = s for the whole episode.
 *
 * StepMix and the scale spend a fraction f of s* on probes: with probability q = f·s* the episode
 * is run wholly by the exploring policy, otherwise with the in-episode share s = (s* − q)/(1 − q),
 * so the expected share is still s*. Probes are what lets them learn V_explore when a diluted
 * episode succeeds at the base's rate whatever the residual does (a 10% share that changes nothing
 * says nothing about the other 90%).
 *
 * V_low is the larger of two lower bounds, δ split between them: one from whole exploring episodes
 * (unbiased samples of V_explore), one from partial episodes solved through the linear model.
 * EpsMix's value is exactly linear in ε. For StepMix and the scale the linear model is an
 * assumption (the success of a mixed episode lies on the line between its two ends); docs/safety.md
 * says when it is reasonable.
 */
import { ResrtError } from '../util/errors.js';
import { Rng, type RngState } from '../util/rng.js';
import { lowerConfidenceBound, upperConfidenceBound, type BoundKind } from './bounds.js';

export type MixMode = 'epsmix' | 'stepmix' | 'scale';

export type BaselineSpec =
  /** V_base known (e.g. from a large evaluation). */
  | { value: number }
  /** V_base estimated from baseline evaluation episodes; an upper confidence bound is used. */
  | { successes: number; trials: number; learn?: boolean };

export interface MixingOptions {
  /** Allowed relative loss: every episode keeps ≥ (1 − α)·V_base. */
  alpha: number;
  /** Failure probability of the bounds (split in two when V_base is estimated). */
  delta: number;
  bound?: BoundKind;
  /** Exploring episodes kept for the bound; older evidence is forgotten (the residual changes). */
  window?: number;
  baseline: BaselineSpec;
  /** Steps per episode, for StepMix's (h, ρ). */
  horizon?: number;
  /** Seed of the per-episode coin (EpsMix's ε, the probes of StepMix and the scale). */
  seed?: number;
  /**
   * StepMix and scale: the fraction of the allowed share spent on probes, whole exploring episodes
   * (default 0.5; 0 = never, every episode partial). EpsMix is the case 1 and ignores it.
   */
  probeFraction?: number;
}

/** What one episode runs. weightAt(step) is the exploring policy's share of the action at that step. */
export class EpisodePlan {
  constructor(
    readonly episode: number,
    readonly mode: MixMode,
    readonly alpha: number,
    /**
     * The allowed share s* this episode was planned with: its expected exploring share (EpsMix's ε;
     * for StepMix and scale over the probe coin too). What it ran is `realizedShare`.
     */
    readonly share: number,
    /** V_base as used in the constraint (an upper bound when estimated). */
    readonly vBase: number,
    /** Lower confidence bound on the exploring policy's success rate. */
    readonly vLow: number,
    readonly params: {
      epsilon?: number;
      explore?: boolean;
      h?: number;
      rho?: number;
      horizon?: number;
      lambda?: number;
      /** StepMix/scale: this episode is a probe, run wholly by the exploring policy. */
      probe?: boolean;
    },
  ) {}

  weightAt(step: number): number {
    const p = this.params;
    switch (this.mode) {
      case 'epsmix':
        return p.explore ? 1 : 0;
      case 'scale':
        return p.lambda as number;
      case 'stepmix': {
        const h = p.h as number;
        if (step < h) return 1;
        return step === h ? (p.rho as number) : 0;
      }
    }
  }

  /** The share of the exploring policy this episode actually ran, as evidence for its value. */
  get realizedShare(): number {
    const p = this.params;
    // EpsMix and the scale hold one weight for the whole episode; StepMix's weights sum to h + ρ.
    if (this.mode !== 'stepmix') return this.weightAt(0);
    return ((p.h as number) + (p.rho as number)) / (p.horizon as number);
  }
}

export interface EpisodeRecord {
  episode: number;
  mode: MixMode;
  alpha: number;
  share: number;
  vBase: number;
  vLow: number;
  params: EpisodePlan['params'];
  success: boolean;
}

function checkUnit(name: string, v: number, open: boolean): void {
  const ok = open ? v > 0 && v < 1 : v >= 0 && v <= 1;
  if (typeof v !== 'number' || !ok) {
    throw new ResrtError(
      `mixing: ${name} = ${v} is outside ${open ? '(0, 1)' : '[0, 1]'}`,
      `pick ${name} such as 0.1`,
    );
  }
}

export abstract class ConservativeMixer {
  abstract readonly mode: MixMode;
  readonly alpha: number;
  readonly delta: number;
  readonly bound: BoundKind;
  readonly window: number;
  readonly probeFraction: number;
  protected readonly rng: Rng;
  private readonly known: number | null;
  private baseSuccesses: number;
  private baseTrials: number;
  private readonly learnBaseline: boolean;
  private readonly whole: EvidenceRing;
  private readonly partial: EvidenceRing;
  private readonly history: EpisodeRecord[] = [];
  private open: EpisodePlan | null = null;
  private openRngState: RngState | null = null;
  private nextEpisode = 0;

  constructor(opts: MixingOptions) {
    checkUnit('alpha', opts.alpha, true);
    checkUnit('delta', opts.delta, true);
    this.alpha = opts.alpha;
    this.delta = opts.delta;
    this.bound = opts.bound ?? 'hoeffding';
    this.window = opts.window ?? 500;
    if (!Number.isInteger(this.window) || this.window < 1) {
      throw new ResrtError(
        `mixing: window = ${this.window} is not a positive integer`,
        'use e.g. 500 episodes',
      );
    }
    this.probeFraction = opts.probeFraction ?? 0.5;
    checkUnit('probeFraction', this.probeFraction, false);
    this.rng = new Rng(opts.seed ?? 0);
    const b = opts.baseline;
    if ('value' in b) {
      checkUnit('baseline.value', b.value, false);
      this.known = b.value;
      this.baseSuccesses = 0;
      this.baseTrials = 0;
      this.learnBaseline = false;
    } else {
      if (!(
        Number.isInteger(b.trials) &&
        Number.isInteger(b.successes) &&
        b.trials >= 0 &&
        b.successes >= 0 &&
        b.successes <= b.trials
      )) {
        throw new ResrtError(
          `mixing: baseline ${b.successes}/${b.trials} is not a valid count`,
          'give successes <= trials from the baseline evaluation',
        );
      }
      this.known = null;
      this.baseSuccesses = b.successes;
      this.baseTrials = b.trials;
      this.learnBaseline = b.learn ?? true;
    }
    this.whole = new EvidenceRing(this.window);
    this.partial = new EvidenceRing(this.window);
  }

  /** δ for each bound: split between the two when V_base is estimated (union bound). */
  private get deltaEach(): number {
    return this.known === null ? this.delta / 2 : this.delta;
  }

  /** V_base as the constraint uses it: the value, or its upper confidence bound (conservative, docs). */
  baselineValue(): number {
    if (this.known !== null) return this.known;
    return upperConfidenceBound(this.bound, this.baseSuccesses, this.baseTrials, this.deltaEach);
  }

  /**
   * Lower confidence bound on the exploring policy's success rate from the windows: the larger of
   * the bound over whole exploring episodes and the bound over partial ones. A partial episode with
   * share s has mean s·V_explore + (1 − s)·V_base, so that bound is solved for V_explore with
   * V_base at its upper bound. Mixers with partial episodes split δ between the two (union bound).
   */
  exploringLowerBound(): number {
    // Only StepMix and the scale run partial episodes; they split δ between the two bounds.
    const delta = this.mode === 'epsmix' ? this.deltaEach : this.deltaEach / 2;
    const whole = this.whole;
    let v = whole.count > 0 ? lowerConfidenceBound(this.bound, whole.sumSuccess, whole.count, delta) : 0;
    const part = this.partial;
    if (part.count > 0) {
      const meanShare = part.sumShare / part.count;
      const lcb = lowerConfidenceBound(this.bound, part.sumSuccess, part.count, delta);
      v = Math.max(v, (lcb - (1 - meanShare) * this.baselineValue()) / meanShare);
    }
    return Math.min(1, Math.max(0, v));
  }

  /** The largest exploring share s* whose pessimistic value meets the constraint. */
  allowedShare(): { share: number; vBase: number; vLow: number } {
    const vBase = this.baselineValue();
    const vLow = this.exploringLowerBound();
    const share = vLow >= vBase ? 1 : Math.min(1, (this.alpha * vBase) / (vBase - vLow));
    return { share, vBase, vLow };
  }

  beginEpisode(): EpisodePlan {
    if (this.open !== null) {
      throw new ResrtError(
        `mixing: episode ${this.open.episode} is still open`,
        'call endEpisode(success, plan) before beginEpisode()',
      );
    }
    const { share, vBase, vLow } = this.allowedShare();
    this.openRngState = this.rng.getState();
    this.open = this.plan(this.nextEpisode++, share, vBase, vLow);
    return this.open;
  }

  /**
   * Takes back the open plan of an episode that never ran a step (stopped or e-stopped right after
   * its reset): the mixer is left exactly as before beginEpisode(), coin included, so the episodes
   * it records replay the same way after a restart.
   */
  cancelEpisode(plan: EpisodePlan): void {
    if (this.open === null || plan !== this.open || this.openRngState === null) {
      throw new ResrtError(
        'mixing: cancelEpisode got a plan that is not the open episode',
        'pass the plan beginEpisode() returned, once, instead of ending it',
      );
    }
    this.rng.setState(this.openRngState);
    this.open = null;
    this.openRngState = null;
    this.nextEpisode--;
  }

  endEpisode(success: boolean, plan: EpisodePlan): EpisodeRecord {
    if (this.open === null || plan !== this.open) {
      throw new ResrtError(
        'mixing: endEpisode got a plan that is not the open episode',
        'pass the plan beginEpisode() returned, once',
      );
    }
    this.open = null;
    this.openRngState = null;
    const s = plan.realizedShare;
    if (s >= 1) this.whole.push(1, success);
    else if (s > 0) this.partial.push(s, success);
    else if (this.learnBaseline) {
      this.baseTrials++;
      if (success) this.baseSuccesses++;
    }
    const record: EpisodeRecord = {
      episode: plan.episode,
      mode: plan.mode,
      alpha: plan.alpha,
      share: plan.share,
      vBase: plan.vBase,
      vLow: plan.vLow,
      params: plan.params,
      success,
    };
    this.history.push(record);
    return record;
  }

  /** Forget the exploring policy's evidence (after a large change of the residual). */
  resetEvidence(): void {
    this.whole.clear();
    this.partial.clear();
  }

  /** Every finished episode, in order. */
  get records(): readonly EpisodeRecord[] {
    return this.history;
  }

  protected abstract plan(episode: number, share: number, vBase: number, vLow: number): EpisodePlan;

  /**
   * StepMix and scale: spends the fraction probeFraction of s* on a probe coin, q = f·s*. Returns
   * null for a probe episode, else the in-episode share (s* − q)/(1 − q), which keeps the expected
   * share at s*. One coin per episode whatever the outcome, so a replay draws the same coins.
   */
  protected probeOrShare(share: number): number | null {
    const coin = this.rng.uniform();
    if (share >= 1) return 1;
    const q = this.probeFraction * share;
    return coin < q ? null : (share - q) / (1 - q);
  }
}

/** The last `window` episodes' shares and outcomes, with running sums. */
class EvidenceRing {
  private readonly shares: Float64Array;
  private readonly successes: Uint8Array;
  private start = 0;
  count = 0;
  sumShare = 0;
  sumSuccess = 0;

  constructor(private readonly window: number) {
    this.shares = new Float64Array(window);
    this.successes = new Uint8Array(window);
  }

  push(share: number, success: boolean): void {
    if (this.count === this.window) {
      this.sumShare -= this.shares[this.start];
      this.sumSuccess -= this.successes[this.start];
      this.start = (this.start + 1) % this.window;
      this.count--;
    }
    const at = (this.start + this.count) % this.window;
    this.shares[at] = share;
    this.successes[at] = success ? 1 : 0;
    this.count++;
    this.sumShare += share;
    this.sumSuccess += success ? 1 : 0;
  }

  clear(): void {
    this.start = 0;
    this.count = 0;
    this.sumShare = 0;
    this.sumSuccess = 0;
  }
}

/** Whole episodes explore with probability ε = s*; the rest run the baseline. */
export class EpsMix extends ConservativeMixer {
  readonly mode = 'epsmix' as const;

  protected plan(episode: number, share: number, vBase: number, vLow: number): EpisodePlan {
    const explore = this.rng.uniform() < share;
    return new EpisodePlan(episode, this.mode, this.alpha, share, vBase, vLow, { epsilon: share, explore });
  }
}

/**
 * Explore for the first h steps, one step at weight ρ, then the baseline: (h + ρ)/H = s, the
 * in-episode share; or, with probability q, a probe that explores all H steps (expected share s*).
 */
export class StepMix extends ConservativeMixer {
  readonly mode = 'stepmix' as const;
  readonly horizon: number;

  constructor(opts: MixingOptions) {
    super(opts);
    const H = opts.horizon;
    if (H === undefined || !Number.isInteger(H) || H < 1) {
      throw new ResrtError(
        `StepMix: horizon = ${String(H)} is not a positive integer`,
        'pass the episode length in steps (env.maxEpisodeSteps)',
      );
    }
    this.horizon = H;
  }

  protected plan(episode: number, share: number, vBase: number, vLow: number): EpisodePlan {
    const H = this.horizon;
    const inEpisode = this.probeOrShare(share);
    const steps = (inEpisode ?? 1) * H;
    let h = Math.floor(steps);
    let rho = steps - h;
    if (h >= H) {
      h = H;
      rho = 0;
    }
    return new EpisodePlan(episode, this.mode, this.alpha, share, vBase, vLow, {
      h,
      rho,
      horizon: H,
      probe: inEpisode === null,
    });
  }
}

/**
 * The residual is scaled by λ = s for the whole episode, action = base + λ·residual; or, with
 * probability q, a probe at λ = 1 (expected share s*).
 */
export class ResidualScaleMix extends ConservativeMixer {
  readonly mode = 'scale' as const;

  protected plan(episode: number, share: number, vBase: number, vLow: number): EpisodePlan {
    const inEpisode = this.probeOrShare(share);
    return new EpisodePlan(episode, this.mode, this.alpha, share, vBase, vLow, {
      lambda: inEpisode ?? 1,
      probe: inEpisode === null,
    });
  }
}
