/**
 * Base + residual composition: a = clip(a_base + scale * r(obs, a_base), -1, 1), with the base
 * optionally predicting action chunks.
 */
import type { CameraFrames, MaybePromise, Policy } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { ChunkExecutor, isChunkPolicy, type ChunkExecutorOptions, type ChunkPolicy } from './chunk.js';

export { ChunkExecutor, isChunkPolicy, type ChunkExecutorOptions, type ChunkPolicy } from './chunk.js';

/** A learned correction of the base action. */
export interface ResidualModel {
  readonly actionDim: number;
  /** Version of the weights, recorded in every Transition (`policyVersion`). */
  readonly version?: number;
  reset?(seed?: number): void;
  residual(obs: Float32Array, baseAction: Float32Array): MaybePromise<Float32Array>;
}

export class ResidualComposer {
  private model: ResidualModel | null;
  private scaleValue: number;

  constructor(
    readonly actionDim: number,
    residual: ResidualModel | null = null,
    scale = 1,
  ) {
    this.model = null;
    this.scaleValue = 1;
    this.setResidual(residual);
    this.scale = scale;
  }

  /** The residual's weight, set per episode (the safety layer's lambda). */
  get scale(): number {
    return this.scaleValue;
  }

  set scale(value: number) {
    if (!Number.isFinite(value) || value < 0) {
      throw new ResrtError(
        `residual scale ${value} is not a finite non-negative number`,
        'use a scale in [0, 1]',
      );
    }
    this.scaleValue = value;
  }

  get residualModel(): ResidualModel | null {
    return this.model;
  }

  /** Swap in a new residual (a new learner version), or null for the base alone. */
  setResidual(model: ResidualModel | null): void {
    if (model && model.actionDim !== this.actionDim) {
      throw new ResrtError(
        `residual predicts ${model.actionDim} action dims but the base has ${this.actionDim}`,
        'export the residual for the same robot/task as the base policy',
      );
    }
    this.model = model;
  }

  get version(): number {
    return this.model?.version ?? 0;
  }

  /** r(obs, a_base); all zeros when there is no residual. */
  residual(obs: Float32Array, baseAction: Float32Array): MaybePromise<Float32Array> {
    if (!this.model) return new Float32Array(this.actionDim);
    return this.model.residual(obs, baseAction);
  }

  /**
   * clip(base + scale * r, -1, 1). With no residual (or scale 0) the addition is skipped so the
   * result is the (clipped) base bit for bit: -0 + 0 would otherwise turn into +0. NaN passes
   * through the clip on purpose, so the loop sees it and sends the safe action.
   */
  compose(baseAction: Float32Array, residual: Float32Array): Float32Array {
    const A = this.actionDim;
    if (baseAction.length !== A || residual.length !== A) {
      throw new ResrtError(
        `compose: base has ${baseAction.length} and residual ${residual.length} values, expected ${A}`,
      );
    }
    const out = new Float32Array(A);
    const add = this.model !== null && this.scaleValue !== 0;
    for (let i = 0; i < A; i++) {
      const v = add ? baseAction[i] + this.scaleValue * residual[i] : baseAction[i];
      out[i] = v > 1 ? 1 : v < -1 ? -1 : v;
    }
    return out;
  }
}

export interface ComposedStep {
  obs: Float32Array;
  baseAction: Float32Array;
  /** Raw r(obs, a_base), before scale and clip (what Transition.residual records). */
  residual: Float32Array;
  action: Float32Array;
  scale: number;
  policyVersion: number;
}

export interface ComposedPolicyOptions {
  base: Policy | ChunkPolicy;
  residual?: ResidualModel | null;
  scale?: number;
  /** How a chunked base (H > 1) is executed; default open loop over the whole chunk. */
  chunk?: ChunkExecutorOptions;
}

/** Base (any Policy, or a chunk predictor) + chunk execution + residual, as one Policy. */
export class ComposedPolicy implements Policy {
  readonly actionDim: number;
  readonly composer: ResidualComposer;
  private readonly executor: ChunkExecutor | null;
  private readonly baseAct: (obs: Float32Array, frames?: CameraFrames) => MaybePromise<Float32Array>;
  private lastStep: ComposedStep | null = null;

  constructor(private readonly options: ComposedPolicyOptions) {
    const { base } = options;
    this.actionDim = base.actionDim;
    this.composer = new ResidualComposer(base.actionDim, options.residual ?? null, options.scale ?? 1);
    if (isChunkPolicy(base) && base.chunkLength > 1) {
      const executor = new ChunkExecutor(base.actionDim, base.chunkLength, options.chunk);
      this.executor = executor;
      this.baseAct = (obs, frames) => executor.act(obs, (o) => base.runChunk(o, frames));
    } else if ('act' in base && typeof base.act === 'function') {
      this.executor = null;
      const policy = base as Policy;
      this.baseAct = (obs, frames) => policy.act(obs, frames);
    } else {
      this.executor = null;
      this.baseAct = (obs, frames) => (base as ChunkPolicy).runChunk(obs, frames);
    }
  }

  /** The base action, raw residual and executed action of the most recent step. */
  get last(): ComposedStep | null {
    return this.lastStep;
  }

  get scale(): number {
    return this.composer.scale;
  }

  set scale(value: number) {
    this.composer.scale = value;
  }

  setResidual(model: ResidualModel | null): void {
    this.composer.setResidual(model);
  }

  reset(seed?: number): void {
    this.executor?.reset();
    this.options.base.reset?.(seed);
    this.composer.residualModel?.reset?.(seed);
    this.lastStep = null;
  }

  /** `frames` go to the base (visuomotor bases read them); the residual sees the state. */
  act(obs: Float32Array, frames?: CameraFrames): MaybePromise<Float32Array> {
    const base = this.baseAct(obs, frames);
    if (base instanceof Promise) return base.then((b) => this.withResidual(obs, b));
    return this.withResidual(obs, base);
  }

  private withResidual(obs: Float32Array, baseAction: Float32Array): MaybePromise<Float32Array> {
    if (baseAction.length !== this.actionDim) {
      throw new ResrtError(`base policy returned ${baseAction.length} values, expected ${this.actionDim}`);
    }
    const r = this.composer.residual(obs, baseAction);
    if (r instanceof Promise) return r.then((rv) => this.finish(obs, baseAction, rv));
    return this.finish(obs, baseAction, r);
  }

  private finish(obs: Float32Array, baseAction: Float32Array, residual: Float32Array): Float32Array {
    const action = this.composer.compose(baseAction, residual);
    this.lastStep = {
      obs,
      baseAction,
      residual,
      action,
      scale: this.composer.scale,
      policyVersion: this.composer.version,
    };
    return action;
  }
}
