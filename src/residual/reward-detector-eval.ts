/**
 * `resrt reward eval`: a detector file measured on labelled episodes it was not trained on, judged
 * as `train` and `actor` judge with it: the file itself in onnxruntime, one observation at a time,
 * at the threshold the file carries, an episode a success when any observation after a step fires.
 * Its own test split is 20% of its data; new episodes (other seeds, a session a person labelled)
 * say how it does on what it will see.
 */
import type { FrameStore } from '../nn/index.js';
import type { SuccessJudge } from '../runtime/success-detector.js';
import type { CameraFrame } from '../types.js';
import { ResrtError } from '../util/errors.js';
import type { DetectorEpisode } from './reward-detector.js';
import { detectorMetrics, type DetectorMetrics, type EpisodeScores } from './reward-detector-verdict.js';

/** Labelled episodes from one place (a data file), their frames in the detector's camera order. */
export interface LabelledSource {
  name: string;
  /** The cameras the frames are of, in the order of each episode's stores. */
  cameras: readonly { name: string; width: number; height: number }[];
  episodes: readonly DetectorEpisode[];
}

export interface DetectorEvaluation {
  all: DetectorMetrics;
  bySource: { source: string; metrics: DetectorMetrics }[];
  /** Observations judged. */
  observations: number;
  seconds: number;
}

export async function evaluateDetector(
  detector: SuccessJudge & { path?: string },
  sources: readonly LabelledSource[],
): Promise<DetectorEvaluation> {
  const started = performance.now();
  const what = detector.path ?? 'the success detector';
  for (const source of sources) {
    for (const c of detector.cameras) {
      const given = source.cameras.find((s) => s.name === c.name);
      if (!given || given.width !== c.width || given.height !== c.height) {
        throw new ResrtError(
          `${what} reads camera "${c.name}" at ${c.width}x${c.height}, and ${source.name} ${given ? `records it at ${given.width}x${given.height}` : 'does not record it'}`,
          c.mjcfCamera
            ? `collect the episodes with \`resrt collect --detector-cameras ${c.mjcfCamera}@${c.width}x${c.height}\``
            : `measure it on episodes recorded with camera "${c.name}" at ${c.width}x${c.height}`,
        );
      }
    }
  }
  let observations = 0;
  const all: EpisodeScores[] = [];
  const bySource: DetectorEvaluation['bySource'] = [];
  for (const source of sources) {
    const order = detector.cameras.map((c) => source.cameras.findIndex((s) => s.name === c.name));
    const scores: EpisodeScores[] = [];
    for (const ep of source.episodes) {
      const stores = ep.load();
      const count = stores[0].count;
      let max = -Infinity;
      let final = 0;
      // Observation 0 (the reset) is never judged: the detector runs after each step.
      for (let t = 1; t < count; t++) {
        const frames: Record<string, CameraFrame> = {};
        detector.cameras.forEach((c, k) => (frames[c.name] = frameAt(stores[order[k]], t)));
        const { probability } = await detector.judge(frames);
        max = Math.max(max, probability);
        if (t === count - 1) final = probability;
        observations++;
      }
      scores.push({ success: ep.success, final, max });
    }
    if (scores.length === 0) continue;
    bySource.push({ source: source.name, metrics: detectorMetrics(scores, detector.threshold) });
    all.push(...scores);
  }
  if (all.length === 0) {
    throw new ResrtError(
      'no labelled episodes to measure the detector on',
      'pass demonstration files with frames: --data heldout.jsonl (resrt collect, resrt import session --labelled-only)',
    );
  }
  return {
    all: detectorMetrics(all, detector.threshold),
    bySource,
    observations,
    seconds: (performance.now() - started) / 1000,
  };
}

function frameAt(store: FrameStore, t: number): CameraFrame {
  const size = store.width * store.height * 3;
  return {
    width: store.width,
    height: store.height,
    channels: 3,
    data: store.data.subarray(t * size, (t + 1) * size),
    capturedAtMs: 0,
    seq: t,
  };
}
