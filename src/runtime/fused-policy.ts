/**
 * Base + residual as one onnxruntime call per control step: the two ONNX files joined by graph
 * surgery (fused-graph.ts), run through a synchronous session (ort-sync.ts), and checked when it is
 * planned to give exactly what the two sessions give. A visuomotor base keeps its image inputs
 * (frames are preprocessed into preallocated tensors before the call) and a camera residual reads
 * the base's embedding inside the graph. Where the layouts do not allow it (action chunks, a base
 * without a state input, different opsets, graph content the surgery cannot carry),
 * `loadLoopPolicy` returns the two-call ComposedPolicy and says why.
 */
import '../util/ort-telemetry.js';
import * as ort from 'onnxruntime-node';
import type { CameraFrame, CameraFrames, Policy } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import {
  CameraResidual,
  BASE_EMBEDDING_INPUT,
  checkResidualPairing,
  loadResidual,
  type LoadedResidual,
} from './camera-residual.js';
import { ImageResidual } from './image-residual.js';
import { ComposedPolicy, ResidualComposer, type ComposedStep } from './compose.js';
import type { ChunkExecutorOptions } from './chunk.js';
import { fuseBaseAndResidual, type GraphRole } from './fused-graph.js';
import { imageTensor } from './image-feeds.js';
import { OnnxPolicy, readModelFile } from './onnx-policy.js';
import { openPolicySession, type Feeds, type Fetches, type PolicySession } from './ort-sync.js';
import { checkFrame, imageSize, preprocessFrame, type ImagePreprocess } from './preprocess.js';

/** A residual the loop can run: a state-only actor (OnnxPolicy), or one that reads the cameras. */
export type LoopResidual = LoadedResidual;

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
  /** A visuomotor base's image inputs: frames are preprocessed into them before each call. */
  images: ImagePreprocess[];
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

function graphRole(p: OnnxPolicy | CameraResidual): GraphRole {
  if (p instanceof CameraResidual) {
    return {
      feeds: [
        { name: BASE_EMBEDDING_INPUT, role: 'embedding' },
        { name: 'obs', role: 'obs' },
        { name: 'base_action', role: 'base_action' },
      ],
      outputName: p.outputName,
      obsDim: p.obsDim,
      actionDim: p.actionDim,
      chunkLength: 1,
    };
  }
  return {
    feeds: p.layout.feeds.map((f) => ({ name: f.name, role: f.role })),
    outputName: p.layout.outputName,
    obsDim: p.obsDim,
    actionDim: p.layout.actionDim,
    chunkLength: p.layout.chunkLength,
    imageInputs: p.imageInputs.map((i) => i.input),
    embeddingOutput: p.embeddingOutput,
  };
}

/** Observation statistics applied in JS before the residual's graph (a camera residual bakes its own). */
function residualNormalization(r: OnnxPolicy | CameraResidual): Normalization {
  return r instanceof CameraResidual ? null : r.normalization;
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
  /** One preallocated buffer per image input, written in place each step. */
  private readonly images: { spec: ImagePreprocess; data: Float32Array | Uint8Array }[];

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
    this.images = plan.images.map((spec) => {
      const data =
        spec.dtype === 'float32' ? new Float32Array(imageSize(spec)) : new Uint8Array(imageSize(spec));
      this.feeds[spec.input] = imageTensor(spec, 1, data);
      return { spec, data };
    });
    this.fetches = {
      base_action: new ort.Tensor('float32', this.baseOut, [1, actionDim]),
      residual: new ort.Tensor('float32', this.residualOut, [1, actionDim]),
    };
  }

  /** A missing or malformed frame throws (naming the camera) before the call: the loop's safe action. */
  run(obs: Float32Array, frames: CameraFrames | undefined): void | Promise<void> {
    for (const { spec, data } of this.images) {
      preprocessFrame(checkFrame(frames?.[spec.camera], spec), spec, data, 0);
    }
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
    residual: LoopResidual,
    options: { checkRows?: number; forcePublicApi?: boolean } = {},
  ): Promise<{ plan: FusedPlan } | { reason: string }> {
    if (base.layout.residual || (residual instanceof OnnxPolicy && !residual.layout.residual)) {
      throw new ResrtError('FusedPolicy.plan takes (base policy, residual actor)');
    }
    if (!base.readsState) {
      return {
        reason:
          "the base reads no state vector beside its images; fusion feeds the state through the base's state input",
      };
    }
    if (residual instanceof ImageResidual) {
      return {
        reason: `the residual reads camera images through its own encoder (${residual.encoder}); it runs as its own session call beside the base`,
      };
    }
    if (base.obsDim !== residual.obsDim) {
      return { reason: `the base reads ${base.obsDim} observation values, the residual ${residual.obsDim}` };
    }
    const residualNorm = residualNormalization(residual);
    const outcome = fuseBaseAndResidual(
      readModelFile(base.path),
      graphRole(base),
      readModelFile(residual.path),
      graphRole(residual),
      { shareObs: sameNormalization(base.normalization, residualNorm) },
    );
    if (!outcome.ok) return { reason: outcome.reason };
    const plan: FusedPlan = {
      bytes: outcome.graph.bytes,
      obsInputs: outcome.graph.obsInputs,
      baseNorm: base.normalization,
      residualNorm,
      obsDim: base.obsDim,
      actionDim: base.actionDim,
      images: base.imageInputs.map((i) => ({ ...i })),
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
    const inputs = (p: FusedPlan): string => p.images.map((i) => `${i.input}<-${i.camera}`).join(', ');
    if (inputs(plan) !== inputs(this.current.plan)) {
      throw new ResrtError(
        `the new fused model reads images ${inputs(plan) || 'none'}, the running one ${inputs(this.current.plan) || 'none'}`,
        'plan the new residual against the base the loop runs',
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

  act(obs: Float32Array, frames?: CameraFrames): Float32Array | Promise<Float32Array> {
    if (obs.length !== this.obsDim) {
      throw new ResrtError(
        `the policy takes ${this.obsDim} observation values, got ${obs.length}`,
        'pass the observation vector the policy was trained on',
      );
    }
    const session = this.current;
    const ran = session.run(obs, frames);
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

  /**
   * Null when the fused outputs equal the two sessions' on random observations (and random camera
   * frames for a visuomotor base), else why not.
   */
  private async compareWith(
    base: OnnxPolicy,
    residual: OnnxPolicy | CameraResidual,
    rows: number,
  ): Promise<string | null> {
    const rng = new Rng(0x5eed);
    const norm = base.normalization ?? residualNormalization(residual);
    const obs = new Float32Array(this.obsDim);
    for (let n = 0; n < rows; n++) {
      for (let j = 0; j < obs.length; j++)
        obs[j] = norm ? norm.mean[j] + norm.std[j] * rng.normal(0, 1) : rng.normal(0, 1);
      const frames = base.imageInputs.length ? randomFrames(base.imageInputs, rng) : undefined;
      const baseAction = await base.runChunk(obs, frames);
      const r = await residual.residual(obs, baseAction, { frames, baseEmbedding: base.lastEmbedding });
      await this.act(obs, frames);
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

/** One frame of uniform random RGB per camera, at the size its input takes. */
function randomFrames(specs: readonly ImagePreprocess[], rng: Rng): CameraFrames {
  const frames: Record<string, CameraFrame> = {};
  for (const spec of specs) {
    const data = new Uint8Array(spec.width * spec.height * 3);
    for (let i = 0; i < data.length; i++) data[i] = rng.int(256);
    frames[spec.camera] = {
      width: spec.width,
      height: spec.height,
      channels: 3,
      data,
      capturedAtMs: 0,
      seq: 0,
    };
  }
  return frames;
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
  let residual: LoopResidual | null = null;
  try {
    residual = residualPath
      ? await loadResidual(residualPath, { ...expect, cameras: options.cameras })
      : null;
    if (residual) checkResidualPairing(base, residual);
  } catch (err) {
    await residual?.close();
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

export interface ResidualFileOptions {
  expectObsDim?: number;
  expectActionDim?: number;
  /** The source's cameras: a visuomotor base's image inputs are checked against them. */
  cameras?: Record<string, { width: number; height: number }>;
}

/** Loads base and residual, checks that they pair, hands both to `use`, and closes them. */
async function withPairedFiles<T>(
  basePath: string,
  residualPath: string,
  options: ResidualFileOptions,
  use: (base: OnnxPolicy, residual: LoopResidual) => Promise<T>,
): Promise<T> {
  const expect = { expectObsDim: options.expectObsDim, expectActionDim: options.expectActionDim };
  const base = await OnnxPolicy.load(basePath, { ...expect, cameras: options.cameras });
  try {
    const residual = await loadResidual(residualPath, { ...expect, cameras: options.cameras });
    try {
      checkResidualPairing(base, residual);
      return await use(base, residual);
    } finally {
      await residual.close();
    }
  } finally {
    await base.close();
  }
}

/**
 * A new residual file for a two-call loop, checked here (off the control thread) against the base
 * the loop runs: the loop thread then only loads it.
 */
export async function checkResidualSwap(
  basePath: string,
  residualPath: string,
  options: ResidualFileOptions = {},
): Promise<void> {
  await withPairedFiles(basePath, residualPath, options, async () => undefined);
}

/**
 * A new residual file for a running fused loop: loaded, checked against the base, fused with it
 * and verified here (off the control thread), ready for FusedPolicy.replace there.
 */
export async function planResidualSwap(
  basePath: string,
  residualPath: string,
  options: ResidualFileOptions = {},
): Promise<FusedPlan> {
  return withPairedFiles(basePath, residualPath, options, async (base, residual) => {
    const planned = await FusedPolicy.plan(base, residual);
    if ('reason' in planned) {
      throw new ResrtError(
        `${residualPath} cannot be fused with ${basePath}: ${planned.reason}`,
        'export the residual like the one the loop started with (same opset and layout), or restart the loop with it',
      );
    }
    return planned.plan;
  });
}
