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
}

export class SimCameras {
  readonly specs: readonly CameraSpec[];
  readonly renderer: SceneRenderer;
  private readonly ids: number[];
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
    for (const [label, v] of [
      ['width', width],
      ['height', height],
    ] as const) {
      if (!Number.isInteger(v) || v < 8 || v > 2048) {
        throw new ResrtError(
          `camera image ${label} ${v} for task ${taskName} is invalid`,
          'use an integer from 8 to 2048 (84 is the usual size for policies)',
        );
      }
    }
    const depth = options.depth ?? task?.depth ?? false;
    this.ids = names.map((n) => {
      try {
        return this.renderer.cameraId(n);
      } catch (err) {
        const hint = err instanceof ResrtError ? err.hint : undefined;
        throw new ResrtError(`task ${taskName}: the scene has no camera named "${n}"`, hint);
      }
    });
    this.specs = names.map((name) => ({ name, width, height, channels: 3, depth }));
    this.seqs = names.map(() => 0);
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

  /** One frame per observation camera, of the current state; undefined without cameras. */
  capture(): CameraFrames | undefined {
    if (this.specs.length === 0) return undefined;
    const frames: Record<string, CameraFrame> = {};
    this.specs.forEach((spec, k) => {
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
