/**
 * Is a camera's latest frame fit to act on? Per observation: its age, whether its content has
 * stopped changing (a frozen camera repeats the same image with fresh timestamps), whether it is
 * dated in the future (clocks disagree: its age means nothing), and its time skew against the
 * robot state it is paired with.
 */
import type { CameraFrame } from '../../types.js';

export interface CameraLimits {
  /** A frame older than this is stale. Default 200 ms. */
  maxAgeMs: number;
  /** The same image content for longer than this is a frozen camera. Default 1000 ms. */
  maxFrozenMs: number;
  /** A capture time further than this in the future is refused. Default 20 ms. */
  maxFutureMs: number;
}

export const defaultCameraLimits: CameraLimits = { maxAgeMs: 200, maxFrozenMs: 1000, maxFutureMs: 20 };

export type CameraFault = 'missing' | 'stale' | 'frozen' | 'future';

export interface CameraHealth {
  camera: string;
  /** Age of the latest frame when checked, ms (NaN without a frame). */
  ageMs: number;
  /** Frame capture time minus the paired state's arrival time, ms (positive: frame newer). */
  skewMs: number;
  /** How long the image content has not changed, ms. */
  unchangedMs: number;
  seq: number;
  fault?: CameraFault;
  detail?: string;
}

/** Samples about 4096 bytes spread over the image: enough to tell a live camera from a frozen one. */
function fingerprint(frame: CameraFrame): number {
  const data = frame.data;
  const stride = Math.max(1, Math.floor(data.length / 4096));
  let h = 0x811c9dc5;
  for (let i = 0; i < data.length; i += stride) {
    h ^= data[i];
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export class FrameMonitor {
  private lastSeq = -1;
  private lastPrint = -1;
  private changedAtMs = NaN;

  constructor(
    readonly camera: string,
    readonly limits: CameraLimits = defaultCameraLimits,
  ) {}

  /** Call on every new frame (the source's frame$), so content changes are timed as they arrive. */
  observe(frame: CameraFrame): void {
    if (frame.seq === this.lastSeq) return;
    this.lastSeq = frame.seq;
    const print = fingerprint(frame);
    if (print !== this.lastPrint || Number.isNaN(this.changedAtMs)) {
      this.lastPrint = print;
      this.changedAtMs = frame.capturedAtMs;
    }
  }

  /** Health of `frame` at host time `nowMs`, paired with a state that arrived at `stateAtMs`. */
  check(frame: CameraFrame | null, nowMs: number, stateAtMs = nowMs): CameraHealth {
    if (!frame) {
      return {
        camera: this.camera,
        ageMs: NaN,
        skewMs: NaN,
        unchangedMs: NaN,
        seq: -1,
        fault: 'missing',
        detail: `no frame from camera "${this.camera}" yet`,
      };
    }
    this.observe(frame);
    const ageMs = nowMs - frame.capturedAtMs;
    const health: CameraHealth = {
      camera: this.camera,
      ageMs,
      skewMs: frame.capturedAtMs - stateAtMs,
      unchangedMs: nowMs - this.changedAtMs,
      seq: frame.seq,
    };
    const { maxAgeMs, maxFrozenMs, maxFutureMs } = this.limits;
    if (-ageMs > maxFutureMs) {
      health.fault = 'future';
      health.detail = `camera "${this.camera}" frame ${frame.seq} is dated ${(-ageMs).toFixed(1)} ms in the future (limit ${maxFutureMs} ms): the camera's clock disagrees with this host's`;
    } else if (ageMs > maxAgeMs) {
      health.fault = 'stale';
      health.detail = `camera "${this.camera}" frame ${frame.seq} is ${ageMs.toFixed(0)} ms old (limit ${maxAgeMs} ms)`;
    } else if (health.unchangedMs > maxFrozenMs) {
      health.fault = 'frozen';
      health.detail = `camera "${this.camera}" has shown the same image for ${health.unchangedMs.toFixed(0)} ms (limit ${maxFrozenMs} ms): frozen`;
    }
    return health;
  }
}
