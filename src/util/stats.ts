/** Small statistics used by evaluation, benchmarks and latency reports. */

export interface Interval {
  low: number;
  high: number;
}

/** Wilson score interval for a binomial proportion (z = 1.96 for 95%). */
export function wilsonInterval(successes: number, trials: number, z = 1.96): Interval {
  if (trials === 0) return { low: 0, high: 1 };
  const p = successes / trials;
  const z2 = z * z;
  const denom = 1 + z2 / trials;
  const centre = (p + z2 / (2 * trials)) / denom;
  const half = (z * Math.sqrt((p * (1 - p)) / trials + z2 / (4 * trials * trials))) / denom;
  return { low: Math.max(0, centre - half), high: Math.min(1, centre + half) };
}

export interface Percentiles {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Percentiles of raw samples (nearest-rank). */
export function percentiles(samples: ArrayLike<number>): Percentiles {
  const n = samples.length;
  if (n === 0) return { count: 0, mean: NaN, p50: NaN, p90: NaN, p99: NaN, max: NaN };
  const sorted = Float64Array.from(samples).sort();
  const at = (q: number): number => sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i];
  return { count: n, mean: sum / n, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[n - 1] };
}

/**
 * Log-bucketed latency histogram with constant memory, for long-running loops: 1% relative
 * resolution from 100 ns to ~100 s.
 */
export class LatencyHistogram {
  private static readonly minValue = 1e-4; // ms
  private static readonly growth = 1.01;
  private static readonly bucketCount = Math.ceil(Math.log(1e9) / Math.log(LatencyHistogram.growth));
  private readonly counts = new Uint32Array(LatencyHistogram.bucketCount);
  private total = 0;
  private sum = 0;
  private maxSeen = 0;

  record(valueMs: number): void {
    if (!Number.isFinite(valueMs)) return;
    const v = Math.max(valueMs, LatencyHistogram.minValue);
    const idx = Math.min(
      LatencyHistogram.bucketCount - 1,
      Math.floor(Math.log(v / LatencyHistogram.minValue) / Math.log(LatencyHistogram.growth)),
    );
    this.counts[idx]++;
    this.total++;
    this.sum += valueMs;
    if (valueMs > this.maxSeen) this.maxSeen = valueMs;
  }

  get count(): number {
    return this.total;
  }

  quantile(q: number): number {
    if (this.total === 0) return NaN;
    const rank = Math.max(1, Math.ceil(q * this.total));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= rank) {
        // Upper edge of the bucket, capped by the true maximum.
        return Math.min(this.maxSeen, LatencyHistogram.minValue * LatencyHistogram.growth ** (i + 1));
      }
    }
    return this.maxSeen;
  }

  summary(): Percentiles {
    return {
      count: this.total,
      mean: this.total ? this.sum / this.total : NaN,
      p50: this.quantile(0.5),
      p90: this.quantile(0.9),
      p99: this.quantile(0.99),
      max: this.total ? this.maxSeen : NaN,
    };
  }

  reset(): void {
    this.counts.fill(0);
    this.total = 0;
    this.sum = 0;
    this.maxSeen = 0;
  }
}

/** P(X < k) for X ~ Binomial(n, p), summed in log space so n in the thousands stays exact enough. */
export function binomialBelow(n: number, p: number, k: number): number {
  if (p <= 0) return k > 0 ? 1 : 0;
  if (p >= 1) return n < k ? 1 : 0;
  let total = 0;
  let logC = 0;
  for (let i = 0; i <= n && i < k; i++) {
    if (i > 0) logC += Math.log((n - i + 1) / i);
    total += Math.exp(logC + i * Math.log(p) + (n - i) * Math.log(1 - p));
  }
  return Math.min(1, total);
}
