/**
 * What a residual sees of the cameras (ResidualConfig.encoder). In `base-embedding` mode the
 * features are the frozen base's own `embedding` output, read right after the base acted on the
 * observation, so they cost nothing beyond the base's forward pass; the trainer caches them in
 * replay in front of the state, so the learner's observation is [features | state].
 */
import { isEmbeddingSource } from '../runtime/compose.js';
import type { Env, Policy } from '../types.js';
import { ResrtError } from '../util/errors.js';
import type { ResidualConfig } from './config.js';

export interface CameraFeatures {
  readonly mode: ResidualConfig['encoder'];
  /** Feature width E. */
  readonly dim: number;
  /** The features of the observation the base acted on last (a fresh copy). */
  read(): Float32Array;
}

/**
 * The camera features for this run, or null when the residual reads the state alone (no cameras,
 * or encoder 'none'). Throws, naming the fix, when the mode cannot work with this base.
 */
export function cameraFeatures(
  cfg: ResidualConfig,
  env: Pick<Env, 'id' | 'cameras'>,
  base: Policy | null,
): CameraFeatures | null {
  const cameras = env.cameras ?? [];
  // 'learned' features change as the encoder trains, so the learner computes them from replay's frames.
  if (cameras.length === 0 || cfg.encoder === 'none' || cfg.encoder === 'learned') return null;
  const names = cameras.map((c) => c.name).join(', ');
  if (!base) {
    throw new ResrtError(
      `encoder base-embedding reads the base's embedding, and this run has no base (useBase is false) on ${env.id} (cameras: ${names})`,
      'train with a visuomotor base (--base), or pass --encoder none to learn from the state alone',
    );
  }
  if (!isEmbeddingSource(base) || base.embeddingDim <= 0) {
    throw new ResrtError(
      `encoder base-embedding: the base policy has no embedding output (${env.id} has cameras: ${names})`,
      'export a visuomotor base with one (`resrt bc --demos DEMOS --cameras auto` writes `embedding`), or pass --encoder none to learn from the state alone',
    );
  }
  const dim = base.embeddingDim;
  return {
    mode: cfg.encoder,
    dim,
    read(): Float32Array {
      const e = base.lastEmbedding;
      if (!e || e.length !== dim) {
        throw new ResrtError(
          `the base gave ${e ? `${e.length} embedding values` : 'no embedding'} for this observation, expected ${dim}`,
          'a chunked or stateful base must report its embedding with every action; use a base exported by `resrt bc --cameras`',
        );
      }
      return Float32Array.from(e);
    },
  };
}

/** [features | state] as one row (the state alone without features). */
export function withFeatures(features: Float32Array | null, obs: Float32Array): Float32Array {
  if (!features) return obs;
  const out = new Float32Array(features.length + obs.length);
  out.set(features);
  out.set(obs, features.length);
  return out;
}
