/**
 * The trainer's side of ResidualConfig.replayFrames: which cameras' frames replay keeps, checked
 * against the environment, and what that costs, said once in the log. The frames themselves travel
 * in StepRecord.frames / nextFrames and are packed by a FramePacker (replay-frames.ts).
 */
import type { Env } from '../types.js';
import { ResrtError } from '../util/errors.js';
import type { ResidualConfig } from './config.js';
import {
  DEFAULT_CHUNK_SLOTS,
  describeCameras,
  frameBytes,
  frameCamerasOf,
  type FrameCamera,
} from './replay-frames.js';

/** The cameras whose frames this run's replays keep, or null when replayFrames is off. */
export function replayFrameCameras(
  cfg: ResidualConfig,
  env: Pick<Env, 'id' | 'cameras' | 'maxEpisodeSteps'>,
  log: (line: string) => void,
): FrameCamera[] | null {
  if (!cfg.replayFrames) return null;
  const cameras = frameCamerasOf(env.cameras ?? []);
  // A state-only task ignores the encoder mode, so the frames the learned encoder switched on too.
  if (cameras.length === 0 && cfg.encoder === 'learned') return null;
  if (cameras.length === 0) {
    throw new ResrtError(
      `replayFrames is on, and ${env.id} has no cameras whose frames replay could keep`,
      'train on a task or robot with cameras, or set replayFrames false (--set replayFrames=false)',
    );
  }
  log(
    `replay frames: ${describeCameras(cameras)}; ${(framesBytes(cameras, cfg.bufferSize, env.maxEpisodeSteps) / 2 ** 30).toFixed(2)} GiB when ${cfg.bufferSize} steps are held`,
  );
  return cameras;
}

/**
 * Frame bytes of a full replay: episodes of `episodeSteps` steps take one frame per step plus one,
 * and whole chunks are allocated, one beyond what is held.
 */
export function framesBytes(cameras: readonly FrameCamera[], steps: number, episodeSteps: number): number {
  const frames = steps + Math.ceil(steps / Math.max(1, episodeSteps)) + 1;
  return cameras.reduce((sum, c) => sum + frameBytes(c), 0) * (frames + DEFAULT_CHUNK_SLOTS);
}
