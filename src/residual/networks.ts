/**
 * The learner's networks as engine parameter layouts and their initial values: the residual actor
 * (zero-initialised last layer, so the composed policy starts as the base) and the critic ensemble
 * held as one set of [heads, in, out] weights (one batched product per layer instead of one per
 * head). Weights live in flat Float32Arrays (src/nn/params.ts); these helpers name, initialise and
 * read them.
 */
import type { DenseLayerSpec } from '../types.js';
import { LAYER_NORM_EPS, mlpParamSpecs, mlpWidths, ParamLayout, type MlpSpec } from '../nn/index.js';
import { Rng } from '../util/rng.js';

export { LAYER_NORM_EPS };

/**
 * A network's shape and parameter layout. Its tensors are named `<prefix>l<k>/w` etc.; a prefix
 * lets several networks share one layout (PPO's policy and value train as one vector).
 */
export interface Network {
  name: string;
  spec: MlpSpec;
  layout: ParamLayout;
  prefix: string;
}

export function network(name: string, spec: MlpSpec, layout?: ParamLayout, prefix = ''): Network {
  return { name, spec, layout: layout ?? new ParamLayout(mlpParamSpecs(spec, prefix)), prefix };
}

function uniform(rng: Rng, out: Float32Array, limit: number): void {
  for (let i = 0; i < out.length; i++) out[i] = (rng.uniform() * 2 - 1) * limit;
}

/**
 * Initial parameters (into `flat` when given, else a new vector): weights and biases uniform in ±1/√fan_in, LayerNorm γ = 1 and β = 0. With
 * `zeroLast` the output layer starts at exactly zero (the residual actor: tanh(0)·scale = 0, so
 * π_base+res = π_base). Values are drawn layer by layer, weights before biases, from `seed`.
 */
export function initParams(net: Network, seed: number, zeroLast: boolean, flat?: Float32Array): Float32Array {
  const rng = new Rng(seed);
  const out = flat ?? new Float32Array(net.layout.size);
  const widths = mlpWidths(net.spec);
  const view = (name: string): Float32Array => net.layout.view(out, net.prefix + name);
  for (let l = 0; l + 1 < widths.length; l++) {
    const last = l + 2 === widths.length;
    const lim = 1 / Math.sqrt(widths[l]);
    if (!(last && zeroLast)) {
      uniform(rng, view(`l${l}/w`), lim);
      uniform(rng, view(`l${l}/b`), lim);
    }
    if (!last && net.spec.layerNorm) view(`l${l}/gamma`).fill(1);
  }
  return out;
}

/**
 * Dense layer specs (copies) of one network, or of head `head` of an ensemble, for MlpPolicySpec
 * and the plain-TypeScript forward pass. Hidden layers are ReLU, the last one linear.
 */
export function denseSpecs(net: Network, flat: Float32Array, head?: number): DenseLayerSpec[] {
  const widths = mlpWidths(net.spec);
  const H = net.spec.heads;
  if (H !== undefined && (head === undefined || head < 0 || head >= H))
    throw new Error(`denseSpecs: ${net.name} has ${H} heads; pass one of them`);
  const part = (name: string, size: number): Float32Array => {
    const v = net.layout.view(flat, net.prefix + name);
    return (H === undefined ? v : v.subarray(head! * size, (head! + 1) * size)).slice();
  };
  return widths.slice(0, -1).map((inDim, l) => {
    const outDim = widths[l + 1];
    const last = l + 2 === widths.length;
    const spec: DenseLayerSpec = {
      inDim,
      outDim,
      weight: part(`l${l}/w`, inDim * outDim),
      bias: part(`l${l}/b`, outDim),
      activation: last ? 'linear' : 'relu',
    };
    if (!last && net.spec.layerNorm) {
      spec.layerNorm = {
        gamma: part(`l${l}/gamma`, outDim),
        beta: part(`l${l}/beta`, outDim),
        epsilon: LAYER_NORM_EPS,
      };
    }
    return spec;
  });
}
