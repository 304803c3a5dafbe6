// The push-cam run test/replay-frames-train.test.ts trains with replayFrames on, in the test process
// and (to be killed) in test/replay-frames-train-child.ts: both build it here, so they are the same.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ResidualConfig } from '../src/residual/config.js';
import type { TrainOptions } from '../src/residual/trainer.js';
import { MujocoEnv } from '../src/sim/env.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import type { Env, Policy } from '../src/types.js';
import { waitFor } from './session-fixtures.js';

/** push-cam's real camera, rendered at 32×32 to keep the run short; 30-step episodes. */
export const pushCamSmall = { cameras: { width: 32, height: 32 }, maxEpisodeSteps: 30 };

/** Never acts: the run learns from scratch (useBase false), so the base is only its action size. */
const noBase: Policy = { actionDim: 3, act: () => new Float32Array(3) };

export function framesRunOptions(
  outDir: string,
  steps: number,
  onEnv: (env: Env, index: number) => void = () => {},
  /** Config on top of the run's (test/residual-learned-train.test.ts trains the learned encoder). */
  config: Partial<ResidualConfig> = {},
): TrainOptions {
  let made = 0;
  return {
    makeEnv: async () => {
      const env = await MujocoEnv.create(pushCamTask, pushCamSmall);
      onEnv(env, made++);
      return env;
    },
    base: noBase,
    steps,
    outDir,
    seed: 4,
    profile: 'cpu',
    worker: false,
    evalEpisodes: 1,
    heldOut: { episodes: 1, base: false },
    // A checkpoint at every episode end: the kill lands between or inside them.
    checkpointEvery: 30,
    log: () => {},
    config: {
      actorHidden: [16, 16],
      criticHidden: [16, 16],
      numCritics: 2,
      batchSize: 16,
      learningStarts: 45,
      criticWarmupSteps: 5,
      useBase: false,
      encoder: 'none',
      replayFrames: true,
      // Smaller than the run: the ring wraps, and the checkpoint holds the newest 100 steps.
      bufferSize: 100,
      ...config,
    },
  };
}

/**
 * Runs the same frames run (replay-frames-train-child.ts, `steps` env steps, `config` over the
 * defaults) in a child process into `outDir` and kills it with SIGKILL once it has written its
 * `checkpoints`-th checkpoint (mid-run, maybe mid-write). Returns how it ended and its stderr tail.
 */
export async function killFramesRunAtCheckpoint(
  outDir: string,
  steps: number,
  checkpoints: number,
  config?: Partial<ResidualConfig>,
): Promise<{ signal: NodeJS.Signals | null; stderr: string }> {
  const repo = resolve(import.meta.dirname, '..');
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(repo, 'test/replay-frames-train-child.ts'),
      outDir,
      String(steps),
      ...(config ? [JSON.stringify(config)] : []),
    ],
    { cwd: repo, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const generation = (): number => {
    try {
      return (JSON.parse(readFileSync(join(outDir, 'checkpoint.json'), 'utf8')) as { generation: number })
        .generation;
    } catch {
      return 0;
    }
  };
  try {
    await waitFor(
      `the child's checkpoint ${checkpoints}`,
      () => child.exitCode !== null || generation() >= checkpoints,
      90_000,
      5,
    );
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
  return { signal: child.signalCode, stderr };
}
