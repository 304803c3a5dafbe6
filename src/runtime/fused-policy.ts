/**
 * Base + residual as one onnxruntime call per control step: the two ONNX files joined by graph
 * surgery (fused-graph.ts), run through a synchronous session (ort-sync.ts), and checked when it is
 * planned to give exactly what the two sessions give. Where the layouts do not allow it (action
 * chunks, a base that reads camera images, different opsets, graph content the surgery cannot
 * carry), `loadLoopPolicy` returns the two-call ComposedPolicy and says why.
 */
import * as ort from 'onnxruntime-node';
import type { Policy } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { ComposedPolicy, ResidualComposer, type ComposedStep } from './compose.js';
import type { ChunkExecutorOptions } from './chunk.js';
import { fuseBaseAndResidual, type GraphRole } from './fused-graph.js';
import { OnnxPolicy, readModelFile } from './onnx-policy.js';
import { openPolicySession, type Feeds, type Fetches, type PolicySession } from './ort-sync.js';

export type Normalization = { mean: Float32Array; std: Float32Array } | null;

/**
 * A verified fused model and what feeding it takes. Plain data (structured-cloneable): planned
 * where time is cheap, opened where the control loop runs.
 */
export interface FusedPlan {
  bytes: Uint8Array;
  obsInputs: { base: string; residual: string };
  /** Statistics each model's observation is normalized with before the graph (OnnxPolicy's). */
  baseNorm: Normalization;
  residualNorm: Normalization;
  obsDim: number;
  actionDim: number;
  /** The residual's resrt.version: recorded in every transition. */
  version: number;
}

function sameNormalization(a: Normalization, b: Normalization): boolean {
  if (a === null || b === null) return a === b;
  if (a.mean.length !== b.mean.length) return false;
  for (let i = 0; i < a.mean.length; i++) {
    if (!Object.is(a.mean[i], b.mean[i]) || !Object.is(a.std[i], b.std[i])) return false;
  }
  return true;
}

function graphRole(p: OnnxPolicy): GraphRole {
  return {
    feeds: p.layout.feeds.map((f) => ({ name: f.name, role: f.role })),
    outputName: p.layout.outputName,
    obsDim: p.obsDim,
    actionDim: p.layout.actionDim,
    chunkLength: p.layout.chunkLength,
  };
}

/** Writes (obs - mean) / std into `out`: the expression OnnxPolicy.runBatch uses, so results match. */
function normalizeInto(obs: Float32Array, norm: Normalization, out: Float32Array): void {
  if (!norm) {
    out.set(obs);
    return;
  }
  for (let j = 0; j < out.length; j++) out[j] = (obs[j] - norm.mean[j]) / norm.std[j];
}

/** One fused session with its preallocated input and output tensors. */
class FusedSession {
  readonly feeds: Feeds;
  readonly fetches: Fetches;
  readonly baseObs: Float32Array;
  readonly residualObs: Float32Array | null;
  readonly baseOut: Float32Array;
  readonly residualOut: Float32Array;

  constructor(
    readonly plan: FusedPlan,
    readonly session: PolicySession,
  ) {
    const { obsDim, actionDim, obsInputs } = plan;
    this.baseObs = new Float32Array(obsDim);
    this.residualObs = obsInputs.residual === obsInputs.base ? null : new Float32Array(obsDim);
    this.baseOut = new Float32Array(actionDim);
    this.residualOut = new Float32Array(actionDim);
    // One set of tensors for the session's life: the binding reads and writes their buffers in place.
    this.feeds = { [obsInputs.base]: new ort.Tensor('float32', this.baseObs, [1, obsDim]) };
    if (this.residualObs)
      this.feeds[obsInputs.residual] = new ort.Tensor('float32', this.residualObs, [1, obsDim]);
    this.fetches = {
      base_action: new ort.Tensor('float32', this.baseOut, [1, actionDim]),
      residual: new ort.Tensor('float32', this.residualOut, [1, actionDim]),
    };
  }

  run(obs: Float32Array): void | Promise<void> {
    normalizeInto(obs, this.plan.baseNorm, this.baseObs);
    if (this.residualObs) normalizeInto(obs, this.plan.residualNorm, this.residualObs);
    return this.session.run(this.feeds, this.fetches);
  }
}

export class FusedPolicy implements Policy {
  readonly actionDim: number;
  readonly obsDim: number;
  readonly composer: ResidualComposer;
  private current: FusedSession;
  private lastStep: ComposedStep | null = null;
  /** A run of the public-API session still in progress (never set in native mode). */
  private running: Promise<unknown> | null = null;

  private constructor(current: FusedSession, scale: number) {
    this.current = current;
    this.obsDim = current.plan.obsDim;
    this.actionDim = current.plan.actionDim;
    // The composer holds the scale; its placeholder model marks that a residual is present, so
    // compose() adds it (with none, compose() returns the clipped base bit for bit).
    this.composer = new ResidualComposer(
      this.actionDim,
      { actionDim: this.actionDim, residual: () => this.current.residualOut },
      scale,
    );
  }

  /**
   * Fuses two loaded policies into a plan, or says why they cannot be fused. The fused model is
   * run against the two sessions on `checkRows` random observations: base action and residual
   * must agree to the last bit, or the fusion is refused.
   */
  static async plan(
    base: OnnxPolicy,
    residual: OnnxPolicy,
    options: { checkRows?: number; forcePublicApi?: boolean } = {},
  ): Promise<{ plan: FusedPlan } | { reason: string }> {
    if (base.layout.residual || !residual.layout.residual) {
      throw new ResrtError('FusedPolicy.plan takes (base policy, residual actor)');
    }
    if (base.imageInputs.length > 0) {
      const inputs = base.imageInputs.map((i) => `'${i.input}' (camera ${i.camera})`).join(', ');
      return {
        reason: `the base reads camera images (${inputs}); fusion joins state-only graphs, so the frames go to the base's own session`,
      };
    }
    if (base.obsDim !== residual.obsDim) {
      return { reason: `the base reads ${base.obsDim} observation values, the residual ${residual.obsDim}` };
    }
    const outcome = fuseBaseAndResidual(
      readModelFile(base.path),
      graphRole(base),
      readModelFile(residual.path),
      graphRole(residual),
      { shareObs: sameNormalization(base.normalization, residual.normalization) },
    );
    if (!outcome.ok) return { reason: outcome.reason };
    const plan: FusedPlan = {
      bytes: outcome.graph.bytes,
      obsInputs: outcome.graph.obsInputs,
      baseNorm: base.normalization,
      residualNorm: residual.normalization,
      obsDim: base.obsDim,
      actionDim: base.actionDim,
      version: residual.version,
    };
    let policy: FusedPolicy;
    try {
      policy = await FusedPolicy.open(plan, { forcePublicApi: options.forcePublicApi });
    } catch (err) {
      return { reason: `onnxruntime rejected the fused graph: ${(err as Error).message.split('\n')[0]}` };
    }
    try {
      const mismatch = await policy.compareWith(base, residual, options.checkRows ?? 16);
      return mismatch ? { reason: mismatch } : { plan };
    } finally {
      await policy.close();
    }
  }

  static async open(
    plan: FusedPlan,
    options: { scale?: number; forcePublicApi?: boolean } = {},
  ): Promise<FusedPolicy> {
    const session = await openPolicySession(plan.bytes, 'the fused base + residual graph', 1, options);
    return new FusedPolicy(new FusedSession(plan, session), options.scale ?? 1);
  }

  /** 'native': one synchronous call per step; 'public-api': one event-loop turn per step. */
  get mode(): PolicySession['mode'] {
    return this.current.session.mode;
  }

  get last(): ComposedStep | null {
    return this.lastStep;
  }

  get scale(): number {
    return this.composer.scale;
  }

  set scale(value: number) {
    this.composer.scale = value;
  }

  get version(): number {
    return this.current.plan.version;
  }

  reset(): void {
    this.lastStep = null;
  }

  /**
   * Switches to another verified plan (a new residual version). Building the session blocks this
   * thread for about a millisecond (a 2x256 + 2x256 pair on this CPU); the next act() uses it.
   */
  async replace(plan: FusedPlan): Promise<void> {
    if (plan.obsDim !== this.obsDim || plan.actionDim !== this.actionDim) {
      throw new ResrtError(
        `the new policy maps ${plan.obsDim} observation values to ${plan.actionDim} actions, the running one ${this.obsDim} to ${this.actionDim}`,
        'export the new residual for the same robot/task',
      );
    }
    const session = await openPolicySession(plan.bytes, `residual version ${plan.version}`, 1, {
      forcePublicApi: this.mode === 'public-api',
    });
    const old = this.current;
    this.current = new FusedSession(plan, session);
    await this.running;
    old.session.release();
  }

  act(obs: Float32Array): Float32Array | Promise<Float32Array> {
    if (obs.length !== this.obsDim) {
      throw new ResrtError(
        `the policy takes ${this.obsDim} observation values, got ${obs.length}`,
        'pass the observation vector the policy was trained on',
      );
    }
    const session = this.current;
    const ran = session.run(obs);
    if (!ran) return this.finish(session, obs);
    const done = ran.then(() => this.finish(session, obs));
    this.running = done.catch(() => undefined);
    return done;
  }

  async close(): Promise<void> {
    await this.running;
    this.current.session.release();
  }

  private finish(session: FusedSession, obs: Float32Array): Float32Array {
    // Copies: transitions keep these arrays, and the next run overwrites the output buffers.
    const baseAction = session.baseOut.slice();
    const residual = session.residualOut.slice();
    const action = this.composer.compose(baseAction, residual);
    this.lastStep = {
      obs,
      baseAction,
      residual,
      action,
      scale: this.composer.scale,
      policyVersion: session.plan.version,
    };
    return action;
  }

  /** Null when the fused outputs equal the two sessions' on random observations, else why not. */
  private async compareWith(base: OnnxPolicy, residual: OnnxPolicy, rows: number): Promise<string | null> {
    const rng = new Rng(0x5eed);
    const norm = base.normalization ?? residual.normalization;
    const obs = new Float32Array(this.obsDim);
    for (let n = 0; n < rows; n++) {
      for (let j = 0; j < obs.length; j++)
        obs[j] = norm ? norm.mean[j] + norm.std[j] * rng.normal(0, 1) : rng.normal(0, 1);
      const baseAction = await base.runChunk(obs);
      const r = await residual.residual(obs, baseAction);
      await this.act(obs);
      const step = this.lastStep as ComposedStep;
      for (let i = 0; i < this.actionDim; i++) {
        if (!Object.is(step.baseAction[i], baseAction[i]) || !Object.is(step.residual[i], r[i])) {
          return `the fused graph differs from the two sessions on a random observation (action ${i}: base ${step.baseAction[i]} vs ${baseAction[i]}, residual ${step.residual[i]} vs ${r[i]})`;
        }
      }
    }
    this.lastStep = null;
    return null;
  }
}

export interface LoopPolicyOptions {
  expectObsDim?: number;
  expectActionDim?: number;
  scale?: number;
  chunk?: ChunkExecutorOptions;
  /** Default true: one session call per step where the layouts allow. */
  fuse?: boolean;
  /** The source's cameras (name -> image size): a visuomotor base's image inputs are checked against them. */
  cameras?: Record<string, { width: number; height: number }>;
}

export interface LoopPolicy {
  policy: FusedPolicy | ComposedPolicy;
  /** 'fused', or why base and residual run as separate calls. */
  fusion: string;
  /** The verified plan when fused (what a residual swap replaces). */
  plan: FusedPlan | null;
  close(): Promise<void>;
}

/**
 * Base (+ residual) ONNX files as a control loop's policy: fused into one call when the layouts
 * allow, the two-call ComposedPolicy otherwise (with the reason in `fusion`).
 */
export async function loadLoopPolicy(
  basePath: string,
  residualPath: string | undefined,
  options: LoopPolicyOptions = {},
): Promise<LoopPolicy> {
  const expect = { expectObsDim: options.expectObsDim, expectActionDim: options.expectActionDim };
  const base = await OnnxPolicy.load(basePath, { ...expect, chunk: options.chunk, cameras: options.cameras });
  let residual: OnnxPolicy | null = null;
  try {
    residual = residualPath ? await OnnxPolicy.load(residualPath, { ...expect, residual: true }) : null;
  } catch (err) {
    await base.close();
    throw err;
  }
  const composed = (fusion: string): LoopPolicy => ({
    policy: new ComposedPolicy({ base, residual, scale: options.scale ?? 1, chunk: options.chunk }),
    fusion,
    plan: null,
    close: async () => {
      await base.close();
      await residual?.close();
    },
  });
  if (!residual) return composed('no residual: the base runs alone');
  if (options.fuse === false) return composed('fusion turned off');
  const planned = await FusedPolicy.plan(base, residual);
  if ('reason' in planned) return composed(planned.reason);
  // The two sessions served the check; the fused one is all the loop needs.
  await base.close();
  await residual.close();
  const policy = await FusedPolicy.open(planned.plan, { scale: options.scale });
  return { policy, fusion: 'fused', plan: planned.plan, close: () => policy.close() };
}

/**
 * A new residual file for a running fused loop: loaded, fused with the base and verified here (off
 * the control thread), ready for FusedPolicy.replace there.
 */
export async function planResidualSwap(
  basePath: string,
  residualPath: string,
  options: { expectObsDim?: number; expectActionDim?: number } = {},
): Promise<FusedPlan> {
  const base = await OnnxPolicy.load(basePath, options);
  try {
    const residual = await OnnxPolicy.load(residualPath, { ...options, residual: true });
    try {
      const planned = await FusedPolicy.plan(base, residual);
      if ('reason' in planned) {
        throw new ResrtError(
          `${residualPath} cannot be fused with ${basePath}: ${planned.reason}`,
          'export the residual like the one the loop started with (same opset and layout), or restart the loop with it',
        );
      }
      return planned.plan;
    } finally {
      await residual.close();
    }
  } finally {
    await base.close();
  }
}
