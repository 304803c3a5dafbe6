/**
 * ε-masking (CAMEL): the probability that the base-relative mask applies decays from 1 to a floor,
 * so early training explores near the base policy and later training is free to leave it.
 */
import type { MaskSchedule } from './config.js';

/**
 * Probability that the mask applies after t episodes or steps.
 *   constant:    p = floor
 *   linear:      p(t) = max(floor, 1 − (1 − floor)·t/N)
 *   exponential: p(t) = floor^(min(t, N)/N)   (geometric from 1 at t = 0 to floor at t = N; floor > 0)
 */
export function maskProbability(schedule: MaskSchedule, t: number): number {
  const { kind, floor, horizon } = schedule;
  if (kind === 'constant') return floor;
  const x = Math.min(Math.max(t, 0), horizon) / horizon;
  if (kind === 'linear') return 1 - (1 - floor) * x;
  return Math.pow(floor, x);
}
