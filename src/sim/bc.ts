/**
 * Behavior cloning: observations (the state, and camera frames when the demonstrations have them)
 * to actions (or ACT-style chunks of H future actions), trained on `resrt collect` demonstrations
 * with the training engine (src/nn: one onnxruntime call per minibatch step), exported to ONNX
 * with the observation normalization baked in, and verified by running the exported file in
 * onnxruntime against the trained network.
 *
 * From pixels (ResFiT/DrQ): a small conv encoder per camera, random-shift augmentation, and an MLP
 * head over [camera embeddings | normalized state]; frames are decoded from the sidecar once and
 * held as uint8, converted to floats per batch. The export is a LeRobot-style visuomotor file
 * (bc-export.ts). A state-only file (or `cameras: 'none'`) trains and exports as it always did.
 */
import { writeFileSync } from 'node:fs';
import type { CameraSpec } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { writeFileAtomic } from '../util/files.js';
import { Rng } from '../util/rng.js';
import {
  AdamClock,
  convEncoderMacs,
  CONV_ENCODER_POOLINGS,
  DoubleBuffer,
  framesToBatch,
  initEngine,
  randomShifts,
  type ConvEncoderPooling,
  type DevicePreference,
  type FrameStore,
} from '../nn/index.js';
import { exportMlpToOnnx, MetaKey } from '../runtime/onnx-export.js';
import { checkExport, exportVisuomotorBc } from './bc-export.js';
import { type BcCameraChoice, chooseBcCameras, loadFrameStores } from './bc-frames.js';
import { BcNetwork, type BcInputs } from './bc-network.js';
import type { DemoSet } from './demos.js';

export interface BcConfig {
  /** Hidden layer widths of the MLP head. */
  hidden: number[];
  /** LayerNorm after every hidden affine map. */
  layerNorm: boolean;
  /** Actions predicted per observation (1 = plain MLP; H > 1 = action chunk, as ACT). */
  chunkLength: number;
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Train only on episodes that ended in success (what a person would keep). */
  successfulOnly: boolean;
  /** Share of episodes held out to report validation loss. */
  validationFraction: number;
  /** Floor on per-dimension observation std, so constant features do not blow up. */
  minObsStd: number;
  seed: number;
  /** Where training computes: 'auto' (CUDA when installed and working, else CPU), 'cpu', 'cuda'. */
  device: DevicePreference;
  /** onnxruntime intra-op threads on the CPU; undefined: the engine's default (RESRT_NN_THREADS, else every core). */
  threads?: number;
  /** Cameras the policy reads: 'auto' = every camera the demonstrations recorded, 'none' = the state only. */
  cameras: BcCameraChoice;
  /** Per camera: output channels of each 3×3 stride-2 convolution (ResFiT/DrQ-style encoder). */
  encoderChannels: number[];
  /** Per camera: width of the embedding the encoder's trunk (linear, LayerNorm, tanh) outputs. */
  embeddingDim: number;
  /** Per camera: how the last feature map reaches the trunk (ConvEncoderSpec.pooling says why). */
  encoderPooling: ConvEncoderPooling;
  /** Random shift augmentation: up to this many pixels each way, edges replicated (DrQ: 4); 0 = off. */
  shiftPad: number;
}

export const defaultBcConfig: BcConfig = {
  hidden: [256, 256],
  layerNorm: true,
  chunkLength: 1,
  epochs: 30,
  batchSize: 256,
  learningRate: 1e-3,
  successfulOnly: true,
  validationFraction: 0.1,
  minObsStd: 1e-3,
  seed: 0,
  device: 'auto',
  cameras: 'auto',
  encoderChannels: [16, 32, 32, 32],
  embeddingDim: 64,
  encoderPooling: 'flatten',
  shiftPad: 4,
};

export interface BcProgress {
  epoch: number;
  epochs: number;
  trainLoss: number;
  validationLoss: number;
  /** Seconds of training so far (after the data was loaded). */
  seconds: number;
}

export interface BcResult {
  /** The verified ONNX file's bytes. */
  onnx: Uint8Array;
  /** The cameras the policy reads (empty: state only). */
  cameras: string[];
  /** Width of the `embedding` output (0 without cameras). */
  embeddingDim: number;
  /** The training engine that ran, in words. */
  backend: string;
  samples: number;
  episodesUsed: number;
  trainLoss: number;
  validationLoss: number;
  /** Largest |exported ONNX − trained network| over the verification batch (actions and embedding). */
  exportMaxAbsError: number;
  /** Limit the export was held to. */
  exportTolerance: number;
  /** Seconds reading the demonstrations' frames into memory. */
  loadSeconds: number;
  /** Seconds of training and export (after loading). */
  seconds: number;
}

interface Dataset {
  x: Float32Array;
  y: Float32Array;
  n: number;
  /** One store per camera, frame i belonging to row i. */
  frames: FrameStore[];
}

function buildDataset(
  demos: DemoSet,
  episodes: DemoSet['episodes'],
  h: number,
  cameras: readonly CameraSpec[],
): Dataset {
  const { obsDim, actionDim } = demos.header;
  const n = episodes.reduce((s, e) => s + e.actions.length, 0);
  const x = new Float32Array(n * obsDim);
  const y = new Float32Array(n * actionDim * h);
  let row = 0;
  for (const ep of episodes) {
    const T = ep.actions.length;
    for (let t = 0; t < T; t++, row++) {
      x.set(ep.obs[t], row * obsDim);
      // Chunks past the episode end repeat the last action (the policy holds still when done).
      for (let k = 0; k < h; k++) y.set(ep.actions[Math.min(t + k, T - 1)], (row * h + k) * actionDim);
    }
  }
  return { x, y, n, frames: loadFrameStores(demos, episodes, cameras) };
}

/** Reusable buffers for `rows` dataset rows as graph feeds. */
class Batch implements BcInputs {
  readonly state: Float32Array;
  readonly target: Float32Array;
  readonly images: Float32Array[];
  private readonly shifts: Int32Array;

  constructor(
    readonly rows: number,
    readonly obsDim: number,
    readonly outDim: number,
    cameras: readonly CameraSpec[],
  ) {
    this.state = new Float32Array(rows * obsDim);
    this.target = new Float32Array(rows * outDim);
    this.images = cameras.map((c) => new Float32Array(rows * 3 * c.height * c.width));
    this.shifts = new Int32Array(2 * rows);
  }

  /**
   * Rows `indices` of `data` (padded to `rows` by repeating the last one); camera images shifted
   * at random by up to `shiftPad` pixels when given an rng.
   */
  fill(data: Dataset, indices: ArrayLike<number>, count: number, shift?: { rng: Rng; pad: number }): void {
    const { obsDim, outDim } = this;
    const at = (k: number): number => indices[Math.min(k, count - 1)];
    for (let k = 0; k < this.rows; k++) {
      const r = at(k);
      this.state.set(data.x.subarray(r * obsDim, (r + 1) * obsDim), k * obsDim);
      this.target.set(data.y.subarray(r * outDim, (r + 1) * outDim), k * outDim);
    }
    if (this.images.length === 0) return;
    const rows = Array.from({ length: this.rows }, (_, k) => at(k));
    data.frames.forEach((store, c) => {
      const shifts =
        shift && shift.pad > 0 ? randomShifts(shift.rng, this.rows, shift.pad, this.shifts) : undefined;
      framesToBatch(store, rows, this.images[c], shifts);
    });
  }
}

function checkConfig(cfg: BcConfig): void {
  const positiveInt = (n: number): boolean => Number.isInteger(n) && n > 0;
  if (!positiveInt(cfg.chunkLength))
    throw new ResrtError(
      `chunk length must be a positive integer, got ${cfg.chunkLength}`,
      'e.g. --chunk 1 or --chunk 8',
    );
  if (cfg.encoderChannels.length === 0 || !cfg.encoderChannels.every(positiveInt))
    throw new ResrtError(
      `encoder channels must be positive integers, got [${cfg.encoderChannels.join(', ')}]`,
      'e.g. --encoder 16,32,32,32',
    );
  if (!CONV_ENCODER_POOLINGS.includes(cfg.encoderPooling))
    throw new ResrtError(
      `encoder pooling must be one of ${CONV_ENCODER_POOLINGS.join(', ')}, got ${String(cfg.encoderPooling)}`,
      'e.g. --pooling spatial-softmax',
    );
  if (!positiveInt(cfg.embeddingDim))
    throw new ResrtError(
      `embedding width must be a positive integer, got ${cfg.embeddingDim}`,
      'e.g. --embedding 64',
    );
  if (!(Number.isInteger(cfg.shiftPad) && cfg.shiftPad >= 0))
    throw new ResrtError(
      `random shift must be a whole number of pixels ≥ 0, got ${cfg.shiftPad}`,
      'e.g. --shift 4, or --shift 0 for none',
    );
}

export async function trainBc(
  demos: DemoSet,
  overrides: Partial<BcConfig> = {},
  onProgress?: (p: BcProgress) => void,
  log: (line: string) => void = () => {},
): Promise<BcResult> {
  const cfg: BcConfig = { ...defaultBcConfig, ...overrides };
  checkConfig(cfg);
  const { obsDim, actionDim } = demos.header;
  const h = cfg.chunkLength;
  const cameras = chooseBcCameras(demos, cfg.cameras);
  const usable = demos.episodes.filter((e) => !cfg.successfulOnly || e.success);
  if (usable.length < 2) {
    throw new ResrtError(
      `only ${usable.length} ${cfg.successfulOnly ? 'successful ' : ''}episodes in the demonstrations`,
      'collect more demonstrations (resrt collect --episodes N), or train on all episodes',
    );
  }
  const rng = new Rng(cfg.seed);
  const shuffled = usable.slice();
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
  }
  const nVal = Math.min(shuffled.length - 1, Math.round(shuffled.length * cfg.validationFraction));
  const loadStart = performance.now();
  const train = buildDataset(demos, shuffled.slice(nVal), h, cameras);
  const val = nVal > 0 ? buildDataset(demos, shuffled.slice(0, nVal), h, cameras) : null;
  const loadSeconds = (performance.now() - loadStart) / 1000;
  if (cameras.length)
    log(
      `bc: ${train.n + (val?.n ?? 0)} frames of ${cameras.map((c) => `"${c.name}" ${c.width}x${c.height}`).join(', ')} ` +
        `held as uint8 (${(train.frames.concat(val?.frames ?? []).reduce((s, f) => s + f.data.length, 0) / 2 ** 20).toFixed(0)} MiB), read in ${loadSeconds.toFixed(1)} s`,
    );

  // Observation statistics over the training set.
  const mean = new Float32Array(obsDim);
  const std = new Float32Array(obsDim);
  for (let i = 0; i < train.n; i++)
    for (let d = 0; d < obsDim; d++) mean[d] += train.x[i * obsDim + d] / train.n;
  for (let i = 0; i < train.n; i++)
    for (let d = 0; d < obsDim; d++) std[d] += (train.x[i * obsDim + d] - mean[d]) ** 2 / train.n;
  for (let d = 0; d < obsDim; d++) std[d] = Math.max(cfg.minObsStd, Math.sqrt(std[d]));

  const engine = await initEngine({ device: cfg.device, threads: cfg.threads });
  log(`bc: ${engine.description}`);
  const started = performance.now();
  const outDim = actionDim * h;
  const encoder = { channels: cfg.encoderChannels, features: cfg.embeddingDim, pooling: cfg.encoderPooling };
  const net = new BcNetwork(
    engine,
    {
      stateDim: obsDim,
      cameras: cameras.map((c) => ({
        name: c.name,
        encoder: { ...encoder, height: c.height, width: c.width },
      })),
      hidden: cfg.hidden,
      layerNorm: cfg.layerNorm,
      outDim,
    },
    mean,
    std,
  );
  if (cameras.length) {
    const macs = net.spec.cameras.reduce((s, c) => s + convEncoderMacs(c.encoder), 0);
    log(
      `bc: encoder ${cfg.encoderChannels.join('-')} → ${cfg.embeddingDim} per camera, ${(macs / 1e6).toFixed(1)} M multiply-adds per sample forward`,
    );
  }
  const params = new DoubleBuffer(net.layout.size, net.init(rng));
  const m = new DoubleBuffer(net.layout.size);
  const v = new DoubleBuffer(net.layout.size);
  // tf.train.adam's defaults (ε = 1e-7, no clipping), which BC was tuned with.
  const clock = new AdamClock({
    lr: cfg.learningRate,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-7,
    clipNorm: Infinity,
  });

  // One forward graph, padded to its row count: images are evaluated a batch at a time.
  const predictRows = Math.min(cameras.length ? cfg.batchSize : 4096, train.n);
  const predictBatch = new Batch(predictRows, obsDim, outDim, cameras);
  const evalLoss = async (data: Dataset): Promise<number> => {
    let total = 0;
    const all = Uint32Array.from({ length: data.n }, (_, i) => i);
    for (let s = 0; s < data.n; s += predictRows) {
      const count = Math.min(predictRows, data.n - s);
      predictBatch.fill(data, all.subarray(s, s + count), count);
      const pred = (await net.predict(params.front, predictBatch, predictRows)).action;
      const target = data.y.subarray(s * outDim, (s + count) * outDim);
      let sq = 0;
      for (let i = 0; i < count * outDim; i++) sq += (pred[i] - target[i]) ** 2;
      total += sq / outDim;
    }
    return total / data.n;
  };

  const order = Uint32Array.from({ length: train.n }, (_, i) => i);
  const batchRows = Math.min(cfg.batchSize, train.n);
  const batch = new Batch(batchRows, obsDim, outDim, cameras);
  const shift = { rng, pad: cfg.shiftPad };
  let trainLoss = NaN;
  let validationLoss = NaN;
  try {
    for (let epoch = 1; epoch <= cfg.epochs; epoch++) {
      for (let i = order.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [order[i], order[j]] = [order[j], order[i]];
      }
      let sum = 0;
      let batches = 0;
      // Full batches only (a smaller last one would need a graph of its own).
      for (let s = 0; s + batchRows <= train.n; s += batchRows) {
        batch.fill(train, order.subarray(s, s + batchRows), batchRows, shift);
        const loss = await net.step(
          batchRows,
          { params: params.front, m: m.front, v: v.front },
          { params: params.back, m: m.back, v: v.back },
          clock.nextScalars(),
          batch,
          batch.target,
        );
        params.swap();
        m.swap();
        v.swap();
        clock.commit();
        sum += loss;
        batches++;
      }
      trainLoss = sum / Math.max(1, batches);
      if (!Number.isFinite(trainLoss)) {
        throw new ResrtError(
          `BC diverged at epoch ${epoch} (loss ${trainLoss})`,
          'lower --lr, or check the demonstrations for NaN',
        );
      }
      validationLoss = val ? await evalLoss(val) : NaN;
      onProgress?.({
        epoch,
        epochs: cfg.epochs,
        trainLoss,
        validationLoss,
        seconds: (performance.now() - started) / 1000,
      });
    }
  } catch (err) {
    await net.release();
    throw err;
  }

  const metadata: Record<string, string> = {
    [MetaKey.kind]: 'base',
    [MetaKey.obsDim]: String(obsDim),
    [MetaKey.actionDim]: String(actionDim),
    [MetaKey.obsNames]: JSON.stringify(demos.header.obsNames),
    [MetaKey.actionNames]: JSON.stringify(demos.header.actionNames),
    [MetaKey.chunkLength]: String(h),
    [MetaKey.controlHz]: String(Math.round(1 / demos.header.controlDt)),
    [MetaKey.actionLow]: JSON.stringify(new Array(actionDim).fill(-1)),
    [MetaKey.actionHigh]: JSON.stringify(new Array(actionDim).fill(1)),
    'resrt.task': demos.header.task,
    'resrt.trained_by':
      `resrt bc (${cfg.hidden.join('x')}${cfg.layerNorm ? ', LayerNorm' : ''}, ${cfg.epochs} epochs` +
      (cameras.length
        ? `; conv encoder ${cfg.encoderChannels.join('-')} -> ${cfg.embeddingDim} per camera (${cameras.map((c) => c.name).join(', ')}), random shift ${cfg.shiftPad})`
        : ')'),
  };
  // The export runs the file in onnxruntime against the trained network. Images: a batch other
  // than the one the inference graph was built at (1), so a batch-bound op would show.
  const probeRows = Math.min(cameras.length ? 32 : 256, predictRows);
  const layers = net.denseSpecs(params.front);
  let onnx: Uint8Array;
  let expected: { action: Float32Array; embedding: Float32Array };
  try {
    onnx = cameras.length
      ? exportVisuomotorBc(net, params.front, cameras, { length: h, actionDim }, metadata)
      : exportMlpToOnnx({
          inputs: [{ name: 'obs', dim: obsDim }],
          inputNormalization: { mean, std },
          layers,
          output: { name: 'action', actionDim, chunkLength: h },
          metadata,
        });
    predictBatch.fill(
      train,
      Uint32Array.from({ length: probeRows }, (_, i) => i),
      probeRows,
    );
    const out = await net.predict(params.front, predictBatch, predictRows);
    expected = {
      action: out.action.slice(0, probeRows * outDim),
      embedding: out.embedding.slice(0, probeRows * net.embeddingDim),
    };
  } finally {
    await net.release();
  }
  const check = await checkExport(
    onnx,
    { rows: probeRows, state: train.x.slice(0, probeRows * obsDim), cameras, stores: train.frames },
    expected,
    { obsDim, actionDim },
  );
  const tolerance = cameras.length ? 1e-4 : 1e-5;
  const maxErr = Math.max(check.action, check.embedding);
  if (!(maxErr <= tolerance)) {
    throw new ResrtError(
      `the exported ONNX differs from the trained network by ${maxErr} (actions ${check.action}, embedding ${check.embedding}; limit ${tolerance})`,
      'this is a bug in the exporter; please report it',
    );
  }
  return {
    onnx,
    cameras: cameras.map((c) => c.name),
    embeddingDim: net.embeddingDim,
    backend: engine.description,
    samples: train.n,
    episodesUsed: usable.length,
    trainLoss,
    validationLoss,
    exportMaxAbsError: maxErr,
    exportTolerance: tolerance,
    loadSeconds,
    seconds: (performance.now() - started) / 1000,
  };
}

/** Writes the verified ONNX of a trained policy (atomically: a crash leaves the old file or the new). */
export function saveBcPolicy(result: BcResult, path: string): void {
  writeFileAtomic(path, result.onnx);
  writeFileSync(
    `${path}.train.json`,
    JSON.stringify(
      {
        backend: result.backend,
        samples: result.samples,
        episodes: result.episodesUsed,
        train_loss: result.trainLoss,
        validation_loss: result.validationLoss,
        cameras: result.cameras,
        embedding_dim: result.embeddingDim,
        export_max_abs_error: result.exportMaxAbsError,
        export_tolerance: result.exportTolerance,
        load_seconds: result.loadSeconds,
        seconds: result.seconds,
      },
      null,
      2,
    ),
  );
}
