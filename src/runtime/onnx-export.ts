/**
 * MlpPolicySpec -> ONNX (opset 17, IR 8, dynamic batch axis), plus a plain-TypeScript forward pass
 * of the same spec that tests use as the reference for exported files.
 */
import type { DenseLayerSpec, MlpPolicySpec } from '../types.js';
import { ResrtError } from '../util/errors.js';
import {
  attr,
  decodeModel,
  encodeModel,
  floatTensor,
  floatValueInfo,
  graphChecksum,
  int64Tensor,
  type OnnxModel,
  type OnnxNode,
  type OnnxTensor,
  type OnnxValueInfo,
} from '../util/onnx-proto.js';

export const ONNX_OPSET = 17;
export const ONNX_IR_VERSION = 8;
/** Version of the resrt metadata convention written into `resrt.format`. */
export const RESRT_METADATA_FORMAT = '1';
export const BATCH_AXIS = 'batch';

/**
 * A graph the training engine built at batch 1 as an ONNX model whose inputs and outputs name a
 * dynamic batch axis instead; valid because every engine op leaves the batch axis out of its
 * constants (each caller's export check runs another batch size).
 */
export function batchFreeModel(encodedGraph: Uint8Array): OnnxModel {
  const model = decodeModel(encodedGraph);
  const dynamic = (v: OnnxValueInfo): void => {
    const dims = v.type?.tensorType?.shape?.dim;
    if (dims?.length) dims[0] = { dimParam: BATCH_AXIS };
  };
  model.graph.input.forEach(dynamic);
  model.graph.output.forEach(dynamic);
  model.producerName = 'resrt';
  model.producerVersion = RESRT_METADATA_FORMAT;
  return model;
}

/** Metadata keys of the convention (docs/onnx-policies.md). */
export const MetaKey = {
  format: 'resrt.format',
  kind: 'resrt.kind',
  obsDim: 'resrt.obs_dim',
  actionDim: 'resrt.action_dim',
  obsNames: 'resrt.obs_names',
  actionNames: 'resrt.action_names',
  chunkLength: 'resrt.chunk_length',
  controlHz: 'resrt.control_hz',
  actionLow: 'resrt.action_low',
  actionHigh: 'resrt.action_high',
  obsMean: 'resrt.obs_mean',
  obsStd: 'resrt.obs_std',
  version: 'resrt.version',
  checksum: 'resrt.checksum',
  normalizationBaked: 'resrt.obs_normalization',
  tanhScale: 'resrt.tanh_scale',
  /** A visuomotor base's second output: its camera embedding (for residuals that reuse it). */
  embeddingOutput: 'resrt.embedding_output',
  embeddingDim: 'resrt.embedding_dim',
  /** A residual that reads the cameras: its encoder mode (base-embedding, file, learned). */
  residualEncoder: 'resrt.residual_encoder',
} as const;

function specError(message: string, hint = 'fix the MlpPolicySpec before exporting'): ResrtError {
  return new ResrtError(`cannot export MLP: ${message}`, hint);
}

function checkFinite(label: string, values: Float32Array): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i]))
      throw specError(
        `${label}[${i}] is ${values[i]}`,
        'retrain or sanitize the weights; ONNX would propagate it to every action',
      );
  }
}

/** Validates the spec's internal consistency; returns the total input width. */
export function validateMlpSpec(spec: MlpPolicySpec): number {
  if (spec.inputs.length === 0) throw specError('no inputs');
  const names = new Set<string>();
  for (const input of spec.inputs) {
    if (!input.name) throw specError('an input has an empty name');
    if (names.has(input.name)) throw specError(`duplicate input name '${input.name}'`);
    names.add(input.name);
    if (!Number.isInteger(input.dim) || input.dim <= 0)
      throw specError(`input '${input.name}' has dim ${input.dim}`);
  }
  if (!spec.output.name) throw specError('the output has an empty name');
  if (names.has(spec.output.name)) throw specError(`output name '${spec.output.name}' is also an input name`);
  const inDim = spec.inputs.reduce((s, i) => s + i.dim, 0);
  const { actionDim, chunkLength } = spec.output;
  if (!Number.isInteger(actionDim) || actionDim <= 0) throw specError(`output.actionDim is ${actionDim}`);
  if (!Number.isInteger(chunkLength) || chunkLength <= 0)
    throw specError(`output.chunkLength is ${chunkLength}`);
  const norm = spec.inputNormalization;
  if (norm) {
    if (norm.mean.length !== inDim || norm.std.length !== inDim) {
      throw specError(
        `inputNormalization has ${norm.mean.length}/${norm.std.length} values for ${inDim} input dims`,
      );
    }
    checkFinite('inputNormalization.mean', norm.mean);
    checkFinite('inputNormalization.std', norm.std);
    for (let i = 0; i < inDim; i++) {
      if (!(norm.std[i] > 0))
        throw specError(
          `inputNormalization.std[${i}] is ${norm.std[i]}`,
          'clamp std to a small positive floor (e.g. 1e-6) when fitting the normalizer',
        );
    }
  }
  if (spec.layers.length === 0) throw specError('no layers');
  let width = inDim;
  spec.layers.forEach((layer, li) => {
    if (layer.inDim !== width)
      throw specError(`layer ${li} expects ${layer.inDim} inputs but receives ${width}`);
    if (layer.weight.length !== layer.inDim * layer.outDim) {
      throw specError(
        `layer ${li} weight has ${layer.weight.length} values, expected ${layer.inDim}x${layer.outDim}`,
      );
    }
    if (layer.bias.length !== layer.outDim)
      throw specError(`layer ${li} bias has ${layer.bias.length} values, expected ${layer.outDim}`);
    checkFinite(`layer ${li} weight`, layer.weight);
    checkFinite(`layer ${li} bias`, layer.bias);
    if (layer.layerNorm) {
      const { gamma, beta, epsilon } = layer.layerNorm;
      if (gamma.length !== layer.outDim || beta.length !== layer.outDim)
        throw specError(`layer ${li} layerNorm has the wrong width`);
      if (!(epsilon > 0)) throw specError(`layer ${li} layerNorm epsilon is ${epsilon}`);
    }
    if (!['relu', 'tanh', 'linear'].includes(layer.activation))
      throw specError(`layer ${li} activation '${layer.activation}'`);
    width = layer.outDim;
  });
  if (width !== actionDim * chunkLength) {
    throw specError(
      `last layer outputs ${width} values, expected actionDim x chunkLength = ${actionDim} x ${chunkLength}`,
    );
  }
  const denorm = spec.output.denormalize;
  if (denorm && (denorm.mean.length !== actionDim || denorm.std.length !== actionDim)) {
    throw specError(
      `output.denormalize has ${denorm.mean.length}/${denorm.std.length} values for actionDim ${actionDim}`,
    );
  }
  if (
    spec.output.tanhScale !== undefined &&
    !(Number.isFinite(spec.output.tanhScale) && spec.output.tanhScale > 0)
  ) {
    throw specError(`output.tanhScale is ${spec.output.tanhScale}`);
  }
  return inDim;
}

/** The metadata written to the file: the spec's, completed with what the spec itself determines. */
function completeMetadata(spec: MlpPolicySpec): Record<string, string> {
  const meta: Record<string, string> = { ...spec.metadata };
  const derived: Record<string, string> = {
    [MetaKey.format]: RESRT_METADATA_FORMAT,
    [MetaKey.actionDim]: String(spec.output.actionDim),
    [MetaKey.chunkLength]: String(spec.output.chunkLength),
  };
  // Where the observation statistics live: the graph, metadata, a sidecar JSON the caller writes
  // next to the file ('sidecar', so the loader insists on finding it), or nowhere.
  const declaredNorm = meta[MetaKey.normalizationBaked];
  if (spec.inputNormalization) derived[MetaKey.normalizationBaked] = 'baked';
  else if (declaredNorm === undefined)
    derived[MetaKey.normalizationBaked] = meta[MetaKey.obsMean] ? 'metadata' : 'none';
  else if (!['metadata', 'sidecar', 'none'].includes(declaredNorm)) {
    throw specError(
      `metadata ${MetaKey.normalizationBaked}=${declaredNorm}`,
      "use 'metadata', 'sidecar' or 'none' (the exporter writes 'baked')",
    );
  }
  if (spec.output.tanhScale !== undefined) derived[MetaKey.tanhScale] = String(spec.output.tanhScale);
  for (const [key, value] of Object.entries(derived)) {
    if (key in meta && meta[key] !== value) {
      throw specError(
        `metadata ${key}=${meta[key]} contradicts the spec (${value})`,
        `drop ${key} from spec.metadata; the exporter writes it`,
      );
    }
    meta[key] = value;
  }
  if (spec.inputNormalization && (meta[MetaKey.obsMean] || meta[MetaKey.obsStd])) {
    throw specError(
      'normalization is both baked into the graph and listed in resrt.obs_mean/resrt.obs_std; the loader would apply it twice',
      'keep one: inputNormalization (baked) or the metadata keys',
    );
  }
  delete meta[MetaKey.checksum];
  return meta;
}

/**
 * Writes the spec as a standard ONNX ModelProto. Graph:
 *   inputs [batch, d_i] -> Concat(axis 1) -> Sub/Div (normalization) -> per layer
 *   Gemm -> LayerNormalization? -> Relu|Tanh? -> Mul/Add (denormalization) -> Tanh, Mul(scale)?
 *   -> Reshape [batch, H, A] when H > 1.
 */
export function exportMlpToOnnx(spec: MlpPolicySpec): Uint8Array {
  validateMlpSpec(spec);
  const nodes: OnnxNode[] = [];
  const inits: OnnxTensor[] = [];
  let counter = 0;
  const fresh = (base: string): string => `${base}_${counter++}`;
  const op = (
    opType: string,
    inputs: string[],
    attrs: OnnxNode['attribute'] = [],
    outName?: string,
  ): string => {
    const out = outName ?? fresh(opType.toLowerCase());
    nodes.push({ name: `${opType}_${nodes.length}`, opType, input: inputs, output: [out], attribute: attrs });
    return out;
  };
  const init = (name: string, dims: number[], data: ArrayLike<number>): string => {
    inits.push(floatTensor(name, dims, data));
    return name;
  };

  let x =
    spec.inputs.length > 1
      ? op(
          'Concat',
          spec.inputs.map((i) => i.name),
          [attr.int('axis', 1)],
        )
      : spec.inputs[0].name;
  if (spec.inputNormalization) {
    const { mean, std } = spec.inputNormalization;
    x = op('Sub', [x, init('obs_mean', [mean.length], mean)]);
    x = op('Div', [x, init('obs_std', [std.length], std)]);
  }
  spec.layers.forEach((layer: DenseLayerSpec, li) => {
    const w = init(`layer${li}.weight`, [layer.inDim, layer.outDim], layer.weight);
    const b = init(`layer${li}.bias`, [layer.outDim], layer.bias);
    x = op('Gemm', [x, w, b], [attr.float('alpha', 1), attr.float('beta', 1)]);
    if (layer.layerNorm) {
      const g = init(`layer${li}.ln.gamma`, [layer.outDim], layer.layerNorm.gamma);
      const bt = init(`layer${li}.ln.beta`, [layer.outDim], layer.layerNorm.beta);
      x = op(
        'LayerNormalization',
        [x, g, bt],
        [attr.int('axis', -1), attr.float('epsilon', layer.layerNorm.epsilon)],
      );
    }
    if (layer.activation === 'relu') x = op('Relu', [x]);
    else if (layer.activation === 'tanh') x = op('Tanh', [x]);
  });
  const { actionDim, chunkLength, denormalize, tanhScale } = spec.output;
  if (denormalize) {
    // Per action dimension, tiled over the chunk because the flat output is [H * A] before Reshape.
    const tile = (v: Float32Array): Float32Array => {
      const out = new Float32Array(actionDim * chunkLength);
      for (let h = 0; h < chunkLength; h++) out.set(v, h * actionDim);
      return out;
    };
    x = op('Mul', [x, init('action_std', [actionDim * chunkLength], tile(denormalize.std))]);
    x = op('Add', [x, init('action_mean', [actionDim * chunkLength], tile(denormalize.mean))]);
  }
  if (tanhScale !== undefined) {
    x = op('Tanh', [x]);
    x = op('Mul', [x, init('tanh_scale', [], [tanhScale])]);
  }
  if (chunkLength > 1) {
    inits.push(int64Tensor('chunk_shape', [0, chunkLength, actionDim]));
    x = op('Reshape', [x, 'chunk_shape']);
  }
  // Validation guarantees at least one layer, so the last node produces the graph output.
  nodes[nodes.length - 1].output[0] = spec.output.name;

  const outputDims: (number | string)[] =
    chunkLength > 1 ? [BATCH_AXIS, chunkLength, actionDim] : [BATCH_AXIS, actionDim];
  const model: OnnxModel = {
    irVersion: ONNX_IR_VERSION,
    producerName: 'resrt',
    producerVersion: RESRT_METADATA_FORMAT,
    opsetImport: [{ domain: '', version: ONNX_OPSET }],
    graph: {
      name: spec.metadata[MetaKey.kind] === 'residual' ? 'resrt_residual' : 'resrt_policy',
      node: nodes,
      initializer: inits,
      input: spec.inputs.map((i) => floatValueInfo(i.name, [BATCH_AXIS, i.dim])),
      output: [floatValueInfo(spec.output.name, outputDims)],
    },
    metadataProps: [],
  };
  const meta = completeMetadata(spec);
  model.metadataProps = Object.entries(meta).map(([key, value]) => ({ key, value }));
  // The graph encodes identically with or without the checksum entry (it is a separate field),
  // so hashing a first encoding gives the checksum of the final file's graph.
  const checksum = graphChecksum(encodeModel(model));
  if (!checksum) throw new Error('internal: encoded model has no graph');
  model.metadataProps.push({ key: MetaKey.checksum, value: checksum });
  return encodeModel(model);
}

/**
 * Reference forward pass in float64 over the float32 weights. `inputs` holds one row-major
 * [batch, dim] array per spec input (a single array is accepted for single-input specs).
 * Returns [batch, H * A] row-major.
 */
export function mlpForward(
  spec: MlpPolicySpec,
  inputs: Float32Array | readonly Float32Array[],
): Float32Array {
  const inDim = validateMlpSpec(spec);
  const arrays = inputs instanceof Float32Array ? [inputs] : inputs;
  if (arrays.length !== spec.inputs.length) {
    throw new ResrtError(
      `mlpForward: ${arrays.length} input arrays for ${spec.inputs.length} spec inputs`,
      'pass one array per spec input, in order',
    );
  }
  const batch = arrays[0].length / spec.inputs[0].dim;
  arrays.forEach((a, k) => {
    if (a.length !== batch * spec.inputs[k].dim || !Number.isInteger(batch)) {
      throw new ResrtError(
        `mlpForward: input '${spec.inputs[k].name}' has ${a.length} values, expected batch x ${spec.inputs[k].dim}`,
      );
    }
  });
  const { actionDim, chunkLength, denormalize, tanhScale } = spec.output;
  const outWidth = actionDim * chunkLength;
  const result = new Float32Array(batch * outWidth);
  for (let n = 0; n < batch; n++) {
    let x: Float64Array = new Float64Array(inDim);
    let off = 0;
    spec.inputs.forEach((input, k) => {
      for (let j = 0; j < input.dim; j++) x[off + j] = arrays[k][n * input.dim + j];
      off += input.dim;
    });
    if (spec.inputNormalization) {
      const { mean, std } = spec.inputNormalization;
      for (let j = 0; j < inDim; j++) x[j] = (x[j] - mean[j]) / std[j];
    }
    for (const layer of spec.layers) x = denseForward(layer, x);
    for (let j = 0; j < outWidth; j++) {
      let y = x[j];
      if (denormalize) y = y * denormalize.std[j % actionDim] + denormalize.mean[j % actionDim];
      if (tanhScale !== undefined) y = Math.tanh(y) * tanhScale;
      result[n * outWidth + j] = y;
    }
  }
  return result;
}

function denseForward(layer: DenseLayerSpec, x: Float64Array): Float64Array {
  const { inDim, outDim, weight, bias } = layer;
  const y = new Float64Array(outDim);
  for (let o = 0; o < outDim; o++) y[o] = bias[o];
  for (let i = 0; i < inDim; i++) {
    const xi = x[i];
    if (xi === 0) continue;
    const row = i * outDim;
    for (let o = 0; o < outDim; o++) y[o] += xi * weight[row + o];
  }
  if (layer.layerNorm) {
    const { gamma, beta, epsilon } = layer.layerNorm;
    let mean = 0;
    for (let o = 0; o < outDim; o++) mean += y[o];
    mean /= outDim;
    let variance = 0;
    for (let o = 0; o < outDim; o++) variance += (y[o] - mean) ** 2;
    variance /= outDim;
    const inv = 1 / Math.sqrt(variance + epsilon);
    for (let o = 0; o < outDim; o++) y[o] = (y[o] - mean) * inv * gamma[o] + beta[o];
  }
  if (layer.activation === 'relu') for (let o = 0; o < outDim; o++) y[o] = y[o] > 0 ? y[o] : 0;
  else if (layer.activation === 'tanh') for (let o = 0; o < outDim; o++) y[o] = Math.tanh(y[o]);
  return y;
}

/** Random-weight spec (He-style init), for benchmarks and tests. */
export function randomMlpSpec(options: {
  inputs: { name: string; dim: number }[];
  hidden: number[];
  actionDim: number;
  chunkLength?: number;
  activation?: 'relu' | 'tanh';
  layerNorm?: boolean;
  tanhScale?: number;
  outputName?: string;
  normalize?: boolean;
  metadata?: Record<string, string>;
  rng: { normal(mean?: number, std?: number): number; range(low: number, high: number): number };
}): MlpPolicySpec {
  const { rng } = options;
  const chunkLength = options.chunkLength ?? 1;
  const inDim = options.inputs.reduce((s, i) => s + i.dim, 0);
  const widths = [inDim, ...options.hidden, options.actionDim * chunkLength];
  const layers: DenseLayerSpec[] = [];
  for (let l = 0; l + 1 < widths.length; l++) {
    const [i, o] = [widths[l], widths[l + 1]];
    const last = l + 2 === widths.length;
    const weight = Float32Array.from({ length: i * o }, () =>
      rng.normal(0, Math.sqrt(2 / i) * (last ? 0.5 : 1)),
    );
    const bias = Float32Array.from({ length: o }, () => rng.normal(0, 0.05));
    layers.push({
      inDim: i,
      outDim: o,
      weight,
      bias,
      activation: last ? 'linear' : (options.activation ?? 'relu'),
      layerNorm:
        options.layerNorm && !last
          ? {
              gamma: Float32Array.from({ length: o }, () => rng.range(0.5, 1.5)),
              beta: Float32Array.from({ length: o }, () => rng.normal(0, 0.1)),
              epsilon: 1e-5,
            }
          : undefined,
    });
  }
  return {
    inputs: options.inputs,
    inputNormalization: options.normalize
      ? {
          mean: Float32Array.from({ length: inDim }, () => rng.normal(0, 0.5)),
          std: Float32Array.from({ length: inDim }, () => rng.range(0.5, 2)),
        }
      : undefined,
    layers,
    output: {
      name: options.outputName ?? 'action',
      actionDim: options.actionDim,
      chunkLength,
      tanhScale: options.tanhScale,
    },
    metadata: { ...options.metadata },
  };
}
