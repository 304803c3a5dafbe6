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
import { add, layerNorm, matmul, reshape, sub, tanh } from './ops.js';
import type { ParamLayout, ParamSpec } from './params.js';

export interface ConvEncoderSpec {
  /** Input image size (3 channels, NCHW). */
  height: number;
  width: number;
  /** Output channels of each 3×3 stride-2 convolution. */
  channels: readonly number[];
  /** Embedding width (the trunk's output). */
  features: number;
}

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
  return macs + h * w * c * spec.features;
}

export function validateConvEncoderSpec(spec: ConvEncoderSpec): void {
  const positive = (n: number): boolean => Number.isInteger(n) && n > 0;
  if (!positive(spec.height) || !positive(spec.width))
    throw new Error(`conv encoder: image size ${spec.width}x${spec.height} is not positive`);
  if (spec.channels.length === 0 || !spec.channels.every(positive))
    throw new Error(`conv encoder: channels [${spec.channels.join(', ')}] must be positive integers`);
  if (!positive(spec.features)) throw new Error(`conv encoder: ${spec.features} features`);
}

/** Parameter specs: `<prefix>conv<i>/w`, `/b` per convolution, then `<prefix>trunk/w, b, gamma, beta`. */
export function convEncoderParamSpecs(spec: ConvEncoderSpec, prefix: string): ParamSpec[] {
  validateConvEncoderSpec(spec);
  const out = convLayers(spec).flatMap((conv, i) => convParamSpecs(`${prefix}conv${i}`, conv));
  const grid = convEncoderGrid(spec);
  const flat = grid.channels * grid.height * grid.width;
  out.push(
    { name: `${prefix}trunk/w`, shape: [flat, spec.features] },
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
  const z = add(matmul(flattenBatch(x), p('trunk/w')), p('trunk/b'));
  return tanh(layerNorm(z, p('trunk/gamma'), p('trunk/beta'), LAYER_NORM_EPS));
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
