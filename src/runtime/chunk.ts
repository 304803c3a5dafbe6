/**
 * Action chunks: a policy that predicts H future actions per query, turned into one action per
 * control step, either open loop (execute k of H, then re-query) or with ACT-style temporal
 * ensembling (query every step, average all overlapping predictions for the current step).
 */
import type { CameraFrames, MaybePromise } from '../types.js';
import { ResrtError } from '../util/errors.js';

export type ChunkExecutorOptions =
  | {
      mode: 'open-loop';
      /** Steps executed from each chunk before re-querying; 1 <= k <= H. Default H. */
      executeSteps?: number;
    }
  | {
      mode: 'temporal-ensemble';
      /**
       * m in w_i = exp(-m * i), where i = 0 is the OLDEST prediction still covering the step
       * (the convention of ACT, Zhao et al. 2023). m > 0 favours older predictions (smoother);
       * m < 0 favours newer ones (more reactive). Default 0.01, as in ACT.
       */
      decay?: number;
    };

/** Anything that predicts a flat [H * A] chunk of actions for one observation. */
export interface ChunkPolicy {
  readonly actionDim: number;
  readonly chunkLength: number;
  reset?(seed?: number): void;
  /** `frames`: the cameras' frames, for visuomotor chunk predictors. */
  runChunk(obs: Float32Array, frames?: CameraFrames): MaybePromise<Float32Array>;
}

export function isChunkPolicy(p: object): p is ChunkPolicy {
  const c = p as Partial<ChunkPolicy>;
  return typeof c.runChunk === 'function' && typeof c.chunkLength === 'number';
}

function allFinite(v: Float32Array): boolean {
  for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) return false;
  return true;
}

interface StoredChunk {
  /** Control step at which the chunk was predicted. */
  step: number;
  values: Float32Array;
}

export class ChunkExecutor {
  readonly mode: 'open-loop' | 'temporal-ensemble';
  readonly executeSteps: number;
  readonly decay: number;
  private step = 0;
  /** Open loop: the current chunk and its first step; ensembling: every chunk still covering a future step. */
  private chunks: StoredChunk[] = [];

  constructor(
    readonly actionDim: number,
    readonly chunkLength: number,
    options: ChunkExecutorOptions = { mode: 'open-loop' },
  ) {
    if (!Number.isInteger(actionDim) || actionDim <= 0)
      throw new ResrtError(`ChunkExecutor: actionDim ${actionDim}`);
    if (!Number.isInteger(chunkLength) || chunkLength <= 0) {
      throw new ResrtError(
        `ChunkExecutor: chunkLength ${chunkLength}`,
        'the chunk length is the H of an [batch, H, A] output',
      );
    }
    this.mode = options.mode;
    if (options.mode === 'open-loop') {
      this.executeSteps = options.executeSteps ?? chunkLength;
      this.decay = 0;
      if (!Number.isInteger(this.executeSteps) || this.executeSteps < 1 || this.executeSteps > chunkLength) {
        throw new ResrtError(
          `chunk execution: executeSteps ${this.executeSteps} is outside 1..${chunkLength}`,
          `pass --execute-steps between 1 and the model's chunk length ${chunkLength}`,
        );
      }
    } else if (options.mode === 'temporal-ensemble') {
      this.executeSteps = 1;
      this.decay = options.decay ?? 0.01;
      if (!Number.isFinite(this.decay))
        throw new ResrtError(`temporal ensembling: decay ${this.decay} is not finite`);
    } else {
      throw new ResrtError(
        `unknown chunk execution mode '${(options as { mode: string }).mode}'`,
        "use 'open-loop' or 'temporal-ensemble'",
      );
    }
  }

  /** Start of an episode: forget every prediction. */
  reset(): void {
    this.step = 0;
    this.chunks = [];
  }

  /** Whether the current step needs a fresh chunk from the model. */
  needsQuery(): boolean {
    if (this.mode === 'temporal-ensemble') return true;
    const current = this.chunks[0];
    return current === undefined || this.step - current.step >= this.executeSteps;
  }

  /**
   * Records a chunk predicted at the current step. A chunk with a non-finite value is dropped
   * (the step's action comes out NaN, which the loop turns into the safe action) so one bad
   * prediction cannot poison the following k steps.
   */
  push(chunk: Float32Array): void {
    if (chunk.length !== this.chunkLength * this.actionDim) {
      throw new ResrtError(
        `chunk has ${chunk.length} values, expected H x A = ${this.chunkLength} x ${this.actionDim}`,
        'check the model output shape against the chunk length',
      );
    }
    if (!allFinite(chunk)) {
      if (this.mode === 'open-loop') this.chunks = [];
      return;
    }
    const stored = { step: this.step, values: chunk };
    if (this.mode === 'open-loop') this.chunks = [stored];
    else this.chunks.push(stored);
  }

  /** The action for the current step; advances to the next step. */
  next(): Float32Array {
    const A = this.actionDim;
    const out = new Float32Array(A);
    if (this.mode === 'open-loop') {
      const current = this.chunks[0];
      const offset = current ? this.step - current.step : -1;
      if (!current || offset >= this.chunkLength) out.fill(NaN);
      else out.set(current.values.subarray(offset * A, offset * A + A));
    } else {
      // Drop chunks that no longer cover this step; the rest are oldest first (push order).
      this.chunks = this.chunks.filter((c) => this.step - c.step < this.chunkLength);
      if (this.chunks.length === 0) out.fill(NaN);
      else {
        const acc = new Float64Array(A);
        let total = 0;
        this.chunks.forEach((c, i) => {
          const w = Math.exp(-this.decay * i);
          const offset = (this.step - c.step) * A;
          for (let a = 0; a < A; a++) acc[a] += w * c.values[offset + a];
          total += w;
        });
        for (let a = 0; a < A; a++) out[a] = acc[a] / total;
      }
    }
    this.step++;
    return out;
  }

  /** One control step: query the model if needed, then return this step's action. */
  act(
    obs: Float32Array,
    query: (obs: Float32Array) => MaybePromise<Float32Array>,
  ): MaybePromise<Float32Array> {
    if (!this.needsQuery()) return this.next();
    const chunk = query(obs);
    if (chunk instanceof Promise) {
      return chunk.then((c) => {
        this.push(c);
        return this.next();
      });
    }
    this.push(chunk);
    return this.next();
  }
}
