/**
 * N environments of one task in one process, stepped as a batch with automatic reset. Each
 * sub-environment keeps its own seeded stream, so a VecEnv equals N single environments.
 */
import type { StepInfo } from '../types.js';
import { MujocoEnv, type MujocoEnvOptions } from './env.js';
import { mujoco } from './mujoco.js';
import type { TaskDefinition } from './task.js';

export interface VecStepResult {
  /** [N × obsDim]: the observation to act on next (after an automatic reset where an episode ended). */
  obs: Float32Array;
  rewards: Float32Array;
  terminated: Uint8Array;
  truncated: Uint8Array;
  success: Uint8Array;
  /** For each env whose episode ended this step: the last observation of that episode. */
  finalObs: (Float32Array | null)[];
  infos: StepInfo[];
}

export class VecEnv {
  readonly envs: MujocoEnv[];
  readonly obsDim: number;
  readonly actionDim: number;

  private constructor(envs: MujocoEnv[]) {
    this.envs = envs;
    this.obsDim = envs[0].observationSpace.dim;
    this.actionDim = envs[0].actionSpace.dim;
  }

  static async create(
    task: TaskDefinition<unknown>,
    count: number,
    options: MujocoEnvOptions = {},
  ): Promise<VecEnv> {
    const mj = await mujoco();
    const envs = Array.from({ length: count }, () => MujocoEnv.createWith(mj, task, options));
    return new VecEnv(envs);
  }

  get count(): number {
    return this.envs.length;
  }

  /** Resets every env; env i gets seed `seeds[i]` (default: baseSeed + i). */
  reset(seeds?: number[], baseSeed = 0): Float32Array {
    const out = new Float32Array(this.count * this.obsDim);
    this.envs.forEach((env, i) =>
      out.set(env.reset({ seed: seeds?.[i] ?? baseSeed + i }).obs, i * this.obsDim),
    );
    return out;
  }

  step(actions: Float32Array): VecStepResult {
    const n = this.count;
    const res: VecStepResult = {
      obs: new Float32Array(n * this.obsDim),
      rewards: new Float32Array(n),
      terminated: new Uint8Array(n),
      truncated: new Uint8Array(n),
      success: new Uint8Array(n),
      finalObs: new Array<Float32Array | null>(n).fill(null),
      infos: new Array<StepInfo>(n),
    };
    const a = this.actionDim;
    for (let i = 0; i < n; i++) {
      const r = this.envs[i].step(actions.subarray(i * a, (i + 1) * a));
      res.rewards[i] = r.reward;
      res.terminated[i] = r.terminated ? 1 : 0;
      res.truncated[i] = r.truncated ? 1 : 0;
      res.success[i] = r.info.success ? 1 : 0;
      res.infos[i] = r.info;
      let next = r.obs;
      if (r.terminated || r.truncated) {
        res.finalObs[i] = r.obs;
        next = this.envs[i].reset().obs;
      }
      res.obs.set(next, i * this.obsDim);
    }
    return res;
  }

  close(): void {
    for (const env of this.envs) env.close();
  }
}
