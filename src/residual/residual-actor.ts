/** The residual as the acting side runs it: a plain TypeScript MLP over the published spec, no engine. */
import type { CameraFrames, MlpPolicySpec, Policy } from '../types.js';
import { mlpForward } from '../runtime/onnx-export.js';
import type { CameraFeatures } from './camera-features.js';
import { encodeFrames, LEARNED_FEATURES_INPUT, type PublishedEncoder } from './learned-residual.js';

/** Base + published residual, no exploration noise: what evaluation and the export run. */
export class ResidualActor implements Policy {
  readonly actionDim: number;
  lastBase: Float32Array | null = null;
  lastResidual: Float32Array | null = null;
  constructor(
    private readonly base: Policy | null,
    private readonly spec: () => MlpPolicySpec | null,
    actionDim: number,
    private readonly features: CameraFeatures | null = null,
    /** The learned encoders published with the spec (encoder 'learned'); they read the frames. */
    private readonly encoder: () => PublishedEncoder | undefined = () => undefined,
  ) {
    this.actionDim = actionDim;
  }
  reset(seed?: number): void {
    this.base?.reset?.(seed);
  }
  /**
   * r(features, obs, a_base), its inputs fed by name as the export names them; a learned encoder's
   * features come from `frames`.
   */
  residual(
    obs: Float32Array,
    baseAction: Float32Array,
    features: Float32Array | null = null,
    frames?: CameraFrames,
  ): Float32Array {
    const spec = this.spec();
    if (!spec) return new Float32Array(this.actionDim);
    const encoder = spec.inputs[0]?.name === LEARNED_FEATURES_INPUT ? this.encoder() : undefined;
    const parts: Record<string, Float32Array | null> = {
      base_embedding: features,
      [LEARNED_FEATURES_INPUT]: encoder ? encodeFrames(encoder, frames) : null,
      obs,
      base_action: baseAction,
    };
    const inputs = spec.inputs.map((i) => {
      const v = parts[i.name];
      if (!v) throw new Error(`ResidualActor: no value for the residual's input '${i.name}'`);
      return v;
    });
    return mlpForward(spec, inputs);
  }
  async act(obs: Float32Array, frames?: CameraFrames): Promise<Float32Array> {
    const baseAction = this.base ? await this.base.act(obs, frames) : new Float32Array(this.actionDim);
    const res = this.residual(
      obs,
      baseAction,
      this.features ? await this.features.read(frames) : null,
      frames,
    );
    this.lastBase = baseAction;
    this.lastResidual = res;
    return compose(baseAction, res);
  }
}

/** clip(base + w·res, −1, 1), rounded to float32 once (w = 1 is the plain composition, bit for bit). */
export function compose(base: ArrayLike<number>, res: ArrayLike<number>, w = 1): Float32Array {
  const out = new Float32Array(base.length);
  for (let i = 0; i < base.length; i++) out[i] = Math.max(-1, Math.min(1, base[i] + w * res[i]));
  return out;
}
