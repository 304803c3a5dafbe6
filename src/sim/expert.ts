/**
 * Scripted experts made to look like human demonstrations: per-step jitter, a small per-episode
 * bias, and occasional pauses. With all noise at zero the expert is the clean controller.
 */
import type { CameraFrames, Policy } from '../types.js';
import { Rng } from '../util/rng.js';
import type { ExpertController } from './task.js';

export interface ExpertNoise {
  /** Std of Gaussian noise added to every action (normalized units). */
  jitterStd: number;
  /** Std of a constant offset drawn once per episode (normalized units). */
  biasStd: number;
  /** Probability per step of starting a pause (the previous action is held). */
  pauseProbability: number;
  /** Longest pause, in steps. */
  maxPauseSteps: number;
}

export const cleanExpert: ExpertNoise = { jitterStd: 0, biasStd: 0, pauseProbability: 0, maxPauseSteps: 0 };

/** The noise `resrt collect` uses by default: demonstrations as a careful person would give them. */
export const humanLikeExpert: ExpertNoise = {
  jitterStd: 0.03,
  biasStd: 0.01,
  pauseProbability: 0.02,
  maxPauseSteps: 5,
};

/**
 * The noise of an imperfect demonstrator on any stream of clean actions: a per-episode bias,
 * per-step jitter, and pauses that hold the previous action. Seeded per episode, so an episode's
 * noise does not depend on the episodes before it.
 */
export class ActionNoise {
  private rng: Rng;
  private bias: Float32Array;
  private held: Float32Array | null = null;
  private pauseLeft = 0;

  constructor(
    readonly actionDim: number,
    private readonly noise: ExpertNoise,
    seed = 0,
  ) {
    this.rng = new Rng(seed);
    this.bias = new Float32Array(actionDim);
  }

  reset(seed?: number): void {
    if (seed !== undefined) this.rng = new Rng(seed ^ 0x5eed);
    for (let i = 0; i < this.actionDim; i++) this.bias[i] = this.rng.normal(0, this.noise.biasStd);
    this.held = null;
    this.pauseLeft = 0;
  }

  /** The action sent instead of `clean`, clipped to [-1, 1]. */
  apply(clean: Float32Array): Float32Array {
    if (this.pauseLeft > 0 && this.held) {
      this.pauseLeft--;
      return Float32Array.from(this.held);
    }
    if (this.noise.pauseProbability > 0 && this.held && this.rng.uniform() < this.noise.pauseProbability) {
      this.pauseLeft = 1 + this.rng.int(Math.max(1, this.noise.maxPauseSteps));
      return Float32Array.from(this.held);
    }
    const out = new Float32Array(this.actionDim);
    for (let i = 0; i < this.actionDim; i++) {
      const v =
        clean[i] + this.bias[i] + (this.noise.jitterStd > 0 ? this.rng.normal(0, this.noise.jitterStd) : 0);
      out[i] = Math.max(-1, Math.min(1, v));
    }
    this.held = out;
    return out;
  }
}

export class ImperfectExpert implements Policy {
  readonly actionDim: number;
  private readonly noise: ActionNoise;

  constructor(
    private readonly controller: ExpertController,
    actionDim: number,
    noise: ExpertNoise,
    seed = 0,
  ) {
    this.actionDim = actionDim;
    this.noise = new ActionNoise(actionDim, noise, seed);
  }

  reset(seed?: number): void {
    this.noise.reset(seed);
    this.controller.reset();
  }

  act(obs: Float32Array): Float32Array {
    // The controller steps even through a pause: its phase follows the scene, not the noise.
    return this.noise.apply(this.controller.act(obs));
  }
}

/**
 * Any policy with a demonstrator's noise on its actions: `resrt collect --base` records a
 * policy's rollouts this way (the failures a success detector must learn to reject).
 */
export class NoisyPolicy implements Policy {
  readonly actionDim: number;
  private readonly noise: ActionNoise;

  constructor(
    private readonly policy: Policy,
    noise: ExpertNoise,
    seed = 0,
  ) {
    this.actionDim = policy.actionDim;
    this.noise = new ActionNoise(policy.actionDim, noise, seed);
  }

  reset(seed?: number): void {
    this.noise.reset(seed);
    this.policy.reset?.(seed);
  }

  async act(obs: Float32Array, frames?: CameraFrames): Promise<Float32Array> {
    return this.noise.apply(await this.policy.act(obs, frames));
  }
}

/** Uniform random actions: the floor every task's success rate is compared against. */
export class RandomPolicy implements Policy {
  private rng: Rng;
  constructor(
    readonly actionDim: number,
    seed = 0,
  ) {
    this.rng = new Rng(seed);
  }
  reset(seed?: number): void {
    if (seed !== undefined) this.rng = new Rng(seed ^ 0xabcd);
  }
  act(): Float32Array {
    const out = new Float32Array(this.actionDim);
    for (let i = 0; i < this.actionDim; i++) out[i] = this.rng.range(-1, 1);
    return out;
  }
}

/**
 * A scripted expert that acts on privileged state (a task's `privilegedObservation`, read from the
 * simulator each step) instead of the observation it is handed: push-cam's expert knows the goal
 * the policy only sees in the image.
 */
export class PrivilegedExpert implements Policy {
  readonly actionDim: number;
  constructor(
    private readonly expert: ImperfectExpert,
    private readonly privileged: () => Float32Array,
  ) {
    this.actionDim = expert.actionDim;
  }
  reset(seed?: number): void {
    this.expert.reset(seed);
  }
  act(_obs: Float32Array, _frames?: CameraFrames): Float32Array {
    return this.expert.act(this.privileged());
  }
}
