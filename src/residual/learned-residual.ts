/**
 * A residual with a learned encoder (encoder mode 'learned') outside the learner: as the learner
 * publishes it (an MlpPolicySpec whose first input is the cameras' features, plus the encoders'
 * parameters), as the acting side runs it (a plain TypeScript conv forward from the uint8 frames,
 * no engine, like the MLP), and as the ONNX file it exports: inputs `observation.images.<camera>`
 * (float [B, 3, H, W] RGB in [0, 1], `resrt.images` as `resrt bc --cameras` bases write it),
 * `obs`, `base_action`, output `residual`, metadata `resrt.residual_encoder=learned`.
 */
import type { CameraFrames, MlpPolicySpec } from '../types.js';
import { Graph, LAYER_NORM_EPS, convEncoderApply, convEncoderGrid, op, type Value } from '../nn/index.js';
import { IMAGES_META_KEY } from '../runtime/image-inputs.js';
import { batchFreeModel, MetaKey, RESRT_METADATA_FORMAT } from '../runtime/onnx-export.js';
import { RESIDUAL_ENCODER_KEY } from '../runtime/camera-residual.js';
import { ResrtError } from '../util/errors.js';
import { writeFileAtomic } from '../util/files.js';
import { encodeModel, graphChecksum } from '../util/onnx-proto.js';
import type { LearnedCamera } from './learned-encoder.js';

/** The published spec's input that carries the learned features (the acting side fills it). */
export const LEARNED_FEATURES_INPUT = 'learned_features';
/** The exported file's image input of a camera (the LeRobot name, as `resrt bc --cameras` writes). */
export const residualImageInput = (camera: string): string => `observation.images.${camera}`;

/** The learned encoders as data: cameras and their parameters in the layout `enc<k>/…`. */
export interface PublishedEncoder {
  cameras: LearnedCamera[];
  /** Name (e.g. `enc0/conv1/w`) → shape and values (copies). */
  params: Record<string, { shape: number[]; data: Float32Array }>;
}

/** The features of one observation's frames (all cameras, concatenated), in float64 then rounded. */
export function encodeFrames(encoder: PublishedEncoder, frames: CameraFrames | undefined): Float32Array {
  const F = encoder.cameras.reduce((s, c) => s + c.encoder.features, 0);
  const out = new Float32Array(F);
  let at = 0;
  encoder.cameras.forEach((c, k) => {
    const frame = frames?.[c.name];
    const { height: H, width: W } = c.encoder;
    if (!frame || frame.width !== W || frame.height !== H || frame.channels !== 3) {
      throw new ResrtError(
        `the residual's learned encoder reads camera ${c.name} as ${W}x${H} RGB, and the observation ${frame ? `has a ${frame.width}x${frame.height}x${frame.channels} frame` : 'has no frame'} of it`,
        'run the residual on the task or robot (and cameras) it was trained on',
      );
    }
    const p = (name: string): Float32Array => {
      const v = encoder.params[`enc${k}/${name}`];
      if (!v) throw new Error(`internal: learned encoder without enc${k}/${name}`);
      return v.data;
    };
    // HWC uint8 → CHW in [0, 1], centred at 0.5 as the graph does.
    let x: Float64Array = new Float64Array(3 * H * W);
    for (let y = 0; y < H; y++)
      for (let xx = 0; xx < W; xx++)
        for (let ch = 0; ch < 3; ch++)
          x[(ch * H + y) * W + xx] = Math.fround(frame.data[(y * W + xx) * 3 + ch] / 255) - 0.5;
    let shape = { c: 3, h: H, w: W };
    c.encoder.channels.forEach((o, i) => {
      const conv = convStride2(x, shape, p(`conv${i}/w`), p(`conv${i}/b`), o);
      x = conv.out;
      shape = conv.shape;
    });
    const grid = convEncoderGrid(c.encoder);
    const flat = grid.channels * grid.height * grid.width;
    const Fc = c.encoder.features;
    const w = p('trunk/w');
    const b = p('trunk/b');
    // Row by row through w (it is [flat, Fc]); each z[j] still sums b[j] then i = 0, 1, … in order.
    const z = Float64Array.from(b.subarray(0, Fc));
    for (let i = 0; i < flat; i++) {
      const xi = x[i];
      const row = i * Fc;
      for (let j = 0; j < Fc; j++) z[j] += xi * w[row + j];
    }
    let mean = 0;
    for (const v of z) mean += v / Fc;
    let variance = 0;
    for (const v of z) variance += (v - mean) ** 2 / Fc;
    const gamma = p('trunk/gamma');
    const beta = p('trunk/beta');
    for (let j = 0; j < Fc; j++)
      out[at + j] = Math.tanh(((z[j] - mean) / Math.sqrt(variance + LAYER_NORM_EPS)) * gamma[j] + beta[j]);
    at += Fc;
  });
  return out;
}

/**
 * relu(conv 3×3, stride 2, zero padding 1) on one CHW image, through its patches: each output
 * position's 3×3 window of every input channel (zeros outside the image) laid out in the weights'
 * order, so that each output is its bias plus one contiguous dot product, summed channel by channel
 * and tap by tap as a direct loop would. Acting runs this once per step, evaluation included.
 */
function convStride2(
  x: Float64Array,
  s: { c: number; h: number; w: number },
  w: Float32Array,
  b: Float32Array,
  outChannels: number,
): { out: Float64Array; shape: { c: number; h: number; w: number } } {
  const oh = Math.floor((s.h - 1) / 2) + 1;
  const ow = Math.floor((s.w - 1) / 2) + 1;
  const positions = oh * ow;
  const K = s.c * 9;
  const patches = new Float64Array(positions * K);
  for (let i = 0; i < oh; i++)
    for (let j = 0; j < ow; j++) {
      const row = (i * ow + j) * K;
      for (let ci = 0; ci < s.c; ci++)
        for (let a = 0; a < 3; a++) {
          const y = 2 * i + a - 1;
          if (y < 0 || y >= s.h) continue;
          for (let e = 0; e < 3; e++) {
            const z = 2 * j + e - 1;
            if (z >= 0 && z < s.w) patches[row + ci * 9 + a * 3 + e] = x[(ci * s.h + y) * s.w + z];
          }
        }
    }
  const out = new Float64Array(outChannels * positions);
  for (let o = 0; o < outChannels; o++) {
    const wo = o * K;
    for (let p = 0; p < positions; p++) {
      const row = p * K;
      let sum = b[o];
      for (let k = 0; k < K; k++) sum += patches[row + k] * w[wo + k];
      out[o * positions + p] = Math.max(0, sum);
    }
  }
  return { out, shape: { c: outChannels, h: oh, w: ow } };
}

/**
 * The residual ONNX with its encoder: the published spec's MLP (normalization baked, tanh ×
 * actionScale) over [encoder(images) | obs | base_action], the parameters as constants.
 */
export function exportLearnedResidualOnnx(
  spec: MlpPolicySpec,
  encoder: PublishedEncoder,
  path?: string,
): Uint8Array {
  const names = spec.inputs.map((i) => i.name);
  if (names[0] !== LEARNED_FEATURES_INPUT || !names.includes('obs') || !names.includes('base_action'))
    throw new Error(`internal: a learned residual spec has inputs ${names.join(', ')}`);
  const g = new Graph('resrt_residual');
  const params = new Map<string, Value>();
  for (const [name, p] of Object.entries(encoder.params)) params.set(name, g.constant(p.data, p.shape));
  const images = encoder.cameras.map((c) =>
    g.input(residualImageInput(c.name), [1, 3, c.encoder.height, c.encoder.width]),
  );
  const features = encoder.cameras.map((c, k) => convEncoderApply(params, images[k], c.encoder, `enc${k}/`));
  const rest = spec.inputs.slice(1).map((i) => g.input(i.name, [1, i.dim]));
  let x = op.concat([...features, ...rest], 1);
  if (spec.inputNormalization) {
    const { mean, std } = spec.inputNormalization;
    x = op.div(op.sub(x, g.constant(mean, [mean.length])), g.constant(std, [std.length]));
  }
  spec.layers.forEach((layer) => {
    x = op.add(
      op.matmul(x, g.constant(layer.weight, [layer.inDim, layer.outDim])),
      g.constant(layer.bias, [layer.outDim]),
    );
    if (layer.layerNorm)
      x = op.layerNorm(
        x,
        g.constant(layer.layerNorm.gamma, [layer.outDim]),
        g.constant(layer.layerNorm.beta, [layer.outDim]),
        layer.layerNorm.epsilon,
      );
    if (layer.activation === 'relu') x = op.relu(x);
    else if (layer.activation === 'tanh') x = op.tanh(x);
  });
  const scale = spec.output.tanhScale;
  if (scale === undefined) throw new Error('internal: a learned residual spec without tanhScale');
  g.output(spec.output.name, op.mul(op.tanh(x), scale));

  const model = batchFreeModel(g.encode());
  const imageMeta = Object.fromEntries(
    encoder.cameras.map((c) => [
      residualImageInput(c.name),
      { camera: c.name, scale: 1 / 255, resize: 'crop-resize', layout: 'NCHW', channel_order: 'RGB' },
    ]),
  );
  const meta: Record<string, string> = {
    ...spec.metadata,
    [MetaKey.format]: RESRT_METADATA_FORMAT,
    [MetaKey.actionDim]: String(spec.output.actionDim),
    [MetaKey.chunkLength]: '1',
    [MetaKey.tanhScale]: String(scale),
    [MetaKey.normalizationBaked]: spec.inputNormalization ? 'baked' : 'none',
    [RESIDUAL_ENCODER_KEY]: 'learned',
    [IMAGES_META_KEY]: JSON.stringify(imageMeta),
  };
  model.metadataProps = Object.entries(meta).map(([key, value]) => ({ key, value }));
  const checksum = graphChecksum(encodeModel(model));
  if (!checksum) throw new Error('internal: encoded residual has no graph');
  model.metadataProps.push({ key: MetaKey.checksum, value: checksum });
  const bytes = encodeModel(model);
  if (path) writeFileAtomic(path, bytes);
  return bytes;
}
