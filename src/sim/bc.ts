/**
 * Behavior cloning: an MLP from observations to actions (or ACT-style chunks of H future actions),
 * trained on `resrt collect` demonstrations with the training engine (src/nn: one onnxruntime call
 * per minibatch step), exported to ONNX with the observation normalization baked in, and verified
 * by running the exported file in onnxruntime against the trained network.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DenseLayerSpec, MlpPolicySpec } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { writeFileAtomic } from '../util/files.js';
import { Rng } from '../util/rng.js';
import {
  AdamClock,
  adamStep,
  CompiledGraph,
  DoubleBuffer,
  grad,
  Graph,
  initEngine,
  LAYER_NORM_EPS,
  mlpApply,
  mlpParamSpecs,
  mlpWidths,
  op,
  ParamLayout,
  type DevicePreference,
  type Engine,
  type MlpSpec,
  type Value,
} from '../nn/index.js';
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
  /** Where training computes: 'auto' (CUDA when installed and working, else CPU), 'cpu', 'cuda'. */
  device: DevicePreference;
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
};

export interface BcProgress {
  epoch: number;
  epochs: number;
  trainLoss: number;
  validationLoss: number;
}

export interface BcResult {
  spec: MlpPolicySpec;
  /** The training engine that ran, in words. */
  backend: string;
  samples: number;
  episodesUsed: number;
  trainLoss: number;
  validationLoss: number;
  /** Largest |exported ONNX − trained network| over the verification batch. */
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

  const engine = await initEngine({ device: cfg.device });
  log(`bc: ${engine.description}`);
  const started = performance.now();
  const outDim = actionDim * h;
  const net = new BcNetwork(
    engine,
    { inDim: obsDim, hidden: cfg.hidden, outDim, layerNorm: cfg.layerNorm },
    mean,
    std,
  );
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

  const evalLoss = async (data: Dataset): Promise<number> => {
    let total = 0;
    for (let s = 0; s < data.n; s += 4096) {
      const e = Math.min(data.n, s + 4096);
      const pred = await net.predict(params.front, data.x.subarray(s * obsDim, e * obsDim), e - s);
      const target = data.y.subarray(s * outDim, e * outDim);
      let sq = 0;
      for (let i = 0; i < pred.length; i++) sq += (pred[i] - target[i]) ** 2;
      total += sq / outDim;
    }
    return total / data.n;
  };

  const order = Uint32Array.from({ length: train.n }, (_, i) => i);
  const xb = new Float32Array(cfg.batchSize * obsDim);
  const yb = new Float32Array(cfg.batchSize * outDim);
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
      for (let s = 0; s + cfg.batchSize <= train.n || (s === 0 && train.n > 0); s += cfg.batchSize) {
        const size = Math.min(cfg.batchSize, train.n - s);
        for (let k = 0; k < size; k++) {
          const r = order[s + k];
          xb.set(train.x.subarray(r * obsDim, (r + 1) * obsDim), k * obsDim);
          yb.set(train.y.subarray(r * outDim, (r + 1) * outDim), k * outDim);
        }
        const scalars = clock.nextScalars();
        const out = await (
          await net.trainGraph(size)
        ).run(
          {
            params: params.front,
            m: m.front,
            v: v.front,
            stepSize: scalars.stepSize,
            epsHat: scalars.epsHat,
            x: xb.subarray(0, size * obsDim),
            y: yb.subarray(0, size * outDim),
          },
          { 'next:params': params.back, 'next:m': m.back, 'next:v': v.back },
        );
        params.swap();
        m.swap();
        v.swap();
        clock.commit();
        sum += out.loss[0];
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
      validationLoss = val ? await evalLoss(val) : NaN;
      onProgress?.({ epoch, epochs: cfg.epochs, trainLoss, validationLoss });
    }
  } catch (err) {
    await net.release();
    throw err;
  }

  const layers = net.denseSpecs(params.front);
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

  // Verify the export: onnxruntime on the file's bytes must match the trained network.
  const bytes = exportMlpToOnnx(spec);
  const probeN = Math.min(256, train.n);
  const probe = train.x.slice(0, probeN * obsDim);
  const expected = await net.predict(params.front, probe, probeN);
  await net.release();
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
  if (!(maxErr <= 1e-5)) {
    throw new ResrtError(
      `the exported ONNX differs from the trained network by ${maxErr}`,
      'this is a bug in the exporter; please report it',
    );
  }
  exportedBytes.set(spec, bytes);
  return {
    spec,
    backend: engine.description,
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

/**
 * The BC network: (x − mean)/std → MLP (ReLU, optional LayerNorm) → linear, as engine graphs over
 * one flat parameter vector: a minibatch step (MSE, gradients, Adam) and a forward pass.
 */
class BcNetwork {
  readonly layout: ParamLayout;
  private readonly steps = new Map<number, Promise<CompiledGraph>>();
  private readonly forwards = new Map<number, Promise<CompiledGraph>>();

  constructor(
    readonly engine: Engine,
    readonly spec: MlpSpec,
    readonly mean: Float32Array,
    readonly std: Float32Array,
  ) {
    this.layout = new ParamLayout(mlpParamSpecs(spec));
  }

  /** He initialisation for ReLU layers; a small output layer so initial actions sit near zero. */
  init(rng: Rng): Float32Array {
    const flat = new Float32Array(this.layout.size);
    const widths = mlpWidths(this.spec);
    for (let l = 0; l + 1 < widths.length; l++) {
      const last = l + 2 === widths.length;
      const scale = last ? 0.01 : Math.sqrt(2 / widths[l]);
      const w = this.layout.view(flat, `l${l}/w`);
      for (let i = 0; i < w.length; i++) w[i] = rng.normal(0, scale);
      if (this.spec.layerNorm && !last) this.layout.view(flat, `l${l}/gamma`).fill(1);
    }
    return flat;
  }

  private output(p: ReadonlyMap<string, Value>, x: Value): Value {
    const g = x.graph;
    const d = this.spec.inDim;
    const z = op.div(op.sub(x, g.constant(this.mean, [d])), g.constant(this.std, [d]));
    return mlpApply(p, z, this.spec);
  }

  trainGraph(rows: number): Promise<CompiledGraph> {
    let c = this.steps.get(rows);
    if (!c) {
      const g = new Graph(`bc_step_${rows}`);
      const params = g.input('params', [this.layout.size]);
      const p = this.layout.unpack(params);
      const pred = this.output(p, g.input('x', [rows, this.spec.inDim]));
      const loss = op.mean(op.square(op.sub(pred, g.input('y', [rows, this.spec.outDim]))));
      const names = this.layout.entries.map((e) => e.name);
      const grads = grad(
        loss,
        names.map((n) => p.get(n) as Value),
      );
      const step = adamStep(
        params,
        this.layout.pack(new Map(names.map((n, i) => [n, grads[i]]))),
        g.input('m', [this.layout.size]),
        g.input('v', [this.layout.size]),
        { beta1: 0.9, beta2: 0.999, clipNorm: Infinity },
        { stepSize: g.input('stepSize', []), epsHat: g.input('epsHat', []) },
      );
      g.output('next:params', step.params);
      g.output('next:m', step.m);
      g.output('next:v', step.v);
      g.output('loss', op.reshape(loss, [1]));
      c = CompiledGraph.create(g, this.engine);
      this.steps.set(rows, c);
    }
    return c;
  }

  async predict(params: Float32Array, x: Float32Array, rows: number): Promise<Float32Array> {
    let c = this.forwards.get(rows);
    if (!c) {
      const g = new Graph(`bc_forward_${rows}`);
      const p = this.layout.unpack(g.input('params', [this.layout.size]));
      g.output('y', this.output(p, g.input('x', [rows, this.spec.inDim])));
      c = CompiledGraph.create(g, this.engine);
      this.forwards.set(rows, c);
    }
    return (await (await c).run({ params, x })).y;
  }

  denseSpecs(flat: Float32Array): DenseLayerSpec[] {
    const widths = mlpWidths(this.spec);
    return widths.slice(0, -1).map((inDim, l) => {
      const last = l + 2 === widths.length;
      const view = (name: string): Float32Array => this.layout.view(flat, `l${l}/${name}`).slice();
      return {
        inDim,
        outDim: widths[l + 1],
        weight: view('w'),
        bias: view('b'),
        layerNorm:
          this.spec.layerNorm && !last
            ? { gamma: view('gamma'), beta: view('beta'), epsilon: LAYER_NORM_EPS }
            : undefined,
        activation: last ? 'linear' : 'relu',
      };
    });
  }

  async release(): Promise<void> {
    const all = [...this.steps.values(), ...this.forwards.values()];
    this.steps.clear();
    this.forwards.clear();
    await Promise.all(all.map(async (c) => (await c).release()));
  }
}
