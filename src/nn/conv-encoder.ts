/**
 * A per-camera image encoder as in DrQ and ResFiT: 3×3 convolutions of stride 2 (padding 1) with
 * ReLU, flattened, then a linear trunk with LayerNorm and tanh into a small embedding. An 84×84
 * camera with channels [16, 32, 32, 32] is 84 → 42 → 21 → 11 → 6 pixels, ~4.2 M multiply-adds
 * per image forward: BC on tens of thousands of frames stays within minutes on two CPU cores
 * (BENCHMARKS.md, "BC from pixels").
 *
 * Images enter as float NCHW in [0, 1] (the LayerNorm'd trunk makes the scale of the rest moot);
 * the graph centres them at 0.5. Every op here keeps the batch axis out of its constants, so the
 * same forward pass, with its parameters baked in, exports with a dynamic batch axis.
 */
import { attr } from '../util/onnx-proto.js';
import type { Rng } from '../util/rng.js';
import type { Value } from './graph.js';
import { convApply, convParamSpecs, LAYER_NORM_EPS, type ConvSpec } from './layers.js';
import {
  add,
  concat,
  conv2d,
  div,
  exp,
  layerNorm,
  matmul,
  max,
  mul,
  reshape,
  stopGradient,
  sub,
  sum,
  tanh,
} from './ops.js';
import type { ParamLayout, ParamSpec } from './params.js';

export interface ConvEncoderSpec {
  /** Input image size (3 channels, NCHW). */
  height: number;
  width: number;
  /** Output channels of each 3×3 stride-2 convolution. */
  channels: readonly number[];
  /** Embedding width (the trunk's output). */
  features: number;
  /**
   * How the last feature map becomes the trunk's input. 'flatten' (default): every cell, so where
   * something is in the image is known only to the width of a cell (14 px on the 6×6 map of an
   * 84×84 image). 'spatial-softmax' (Levine et al. 2016; robomimic, Diffusion Policy): a 1×1
   * convolution to as many keypoint maps as the last layer has channels, a softmax over each map
   * and its expected (x, y), so positions reach the trunk as numbers with sub-cell precision.
   */
  pooling?: ConvEncoderPooling;
}

export type ConvEncoderPooling = 'flatten' | 'spatial-softmax';
export const CONV_ENCODER_POOLINGS: readonly ConvEncoderPooling[] = ['flatten', 'spatial-softmax'];

const KERNEL = 3;
const STRIDE = 2;
const PAD = 1;

const convOut = (n: number): number => Math.floor((n + 2 * PAD - KERNEL) / STRIDE) + 1;

function convLayers(spec: ConvEncoderSpec): ConvSpec[] {
  return spec.channels.map((outChannels, i) => ({
    inChannels: i === 0 ? 3 : spec.channels[i - 1],
    outChannels,
    kernel: KERNEL,
    stride: STRIDE,
    pad: PAD,
  }));
}

/** Channels, height and width after the convolutions. */
export function convEncoderGrid(spec: ConvEncoderSpec): { channels: number; height: number; width: number } {
  let h = spec.height;
  let w = spec.width;
  for (let i = 0; i < spec.channels.length; i++) {
    h = convOut(h);
    w = convOut(w);
  }
  return { channels: spec.channels[spec.channels.length - 1] ?? 3, height: h, width: w };
}

/** Multiply-adds of one image through the encoder (forward). */
export function convEncoderMacs(spec: ConvEncoderSpec): number {
  let h = spec.height;
  let w = spec.width;
  let c = 3;
  let macs = 0;
  for (const o of spec.channels) {
    h = convOut(h);
    w = convOut(w);
    macs += h * w * o * c * KERNEL * KERNEL;
    c = o;
  }
  if (spec.pooling === 'spatial-softmax') return macs + h * w * c * c + 2 * c * spec.features;
  return macs + h * w * c * spec.features;
}

export function validateConvEncoderSpec(spec: ConvEncoderSpec): void {
  const positive = (n: number): boolean => Number.isInteger(n) && n > 0;
  if (!positive(spec.height) || !positive(spec.width))
    throw new Error(`conv encoder: image size ${spec.width}x${spec.height} is not positive`);
  if (spec.channels.length === 0 || !spec.channels.every(positive))
    throw new Error(`conv encoder: channels [${spec.channels.join(', ')}] must be positive integers`);
  if (!positive(spec.features)) throw new Error(`conv encoder: ${spec.features} features`);
  if (spec.pooling !== undefined && !CONV_ENCODER_POOLINGS.includes(spec.pooling))
    throw new Error(
      `conv encoder: pooling ${String(spec.pooling)} is not one of ${CONV_ENCODER_POOLINGS.join(', ')}`,
    );
}

/** Width of the trunk's input: every cell of the last map, or an (x, y) per keypoint map. */
function pooledWidth(spec: ConvEncoderSpec): number {
  const grid = convEncoderGrid(spec);
  return spec.pooling === 'spatial-softmax' ? 2 * grid.channels : grid.channels * grid.height * grid.width;
}

/**
 * Parameter specs: `<prefix>conv<i>/w`, `/b` per convolution, `<prefix>keypoints/w` (the 1×1
 * convolution) with spatial-softmax pooling, then `<prefix>trunk/w, b, gamma, beta`.
 */
export function convEncoderParamSpecs(spec: ConvEncoderSpec, prefix: string): ParamSpec[] {
  validateConvEncoderSpec(spec);
  const out = convLayers(spec).flatMap((conv, i) => convParamSpecs(`${prefix}conv${i}`, conv));
  // No bias: a constant added to a whole map does not move its softmax.
  if (spec.pooling === 'spatial-softmax')
    out.push(convParamSpecs(`${prefix}keypoints`, keypointConv(spec))[0]);
  out.push(
    { name: `${prefix}trunk/w`, shape: [pooledWidth(spec), spec.features] },
    { name: `${prefix}trunk/b`, shape: [spec.features] },
    { name: `${prefix}trunk/gamma`, shape: [spec.features] },
    { name: `${prefix}trunk/beta`, shape: [spec.features] },
  );
  return out;
}

/** He-normal convolutions (ReLU follows), a 1/√fan-in trunk, zero biases, LayerNorm γ = 1. */
export function initConvEncoder(
  layout: ParamLayout,
  flat: Float32Array,
  spec: ConvEncoderSpec,
  prefix: string,
  rng: Rng,
): void {
  convLayers(spec).forEach((conv, i) => {
    const w = layout.view(flat, `${prefix}conv${i}/w`);
    const scale = Math.sqrt(2 / (conv.inChannels * KERNEL * KERNEL));
    for (let k = 0; k < w.length; k++) w[k] = rng.normal(0, scale);
  });
  if (spec.pooling === 'spatial-softmax') {
    const kp = layout.view(flat, `${prefix}keypoints/w`);
    const scale = Math.sqrt(1 / keypointConv(spec).inChannels);
    for (let k = 0; k < kp.length; k++) kp[k] = rng.normal(0, scale);
  }
  const w = layout.view(flat, `${prefix}trunk/w`);
  const fanIn = layout.entry(`${prefix}trunk/w`).shape[0];
  for (let k = 0; k < w.length; k++) w[k] = rng.normal(0, Math.sqrt(1 / fanIn));
  layout.view(flat, `${prefix}trunk/gamma`).fill(1);
}

/** images [B, 3, H, W] in [0, 1] → embedding [B, features] in (−1, 1). */
export function convEncoderApply(
  params: ReadonlyMap<string, Value>,
  images: Value,
  spec: ConvEncoderSpec,
  prefix: string,
): Value {
  const p = (name: string): Value => {
    const v = params.get(prefix + name);
    if (!v) throw new Error(`conv encoder: missing parameter ${prefix}${name}`);
    return v;
  };
  const [, c, h, w] = images.shape;
  if (images.rank !== 4 || c !== 3 || h !== spec.height || w !== spec.width)
    throw new Error(`conv encoder: ${images} is not [B, 3, ${spec.height}, ${spec.width}]`);
  let x = sub(images, 0.5);
  convLayers(spec).forEach((conv, i) => {
    x = convApply(params, `${prefix}conv${i}`, x, conv);
  });
  const pooled =
    spec.pooling === 'spatial-softmax'
      ? spatialSoftmax(conv2d(x, p('keypoints/w'), null, { stride: 1, pad: 0 }))
      : flattenBatch(x);
  const z = add(matmul(pooled, p('trunk/w')), p('trunk/b'));
  return tanh(layerNorm(z, p('trunk/gamma'), p('trunk/beta'), LAYER_NORM_EPS));
}

/** The 1×1 convolution from the last feature map to the keypoint maps (one per channel). */
function keypointConv(spec: ConvEncoderSpec): ConvSpec {
  const c = convEncoderGrid(spec).channels;
  return { inChannels: c, outChannels: c, kernel: 1, stride: 1, pad: 0 };
}

/**
 * Keypoint maps [B, K, h, w] → [B, 2K]: per map, a softmax over its cells and the expected x then
 * y (cell centres in [−1, 1]), all x before all y. The max subtracted before Exp is held constant
 * for the gradient: the softmax does not depend on it.
 */
export function spatialSoftmax(maps: Value): Value {
  const g = maps.graph;
  const [, k, h, w] = maps.shape;
  const logits = reshapeKeepBatch(maps, [k, h * w]);
  const e = exp(sub(logits, stopGradient(max(logits, [2], true))));
  const prob = div(e, sum(e, [2], true));
  const xs = new Float32Array(h * w);
  const ys = new Float32Array(h * w);
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      xs[r * w + c] = w > 1 ? (2 * c) / (w - 1) - 1 : 0;
      ys[r * w + c] = h > 1 ? (2 * r) / (h - 1) - 1 : 0;
    }
  }
  const ex = sum(mul(prob, g.constant(xs, [h * w])), [2]);
  const ey = sum(mul(prob, g.constant(ys, [h * w])), [2]);
  return concat([ex, ey], 1);
}

/**
 * [B, …] → [B, ...shape] as ONNX Reshape with a 0 for the batch axis (copied from the input), so
 * the exported graph names no batch size; the gradient reshapes back.
 */
function reshapeKeepBatch(x: Value, shape: readonly number[]): Value {
  const g = x.graph;
  const y = g.emit1('Reshape', [x, g.ints([0, ...shape])], { shape: [x.shape[0], ...shape] });
  return g.record({ op: 'Reshape', inputs: [x], output: y, backward: (gy) => [reshape(gy, x.shape)] });
}

/**
 * [B, d1, d2, …] → [B, d1·d2·…] as ONNX Flatten(axis = 1), which names no batch size (the
 * engine's `reshape` writes the full target shape into the graph); the gradient reshapes back.
 */
export function flattenBatch(x: Value): Value {
  const g = x.graph;
  const y = g.emit1('Flatten', [x], { shape: [x.shape[0], x.size / x.shape[0]] }, [attr.int('axis', 1)]);
  return g.record({ op: 'Flatten', inputs: [x], output: y, backward: (gy) => [reshape(gy, x.shape)] });
}
