/**
 * One-sided confidence bounds on a success rate from Bernoulli outcomes. Each holds with
 * probability ≥ 1 − δ (Wilson: approximately, from the normal approximation).
 */
import { ResrtError } from '../util/errors.js';

export type BoundKind = 'hoeffding' | 'wilson' | 'bernstein';
export const BOUND_KINDS: readonly BoundKind[] = ['hoeffding', 'wilson', 'bernstein'];

/** Standard normal quantile Φ⁻¹(p) (Acklam's rational approximation, |error| < 1.2e-9). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) {
    if (p === 0) return -Infinity;
    if (p === 1) return Infinity;
    throw new ResrtError(`normalQuantile: p = ${p} is outside [0, 1]`, 'pass a probability');
  }
  const a = [
    -39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716,
    2.506628277459239,
  ];
  const b = [
    -54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572,
  ];
  const c = [
    -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
    2.938163982698783,
  ];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const pLow = 0.02425;
  if (p < pLow) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (
      (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
      ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    );
  }
  if (p > 1 - pLow) return -normalQuantile(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q) /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
  );
}

function checkArgs(successes: number, trials: number, delta: number): void {
  if (!(Number.isInteger(trials) && trials >= 0 && successes >= 0 && successes <= trials)) {
    throw new ResrtError(
      `confidence bound: ${successes} successes out of ${trials} trials is not a valid count`,
      'pass 0 <= successes <= trials',
    );
  }
  if (!(delta > 0 && delta < 1))
    throw new ResrtError(`confidence bound: delta = ${delta} is outside (0, 1)`, 'use e.g. 0.05');
}

/**
 * Lower bound L with P(p ≥ L) ≥ 1 − δ.
 *   hoeffding: p̂ − √(ln(1/δ) / 2n)
 *   wilson:    lower end of the Wilson score interval at z = Φ⁻¹(1 − δ)
 *   bernstein: p̂ − √(2·V·ln(2/δ) / n) − 7·ln(2/δ) / (3(n − 1)), V the unbiased sample variance
 *              (empirical Bernstein, Maurer & Pontil 2009)
 * With no trials (or n < 2 for Bernstein) it returns 0: nothing is known.
 */
export function lowerConfidenceBound(
  kind: BoundKind,
  successes: number,
  trials: number,
  delta: number,
): number {
  checkArgs(successes, trials, delta);
  if (trials === 0) return 0;
  const n = trials;
  const mean = successes / n;
  let low: number;
  switch (kind) {
    case 'hoeffding':
      low = mean - Math.sqrt(Math.log(1 / delta) / (2 * n));
      break;
    case 'wilson': {
      // Continuity-corrected Wilson: the plain score interval undercovers near the nominal level
      // for some (p, n), which an episode-wise guarantee cannot afford.
      if (successes === 0) return 0;
      const z = normalQuantile(1 - delta);
      const z2 = z * z;
      const s = 2 * n * mean + z2 - 1;
      const root = z * Math.sqrt(z2 - 1 / n + 4 * n * mean * (1 - mean) + (4 * mean - 2));
      low = (s - root) / (2 * (n + z2));
      break;
    }
    case 'bernstein': {
      if (n < 2) return 0;
      const variance = (n / (n - 1)) * mean * (1 - mean);
      const l = Math.log(2 / delta);
      low = mean - Math.sqrt((2 * variance * l) / n) - (7 * l) / (3 * (n - 1));
      break;
    }
    default:
      throw new ResrtError(
        `confidence bound: unknown kind "${String(kind)}"`,
        `use one of ${BOUND_KINDS.join(', ')}`,
      );
  }
  return Math.min(1, Math.max(0, low));
}

/** Upper bound U with P(p ≤ U) ≥ 1 − δ (the lower bound of the failure rate, mirrored). */
export function upperConfidenceBound(
  kind: BoundKind,
  successes: number,
  trials: number,
  delta: number,
): number {
  if (trials === 0) {
    checkArgs(successes, trials, delta);
    return 1;
  }
  return 1 - lowerConfidenceBound(kind, trials - successes, trials, delta);
}
