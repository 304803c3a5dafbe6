/**
 * replayFrames through the real trainer on push-cam (real MuJoCo, its `top` camera at 32×32): the
 * frames in replay are the frames the environment rendered, byte for byte; a run killed with
 * SIGKILL in a child process and resumed from its last checkpoint ends exactly as the
 * uninterrupted run (updates, curve, residual.onnx, replay and its frames).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readCheckpoint } from '../src/residual/checkpoint.js';
import type { ReplayBuffer } from '../src/residual/replay.js';
import { trainResidual } from '../src/residual/trainer.js';
import { ResrtError } from '../src/util/errors.js';
import type { CameraFrames, Env, StepResult } from '../src/types.js';
import { collectDemos } from '../src/sim/collect.js';
import { loadEpisodeFrames, readDemos } from '../src/sim/demos.js';
import { cleanExpert } from '../src/sim/expert.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import { framesRunOptions, killFramesRunAtCheckpoint, pushCamSmall } from './replay-frames-train-run.js';
import { tempDir } from './temp-dirs.js';

const dir = tempDir('resrt-replayframes-train-');
const steps = 300;

const hash = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const topHash = (frames: CameraFrames | undefined): string => hash(frames!.top.data);

/** The frames hashes of every step a training env took: [obs frame, next frame], in step order. */
function recordFrames(env: Env, into: { obs: string; next: string }[]): void {
  const reset = env.reset.bind(env);
  const step = env.step.bind(env);
  let current = '';
  env.reset = (o) => {
    const r = reset(o) as Awaited<ReturnType<Env['reset']>>;
    current = topHash(r.frames);
    return r;
  };
  env.step = (a) => {
    const r = step(a) as StepResult;
    const next = topHash(r.frames);
    into.push({ obs: current, next });
    current = next;
    return r;
  };
}

/** The held steps' frame hashes, by logical step. */
function replayFrameHashes(online: ReplayBuffer): Map<number, { obs: string; next: string }> {
  const out = new Map<number, { obs: string; next: string }>();
  for (let l = online.added - online.size; l < online.added; l++)
    out.set(l, {
      obs: hash(online.frames!.stepFrame(l, 'obs', 0)),
      next: hash(online.frames!.stepFrame(l, 'next', 0)),
    });
  return out;
}

describe('replayFrames in the trainer (push-cam)', () => {
  it('keeps the frames the env rendered; a run killed with SIGKILL and resumed ends as the uninterrupted one', async () => {
    // The uninterrupted run, its training env's frames recorded as it renders them.
    const rendered: { obs: string; next: string }[] = [];
    const outA = join(dir, 'a');
    const a = await trainResidual(
      framesRunOptions(outA, steps, (env, index) => {
        if (index === 0) recordFrames(env, rendered);
      }),
    );
    expect(rendered).toHaveLength(steps);
    const ckA = readCheckpoint(outA)!;
    expect(ckA.online.size).toBe(100);
    const framesA = replayFrameHashes(ckA.online);
    for (const [l, h] of framesA) expect(h).toEqual(rendered[l]);
    // Each frame is kept once: within an episode a step's obs frame is the previous step's next.
    const f = ckA.online.frames!;
    expect(f.stepSlot(ckA.online.added - 1, 'obs')).toBe(f.stepSlot(ckA.online.added - 2, 'next'));

    // The same run in a child process, killed once it has checkpointed twice (mid-run, maybe mid-write).
    const outB = join(dir, 'b');
    const killed = await killFramesRunAtCheckpoint(outB, 10 * steps, 2);
    expect(killed.signal, killed.stderr).toBe('SIGKILL');

    const b = await trainResidual({ ...framesRunOptions(outB, steps), resume: true });
    expect(b.resumedFrom).toBeGreaterThanOrEqual(60);
    expect(b.resumedFrom).toBeLessThan(steps);
    expect(b.updates).toBe(a.updates);
    expect(b.curve.map((p) => [p.envSteps, p.successRate])).toEqual(
      a.curve.map((p) => [p.envSteps, p.successRate]),
    );
    expect(readFileSync(join(outB, 'residual.onnx')).equals(readFileSync(join(outA, 'residual.onnx')))).toBe(
      true,
    );
    const ckB = readCheckpoint(outB)!;
    expect(Buffer.from(ckB.online.serialize()).equals(Buffer.from(ckA.online.serialize()))).toBe(true);
    expect(replayFrameHashes(ckB.online)).toEqual(framesA);
    expect(existsSync(join(outB, 'frames'))).toBe(true);
  }, 180_000);

  it('the learner worker thread gets the frames too (their buffers handed over, not copied)', async () => {
    const rendered: { obs: string; next: string }[] = [];
    const out = join(dir, 'worker');
    const r = await trainResidual({
      ...framesRunOptions(out, 90, (env, index) => {
        if (index === 0) recordFrames(env, rendered);
      }),
      worker: true,
    });
    expect(r.envSteps).toBe(90);
    const online = readCheckpoint(out)!.online;
    expect(online.size).toBe(90);
    for (const [l, h] of replayFrameHashes(online)) expect(h).toEqual(rendered[l]);
  }, 90_000);

  it('demonstrations go into their replay with their recorded frames, each once', async () => {
    const demosPath = join(dir, 'demos.jsonl');
    await collectDemos({
      task: pushCamTask,
      episodes: 2,
      out: demosPath,
      seed: 5,
      noise: cleanExpert,
      cameras: pushCamSmall.cameras,
    });
    const demos = readDemos(demosPath);
    const out = join(dir, 'demos');
    await trainResidual({
      ...framesRunOptions(out, 30),
      demos,
      demoFrames: (ep) => loadEpisodeFrames(demos, ep),
    });
    const replay = readCheckpoint(out)!.demos!;
    const lengths = demos.episodes.map((ep) => ep.actions.length);
    expect(replay.size).toBe(lengths[0] + lengths[1]);
    expect(replay.frames!.framesAdded).toBe(lengths[0] + 1 + lengths[1] + 1);
    let l = 0;
    for (const ep of demos.episodes) {
      const recorded = loadEpisodeFrames(demos, ep);
      for (let t = 0; t < ep.actions.length; t++, l++) {
        expect(hash(replay.frames!.stepFrame(l, 'obs', 0))).toBe(topHash(recorded[t]));
        expect(hash(replay.frames!.stepFrame(l, 'next', 0))).toBe(topHash(recorded[t + 1]));
      }
    }
  }, 90_000);

  it('replayFrames on a task without cameras says so', async () => {
    const opts = framesRunOptions(join(dir, 'no-cam'), 30);
    const { MujocoEnv } = await import('../src/sim/env.js');
    const { pushTask } = await import('../src/sim/tasks/push.js');
    const err = await trainResidual({ ...opts, makeEnv: () => MujocoEnv.create(pushTask) }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ResrtError);
    expect((err as ResrtError).message).toMatch(/replayFrames is on, and .* has no cameras/);
  }, 60_000);
});
