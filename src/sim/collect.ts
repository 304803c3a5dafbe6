/**
 * `resrt collect`: scripted-expert demonstrations, or a policy's rollouts, written episode by
 * episode (see demos.ts). Rollouts of a base policy are the failures (and successes) a success
 * detector must tell apart once a learner acts like that base (docs/success-detector.md).
 */
import { existsSync, renameSync } from 'node:fs';
import { basename } from 'node:path';
import type { CameraFrames, Policy } from '../types.js';
import type { SimCameraOptions } from './camera/sim-cameras.js';
import { ResrtError } from '../util/errors.js';
import { DemoWriter } from './demos.js';
import { MujocoEnv, type Randomization } from './env.js';
import { type ExpertNoise, ImperfectExpert, NoisyPolicy, PrivilegedExpert } from './expert.js';
import type { AnyTask } from './registry.js';
import { checkPolicyActions } from '../runtime/evaluate.js';

export interface CollectOptions {
  task: AnyTask;
  episodes: number;
  out: string;
  seed?: number;
  /** Noise on every action, the expert's or the policy's. */
  noise: ExpertNoise;
  /**
   * Record this policy's rollouts instead of the scripted expert's; `source` names it in the
   * file's header (e.g. "policy base.onnx").
   */
  policy?: { create(env: MujocoEnv): Policy | Promise<Policy>; source: string };
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
  if (!options.policy && !task.expert) {
    throw new ResrtError(
      `task ${task.name} has no scripted expert`,
      "add expert() to the task module, or record a policy's rollouts with --base FILE.onnx",
    );
  }
  if (existsSync(out) && !options.overwrite) {
    throw new ResrtError(`${out} already exists`, 'choose another --out, or pass --overwrite');
  }
  const env = await MujocoEnv.create(task, {
    randomization: options.randomization,
    cameras: options.cameras,
  });
  let actor: Policy;
  try {
    actor = await createActor(env, options);
  } catch (err) {
    env.close();
    throw err;
  }
  // Written under a temporary name until the first episode is complete, so a failure before that
  // leaves nothing half-made at the requested path.
  const partial = `${out}.partial`;
  // A success detector's streams at their own size (--detector-cameras) are recorded beside the policy's.
  const cameras = [...env.cameras, ...env.auxCameras];
  const framesOut = `${out}.frames`;
  const framesPartial = `${framesOut}.partial`;
  if (cameras.length > 0 && existsSync(framesOut) && !options.overwrite) {
    throw new ResrtError(`${framesOut} already exists`, 'choose another --out, or pass --overwrite');
  }
  // Privileged state (push-cam's goal) is recorded as the label a state estimator learns from.
  const envStateNames = task.privilegedObservation?.names;
  const writer = DemoWriter.create(
    partial,
    {
      task: task.name,
      obsDim: env.observationSpace.dim,
      actionDim: env.actionSpace.dim,
      obsNames: [...env.observationSpace.names],
      actionNames: [...env.actionSpace.names],
      controlDt: env.controlDt,
      source: `${options.policy?.source ?? 'scripted expert'} (jitter ${options.noise.jitterStd}, bias ${options.noise.biasStd}, pauses ${options.noise.pauseProbability})`,
      ...(cameras.length ? { cameras: [...cameras], framesFile: basename(framesOut) } : {}),
      ...(envStateNames ? { environmentStateNames: [...envStateNames] } : {}),
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
      actor.reset?.(seed);
      const observations = [obs];
      const frames: CameraFrames[] = first.frames ? [first.frames] : [];
      const envStates = envStateNames ? [env.expertObservation()] : [];
      const actions: Float32Array[] = [];
      const rewards: number[] = [];
      for (;;) {
        const action = await actor.act(obs, frames.at(-1));
        const r = env.step(action);
        actions.push(action);
        rewards.push(r.reward);
        observations.push(r.obs);
        if (r.frames) frames.push(r.frames);
        if (envStateNames) envStates.push(env.expertObservation());
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
            ...(envStateNames ? { environmentState: envStates } : {}),
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

/** The policy that acts: the given one, or the task's expert (with the simulator's privileged state). */
async function createActor(env: MujocoEnv, options: CollectOptions): Promise<Policy> {
  const seed = options.seed ?? 0;
  if (options.policy) {
    const policy = await options.policy.create(env);
    checkPolicyActions(policy, env, options.task.name);
    return new NoisyPolicy(policy, options.noise, seed);
  }
  const expert = new ImperfectExpert(options.task.expert!(), env.actionSpace.dim, options.noise, seed);
  // Privileged experts (push-cam) act on state the recorded observation leaves out.
  return options.task.privilegedObservation
    ? new PrivilegedExpert(expert, () => env.expertObservation())
    : expert;
}
