// Steps with camera frames for replay tests: every frame's bytes follow from a number (its serial
// in the stream of frames a test makes), so a test can say which bytes any slot must hold.
import type { CameraFrame, CameraFrames } from '../src/types.js';
import type { FrameCamera } from '../src/residual/replay-frames.js';
import type { StepRecord } from '../src/residual/replay.js';
import { Rng } from '../src/util/rng.js';

export const O = 3;
export const A = 2;

/** What test/replay-frames-writer.ts keeps: one 84×84 RGB camera, 2000 steps. */
export const writerCameras: FrameCamera[] = [{ name: 'top', width: 84, height: 84, channels: 3 }];
export const writerCapacity = 2000;

/** Bytes of frame `serial` of camera `camera`: noise over a gradient, never all zero. */
export function frameBytesOf(serial: number, camera: FrameCamera, cameraIndex: number): Uint8Array {
  const rng = new Rng((serial * 7919 + cameraIndex * 104729 + 1) >>> 0);
  const n = camera.width * camera.height * camera.channels;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = ((i % 251) + (rng.nextUint32() & 63) + serial) & 255;
  return out;
}

export function framesOf(serial: number, cameras: readonly FrameCamera[]): CameraFrames {
  const frames: Record<string, CameraFrame> = {};
  cameras.forEach((c, k) => {
    frames[c.name] = {
      width: c.width,
      height: c.height,
      channels: c.channels,
      data: frameBytesOf(serial, c, k),
      capturedAtMs: serial,
      seq: serial,
    };
  });
  return frames;
}

/**
 * Episodes of the given lengths as steps with frames handed on by reference, as the trainer does:
 * step t+1's `frames` is step t's `nextFrames`. `serial` numbers the frames from `firstSerial`.
 */
export function episodeSteps(
  lengths: readonly number[],
  cameras: readonly FrameCamera[],
  firstSerial = 0,
  terminal = true,
): { steps: StepRecord[]; serials: { obs: number; next: number }[]; nextSerial: number } {
  const steps: StepRecord[] = [];
  const serials: { obs: number; next: number }[] = [];
  let serial = firstSerial;
  for (const T of lengths) {
    let obsSerial = serial++;
    let frames = framesOf(obsSerial, cameras);
    for (let t = 0; t < T; t++) {
      const nextSerial = serial++;
      const nextFrames = framesOf(nextSerial, cameras);
      const last = t === T - 1;
      steps.push({
        obs: [obsSerial, t, 1],
        baseAction: [0.1, -0.1],
        action: [0.2, 0.3],
        reward: obsSerial % 5,
        nextObs: [nextSerial, t + 1, 1],
        nextBaseAction: [0.1, -0.1],
        terminated: last && terminal,
        truncated: last && !terminal,
        frames,
        nextFrames,
      });
      serials.push({ obs: obsSerial, next: nextSerial });
      obsSerial = nextSerial;
      frames = nextFrames;
    }
  }
  return { steps, serials, nextSerial: serial };
}
