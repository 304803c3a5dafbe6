/**
 * The cameras of a simulated environment: which MJCF cameras are part of the observation, at what
 * size, and the frames they capture each step (fresh buffers per frame, so a frame handed out is
 * never written again).
 */
import type { CameraFrame, CameraFrames, CameraSpec } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import type { MainModule, MjData, MjModel } from '../mujoco.js';
import {
  type CameraRandomization,
  noCameraRandomization,
  type RenderBackend,
  SceneRenderer,
} from './renderer.js';

export const DEFAULT_IMAGE_SIZE = 84;

/** What a task declares: the cameras its observation includes. */
export interface TaskCameras {
  names: string[];
  /** Default 84. */
  width?: number;
  /** Default 84. */
  height?: number;
  /** Also render depth. Default false. */
  depth?: boolean;
}

/**
 * A second stream of one MJCF camera at a size of its own, rendered with every observation beside
 * the observation cameras (Env.auxCameras): a success detector reads its camera at a finer pixel
 * than the policy's 84 x 84 (docs/success-detector.md).
 */
export interface CameraStream {
  /** The stream's name: its frames' key and the detector's `observation.images.<name>`. */
  name: string;
  /** The MJCF camera it renders. */
  camera: string;
  width: number;
  height: number;
}

const STREAM_SPEC = /^(?:([A-Za-z0-9][A-Za-z0-9_.-]{0,63})=)?([^=@\s]+)@(\d+)x(\d+)$/;

/**
 * Parses `--detector-cameras`: comma-separated `[NAME=]CAMERA@WIDTHxHEIGHT`, the name defaulting
 * to `CAMERA_WIDTHxHEIGHT` (top@168x168 is the stream top_168x168).
 */
export function parseCameraStreams(text: string, flag = '--detector-cameras'): CameraStream[] {
  const streams = text
    .split(',')
    .map((part) => part.trim())
    .filter(Boolean)
    .map((part): CameraStream => {
      const m = STREAM_SPEC.exec(part);
      if (!m) {
        throw new ResrtError(
          `${flag} "${part}" is not CAMERA@WIDTHxHEIGHT`,
          `e.g. ${flag} top@168x168 (the stream top_168x168), or name it: ${flag} detector=top@168x168`,
        );
      }
      const [, name, camera, w, h] = m;
      const width = Number(w);
      const height = Number(h);
      return { name: name ?? `${camera}_${width}x${height}`, camera, width, height };
    });
  if (streams.length === 0) {
    throw new ResrtError(`${flag} names no camera`, `e.g. ${flag} top@168x168`);
  }
  return streams;
}

/**
 * The extra streams a success detector needs in simulation: each camera it reads that is not an
 * observation camera here and that it recorded as a stream of a simulator camera
 * (`DetectorCamera.mjcfCamera`), rendered at the detector's size. A camera it reads under an
 * observation camera's name needs no stream; the detector's own check names any it cannot have.
 */
export function detectorStreams(
  detectorCameras: readonly { name: string; width: number; height: number; mjcfCamera?: string }[],
  observationCameras: readonly string[],
): CameraStream[] {
  return detectorCameras.flatMap((c) =>
    c.mjcfCamera === undefined || observationCameras.includes(c.name)
      ? []
      : [{ name: c.name, camera: c.mjcfCamera, width: c.width, height: c.height }],
  );
}

/** What an environment renders with every observation. */
export interface SimCameraOptions {
  /** The task's cameras (default), none, every MJCF camera, or these names. */
  names?: 'task' | 'all' | 'none' | string[];
  /** Overrides the task's image size. */
  width?: number;
  height?: number;
  depth?: boolean;
  backend?: RenderBackend | 'auto';
  /** Appearance randomization drawn at every reset (colours, lights, camera pose). */
  randomization?: Partial<CameraRandomization>;
  /**
   * Sensor noise: Gaussian, this std in 0-255 levels, drawn per pixel and frame (default 0). Real
   * cameras never repeat an image exactly; frozen-camera detection relies on that.
   */
  noiseStd?: number;
  /** Seed of the sensor noise. */
  noiseSeed?: number;
  /** Streams rendered beside the observation cameras, each at its own size (Env.auxCameras). */
  extra?: readonly CameraStream[];
}

export class SimCameras {
  /** The observation cameras. */
  readonly specs: readonly CameraSpec[];
  /** The extra streams (SimCameraOptions.extra), in the same frames. */
  readonly auxSpecs: readonly CameraSpec[];
  readonly renderer: SceneRenderer;
  /** Observation cameras first, then the extra streams: the MJCF camera id of each. */
  private readonly ids: number[];
  private readonly all: readonly CameraSpec[];
  private readonly seqs: number[];
  private readonly randomization: CameraRandomization;
  private readonly randomizes: boolean;
  private readonly noiseStd: number;
  private readonly noise: Rng;

  constructor(
    mj: MainModule,
    model: MjModel,
    data: MjData,
    taskName: string,
    task: TaskCameras | undefined,
    options: SimCameraOptions,
  ) {
    this.renderer = new SceneRenderer(mj, model, data, { backend: options.backend });
    const choice = options.names ?? 'task';
    const names =
      choice === 'task'
        ? (task?.names ?? [])
        : choice === 'none'
          ? []
          : choice === 'all'
            ? [...this.renderer.cameraNames]
            : choice;
    const width = options.width ?? task?.width ?? DEFAULT_IMAGE_SIZE;
    const height = options.height ?? task?.height ?? DEFAULT_IMAGE_SIZE;
    checkImageSize(width, height, `task ${taskName}`);
    const depth = options.depth ?? task?.depth ?? false;
    const cameraId = (n: string): number => {
      try {
        return this.renderer.cameraId(n);
      } catch (err) {
        const hint = err instanceof ResrtError ? err.hint : undefined;
        throw new ResrtError(`task ${taskName}: the scene has no camera named "${n}"`, hint);
      }
    };
    this.specs = names.map((name) => ({ name, width, height, channels: 3, depth }));
    const extra = options.extra ?? [];
    for (const [k, s] of extra.entries()) {
      checkImageSize(s.width, s.height, `camera stream "${s.name}" of task ${taskName}`);
      const taken = names.includes(s.name) || extra.findIndex((o) => o.name === s.name) !== k;
      if (taken) {
        throw new ResrtError(
          `task ${taskName} already has a camera stream named "${s.name}"`,
          `give the stream a name of its own: NAME=${s.camera}@${s.width}x${s.height}`,
        );
      }
    }
    this.auxSpecs = extra.map((s) => ({
      name: s.name,
      width: s.width,
      height: s.height,
      channels: 3,
      depth: false,
      mjcfCamera: s.camera,
    }));
    this.all = [...this.specs, ...this.auxSpecs];
    this.ids = [...names, ...extra.map((s) => s.camera)].map(cameraId);
    this.seqs = this.all.map(() => 0);
    this.randomization = { ...noCameraRandomization, ...options.randomization };
    this.noiseStd = options.noiseStd ?? 0;
    if (!(this.noiseStd >= 0 && this.noiseStd <= 64)) {
      throw new ResrtError(`camera noiseStd ${this.noiseStd} is invalid`, 'use 0 (none) to 64 levels');
    }
    this.noise = new Rng(options.noiseSeed ?? 0);
    const r = this.randomization;
    this.randomizes =
      r.colorStd > 0 ||
      r.lightScale[0] !== 1 ||
      r.lightScale[1] !== 1 ||
      r.lightDirStd > 0 ||
      r.cameraPosStd > 0 ||
      r.cameraRotStd > 0 ||
      r.fovyStd > 0;
  }

  /** New episode: draws the appearance for it (a no-op without randomization). */
  beginEpisode(rng: Rng): void {
    if (this.randomizes) this.renderer.randomize(rng, this.randomization);
  }

  /** One frame per observation camera and extra stream, of the current state; undefined without any. */
  capture(): CameraFrames | undefined {
    if (this.all.length === 0) return undefined;
    const frames: Record<string, CameraFrame> = {};
    this.all.forEach((spec, k) => {
      const img = this.renderer.render(this.ids[k], {
        width: spec.width,
        height: spec.height,
        depth: spec.depth,
      });
      if (this.noiseStd > 0) {
        const d = img.rgb;
        for (let i = 0; i < d.length; i++)
          d[i] = Math.min(255, Math.max(0, Math.round(d[i] + this.noise.normal(0, this.noiseStd))));
      }
      frames[spec.name] = {
        width: spec.width,
        height: spec.height,
        channels: 3,
        data: img.rgb,
        depth: img.depth,
        capturedAtMs: performance.now(),
        seq: this.seqs[k]++,
      };
    });
    return frames;
  }

  close(): void {
    this.renderer.close();
  }
}

function checkImageSize(width: number, height: number, what: string): void {
  for (const [label, v] of [
    ['width', width],
    ['height', height],
  ] as const) {
    if (!Number.isInteger(v) || v < 8 || v > 2048) {
      throw new ResrtError(
        `camera image ${label} ${v} for ${what} is invalid`,
        'use an integer from 8 to 2048 (84 is the usual size for policies)',
      );
    }
  }
}
