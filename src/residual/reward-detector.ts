/**
 * `resrt reward train`: a learned success detector (HIL-SERL's reward classifier) from camera
 * frames of episodes labelled success or failure. Episodes are split by episode (never by frame)
 * into train, validation and test; the network (reward-detector-network.ts) learns from the
 * final frames of successful episodes (positives) and frames of every episode before its end
 * (negatives), in balanced minibatches with random shift; the threshold is chosen on the
 * validation episodes' verdicts (reward-detector-verdict.ts); precision, recall and accuracy are measured on validation and test; the
 * ONNX export is checked against the engine's forward pass.
 *
 * An episode's verdict is what `resrt train` and `resrt actor` will do with the detector: the
 * episode counts as a success when the detector fires on any observation after a step.
 */
import '../util/ort-telemetry.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import type { CameraFrame } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import {
  AdamClock,
  DoubleBuffer,
  framesToBatch,
  initEngine,
  randomShifts,
  type DevicePreference,
  type FrameStore,
} from '../nn/index.js';
import { createSession } from '../runtime/onnx-policy.js';
import {
  DetectorMeta,
  detectorImageInput,
  PROBABILITY_OUTPUT,
  SuccessDetector,
  type DetectorCamera,
} from '../runtime/success-detector.js';
import { DetectorNetwork } from './reward-detector-network.js';
import {
  chooseThreshold,
  detectorMetrics,
  sigmoid,
  type DetectorMetrics,
  type EpisodeScores,
} from './reward-detector-verdict.js';

/** One labelled episode: its outcome and, loaded on demand, its frames. */
export interface DetectorEpisode {
  /** Where it came from, for messages (e.g. "demos.jsonl episode 12"). */
  name: string;
  success: boolean;
  /** Frames of observations 0…T, one store per camera (DetectorData.cameras order), T + 1 each. */
  load(): FrameStore[];
}

export interface DetectorData {
  cameras: DetectorCamera[];
  episodes: DetectorEpisode[];
  /** The task the frames come from (metadata). */
  task: string;
}

export interface DetectorConfig {
  /** Per camera: output channels of each 3×3 stride-2 convolution. */
  encoderChannels: number[];
  /** Per camera: embedding width of the encoder. */
  embeddingDim: number;
  /** Hidden widths of the head (LayerNorm, ReLU). */
  hidden: number[];
  /** Gradient steps. */
  steps: number;
  /** Images per step, half positives and half negatives. */
  batchSize: number;
  learningRate: number;
  /** Random shift augmentation, pixels each way (DrQ: 4); 0 = off. */
  shiftPad: number;
  /** Shares of the episodes held out for the threshold and for the final measurement. */
  validationFraction: number;
  testFraction: number;
  /** Negative frames drawn at random per training episode (the final frame of a failure always included). */
  negativesPerEpisode: number;
  /**
   * Observations just before an episode's end (before the ambiguous ones) always taken as
   * negatives: the puck close to the goal but not yet there is what a detector must not call success.
   */
  hardNegatives: number;
  /**
   * Observations just before a success left out of the negatives: at 84×84 the last steps of a
   * push differ from the success frame by less than a pixel, so they are not failures to learn.
   */
  ambiguousSteps: number;
  seed: number;
  device: DevicePreference;
  threads?: number;
}

export const defaultDetectorConfig: DetectorConfig = {
  encoderChannels: [16, 32, 32],
  embeddingDim: 64,
  hidden: [64],
  steps: 1500,
  batchSize: 64,
  learningRate: 1e-3,
  shiftPad: 4,
  validationFraction: 0.2,
  testFraction: 0.2,
  negativesPerEpisode: 8,
  hardNegatives: 8,
  ambiguousSteps: 2,
  seed: 0,
  device: 'auto',
};

export interface DetectorResult {
  onnx: Uint8Array;
  threshold: number;
  validation: DetectorMetrics;
  test: DetectorMetrics;
  split: { train: number; validation: number; test: number };
  trainFrames: { positives: number; negatives: number };
  finalLoss: number;
  exportMaxAbsError: number;
  backend: string;
  seconds: number;
}

function checkConfig(cfg: DetectorConfig): void {
  const posInt = (n: number): boolean => Number.isInteger(n) && n > 0;
  const bad = (what: string, fix: string): never => {
    throw new ResrtError(what, fix);
  };
  if (!cfg.encoderChannels.length || !cfg.encoderChannels.every(posInt))
    bad(
      `encoder channels [${cfg.encoderChannels.join(', ')}] must be positive integers`,
      'e.g. --encoder 16,32,32',
    );
  if (!posInt(cfg.steps)) bad(`steps = ${cfg.steps}`, 'e.g. --steps 1500');
  if (!posInt(cfg.batchSize) || cfg.batchSize < 2) bad(`batch size ${cfg.batchSize}`, 'e.g. --batch 64');
  if (!(
    cfg.validationFraction > 0 &&
    cfg.testFraction > 0 &&
    cfg.validationFraction + cfg.testFraction < 0.9
  ))
    bad(
      `validation ${cfg.validationFraction} and test ${cfg.testFraction} shares`,
      'give each a share in (0, 1) that leaves most episodes for training, e.g. --val 0.2 --test 0.2',
    );
}

/** Successes and failures shuffled apart and dealt into the three splits in proportion. */
function splitEpisodes(
  episodes: readonly DetectorEpisode[],
  cfg: DetectorConfig,
  rng: Rng,
): { train: DetectorEpisode[]; validation: DetectorEpisode[]; test: DetectorEpisode[] } {
  const out = {
    train: [] as DetectorEpisode[],
    validation: [] as DetectorEpisode[],
    test: [] as DetectorEpisode[],
  };
  for (const cls of [true, false]) {
    const group = episodes.filter((e) => e.success === cls);
    const kind = cls ? 'successful' : 'failed';
    if (group.length < 3) {
      throw new ResrtError(
        `the data hold ${group.length} ${kind} episodes; a detector needs at least 3 of each kind (train, validation and test each get some)`,
        cls
          ? 'add episodes that succeed, e.g. `resrt collect --task TASK --episodes 150 --out ok.jsonl`, and pass both files to --data'
          : 'add episodes that fail, e.g. a noisier expert: `resrt collect --task TASK --episodes 150 --bias 0.08 --jitter 0.06 --out noisy.jsonl`, and pass both files to --data',
      );
    }
    for (let i = group.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [group[i], group[j]] = [group[j], group[i]];
    }
    const nVal = Math.max(1, Math.round(group.length * cfg.validationFraction));
    const nTest = Math.max(1, Math.round(group.length * cfg.testFraction));
    out.validation.push(...group.slice(0, nVal));
    out.test.push(...group.slice(nVal, nVal + nTest));
    out.train.push(...group.slice(nVal + nTest));
  }
  return out;
}

/** The training frames: each train episode's chosen observations copied into one store per camera. */
function trainingFrames(
  episodes: readonly DetectorEpisode[],
  cameras: readonly DetectorCamera[],
  cfg: DetectorConfig,
  rng: Rng,
): { stores: FrameStore[]; positives: number[]; negatives: number[] } {
  const chosen: { stores: FrameStore[]; t: number; label: boolean }[] = [];
  for (const ep of episodes) {
    const stores = checkStores(ep, cameras);
    const last = stores[0].count - 1;
    if (ep.success) chosen.push({ stores, t: last, label: true });
    else chosen.push({ stores, t: last, label: false });
    // Candidates: every observation before the end, less the ambiguous ones before a success.
    const end = ep.success ? last - cfg.ambiguousSteps : last;
    const candidates = Array.from({ length: Math.max(0, end) }, (_, t) => t);
    for (const t of candidates.splice(Math.max(0, candidates.length - cfg.hardNegatives)))
      chosen.push({ stores, t, label: false });
    for (let k = 0; k < cfg.negativesPerEpisode && candidates.length; k++) {
      const i = rng.int(candidates.length);
      chosen.push({ stores, t: candidates[i], label: false });
      candidates.splice(i, 1);
    }
  }
  const stores = cameras.map((c): FrameStore => ({
    height: c.height,
    width: c.width,
    data: new Uint8Array(chosen.length * c.height * c.width * 3),
    count: chosen.length,
  }));
  const positives: number[] = [];
  const negatives: number[] = [];
  chosen.forEach((row, i) => {
    stores.forEach((s, k) => {
      const size = s.height * s.width * 3;
      s.data.set(row.stores[k].data.subarray(row.t * size, (row.t + 1) * size), i * size);
    });
    (row.label ? positives : negatives).push(i);
  });
  return { stores, positives, negatives };
}

function checkStores(ep: DetectorEpisode, cameras: readonly DetectorCamera[]): FrameStore[] {
  const stores = ep.load();
  cameras.forEach((c, k) => {
    const s = stores[k];
    if (!s || s.width !== c.width || s.height !== c.height || s.count < 2 || s.count !== stores[0].count) {
      throw new ResrtError(
        `${ep.name} has no ${c.width}x${c.height} frames of camera "${c.name}" for every observation`,
        'record every camera at one size for every episode (`resrt collect` does), or pass --cameras with the cameras all episodes have',
      );
    }
  });
  return stores;
}

async function scoreEpisodes(
  net: DetectorNetwork,
  params: Float32Array,
  episodes: readonly DetectorEpisode[],
  cameras: readonly DetectorCamera[],
  rows: number,
  images: Float32Array[],
): Promise<EpisodeScores[]> {
  const out: EpisodeScores[] = [];
  for (const ep of episodes) {
    const stores = checkStores(ep, cameras);
    const n = stores[0].count;
    let max = -Infinity;
    let final = 0;
    // Observation 0 (the reset) is never judged: the detector runs after each step.
    for (let s = 1; s < n; s += rows) {
      const count = Math.min(rows, n - s);
      const idx = Array.from({ length: rows }, (_, k) => s + Math.min(k, count - 1));
      stores.forEach((store, k) => framesToBatch(store, idx, images[k]));
      const z = await net.logits(params, images, rows);
      for (let k = 0; k < count; k++) {
        const p = sigmoid(z[k]);
        max = Math.max(max, p);
        if (s + k === n - 1) final = p;
      }
    }
    out.push({ success: ep.success, final, max });
  }
  return out;
}

export async function trainSuccessDetector(
  data: DetectorData,
  overrides: Partial<DetectorConfig> = {},
  log: (line: string) => void = () => {},
): Promise<DetectorResult> {
  const cfg: DetectorConfig = { ...defaultDetectorConfig, ...overrides };
  checkConfig(cfg);
  const rng = new Rng(cfg.seed);
  const split = splitEpisodes(data.episodes, cfg, rng);
  const { cameras } = data;
  const train = trainingFrames(split.train, cameras, cfg, rng);
  log(
    `reward: ${split.train.length} train / ${split.validation.length} validation / ${split.test.length} test episodes; ` +
      `${train.positives.length} success and ${train.negatives.length} other frames of ${cameras.map((c) => `"${c.name}" ${c.width}x${c.height}`).join(', ')} to learn from`,
  );
  const engine = await initEngine({ device: cfg.device, threads: cfg.threads });
  log(`reward: ${engine.description}`);
  const started = performance.now();
  const net = new DetectorNetwork(engine, {
    cameras: cameras.map((c) => ({
      name: c.name,
      ...(c.mjcfCamera !== undefined ? { mjcfCamera: c.mjcfCamera } : {}),
      encoder: {
        height: c.height,
        width: c.width,
        channels: cfg.encoderChannels,
        features: cfg.embeddingDim,
      },
    })),
    hidden: cfg.hidden,
  });
  const params = new DoubleBuffer(net.layout.size, net.init(rng));
  const m = new DoubleBuffer(net.layout.size);
  const v = new DoubleBuffer(net.layout.size);
  const clock = new AdamClock({
    lr: cfg.learningRate,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    clipNorm: Infinity,
  });
  const rows = cfg.batchSize;
  const images = cameras.map((c) => new Float32Array(rows * 3 * c.height * c.width));
  const labels = new Float32Array(rows);
  const indices = new Int32Array(rows);
  const shifts = new Int32Array(2 * rows);
  let finalLoss = NaN;
  try {
    let sum = 0;
    for (let step = 1; step <= cfg.steps; step++) {
      // Balanced: successes are one frame per successful episode, the rest are many.
      for (let k = 0; k < rows; k++) {
        const positive = k < rows / 2;
        const pool = positive ? train.positives : train.negatives;
        indices[k] = pool[rng.int(pool.length)];
        labels[k] = positive ? 1 : 0;
      }
      train.stores.forEach((store, c) => {
        framesToBatch(
          store,
          indices,
          images[c],
          cfg.shiftPad > 0 ? randomShifts(rng, rows, cfg.shiftPad, shifts) : undefined,
        );
      });
      const loss = await net.step(
        rows,
        { params: params.front, m: m.front, v: v.front },
        { params: params.back, m: m.back, v: v.back },
        clock.nextScalars(),
        images,
        labels,
      );
      params.swap();
      m.swap();
      v.swap();
      clock.commit();
      if (!Number.isFinite(loss))
        throw new ResrtError(`the detector diverged at step ${step} (loss ${loss})`, 'lower --lr');
      sum += loss;
      if (step % 250 === 0 || step === cfg.steps) {
        finalLoss = sum / (step % 250 || 250);
        log(
          `reward: step ${step}/${cfg.steps}, loss ${finalLoss.toFixed(4)} (${((performance.now() - started) / 1000).toFixed(0)} s)`,
        );
        sum = 0;
      }
    }
    const valScores = await scoreEpisodes(net, params.front, split.validation, cameras, rows, images);
    const threshold = chooseThreshold(valScores);
    const validation = detectorMetrics(valScores, threshold);
    const test = detectorMetrics(
      await scoreEpisodes(net, params.front, split.test, cameras, rows, images),
      threshold,
    );
    const metadata: Record<string, string> = {
      [DetectorMeta.threshold]: String(threshold),
      [DetectorMeta.metrics]: JSON.stringify({ validation, test }),
      'resrt.task': data.task,
      'resrt.trained_by':
        `resrt reward train (conv encoder ${cfg.encoderChannels.join('-')} -> ${cfg.embeddingDim} per camera, head ${cfg.hidden.join('x')}, ` +
        `${cfg.steps} steps of ${cfg.batchSize}, random shift ${cfg.shiftPad}; ${split.train.length} train episodes)`,
    };
    const onnx = net.exportOnnx(params.front, metadata);
    const exportMaxAbsError = await checkDetectorExport(
      onnx,
      net,
      params.front,
      train.stores,
      cameras,
      rows,
      images,
    );
    return {
      onnx,
      threshold,
      validation,
      test,
      split: { train: split.train.length, validation: split.validation.length, test: split.test.length },
      trainFrames: { positives: train.positives.length, negatives: train.negatives.length },
      finalLoss,
      exportMaxAbsError,
      backend: engine.description,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await net.release();
  }
}

export const DETECTOR_EXPORT_TOLERANCE = 1e-4;

/**
 * Runs the exported file on training frames, as a batch through onnxruntime directly and one
 * frame through `SuccessDetector` (the runtime's preprocessing), against the engine's forward pass.
 */
async function checkDetectorExport(
  onnx: Uint8Array,
  net: DetectorNetwork,
  params: Float32Array,
  stores: readonly FrameStore[],
  cameras: readonly DetectorCamera[],
  rows: number,
  images: Float32Array[],
): Promise<number> {
  const probe = Math.min(rows, stores[0].count);
  const idx = Array.from({ length: rows }, (_, k) => Math.min(k, probe - 1));
  stores.forEach((s, k) => framesToBatch(s, idx, images[k]));
  const expected = Array.from(await net.logits(params, images, rows), sigmoid).slice(0, probe);
  const dir = mkdtempSync(join(tmpdir(), 'resrt-detector-'));
  try {
    const path = join(dir, 'detector.onnx');
    writeFileSync(path, onnx);
    const session = await createSession(path, 1);
    let batch: Float32Array;
    try {
      const feeds: Record<string, ort.Tensor> = {};
      cameras.forEach((c, k) => {
        const size = 3 * c.height * c.width;
        feeds[detectorImageInput(c.name)] = new ort.Tensor('float32', images[k].slice(0, probe * size), [
          probe,
          3,
          c.height,
          c.width,
        ]);
      });
      batch = (await session.run(feeds, [PROBABILITY_OUTPUT]))[PROBABILITY_OUTPUT].data as Float32Array;
    } finally {
      await session.release();
    }
    let max = 0;
    for (let i = 0; i < probe; i++) max = Math.max(max, Math.abs(batch[i] - expected[i]));
    const detector = await SuccessDetector.load(path);
    try {
      const frames = Object.fromEntries(
        cameras.map((c, k): [string, CameraFrame] => {
          const size = c.height * c.width * 3;
          return [
            c.name,
            {
              width: c.width,
              height: c.height,
              channels: 3,
              data: stores[k].data.subarray(0, size),
              capturedAtMs: 0,
              seq: 0,
            },
          ];
        }),
      );
      max = Math.max(max, Math.abs((await detector.judge(frames)).probability - expected[0]));
    } finally {
      await detector.close();
    }
    if (!(max <= DETECTOR_EXPORT_TOLERANCE)) {
      throw new ResrtError(
        `the exported detector differs from the trained network by ${max} (limit ${DETECTOR_EXPORT_TOLERANCE})`,
        'this is a bug in the detector exporter; please report it',
      );
    }
    return max;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
