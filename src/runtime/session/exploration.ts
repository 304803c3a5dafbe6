/**
 * What an actor proposes to the safety layer: the residual with the learner's exploration noise
 * (uniform noise during warm-up, Gaussian after), composed onto the base action.
 */
import type { Rng } from '../../util/rng.js';
import type { LearnerStatus } from './protocol.js';

/**
 * The residual plus exploration noise, clipped to the residual's scale (the loaded residual's, else
 * the learner's). Without a learner's status the residual goes unchanged.
 */
export function exploreResidual(
  residual: Float32Array,
  learner: LearnerStatus | null,
  residualScale: number | undefined,
  rng: Rng,
): Float32Array {
  const out = Float32Array.from(residual);
  if (!learner) return out;
  const scale = residualScale ?? learner.actionScale;
  for (let i = 0; i < out.length; i++) {
    const v = learner.warmup
      ? (rng.uniform() * 2 - 1) * learner.warmupNoise * learner.actionScale
      : out[i] + rng.normal(0, learner.explorationStd);
    out[i] = Math.max(-scale, Math.min(scale, v));
  }
  return out;
}

/** clip(base + weight·residual) to the normalized box. */
export function clipAdd(base: Float32Array, res: Float32Array, weight: number): Float32Array {
  const out = new Float32Array(base.length);
  for (let i = 0; i < base.length; i++) {
    const v = base[i] + weight * res[i];
    out[i] = v > 1 ? 1 : v < -1 ? -1 : v;
  }
  return out;
}
