/**
 * The residual actor as data (MlpPolicySpec: inputs [obs, base_action], observation normalization
 * baked in, tanh × actionScale output, metadata kind=residual) and as an ONNX file through the
 * runtime's exporter. A from-scratch actor (no base input) exports as a plain base policy.
 */
import type { DenseLayerSpec, MlpPolicySpec } from '../types.js';
import { exportMlpToOnnx, MetaKey } from '../runtime/onnx-export.js';
import { writeFileAtomic } from '../util/files.js';

export interface ResidualSpecInput {
  layers: DenseLayerSpec[];
  obsDim: number;
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
  const inputs = [{ name: 'obs', dim: r.obsDim }];
  if (r.useBase) inputs.push({ name: 'base_action', dim: r.actionDim });
  const width = r.obsDim + (r.useBase ? r.actionDim : 0);
  let inputNormalization: MlpPolicySpec['inputNormalization'];
  if (r.obsMean && r.obsStd) {
    // The base action is already normalized to [-1, 1]: identity for its columns.
    const mean = new Float32Array(width);
    const std = new Float32Array(width).fill(1);
    mean.set(r.obsMean);
    std.set(r.obsStd);
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
      [MetaKey.obsDim]: String(r.obsDim),
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
