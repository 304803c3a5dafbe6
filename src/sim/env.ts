/**
 * A MuJoCo task as a Gymnasium-style environment: normalized actions mapped to actuator ranges,
 * a control period of whole physics steps, sparse binary reward, time-limit truncation, domain
 * randomization, and determinism under a seed.
 */
import type { BoxSpace, CameraSpec, Env, ResetResult, StepResult } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { compileMjcf, DataViews, type MainModule, type MjData, type MjModel, mujoco } from './mujoco.js';
import { type SimCameraOptions, SimCameras } from './camera/sim-cameras.js';
import { Sim } from './sim.js';
import type { TaskDefinition } from './task.js';

/** Domain randomization, drawn at every reset from the episode's seed. */
export interface Randomization {
  /** Multiplies every geom's sliding friction by a factor drawn uniformly from [low, high]. */
  frictionScale: [number, number];
  /** Multiplies every body's mass by a factor drawn uniformly from [low, high]. */
  massScale: [number, number];
  /** Scales the task's own object and goal pose ranges (1 = nominal). */
  poseSpread: number;
  /** Std of Gaussian noise added to every observation value. */
  obsNoiseStd: number;
  /** Actions take effect this many control steps late (drawn uniformly from [low, high] per episode). */
  actionDelaySteps: [number, number];
}

export const noRandomization: Randomization = {
  frictionScale: [1, 1],
  massScale: [1, 1],
  poseSpread: 1,
  obsNoiseStd: 0,
  actionDelaySteps: [0, 0],
};

export interface MujocoEnvOptions {
  /** Seed used by reset() when it is called without one. */
  seed?: number;
  randomization?: Partial<Randomization>;
  /** Overrides the task's time limit. */
  maxEpisodeSteps?: number;
  /**
   * Cameras rendered with every observation (ResetResult/StepResult.frames). Default: the task's
   * own (`task.cameras`), none for state-only tasks.
   */
  cameras?: SimCameraOptions;
}

export class MujocoEnv<S = unknown> implements Env {
  readonly id: string;
  readonly observationSpace: BoxSpace;
  readonly actionSpace: BoxSpace;
  readonly controlDt: number;
  readonly maxEpisodeSteps: number;
  readonly sim: Sim;
  readonly randomization: Randomization;
  readonly cameras: readonly CameraSpec[];
  /** Extra streams (`cameras.extra`: a success detector's camera at its own size), in the same frames. */
  readonly auxCameras: readonly CameraSpec[];
  /** Renders the observation cameras, and any other MJCF camera on request (`--video`). */
  readonly simCameras: SimCameras;

  private rng: Rng;
  /** Appearance randomization draws from its own stream, so physics episodes stay as they were. */
  private appearanceRng: Rng;
  private state: S | undefined;
  private stepsTaken = 0;
  private done = true;
  private readonly ctrlLow: Float64Array;
  private readonly ctrlHigh: Float64Array;
  private readonly nominalFriction: Float64Array;
  private readonly nominalMass: Float64Array;
  private readonly nominalInertia: Float64Array;
  private delayQueue: Float32Array[] = [];
  private delaySteps = 0;
  private readonly obsBuffer: Float32Array;

  private constructor(
    readonly task: TaskDefinition<S>,
    mj: MainModule,
    private readonly model: MjModel,
    private readonly data: MjData,
    options: MujocoEnvOptions,
  ) {
    this.id = task.name;
    const views = new DataViews(data);
    this.sim = new Sim(mj, model, data, views);
    this.rng = new Rng(options.seed ?? 0);
    this.appearanceRng = new Rng(appearanceSeed(options.seed ?? 0));
    this.randomization = { ...noRandomization, ...options.randomization };
    this.maxEpisodeSteps = options.maxEpisodeSteps ?? task.maxEpisodeSteps;
    this.controlDt = task.controlSubsteps * (model.opt.timestep as number);

    const nu = model.nu as number;
    if (nu === 0)
      throw new ResrtError(`task ${task.name} has no actuators`, 'add <actuator> elements to the MJCF');
    const range = model.actuator_ctrlrange as Float64Array;
    this.ctrlLow = new Float64Array(nu);
    this.ctrlHigh = new Float64Array(nu);
    for (let i = 0; i < nu; i++) {
      // (The bindings cannot read the boolean ctrllimited array; an unlimited actuator has a zero range.)
      if (!(range[2 * i + 1] > range[2 * i])) {
        const name = model.actuator(i).name as string;
        throw new ResrtError(
          `actuator ${i} (${name || 'unnamed'}) of task ${task.name} has no control range`,
          'give every actuator ctrlrange="low high" (with ctrllimited="true"): normalized actions map onto it',
        );
      }
      this.ctrlLow[i] = range[2 * i];
      this.ctrlHigh[i] = range[2 * i + 1];
    }
    const actionNames =
      task.actionNames ?? Array.from({ length: nu }, (_, i) => (model.actuator(i).name as string) || `u${i}`);
    if (actionNames.length !== nu) {
      throw new ResrtError(
        `task ${task.name} names ${actionNames.length} actions but the model has ${nu} actuators`,
        'make actionNames match the actuators',
      );
    }
    this.actionSpace = {
      dim: nu,
      low: new Array(nu).fill(-1),
      high: new Array(nu).fill(1),
      names: actionNames,
    };
    const od = task.observationNames.length;
    this.observationSpace = {
      dim: od,
      low: new Array(od).fill(-Infinity),
      high: new Array(od).fill(Infinity),
      names: task.observationNames,
    };
    this.obsBuffer = new Float32Array(od);
    this.nominalFriction = Float64Array.from(model.geom_friction as Float64Array);
    this.nominalMass = Float64Array.from(model.body_mass as Float64Array);
    this.nominalInertia = Float64Array.from(model.body_inertia as Float64Array);
    this.simCameras = new SimCameras(mj, model, data, task.name, task.cameras, options.cameras ?? {});
    this.cameras = this.simCameras.specs;
    this.auxCameras = this.simCameras.auxSpecs;
  }

  static async create<S>(task: TaskDefinition<S>, options: MujocoEnvOptions = {}): Promise<MujocoEnv<S>> {
    const mj = await mujoco();
    return MujocoEnv.createWith(mj, task, options);
  }

  /** Synchronous construction once the module is loaded (vectorized runners build many). */
  static createWith<S>(
    mj: MainModule,
    task: TaskDefinition<S>,
    options: MujocoEnvOptions = {},
  ): MujocoEnv<S> {
    if (typeof task.mjcf !== 'string') {
      throw new ResrtError(
        `task ${task.name} points to an MJCF file that was not loaded`,
        'load user tasks with loadTask(path)',
      );
    }
    const model = compileMjcf(mj, task.mjcf, `task ${task.name}`);
    const data = new mj.MjData(model);
    return new MujocoEnv(task, mj, model, data, options);
  }

  /** The per-episode task state (goals); undefined before the first reset. */
  get taskState(): S | undefined {
    return this.state;
  }

  /**
   * What the task's scripted expert acts on: the task's privileged observation of the current
   * state when it defines one, else the (noise-free) observation.
   */
  expertObservation(): Float32Array {
    const priv = this.task.privilegedObservation;
    const out = new Float32Array(priv ? priv.names.length : this.obsBuffer.length);
    if (priv) priv.observe(this.sim, this.state as S, out);
    else this.task.observe(this.sim, this.state as S, out);
    return out;
  }

  get elapsedSteps(): number {
    return this.stepsTaken;
  }

  reset(options: { seed?: number } = {}): ResetResult {
    if (options.seed !== undefined) {
      this.rng = new Rng(options.seed);
      this.appearanceRng = new Rng(appearanceSeed(options.seed));
    }
    const { sim, model, data } = this;
    sim.views.ensure();
    sim.mj.mj_resetData(model, data);
    this.applyRandomization();
    this.state = this.task.reset(sim, this.rng, this.randomization.poseSpread);
    sim.forward();
    this.stepsTaken = 0;
    this.done = false;
    const [dLow, dHigh] = this.randomization.actionDelaySteps;
    this.delaySteps = dLow + this.rng.int(dHigh - dLow + 1);
    this.delayQueue = [];
    this.simCameras.beginEpisode(this.appearanceRng);
    const obs = this.observe();
    const frames = this.simCameras.capture();
    return frames ? { obs, info: { success: false }, frames } : { obs, info: { success: false } };
  }

  step(action: ArrayLike<number>): StepResult {
    if (this.done)
      throw new ResrtError(
        `step() on task ${this.id} without an active episode`,
        'call reset() first, and again after terminated or truncated',
      );
    const applied = this.checkAction(action);
    const { sim, model, data } = this;
    sim.views.ensure();
    let executed = applied;
    if (this.delaySteps > 0) {
      this.delayQueue.push(applied);
      executed =
        this.delayQueue.length > this.delaySteps
          ? this.delayQueue.shift()!
          : new Float32Array(applied.length);
    }
    if (this.task.applyAction) {
      this.task.applyAction(sim, this.state as S, executed);
    } else {
      const ctrl = sim.views.ctrl;
      for (let i = 0; i < ctrl.length; i++) {
        ctrl[i] = this.ctrlLow[i] + ((executed[i] + 1) / 2) * (this.ctrlHigh[i] - this.ctrlLow[i]);
      }
    }
    for (let k = 0; k < this.task.controlSubsteps; k++) sim.mj.mj_step(model, data);
    this.stepsTaken++;
    const state = this.state as S;
    const obs = this.observe();
    const unstable = !Number.isFinite(sim.views.qpos[0]) || obs.some((v) => !Number.isFinite(v));
    const success = !unstable && this.task.success(sim, state);
    const failed = unstable || (!success && (this.task.failure?.(sim, state) ?? false));
    const terminated = success || failed;
    const truncated = !terminated && this.stepsTaken >= this.maxEpisodeSteps;
    this.done = terminated || truncated;
    const result: StepResult = {
      obs,
      reward: success ? 1 : 0,
      terminated,
      truncated,
      info: unstable ? { success, failure: failed, unstable: true } : { success, failure: failed },
    };
    const frames = this.simCameras.capture();
    if (frames) result.frames = frames;
    return result;
  }

  close(): void {
    this.simCameras.close();
    this.data.delete();
    this.model.delete();
  }

  private checkAction(action: ArrayLike<number>): Float32Array {
    const n = this.actionSpace.dim;
    if (!action || action.length !== n) {
      throw new ResrtError(
        `task ${this.id} takes actions of length ${n} (${this.actionSpace.names.join(', ')}), got ${action ? action.length : String(action)}`,
        'pass one normalized value in [-1, 1] per actuator',
      );
    }
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const v = action[i];
      if (!Number.isFinite(v)) {
        throw new ResrtError(
          `action[${i}] (${this.actionSpace.names[i]}) is ${v}`,
          'actions must be finite numbers in [-1, 1]',
        );
      }
      // Gymnasium convention: out-of-range actions are clipped, not rejected.
      out[i] = v < -1 ? -1 : v > 1 ? 1 : v;
    }
    return out;
  }

  private observe(): Float32Array {
    const out = new Float32Array(this.obsBuffer.length);
    this.task.observe(this.sim, this.state as S, out);
    const std = this.randomization.obsNoiseStd;
    if (std > 0) for (let i = 0; i < out.length; i++) out[i] += this.rng.normal(0, std);
    return out;
  }

  private applyRandomization(): void {
    const r = this.randomization;
    const friction = this.model.geom_friction as Float64Array;
    const mass = this.model.body_mass as Float64Array;
    const inertia = this.model.body_inertia as Float64Array;
    const fs = this.rng.range(r.frictionScale[0], r.frictionScale[1]);
    const ms = this.rng.range(r.massScale[0], r.massScale[1]);
    for (let g = 0; g < friction.length; g += 3) friction[g] = this.nominalFriction[g] * fs;
    // Inertia scales with mass so that each body stays physically consistent.
    for (let b = 0; b < mass.length; b++) mass[b] = this.nominalMass[b] * ms;
    for (let k = 0; k < inertia.length; k++) inertia[k] = this.nominalInertia[k] * ms;
  }
}

function appearanceSeed(seed: number): number {
  return (Math.imul(seed >>> 0, 0x9e3779b1) ^ 0x5ca1ab1e) >>> 0;
}
