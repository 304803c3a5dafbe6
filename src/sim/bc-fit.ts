/**
 * Fitting a BcNetwork to a dataset: rows of (state, frames) → target, minibatch Adam with random
 * shift on the frames, a validation loss after every epoch. Behavior cloning (bc.ts: targets are
 * actions) and the state estimator (state-encoder.ts: targets are recorded environment state, no
 * state input) fit through this one loop.
 */
import type { CameraSpec } from '../types.js';
import { ResrtError } from '../util/errors.js';
import type { Rng } from '../util/rng.js';
import { AdamClock, DoubleBuffer, framesToBatch, randomShifts, type FrameStore } from '../nn/index.js';
import type { BcInputs, BcNetwork, BcOutputs } from './bc-network.js';

/** Training rows: x [n, stateDim] (empty for a network without state), y [n, outDim], frames per camera. */
export interface BcDataset {
  x: Float32Array;
  y: Float32Array;
  n: number;
  /** One store per camera, frame i belonging to row i. */
  frames: FrameStore[];
}

/** Reusable buffers for `rows` dataset rows as graph feeds. */
export class BcBatch implements BcInputs {
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
  fill(data: BcDataset, indices: ArrayLike<number>, count: number, shift?: { rng: Rng; pad: number }): void {
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

export interface BcFitOptions {
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Random shift of the frames, in pixels each way; 0 = off. */
  shiftPad: number;
  cameras: readonly CameraSpec[];
}

export interface BcFitProgress {
  epoch: number;
  epochs: number;
  trainLoss: number;
  validationLoss: number;
  /** Seconds of fitting so far. */
  seconds: number;
}

export interface BcFit {
  /** The trained parameters. */
  params: Float32Array;
  trainLoss: number;
  validationLoss: number;
  /** The network's outputs for `data`'s first `rows` rows (no augmentation). */
  predictFirst(data: BcDataset, rows: number): Promise<BcOutputs>;
  /** The network's outputs for every row of `data`, in order (no augmentation). */
  predictAll(data: BcDataset): Promise<Float32Array>;
}

/** Fits `net` from `init`; the network stays usable (its graphs compiled) until the caller releases it. */
export async function fitBcNetwork(
  net: BcNetwork,
  init: Float32Array,
  train: BcDataset,
  val: BcDataset | null,
  opts: BcFitOptions,
  rng: Rng,
  onProgress?: (p: BcFitProgress) => void,
): Promise<BcFit> {
  const obsDim = net.spec.stateDim;
  const outDim = net.spec.outDim;
  const started = performance.now();
  const params = new DoubleBuffer(net.layout.size, init);
  const m = new DoubleBuffer(net.layout.size);
  const v = new DoubleBuffer(net.layout.size);
  // tf.train.adam's defaults (ε = 1e-7, no clipping), which BC was tuned with.
  const clock = new AdamClock({
    lr: opts.learningRate,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-7,
    clipNorm: Infinity,
  });

  // One forward graph, padded to its row count: images are evaluated a batch at a time.
  const predictRows = Math.min(opts.cameras.length ? opts.batchSize : 4096, train.n);
  const predictBatch = new BcBatch(predictRows, obsDim, outDim, opts.cameras);
  const predictAll = async (data: BcDataset): Promise<Float32Array> => {
    const out = new Float32Array(data.n * outDim);
    const all = Uint32Array.from({ length: data.n }, (_, i) => i);
    for (let s = 0; s < data.n; s += predictRows) {
      const count = Math.min(predictRows, data.n - s);
      predictBatch.fill(data, all.subarray(s, s + count), count);
      const pred = (await net.predict(params.front, predictBatch, predictRows)).action;
      out.set(pred.subarray(0, count * outDim), s * outDim);
    }
    return out;
  };
  const evalLoss = async (data: BcDataset): Promise<number> => {
    const pred = await predictAll(data);
    let sq = 0;
    for (let i = 0; i < pred.length; i++) sq += (pred[i] - data.y[i]) ** 2;
    return sq / outDim / data.n;
  };

  const order = Uint32Array.from({ length: train.n }, (_, i) => i);
  const batchRows = Math.min(opts.batchSize, train.n);
  const batch = new BcBatch(batchRows, obsDim, outDim, opts.cameras);
  const shift = { rng, pad: opts.shiftPad };
  let trainLoss = NaN;
  let validationLoss = NaN;
  for (let epoch = 1; epoch <= opts.epochs; epoch++) {
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
        `training diverged at epoch ${epoch} (loss ${trainLoss})`,
        'lower --lr, or check the demonstrations for NaN',
      );
    }
    validationLoss = val ? await evalLoss(val) : NaN;
    onProgress?.({
      epoch,
      epochs: opts.epochs,
      trainLoss,
      validationLoss,
      seconds: (performance.now() - started) / 1000,
    });
  }
  return {
    params: params.front,
    trainLoss,
    validationLoss,
    async predictFirst(data, rows) {
      predictBatch.fill(
        data,
        Uint32Array.from({ length: rows }, (_, i) => i),
        rows,
      );
      return net.predict(params.front, predictBatch, predictRows);
    },
    predictAll,
  };
}
