/**
 * A success detector's episode verdicts, measured and thresholded: an episode counts as a
 * success when the detector fires on any observation after a step (what `resrt train` and
 * `resrt actor` do with it), so an episode is scored by its most success-like observation.
 */

export const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

/** Per episode: P(success) of its final observation and the largest over observations 1…T. */
export interface EpisodeScores {
  success: boolean;
  final: number;
  max: number;
}

/** Episode-level counts and rates. */
export interface DetectorMetrics {
  episodes: number;
  truePositives: number;
  falsePositives: number;
  trueNegatives: number;
  falseNegatives: number;
  accuracy: number;
  /** NaN when the detector fired on no episode. */
  precision: number;
  /** NaN without successful episodes. */
  recall: number;
  /** Accuracy of the final observation alone (success frame vs a failure's last frame). */
  finalFrameAccuracy: number;
}

export function detectorMetrics(scores: readonly EpisodeScores[], threshold: number): DetectorMetrics {
  let tp = 0;
  let fp = 0;
  let tn = 0;
  let fn = 0;
  let finalRight = 0;
  for (const s of scores) {
    const fired = s.max >= threshold;
    if (fired && s.success) tp++;
    else if (fired) fp++;
    else if (s.success) fn++;
    else tn++;
    if (s.final >= threshold === s.success) finalRight++;
  }
  const n = scores.length;
  return {
    episodes: n,
    truePositives: tp,
    falsePositives: fp,
    trueNegatives: tn,
    falseNegatives: fn,
    accuracy: (tp + tn) / n,
    precision: tp / (tp + fp),
    recall: tp / (tp + fn),
    finalFrameAccuracy: finalRight / n,
  };
}

/**
 * The threshold with the best episode accuracy on `scores`. The best accuracy may be reached on
 * separate ranges of thresholds (an FN traded for an FP): then the best balanced accuracy (the
 * mean of the recall on successes and on failures, which does not favour the larger class, e.g.
 * a detector that never fires), and of equally good ranges the highest, since a false success is
 * a reward the learner should not get. Within the range, the middle (on the logit scale), away
 * from both classes.
 */
export function chooseThreshold(scores: readonly EpisodeScores[]): number {
  const logit = (p: number): number => Math.log(p / (1 - p));
  const clampP = (p: number): number => Math.min(1 - 1e-6, Math.max(1e-6, p));
  const cuts = [...new Set(scores.map((s) => clampP(s.max)))].sort((a, b) => a - b);
  // Candidates, ascending: below everything, between neighbours, above everything.
  const candidates = [clampP(cuts[0] / 2)];
  for (let i = 0; i + 1 < cuts.length; i++)
    candidates.push(sigmoid((logit(cuts[i]) + logit(cuts[i + 1])) / 2));
  candidates.push(clampP((1 + cuts[cuts.length - 1]) / 2));
  const rate = (hits: number, all: number): number => (all > 0 ? hits / all : 1);
  const keys = candidates.map((c) => {
    const m = detectorMetrics(scores, c);
    const balanced =
      (rate(m.truePositives, m.truePositives + m.falseNegatives) +
        rate(m.trueNegatives, m.trueNegatives + m.falsePositives)) /
      2;
    return [m.accuracy, balanced];
  });
  const better = (a: number[], b: number[]): boolean =>
    a[0] > b[0] + 1e-12 || (Math.abs(a[0] - b[0]) <= 1e-12 && a[1] > b[1] + 1e-12);
  const best = keys.reduce((b, k) => (better(k, b) ? k : b));
  // The highest run of adjacent best candidates.
  let last = keys.length - 1;
  while (better(best, keys[last])) last--;
  let first = last;
  while (first > 0 && !better(best, keys[first - 1])) first--;
  return sigmoid((logit(candidates[first]) + logit(candidates[last])) / 2);
}
