/**
 * Camera frames kept in replay beside the state (issue 20): what a learned encoder or the success
 * detector reads. Each frame is stored once, as uint8 H×W×C, in a slot of a chunk of `chunkSlots`
 * slots per camera; a step refers to its obs and next-obs frames by slot. Within an episode step
 * t+1's obs frame IS step t's next frame, so an episode of T steps takes T + 1 slots (the reset
 * frame, then one per step: the terminal or truncated step's next frame has its own slot, and the
 * next episode starts a new one). Slots are numbered by a logical counter that only grows; chunks
 * are allocated when the counter enters them and freed whole once every step that refers into them
 * has been overwritten by the ring, so memory follows what replay holds, one chunk of slack.
 *
 * Batches come out as [B, H, W, C] uint8 per camera: the layout frames arrive in (CameraFrame.data),
 * so a row is one copy, a quarter of a float batch's bytes, and exactly the FrameStore that
 * src/nn/image-batch.ts turns into float [B, C, H, W] with random shift (DrQ) when a conv encoder
 * draws its batch.
 */
import { createHash } from 'node:crypto';
import type { CameraFrames, CameraSpec } from '../types.js';
import { ResrtError } from '../util/errors.js';

/** A camera whose frames replay keeps: H×W×C bytes per frame. */
export interface FrameCamera {
  name: string;
  width: number;
  height: number;
  channels: number;
}

/**
 * The frames of a pack of steps, each stored once (StepBatch.frames). Steps take frames in order:
 * a step that does not continue the previous one takes a new frame for its obs, then every step
 * takes a new frame for its next obs.
 */
export interface StepFrames {
  /** Per camera (in the replay's camera order): `count` frames back to back, H×W×C each. */
  data: Uint8Array[];
  count: number;
  /** Per step: 1 when its obs frames are the previous step's next frames (same pack or the last one). */
  continues: Uint8Array;
}

/** Frames of a sampled batch: per camera [B, H, W, C] uint8, row k = the batch's row k. */
export interface SampledFrames {
  obs: Uint8Array[];
  next: Uint8Array[];
}

/** The step shape frames are packed from (StepRecord's frame fields; Transition's names). */
export interface FramedStep {
  frames?: CameraFrames;
  nextFrames?: CameraFrames;
}

export const DEFAULT_CHUNK_SLOTS = 512;

export function frameBytes(c: FrameCamera): number {
  return c.width * c.height * c.channels;
}

/** The colour cameras of an environment, as replay keeps them (depth is not kept). */
export function frameCamerasOf(specs: readonly CameraSpec[]): FrameCamera[] {
  return specs.map((s) => ({ name: s.name, width: s.width, height: s.height, channels: s.channels }));
}

export function emptySampledFrames(size: number, cameras: readonly FrameCamera[]): SampledFrames {
  return {
    obs: cameras.map((c) => new Uint8Array(size * frameBytes(c))),
    next: cameras.map((c) => new Uint8Array(size * frameBytes(c))),
  };
}

export function sameCameras(a: readonly FrameCamera[], b: readonly FrameCamera[]): boolean {
  return JSON.stringify(a.map(cameraKey)) === JSON.stringify(b.map(cameraKey));
}

function cameraKey(c: FrameCamera): string {
  return `${c.name} ${c.width}x${c.height}x${c.channels}`;
}

export function describeCameras(cameras: readonly FrameCamera[]): string {
  return cameras.map(cameraKey).join(', ') || 'none';
}

/**
 * The acting side: turns steps into StepFrames, recognising a step whose obs frames are the
 * previous step's next frames by identity (the trainer hands the env's frames on by reference).
 * It remembers the last step across packs, since an episode travels in several packs.
 */
export class FramePacker {
  private lastNext: CameraFrames | null = null;

  constructor(readonly cameras: readonly FrameCamera[]) {}

  pack(steps: readonly FramedStep[]): StepFrames {
    const continues = new Uint8Array(steps.length);
    const picked: CameraFrames[] = [];
    steps.forEach((s, i) => {
      if (!s.frames || !s.nextFrames) {
        throw new ResrtError(
          `replay keeps camera frames (${describeCameras(this.cameras)}), and a step came without ${s.frames ? 'next-observation' : 'observation'} frames`,
          'every observation of a run with replayFrames must carry its frames: use an environment whose cameras render at every reset and step, or set replayFrames false',
        );
      }
      if (s.frames === this.lastNext) continues[i] = 1;
      else picked.push(s.frames);
      picked.push(s.nextFrames);
      this.lastNext = s.nextFrames;
    });
    const data = this.cameras.map((c) => {
      const bytes = frameBytes(c);
      const out = new Uint8Array(picked.length * bytes);
      picked.forEach((frames, k) => out.set(this.frameData(frames, c), k * bytes));
      return out;
    });
    return { data, count: picked.length, continues };
  }

  /** The next pack starts a new chain (an episode ended outside the packer's sight). */
  breakChain(): void {
    this.lastNext = null;
  }

  private frameData(frames: CameraFrames, c: FrameCamera): Uint8Array {
    const f = frames[c.name];
    if (!f) {
      throw new ResrtError(
        `replay keeps frames of camera '${c.name}', and a step has none (it has: ${Object.keys(frames).join(', ') || 'none'})`,
        'the environment must render every camera it declares at every step; check its cameras',
      );
    }
    if (
      f.width !== c.width ||
      f.height !== c.height ||
      f.channels !== c.channels ||
      f.data.length !== frameBytes(c)
    ) {
      throw new ResrtError(
        `camera '${c.name}' gave a ${f.width}x${f.height}x${f.channels} frame of ${f.data.length} bytes, replay keeps ${c.width}x${c.height}x${c.channels}`,
        'a camera must keep the size it declared for the whole run; fix its configured size',
      );
    }
    return f.data;
  }
}

/** The saved form of a frame store's index (the frames themselves are chunk files). */
interface SavedIndex {
  cameras: FrameCamera[];
  chunkSlots: number;
  framesAdded: number;
  lastNext: number;
  /** Chunks held, each with its filled slots and, per camera, the SHA-256 of its bytes. */
  chunks: { index: number; filled: number; sha256: string[] }[];
  /** Logical steps [firstStep, firstStep + steps) whose refs follow. */
  firstStep: number;
  steps: number;
}

/** One chunk's bytes for one camera, as a checkpoint writes it. */
export interface FrameChunkFile {
  chunk: number;
  camera: number;
  bytes: Uint8Array;
  sha256: string;
}

/** The frame side of a ReplayBuffer: slots in chunks, and per step slot its two frame refs. */
export class ReplayFrames {
  readonly bytesPerFrame: number[];
  /** Per step slot (logical step % stepCapacity): the logical frame slot of its obs / next obs. */
  private readonly obsRef: Float64Array;
  private readonly nextRef: Float64Array;
  /** Logical frame slots ever taken. */
  framesAdded = 0;
  /** The slot of the newest step's next frame, which a continuing step shares; -1 for none. */
  private lastNext = -1;
  private readonly chunks = new Map<number, Uint8Array[]>();
  /** The lowest chunk that may still be held. */
  private firstChunk = 0;
  /** SHA-256 per camera of a chunk's filled part, valid while `filled` is unchanged. */
  private readonly hashes = new Map<number, { filled: number; sha256: string[] }>();

  constructor(
    readonly cameras: readonly FrameCamera[],
    readonly stepCapacity: number,
    readonly chunkSlots = DEFAULT_CHUNK_SLOTS,
  ) {
    if (cameras.length === 0) throw new Error('ReplayFrames needs at least one camera');
    if (!Number.isInteger(chunkSlots) || chunkSlots <= 0) throw new Error(`chunkSlots ${chunkSlots}`);
    this.bytesPerFrame = cameras.map(frameBytes);
    this.obsRef = new Float64Array(stepCapacity);
    this.nextRef = new Float64Array(stepCapacity);
  }

  /** Chunks allocated now. */
  get chunksHeld(): number {
    return this.chunks.size;
  }

  /** Frame bytes allocated now (whole chunks). */
  get bytesHeld(): number {
    const perChunk = this.bytesPerFrame.reduce((s, b) => s + b, 0) * this.chunkSlots;
    return this.chunks.size * perChunk;
  }

  /**
   * Stores the frames of logical steps [firstStep, firstStep + count) and frees chunks no step
   * still held refers to; `oldestStep` is the oldest logical step the replay holds afterwards.
   */
  addSteps(firstStep: number, count: number, frames: StepFrames | undefined, oldestStep: number): void {
    if (!frames) {
      throw new ResrtError(
        `replay keeps camera frames (${describeCameras(this.cameras)}), and ${count} steps came without them`,
        'send the steps with their frames (packSteps with a FramePacker), or build the replay without cameras',
      );
    }
    let taken = 0;
    if (frames.continues.length !== count || frames.data.length !== this.cameras.length)
      this.badPack(
        `${frames.continues.length} step flags and ${frames.data.length} cameras for ${count} steps`,
      );
    frames.data.forEach((d, c) => {
      if (d.length !== frames.count * this.bytesPerFrame[c])
        this.badPack(`camera ${this.cameras[c].name} has ${d.length} bytes for ${frames.count} frames`);
    });
    const take = (): number => {
      if (taken >= frames.count) this.badPack(`its steps need more than its ${frames.count} frames`);
      const slot = this.framesAdded++;
      const chunk = this.chunkFor(slot);
      const at = slot % this.chunkSlots;
      frames.data.forEach((d, c) => {
        const b = this.bytesPerFrame[c];
        chunk[c].set(d.subarray(taken * b, (taken + 1) * b), at * b);
      });
      taken++;
      return slot;
    };
    for (let i = 0; i < count; i++) {
      const s = (firstStep + i) % this.stepCapacity;
      if (frames.continues[i]) {
        if (this.lastNext < 0)
          this.badPack('a step continues an episode whose frames this replay does not hold');
        this.obsRef[s] = this.lastNext;
      } else this.obsRef[s] = take();
      this.nextRef[s] = this.lastNext = take();
    }
    if (taken !== frames.count) this.badPack(`${frames.count} frames, its steps use ${taken}`);
    if (count > 0) this.freeBefore(oldestStep);
  }

  /** The next step cannot continue the newest one (an episode was cut, e.g. by a resume). */
  breakChain(): void {
    this.lastNext = -1;
  }

  /** Copies the frames of step `obsStep`'s obs and step `nextStep`'s next obs into row `row`. */
  writeSample(obsStep: number, nextStep: number, out: SampledFrames, row: number): void {
    const o = this.obsRef[obsStep % this.stepCapacity];
    const n = this.nextRef[nextStep % this.stepCapacity];
    for (let c = 0; c < this.cameras.length; c++) {
      const b = this.bytesPerFrame[c];
      out.obs[c].set(this.frame(o, c), row * b);
      out.next[c].set(this.frame(n, c), row * b);
    }
  }

  /** A view of logical step `step`'s obs (or next-obs) frame of camera `camera` (an index). */
  stepFrame(step: number, which: 'obs' | 'next', camera: number): Uint8Array {
    const s = step % this.stepCapacity;
    return this.frame(which === 'obs' ? this.obsRef[s] : this.nextRef[s], camera);
  }

  /** The logical frame slot a step refers to (for tests and tools that check sharing). */
  stepSlot(step: number, which: 'obs' | 'next'): number {
    const s = step % this.stepCapacity;
    return which === 'obs' ? this.obsRef[s] : this.nextRef[s];
  }

  private frame(slot: number, camera: number): Uint8Array {
    const chunk = this.chunks.get(Math.floor(slot / this.chunkSlots));
    if (!chunk || slot >= this.framesAdded) throw new Error(`replay frames: slot ${slot} is not held`);
    const b = this.bytesPerFrame[camera];
    const at = (slot % this.chunkSlots) * b;
    return chunk[camera].subarray(at, at + b);
  }

  private chunkFor(slot: number): Uint8Array[] {
    const index = Math.floor(slot / this.chunkSlots);
    let chunk = this.chunks.get(index);
    if (!chunk) {
      chunk = this.bytesPerFrame.map((b) => new Uint8Array(b * this.chunkSlots));
      this.chunks.set(index, chunk);
    }
    return chunk;
  }

  /** Frees every chunk wholly below the oldest held step's obs frame (the lowest slot in use). */
  private freeBefore(oldestStep: number): void {
    const lowest = this.obsRef[oldestStep % this.stepCapacity];
    const keepFrom = Math.floor(lowest / this.chunkSlots);
    for (; this.firstChunk < keepFrom; this.firstChunk++) {
      this.chunks.delete(this.firstChunk);
      this.hashes.delete(this.firstChunk);
    }
  }

  private badPack(what: string): never {
    throw new ResrtError(
      `replay frames: a pack of steps does not fit its frames (${what})`,
      'pack steps and frames together with packSteps and one FramePacker per stream of steps',
    );
  }

  // -- persistence --------------------------------------------------------------------------

  /** Each held chunk's filled bytes per camera with their SHA-256 (cached for unchanged chunks). */
  chunkFiles(): FrameChunkFile[] {
    const out: FrameChunkFile[] = [];
    for (const [index, data] of [...this.chunks].sort((a, b) => a[0] - b[0])) {
      const filled = Math.min(this.chunkSlots, this.framesAdded - index * this.chunkSlots);
      const bytes = data.map((d, c) => d.subarray(0, filled * this.bytesPerFrame[c]));
      let h = this.hashes.get(index);
      if (!h || h.filled !== filled) {
        h = { filled, sha256: bytes.map((b) => createHash('sha256').update(b).digest('hex')) };
        this.hashes.set(index, h);
      }
      bytes.forEach((b, c) => out.push({ chunk: index, camera: c, bytes: b, sha256: h.sha256[c] }));
    }
    return out;
  }

  /** The index for logical steps [firstStep, firstStep + steps): [u32 length][JSON][f64 obs refs][f64 next refs]. */
  serializeIndex(firstStep: number, steps: number): Uint8Array {
    const files = this.chunkFiles();
    const chunks = [...new Set(files.map((f) => f.chunk))].map((index) => ({
      index,
      filled: Math.min(this.chunkSlots, this.framesAdded - index * this.chunkSlots),
      sha256: files.filter((f) => f.chunk === index).map((f) => f.sha256),
    }));
    const saved: SavedIndex = {
      cameras: [...this.cameras],
      chunkSlots: this.chunkSlots,
      framesAdded: this.framesAdded,
      lastNext: this.lastNext,
      chunks,
      firstStep,
      steps,
    };
    const json = Buffer.from(JSON.stringify(saved));
    const pad = (8 - ((4 + json.byteLength) % 8)) % 8;
    const refs = new Float64Array(2 * steps);
    for (let i = 0; i < steps; i++) {
      const s = (firstStep + i) % this.stepCapacity;
      refs[i] = this.obsRef[s];
      refs[steps + i] = this.nextRef[s];
    }
    const out = new Uint8Array(4 + json.byteLength + pad + refs.byteLength);
    new DataView(out.buffer).setUint32(0, json.byteLength, true);
    out.set(json, 4);
    out.set(new Uint8Array(refs.buffer), 4 + json.byteLength + pad);
    return out;
  }

  /** The chunk files an index names (chunk, camera, SHA-256, bytes), for the checkpoint to fetch. */
  static indexedChunks(
    index: Uint8Array,
    source: string,
  ): { chunk: number; camera: number; sha256: string; bytes: number }[] {
    const saved = readIndex(index, source).saved;
    return saved.chunks.flatMap((ch) =>
      ch.sha256.map((sha256, camera) => ({
        chunk: ch.index,
        camera,
        sha256,
        bytes: ch.filled * frameBytes(saved.cameras[camera]),
      })),
    );
  }

  /**
   * A frame store rebuilt from its index and chunk bytes (already checked against their SHA-256);
   * `chunk(index, camera)` returns them. Refs land in a ring of `stepCapacity` step slots.
   */
  static deserialize(
    index: Uint8Array,
    chunk: (index: number, camera: number) => Uint8Array,
    stepCapacity: number,
    source: string,
  ): ReplayFrames {
    const { saved, refs } = readIndex(index, source);
    const f = new ReplayFrames(saved.cameras, stepCapacity, saved.chunkSlots);
    f.framesAdded = saved.framesAdded;
    f.lastNext = saved.lastNext;
    for (const ch of saved.chunks) {
      const data = saved.cameras.map((_, c) => {
        const bytes = chunk(ch.index, c);
        const full = f.chunkSlots * f.bytesPerFrame[c];
        if (bytes.length !== ch.filled * f.bytesPerFrame[c])
          corruptIndex(source, `chunk ${ch.index} has ${bytes.length} bytes`);
        if (bytes.length === full) return bytes;
        // A partly filled chunk goes on filling: it gets its full size.
        const whole = new Uint8Array(full);
        whole.set(bytes);
        return whole;
      });
      f.chunks.set(ch.index, data);
      f.hashes.set(ch.index, { filled: ch.filled, sha256: ch.sha256 });
    }
    f.firstChunk = saved.chunks.length ? saved.chunks[0].index : Math.floor(saved.framesAdded / f.chunkSlots);
    for (let i = 0; i < saved.steps; i++) {
      const s = (saved.firstStep + i) % stepCapacity;
      f.obsRef[s] = refs[i];
      f.nextRef[s] = refs[saved.steps + i];
      if (
        ![refs[i], refs[saved.steps + i]].every(
          (r) => f.chunks.has(Math.floor(r / f.chunkSlots)) && r < f.framesAdded,
        )
      )
        corruptIndex(source, `step ${saved.firstStep + i} refers to a frame no chunk holds`);
    }
    return f;
  }

  /**
   * Takes over `from`'s frames (sharing its chunks: `from` is dropped afterwards) for logical steps
   * [firstStep, endStep), which land in this store's ring; used when a resumed replay restores a
   * saved one into a buffer of another capacity.
   */
  adopt(from: ReplayFrames, firstStep: number, endStep: number): void {
    if (!sameCameras(from.cameras, this.cameras)) {
      throw new ResrtError(
        `the saved replay kept frames of ${describeCameras(from.cameras)}, this run keeps ${describeCameras(this.cameras)}`,
        'resume with the cameras (and sizes) the run started with, or use a new outDir',
      );
    }
    this.chunks.clear();
    this.hashes.clear();
    // Slots keep their logical numbers, so chunks keep theirs only if the chunk size agrees.
    if (from.chunkSlots !== this.chunkSlots) throw new Error('ReplayFrames.adopt: chunk sizes differ');
    for (const [k, v] of from.chunks) this.chunks.set(k, v);
    for (const [k, v] of from.hashes) this.hashes.set(k, v);
    this.framesAdded = from.framesAdded;
    this.lastNext = from.lastNext;
    this.firstChunk = from.firstChunk;
    for (let l = firstStep; l < endStep; l++) {
      this.obsRef[l % this.stepCapacity] = from.obsRef[l % from.stepCapacity];
      this.nextRef[l % this.stepCapacity] = from.nextRef[l % from.stepCapacity];
    }
    if (endStep > firstStep) this.freeBefore(firstStep);
  }
}

function corruptIndex(source: string, what: string): never {
  throw new ResrtError(
    `replay frames in ${source} are corrupt (${what})`,
    'delete the checkpoint folder to start over, or restore it from a backup',
  );
}

function readIndex(bytes: Uint8Array, source: string): { saved: SavedIndex; refs: Float64Array } {
  if (bytes.byteLength < 4) corruptIndex(source, 'too short');
  const len = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
  if (4 + len > bytes.byteLength) corruptIndex(source, 'index header runs past the end');
  let saved: SavedIndex;
  try {
    saved = JSON.parse(Buffer.from(bytes.subarray(4, 4 + len)).toString('utf8')) as SavedIndex;
  } catch {
    return corruptIndex(source, 'index header is not JSON');
  }
  const pad = (8 - ((4 + len) % 8)) % 8;
  const start = 4 + len + pad;
  if (bytes.byteLength - start !== 16 * saved.steps) corruptIndex(source, 'index length');
  const refs = new Float64Array(bytes.slice(start).buffer);
  return { saved, refs };
}
