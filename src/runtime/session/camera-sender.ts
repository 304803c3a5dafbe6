/**
 * The actor's cameras in a session (`--send-frames`): what each transition carries of the frames
 * its base acted on (the base's embedding, or every camera's frame as JPEG), and each camera's
 * latest frame as JPEG for the dashboards.
 */
import type { CameraFrame, CameraFrames, CameraSpec, Policy } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { encodeRgbJpeg } from '../../util/image-codec.js';
import { isEmbeddingSource, type ResidualContext } from '../compose.js';
import type { CameraPayload, SendFrames } from './camera-batch.js';

export const DEFAULT_JPEG_QUALITY = 85;

export function frameJpeg(frame: CameraFrame, quality: number): Uint8Array {
  if (frame.channels !== 3)
    throw new ResrtError(`a ${frame.channels}-channel camera frame`, 'sessions send RGB frames (3 channels)');
  return encodeRgbJpeg({ width: frame.width, height: frame.height, data: frame.data }, quality);
}

export class CameraSender {
  private latestFrames: CameraFrames | undefined;
  /** JPEGs of latestFrames, encoded once on demand (or when sent). */
  private latestJpeg = new Map<string, Uint8Array>();
  /** Observations for which the actor had no camera data to send. */
  missing = 0;

  private constructor(
    readonly mode: SendFrames,
    readonly cameras: readonly string[],
    private readonly base: Policy,
    private readonly quality: number,
  ) {}

  /**
   * Checks the mode against the base and the cameras. Features need a base with an embedding
   * output; JPEG frames need cameras. 'none' still keeps the latest frames for the dashboard.
   * `detectorCameras` (Env.auxCameras) go with the JPEG frames and to the dashboards too: the
   * episodes a person labels are what a success detector learns from again (`resrt import session`).
   */
  static create(
    mode: SendFrames,
    base: Policy,
    cameras: readonly CameraSpec[],
    jpegQuality = DEFAULT_JPEG_QUALITY,
    detectorCameras: readonly CameraSpec[] = [],
  ): CameraSender {
    const names = [...cameras, ...detectorCameras].map((c) => c.name);
    if (mode !== 'none' && names.length === 0)
      throw new ResrtError(
        `--send-frames ${mode}: the robot or task has no cameras`,
        'give the robot config its cameras, or use --send-frames none',
      );
    if (mode === 'features' && !(isEmbeddingSource(base) && base.embeddingDim > 0))
      throw new ResrtError(
        "--send-frames features sends the base's embedding, and this base has no embedding output",
        'use a visuomotor base exported by `resrt bc --cameras` (it writes `embedding`), or --send-frames jpeg',
      );
    return new CameraSender(mode, names, base, jpegQuality);
  }

  /**
   * The payload of the observation the base just acted on (call right after base.act(obs,
   * frames)); null when its data is missing (the step then goes without, and is counted).
   */
  capture(frames: CameraFrames | undefined): CameraPayload | null {
    this.see(frames);
    if (this.mode === 'none') return null;
    if (this.mode === 'features') {
      const e = isEmbeddingSource(this.base) ? this.base.lastEmbedding : null;
      if (!e || !frames) {
        this.missing++;
        return null;
      }
      return { kind: 'features', features: Float32Array.from(e) };
    }
    if (!frames || this.cameras.some((n) => !frames[n])) {
      this.missing++;
      return null;
    }
    const jpeg: Record<string, Uint8Array> = {};
    for (const name of this.cameras) {
      jpeg[name] = frameJpeg(frames[name], this.quality);
      this.latestJpeg.set(name, jpeg[name]);
    }
    return { kind: 'jpeg', jpeg };
  }

  /**
   * The payload of an episode's last observation, which the base does not act on: its frames as
   * JPEG (the success a person saw, what a success detector learns from; `resrt import session`),
   * and nothing in the other modes (there are no features without a base call).
   */
  captureTerminal(frames: CameraFrames | undefined): CameraPayload | null {
    return this.mode === 'jpeg' ? this.capture(frames) : this.see(frames);
  }

  /** Keeps the frames for the dashboards only; null. */
  see(frames: CameraFrames | undefined): null {
    if (frames) {
      this.latestFrames = frames;
      this.latestJpeg = new Map();
    }
    return null;
  }

  /** What a camera residual reads beside the state: the frames and the base's latest embedding. */
  residualContext(frames: CameraFrames | undefined): ResidualContext {
    return { frames, baseEmbedding: isEmbeddingSource(this.base) ? this.base.lastEmbedding : null };
  }

  /** Each camera's latest frame as JPEG (cameras without one yet are left out). */
  eachLatest(visit: (camera: string, jpeg: Uint8Array) => void): void {
    for (const name of this.cameras) {
      const jpeg = this.latest(name);
      if (jpeg) visit(name, jpeg);
    }
  }

  /** The latest frame of a camera as JPEG, null before one (encoded once per frame). */
  latest(camera: string): Uint8Array | null {
    const cached = this.latestJpeg.get(camera);
    if (cached) return cached;
    const frame = this.latestFrames?.[camera];
    if (!frame) return null;
    const jpeg = frameJpeg(frame, this.quality);
    this.latestJpeg.set(camera, jpeg);
    return jpeg;
  }
}
