/**
 * Success rate of a policy on an environment, with a 95% Wilson interval. Works for simulated and
 * hardware environments (both are awaited).
 */
import type { CameraFrames, Env, Policy } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { type Interval, wilsonInterval } from '../util/stats.js';

export interface EpisodeRecord {
  seed: number;
  success: boolean;
  steps: number;
  return: number;
  truncated: boolean;
}

export interface EvalResult {
  episodes: number;
  successes: number;
  successRate: number;
  ci95: Interval;
  meanSteps: number;
  records: EpisodeRecord[];
}

export interface EvalOptions {
  episodes: number;
  /** Episode i is reset with seed + i, so two policies can be compared on the same episodes. */
  seed?: number;
  /** Called after every episode (progress bars). */
  onEpisode?: (record: EpisodeRecord, index: number) => void;
  /** Called after every reset and every step (trajectory plots, videos of the camera frames). */
  onStep?: (episode: number, obs: Float32Array, frames?: CameraFrames) => void;
}

/** Throws, naming the fix, when a policy emits another number of actions than the task takes. */
export function checkPolicyActions(policy: Policy, env: Pick<Env, 'actionSpace'>, taskName: string): void {
  if (policy.actionDim !== env.actionSpace.dim)
    throw new ResrtError(
      `the policy emits ${policy.actionDim} actions but task ${taskName} takes ${env.actionSpace.dim}`,
      'use a policy trained for this task (check it with `resrt inspect FILE.onnx --task T`)',
    );
}

export async function evaluatePolicy(env: Env, policy: Policy, options: EvalOptions): Promise<EvalResult> {
  const records: EpisodeRecord[] = [];
  const base = options.seed ?? 0;
  for (let i = 0; i < options.episodes; i++) {
    const seed = base + i;
    let { obs, frames } = await env.reset({ seed });
    policy.reset?.(seed);
    options.onStep?.(i, obs, frames);
    let steps = 0;
    let ret = 0;
    for (;;) {
      const action = await policy.act(obs, frames);
      const r = await env.step(action);
      steps++;
      ret += r.reward;
      obs = r.obs;
      frames = r.frames;
      options.onStep?.(i, obs, frames);
      if (r.terminated || r.truncated) {
        const rec: EpisodeRecord = {
          seed,
          success: r.info.success,
          steps,
          return: ret,
          truncated: r.truncated,
        };
        records.push(rec);
        options.onEpisode?.(rec, i);
        break;
      }
    }
  }
  const successes = records.filter((r) => r.success).length;
  return {
    episodes: records.length,
    successes,
    successRate: records.length ? successes / records.length : 0,
    ci95: wilsonInterval(successes, records.length),
    meanSteps: records.reduce((s, r) => s + r.steps, 0) / Math.max(1, records.length),
    records,
  };
}
