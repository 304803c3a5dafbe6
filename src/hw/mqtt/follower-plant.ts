/**
 * A small Plant for loopback demos, tests and benchmarks: N joints whose positions follow the
 * commanded targets with a first-order lag. Sensor 0 reports the mean joint position, so a task
 * can say "succeed when the mean position passes a threshold".
 */
import type { Plant, RobotCapabilities, RobotState } from '../../types.js';
import { ResrtError } from '../../util/errors.js';

export interface FollowerPlantOptions {
  joints: number;
  name?: string;
  rateHz?: number;
  /** Time constant of the lag, ms. */
  timeConstantMs?: number;
  /** Observes every applied command (after the device's clamp). */
  onCommand?: (action: Float32Array) => void;
}

export class FollowerPlant implements Plant {
  readonly capabilities: RobotCapabilities;
  private readonly target: Float32Array;
  private readonly pos: Float32Array;
  private readonly vel: Float32Array;
  private readonly t0 = performance.now();
  private lastSampleMs = performance.now();
  private readonly tauMs: number;
  commandCount = 0;
  holdCount = 0;

  constructor(private readonly options: FollowerPlantOptions) {
    const n = options.joints;
    if (!Number.isInteger(n) || n < 1 || n > 256) {
      throw new ResrtError(`FollowerPlant joints ${n} is invalid`, 'use an integer in 1..256');
    }
    this.capabilities = {
      name: options.name ?? `follower-${n}`,
      actionDim: n,
      actionNames: Array.from({ length: n }, (_, i) => `joint${i}`),
      jointCount: n,
      sensorCount: 1,
      rateHz: options.rateHz ?? 100,
      safeAction: new Array<number>(n).fill(0),
      actionLow: new Array<number>(n).fill(-1),
      actionHigh: new Array<number>(n).fill(1),
      firmwareVersion: 'follower-plant',
    };
    this.tauMs = options.timeConstantMs ?? 30;
    this.target = new Float32Array(n);
    this.pos = new Float32Array(n);
    this.vel = new Float32Array(n);
  }

  command(action: Float32Array): void {
    this.commandCount++;
    this.target.set(action);
    this.options.onCommand?.(action);
  }

  hold(): void {
    this.holdCount++;
    this.target.set(this.capabilities.safeAction);
  }

  /** Current target (what the plant is driving towards). */
  get targets(): Float32Array {
    return Float32Array.from(this.target);
  }

  sample(): Omit<RobotState, 'receivedAtMs' | 'faulted'> {
    const now = performance.now();
    const dtMs = Math.max(0, now - this.lastSampleMs);
    this.lastSampleMs = now;
    const k = 1 - Math.exp(-dtMs / this.tauMs);
    let sum = 0;
    for (let i = 0; i < this.pos.length; i++) {
      const next = this.pos[i] + (this.target[i] - this.pos[i]) * k;
      this.vel[i] = dtMs > 0 ? ((next - this.pos[i]) * 1000) / dtMs : 0;
      this.pos[i] = next;
      sum += next;
    }
    return {
      deviceTimeUs: Math.round((now - this.t0) * 1000),
      positions: Float32Array.from(this.pos),
      velocities: Float32Array.from(this.vel),
      efforts: this.target.map((t, i) => t - this.pos[i]),
      sensors: Float32Array.of(sum / this.pos.length),
    };
  }
}
