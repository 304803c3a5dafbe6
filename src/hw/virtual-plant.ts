/**
 * A MuJoCo task behind the Plant seam, so the whole hardware stack (serial or MQTT bridge,
 * HardwareEnv, safety, actor, learner) runs end to end without hardware.
 *
 * Physics advances in real time: every sample() steps the task as many control periods as wall
 * time allows, with the latest command. hold() engages the "brakes": physics pauses until the next
 * valid command, which is the safe state of a stopped robot. When an episode ends (success or the
 * task's time limit) the scene holds the outcome for `resetDelayMs` and then resets itself, as a
 * person resetting the scene would; resetScene() does it at once.
 *
 * What the robot reports (RobotState): no joints; sensors = [task observation..., success (0/1),
 * episode counter, step in episode]. `virtualRobotConfig()` gives the matching robot config.
 */
import type { CameraFrames, Plant, RobotCapabilities, RobotState } from '../types.js';
import { type CameraStream, SimCameras } from '../sim/camera/sim-cameras.js';
import { MujocoEnv } from '../sim/env.js';
import type { AnyTask } from '../sim/registry.js';
import { parseRobotConfig, type RobotConfig } from './robot-config.js';

export interface VirtualPlantOptions {
  seed?: number;
  /** How long the finished scene stays before it resets itself, ms. Default 300. */
  resetDelayMs?: number;
  /**
   * A started episode whose commands stopped (brakes on) this long is over: the scene resets, as a
   * person resets a stalled cell. It also frees a host that ended its episode a step before the
   * plant did and now waits for a fresh scene. Default 1000 ms.
   */
  idleResetMs?: number;
  /** Robot name reported in the capabilities. */
  name?: string;
  /** Clock, ms (tests pass a fake one). */
  now?: () => number;
  /** Camera streams at sizes of their own for a success detector (`--detector-cameras`). */
  detectorCameras?: readonly CameraStream[];
}

export class VirtualPlant implements Plant {
  readonly capabilities: RobotCapabilities;
  readonly obsDim: number;
  private action: Float32Array;
  private braked = true;
  private brakedSinceMs: number;
  private obs: Float32Array;
  /** The task's cameras, rendered when asked (a camera streams whether or not the robot moves). */
  readonly cameras: SimCameras;
  private episodeIndex = 0;
  private stepIndex = 0;
  private lastSuccess = 0;
  private finishedAtMs: number | null = null;
  private lastStepMs: number;
  private readonly periodMs: number;
  private readonly now: () => number;
  private readonly t0: number;
  private seed: number;

  private constructor(
    readonly env: MujocoEnv,
    private readonly options: VirtualPlantOptions,
  ) {
    this.now = options.now ?? (() => performance.now());
    this.t0 = this.now();
    this.lastStepMs = this.t0;
    this.brakedSinceMs = this.t0;
    this.periodMs = env.controlDt * 1000;
    this.seed = options.seed ?? 0;
    const a = env.actionSpace.dim;
    this.obsDim = env.observationSpace.dim;
    this.capabilities = {
      name: options.name ?? `virtual-${env.id}`,
      actionDim: a,
      actionNames: [...env.actionSpace.names],
      jointCount: 0,
      sensorCount: this.obsDim + 3,
      rateHz: Math.round(1000 / this.periodMs),
      safeAction: new Array<number>(a).fill(0),
      actionLow: new Array<number>(a).fill(-1),
      actionHigh: new Array<number>(a).fill(1),
      firmwareVersion: `resrt virtual robot (${env.id})`,
    };
    this.action = new Float32Array(a);
    this.obs = env.reset({ seed: this.seed }).obs;
    const { mj, model, data } = env.sim;
    this.cameras = new SimCameras(mj, model, data, env.id, env.task.cameras, {
      noiseStd: 2,
      noiseSeed: this.seed,
      extra: options.detectorCameras,
    });
  }

  /** What the task's cameras see now, with sensor noise (undefined for tasks without cameras). */
  captureFrames(): CameraFrames | undefined {
    return this.cameras.capture();
  }

  static async create(task: AnyTask, options: VirtualPlantOptions = {}): Promise<VirtualPlant> {
    // Physics renders nothing; the cameras render at their own rate (captureFrames).
    return new VirtualPlant(await MujocoEnv.create(task, { cameras: { names: 'none' } }), options);
  }

  get episode(): number {
    return this.episodeIndex;
  }

  command(action: Float32Array): void {
    this.action.set(action);
    if (this.braked) {
      // Releasing the brakes must not replay the time spent stopped.
      this.braked = false;
      this.lastStepMs = this.now();
    }
  }

  hold(): void {
    this.advance();
    if (!this.braked) this.brakedSinceMs = this.now();
    this.braked = true;
  }

  /** Starts the next episode now (what a person does on a real robot). */
  resetScene(): void {
    this.episodeIndex++;
    this.stepIndex = 0;
    this.lastSuccess = 0;
    this.finishedAtMs = null;
    this.obs = this.env.reset({ seed: this.seed + this.episodeIndex }).obs;
    this.lastStepMs = this.now();
  }

  sample(): Omit<RobotState, 'receivedAtMs' | 'faulted'> {
    this.advance();
    const sensors = new Float32Array(this.obsDim + 3);
    sensors.set(this.obs);
    sensors[this.obsDim] = this.lastSuccess;
    sensors[this.obsDim + 1] = this.episodeIndex;
    sensors[this.obsDim + 2] = this.stepIndex;
    return {
      deviceTimeUs: Math.round((this.now() - this.t0) * 1000),
      positions: new Float32Array(0),
      velocities: new Float32Array(0),
      efforts: new Float32Array(0),
      sensors,
    };
  }

  close(): void {
    this.cameras.close();
    this.env.close();
  }

  private advance(): void {
    const now = this.now();
    if (this.finishedAtMs !== null) {
      if (now - this.finishedAtMs >= (this.options.resetDelayMs ?? 300)) this.resetScene();
      return;
    }
    if (this.braked) {
      this.lastStepMs = now;
      if (this.stepIndex > 0 && now - this.brakedSinceMs >= (this.options.idleResetMs ?? 1000)) {
        this.lastSuccess = 0;
        this.resetScene();
      }
      return;
    }
    // Real time, but never more than a few periods at once after a stall.
    let due = Math.min(5, Math.floor((now - this.lastStepMs) / this.periodMs));
    while (due-- > 0) {
      this.lastStepMs += this.periodMs;
      const r = this.env.step(this.action);
      this.obs = r.obs;
      this.stepIndex++;
      if (r.terminated || r.truncated) {
        this.lastSuccess = r.info.success ? 1 : 0;
        this.finishedAtMs = now;
        return;
      }
    }
    if (now - this.lastStepMs > 5 * this.periodMs) this.lastStepMs = now;
  }
}

/** The robot config that reads a virtual robot's state as the task's observation and success. */
export function virtualRobotConfig(plant: VirtualPlant, transport: string): RobotConfig {
  const caps = plant.capabilities;
  const obsDim = plant.obsDim;
  return parseRobotConfig(
    {
      name: caps.name.replace(/[^A-Za-z0-9_.-]/g, '-'),
      transport,
      rateHz: caps.rateHz,
      commandValidMs: Math.max(50, Math.round(3000 / caps.rateHz)),
      action: {
        dim: caps.actionDim,
        names: caps.actionNames,
        low: caps.actionLow,
        high: caps.actionHigh,
        safe: caps.safeAction,
      },
      observation: [{ field: 'sensors', indices: Array.from({ length: obsDim }, (_, i) => i) }],
      // Over MQTT the virtual robot publishes its task's cameras (virtual-robot.ts).
      ...(plant.cameras.specs.length + plant.cameras.auxSpecs.length && /^mqtts?:/.test(transport)
        ? {
            cameras: [...plant.cameras.specs, ...plant.cameras.auxSpecs].map((c) => ({
              name: c.name,
              source: 'mqtt',
              width: c.width,
              height: c.height,
              // The extra streams (--detector-cameras) are a detector's, not the policy's.
              ...(c.mjcfCamera !== undefined ? { detector: true } : {}),
            })),
          }
        : {}),
      episode: {
        maxSteps: plant.env.maxEpisodeSteps,
        reset: { mode: 'manual', prompt: 'the virtual robot resets its scene after each episode' },
        success: { mode: 'sensor', index: obsDim, threshold: 0.5 },
      },
    },
    `virtual robot config for ${caps.name}`,
  );
}
