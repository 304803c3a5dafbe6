/**
 * The residual actor as data (MlpPolicySpec: inputs [obs, base_action], observation normalization
 * baked in, tanh × actionScale output, metadata kind=residual) and as an ONNX file through the
 * runtime's exporter. A from-scratch actor (no base input) exports as a plain base policy. A camera
 * residual in base-embedding mode reads [base_embedding, obs, base_action] (src/runtime/camera-residual.ts).
 */
import type { DenseLayerSpec, MlpPolicySpec } from '../types.js';
import { exportMlpToOnnx, MetaKey } from '../runtime/onnx-export.js';
import { BASE_EMBEDDING_INPUT, RESIDUAL_ENCODER_KEY } from '../runtime/camera-residual.js';
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
      ...(E > 0 ? { [RESIDUAL_ENCODER_KEY]: 'base-embedding', [MetaKey.embeddingDim]: String(E) } : {}),
      ...(L > 0 ? { [RESIDUAL_ENCODER_KEY]: 'learned' } : {}),
      [MetaKey.version]: String(r.version),
      'resrt.trained_by': r.useBase ? 'resrt residual TD3 (ResFiT)' : 'resrt TD3 from scratch (RLPD)',
      ...r.metadata,
    },
  };
}

/** Writes the spec as ONNX (atomically) and returns the bytes. */
export function exportResidualOnnx(spec: MlpPolicySpec, path?: string): Uint8Array {
  const bytes = exportMlpToOnnx(spec);
  if (path) writeFileAtomic(path, bytes);
  return bytes;
}
