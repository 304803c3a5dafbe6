/**
 * Camera frame -> image input tensor of a visuomotor policy: centre crop to the model's aspect
 * ratio, bilinear resize (half-pixel centres, as torch's F.interpolate(align_corners=False)
 * without antialiasing), channel order, layout (NCHW or NHWC), dtype (float32 or uint8), and for
 * float inputs x * scale, then (x - mean[c]) / std[c] per channel.
 */
import type { CameraFrame } from '../types.js';
import { ResrtError } from '../util/errors.js';

export type ImageLayout = 'NCHW' | 'NHWC';
export type ImageResize = 'crop-resize' | 'stretch' | 'none';

export interface ImagePreprocess {
  /** Graph input name. */
  input: string;
  /** Camera (observation part) that feeds it. */
  camera: string;
  layout: ImageLayout;
  dtype: 'float32' | 'uint8';
  height: number;
  width: number;
  channelOrder: 'RGB' | 'BGR';
  /** Float inputs: multiply the 0-255 value by this first (1/255 gives [0, 1]). */
  scale: number;
  mean: [number, number, number];
  std: [number, number, number];
  /**
   * When the frame's size differs: centre-crop to the model's aspect ratio, then resize (default);
   * resize without cropping; or refuse.
   */
  resize: ImageResize;
}

/** Number of tensor elements per sample. */
export function imageSize(p: ImagePreprocess): number {
  return p.height * p.width * 3;
}

/** The part of the frame used: a centred window with the model's aspect ratio (or all of it). */
function cropWindow(
  frame: { width: number; height: number },
  p: ImagePreprocess,
): { x0: number; y0: number; w: number; h: number } {
  if (p.resize !== 'crop-resize') return { x0: 0, y0: 0, w: frame.width, h: frame.height };
  const target = p.width / p.height;
  const own = frame.width / frame.height;
  if (Math.abs(own - target) < 1e-9) return { x0: 0, y0: 0, w: frame.width, h: frame.height };
  if (own > target) {
    const w = frame.height * target;
    return { x0: (frame.width - w) / 2, y0: 0, w, h: frame.height };
  }
  const h = frame.width / target;
  return { x0: 0, y0: (frame.height - h) / 2, w: frame.width, h };
}

/** Checks a frame before it is used; the message names the camera, the input and the fix. */
export function checkFrame(frame: CameraFrame | undefined, p: ImagePreprocess): CameraFrame {
  if (!frame) {
    throw new ResrtError(
      `the policy's input '${p.input}' needs camera "${p.camera}" and no frame from it was given`,
      `provide frames["${p.camera}"] (a camera of that name on the task or robot), or map '${p.input}' to another camera with the input mapping`,
    );
  }
  if (frame.channels !== 3 || frame.data.length !== frame.width * frame.height * 3) {
    throw new ResrtError(
      `camera "${p.camera}" gave a frame with ${frame.channels} channels (${frame.data.length} bytes for ${frame.width}x${frame.height}); input '${p.input}' takes RGB`,
      'deliver 3-channel RGB frames (convert grey or RGBA to RGB at the source)',
    );
  }
  if (p.resize === 'none' && (frame.width !== p.width || frame.height !== p.height)) {
    throw new ResrtError(
      `camera "${p.camera}" gives ${frame.width}x${frame.height} frames; input '${p.input}' takes ${p.width}x${p.height} and resizing is off`,
      `set the camera to ${p.width}x${p.height}, or allow resizing (resize: "crop-resize")`,
    );
  }
  return frame;
}

/** Writes one preprocessed sample of `frame` into `out` at `offset` (imageSize(p) elements). */
export function preprocessFrame(
  frame: CameraFrame,
  p: ImagePreprocess,
  out: Float32Array | Uint8Array,
  offset: number,
): void {
  checkFrame(frame, p);
  const { width: W, height: H } = p;
  const win = cropWindow(frame, p);
  const sx = win.w / W;
  const sy = win.h / H;
  const same = sx === 1 && sy === 1 && win.x0 === 0 && win.y0 === 0;
  const fw = frame.width;
  const src = frame.data;
  const isFloat = out instanceof Float32Array;
  const order = p.channelOrder === 'BGR' ? [2, 1, 0] : [0, 1, 2];
  const chw = p.layout === 'NCHW';
  for (let y = 0; y < H; y++) {
    // Half-pixel centres: output pixel y samples source row (y + 0.5) * sy - 0.5 of the window.
    const fy = Math.min(Math.max(win.y0 + (y + 0.5) * sy - 0.5, 0), frame.height - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, frame.height - 1);
    const wy = fy - y0;
    for (let x = 0; x < W; x++) {
      const fx = Math.min(Math.max(win.x0 + (x + 0.5) * sx - 0.5, 0), fw - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, fw - 1);
      const wx = fx - x0;
      for (let c = 0; c < 3; c++) {
        const k = order[c];
        let v: number;
        if (same) v = src[3 * (y * fw + x) + k];
        else {
          const top = src[3 * (y0 * fw + x0) + k] * (1 - wx) + src[3 * (y0 * fw + x1) + k] * wx;
          const bottom = src[3 * (y1 * fw + x0) + k] * (1 - wx) + src[3 * (y1 * fw + x1) + k] * wx;
          v = top * (1 - wy) + bottom * wy;
        }
        const at = offset + (chw ? c * H * W + y * W + x : (y * W + x) * 3 + c);
        if (isFloat) out[at] = (v * p.scale - p.mean[c]) / p.std[c];
        else out[at] = Math.round(v);
      }
    }
  }
}
