/**
 * The residual TD3 learner (ResFiT): a deterministic residual actor on top of a frozen base, a
 * critic ensemble with REDQ targets, n-step returns, symmetric online/demo sampling. One call to
 * `update()` is one critic step (and, every `policyDelay` steps after the critic warm-up, one actor
 * step), run as ONE onnxruntime session call of the graphs in td3-graph.ts (which reads top to
 * bottom as the algorithm). This class owns the state those graphs read and return: parameters,
 * targets and Adam moments as flat double-buffered vectors, Adam step counts, the RNG, the replay.
 */
import {
  AdamClock,
  adamDefaults,
  CompiledGraph,
  DoubleBuffer,
  type Engine,
  type Graph,
} from '../nn/index.js';
import type { DenseLayerSpec } from '../types.js';
import { Rng } from '../util/rng.js';
import { ResrtError } from '../util/errors.js';
import { criticInputDim, type ResidualConfig } from './config.js';
import { denseSpecs, initParams, network } from './networks.js';
import {
  initLearnedEncoder,
  learnedEncoderNet,
  obsImagesInput,
  nextImagesInput,
  ShiftedImages,
  type LearnedEncoderNet,
} from './learned-encoder.js';
import { DualReplay, ReplayBuffer, emptySample, type SampleBatch } from './replay.js';
import type { FrameCamera } from './replay-frames.js';
import { getRngState, setRngState, type RngState } from './rng-state.js';
import {
  buildActGraph,
  buildTargetGraph,
  buildUpdateGraph,
  layoutOf,
  next,
  stateKeysOf,
  STATS,
  type StateKey,
  type Td3Dims,
  type Td3Nets,
} from './td3-graph.js';

export interface LearnerDims {
  obsDim: number;
  actionDim: number;
  /**
   * Cameras whose frames the online replay keeps (ResidualConfig.replayFrames); absent: none. With
   * encoder 'learned' the learner trains a conv encoder per camera on them.
   */
  frameCameras?: readonly FrameCamera[];
}

export interface UpdateStats {
  criticLoss: number;
  /** Null on critic-only updates. */
  actorLoss: number | null;
  /** Mean Q(s, a) over heads and batch. */
  qMean: number;
  criticGradNorm: number;
}

/** Thrown when a loss turns NaN/∞: the run stops and keeps its last good checkpoint. */
export class DivergenceError extends ResrtError {
  constructor(
    readonly update: number,
    what: string,
  ) {
    super(
      `the learner diverged at update ${update}: ${what}`,
      'lower criticLr/actorLr or gradClip, check rewards and observations for NaN/huge values, then --resume from the last good checkpoint',
    );
  }
}

/** Everything a checkpoint needs to continue the learner exactly. */
export interface LearnerState {
  tensors: { name: string; shape: number[]; data: Float32Array }[];
  updates: number;
  actorUpdates: number;
  actorAdamStep: number;
  criticAdamStep: number;
  rng: RngState;
  obsMean: number[] | null;
  obsStd: number[] | null;
}

export class ResidualLearner {
  readonly nets: Td3Nets;
  readonly rng: Rng;
  readonly replay: DualReplay;
  /** Critic updates done. */
  updates = 0;
  actorUpdates = 0;
  /**
   * The conservative mixer's latest exploring share (StepBatch.mixingShare); the held-back term
   * weighs 1 − this. 0 until a mixed run says otherwise.
   */
  mixingShare = 0;
  obsMean: Float32Array | null = null;
  obsStd: Float32Array | null = null;
  /** Width of the base-action input (0 when learning from scratch). */
  readonly baseDim: number;
  private readonly shape: Td3Dims;
  private readonly state: Partial<Record<StateKey, DoubleBuffer>>;
  /** The float images of an update (encoder 'learned'), else null. */
  private readonly images: ShiftedImages | null;
  private readonly actorClock: AdamClock;
  private readonly criticClock: AdamClock;
  private readonly sample: SampleBatch;
  private readonly obsN: Float32Array;
  private readonly nextObsN: Float32Array;
  private readonly noise: Float32Array;
  private readonly zeros: Float32Array;
  private readonly headIdx: BigInt64Array;
  private readonly stats = new Float32Array(STATS.length);
  private readonly actGraphs = new Map<number, Promise<CompiledGraph>>();
  private readonly targetGraphs = new Map<number, Promise<CompiledGraph>>();
  /** An update is between drawing its batch and keeping its result (state reads would be torn). */
  private busy = false;

  private constructor(
    readonly engine: Engine,
    readonly cfg: ResidualConfig,
    readonly dims: LearnerDims,
    seed: number,
    demos: ReplayBuffer | null,
    private readonly criticStep: CompiledGraph,
    private readonly fullStep: CompiledGraph,
  ) {
    const { obsDim: O, actionDim: A } = dims;
    this.baseDim = cfg.useBase ? A : 0;
    this.shape = { obsDim: O, actionDim: A, baseDim: this.baseDim };
    this.nets = ResidualLearner.networks(cfg, this.shape, dims.frameCameras);
    const init = new Rng(seed);
    const actorSeed = init.nextUint32();
    const criticSeed = init.nextUint32();
    // Drawn only with an encoder, so the other modes' streams stay as they were.
    const encoderSeed = this.nets.encoder ? init.nextUint32() : 0;
    this.rng = init.fork();
    // Online and target networks share their seed, so the targets start equal to the online nets.
    const actor = initParams(this.nets.actor, actorSeed, true);
    const critic = initParams(this.nets.critic, criticSeed, false);
    const buffer = (init: Float32Array | number): DoubleBuffer =>
      typeof init === 'number' ? new DoubleBuffer(init) : new DoubleBuffer(init.length, init);
    this.state = {
      actor: buffer(actor),
      actorTarget: buffer(actor),
      critic: buffer(critic),
      criticTarget: buffer(critic),
      'actorAdam/m': buffer(actor.length),
      'actorAdam/v': buffer(actor.length),
      'criticAdam/m': buffer(critic.length),
      'criticAdam/v': buffer(critic.length),
    };
    if (this.nets.encoder) {
      const encoder = initLearnedEncoder(this.nets.encoder, encoderSeed);
      this.state.encoder = buffer(encoder);
      this.state.encoderTarget = buffer(encoder);
      this.state['encoderAdam/m'] = buffer(encoder.length);
      this.state['encoderAdam/v'] = buffer(encoder.length);
    }
    this.actorClock = new AdamClock({ ...adamDefaults, lr: cfg.actorLr, clipNorm: cfg.gradClip });
    this.criticClock = new AdamClock({ ...adamDefaults, lr: cfg.criticLr, clipNorm: cfg.gradClip });
    this.replay = new DualReplay(
      new ReplayBuffer(cfg.bufferSize, O, A, dims.frameCameras),
      demos,
      cfg.demoFraction,
    );
    const B = cfg.batchSize;
    // Frames are copied into batches only when the encoder reads them.
    this.sample = emptySample(B, O, A, this.nets.encoder ? dims.frameCameras : undefined);
    this.images = this.nets.encoder ? new ShiftedImages(this.nets.encoder, B) : null;
    this.obsN = new Float32Array(B * O);
    this.nextObsN = new Float32Array(B * O);
    this.noise = new Float32Array(B * A);
    this.zeros = new Float32Array(B * A);
    this.headIdx = new BigInt64Array(cfg.targetSubset);
  }

  private static networks(
    cfg: ResidualConfig,
    dims: Td3Dims,
    frameCameras?: readonly FrameCamera[],
  ): Td3Nets {
    const { obsDim: O, actionDim: A, baseDim: D } = dims;
    const encoder: LearnedEncoderNet | undefined =
      cfg.encoder === 'learned' && frameCameras?.length ? learnedEncoderNet(cfg, frameCameras) : undefined;
    const F = encoder?.features ?? 0;
    return {
      ...(encoder ? { encoder } : {}),
      actor: network('actor', {
        inDim: F + O + D,
        hidden: cfg.actorHidden,
        outDim: A,
        layerNorm: cfg.layerNorm,
      }),
      critic: network('critic', {
        inDim: F + criticInputDim(cfg, O, A),
        hidden: cfg.criticHidden,
        outDim: 1,
        layerNorm: cfg.layerNorm,
        heads: cfg.numCritics,
      }),
    };
  }

  /** Builds the update graphs and their onnxruntime sessions on `engine`. */
  static async create(
    engine: Engine,
    cfg: ResidualConfig,
    dims: LearnerDims,
    seed: number,
    demos: ReplayBuffer | null = null,
  ): Promise<ResidualLearner> {
    const d: Td3Dims = { ...dims, baseDim: cfg.useBase ? dims.actionDim : 0 };
    const nets = ResidualLearner.networks(cfg, d, dims.frameCameras);
    const [criticStep, fullStep] = await Promise.all([
      CompiledGraph.create(buildUpdateGraph(nets, cfg, d, false), engine),
      CompiledGraph.create(buildUpdateGraph(nets, cfg, d, true), engine),
    ]);
    return new ResidualLearner(engine, cfg, dims, seed, demos, criticStep, fullStep);
  }

  /** The current values of one state vector (a view; do not keep it across updates). */
  params(key: StateKey): Float32Array {
    return this.buffer(key).front;
  }

  private buffer(key: StateKey): DoubleBuffer {
    const b = this.state[key];
    if (!b) throw new Error(`ResidualLearner: no ${key} (the learner has no learned encoder)`);
    return b;
  }

  /** The learned encoder (encoder mode 'learned' on a run with cameras), else null. */
  get encoder(): LearnedEncoderNet | null {
    return this.nets.encoder ?? null;
  }

  /** The actor's layers as data (copies), for MlpPolicySpec / export. */
  actorLayers(target = false): DenseLayerSpec[] {
    return denseSpecs(this.nets.actor, this.params(target ? 'actorTarget' : 'actor'));
  }

  /** Head `head` of the critic (or its target) as dense layers (copies). */
  criticHeadLayers(head: number, target = false): DenseLayerSpec[] {
    return denseSpecs(this.nets.critic, this.params(target ? 'criticTarget' : 'critic'), head);
  }

  /** Freezes observation statistics (computed from warm-up data and demos). */
  setObsNormalization(mean: Float32Array, std: Float32Array): void {
    this.obsMean = mean;
    this.obsStd = std;
  }

  /** Statistics over every stored online and demo observation; std floored at 1e-2. */
  computeObsNormalization(): { mean: Float32Array; std: Float32Array } {
    const O = this.dims.obsDim;
    const bufs = [this.replay.online, this.replay.demos].filter((b): b is ReplayBuffer => !!b && b.size > 0);
    const mean = new Float64Array(O);
    const sq = new Float64Array(O);
    let n = 0;
    for (const b of bufs) {
      for (let i = 0; i < b.size; i++) {
        for (let j = 0; j < O; j++) {
          const v = b.obs[i * O + j];
          mean[j] += v;
          sq[j] += v * v;
        }
      }
      n += b.size;
    }
    const m = new Float32Array(O);
    const s = new Float32Array(O).fill(1);
    if (n > 0) {
      for (let j = 0; j < O; j++) {
        m[j] = mean[j] / n;
        s[j] = Math.max(1e-2, Math.sqrt(Math.max(0, sq[j] / n - (mean[j] / n) ** 2)));
      }
    }
    return { mean: m, std: s };
  }

  /** Observations normalized with the frozen statistics (into `out`, or a new array). */
  private normalized(obs: Float32Array, rows: number, out?: Float32Array): Float32Array {
    const O = this.dims.obsDim;
    const dst = out ?? new Float32Array(rows * O);
    if (!this.obsMean || !this.obsStd) {
      dst.set(obs.subarray(0, rows * O));
      return dst;
    }
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < O; j++) dst[i * O + j] = (obs[i * O + j] - this.obsMean[j]) / this.obsStd[j];
    return dst;
  }

  private feedsOf(keys: readonly StateKey[]): Record<string, Float32Array> {
    return Object.fromEntries(keys.map((k) => [k, this.buffer(k).front]));
  }

  private intoOf(keys: readonly StateKey[]): Record<string, Float32Array> {
    return Object.fromEntries(keys.map((k) => [next(k), this.buffer(k).back]));
  }

  /** A forward-only graph for `rows` rows, compiled on first use. */
  private graphFor(
    cache: Map<number, Promise<CompiledGraph>>,
    rows: number,
    build: () => Graph,
  ): Promise<CompiledGraph> {
    let c = cache.get(rows);
    if (!c) {
      c = CompiledGraph.create(build(), this.engine);
      cache.set(rows, c);
    }
    return c;
  }

  /**
   * Residual for a batch of (obs, base) rows, in action units (what the actor thread adds); with a
   * learned encoder, `images` holds each camera's [rows, 3, H, W] floats in [0, 1].
   */
  async act(
    obs: Float32Array,
    baseAction: Float32Array,
    rows: number,
    images: readonly Float32Array[] = [],
  ): Promise<Float32Array> {
    const { actionDim: A } = this.dims;
    const graph = await this.graphFor(this.actGraphs, rows, () =>
      buildActGraph(this.nets, this.cfg, this.shape, rows),
    );
    const out = await graph.run({
      ...this.feedsOf(this.nets.encoder ? ['actor', 'encoder'] : ['actor']),
      ...this.imageFeeds(images, obsImagesInput),
      obs: this.normalized(obs, rows),
      base: this.baseDim ? baseAction.subarray(0, rows * A) : new Float32Array(rows * A),
    });
    return out.residual;
  }

  private chooseHeads(): number[] {
    const n = this.cfg.numCritics;
    const idx = [...Array(n).keys()];
    for (let i = 0; i < this.cfg.targetSubset; i++) {
      const j = i + this.rng.int(n - i);
      [idx[i], idx[j]] = [idx[j], idx[i]];
    }
    return idx.slice(0, this.cfg.targetSubset);
  }

  /** The REDQ subset for the next update: targetSubset distinct heads, uniformly at random. */
  drawHeads(): number[] {
    return this.chooseHeads();
  }

  /**
   * y = R + discount · min_{i ∈ heads} Q̄_i(s', clip(a_base' + clip(π̄(s', a_base') + noise, ±scale), ±1))
   * on plain arrays (observations not yet normalized; `noise` already clipped), for tests and diagnostics.
   */
  async tdTargetValues(
    s: SampleBatch,
    heads: number[],
    noise: Float32Array,
    nextImages: readonly Float32Array[] = [],
  ): Promise<Float32Array> {
    const rows = s.size;
    const { actionDim: A } = this.dims;
    const graph = await this.graphFor(this.targetGraphs, rows, () =>
      buildTargetGraph(this.nets, { ...this.cfg, targetSubset: heads.length }, this.shape, rows),
    );
    const out = await graph.run({
      ...this.feedsOf(
        this.nets.encoder
          ? ['actorTarget', 'criticTarget', 'encoderTarget']
          : ['actorTarget', 'criticTarget'],
      ),
      ...this.imageFeeds(nextImages, nextImagesInput),
      reward: s.reward,
      discount: s.discount,
      nextObs: this.normalized(s.nextObs, rows),
      nextBase: this.baseDim ? s.nextBaseAction : new Float32Array(rows * A),
      noise,
      heads: BigInt64Array.from(heads, (h) => BigInt(h)),
    });
    return out.y;
  }

  /** One image input per camera of the learned encoder (none without one). */
  private imageFeeds(
    images: readonly Float32Array[],
    name: (k: number) => string,
  ): Record<string, Float32Array> {
    const cameras = this.nets.encoder?.cameras.length ?? 0;
    if (images.length !== cameras)
      throw new Error(`ResidualLearner: ${images.length} image batches for ${cameras} cameras`);
    return Object.fromEntries(images.map((img, k) => [name(k), img]));
  }

  async update(): Promise<UpdateStats> {
    this.assertIdle('update');
    this.busy = true;
    try {
      return await this.step();
    } finally {
      this.busy = false;
    }
  }

  private assertIdle(what: string): void {
    if (this.busy)
      throw new Error(`ResidualLearner.${what}() while an update is running: await update() first`);
  }

  private async step(): Promise<UpdateStats> {
    const { cfg } = this;
    const B = cfg.batchSize;
    const D = this.baseDim;
    const s = this.replay.sample(B, cfg.nStep, cfg.gamma, this.rng, this.sample);
    this.normalized(s.obs, B, this.obsN);
    this.normalized(s.nextObs, B, this.nextObsN);
    if (this.images && s.frames) this.images.fill(s.frames, this.rng);
    const heads = this.chooseHeads();
    heads.forEach((h, i) => (this.headIdx[i] = BigInt(h)));
    for (let i = 0; i < this.noise.length; i++) {
      const e = this.rng.normal(0, cfg.targetNoiseStd);
      this.noise[i] = Math.max(-cfg.targetNoiseClip, Math.min(cfg.targetNoiseClip, e));
    }
    const doActor = this.updates >= cfg.criticWarmupSteps && this.updates % cfg.policyDelay === 0;
    const bcWeight = cfg.heldBackBc * (1 - this.mixingShare);
    // The TD3+BC term acts only on actor steps whose batch holds held-back rows.
    const heldBack = doActor && bcWeight > 0 ? heldBackRows(s.heldBack, B) : 0;

    const criticKeys: StateKey[] = ['critic', 'criticTarget', 'criticAdam/m', 'criticAdam/v'];
    // The encoder trains with the critic.
    if (this.nets.encoder) criticKeys.push('encoder', 'encoderTarget', 'encoderAdam/m', 'encoderAdam/v');
    const actorKeys: StateKey[] = doActor ? ['actor', 'actorTarget', 'actorAdam/m', 'actorAdam/v'] : [];
    const critic = this.criticClock.nextScalars();
    const feeds: Record<string, Float32Array | BigInt64Array> = {
      ...this.feedsOf([...criticKeys, ...(doActor ? actorKeys : ['actorTarget' as const])]),
      obs: this.obsN,
      base: D ? s.baseAction : this.zeros,
      action: s.action,
      reward: s.reward,
      discount: s.discount,
      nextObs: this.nextObsN,
      nextBase: D ? s.nextBaseAction : this.zeros,
      noise: this.noise,
      heads: this.headIdx,
      'critic/stepSize': critic.stepSize,
      'critic/epsHat': critic.epsHat,
      ...(this.images ? this.images.feeds() : {}),
    };
    if (doActor) {
      const actor = this.actorClock.nextScalars();
      feeds['actor/stepSize'] = actor.stepSize;
      feeds['actor/epsHat'] = actor.epsHat;
      feeds.heldBack = s.heldBack;
      feeds.bcWeight = Float32Array.of(heldBack > 0 ? bcWeight : 0);
    }
    const into = { ...this.intoOf([...criticKeys, ...actorKeys]), stats: this.stats };
    await (doActor ? this.fullStep : this.criticStep).run(feeds, into);

    const [criticLoss, qMean, , criticGradNorm, actorLossValue] = this.stats;
    // A diverged step is not kept: the state stays at the last good update.
    if (!Number.isFinite(criticLoss)) throw new DivergenceError(this.updates, `critic loss ${criticLoss}`);
    if (doActor && !Number.isFinite(actorLossValue))
      throw new DivergenceError(this.updates, `actor loss ${actorLossValue}`);
    for (const k of [...criticKeys, ...actorKeys]) this.buffer(k).swap();
    this.criticClock.commit();
    if (doActor) {
      this.actorClock.commit();
      this.actorUpdates++;
    }
    this.updates++;
    return { criticLoss, actorLoss: doActor ? actorLossValue : null, qMean, criticGradNorm };
  }

  // -- state ---------------------------------------------------------------------------------

  getState(): LearnerState {
    this.assertIdle('getState');
    const tensors: LearnerState['tensors'] = [];
    for (const key of stateKeysOf(this.nets)) {
      const layout = layoutOf(this.nets, key);
      for (const e of layout.entries)
        tensors.push({
          name: `${key}/${e.name}`,
          shape: [...e.shape],
          data: layout.view(this.params(key), e.name).slice(),
        });
    }
    return {
      tensors,
      updates: this.updates,
      actorUpdates: this.actorUpdates,
      actorAdamStep: this.actorClock.step,
      criticAdamStep: this.criticClock.step,
      rng: getRngState(this.rng),
      obsMean: this.obsMean ? Array.from(this.obsMean) : null,
      obsStd: this.obsStd ? Array.from(this.obsStd) : null,
    };
  }

  setState(state: LearnerState, source: string): void {
    this.assertIdle('setState');
    const byName = new Map(state.tensors.map((t) => [t.name, t]));
    for (const key of stateKeysOf(this.nets)) {
      const layout = layoutOf(this.nets, key);
      for (const e of layout.entries) {
        const name = `${key}/${e.name}`;
        const t = byName.get(name);
        if (!t || t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) {
          throw new ResrtError(
            `checkpoint ${source} does not fit this learner: ${name} is ${t ? `[${t.shape.join(',')}]` : 'missing'}, expected [${e.shape.join(',')}]`,
            'resume with the same network sizes (config) and task the checkpoint was written with, or start a new outDir',
          );
        }
        layout.view(this.params(key), e.name).set(t.data);
      }
    }
    this.updates = state.updates;
    this.actorUpdates = state.actorUpdates;
    this.actorClock.step = state.actorAdamStep;
    this.criticClock.step = state.criticAdamStep;
    setRngState(this.rng, state.rng);
    this.obsMean = state.obsMean ? Float32Array.from(state.obsMean) : null;
    this.obsStd = state.obsStd ? Float32Array.from(state.obsStd) : null;
  }

  async dispose(): Promise<void> {
    const graphs = [this.criticStep, this.fullStep];
    for (const c of [this.actGraphs, this.targetGraphs]) for (const g of c.values()) graphs.push(await g);
    await Promise.all(graphs.map((g) => g.release()));
  }
}

/** Rows of a sample that conservative mixing held back (SampleBatch.heldBack). */
function heldBackRows(heldBack: Float32Array, rows: number): number {
  let n = 0;
  for (let i = 0; i < rows; i++) n += heldBack[i];
  return n;
}
