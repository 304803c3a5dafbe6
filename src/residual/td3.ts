/**
 * The residual TD3 update (ResFiT): a deterministic residual actor on top of a frozen base, a
 * critic ensemble with REDQ targets, n-step returns, symmetric online/demo sampling. One call to
 * `update()` is one critic step (and, every `policyDelay` steps after the critic warm-up, one
 * actor step). Read top to bottom:
 *
 *   y      = R_n + γ^n · min_{i∈M} Q̄_i(s', clip(a_base' + clip(π̄(s', a_base') + ε, ±scale), ±1))
 *   L_Q    = Σ_i mean_B (Q_i(s, a) − y)²                  (M: targetSubset heads drawn per update)
 *   L_π    = −mean_B mean_i Q_i(s, clip(a_base + π(s, a_base), ±1))
 *
 * Q_i(s, a) reads [s | a], or by default [s | a_base | (a − a_base)/actionScale] (criticInput).
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../util/tf-backend.js';
import { Rng } from '../util/rng.js';
import { ResrtError } from '../util/errors.js';
import { criticInputDim, criticSplitsResidual, type ResidualConfig } from './config.js';
import { ActorNet, Adam, CriticEnsemble, polyak, type ParamSet } from './networks.js';
import { DualReplay, ReplayBuffer, emptySample, type SampleBatch } from './replay.js';
import { getRngState, setRngState, type RngState } from './rng-state.js';

export interface LearnerDims {
  obsDim: number;
  actionDim: number;
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

let instances = 0;

export class ResidualLearner {
  readonly actor: ActorNet;
  readonly actorTarget: ActorNet;
  readonly critic: CriticEnsemble;
  readonly criticTarget: CriticEnsemble;
  readonly actorOpt: Adam;
  readonly criticOpt: Adam;
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
  private readonly sample: SampleBatch;
  private readonly actorVars: ParamSet;
  private readonly criticVars: ParamSet;

  constructor(
    private readonly tf: Tf,
    readonly cfg: ResidualConfig,
    readonly dims: LearnerDims,
    seed: number,
    demos: ReplayBuffer | null = null,
  ) {
    const { obsDim: O, actionDim: A } = dims;
    this.baseDim = cfg.useBase ? A : 0;
    // Variable names are global in tfjs; a per-instance tag lets several learners coexist.
    const tag = `#${instances++}`;
    const init = new Rng(seed);
    const actorSeed = init.nextUint32();
    const criticSeed = init.nextUint32();
    this.rng = init.fork();
    // Online and target networks share their seed, so the targets start equal to the online nets.
    const actorNet = (name: string): ActorNet =>
      new ActorNet(
        tf,
        O + this.baseDim,
        cfg.actorHidden,
        A,
        cfg.actionScale,
        cfg.layerNorm,
        actorSeed,
        `${name}${tag}`,
      );
    const criticNet = (name: string): CriticEnsemble =>
      new CriticEnsemble(
        tf,
        criticInputDim(cfg, O, A),
        cfg.criticHidden,
        cfg.numCritics,
        cfg.layerNorm,
        criticSeed,
        `${name}${tag}`,
      );
    this.actor = actorNet('actor');
    this.actorTarget = actorNet('actorTarget');
    this.critic = criticNet('critic');
    this.criticTarget = criticNet('criticTarget');
    this.actorVars = this.actor.params();
    this.criticVars = this.critic.params();
    this.actorOpt = new Adam(tf, this.actorVars, cfg.actorLr, cfg.gradClip);
    this.criticOpt = new Adam(tf, this.criticVars, cfg.criticLr, cfg.gradClip);
    this.replay = new DualReplay(new ReplayBuffer(cfg.bufferSize, O, A), demos, cfg.demoFraction);
    this.sample = emptySample(cfg.batchSize, O, A);
  }

  /**
   * The critics' input for observations [B, O] and composed actions [B, A]: [s | a], or with
   * criticInput 'residual', [s | a_base | (a − a_base)/actionScale]. Call inside tf.tidy.
   */
  private criticIn(obsN: tfjs.Tensor, base: tfjs.Tensor, action: tfjs.Tensor): tfjs.Tensor2D {
    const tf = this.tf;
    if (!criticSplitsResidual(this.cfg)) return tf.concat([obsN, action], 1) as tfjs.Tensor2D;
    const residual = tf.mul(tf.sub(action, base), 1 / this.cfg.actionScale);
    return tf.concat([obsN, base, residual], 1) as tfjs.Tensor2D;
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

  // -- input assembly (plain arrays, no graph) ------------------------------------------------

  private normalized(obs: Float32Array, rows: number): Float32Array {
    if (!this.obsMean || !this.obsStd) return obs;
    const O = this.dims.obsDim;
    const out = new Float32Array(rows * O);
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < O; j++) out[i * O + j] = (obs[i * O + j] - this.obsMean[j]) / this.obsStd[j];
    return out;
  }

  /** Row-wise [x | y] for row-major x [rows, dx] and y [rows, dy]. */
  private static concatRows(
    x: Float32Array,
    dx: number,
    y: Float32Array,
    dy: number,
    rows: number,
  ): Float32Array {
    const out = new Float32Array(rows * (dx + dy));
    for (let i = 0; i < rows; i++) {
      out.set(x.subarray(i * dx, (i + 1) * dx), i * (dx + dy));
      if (dy) out.set(y.subarray(i * dy, (i + 1) * dy), i * (dx + dy) + dx);
    }
    return out;
  }

  /** Residual for a batch of (obs, base) rows, in action units (what the actor thread adds). */
  act(obs: Float32Array, baseAction: Float32Array, rows: number): Float32Array {
    const { obsDim: O, actionDim: A } = this.dims;
    const x = ResidualLearner.concatRows(this.normalized(obs, rows), O, baseAction, this.baseDim, rows);
    return this.tf
      .tidy(() => this.actor.apply(this.tf.tensor2d(x, [rows, O + this.baseDim])).dataSync() as Float32Array)
      .slice(0, rows * A);
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

  // -- the update ----------------------------------------------------------------------------

  /**
   * y = R + discount · min_{i ∈ heads} Q̄_i(s', clip(a_base' + clip(π̄(s', a_base') + noise, ±scale), ±1)).
   * `nextObsN` is the normalized next observation; `noise` is already clipped. Call inside tf.tidy.
   */
  tdTarget(s: SampleBatch, nextObsN: Float32Array, heads: number[], noise: Float32Array): tfjs.Tensor1D {
    const { tf, cfg } = this;
    const { obsDim: O, actionDim: A } = this.dims;
    const B = s.size;
    const D = this.baseDim;
    const nextBase = D ? tf.tensor2d(s.nextBaseAction, [B, A]) : tf.zeros([B, A]);
    const nextActorIn = tf.tensor2d(ResidualLearner.concatRows(nextObsN, O, s.nextBaseAction, D, B), [
      B,
      O + D,
    ]);
    const nextRes = tf.clipByValue(
      tf.add(this.actorTarget.apply(nextActorIn), tf.tensor2d(noise, [B, A])),
      -cfg.actionScale,
      cfg.actionScale,
    );
    const nextAct = tf.clipByValue(tf.add(nextBase, nextRes), -1, 1);
    const qNext = this.criticTarget.apply(this.criticIn(tf.tensor2d(nextObsN, [B, O]), nextBase, nextAct));
    const qMin = tf.min(tf.gather(qNext, tf.tensor1d(heads, 'int32')), 0);
    return tf.add(tf.tensor1d(s.reward), tf.mul(tf.tensor1d(s.discount), qMin)) as tfjs.Tensor1D;
  }

  /** tdTarget on plain arrays (observations not yet normalized), for tests and diagnostics. */
  tdTargetValues(s: SampleBatch, heads: number[], noise: Float32Array): Float32Array {
    return this.tf.tidy(
      () => this.tdTarget(s, this.normalized(s.nextObs, s.size), heads, noise).dataSync() as Float32Array,
    );
  }

  /** The REDQ subset for the next update: targetSubset distinct heads, uniformly at random. */
  drawHeads(): number[] {
    return this.chooseHeads();
  }

  update(): UpdateStats {
    const { tf, cfg } = this;
    const { obsDim: O, actionDim: A } = this.dims;
    const B = cfg.batchSize;
    const D = this.baseDim;
    const s = this.replay.sample(B, cfg.nStep, cfg.gamma, this.rng, this.sample);

    const obsN = this.normalized(s.obs, B);
    const nextObsN = this.normalized(s.nextObs, B);
    const heads = this.chooseHeads();
    const noise = new Float32Array(B * A);
    for (let i = 0; i < noise.length; i++) {
      const e = this.rng.normal(0, cfg.targetNoiseStd);
      noise[i] = Math.max(-cfg.targetNoiseClip, Math.min(cfg.targetNoiseClip, e));
    }
    const doActor = this.updates >= cfg.criticWarmupSteps && this.updates % cfg.policyDelay === 0;
    const bcWeight = cfg.heldBackBc * (1 - this.mixingShare);
    // Only actor steps on batches with held-back rows pay for the term (and its |Q| read-back).
    const heldBack = doActor && bcWeight > 0 ? heldBackRows(s.heldBack, B) : 0;

    let stats: UpdateStats | null = null;
    tf.tidy(() => {
      const base = D ? tf.tensor2d(s.baseAction, [B, A]) : tf.zeros([B, A]);
      const actorIn = tf.tensor2d(ResidualLearner.concatRows(obsN, O, s.baseAction, D, B), [B, O + D]);
      const obsT = tf.tensor2d(obsN, [B, O]);

      // 1. TD target from the target networks, REDQ min over the drawn heads.
      const y = this.tdTarget(s, nextObsN, heads, noise);

      // 2. Critic step on the executed actions.
      const criticIn = this.criticIn(obsT, base, tf.tensor2d(s.action, [B, A]));
      let qMean = 0;
      let qAbsMean = 0;
      const critic = tf.variableGrads(() => {
        const q = this.critic.apply(criticIn);
        qMean = tf.mean(q).dataSync()[0];
        if (heldBack > 0) qAbsMean = tf.mean(tf.abs(q)).dataSync()[0];
        return tf.sum(tf.mean(tf.square(tf.sub(q, y)), 1)) as tfjs.Scalar;
      }, this.criticVars.vars);
      const criticLoss = critic.value.dataSync()[0];
      if (!Number.isFinite(criticLoss)) throw new DivergenceError(this.updates, `critic loss ${criticLoss}`);
      const criticNorm = this.criticOpt
        .apply(this.criticVars.vars.map((v) => critic.grads[v.name]))
        .dataSync()[0];

      // 3. Delayed actor step on the ensemble mean, then its target.
      let actorLoss: number | null = null;
      if (doActor) {
        const actor = tf.variableGrads(() => {
          const residual = this.actor.apply(actorIn);
          const act = tf.clipByValue(tf.add(base, residual), -1, 1);
          const q = this.critic.apply(this.criticIn(obsT, base, act), true);
          const objective = tf.neg(tf.mean(q)) as tfjs.Scalar;
          if (heldBack === 0) return objective;
          // TD3+BC on the held-back rows: mean squared distance to the executed residual in units
          // of actionScale, weighted by mean |Q| (of the batch's critic step) so the two terms keep
          // their ratio as Q grows (TD3+BC's α = 2.5 is a weight of 0.4).
          const executed = tf.sub(tf.tensor2d(s.action, [B, A]), base);
          const gap = tf.div(tf.sub(residual, executed), cfg.actionScale);
          const perRow = tf.mean(tf.square(gap), 1);
          const mask = tf.tensor1d(s.heldBack.subarray(0, B));
          const bc = tf.div(tf.sum(tf.mul(perRow, mask)), B);
          return tf.add(objective, tf.mul(bcWeight * qAbsMean, bc)) as tfjs.Scalar;
        }, this.actorVars.vars);
        actorLoss = actor.value.dataSync()[0];
        if (!Number.isFinite(actorLoss)) throw new DivergenceError(this.updates, `actor loss ${actorLoss}`);
        this.actorOpt.apply(this.actorVars.vars.map((v) => actor.grads[v.name])).dispose();
        polyak(tf, this.actorVars, this.actorTarget.params(), cfg.tau);
      }
      polyak(tf, this.criticVars, this.criticTarget.params(), cfg.tau);
      stats = { criticLoss, actorLoss, qMean, criticGradNorm: criticNorm };
    });
    const done = stats as unknown as UpdateStats;
    this.updates++;
    if (done.actorLoss !== null) this.actorUpdates++;
    return done;
  }

  // -- state ---------------------------------------------------------------------------------

  private namedTensors(): { name: string; v: tfjs.Variable }[] {
    const out: { name: string; v: tfjs.Variable }[] = [];
    const add = (key: string, p: ParamSet): void =>
      p.vars.forEach((v, i) => out.push({ name: `${key}/${p.names[i].split('/').slice(1).join('/')}`, v }));
    add('actor', this.actorVars);
    add('actorTarget', this.actorTarget.params());
    add('critic', this.criticVars);
    add('criticTarget', this.criticTarget.params());
    const addOpt = (key: string, opt: Adam, p: ParamSet): void => {
      opt.m.forEach((v, i) => out.push({ name: `${key}/m/${p.names[i].split('/').slice(1).join('/')}`, v }));
      opt.v.forEach((v, i) => out.push({ name: `${key}/v/${p.names[i].split('/').slice(1).join('/')}`, v }));
    };
    addOpt('actorAdam', this.actorOpt, this.actorVars);
    addOpt('criticAdam', this.criticOpt, this.criticVars);
    return out;
  }

  getState(): LearnerState {
    return {
      tensors: this.namedTensors().map(({ name, v }) => ({
        name,
        shape: v.shape.slice(),
        data: (v.dataSync() as Float32Array).slice(),
      })),
      updates: this.updates,
      actorUpdates: this.actorUpdates,
      actorAdamStep: this.actorOpt.step,
      criticAdamStep: this.criticOpt.step,
      rng: getRngState(this.rng),
      obsMean: this.obsMean ? Array.from(this.obsMean) : null,
      obsStd: this.obsStd ? Array.from(this.obsStd) : null,
    };
  }

  setState(state: LearnerState, source: string): void {
    const byName = new Map(state.tensors.map((t) => [t.name, t]));
    for (const { name, v } of this.namedTensors()) {
      const t = byName.get(name);
      if (!t || t.shape.length !== v.shape.length || t.shape.some((d, i) => d !== v.shape[i])) {
        throw new ResrtError(
          `checkpoint ${source} does not fit this learner: ${name} is ${t ? `[${t.shape.join(',')}]` : 'missing'}, expected [${v.shape.join(',')}]`,
          'resume with the same network sizes (config) and task the checkpoint was written with, or start a new outDir',
        );
      }
      this.tf.tidy(() => v.assign(this.tf.tensor(t.data, t.shape)));
    }
    this.updates = state.updates;
    this.actorUpdates = state.actorUpdates;
    this.actorOpt.step = state.actorAdamStep;
    this.criticOpt.step = state.criticAdamStep;
    setRngState(this.rng, state.rng);
    this.obsMean = state.obsMean ? Float32Array.from(state.obsMean) : null;
    this.obsStd = state.obsStd ? Float32Array.from(state.obsStd) : null;
  }

  dispose(): void {
    const all = [
      ...this.actorVars.vars,
      ...this.actorTarget.params().vars,
      ...this.criticVars.vars,
      ...this.criticTarget.params().vars,
    ];
    this.actorOpt.dispose();
    this.criticOpt.dispose();
    this.tf.dispose(all);
  }
}

/** Rows of a sample that conservative mixing held back (SampleBatch.heldBack). */
function heldBackRows(heldBack: Float32Array, rows: number): number {
  let n = 0;
  for (let i = 0; i < rows; i++) n += heldBack[i];
  return n;
}
