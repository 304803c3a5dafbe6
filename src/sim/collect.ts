/** `resrt collect`: scripted-expert demonstrations written episode by episode (see demos.ts). */
import { existsSync, renameSync } from 'node:fs';
import { basename } from 'node:path';
import type { CameraFrames } from '../types.js';
import type { SimCameraOptions } from './camera/sim-cameras.js';
import { ResrtError } from '../util/errors.js';
import { DemoWriter } from './demos.js';
import { MujocoEnv, type Randomization } from './env.js';
import { type ExpertNoise, ImperfectExpert } from './expert.js';
import type { AnyTask } from './registry.js';

export interface CollectOptions {
  task: AnyTask;
  episodes: number;
  out: string;
  seed?: number;
  noise: ExpertNoise;
  randomization?: Partial<Randomization>;
  /** Cameras to record (default: the task's own; e.g. { depth: true } to add depth). */
  cameras?: SimCameraOptions;
  /** Refuse to overwrite an existing file unless set. */
  overwrite?: boolean;
  onEpisode?: (done: number, successes: number) => void;
}

export interface CollectSummary {
  episodes: number;
  successes: number;
  steps: number;
}

export async function collectDemos(options: CollectOptions): Promise<CollectSummary> {
  const { task, episodes, out } = options;
  if (!Number.isInteger(episodes) || episodes <= 0) {
    throw new ResrtError(`--episodes must be a positive integer, got ${episodes}`, 'e.g. --episodes 100');
  }
  if (!task.expert) {
    throw new ResrtError(
      `task ${task.name} has no scripted expert`,
      'add expert() to the task module, or record demonstrations another way',
    );
  }
  if (existsSync(out) && !options.overwrite) {
    throw new ResrtError(`${out} already exists`, 'choose another --out, or pass --overwrite');
  }
  const env = await MujocoEnv.create(task, {
    randomization: options.randomization,
    cameras: options.cameras,
  });
  const expert = new ImperfectExpert(task.expert(), env.actionSpace.dim, options.noise, options.seed ?? 0);
  // Written under a temporary name until the first episode is complete, so a failure before that
  // leaves nothing half-made at the requested path.
  const partial = `${out}.partial`;
  const cameras = env.cameras;
  const framesOut = `${out}.frames`;
  const framesPartial = `${framesOut}.partial`;
  if (cameras.length > 0 && existsSync(framesOut) && !options.overwrite) {
    throw new ResrtError(`${framesOut} already exists`, 'choose another --out, or pass --overwrite');
  }
  const writer = DemoWriter.create(
    partial,
    {
      task: task.name,
      obsDim: env.observationSpace.dim,
      actionDim: env.actionSpace.dim,
      obsNames: [...env.observationSpace.names],
      actionNames: [...env.actionSpace.names],
      controlDt: env.controlDt,
      source: `scripted expert (jitter ${options.noise.jitterStd}, bias ${options.noise.biasStd}, pauses ${options.noise.pauseProbability})`,
      ...(cameras.length ? { cameras: [...cameras], framesFile: basename(framesOut) } : {}),
    },
    { framesPath: framesPartial },
  );
  let successes = 0;
  let steps = 0;
  let renamed = false;
  try {
    for (let ep = 0; ep < episodes; ep++) {
      const seed = (options.seed ?? 0) + ep;
      const first = env.reset({ seed });
      let obs = first.obs;
      expert.reset(seed);
      const observations = [obs];
      const frames: CameraFrames[] = first.frames ? [first.frames] : [];
      const actions: Float32Array[] = [];
      const rewards: number[] = [];
      for (;;) {
        // Privileged experts (push-cam) act on state the recorded observation leaves out.
        const action = expert.act(task.privilegedObservation ? env.expertObservation() : obs);
        const r = env.step(action);
        actions.push(action);
        rewards.push(r.reward);
        observations.push(r.obs);
        if (r.frames) frames.push(r.frames);
        obs = r.obs;
        if (r.terminated || r.truncated) {
          writer.append({
            seed,
            success: r.info.success,
            terminated: r.terminated,
            truncated: r.truncated,
            obs: observations,
            actions,
            rewards,
            ...(cameras.length ? { frames } : {}),
          });
          if (r.info.success) successes++;
          steps += actions.length;
          break;
        }
      }
      if (!renamed) {
        if (cameras.length) renameSync(framesPartial, framesOut);
        renameSync(partial, out);
        renamed = true;
      }
      options.onEpisode?.(ep + 1, successes);
    }
  } finally {
    writer.close();
    env.close();
  }
  return { episodes, successes, steps };
}
