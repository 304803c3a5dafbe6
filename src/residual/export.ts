/**
 * The residual actor as data (MlpPolicySpec: inputs [obs, base_action], observation normalization
 * baked in, tanh × actionScale output, metadata kind=residual) and as an ONNX file through the
 * runtime's exporter. A from-scratch actor (no base input) exports as a plain base policy. A camera
 * residual in base-embedding mode reads [base_embedding, obs, base_action] (src/runtime/camera-residual.ts);
 * one whose features come from an encoder graph (modes file, learned) carries that graph, its
 * features wired into the MLP's feature input, and reads [images, obs, base_action]
 * (src/runtime/image-residual.ts).
 */
import type { DenseLayerSpec, MlpPolicySpec } from '../types.js';
import { exportMlpToOnnx, MetaKey } from '../runtime/onnx-export.js';
import { BASE_EMBEDDING_INPUT, RESIDUAL_ENCODER_KEY } from '../runtime/camera-residual.js';
import { prependEncoder } from '../runtime/fused-graph.js';
import { imagesMetadata } from '../runtime/image-feeds.js';
import { IMAGES_META_KEY } from '../runtime/image-inputs.js';
import type { ImagePreprocess } from '../runtime/preprocess.js';
import { ResrtError } from '../util/errors.js';
import { decodeModel, encodeModel, graphChecksum } from '../util/onnx-proto.js';
import { writeFileAtomic } from '../util/files.js';
import { LEARNED_FEATURES_INPUT } from './learned-residual.js';

export interface ResidualSpecInput {
  layers: DenseLayerSpec[];
  /** The learner's observation width: featureDim + the state's. */
  obsDim: number;
  /** Leading observation columns that are the base's embedding (0: a state-only residual). */
  featureDim?: number;
  /**
   * Width of the learned encoder's features (encoder 'learned'), a first input `learned_features`
   * the acting side computes from the frames (learned-residual.ts); not part of `obsDim`.
   */
  learnedFeatures?: number;
  actionDim: number;
  actionScale: number;
  /** False for RLPD from scratch: the actor sees only the observation. */
  useBase: boolean;
  obsMean: Float32Array | null;
  obsStd: Float32Array | null;
  /** Learner version (actor updates) recorded as resrt.version. */
  version: number;
  /** Where the leading featureDim columns come from (ResidualConfig.encoder); default base-embedding. */
  encoder?: string;
  metadata?: Record<string, string>;
}

export function residualPolicySpec(r: ResidualSpecInput): MlpPolicySpec {
  const E = r.featureDim ?? 0;
  const L = r.learnedFeatures ?? 0;
  const inputs = E > 0 ? [{ name: BASE_EMBEDDING_INPUT, dim: E }] : [];
  if (L > 0) inputs.push({ name: LEARNED_FEATURES_INPUT, dim: L });
  inputs.push({ name: 'obs', dim: r.obsDim - E });
  if (r.useBase) inputs.push({ name: 'base_action', dim: r.actionDim });
  const width = L + r.obsDim + (r.useBase ? r.actionDim : 0);
  let inputNormalization: MlpPolicySpec['inputNormalization'];
  if (r.obsMean && r.obsStd) {
    // The learned features (tanh, in (−1, 1)) and the base action (normalized to [-1, 1]) pass
    // unchanged: identity for their columns.
    const mean = new Float32Array(width);
    const std = new Float32Array(width).fill(1);
    mean.set(r.obsMean, L);
    std.set(r.obsStd, L);
    inputNormalization = { mean, std };
  }
  return {
    inputs,
    inputNormalization,
    layers: r.layers,
    output: {
      name: r.useBase ? 'residual' : 'action',
      actionDim: r.actionDim,
      chunkLength: 1,
      tanhScale: r.actionScale,
    },
    metadata: {
      [MetaKey.kind]: r.useBase ? 'residual' : 'base',
      [MetaKey.obsDim]: String(r.obsDim - E),
      ...(E > 0
        ? { [RESIDUAL_ENCODER_KEY]: r.encoder ?? 'base-embedding', [MetaKey.embeddingDim]: String(E) }
        : {}),
      ...(L > 0 ? { [RESIDUAL_ENCODER_KEY]: 'learned' } : {}),
      [MetaKey.version]: String(r.version),
      'resrt.trained_by': r.useBase ? 'resrt residual TD3 (ResFiT)' : 'resrt TD3 from scratch (RLPD)',
      ...r.metadata,
    },
  };
}

/** An encoder graph an exported residual carries: image inputs -> features [batch, E]. */
export interface CarriedEncoder {
  /** resrt.residual_encoder of the file: 'file' or 'learned'. */
  readonly mode: string;
  readonly bytes: Uint8Array;
  /** Its image inputs with the preprocessing they were trained with. */
  readonly images: readonly ImagePreprocess[];
  readonly outputName: string;
}

/**
 * Writes the spec as ONNX (atomically) and returns the bytes; with `encoder`, the one file that
 * holds encoder and residual (the spec's base_embedding input takes the encoder's features).
 */
export function exportResidualOnnx(spec: MlpPolicySpec, path?: string, encoder?: CarriedEncoder): Uint8Array {
  const mlp = exportMlpToOnnx(spec);
  const bytes = encoder ? carryEncoder(mlp, encoder) : mlp;
  if (path) writeFileAtomic(path, bytes);
  return bytes;
}

function carryEncoder(mlp: Uint8Array, encoder: CarriedEncoder): Uint8Array {
  const imageShapes = Object.fromEntries(
    encoder.images.map((s) => [
      s.input,
      s.layout === 'NCHW' ? [0, 3, s.height, s.width] : [0, s.height, s.width, 3],
    ]),
  );
  const merged = prependEncoder(
    encoder.bytes,
    { imageInputs: encoder.images.map((s) => s.input), outputName: encoder.outputName, imageShapes },
    mlp,
    BASE_EMBEDDING_INPUT,
  );
  if (!merged.ok) {
    throw new ResrtError(
      `cannot write the residual with its encoder (${encoder.mode}): ${merged.reason}`,
      'export the encoder with standard operators at opset 17 or later and its weights inside the file',
    );
  }
  const { model } = merged;
  const meta = new Map((decodeModel(mlp).metadataProps ?? []).map((p) => [p.key, p.value]));
  // The features are the encoder's, not a base's embedding; the images' preprocessing is the one trained with.
  meta.delete(MetaKey.checksum);
  meta.delete(MetaKey.embeddingDim);
  meta.set(RESIDUAL_ENCODER_KEY, encoder.mode);
  meta.set(IMAGES_META_KEY, imagesMetadata(encoder.images));
  model.metadataProps = [...meta].map(([key, value]) => ({ key, value }));
  // The checksum hashes the graph field only, so adding it does not change what it hashes.
  const checksum = graphChecksum(encodeModel(model));
  if (!checksum) throw new Error('internal: encoded model has no graph');
  model.metadataProps.push({ key: MetaKey.checksum, value: checksum });
  return encodeModel(model);
}
