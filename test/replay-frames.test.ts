/**
 * Replay with camera frames (src/residual/replay-frames.ts): each frame stored once (a step's next
 * frame is the next step's obs frame), chunks freed as the ring overwrites their steps, batches
 * equal to a naive reference that keeps two copies per step, and checkpoints whose frame files are
 * content-named, verified, not rewritten when unchanged, and survive SIGKILL mid-write.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { readCheckpoint, writeCheckpoint } from '../src/residual/checkpoint.js';
import { DualReplay, ReplayBuffer, emptySample, packSteps, type StepRecord } from '../src/residual/replay.js';
import { FramePacker, ReplayFrames, type FrameCamera } from '../src/residual/replay-frames.js';
import { ResrtError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';
import { untrainedLearnerState } from './fixtures/learner-state.js';
import {
  A,
  O,
  episodeSteps,
  frameBytesOf,
  framesOf,
  writerCameras,
  writerCapacity,
} from './replay-frames-fixtures.js';
import { tempDir } from './temp-dirs.js';

const cameras: FrameCamera[] = [
  { name: 'top', width: 6, height: 5, channels: 3 },
  { name: 'wrist', width: 4, height: 4, channels: 1 },
];
const dir = tempDir('resrt-replayframes-');

/** A replay keeping `cameras`, with small chunks so that wrapping frees some. */
function framed(capacity: number, chunkSlots = 8): ReplayBuffer {
  const buf = new ReplayBuffer(capacity, O, A, cameras);
  buf.frames = new ReplayFrames(cameras, capacity, chunkSlots);
  return buf;
}

/** Adds steps in packs of `pack` through one packer, as the trainer sends them. */
function addInPacks(buf: ReplayBuffer, steps: StepRecord[], packer: FramePacker, pack = 5): void {
  for (let i = 0; i < steps.length; i += pack)
    buf.addBatch(packSteps(steps.slice(i, i + pack), O, A, packer));
}

/** Episode lengths 1..12 from a seed, summing to at least `total` steps. */
function lengths(seed: number, total: number): number[] {
  const rng = new Rng(seed);
  const out: number[] = [];
  for (let n = 0; n < total;) {
    const T = 1 + rng.int(12);
    out.push(T);
    n += T;
  }
  return out;
}

const learnerState = untrainedLearnerState();

describe('ReplayFrames', () => {
  it('stores each frame once: an episode of T steps takes T + 1 slots, shared across packs', () => {
    const buf = framed(100);
    const { steps, serials } = episodeSteps([7, 1, 12], cameras);
    addInPacks(buf, steps, new FramePacker(cameras), 3);
    const f = buf.frames!;
    expect(f.framesAdded).toBe(7 + 1 + 1 + 1 + 12 + 1);
    for (let l = 0; l < steps.length; l++) {
      cameras.forEach((c, k) => {
        expect(Buffer.from(f.stepFrame(l, 'obs', k)).equals(frameBytesOf(serials[l].obs, c, k))).toBe(true);
        expect(Buffer.from(f.stepFrame(l, 'next', k)).equals(frameBytesOf(serials[l].next, c, k))).toBe(true);
      });
      // Within an episode the next step's obs frame is this step's next frame: the same slot.
      if (l + 1 < steps.length && serials[l + 1].obs === serials[l].next)
        expect(f.stepSlot(l + 1, 'obs')).toBe(f.stepSlot(l, 'next'));
      else if (l + 1 < steps.length) expect(f.stepSlot(l + 1, 'obs')).toBe(f.stepSlot(l, 'next') + 1);
    }
  });

  it('a replay built without cameras keeps no frames and samples as before', () => {
    const plain = new ReplayBuffer(50, O, A);
    const { steps } = episodeSteps([10, 10], cameras);
    plain.addBatch(packSteps(steps, O, A));
    expect(plain.frames).toBeNull();
    const s = new DualReplay(plain, null, 0.5).sample(8, 3, 0.9, new Rng(2));
    expect(s.frames).toBeUndefined();
    // Frames sent to a replay that keeps none are refused, not dropped silently.
    expect(() => plain.addBatch(packSteps(steps, O, A, new FramePacker(cameras)))).toThrow(ResrtError);
  });

  it('wrapping the ring frees whole chunks; what is held stays equal to a naive reference', () => {
    const capacity = 40;
    const chunkSlots = 8;
    const buf = framed(capacity, chunkSlots);
    const packer = new FramePacker(cameras);
    const { steps, serials } = episodeSteps(lengths(5, 1000), cameras);
    let maxChunks = 0;
    for (let i = 0; i < steps.length; i += 6) {
      addInPacks(buf, steps.slice(i, i + 6), packer, 6);
      const f = buf.frames!;
      const lowest = f.stepSlot(buf.added - buf.size, 'obs');
      const firstHeld = Math.floor(lowest / chunkSlots);
      const lastHeld = Math.floor((f.framesAdded - 1) / chunkSlots);
      // Exactly the chunks from the oldest held step's obs frame to the newest frame are allocated.
      expect(f.chunksHeld).toBe(lastHeld - firstHeld + 1);
      maxChunks = Math.max(maxChunks, f.chunksHeld);
    }
    // 40 steps need at most 80 frames (one-step episodes): 10 chunks, plus one partly used at each end.
    expect(maxChunks).toBeLessThanOrEqual(12);
    expect(buf.frames!.framesAdded).toBeGreaterThan(1000);

    // n-step batches against the reference (two copies of every frame per step).
    const reference = (l: number, nStep: number): { obs: number; next: number } => {
      let last = l;
      for (let k = 0; k < nStep && l + k < buf.added; k++) {
        last = l + k;
        if (steps[last].terminated || steps[last].truncated) break;
      }
      return { obs: serials[l].obs, next: serials[last].next };
    };
    const B = 64;
    const out = emptySample(B, O, A, cameras);
    const rngA = new Rng(9);
    const rngB = new Rng(9);
    new DualReplay(buf, null, 0.5).sample(B, 3, 0.9, rngA, out);
    for (let row = 0; row < B; row++) {
      const l = buf.randomIndex(rngB);
      const want = reference(l, 3);
      // The state columns name the step too (obs[0] is its obs frame's serial).
      expect(out.obs[row * O]).toBe(want.obs);
      cameras.forEach((c, k) => {
        const n = c.width * c.height * c.channels;
        const row0 = out.frames!.obs[k].subarray(row * n, (row + 1) * n);
        const row1 = out.frames!.next[k].subarray(row * n, (row + 1) * n);
        expect(Buffer.from(row0).equals(frameBytesOf(want.obs, c, k))).toBe(true);
        expect(Buffer.from(row1).equals(frameBytesOf(want.next, c, k))).toBe(true);
      });
    }
  });

  it('refuses steps without frames, frames of another size, and a continuation it does not hold', () => {
    const buf = framed(20);
    const { steps } = episodeSteps([4], cameras);
    expect(() => buf.addBatch(packSteps(steps, O, A))).toThrow(/came without them/);
    const packer = new FramePacker(cameras);
    const bad = { ...steps[0], nextFrames: framesOf(99, [{ ...cameras[0], width: 7 }, cameras[1]]) };
    expect(() => packer.pack([bad])).toThrow(/7x5x3 frame .* replay keeps 6x5x3/);
    expect(() => packer.pack([{ ...steps[0], frames: undefined }])).toThrow(ResrtError);
    // A pack whose first step continues a chain this replay never saw (its packer did).
    const p = new FramePacker(cameras);
    p.pack(steps.slice(0, 2));
    expect(() => buf.addBatch(packSteps(steps.slice(2), O, A, p))).toThrow(/does not hold/);
    // Demonstrations without frames beside an online replay with frames cannot be mixed in batches.
    const demos = new ReplayBuffer(10, O, A);
    demos.addBatch(packSteps(steps, O, A));
    expect(() => new DualReplay(buf, demos, 0.5)).toThrow(/frames must be kept in both/);
  });
});

describe('replay frames in checkpoints', () => {
  it('round-trips exactly, rewrites no unchanged chunk, drops freed ones, and names corruption', () => {
    const out = join(dir, 'roundtrip');
    const capacity = 60;
    const buf = framed(capacity);
    const packer = new FramePacker(cameras);
    const first = episodeSteps(lengths(11, 150), cameras);
    addInPacks(buf, first.steps, packer);
    const demos = framed(30);
    addInPacks(demos, episodeSteps([15, 15], cameras, 50_000).steps, new FramePacker(cameras));
    const write = (): void => {
      writeCheckpoint(out, { learner: learnerState, online: buf, demos, trainer: {}, meta: {} });
    };
    write();
    const framesDir = join(out, 'frames');
    const before = new Map(readdirSync(framesDir).map((f) => [f, statSync(join(framesDir, f)).ino]));

    const loaded = readCheckpoint(out)!;
    const sampleOf = (r: DualReplay): ReturnType<DualReplay['sample']> =>
      r.sample(32, 3, 0.9, new Rng(4), emptySample(32, O, A, cameras));
    const want = sampleOf(new DualReplay(buf, demos, 0.5));
    const got = sampleOf(new DualReplay(loaded.online, loaded.demos, 0.5));
    expect(got).toEqual(want);
    // Restored into a larger ring (a resume with a bigger bufferSize), batches stay the same.
    const bigger = new ReplayBuffer(capacity * 3, O, A, cameras);
    bigger.frames = new ReplayFrames(cameras, capacity * 3, 8);
    bigger.restoreFrom(loaded.online);
    const demosBack = framed(30);
    demosBack.restoreFrom(loaded.demos!);
    // It holds the saved steps only, though its ring would reach further back.
    expect(bigger.size).toBe(buf.size);
    for (let l = bigger.added - bigger.size; l < bigger.added; l++)
      for (const which of ['obs', 'next'] as const)
        expect(
          Buffer.from(bigger.frames!.stepFrame(l, which, 0)).equals(buf.frames!.stepFrame(l, which, 0)),
        ).toBe(true);

    // More steps: the ring drops old chunks, and chunks that did not change are not written again.
    addInPacks(buf, episodeSteps([9, 9, 9], cameras, first.nextSerial).steps, packer);
    write();
    const after = new Map(readdirSync(framesDir).map((f) => [f, statSync(join(framesDir, f)).ino]));
    const kept = [...after.keys()].filter((f) => before.has(f));
    expect(kept.length).toBeGreaterThan(0);
    for (const f of kept) expect(after.get(f)).toBe(before.get(f));
    const manifest = JSON.parse(readFileSync(join(out, 'checkpoint.json'), 'utf8')) as {
      files: Record<string, { path: string }>;
    };
    const listed = new Set(Object.values(manifest.files).map((f) => f.path));
    for (const f of after.keys()) expect(listed.has(join('frames', f))).toBe(true);
    expect([...before.keys()].some((f) => !after.has(f))).toBe(true);

    // One flipped byte in a frame file is a ResrtError that says corrupt.
    const victim = join(framesDir, [...after.keys()][0]);
    const bytes = readFileSync(victim);
    bytes[17] ^= 0x40;
    writeFileSync(victim, bytes);
    expect(() => readCheckpoint(out)).toThrow(/corrupt/);
    expect(() => readCheckpoint(out)).toThrow(ResrtError);
  });

  it('a checkpoint writer killed with SIGKILL, mid-write or not, always leaves the last complete state', async () => {
    const out = join(dir, 'kills');
    const repo = resolve(import.meta.dirname, '..');
    const rng = new Rng(77);
    let midWrite = 0;
    const kills = 4;
    for (let k = 0; k <= kills; k++) {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', join(repo, 'test/replay-frames-writer.ts'), out],
        { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      const lines: string[] = [];
      // Kill right as the third write of this run begins (or as it ends, on the last round).
      const target = k === kills ? 'WROTE' : 'WRITING';
      await new Promise<void>((resolveKill, reject) => {
        createInterface({ input: child.stdout }).on('line', (l) => {
          lines.push(l);
          if (lines.filter((x) => x.startsWith(target)).length === 3)
            setTimeout(() => resolveKill(), rng.int(4));
        });
        void exited.then(() => reject(new Error(`writer exited: ${stderr}`)));
      });
      child.kill('SIGKILL');
      await exited;
      if (lines[lines.length - 1] === 'WRITING') midWrite++;

      // Whatever moment it died at, the checkpoint loads and is whole: every held step's frames
      // are the bytes of the slots it refers to, and its obs/next frames follow the episode chain.
      const ck = readCheckpoint(out)!;
      const online = ck.online;
      expect((ck.trainer as { added: number }).added).toBe(online.added);
      expect(online.size).toBe(Math.min(online.added, writerCapacity));
      const f = online.frames!;
      for (let l = online.added - online.size; l < online.added; l++) {
        const obs = f.stepSlot(l, 'obs');
        expect(f.stepSlot(l, 'next')).toBe(obs + 1);
        expect(Buffer.from(f.stepFrame(l, 'obs', 0)).equals(frameBytesOf(obs, writerCameras[0], 0))).toBe(
          true,
        );
        expect(
          Buffer.from(f.stepFrame(l, 'next', 0)).equals(frameBytesOf(obs + 1, writerCameras[0], 0)),
        ).toBe(true);
      }
      expect(existsSync(join(out, 'frames'))).toBe(true);
    }
    // Runs resumed from the checkpoint each time and went past one ring of 2000 steps.
    expect(readCheckpoint(out)!.online.added).toBeGreaterThan(writerCapacity);
    expect(midWrite).toBeGreaterThanOrEqual(1);
  }, 120_000);
});
