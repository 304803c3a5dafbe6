/**
 * Replay for the residual learner: typed-array ring buffers of steps stored in episode order, an
 * n-step sampler that never crosses an episode end (and bootstraps through truncation but not
 * through termination), symmetric online/demo batches (RLPD), and a compact binary form for
 * checkpoints. Optionally the cameras' frames beside the state (replay-frames.ts), each kept once.
 */
import type { CameraFrames } from '../types.js';
import { ResrtError } from '../util/errors.js';
import type { Rng } from '../util/rng.js';
import {
  FramePacker,
  ReplayFrames,
  describeCameras,
  emptySampledFrames,
  type FrameCamera,
  type SampledFrames,
  type StepFrames,
} from './replay-frames.js';

const TERMINATED = 1;
const TRUNCATED = 2;
/** Conservative mixing executed less than the exploring policy (weight < 1) at this step. */
const HELD_BACK = 4;

/** One step as the learner needs it: the base action at obs and at nextObs travel with it. */
export interface StepRecord {
  obs: ArrayLike<number>;
  baseAction: ArrayLike<number>;
  /** The executed (composed) action. */
  action: ArrayLike<number>;
  reward: number;
  nextObs: ArrayLike<number>;
  /** The base's action at nextObs (what the target actor is composed with). */
  nextBaseAction: ArrayLike<number>;
  terminated: boolean;
  truncated: boolean;
  /**
   * Conservative mixing held the residual back at this step (its weight was < 1: a baseline step,
   * a StepMix tail, a scaled residual). The learner keeps its actor near what was executed there.
   */
  heldBack?: boolean;
  /** The cameras' frames of obs and of nextObs (by reference), for a replay that keeps frames. */
  frames?: CameraFrames;
  nextFrames?: CameraFrames;
}

/** Steps packed into flat arrays (for messages between threads). */
export interface StepBatch {
  count: number;
  obs: Float32Array;
  baseAction: Float32Array;
  action: Float32Array;
  reward: Float32Array;
  nextObs: Float32Array;
  nextBaseAction: Float32Array;
  /** bit 0 terminated, bit 1 truncated, bit 2 held back. */
  flags: Uint8Array;
  /**
   * The conservative mixer's exploring share when these steps were taken (absent without mixing).
   * The learner weighs its held-back term by 1 − the latest share: once the mixer explores fully,
   * old held-back steps are plain off-policy data.
   */
  mixingShare?: number;
  /** The steps' camera frames, each once, for a replay that keeps frames. */
  frames?: StepFrames;
}

/** A sampled training batch with n-step targets already folded in. */
export interface SampleBatch {
  size: number;
  obs: Float32Array;
  baseAction: Float32Array;
  action: Float32Array;
  /** Σ_{k<K} γ^k r_{t+k}, K ≤ n steps up to the episode end. */
  reward: Float32Array;
  nextObs: Float32Array;
  nextBaseAction: Float32Array;
  /** γ^K, or 0 when the K-th step terminated. */
  discount: Float32Array;
  /** 1 where the first step was held back by conservative mixing (StepRecord.heldBack), else 0. */
  heldBack: Float32Array;
  /**
   * The rows' obs frames and their n-step next-obs frames, [B, H, W, C] uint8 per camera; filled
   * only when present (emptySample with cameras), so a learner that reads no frames copies none.
   */
  frames?: SampledFrames;
}

export function emptyStepBatch(count: number, obsDim: number, actionDim: number): StepBatch {
  return {
    count,
    obs: new Float32Array(count * obsDim),
    baseAction: new Float32Array(count * actionDim),
    action: new Float32Array(count * actionDim),
    reward: new Float32Array(count),
    nextObs: new Float32Array(count * obsDim),
    nextBaseAction: new Float32Array(count * actionDim),
    flags: new Uint8Array(count),
  };
}

/** `frames` packs the steps' frames too (one packer per stream of steps: it links packs of an episode). */
export function packSteps(
  steps: readonly StepRecord[],
  obsDim: number,
  actionDim: number,
  frames?: FramePacker,
): StepBatch {
  const b = emptyStepBatch(steps.length, obsDim, actionDim);
  if (frames) b.frames = frames.pack(steps);
  steps.forEach((s, i) => {
    b.obs.set(s.obs, i * obsDim);
    b.baseAction.set(s.baseAction, i * actionDim);
    b.action.set(s.action, i * actionDim);
    b.reward[i] = s.reward;
    b.nextObs.set(s.nextObs, i * obsDim);
    b.nextBaseAction.set(s.nextBaseAction, i * actionDim);
    b.flags[i] =
      (s.terminated ? TERMINATED : 0) | (s.truncated ? TRUNCATED : 0) | (s.heldBack ? HELD_BACK : 0);
  });
  return b;
}

export function emptySample(
  size: number,
  obsDim: number,
  actionDim: number,
  cameras?: readonly FrameCamera[],
): SampleBatch {
  return {
    ...(cameras?.length ? { frames: emptySampledFrames(size, cameras) } : {}),
    size,
    obs: new Float32Array(size * obsDim),
    baseAction: new Float32Array(size * actionDim),
    action: new Float32Array(size * actionDim),
    reward: new Float32Array(size),
    nextObs: new Float32Array(size * obsDim),
    nextBaseAction: new Float32Array(size * actionDim),
    discount: new Float32Array(size),
    heldBack: new Float32Array(size),
  };
}

/**
 * Ring buffer of steps in the order they happened. Logical index l counts every step ever added;
 * the buffer holds [added - size, added).
 */
export class ReplayBuffer {
  readonly obs: Float32Array;
  readonly baseAction: Float32Array;
  readonly action: Float32Array;
  readonly reward: Float32Array;
  readonly nextObs: Float32Array;
  readonly nextBaseAction: Float32Array;
  readonly flags: Uint8Array;
  /** Steps ever added. */
  added = 0;
  /**
   * The oldest logical step ever held here: a buffer restored from a saved one holds only the saved
   * steps, even when its capacity would reach further back.
   */
  private firstHeld = 0;
  /** The cameras' frames of every step held, when built with cameras (else null: no cost). */
  frames: ReplayFrames | null;

  constructor(
    readonly capacity: number,
    readonly obsDim: number,
    readonly actionDim: number,
    frameCameras?: readonly FrameCamera[],
  ) {
    this.frames = frameCameras?.length ? new ReplayFrames(frameCameras, capacity) : null;
    this.obs = new Float32Array(capacity * obsDim);
    this.baseAction = new Float32Array(capacity * actionDim);
    this.action = new Float32Array(capacity * actionDim);
    this.reward = new Float32Array(capacity);
    this.nextObs = new Float32Array(capacity * obsDim);
    this.nextBaseAction = new Float32Array(capacity * actionDim);
    this.flags = new Uint8Array(capacity);
  }

  get size(): number {
    return Math.min(this.added - this.firstHeld, this.capacity);
  }

  add(step: StepRecord): void {
    this.addBatch(packSteps([step], this.obsDim, this.actionDim));
  }

  addBatch(b: StepBatch): void {
    const first = this.added;
    if (b.frames && !this.frames) {
      throw new ResrtError(
        `replay: a batch of ${b.count} steps brings camera frames, and this replay keeps none`,
        'build the replay with the cameras whose frames it keeps (ReplayBuffer frameCameras)',
      );
    }
    this.addState(b);
    this.frames?.addSteps(first, b.count, b.frames, this.added - this.size);
  }

  private addState(b: StepBatch): void {
    const { obsDim: O, actionDim: A } = this;
    if (b.obs.length !== b.count * O || b.action.length !== b.count * A) {
      throw new ResrtError(
        `replay: a batch of ${b.count} steps has ${b.obs.length / b.count} obs / ${b.action.length / b.count} action values per step, the buffer ${O} / ${A}`,
        'the environment, base policy and learner must agree on dimensions',
      );
    }
    for (let i = 0; i < b.count; i++) {
      const s = this.added % this.capacity;
      this.obs.set(b.obs.subarray(i * O, (i + 1) * O), s * O);
      this.nextObs.set(b.nextObs.subarray(i * O, (i + 1) * O), s * O);
      this.baseAction.set(b.baseAction.subarray(i * A, (i + 1) * A), s * A);
      this.nextBaseAction.set(b.nextBaseAction.subarray(i * A, (i + 1) * A), s * A);
      this.action.set(b.action.subarray(i * A, (i + 1) * A), s * A);
      this.reward[s] = b.reward[i];
      this.flags[s] = b.flags[i];
      this.added++;
    }
  }

  /**
   * Ends the newest episode as if truncated, when it was cut without a flag (a resumed run), so
   * n-step sums do not run into the next episode.
   */
  markEpisodeBoundary(): void {
    if (this.added === 0) return;
    const s = (this.added - 1) % this.capacity;
    if ((this.flags[s] & (TERMINATED | TRUNCATED)) === 0) this.flags[s] |= TRUNCATED;
    this.frames?.breakChain();
  }

  /**
   * Writes the n-step sample starting at logical step l into row `row` of `out`. The sum stops at
   * the first terminated or truncated step, or at the newest step stored (an episode in progress):
   * the target then bootstraps from that step's nextObs with γ^K — unless it terminated.
   */
  writeNStep(l: number, nStep: number, gamma: number, out: SampleBatch, row: number): void {
    const { obsDim: O, actionDim: A, capacity: C } = this;
    const s0 = l % C;
    out.obs.set(this.obs.subarray(s0 * O, (s0 + 1) * O), row * O);
    out.baseAction.set(this.baseAction.subarray(s0 * A, (s0 + 1) * A), row * A);
    out.action.set(this.action.subarray(s0 * A, (s0 + 1) * A), row * A);
    out.heldBack[row] = this.flags[s0] & HELD_BACK ? 1 : 0;
    let ret = 0;
    let disc = 1;
    let last = s0;
    let terminated = false;
    for (let k = 0; k < nStep && l + k < this.added; k++) {
      const s = (l + k) % C;
      ret += disc * this.reward[s];
      disc *= gamma;
      last = s;
      const f = this.flags[s];
      if (f & TERMINATED) {
        terminated = true;
        break;
      }
      if (f & TRUNCATED) break;
    }
    out.reward[row] = ret;
    out.discount[row] = terminated ? 0 : disc;
    out.nextObs.set(this.nextObs.subarray(last * O, (last + 1) * O), row * O);
    out.nextBaseAction.set(this.nextBaseAction.subarray(last * A, (last + 1) * A), row * A);
    if (out.frames) {
      if (!this.frames) {
        throw new ResrtError(
          'replay: a batch asks for camera frames, and this replay keeps none',
          'keep frames in every replay a batch draws from (online and demonstrations), or sample without frames',
        );
      }
      this.frames.writeSample(s0, last, out.frames, row);
    }
  }

  /** A uniformly random stored logical index. */
  randomIndex(rng: Rng): number {
    return this.added - this.size + rng.int(this.size);
  }

  // -- persistence --------------------------------------------------------------------------

  /** Replaces this buffer's content with `from`'s steps (same logical indices), e.g. on resume. */
  restoreFrom(from: ReplayBuffer): void {
    if (from.obsDim !== this.obsDim || from.actionDim !== this.actionDim) {
      throw new ResrtError(
        `saved replay has obs/action dims ${from.obsDim}/${from.actionDim}, this run ${this.obsDim}/${this.actionDim}`,
        'resume with the task the checkpoint was written for, or use a new outDir',
      );
    }
    if (from.size > this.capacity) {
      throw new ResrtError(
        `saved replay holds ${from.size} steps, more than bufferSize ${this.capacity}`,
        'resume with bufferSize at least as large as the original run',
      );
    }
    if (!!from.frames !== !!this.frames) {
      throw new ResrtError(
        `the saved replay keeps ${from.frames ? `frames of ${describeCameras(from.frames.cameras)}` : 'no camera frames'}, this run ${this.frames ? `keeps frames of ${describeCameras(this.frames.cameras)}` : 'keeps none'}`,
        'resume with replayFrames as the run started, or use a new outDir',
      );
    }
    const { obsDim: O, actionDim: A } = from;
    const start = from.added - from.size;
    this.added = start;
    this.firstHeld = start;
    for (let i = 0; i < from.size; i++) {
      const s = (start + i) % from.capacity;
      this.addState({
        count: 1,
        obs: from.obs.subarray(s * O, (s + 1) * O),
        baseAction: from.baseAction.subarray(s * A, (s + 1) * A),
        action: from.action.subarray(s * A, (s + 1) * A),
        reward: from.reward.subarray(s, s + 1),
        nextObs: from.nextObs.subarray(s * O, (s + 1) * O),
        nextBaseAction: from.nextBaseAction.subarray(s * A, (s + 1) * A),
        flags: from.flags.subarray(s, s + 1),
      });
    }
    if (this.frames && from.frames) this.frames.adopt(from.frames, start, from.added);
  }

  /** Only the filled part, in logical order, so a resumed buffer is identical (frames: serializeFrameIndex). */
  serialize(): Uint8Array {
    const n = this.size;
    const { obsDim: O, actionDim: A } = this;
    const header = new Float64Array([this.capacity, O, A, this.added, n]);
    const parts: Uint8Array[] = [new Uint8Array(header.buffer)];
    const start = this.added - n;
    const ordered = <T extends Float32Array | Uint8Array>(arr: T, w: number): Uint8Array => {
      const out = new (arr.constructor as { new (n: number): T })(n * w);
      for (let i = 0; i < n; i++) {
        const s = (start + i) % this.capacity;
        out.set(arr.subarray(s * w, (s + 1) * w) as never, i * w);
      }
      return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    };
    parts.push(
      ordered(this.obs, O),
      ordered(this.baseAction, A),
      ordered(this.action, A),
      ordered(this.reward, 1),
      ordered(this.nextObs, O),
      ordered(this.nextBaseAction, A),
      ordered(this.flags, 1),
    );
    return concatBytes(parts);
  }

  /** The frames' index for the steps `serialize` writes (the frames themselves: frames.chunkFiles()). */
  serializeFrameIndex(): Uint8Array | null {
    return this.frames?.serializeIndex(this.added - this.size, this.size) ?? null;
  }

  /** The state part; a checkpoint then sets `frames` from the frames saved beside it (ReplayFrames.deserialize). */
  static deserialize(bytes: Uint8Array, source: string): ReplayBuffer {
    const corrupt = (what: string): never => {
      throw new ResrtError(
        `replay data in ${source} is corrupt (${what})`,
        'delete the checkpoint folder to start over, or restore it from a backup',
      );
    };
    if (bytes.byteLength < 40) corrupt('too short');
    const header = new Float64Array(bytes.slice(0, 40).buffer);
    const [capacity, O, A, added, n] = Array.from(header);
    if (![capacity, O, A, added, n].every((v) => Number.isInteger(v) && v >= 0) || n > capacity || n > added)
      corrupt('bad header');
    const expect = 40 + n * 4 * (2 * O + 3 * A + 1) + n;
    if (bytes.byteLength !== expect) corrupt(`${bytes.byteLength} bytes, expected ${expect}`);
    const buf = new ReplayBuffer(capacity, O, A);
    let off = 40;
    const take = (w: number): Float32Array => {
      const out = new Float32Array(bytes.slice(off, off + n * w * 4).buffer);
      off += n * w * 4;
      return out;
    };
    const obs = take(O);
    const base = take(A);
    const action = take(A);
    const reward = take(1);
    const nextObs = take(O);
    const nextBase = take(A);
    const flags = bytes.slice(off, off + n);
    // Re-add in logical order so slot positions match the original buffer.
    buf.added = added - n;
    buf.firstHeld = added - n;
    buf.addState({
      count: n,
      obs,
      baseAction: base,
      action,
      reward,
      nextObs,
      nextBaseAction: nextBase,
      flags,
    });
    return buf;
  }
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const total = parts.reduce((s, p) => s + p.byteLength, 0);
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

/**
 * Online + demonstration replay with symmetric sampling: each batch takes round(demoFraction × B)
 * rows from the demos (when there are any) and the rest from online data.
 */
export class DualReplay {
  constructor(
    readonly online: ReplayBuffer,
    readonly demos: ReplayBuffer | null,
    readonly demoFraction: number,
  ) {
    if (demos && demos.size > 0 && !!demos.frames !== !!online.frames) {
      throw new ResrtError(
        `replay: the online replay keeps ${online.frames ? 'camera frames' : 'no frames'} and the demonstrations ${demos.frames ? 'do' : 'do not'}`,
        'batches mix both, so frames must be kept in both or neither: relabel the demonstrations with their frames',
      );
    }
  }

  demoRows(batchSize: number): number {
    if (!this.demos || this.demos.size === 0) return 0;
    if (this.online.size === 0) return batchSize;
    return Math.round(this.demoFraction * batchSize);
  }

  sample(batchSize: number, nStep: number, gamma: number, rng: Rng, out?: SampleBatch): SampleBatch {
    const o =
      out ?? emptySample(batchSize, this.online.obsDim, this.online.actionDim, this.online.frames?.cameras);
    const nd = this.demoRows(batchSize);
    if (nd < batchSize && this.online.size === 0) {
      throw new ResrtError(
        'replay: nothing to sample yet',
        'add transitions (or demonstrations) before updating',
      );
    }
    for (let row = 0; row < batchSize; row++) {
      const buf = row < nd ? (this.demos as ReplayBuffer) : this.online;
      buf.writeNStep(buf.randomIndex(rng), nStep, gamma, o, row);
    }
    return o;
  }
}
