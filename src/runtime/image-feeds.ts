/**
 * Camera frames into the image inputs of any graph that reads them: a visuomotor base, a frozen
 * frame encoder (encoder mode `file`) and a residual that reads images. One image configuration
 * (metadata `resrt.images`, then a sidecar's "images", then the caller's) and one tensor builder,
 * over preprocess.ts, so every such model sees a frame exactly as the others do.
 */
import '../util/ort-telemetry.js';
import { existsSync, readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import type { CameraFrames } from '../types.js';
import { ResrtError } from '../util/errors.js';
import {
  analyzeImageInput,
  IMAGES_META_KEY,
  isImageInput,
  mergeImageConfigs,
  parseImageConfig,
  type ImageAnalysisOptions,
  type ImageInputConfig,
} from './image-inputs.js';
import type { IoValue, Problem } from './onnx-layout.js';
import { checkFrame, imageSize, preprocessFrame, type ImagePreprocess } from './preprocess.js';

/** A problem with a file, named in the message (a command may load several). */
export function raiseFor(path: string, problem: Problem): never {
  const message = problem.message.startsWith(path) ? problem.message : `${path}: ${problem.message}`;
  throw new ResrtError(message, problem.hint);
}

/** An image input tensor, [batch, 3, H, W] or [batch, H, W, 3]. */
export function imageTensor(
  spec: ImagePreprocess,
  batch: number,
  data: Float32Array | Uint8Array,
): ort.Tensor {
  const dims =
    spec.layout === 'NCHW' ? [batch, 3, spec.height, spec.width] : [batch, spec.height, spec.width, 3];
  return data instanceof Float32Array
    ? new ort.Tensor('float32', data, dims)
    : new ort.Tensor('uint8', data, dims);
}

/**
 * One tensor per image input from `batch` observations' frames (a missing frame throws, naming
 * the camera, the input and the fix), or black images with `frames` null (load-time probes).
 */
export function frameTensors(
  specs: readonly ImagePreprocess[],
  frames: readonly (CameraFrames | undefined)[] | null,
  batch: number,
): Record<string, ort.Tensor> {
  if (frames && frames.length !== batch) checkFrame(undefined, specs[0]);
  const tensors: Record<string, ort.Tensor> = {};
  for (const spec of specs) {
    const size = imageSize(spec);
    const data = spec.dtype === 'float32' ? new Float32Array(batch * size) : new Uint8Array(batch * size);
    if (frames)
      for (let n = 0; n < batch; n++)
        preprocessFrame(checkFrame(frames[n]?.[spec.camera], spec), spec, data, n * size);
    tensors[spec.input] = imageTensor(spec, batch, data);
  }
  return tensors;
}

/** Image configuration: the file's metadata, then its sidecar's "images", then the caller's. */
export function imageConfigOf(
  path: string,
  meta: Record<string, string>,
  sidecar: string | undefined,
  overrides: Record<string, ImageInputConfig> | undefined,
): Record<string, ImageInputConfig> {
  let fromMeta: unknown;
  if (IMAGES_META_KEY in meta) {
    try {
      fromMeta = JSON.parse(meta[IMAGES_META_KEY]);
    } catch {
      raiseFor(path, {
        message: `metadata ${IMAGES_META_KEY} is not JSON`,
        hint: 're-export with a JSON object per image input',
      });
    }
  }
  const a = parseImageConfig(fromMeta, `metadata ${IMAGES_META_KEY}`);
  if (a.problem) raiseFor(path, a.problem);
  let fromSidecar: unknown;
  if (sidecar && existsSync(sidecar)) {
    try {
      fromSidecar = (JSON.parse(readFileSync(sidecar, 'utf8')) as { images?: unknown }).images;
    } catch {
      fromSidecar = undefined; // parseNormalization reports an unreadable sidecar with its fix.
    }
  }
  const b = parseImageConfig(fromSidecar, `sidecar ${sidecar}`);
  if (b.problem) raiseFor(path, b.problem);
  return mergeImageConfigs(a.config, b.config, overrides);
}

/** Preprocessing as `resrt.images` metadata: what a file written from these inputs carries. */
export function imagesMetadata(specs: readonly ImagePreprocess[]): string {
  return JSON.stringify(
    Object.fromEntries(
      specs.map((s) => [
        s.input,
        {
          camera: s.camera,
          scale: s.scale,
          mean: s.mean,
          std: s.std,
          channel_order: s.channelOrder,
          resize: s.resize,
          layout: s.layout,
        },
      ]),
    ),
  );
}

/** Each image input (rank 4) of a graph with its camera and preprocessing, and what stops any. */
export function analyzeImageInputs(
  inputs: readonly IoValue[],
  options: ImageAnalysisOptions,
): { images: ImagePreprocess[]; problems: Problem[] } {
  const images: ImagePreprocess[] = [];
  const problems: Problem[] = [];
  for (const input of inputs.filter(isImageInput)) {
    const r = analyzeImageInput(input, options);
    if (r.problem) problems.push(r.problem);
    else if (r.spec) images.push(r.spec);
  }
  return { images, problems };
}
