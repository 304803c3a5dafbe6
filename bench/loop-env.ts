/**
 * bench/loop's environment, as a source factory the control loop's thread can build (LoopPlan
 * source): a trivial linear system, so the benchmark measures the runtime, not physics.
 */
import type { HostedSource } from '../src/runtime/loop-plan.js';
import { envSource } from '../src/runtime/sources.js';
import type { BoxSpace, Env, StepResult } from '../src/types.js';

export const OBS_DIM = 32;
export const ACTION_DIM = 7;

const box = (dim: number, bound: number): BoxSpace => ({
  dim,
  low: Array(dim).fill(-bound),
  high: Array(dim).fill(bound),
  names: [],
});

export class BenchEnv implements Env {
  readonly id = 'bench';
  readonly observationSpace = box(OBS_DIM, 5);
  readonly actionSpace = box(ACTION_DIM, 1);
  readonly maxEpisodeSteps = 1000;
  private readonly obs = new Float32Array(OBS_DIM);
  constructor(readonly controlDt: number) {}
  reset(): { obs: Float32Array; info: { success: boolean } } {
    this.obs.fill(0.1);
    return { obs: this.obs, info: { success: false } };
  }
  step(action: ArrayLike<number>): StepResult {
    for (let i = 0; i < OBS_DIM; i++) this.obs[i] = 0.99 * this.obs[i] + 0.01 * action[i % ACTION_DIM];
    return { obs: this.obs, reward: 0, terminated: false, truncated: false, info: { success: false } };
  }
  close(): void {}
}

/** LoopPlan source factory: args { hz }. */
export function benchSource(args: unknown): HostedSource {
  const hz = (args as { hz?: number } | undefined)?.hz ?? 1000;
  return { source: envSource(new BenchEnv(1 / hz)), close: async () => {} };
}
