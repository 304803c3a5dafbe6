/**
 * What a residual sees of the cameras (ResidualConfig.encoder), as features computed once per env
 * step and cached in replay in front of the state, so the learner's observation is
 * [features | state]:
 * - `base-embedding`: the frozen base's own `embedding` output, read right after the base acted on
 *   the observation, so it costs nothing beyond the base's forward pass;
 * - `file`: a frozen encoder ONNX given by the user (src/runtime/frame-encoder.ts), one session
 *   call on the observation's frames; the exported residual carries it.
 */
import { isEmbeddingSource } from '../runtime/compose.js';
import { FrameEncoder } from '../runtime/frame-encoder.js';
import type { CameraFrames, Env, Policy } from '../types.js';
import { ResrtError } from '../util/errors.js';
import type { ResidualConfig } from './config.js';

export interface CameraFeatures {
  readonly mode: ResidualConfig['encoder'];
  /** Feature width E. */
  readonly dim: number;
  /** The encoder the exported residual carries (mode file); null when the base computes them. */
  readonly encoder: FrameEncoder | null;
  /**
   * The features of this observation (a fresh copy); call it after the base acted on the
   * observation (base-embedding reads the base's latest embedding, file encodes `frames`).
   */
  read(frames: CameraFrames | undefined): Promise<Float32Array>;
  close(): Promise<void>;
}

/**
 * The camera features for this run, or null when the residual reads the state alone (no cameras,
 * or encoder 'none'). Throws, naming the fix, when the mode cannot work with this base or file.
 */
export async function cameraFeatures(
  cfg: ResidualConfig,
  env: Pick<Env, 'id' | 'cameras'>,
  base: Policy | null,
): Promise<CameraFeatures | null> {
  const cameras = env.cameras ?? [];
  // 'learned' features change as the encoder trains, so the learner computes them from replay's frames.
  if (cameras.length === 0 || cfg.encoder === 'none' || cfg.encoder === 'learned') return null;
  if (cfg.encoder === 'file') return fileFeatures(cfg, env, base);
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
    encoder: null,
    read(): Promise<Float32Array> {
      const e = base.lastEmbedding;
      if (!e || e.length !== dim) {
        throw new ResrtError(
          `the base gave ${e ? `${e.length} embedding values` : 'no embedding'} for this observation, expected ${dim}`,
          'a chunked or stateful base must report its embedding with every action; use a base exported by `resrt bc --cameras`',
        );
      }
      return Promise.resolve(Float32Array.from(e));
    },
    close: () => Promise.resolve(),
  };
}

async function fileFeatures(
  cfg: ResidualConfig,
  env: Pick<Env, 'id' | 'cameras'>,
  base: Policy | null,
): Promise<CameraFeatures> {
  if (!base) {
    // The exported file would be a whole policy reading images and state; the runtime loads
    // residuals that read images beside a base only.
    throw new ResrtError(
      `encoder file corrects a base, and this run has no base (useBase is false) on ${env.id}`,
      'train with a base (--base, useBase true), or pass --encoder none to learn from the state alone',
    );
  }
  const sizes = Object.fromEntries(
    (env.cameras ?? []).map((c) => [c.name, { width: c.width, height: c.height }]),
  );
  const encoder = await FrameEncoder.load(cfg.encoderFile, sizes);
  return {
    mode: 'file',
    dim: encoder.featureDim,
    encoder,
    read: (frames) => encoder.encode(frames),
    close: () => encoder.close(),
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
