/**
 * A learned success detector (HIL-SERL's reward classifier) at run time: an ONNX file written by
 * `resrt reward train` that maps the frames of named cameras to P(success), with the decision
 * threshold chosen on a validation split. `resrt train` and `resrt actor` use it as the success
 * source (docs/success-detector.md); this module loads it, checks that the cameras it was trained
 * on are the ones given, and judges one observation at a time.
 *
 * The file: inputs `observation.images.<camera>` [batch, 3, H, W] float in [0, 1] (RGB, row 0 at
 * the top), output `success_probability` [batch, 1] (and `success_logit`); metadata
 * `resrt.kind = success-detector`, `resrt.detector.cameras` ([{name, width, height}]) and
 * `resrt.detector.threshold`.
 */
import '../util/ort-telemetry.js';
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import type { CameraFrames, CameraSpec, Env } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { decodeModelHeader } from '../util/onnx-proto.js';
import { MetaKey } from './onnx-export.js';
import { createSession } from './onnx-policy.js';
import { type ImagePreprocess, preprocessFrame } from './preprocess.js';

export const DETECTOR_KIND = 'success-detector';
export const DetectorMeta = {
  cameras: 'resrt.detector.cameras',
  threshold: 'resrt.detector.threshold',
  metrics: 'resrt.detector.metrics',
} as const;
export const detectorImageInput = (camera: string): string => `observation.images.${camera}`;
export const PROBABILITY_OUTPUT = 'success_probability';
export const LOGIT_OUTPUT = 'success_logit';

/** A camera the detector reads, at the size it was trained on. */
export interface DetectorCamera {
  name: string;
  width: number;
  height: number;
  /**
   * The simulator camera whose extra stream this is (`collect --detector-cameras`): in simulation
   * `train` and `actor` render it at this size beside the policy's cameras (detectorStreams).
   */
  mjcfCamera?: string;
}

/** One observation's verdict. */
export interface SuccessVerdict {
  probability: number;
  success: boolean;
}

/** What the trainer and the actor need from a success source. */
export interface SuccessJudge {
  readonly cameras: readonly DetectorCamera[];
  readonly threshold: number;
  judge(frames: CameraFrames | undefined): Promise<SuccessVerdict>;
}

const retrainHint = (cams: readonly DetectorCamera[]): string =>
  `train a detector on frames of these cameras: \`resrt reward train --data DEMOS.jsonl --cameras ${cams.map((c) => c.name).join(',')} --out detector.onnx\` (DEMOS.jsonl recorded with \`resrt collect\` on the same task and camera sizes)`;

export class SuccessDetector implements SuccessJudge {
  private readonly preprocess: ImagePreprocess[];
  private readonly buffers: Float32Array[];

  private constructor(
    readonly path: string,
    private readonly session: ort.InferenceSession,
    readonly cameras: readonly DetectorCamera[],
    readonly threshold: number,
    readonly metadata: Readonly<Record<string, string>>,
  ) {
    this.preprocess = cameras.map((c) => ({
      input: detectorImageInput(c.name),
      camera: c.name,
      layout: 'NCHW',
      dtype: 'float32',
      height: c.height,
      width: c.width,
      channelOrder: 'RGB',
      scale: 1 / 255,
      mean: [0, 0, 0],
      std: [1, 1, 1],
      // A detector judges pixels at the scale it learned them; a resized camera is another camera.
      resize: 'none',
    }));
    this.buffers = cameras.map((c) => new Float32Array(3 * c.height * c.width));
  }

  /**
   * Loads a detector file. With `available`, the cameras the environment or robot provides, every
   * camera the detector reads must be there at its trained size.
   */
  static async load(path: string, available?: readonly CameraSpec[]): Promise<SuccessDetector> {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(path);
    } catch (err) {
      throw new ResrtError(
        `cannot read the success detector ${path}: ${(err as Error).message}`,
        'train one with `resrt reward train --data DEMOS.jsonl --out detector.onnx`',
      );
    }
    const meta = decodeModelHeader(bytes, path).metadata;
    if (meta[MetaKey.kind] !== DETECTOR_KIND) {
      throw new ResrtError(
        `${path} is not a success detector (its resrt.kind is ${meta[MetaKey.kind] ? `"${meta[MetaKey.kind]}"` : 'missing'})`,
        'pass a file written by `resrt reward train`; base and residual policies go to --base / --residual',
      );
    }
    const cameras = parseCameras(meta[DetectorMeta.cameras], path);
    const threshold = Number(meta[DetectorMeta.threshold]);
    if (!(threshold > 0 && threshold < 1)) {
      throw new ResrtError(
        `${path} has no valid ${DetectorMeta.threshold} (got ${meta[DetectorMeta.threshold] ?? 'nothing'})`,
        'train the detector again with `resrt reward train`, which writes the threshold it chose',
      );
    }
    if (available) checkCameras(cameras, available, path);
    const session = await createSession(path, 1);
    return new SuccessDetector(path, session, cameras, threshold, meta);
  }

  /** P(success) of one observation's frames, and whether it clears the threshold. */
  async judge(frames: CameraFrames | undefined): Promise<SuccessVerdict> {
    const feeds: Record<string, ort.Tensor> = {};
    this.cameras.forEach((c, k) => {
      const frame = frames?.[c.name];
      if (frame && (frame.width !== c.width || frame.height !== c.height)) {
        throw new ResrtError(
          `the success detector ${this.path} was trained on ${c.width}x${c.height} frames of camera "${c.name}", and it now gives ${frame.width}x${frame.height}`,
          `set camera "${c.name}" to ${c.width}x${c.height}, or ${retrainHint(this.cameras)}`,
        );
      }
      if (!frame) {
        throw new ResrtError(
          `the success detector ${this.path} reads camera "${c.name}" and this observation has no frame from it (cameras here: ${Object.keys(frames ?? {}).join(', ') || 'none'})`,
          retrainHint(this.cameras),
        );
      }
      preprocessFrame(frame, this.preprocess[k], this.buffers[k], 0);
      feeds[detectorImageInput(c.name)] = new ort.Tensor('float32', this.buffers[k], [
        1,
        3,
        c.height,
        c.width,
      ]);
    });
    const out = await this.session.run(feeds, [PROBABILITY_OUTPUT]);
    const probability = (out[PROBABILITY_OUTPUT].data as Float32Array)[0];
    return { probability, success: probability >= this.threshold };
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

function parseCameras(raw: string | undefined, path: string): DetectorCamera[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw ?? 'null');
  } catch {
    parsed = null;
  }
  const ok =
    Array.isArray(parsed) &&
    parsed.length > 0 &&
    parsed.every(
      (c: unknown) =>
        typeof c === 'object' &&
        c !== null &&
        typeof (c as DetectorCamera).name === 'string' &&
        Number.isInteger((c as DetectorCamera).width) &&
        Number.isInteger((c as DetectorCamera).height) &&
        ['string', 'undefined'].includes(typeof (c as DetectorCamera).mjcfCamera),
    );
  if (!ok) {
    throw new ResrtError(
      `${path} does not say which cameras it reads (${DetectorMeta.cameras} is ${raw ?? 'missing'})`,
      'train the detector again with `resrt reward train`, which records its cameras',
    );
  }
  return parsed as DetectorCamera[];
}

/**
 * Every camera the detector reads must come with the env's observations, RGB, at its trained
 * size: an observation camera, or one of the env's cameras for readers beside the policy
 * (Env.auxCameras: a detector's camera at its own size).
 */
export function checkEnvCameras(
  detector: SuccessJudge & { path?: string },
  env: Pick<Env, 'cameras' | 'auxCameras'>,
): void {
  checkCameras(
    detector.cameras,
    [...(env.cameras ?? []), ...(env.auxCameras ?? [])],
    detector.path ?? 'the success detector',
  );
}

/** Every camera the detector reads must be provided, RGB, at the size it was trained on. */
export function checkCameras(
  cameras: readonly DetectorCamera[],
  available: readonly CameraSpec[],
  path: string,
): void {
  for (const c of cameras) {
    const spec = available.find((s) => s.name === c.name);
    if (!spec) {
      throw new ResrtError(
        `the success detector ${path} was trained on camera "${c.name}", which is not here (cameras here: ${available.map((s) => `"${s.name}"`).join(', ') || 'none'})`,
        `on a robot, add camera "${c.name}" at ${c.width}x${c.height} to its config (with "detector": true if only the detector reads it); or ${retrainHint(available.map((s) => ({ name: s.name, width: s.width, height: s.height })))}`,
      );
    }
    if (spec.width !== c.width || spec.height !== c.height || spec.channels !== 3) {
      throw new ResrtError(
        `the success detector ${path} was trained on ${c.width}x${c.height} RGB frames of camera "${c.name}", and here it gives ${spec.width}x${spec.height}x${spec.channels}`,
        `set camera "${c.name}" to ${c.width}x${c.height} RGB, or ${retrainHint([{ name: c.name, width: spec.width, height: spec.height }])}`,
      );
    }
  }
}

/**
 * One step's outcome with the detector as the success source. A detected success ends the episode
 * with reward 1. An episode the environment ended by its own success, which the detector does not
 * see, ends as truncated with reward 0 (the learner bootstraps instead of learning a failure the
 * detector did not claim). A failure the environment reports (e.g. an object off the table) stays
 * a terminal failure.
 */
export function detectorOutcome(
  step: { reward: number; terminated: boolean; truncated: boolean; envSuccess: boolean },
  verdict: SuccessVerdict,
): { reward: number; terminated: boolean; truncated: boolean; success: boolean } {
  if (verdict.success) return { reward: 1, terminated: true, truncated: false, success: true };
  const envFailure = step.terminated && !step.envSuccess;
  return {
    reward: 0,
    terminated: envFailure,
    truncated: !envFailure && (step.truncated || step.terminated),
    success: false,
  };
}
