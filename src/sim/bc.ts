/**
 * Behavior cloning: an MLP from observations to actions (or ACT-style chunks of H future actions),
 * trained on `resrt collect` demonstrations with TensorFlow.js, exported to ONNX with the
 * observation normalization baked in, and verified by running the file in onnxruntime.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DenseLayerSpec, MlpPolicySpec } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { writeFileAtomic } from '../util/files.js';
import { Rng } from '../util/rng.js';
import { initTf, type BackendPreference, type Tf } from '../util/tf-backend.js';
import { exportMlpToOnnx, MetaKey } from '../runtime/onnx-export.js';
import { OnnxPolicy } from '../runtime/onnx-policy.js';
import type { DemoSet } from './demos.js';

export interface BcConfig {
  /** Hidden layer widths. */
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
  backend: BackendPreference;
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
  backend: 'auto',
};

export interface BcProgress {
  epoch: number;
  epochs: number;
  trainLoss: number;
  validationLoss: number;
}

export interface BcResult {
  spec: MlpPolicySpec;
  backend: string;
  samples: number;
  episodesUsed: number;
  trainLoss: number;
  validationLoss: number;
  /** Largest |onnxruntime − tfjs| over the verification batch. */
  exportMaxAbsError: number;
  seconds: number;
}

interface Dataset {
  x: Float32Array;
  y: Float32Array;
  n: number;
}

function buildDataset(demos: DemoSet, episodes: DemoSet['episodes'], h: number): Dataset {
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
  return { x, y, n };
}

export async function trainBc(
  demos: DemoSet,
  overrides: Partial<BcConfig> = {},
  onProgress?: (p: BcProgress) => void,
  log: (line: string) => void = () => {},
): Promise<BcResult> {
  const cfg: BcConfig = { ...defaultBcConfig, ...overrides };
  const { obsDim, actionDim } = demos.header;
  const h = cfg.chunkLength;
  if (!Number.isInteger(h) || h < 1)
    throw new ResrtError(`chunk length must be a positive integer, got ${h}`, 'e.g. --chunk 1 or --chunk 8');
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
  const train = buildDataset(demos, shuffled.slice(nVal), h);
  const val = nVal > 0 ? buildDataset(demos, shuffled.slice(0, nVal), h) : null;

  // Observation statistics over the training set.
  const mean = new Float32Array(obsDim);
  const std = new Float32Array(obsDim);
  for (let i = 0; i < train.n; i++)
    for (let d = 0; d < obsDim; d++) mean[d] += train.x[i * obsDim + d] / train.n;
  for (let i = 0; i < train.n; i++)
    for (let d = 0; d < obsDim; d++) std[d] += (train.x[i * obsDim + d] - mean[d]) ** 2 / train.n;
  for (let d = 0; d < obsDim; d++) std[d] = Math.max(cfg.minObsStd, Math.sqrt(std[d]));

  const { tf, backend, description } = await initTf(cfg.backend);
  log(`bc: tensorflow.js backend ${description}`);
  const started = performance.now();
  const outDim = actionDim * h;
  const widths = [obsDim, ...cfg.hidden, outDim];
  const params = initParams(tf, widths, cfg.layerNorm, rng);
  const optimizer = tf.train.adam(cfg.learningRate);
  const meanT = tf.tensor1d(mean);
  const stdT = tf.tensor1d(std);
  const forward = (x: ReturnType<Tf['tensor2d']>): ReturnType<Tf['tensor2d']> =>
    tf.tidy(() => {
      let z = tf.div(tf.sub(x, meanT), stdT) as ReturnType<Tf['tensor2d']>;
      params.forEach((p, l) => {
        z = tf.add(tf.matMul(z, p.w), p.b);
        if (l < params.length - 1) {
          if (p.gamma && p.beta) {
            const { mean: mu, variance } = tf.moments(z, -1, true);
            z = tf.add(tf.mul(tf.div(tf.sub(z, mu), tf.sqrt(tf.add(variance, 1e-5))), p.gamma), p.beta);
          }
          z = tf.relu(z);
        }
      });
      return z;
    });

  const evalLoss = (data: Dataset): number =>
    tf.tidy(() => {
      let total = 0;
      for (let s = 0; s < data.n; s += 4096) {
        const e = Math.min(data.n, s + 4096);
        const xb = tf.tensor2d(data.x.subarray(s * obsDim, e * obsDim), [e - s, obsDim]);
        const yb = tf.tensor2d(data.y.subarray(s * outDim, e * outDim), [e - s, outDim]);
        total += (tf.losses.meanSquaredError(yb, forward(xb)).dataSync()[0] as number) * (e - s);
      }
      return total / data.n;
    });

  const order = Uint32Array.from({ length: train.n }, (_, i) => i);
  const xb = new Float32Array(cfg.batchSize * obsDim);
  const yb = new Float32Array(cfg.batchSize * outDim);
  let trainLoss = NaN;
  let validationLoss = NaN;
  const vars = params.flatMap((p) => [p.w, p.b, ...(p.gamma && p.beta ? [p.gamma, p.beta] : [])]);
  for (let epoch = 1; epoch <= cfg.epochs; epoch++) {
    for (let i = order.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    let sum = 0;
    let batches = 0;
    for (let s = 0; s + cfg.batchSize <= train.n || (s === 0 && train.n > 0); s += cfg.batchSize) {
      const size = Math.min(cfg.batchSize, train.n - s);
      for (let k = 0; k < size; k++) {
        const r = order[s + k];
        xb.set(train.x.subarray(r * obsDim, (r + 1) * obsDim), k * obsDim);
        yb.set(train.y.subarray(r * outDim, (r + 1) * outDim), k * outDim);
      }
      const loss = optimizer.minimize(
        () => {
          const x = tf.tensor2d(xb.subarray(0, size * obsDim), [size, obsDim]);
          const y = tf.tensor2d(yb.subarray(0, size * outDim), [size, outDim]);
          return tf.losses.meanSquaredError(y, forward(x)) as ReturnType<Tf['scalar']>;
        },
        true,
        vars,
      );
      sum += loss!.dataSync()[0];
      loss!.dispose();
      batches++;
      if (size < cfg.batchSize) break;
    }
    trainLoss = sum / Math.max(1, batches);
    if (!Number.isFinite(trainLoss)) {
      throw new ResrtError(
        `BC diverged at epoch ${epoch} (loss ${trainLoss})`,
        'lower --lr, or check the demonstrations for NaN',
      );
    }
    validationLoss = val ? evalLoss(val) : NaN;
    onProgress?.({ epoch, epochs: cfg.epochs, trainLoss, validationLoss });
  }

  const layers: DenseLayerSpec[] = params.map((p, l) => ({
    inDim: widths[l],
    outDim: widths[l + 1],
    weight: p.w.dataSync() as Float32Array,
    bias: p.b.dataSync() as Float32Array,
    layerNorm:
      p.gamma && p.beta
        ? {
            gamma: p.gamma.dataSync() as Float32Array,
            beta: p.beta.dataSync() as Float32Array,
            epsilon: 1e-5,
          }
        : undefined,
    activation: l < params.length - 1 ? 'relu' : 'linear',
  }));
  const spec: MlpPolicySpec = {
    inputs: [{ name: 'obs', dim: obsDim }],
    inputNormalization: { mean, std },
    layers,
    output: { name: 'action', actionDim, chunkLength: h },
    metadata: {
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
      'resrt.trained_by': `resrt bc (${cfg.hidden.join('x')}${cfg.layerNorm ? ', LayerNorm' : ''}, ${cfg.epochs} epochs)`,
    },
  };

  // Verify the export: onnxruntime on the file's bytes must match tfjs.
  const bytes = exportMlpToOnnx(spec);
  const probeN = Math.min(256, train.n);
  const probe = train.x.slice(0, probeN * obsDim);
  const expected = tf.tidy(() => forward(tf.tensor2d(probe, [probeN, obsDim])).dataSync() as Float32Array);
  const dir = mkdtempSync(join(tmpdir(), 'resrt-bc-'));
  let got: Float32Array;
  try {
    writeFileSync(join(dir, 'base.onnx'), bytes);
    const loaded = await OnnxPolicy.load(join(dir, 'base.onnx'), {
      expectObsDim: obsDim,
      expectActionDim: actionDim,
      warmupRuns: 0,
    });
    got = (await loaded.runBatch(probe, probeN)).values;
    await loaded.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  let maxErr = 0;
  for (let i = 0; i < expected.length; i++) maxErr = Math.max(maxErr, Math.abs(expected[i] - got[i]));
  tf.dispose([...vars, meanT, stdT]);
  optimizer.dispose();
  if (!(maxErr <= 1e-5)) {
    throw new ResrtError(
      `the exported ONNX differs from the trained network by ${maxErr}`,
      'this is a bug in the exporter; please report it',
    );
  }
  exportedBytes.set(spec, bytes);
  return {
    spec,
    backend,
    samples: train.n,
    episodesUsed: usable.length,
    trainLoss,
    validationLoss,
    exportMaxAbsError: maxErr,
    seconds: (performance.now() - started) / 1000,
  };
}

const exportedBytes = new WeakMap<MlpPolicySpec, Uint8Array>();

/** Writes the verified ONNX of a trained spec (atomically: a crash leaves the old file or the new). */
export function saveBcPolicy(result: BcResult, path: string): void {
  const bytes = exportedBytes.get(result.spec) ?? exportMlpToOnnx(result.spec);
  writeFileAtomic(path, bytes);
  writeFileSync(
    `${path}.train.json`,
    JSON.stringify(
      {
        backend: result.backend,
        samples: result.samples,
        episodes: result.episodesUsed,
        train_loss: result.trainLoss,
        validation_loss: result.validationLoss,
        export_max_abs_error: result.exportMaxAbsError,
        seconds: result.seconds,
      },
      null,
      2,
    ),
  );
}

interface LayerParams {
  w: ReturnType<Tf['variable']>;
  b: ReturnType<Tf['variable']>;
  gamma?: ReturnType<Tf['variable']>;
  beta?: ReturnType<Tf['variable']>;
}

function initParams(tf: Tf, widths: number[], layerNorm: boolean, rng: Rng): LayerParams[] {
  const params: LayerParams[] = [];
  for (let l = 0; l + 1 < widths.length; l++) {
    const [i, o] = [widths[l], widths[l + 1]];
    const last = l + 2 === widths.length;
    // He initialisation for ReLU layers; a small output layer so initial actions sit near zero.
    const scale = last ? 0.01 : Math.sqrt(2 / i);
    const w = Float32Array.from({ length: i * o }, () => rng.normal(0, scale));
    params.push({
      w: tf.variable(tf.tensor2d(w, [i, o])),
      b: tf.variable(tf.zeros([o])),
      ...(layerNorm && !last ? { gamma: tf.variable(tf.ones([o])), beta: tf.variable(tf.zeros([o])) } : {}),
    });
  }
  return params;
}
