/**
 * Replay with camera frames, measured (docs/learner.md "Replay with frames"): a replay of --steps
 * transitions (push-cam's 12 state values and 3 actions) with one --size × --size RGB camera,
 * filled in packs of 8 through packSteps and a FramePacker as the trainer sends them, episodes of
 * --episode steps. The frames are real: push-cam's `top` camera rendered by MuJoCo over a few
 * episodes of random actions, reused round-robin (the replay copies every frame it keeps).
 * Reports RSS and heap after a forced GC (run with node --expose-gc), bytes per transition, the
 * fill rate and the rate of batches of --batch rows with their frames (n-step 3). --checkpoint
 * also writes the replay as a checkpoint (frame chunk files) twice and reads it back.
 *
 * usage: node --expose-gc --import tsx bench/replay-memory.ts [--json] [--steps 100000]
 *        [--episode 150] [--size 84] [--batch 256] [--checkpoint]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatTable } from '../src/cli/common.js';
import { readCheckpoint, writeCheckpoint } from '../src/residual/checkpoint.js';
import { DualReplay, ReplayBuffer, emptySample, packSteps, type StepRecord } from '../src/residual/replay.js';
import { FramePacker, frameCamerasOf } from '../src/residual/replay-frames.js';
import { MujocoEnv } from '../src/sim/env.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import type { CameraFrames } from '../src/types.js';
import { Rng } from '../src/util/rng.js';
import { untrainedLearnerState } from '../test/fixtures/learner-state.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const json = process.argv.includes('--json');
const withCheckpoint = process.argv.includes('--checkpoint');
const steps = arg('--steps', 100_000);
const episodeSteps = arg('--episode', 150);
const size = arg('--size', 84);
const batch = arg('--batch', 256);
if (![steps, episodeSteps, size, batch].every((v) => Number.isInteger(v) && v > 0)) {
  console.error(
    'usage: node --expose-gc --import tsx bench/replay-memory.ts [--json] [--steps N] [--episode T] [--size S] [--batch B] [--checkpoint]',
  );
  process.exit(2);
}
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error('run with node --expose-gc (RSS and heap are read after a forced GC)');
  process.exit(2);
}

const MiB = 2 ** 20;
const memory = (): { rss: number; heapUsed: number; arrayBuffers: number } => {
  gc();
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers };
};

// -- real frames: push-cam's top camera over a few episodes of random actions -------------------
const env = await MujocoEnv.create(pushCamTask, { cameras: { width: size, height: size } });
const cameras = frameCamerasOf(env.cameras);
const O = env.observationSpace.dim;
const A = env.actionSpace.dim;
const pool: CameraFrames[] = [];
const rng = new Rng(1);
for (let ep = 0; pool.length < 300; ep++) {
  pool.push(env.reset({ seed: ep }).frames!);
  for (let t = 0; t < 60; t++) {
    const action = Float32Array.from({ length: A }, () => rng.uniform() * 2 - 1);
    const step = env.step(action);
    pool.push(step.frames!);
    if (step.terminated || step.truncated) break;
  }
}
env.close();
// Each observation gets its own CameraFrames (as an env gives), sharing a pool frame's pixels.
const frameAt = (k: number): CameraFrames => ({ ...pool[k % pool.length] });

const before = memory();
const replay = new ReplayBuffer(steps, O, A, cameras);
const packer = new FramePacker(cameras);
const zerosO = new Float32Array(O);
const zerosA = new Float32Array(A);
let serial = 0;
const fillStart = performance.now();
let pending: StepRecord[] = [];
for (let added = 0; added < steps;) {
  let frames = frameAt(serial++);
  for (let t = 0; t < episodeSteps && added < steps; t++, added++) {
    const nextFrames = frameAt(serial++);
    const last = t === episodeSteps - 1;
    pending.push({
      obs: zerosO,
      baseAction: zerosA,
      action: zerosA,
      reward: 0,
      nextObs: zerosO,
      nextBaseAction: zerosA,
      terminated: false,
      truncated: last,
      frames,
      nextFrames,
    });
    frames = nextFrames;
    if (pending.length === 8 || last) {
      replay.addBatch(packSteps(pending, O, A, packer));
      pending = [];
    }
  }
}
if (pending.length) replay.addBatch(packSteps(pending, O, A, packer));
const fillSeconds = (performance.now() - fillStart) / 1000;
const after = memory();

const dual = new DualReplay(replay, null, 0.5);
const out = emptySample(batch, O, A, cameras);
const sampleRng = new Rng(2);
let batches = 0;
const sampleStart = performance.now();
while (performance.now() - sampleStart < 3000) {
  dual.sample(batch, 3, 0.99, sampleRng, out);
  batches++;
}
const sampleSeconds = (performance.now() - sampleStart) / 1000;

let checkpoint: { firstWriteS: number; secondWriteS: number; readS: number } | null = null;
if (withCheckpoint) {
  const dir = mkdtempSync(join(tmpdir(), 'resrt-bench-replayframes-'));
  try {
    const contents = {
      learner: untrainedLearnerState(),
      online: replay,
      demos: null,
      trainer: {},
      meta: {},
    };
    const t0 = performance.now();
    writeCheckpoint(dir, contents);
    const t1 = performance.now();
    // Unchanged chunks are not written again: only the index and state.
    writeCheckpoint(dir, contents);
    const t2 = performance.now();
    readCheckpoint(dir);
    const t3 = performance.now();
    checkpoint = { firstWriteS: (t1 - t0) / 1000, secondWriteS: (t2 - t1) / 1000, readS: (t3 - t2) / 1000 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const result = {
  steps,
  episodeSteps,
  camera: `${cameras[0].name} ${size}x${size}x3`,
  framesKept: replay.frames!.framesAdded,
  frameBytesHeld: replay.frames!.bytesHeld,
  rssBeforeMiB: before.rss / MiB,
  rssAfterMiB: after.rss / MiB,
  heapUsedAfterMiB: after.heapUsed / MiB,
  arrayBuffersAfterMiB: after.arrayBuffers / MiB,
  bytesPerTransition: (after.rss - before.rss) / steps,
  fillStepsPerSec: steps / fillSeconds,
  sampleBatchesPerSec: batches / sampleSeconds,
  sampleRowsPerSec: (batches * batch) / sampleSeconds,
  checkpoint,
};

if (json) console.log(JSON.stringify(result));
else {
  console.log(
    `replay of ${steps} transitions, one ${result.camera} camera, episodes of ${episodeSteps} steps (${result.framesKept} frames kept)`,
  );
  console.log(
    formatTable(
      ['measure', 'value'],
      [
        ['RSS before the replay (MiB)', result.rssBeforeMiB.toFixed(0)],
        ['RSS with the replay full (MiB)', result.rssAfterMiB.toFixed(0)],
        ['V8 heap used (MiB)', result.heapUsedAfterMiB.toFixed(1)],
        ['array buffers (MiB)', result.arrayBuffersAfterMiB.toFixed(0)],
        ['frame chunks held (MiB)', (result.frameBytesHeld / MiB).toFixed(0)],
        ['RSS per transition (bytes)', result.bytesPerTransition.toFixed(0)],
        ['fill (transitions/s)', result.fillStepsPerSec.toFixed(0)],
        [`sample (batches of ${batch}/s, frames included)`, result.sampleBatchesPerSec.toFixed(1)],
        ...(checkpoint
          ? [
              ['first checkpoint write (s)', checkpoint.firstWriteS.toFixed(2)],
              ['second checkpoint write, chunks unchanged (s)', checkpoint.secondWriteS.toFixed(2)],
              ['checkpoint read and verify (s)', checkpoint.readS.toFixed(2)],
            ]
          : []),
      ],
    ),
  );
}
