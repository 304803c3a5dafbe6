/**
 * A state estimator from pixels, for a residual's `file` encoder: a conv encoder per camera and an
 * MLP head trained to predict part of the simulator's recorded environment state (LeRobot's
 * `observation.environment_state`, e.g. push-cam's goal, which only the camera shows) from the
 * frames alone, exported as an encoder ONNX (frames in, `features` out: the predicted state, each
 * name z-scored with the training set's mean and std, which the metadata records).
 *
 * Why: a BC base's embedding holds what imitation needed, and the keypoint base locates push-cam's
 * goal to ~1.4 cm (median) against a 2 cm success radius (BENCHMARKS "Learning on push-cam"); a
 * residual reading it cannot learn the last centimetre. An encoder trained for the state itself
 * (simulation gives the labels for free) hands the residual the goal, as privileged state would.
 */
import type { CameraSpec } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { convEncoderMacs, initEngine, type ConvEncoderPooling, type DevicePreference } from '../nn/index.js';
import { FEATURES_OUTPUT, FrameEncoder } from '../runtime/frame-encoder.js';
import { MetaKey, RESRT_METADATA_FORMAT } from '../runtime/onnx-export.js';
import { encodeWithImages, imageInputName, probeFrames } from './bc-export.js';
import { type BcDataset, type BcFitProgress, fitBcNetwork } from './bc-fit.js';
import { type BcCameraChoice, chooseBcCameras, loadFrameStores } from './bc-frames.js';
import { BcNetwork } from './bc-network.js';
import type { DemoSet } from './demos.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface StateEncoderConfig {
  /** Names of the recorded environment state to predict (the file's environmentStateNames). */
  targets: string[];
  /** Cameras the encoder reads: 'auto' = every recorded camera, or names. */
  cameras: Exclude<BcCameraChoice, 'none'>;
  /** Per camera: output channels of each 3×3 stride-2 convolution. */
  encoderChannels: number[];
  /** Per camera: width of the trunk's embedding. */
  embeddingDim: number;
  /** Keypoints (spatial softmax) give positions to a fraction of a cell; flatten keeps every cell. */
  encoderPooling: ConvEncoderPooling;
  /** Hidden widths of the head from the embeddings to the state. */
  hidden: number[];
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Random shift of the frames, pixels each way (DrQ: 4); 0 = off. */
  shiftPad: number;
  /** Share of episodes held out to report the error on. */
  validationFraction: number;
  seed: number;
  device: DevicePreference;
  threads?: number;
}

export const defaultStateEncoderConfig: StateEncoderConfig = {
  targets: [],
  cameras: 'auto',
  encoderChannels: [16, 32, 32],
  embeddingDim: 64,
  encoderPooling: 'spatial-softmax',
  hidden: [256, 256],
  epochs: 30,
  batchSize: 256,
  learningRate: 1e-3,
  shiftPad: 4,
  validationFraction: 0.1,
  seed: 0,
  device: 'auto',
};

/** Held-out error of one predicted name, in the state's own units. */
export interface TargetError {
  name: string;
  rmse: number;
  /** Median and 90th percentile of |prediction − truth|. */
  median: number;
  p90: number;
  /** The name's spread over the training rows (a prediction of the mean would score about this). */
  std: number;
}

export interface StateEncoderResult {
  onnx: Uint8Array;
  cameras: string[];
  targets: string[];
  /** Rows (observations) trained on and held out. */
  samples: number;
  validationSamples: number;
  trainLoss: number;
  validationLoss: number;
  /** Per name on the held-out episodes. */
  errors: TargetError[];
  /** Median and 90th percentile of the Euclidean error over all names together, held out. */
  jointMedian: number;
  jointP90: number;
  /** Largest |exported file (as the residual's file encoder loads it) − trained network|. */
  exportMaxAbsError: number;
  backend: string;
  seconds: number;
}

/** Metadata keys of a state-encoder file, beside the convention's. */
export const StateEncoderMeta = {
  targets: 'resrt.state_encoder.targets',
  mean: 'resrt.state_encoder.mean',
  std: 'resrt.state_encoder.std',
} as const;

export async function trainStateEncoder(
  demos: DemoSet,
  overrides: Partial<StateEncoderConfig>,
  onProgress?: (p: BcFitProgress) => void,
  log: (line: string) => void = () => {},
): Promise<StateEncoderResult> {
  const cfg: StateEncoderConfig = { ...defaultStateEncoderConfig, ...overrides };
  const columns = targetColumns(demos, cfg.targets);
  const cameras = chooseBcCameras(demos, cfg.cameras);
  if (cameras.length === 0) {
    throw new ResrtError(
      `a state encoder reads camera frames, and the demonstrations of ${demos.header.task} have none`,
      'collect them on a task with cameras, e.g. `resrt collect --task push-cam --episodes 400 --out demos.jsonl`',
    );
  }
  // Failed episodes are as good as successful ones here: the label is the state, not the action.
  const rng = new Rng(cfg.seed);
  const shuffled = demos.episodes.slice();
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
  }
  const nVal = Math.max(1, Math.round(shuffled.length * cfg.validationFraction));
  if (shuffled.length - nVal < 1) {
    throw new ResrtError(
      `only ${shuffled.length} episode${shuffled.length === 1 ? '' : 's'} in the demonstrations; a state encoder needs some to train on and some to measure on`,
      'collect more episodes (resrt collect --episodes 100 or more)',
    );
  }
  const raw = (eps: DemoSet['episodes']): BcDataset => buildRows(demos, eps, columns, cameras);
  const train = raw(shuffled.slice(nVal));
  const val = raw(shuffled.slice(0, nVal));
  const k = columns.length;
  const mean = new Float32Array(k);
  const std = new Float32Array(k);
  for (let i = 0; i < train.n; i++) for (let d = 0; d < k; d++) mean[d] += train.y[i * k + d] / train.n;
  for (let i = 0; i < train.n; i++)
    for (let d = 0; d < k; d++) std[d] += (train.y[i * k + d] - mean[d]) ** 2 / train.n;
  for (let d = 0; d < k; d++) std[d] = Math.max(1e-6, Math.sqrt(std[d]));
  const truth = { train: train.y, val: val.y };
  const zscored = (y: Float32Array): Float32Array => y.map((v, i) => (v - mean[i % k]) / std[i % k]);
  train.y = zscored(truth.train);
  val.y = zscored(truth.val);

  const engine = await initEngine({ device: cfg.device, threads: cfg.threads });
  log(`encoder: ${engine.description}`);
  const started = performance.now();
  const encoder = { channels: cfg.encoderChannels, features: cfg.embeddingDim, pooling: cfg.encoderPooling };
  const net = new BcNetwork(
    engine,
    {
      stateDim: 0,
      cameras: cameras.map((c) => ({
        name: c.name,
        encoder: { ...encoder, height: c.height, width: c.width },
      })),
      hidden: cfg.hidden,
      layerNorm: true,
      outDim: k,
    },
    new Float32Array(0),
    new Float32Array(0),
  );
  const macs = net.spec.cameras.reduce((s, c) => s + convEncoderMacs(c.encoder), 0);
  log(
    `encoder: ${cfg.encoderChannels.join('-')} (${cfg.encoderPooling}) → ${cfg.embeddingDim} per camera → ${cfg.hidden.join('x')} → ${columns.map((c) => c.name).join(', ')}; ${(macs / 1e6).toFixed(1)} M multiply-adds per frame set`,
  );
  try {
    const fit = await fitBcNetwork(
      net,
      net.init(rng),
      train,
      val,
      { ...cfg, cameras }, // its epochs, batchSize, learningRate and shiftPad
      rng,
      onProgress,
    );
    const predicted = await fit.predictAll(val);
    const errors = columns.map((c, d): TargetError => {
      const abs = Array.from({ length: val.n }, (_, i) =>
        Math.abs(predicted[i * k + d] * std[d] + mean[d] - truth.val[i * k + d]),
      );
      return {
        name: c.name,
        rmse: Math.sqrt(abs.reduce((s, e) => s + e * e, 0) / abs.length),
        ...spread(abs),
        std: std[d],
      };
    });
    const joint = spread(
      Array.from({ length: val.n }, (_, i) =>
        Math.hypot(...columns.map((_, d) => predicted[i * k + d] * std[d] + mean[d] - truth.val[i * k + d])),
      ),
    );
    const metadata: Record<string, string> = {
      [MetaKey.format]: RESRT_METADATA_FORMAT,
      [MetaKey.kind]: 'encoder',
      'resrt.task': demos.header.task,
      [StateEncoderMeta.targets]: JSON.stringify(columns.map((c) => c.name)),
      [StateEncoderMeta.mean]: JSON.stringify(Array.from(mean)),
      [StateEncoderMeta.std]: JSON.stringify(Array.from(std)),
      'resrt.trained_by': `resrt encoder train (${cfg.encoderChannels.join('-')} ${cfg.encoderPooling} -> ${cfg.embeddingDim} per camera, head ${cfg.hidden.join('x')}, ${cfg.epochs} epochs, random shift ${cfg.shiftPad})`,
    };
    const graph = net.inferenceGraph(
      fit.params,
      { state: '', image: imageInputName, action: FEATURES_OUTPUT, embedding: null },
      { length: 1, actionDim: k },
    );
    const onnx = encodeWithImages(graph, 'resrt_state_encoder', cameras, metadata);
    const probeRows = Math.min(16, val.n);
    const expected = await fit.predictFirst(val, probeRows);
    const exportMaxAbsError = await checkEncoderExport(
      onnx,
      cameras,
      { rows: probeRows, cameras, stores: val.frames },
      expected.action,
      k,
    );
    if (!(exportMaxAbsError <= 1e-4)) {
      throw new ResrtError(
        `the exported encoder differs from the trained network by ${exportMaxAbsError} (limit 1e-4)`,
        'this is a bug in the exporter; please report it',
      );
    }
    return {
      onnx,
      cameras: cameras.map((c) => c.name),
      targets: columns.map((c) => c.name),
      samples: train.n,
      validationSamples: val.n,
      trainLoss: fit.trainLoss,
      validationLoss: fit.validationLoss,
      errors,
      jointMedian: joint.median,
      jointP90: joint.p90,
      exportMaxAbsError,
      backend: engine.description,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await net.release();
  }
}

/** The columns of the recorded environment state named by `targets`, or an error naming the fix. */
function targetColumns(demos: DemoSet, targets: readonly string[]): { name: string; index: number }[] {
  const names = demos.header.environmentStateNames;
  if (!names) {
    throw new ResrtError(
      `the demonstrations of ${demos.header.task} record no environment state (the simulator's privileged state), so there is nothing to learn to predict`,
      `collect them again with this version of resrt on a simulated task that has privileged state, e.g. \`resrt collect --task push-cam --episodes 400 --out demos.jsonl\``,
    );
  }
  if (targets.length === 0) {
    // What the cameras must supply: the state the policy's observation leaves out.
    const unseen = names.filter((n) => !demos.header.obsNames.includes(n));
    throw new ResrtError(
      'no targets named',
      `name what to predict, comma-separated, from the recorded environment state: ${names.join(', ')} (e.g. --targets ${(unseen.length ? unseen : names).slice(0, 2).join(',')})`,
    );
  }
  return targets.map((name) => {
    const index = names.indexOf(name);
    if (index < 0) {
      throw new ResrtError(
        `"${name}" is not in the recorded environment state`,
        `choose from ${names.join(', ')}`,
      );
    }
    return { name, index };
  });
}

/** One row per action step: no state input, the named environment state as the target, the frames. */
function buildRows(
  demos: DemoSet,
  episodes: DemoSet['episodes'],
  columns: readonly { index: number }[],
  cameras: readonly CameraSpec[],
): BcDataset {
  const n = episodes.reduce((s, e) => s + e.actions.length, 0);
  const y = new Float32Array(n * columns.length);
  let row = 0;
  for (const ep of episodes) {
    for (let t = 0; t < ep.actions.length; t++, row++) {
      const state = ep.environmentState![t];
      columns.forEach((c, d) => (y[row * columns.length + d] = state[c.index]));
    }
  }
  return { x: new Float32Array(0), y, n, frames: loadFrameStores(demos, episodes, cameras) };
}

function spread(values: number[]): { median: number; p90: number } {
  const s = values.slice().sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { median: at(0.5), p90: at(0.9) };
}

/**
 * Loads the file exactly as a residual's `file` encoder does (FrameEncoder: metadata-driven
 * preprocessing of uint8 frames) and compares its features with the trained network's.
 */
async function checkEncoderExport(
  onnx: Uint8Array,
  cameras: readonly CameraSpec[],
  probe: Parameters<typeof probeFrames>[0],
  expected: Float32Array,
  k: number,
): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'resrt-encoder-'));
  try {
    const path = join(dir, 'encoder.onnx');
    writeFileSync(path, onnx);
    const sizes = Object.fromEntries(cameras.map((c) => [c.name, { width: c.width, height: c.height }]));
    const encoder = await FrameEncoder.load(path, sizes);
    try {
      let max = 0;
      const frames = probeFrames(probe);
      for (let i = 0; i < probe.rows; i++) {
        const got = await encoder.encode(frames[i]);
        for (let d = 0; d < k; d++) max = Math.max(max, Math.abs(got[d] - expected[i * k + d]));
      }
      return Number.isNaN(max) ? Infinity : max;
    } finally {
      await encoder.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
