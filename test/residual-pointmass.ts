/**
 * A small deterministic continuous-control task for the residual learner's tests: a 2-D point mass
 * must come within `tolerance` of a goal within `maxSteps`; reward 1 and termination on success.
 * The scripted base is a proportional controller with a constant bias of 0.12 along x, so it
 * settles 0.024 beside the goal and succeeds only when its approach happens to pass within the
 * tolerance (~30% of episodes); a residual of −0.05 on x makes it succeed every time.
 */
import type { BoxSpace, Env, Policy, ResetResult, StepResult } from '../src/types.js';
import type { ResidualConfig } from '../src/residual/config.js';
import { Rng } from '../src/util/rng.js';

const box = (dim: number, names: string[]): BoxSpace => ({
  dim,
  low: Array(dim).fill(-1),
  high: Array(dim).fill(1),
  names,
});

export class PointMassEnv implements Env {
  readonly id = 'point-mass';
  readonly observationSpace = box(4, ['x', 'y', 'goal_x', 'goal_y']);
  readonly actionSpace = box(2, ['vx', 'vy']);
  readonly controlDt = 0.1;
  readonly maxEpisodeSteps = 40;
  readonly tolerance = 0.02;
  private pos = [0, 0];
  private goal = [0, 0];
  private t = 0;
  private rng = new Rng(0);

  private obs(): Float32Array {
    return Float32Array.from([this.pos[0], this.pos[1], this.goal[0], this.goal[1]]);
  }

  reset(options?: { seed?: number }): ResetResult {
    if (options?.seed !== undefined) this.rng = new Rng(options.seed);
    this.goal = [this.rng.range(-0.8, 0.8), this.rng.range(-0.8, 0.8)];
    this.pos = [0, 0];
    this.t = 0;
    return { obs: this.obs(), info: { success: false } };
  }

  step(action: ArrayLike<number>): StepResult {
    for (let i = 0; i < 2; i++) this.pos[i] += 0.1 * Math.max(-1, Math.min(1, action[i]));
    this.t++;
    const d = Math.hypot(this.pos[0] - this.goal[0], this.pos[1] - this.goal[1]);
    const success = d < this.tolerance;
    return {
      obs: this.obs(),
      reward: success ? 1 : 0,
      terminated: success,
      truncated: !success && this.t >= this.maxEpisodeSteps,
      info: { success },
    };
  }

  close(): void {}
}

/** Proportional controller with a bias of 0.12 on x. */
export class BiasedBase implements Policy {
  readonly actionDim = 2;
  constructor(readonly biased = true) {}
  act(obs: Float32Array): Float32Array {
    const bias = this.biased ? 0.12 : 0;
    return Float32Array.from([
      Math.max(-1, Math.min(1, 5 * (obs[2] - obs[0]) + bias)),
      Math.max(-1, Math.min(1, 5 * (obs[3] - obs[1]))),
    ]);
  }
}

/** Learner settings that learn this task in a test's time on two shared cores (2×64, 4 heads). */
export const pointMassLearner: Partial<ResidualConfig> = {
  actorHidden: [64, 64],
  criticHidden: [64, 64],
  numCritics: 4,
  batchSize: 128,
  utd: 1,
  learningStarts: 500,
  criticWarmupSteps: 200,
  actorLr: 1e-4,
  criticLr: 3e-4,
};
