/**
 * Conservative mixing inside residual training: the options `trainResidual` accepts, the mixer
 * they build (src/safety/mixing.ts), the per-episode record the trainer writes to
 * `outDir/mixing.jsonl`, and the windowed violation count `bench/safety.ts` reports.
 *
 * The exploring policy is base + (residual + exploration noise); the baseline is the base alone.
 * At step t of an episode the trainer executes clip(a_base + w_t · a_res) with w_t = plan.weightAt(t).
 */
import { ResrtError } from '../util/errors.js';
import { binomialBelow } from '../util/stats.js';
import {
  EpsMix,
  ResidualScaleMix,
  StepMix,
  type ConservativeMixer,
  type EpisodePlan,
  type MixingOptions,
} from '../safety/mixing.js';
import { BOUND_KINDS, type BoundKind } from '../safety/bounds.js';

export type MixingMode = 'eps' | 'step' | 'scale';
export const MIXING_MODES: readonly MixingMode[] = ['eps', 'step', 'scale'];

export type MixingBaseline =
  /** V_base known (e.g. from a large evaluation elsewhere). */
  | { value: number }
  /** V_base estimated from baseline episodes; the mixer uses its upper confidence bound. */
  | { successes: number; trials: number }
  /**
   * The trainer's own evaluation at step 0 (the residual starts at zero, so that evaluation is the
   * base alone), used as an estimate: its successes out of evalEpisodes.
   */
  | 'initial-eval';

export interface MixingSpec {
  mode: MixingMode;
  /** Allowed relative loss: each episode keeps ≥ (1 − α)·V_base, in (0, 1). */
  alpha: number;
  /** Failure probability of the confidence bounds, in (0, 1). */
  delta: number;
  bound?: BoundKind;
  /** Exploring episodes the bound looks back on (default 500; keep it short when the residual drifts). */
  window?: number;
  /** step and scale: fraction of the allowed share spent on whole exploring episodes, in [0, 1] (default 0.5). */
  probeFraction?: number;
  baseline: MixingBaseline;
}

/** One training episode as the trainer ran it. Written to outDir/mixing.jsonl, one per line. */
export interface MixingEpisode {
  episode: number;
  /** Env steps done when the episode ended (cumulative). */
  envSteps: number;
  /** Steps in this episode. */
  steps: number;
  mode: MixingMode;
  alpha: number;
  /** The allowed share s* the episode was planned with (its expected exploring share). */
  share: number;
  /** Exploring share this episode actually ran (EpsMix: 0 or 1). */
  realizedShare: number;
  /** V_base as the constraint used it, and the lower bound on the exploring policy. */
  vBase: number;
  vLow: number;
  /** ε/explore, h/ρ/horizon/probe or λ/probe. */
  params: EpisodePlan['params'];
  success: boolean;
}

const toSafetyMode = { eps: 'epsmix', step: 'stepmix', scale: 'scale' } as const;

function unitOpen(name: string, v: unknown): void {
  if (typeof v !== 'number' || !(v > 0 && v < 1)) {
    throw new ResrtError(
      `mixing.${name} = ${String(v)} is outside (0, 1)`,
      `pass --${name} between 0 and 1 exclusive, e.g. ${name === 'alpha' ? '0.1' : '0.05'}`,
    );
  }
}

/** Checks the spec before any training starts; every message carries the fix. */
export function validateMixingSpec(spec: MixingSpec): void {
  if (!MIXING_MODES.includes(spec.mode)) {
    throw new ResrtError(
      `mixing.mode = '${String(spec.mode)}' is not a mixing mode`,
      `use one of ${MIXING_MODES.join(', ')} (or leave mixing out for unconstrained training)`,
    );
  }
  unitOpen('alpha', spec.alpha);
  unitOpen('delta', spec.delta);
  if (spec.bound !== undefined && !BOUND_KINDS.includes(spec.bound)) {
    throw new ResrtError(
      `mixing.bound = '${String(spec.bound)}' is not a bound`,
      `use one of ${BOUND_KINDS.join(', ')}`,
    );
  }
  if (spec.window !== undefined && !(Number.isInteger(spec.window) && spec.window >= 1)) {
    throw new ResrtError(`mixing.window = ${spec.window} is not a positive integer`, 'use e.g. 200 episodes');
  }
  const f: unknown = spec.probeFraction;
  if (f !== undefined && (typeof f !== 'number' || !(f >= 0 && f <= 1))) {
    throw new ResrtError(
      `mixing.probeFraction = ${String(f)} is outside [0, 1]`,
      'pass the fraction of the allowed share spent on whole exploring episodes, e.g. 0.5 (0 = none)',
    );
  }
  const b: unknown = spec.baseline;
  if (b === undefined || b === null) {
    throw new ResrtError(
      'mixing needs a baseline success rate and none was given',
      "pass baseline: { value }, { successes, trials } or 'initial-eval' (the trainer's step-0 evaluation of the base)",
    );
  }
  if (b === 'initial-eval') return;
  if (typeof b === 'object' && 'value' in b) {
    const v = (b as { value: unknown }).value;
    if (typeof v !== 'number' || !(v >= 0 && v <= 1)) {
      throw new ResrtError(
        `mixing.baseline.value = ${String(v)} is outside [0, 1]`,
        'pass the base success rate, e.g. 0.5',
      );
    }
    return;
  }
  if (typeof b === 'object' && 'successes' in b && 'trials' in b) {
    const { successes, trials } = b as { successes: unknown; trials: unknown };
    if (
      typeof successes === 'number' &&
      typeof trials === 'number' &&
      Number.isInteger(successes) &&
      Number.isInteger(trials) &&
      trials > 0 &&
      successes >= 0 &&
      successes <= trials
    )
      return;
    throw new ResrtError(
      `mixing.baseline ${String(successes)}/${String(trials)} is not a valid count`,
      'give whole numbers with 0 <= successes <= trials and trials > 0',
    );
  }
  throw new ResrtError(
    `mixing.baseline = ${JSON.stringify(b)} is not a baseline`,
    "pass { value }, { successes, trials } or 'initial-eval'",
  );
}

/**
 * Builds the mixer. `initialEval` is the step-0 evaluation (successes out of episodes), needed only
 * for the 'initial-eval' baseline. `horizon` is the env's episode length (StepMix's H).
 */
export function makeMixer(
  spec: MixingSpec,
  ctx: { horizon: number; seed: number; initialEval: { successes: number; episodes: number } | null },
): ConservativeMixer {
  validateMixingSpec(spec);
  let baseline: MixingOptions['baseline'];
  if (spec.baseline === 'initial-eval') {
    if (!ctx.initialEval || ctx.initialEval.episodes <= 0) {
      throw new ResrtError(
        "mixing.baseline 'initial-eval' needs the trainer's step-0 evaluation and there is none",
        'use evalEpisodes > 0, or pass the base success rate as baseline: { value }',
      );
    }
    baseline = { successes: ctx.initialEval.successes, trials: ctx.initialEval.episodes };
  } else {
    baseline = spec.baseline;
  }
  const opts: MixingOptions = {
    alpha: spec.alpha,
    delta: spec.delta,
    bound: spec.bound,
    window: spec.window,
    probeFraction: spec.probeFraction,
    baseline,
    horizon: ctx.horizon,
    seed: ctx.seed,
  };
  switch (spec.mode) {
    case 'eps':
      return new EpsMix(opts);
    case 'step':
      return new StepMix(opts);
    case 'scale':
      return new ResidualScaleMix(opts);
  }
}

export function mixingEpisode(
  spec: MixingSpec,
  plan: EpisodePlan,
  success: boolean,
  envSteps: number,
  steps: number,
): MixingEpisode {
  if (plan.mode !== toSafetyMode[spec.mode]) {
    throw new Error(`mixing: plan mode ${plan.mode} does not match ${spec.mode}`);
  }
  return {
    episode: plan.episode,
    envSteps,
    steps,
    mode: spec.mode,
    alpha: plan.alpha,
    share: plan.share,
    realizedShare: plan.realizedShare,
    vBase: plan.vBase,
    vLow: plan.vLow,
    params: { ...plan.params },
    success,
  };
}

export interface WindowedViolations {
  /** Sliding windows of `window` consecutive episodes (episodes − window + 1, or 0). */
  windows: number;
  /** Windows whose success rate is below the threshold. */
  violations: number;
  /** violations / windows (null when there is no full window). */
  fraction: number | null;
  /**
   * Windows whose success count is significantly below the threshold: P(Bin(W, threshold) ≤ count)
   * < δ. If every episode's expected success is at least the threshold, each window is flagged with
   * probability < δ, so the expected fraction is < δ: the measure a compliant run can meet.
   */
  significant: number;
  /** significant / windows (null when there is no full window). */
  significantFraction: number | null;
}

/**
 * The violation measure: for each training episode i ≥ W − 1, the success rate of episodes
 * i − W + 1 … i against (1 − α)·baseline. A window's empirical rate is noisy: a policy exactly at the
 * threshold falls below it in about half of its windows, so `violations` alone cannot be held to δ
 * at any affordable W; `significant` counts the windows that are evidence of a violation at level δ.
 */
export function windowedViolations(
  outcomes: readonly boolean[],
  window: number,
  threshold: number,
  delta: number,
): WindowedViolations {
  if (!(Number.isInteger(window) && window >= 1)) {
    throw new ResrtError(`window = ${window} is not a positive integer`, 'use e.g. --window 20 episodes');
  }
  if (!(delta > 0 && delta < 1)) {
    throw new ResrtError(`delta = ${delta} is outside (0, 1)`, 'use e.g. --delta 0.05');
  }
  // Counts at or below `flagAt` are significant; found once, since W and the threshold are fixed.
  let flagAt = -1;
  while (flagAt < window && binomialBelow(window, threshold, flagAt + 2) < delta) flagAt++;
  let sum = 0;
  let windows = 0;
  let violations = 0;
  let significant = 0;
  for (let i = 0; i < outcomes.length; i++) {
    sum += outcomes[i] ? 1 : 0;
    if (i >= window) sum -= outcomes[i - window] ? 1 : 0;
    if (i >= window - 1) {
      windows++;
      // Compare counts, not rates, so a window exactly at the threshold is not a float accident.
      if (sum < threshold * window - 1e-9) violations++;
      if (sum <= flagAt) significant++;
    }
  }
  return {
    windows,
    violations,
    fraction: windows ? violations / windows : null,
    significant,
    significantFraction: windows ? significant / windows : null,
  };
}

/** What a checkpoint keeps so a resumed run rebuilds its mixer exactly. */
export interface MixingState {
  spec: MixingSpec;
  records: MixingEpisode[];
}

/**
 * Rebuilds the mixer's evidence by replaying the checkpointed episodes: the plans depend only on the
 * outcomes so far and EpsMix's seeded coin, so the replay reaches the same state. A replayed plan
 * that differs from its record means the settings changed.
 */
export function replayMixer(mixer: ConservativeMixer, records: readonly MixingEpisode[]): void {
  for (const r of records) {
    const plan = mixer.beginEpisode();
    if (
      plan.episode !== r.episode ||
      Math.abs(plan.share - r.share) > 1e-12 ||
      plan.realizedShare !== r.realizedShare
    ) {
      throw new ResrtError(
        `resuming: the mixer does not replay episode ${r.episode} of the checkpoint (share ${plan.share} vs ${r.share})`,
        'resume with the same mixing settings, or start a new run in another --out folder',
      );
    }
    mixer.endEpisode(r.success, plan);
  }
}
