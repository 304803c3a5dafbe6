/**
 * Layers built from the op set: MLPs with optional LayerNorm (one network, or an ensemble of H
 * heads whose weights are stacked [H, in, out] so each layer is one batched product), and conv
 * layers. Parameter names follow the checkpoint convention `l<k>/w`, `l<k>/b`, `l<k>/gamma`,
 * `l<k>/beta`, in that order per layer.
 */
import type { Value } from './graph.js';
import { add, conv2d, layerNorm, matmul, relu } from './ops.js';
import type { ParamSpec } from './params.js';

export const LAYER_NORM_EPS = 1e-5;

export interface MlpSpec {
  inDim: number;
  hidden: readonly number[];
  outDim: number;
  /** LayerNorm after every hidden affine map. */
  layerNorm: boolean;
  /** Ensemble size H: weights [H,in,out], biases and LayerNorm parameters [H,1,out]. */
  heads?: number;
}

export function mlpWidths(spec: MlpSpec): number[] {
  return [spec.inDim, ...spec.hidden, spec.outDim];
}

/** Parameter specs in checkpoint order; `prefix` (e.g. 'value/') lets networks share one layout. */
export function mlpParamSpecs(spec: MlpSpec, prefix = ''): ParamSpec[] {
  const widths = mlpWidths(spec);
  const H = spec.heads;
  const out: ParamSpec[] = [];
  for (let l = 0; l + 1 < widths.length; l++) {
    const [i, o] = [widths[l], widths[l + 1]];
    const vec = H ? [H, 1, o] : [o];
    out.push(
      { name: `${prefix}l${l}/w`, shape: H ? [H, i, o] : [i, o] },
      { name: `${prefix}l${l}/b`, shape: vec },
    );
    if (spec.layerNorm && l + 2 < widths.length)
      out.push({ name: `${prefix}l${l}/gamma`, shape: vec }, { name: `${prefix}l${l}/beta`, shape: vec });
  }
  return out;
}

/**
 * Hidden layers relu(LN(x·W + b)), then the linear output layer. x is [B, in]; an ensemble returns
 * [H, B, out] (the first layer broadcasts the shared input against [H, in, out]).
 */
export function mlpApply(params: ReadonlyMap<string, Value>, x: Value, spec: MlpSpec, prefix = ''): Value {
  const layers = spec.hidden.length + 1;
  const p = (name: string): Value => {
    const v = params.get(prefix + name);
    if (!v) throw new Error(`mlp: missing parameter ${prefix}${name}`);
    return v;
  };
  let h = x;
  for (let l = 0; l < layers; l++) {
    h = add(matmul(h, p(`l${l}/w`)), p(`l${l}/b`));
    if (l + 1 < layers) {
      if (spec.layerNorm) h = layerNorm(h, p(`l${l}/gamma`), p(`l${l}/beta`), LAYER_NORM_EPS);
      h = relu(h);
    }
  }
  return h;
}

export interface ConvSpec {
  inChannels: number;
  outChannels: number;
  kernel: number;
  stride: number;
  pad: number;
}

export function convParamSpecs(prefix: string, spec: ConvSpec): ParamSpec[] {
  return [
    { name: `${prefix}/w`, shape: [spec.outChannels, spec.inChannels, spec.kernel, spec.kernel] },
    { name: `${prefix}/b`, shape: [spec.outChannels] },
  ];
}

/** relu(conv2d(x, W, b)) on NCHW x. */
export function convApply(
  params: ReadonlyMap<string, Value>,
  prefix: string,
  x: Value,
  spec: ConvSpec,
): Value {
  const w = params.get(`${prefix}/w`);
  const b = params.get(`${prefix}/b`);
  if (!w || !b) throw new Error(`conv: missing parameters ${prefix}/w or ${prefix}/b`);
  return relu(conv2d(x, w, b, { stride: spec.stride, pad: spec.pad }));
}
