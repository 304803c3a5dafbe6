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
  convEncoderMacs,
  CONV_ENCODER_POOLINGS,
  initEngine,
  type ConvEncoderPooling,
  type DevicePreference,
} from '../nn/index.js';
import { exportMlpToOnnx, MetaKey } from '../runtime/onnx-export.js';
import { checkExport, exportVisuomotorBc } from './bc-export.js';
import { type BcCameraChoice, chooseBcCameras, loadFrameStores } from './bc-frames.js';
import { type BcDataset, type BcFit, type BcFitProgress, fitBcNetwork } from './bc-fit.js';
import { BcNetwork } from './bc-network.js';
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

export type BcProgress = BcFitProgress;

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

function buildDataset(
  demos: DemoSet,
  episodes: DemoSet['episodes'],
  h: number,
  cameras: readonly CameraSpec[],
): BcDataset {
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
  let fit: BcFit;
  try {
    fit = await fitBcNetwork(
      net,
      net.init(rng),
      train,
      val,
      { ...cfg, cameras }, // its epochs, batchSize, learningRate and shiftPad
      rng,
      onProgress,
    );
  } catch (err) {
    await net.release();
    throw err;
  }
  const { trainLoss, validationLoss } = fit;

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
  const probeRows = Math.min(cameras.length ? 32 : 256, cameras.length ? cfg.batchSize : 4096, train.n);
  const layers = net.denseSpecs(fit.params);
  let onnx: Uint8Array;
  let expected: { action: Float32Array; embedding: Float32Array };
  try {
    onnx = cameras.length
      ? exportVisuomotorBc(net, fit.params, cameras, { length: h, actionDim }, metadata)
      : exportMlpToOnnx({
          inputs: [{ name: 'obs', dim: obsDim }],
          inputNormalization: { mean, std },
          layers,
          output: { name: 'action', actionDim, chunkLength: h },
          metadata,
        });
    const out = await fit.predictFirst(train, probeRows);
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
