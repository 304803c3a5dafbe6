/**
 * The SO-101-like arm (src/sim/tasks/so101) in MuJoCo behind emulated servos: each servo's shaft is
 * a joint of the model, its goal drives the joint's position actuator, and the scene (cube, target,
 * the episode's outcome and counters) is reported by a scene board on the same bus.
 *
 * Like VirtualPlant, physics advances in real time (times `timeScale`) while goals keep arriving,
 * pauses when they stop (the host is between episodes), and the scene resets itself a moment after
 * an episode ends. With `lockstep`, physics instead advances one control period per goal write
 * (a sync write of the arm's goals is one step), so a slow or loaded host meets the same arm as a
 * fast one: runs are reproducible and the host's timing cannot change the task. With torque off a
 * joint stays where it is, as if a hand held it; `moveJoints` is that hand (calibration tests sweep
 * the arm with it).
 */
import type { MjData } from '../../../sim/mujoco.js';
import { MujocoEnv } from '../../../sim/env.js';
import { JOINTS, type ArmJoint } from '../../../sim/tasks/so101/model.js';
import {
  normalizeJoint,
  SCENE_OFFSET,
  SCENE_NAMES,
  so101PickPlaceTask,
} from '../../../sim/tasks/so101/task.js';
import type { ServoJoint } from './emulated-servo.js';

export interface ArmPlantOptions {
  seed?: number;
  /** Simulated seconds per wall second (default 1). */
  timeScale?: number;
  /** The finished scene stays this long before it resets, wall ms (default 300). */
  resetDelayMs?: number;
  /** No goal written for this long: physics pauses (default 200 wall ms). */
  pauseAfterMs?: number;
  /** Paused mid-episode this long: the scene resets (default 1000 wall ms; 3000 in lockstep). */
  idleResetMs?: number;
  /** One control period of physics per goal write instead of real time (default false). */
  lockstep?: boolean;
}

/** Scene values the board reports: the task's scene observation, then success, episode, step. */
export const SCENE_VALUES = SCENE_NAMES.length + 3;

const NOMINAL_EFFORT = [1.5, 1.5, 1.5, 0.8, 0.4, 8];

class ArmServoJoint implements ServoJoint {
  torque = false;
  goal: number;
  held: number;

  constructor(
    private readonly plant: ServoArmPlant,
    readonly k: number,
    readonly spec: ArmJoint,
  ) {
    this.held = plant.env.sim.qpos(spec.name);
    this.goal = this.held;
  }

  counts(): number {
    this.plant.advance();
    return (
      this.spec.zeroCounts +
      this.spec.sign * this.spec.countsPerUnit * this.plant.env.sim.qpos(this.spec.name)
    );
  }

  velocityCounts(): number {
    return this.spec.sign * this.spec.countsPerUnit * this.plant.env.sim.qvel(this.spec.name);
  }

  load(): number {
    const force = (this.plant.env.sim.data as MjData & { actuator_force: Float64Array }).actuator_force;
    return (this.spec.sign * force[this.k]) / NOMINAL_EFFORT[this.k];
  }

  setGoalCounts(counts: number): void {
    const q = (counts - this.spec.zeroCounts) / (this.spec.sign * this.spec.countsPerUnit);
    this.goal = Math.max(this.spec.low, Math.min(this.spec.high, q));
    this.plant.goalWritten();
  }

  setTorque(on: boolean): void {
    if (!on) this.held = this.plant.env.sim.qpos(this.spec.name);
    this.torque = on;
  }
}

export class ServoArmPlant {
  readonly joints: ArmServoJoint[];
  readonly env: MujocoEnv;
  private obs: Float32Array;
  private episodeIndex = 0;
  private stepIndex = 0;
  private lastSuccess = 0;
  private finishedAtMs: number | null = null;
  private lastStepMs: number;
  private lastGoalMs = -Infinity;
  private braked = true;
  private brakedSinceMs: number;
  private readonly periodMs: number;
  private readonly seed: number;
  private resetting = false;
  /** Called when the scene resets (the servos' goals must follow the arm back home). */
  onSceneReset: () => void = () => {};

  private constructor(
    env: MujocoEnv,
    private readonly options: ArmPlantOptions,
  ) {
    this.env = env;
    this.seed = options.seed ?? 0;
    this.obs = env.reset({ seed: this.seed }).obs;
    this.periodMs = (env.controlDt * 1000) / (options.timeScale ?? 1);
    this.lastStepMs = performance.now();
    this.brakedSinceMs = this.lastStepMs;
    this.joints = JOINTS.map((j, k) => new ArmServoJoint(this, k, j));
  }

  static async create(options: ArmPlantOptions = {}): Promise<ServoArmPlant> {
    return new ServoArmPlant(await MujocoEnv.create(so101PickPlaceTask), options);
  }

  /** Wall ms per control period. */
  get controlPeriodMs(): number {
    return this.periodMs;
  }

  get episode(): number {
    return this.episodeIndex;
  }

  /** [scene observation..., success, episode, step]. */
  sceneValues(): Float32Array {
    this.advance();
    const out = new Float32Array(SCENE_VALUES);
    out.set(this.obs.subarray(SCENE_OFFSET, SCENE_OFFSET + SCENE_NAMES.length));
    out[SCENE_NAMES.length] = this.lastSuccess;
    out[SCENE_NAMES.length + 1] = this.episodeIndex;
    out[SCENE_NAMES.length + 2] = this.stepIndex;
    return out;
  }

  goalWritten(): void {
    if (this.resetting) return;
    const now = performance.now();
    if (this.options.lockstep) {
      this.lastGoalMs = now;
      return;
    }
    if (this.braked) {
      this.braked = false;
      this.lastStepMs = now;
    }
    this.lastGoalMs = now;
  }

  /** A hand moves joints with torque off (joint name → angle, or metres for the gripper). */
  moveJoints(positions: Record<string, number>): void {
    for (const j of this.joints) {
      const q = positions[j.spec.name];
      if (q === undefined || j.torque) continue;
      j.held = Math.max(j.spec.low, Math.min(j.spec.high, q));
      this.env.sim.setQpos(j.spec.name, j.held);
      if (j.spec.name === 'gripper') this.env.sim.setQpos('gripper_mirror', j.held);
    }
    this.env.sim.forward();
  }

  resetScene(): void {
    this.episodeIndex++;
    this.stepIndex = 0;
    this.lastSuccess = 0;
    this.finishedAtMs = null;
    this.obs = this.env.reset({ seed: this.seed + this.episodeIndex }).obs;
    for (const j of this.joints) {
      j.held = this.env.sim.qpos(j.spec.name);
      j.goal = j.held;
    }
    this.lastStepMs = performance.now();
    this.resetting = true;
    try {
      this.onSceneReset();
    } finally {
      this.resetting = false;
    }
  }

  /**
   * Lockstep: the host wrote the arm's goals with one sync write (its control step): physics takes
   * one control period. Single writes (enabling torque in place, calibration) take none.
   */
  goalsSyncWritten(): void {
    if (!this.options.lockstep || this.finishedAtMs !== null || this.resetting) return;
    this.lastGoalMs = performance.now();
    if (this.stepOnce()) this.finishedAtMs = this.lastGoalMs;
  }

  /** Steps physics up to now in real time (called before every answer); in lockstep, only resets. */
  advance(): void {
    const now = performance.now();
    if (this.finishedAtMs !== null) {
      if (now - this.finishedAtMs >= (this.options.resetDelayMs ?? 300)) this.resetScene();
      return;
    }
    if (this.options.lockstep) {
      // Steps come with goal sync writes (goalsSyncWritten); here only a stalled episode resets.
      if (this.stepIndex > 0 && now - this.lastGoalMs >= (this.options.idleResetMs ?? 3000))
        this.resetScene();
      return;
    }
    if (!this.braked && now - this.lastGoalMs > (this.options.pauseAfterMs ?? 200)) {
      this.braked = true;
      this.brakedSinceMs = now;
      // The arm comes to rest while the host is away: resuming must not carry old momentum past
      // a goal written since (an e-stop's hold, the next episode's first command).
      this.env.sim.views.qvel.fill(0);
      this.env.sim.forward();
    }
    if (this.braked) {
      this.lastStepMs = now;
      if (this.stepIndex > 0 && now - this.brakedSinceMs >= (this.options.idleResetMs ?? 1000))
        this.resetScene();
      return;
    }
    let due = Math.min(5, Math.floor((now - this.lastStepMs) / this.periodMs));
    while (due-- > 0) {
      this.lastStepMs += this.periodMs;
      if (this.stepOnce()) {
        this.finishedAtMs = now;
        return;
      }
    }
    if (now - this.lastStepMs > 5 * this.periodMs) this.lastStepMs = now;
  }

  private stepOnce(): boolean {
    const action = new Float32Array(this.joints.length);
    for (const [k, j] of this.joints.entries()) {
      action[k] = normalizeJoint(k, j.torque ? j.goal : j.held);
    }
    const r = this.env.step(action);
    // Joints without torque stay where the hand holds them.
    let moved = false;
    for (const j of this.joints) {
      if (j.torque) continue;
      this.env.sim.setQpos(j.spec.name, j.held);
      if (j.spec.name === 'gripper') this.env.sim.setQpos('gripper_mirror', j.held);
      moved = true;
    }
    if (moved) this.env.sim.forward();
    this.obs = r.obs;
    this.stepIndex++;
    if (r.terminated || r.truncated) {
      this.lastSuccess = r.info.success ? 1 : 0;
      return true;
    }
    return false;
  }

  close(): void {
    this.env.close();
  }
}
