/**
 * Baseline: residual PPO as in "From Imitation to Refinement" (ResiP). A Gaussian residual head
 * whose mean network starts at exactly zero (so the composed policy starts as the base), a value
 * network, N vectorized environments stepped in lockstep, GAE, the clipped surrogate, several
 * epochs of minibatch updates per rollout. On-policy: no replay, no demonstrations. Runs in-process.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Env, Policy } from '../types.js';
import { evaluatePolicy, type EvalResult } from '../runtime/evaluate.js';
import { Rng } from '../util/rng.js';
import { ResrtError } from '../util/errors.js';
import {
  AdamClock,
  adamDefaults,
  addAdamUpdate,
  CompiledGraph,
  DoubleBuffer,
  Graph,
  initEngine,
  mlpApply,
  mlpParamSpecs,
  op,
  ParamLayout,
  type DevicePreference,
  type Engine,
  type MlpSpec,
  type Value,
} from '../nn/index.js';
import { denseSpecs, initParams, network, type Network } from './networks.js';
import { ResidualActor, checkDims } from './trainer.js';
import { residualPolicySpec, exportResidualOnnx } from './export.js';
import { writeCurves, type CurvePoint } from './curves.js';
import type { TrainProgress } from './trainer.js';

export interface PpoConfig {
  /** Environments stepped in lockstep. */
  numEnvs: number;
  /** Steps per environment per rollout. */
  rolloutSteps: number;
  /** Passes over each rollout. */
  epochs: number;
  /** Minibatches per pass. */
  minibatches: number;
  gamma: number;
  gaeLambda: number;
  /** PPO ratio clip. */
  clip: number;
  lr: number;
  valueCoef: number;
  entropyCoef: number;
  gradClip: number;
  hidden: number[];
  layerNorm: boolean;
  /** Mean residual = tanh(·) × actionScale. */
  actionScale: number;
  /** Initial std of the Gaussian residual. */
  initStd: number;
  /** Normalize observations with statistics frozen after the first rollout. */
  normalizeObs: boolean;
}

export const defaultPpoConfig: PpoConfig = {
  numEnvs: 8,
  rolloutSteps: 64,
  epochs: 4,
  minibatches: 4,
  gamma: 0.99,
  gaeLambda: 0.95,
  clip: 0.2,
  lr: 3e-4,
  valueCoef: 0.5,
  entropyCoef: 0,
  gradClip: 1.0,
  hidden: [256, 256],
  layerNorm: true,
  actionScale: 0.1,
  initStd: 0.05,
  normalizeObs: true,
};

export interface PpoOptions {
  makeEnv: () => Env | Promise<Env>;
  base: Policy;
  /** One base per environment, for stateful bases (action chunks); default: share `base`. */
  makeBase?: () => Policy | Promise<Policy>;
  steps: number;
  outDir: string;
  seed?: number;
  config?: Partial<PpoConfig>;
  evalEvery?: number;
  evalEpisodes?: number;
  /** Where PPO computes: 'auto' (CUDA when installed and working, else CPU), 'cpu', 'cuda'. */
  device?: DevicePreference;
  onProgress?: (p: TrainProgress) => void;
  log?: (line: string) => void;
  taskName?: string;
}

export interface PpoResult {
  config: PpoConfig;
  backend: string;
  envSteps: number;
  updates: number;
  curve: CurvePoint[];
  baseEval: EvalResult | null;
  finalEval: EvalResult | null;
  onnxPath: string;
  wallSeconds: number;
}

const LOG_2PI = Math.log(2 * Math.PI);

/**
 * PPO's trained tensors as one flat vector: the residual mean network `actor/…` (tanh × scale,
 * last layer zero), the value network `value/…`, and `logStd` [A]. One Adam with global-norm
 * clipping moves all of them, as one optimizer over all variables did before.
 */
class PpoModel {
  readonly layout: ParamLayout;
  readonly actor: Network;
  readonly value: Network;
  private readonly forwards = new Map<number, Promise<CompiledGraph>>();
  private train: Promise<CompiledGraph> | null = null;

  constructor(
    readonly engine: Engine,
    readonly cfg: PpoConfig,
    readonly inDim: number,
    readonly actionDim: number,
  ) {
    const actorSpec: MlpSpec = { inDim, hidden: cfg.hidden, outDim: actionDim, layerNorm: cfg.layerNorm };
    const valueSpec: MlpSpec = { inDim, hidden: cfg.hidden, outDim: 1, layerNorm: cfg.layerNorm };
    this.layout = new ParamLayout([
      ...mlpParamSpecs(actorSpec, 'actor/'),
      ...mlpParamSpecs(valueSpec, 'value/'),
      { name: 'logStd', shape: [actionDim] },
    ]);
    this.actor = network('actor', actorSpec, this.layout, 'actor/');
    this.value = network('value', valueSpec, this.layout, 'value/');
  }

  init(rng: Rng): Float32Array {
    const flat = new Float32Array(this.layout.size);
    initParams(this.actor, rng.nextUint32(), true, flat);
    initParams(this.value, rng.nextUint32(), false, flat);
    this.layout.view(flat, 'logStd').fill(Math.log(this.cfg.initStd));
    return flat;
  }

  /** Mean residual [rows, A] and value [rows] of inputs x [rows, I]. */
  private heads(p: ReadonlyMap<string, Value>, x: Value): { mean: Value; value: Value } {
    const mean = op.mul(op.tanh(mlpApply(p, x, this.actor.spec, 'actor/')), this.cfg.actionScale);
    const value = op.reshape(mlpApply(p, x, this.value.spec, 'value/'), [x.shape[0]]);
    return { mean, value };
  }

  /** Mean residual and value for `rows` rows (a graph per row count, compiled on first use). */
  async forward(
    params: Float32Array,
    x: Float32Array,
    rows: number,
  ): Promise<{ mean: Float32Array; v: Float32Array }> {
    let c = this.forwards.get(rows);
    if (!c) {
      const g = new Graph(`ppo_forward_${rows}`);
      const h = this.heads(
        this.layout.unpack(g.input('params', [this.layout.size])),
        g.input('x', [rows, this.inDim]),
      );
      g.output('mean', h.mean);
      g.output('value', h.value);
      c = CompiledGraph.create(g, this.engine);
      this.forwards.set(rows, c);
    }
    const out = await (await c).run({ params, x });
    return { mean: out.mean, v: out.value };
  }

  /**
   * One minibatch step: the clipped surrogate, the value loss and the entropy bonus, their
   * gradients, one Adam step. Inputs: params, Adam moments and scalars, the minibatch.
   */
  buildTrain(mb: number): Graph {
    const { cfg, actionDim: A } = this;
    const g = new Graph('ppo_minibatch');
    const params = g.input('params', [this.layout.size]);
    const p = this.layout.unpack(params);
    const x = g.input('x', [mb, this.inDim]);
    const residual = g.input('residual', [mb, A]);
    const oldLogp = g.input('logp', [mb]);
    const adv = g.input('adv', [mb]);
    const ret = g.input('ret', [mb]);
    const logStd = p.get('logStd') as Value;
    const { mean, value } = this.heads(p, x);
    const z = op.div(op.sub(residual, mean), op.exp(logStd));
    const logp = op.sub(op.mul(op.sum(op.square(z), [1]), -0.5), op.add(op.sum(logStd), 0.5 * A * LOG_2PI));
    const ratio = op.exp(op.sub(logp, oldLogp));
    const surrogate = op.minimum(op.mul(ratio, adv), op.mul(op.clip(ratio, 1 - cfg.clip, 1 + cfg.clip), adv));
    const vLoss = op.mean(op.square(op.sub(value, ret)));
    const entropy = op.add(op.sum(logStd), 0.5 * A * (1 + LOG_2PI));
    const loss = op.sub(
      op.add(op.neg(op.mean(surrogate)), op.mul(vLoss, cfg.valueCoef)),
      op.mul(entropy, cfg.entropyCoef),
    );
    addAdamUpdate(g, this.layout, params, p, loss, {
      beta1: adamDefaults.beta1,
      beta2: adamDefaults.beta2,
      clipNorm: cfg.gradClip,
    });
    return g;
  }

  trainGraph(mb: number): Promise<CompiledGraph> {
    this.train ??= CompiledGraph.create(this.buildTrain(mb), this.engine);
    return this.train;
  }

  async release(): Promise<void> {
    const all = [...this.forwards.values(), ...(this.train ? [this.train] : [])];
    await Promise.all(all.map(async (c) => (await c).release()));
  }
}

export async function trainResidualPpo(options: PpoOptions): Promise<PpoResult> {
  const t0 = performance.now();
  const cfg: PpoConfig = { ...defaultPpoConfig, ...options.config };
  if (
    !Number.isInteger(cfg.numEnvs) ||
    cfg.numEnvs <= 0 ||
    !Number.isInteger(cfg.rolloutSteps) ||
    cfg.rolloutSteps <= 0
  )
    throw new ResrtError(
      `PPO numEnvs ${cfg.numEnvs} / rolloutSteps ${cfg.rolloutSteps}`,
      'use positive integers',
    );
  const engine = await initEngine({ device: options.device ?? 'auto' });
  // Which engine runs is always worth a line; pass log: () => {} to silence it.
  const log = options.log ?? ((line: string): void => void process.stderr.write(`${line}\n`));
  log(`engine: ${engine.description}`);
  const seed = options.seed ?? 0;
  const evalEpisodes = options.evalEpisodes ?? 100;
  const evalEvery = options.evalEvery ?? 0;
  mkdirSync(options.outDir, { recursive: true });

  const N = cfg.numEnvs;
  const T = cfg.rolloutSteps;
  const envs: Env[] = [];
  const bases: Policy[] = [];
  for (let i = 0; i < N; i++) {
    envs.push(await options.makeEnv());
    bases.push(options.makeBase ? await options.makeBase() : options.base);
  }
  const evalEnv = await options.makeEnv();
  checkDims(envs[0], options.base, undefined);
  const O = envs[0].observationSpace.dim;
  const A = envs[0].actionSpace.dim;
  const I = O + A;
  const taskName = options.taskName ?? envs[0].id;

  const init = new Rng(seed);
  const model = new PpoModel(engine, cfg, I, A);
  const params = new DoubleBuffer(model.layout.size, model.init(init));
  const moments = { m: new DoubleBuffer(model.layout.size), v: new DoubleBuffer(model.layout.size) };
  const clock = new AdamClock({ ...adamDefaults, lr: cfg.lr, clipNorm: cfg.gradClip });
  const rng = init.fork();
  let obsMean: Float32Array | null = null;
  let obsStd: Float32Array | null = null;

  const inputRow = (obs: Float32Array, base: Float32Array, out: Float32Array, off: number): void => {
    for (let j = 0; j < O; j++) out[off + j] = obsMean && obsStd ? (obs[j] - obsMean[j]) / obsStd[j] : obs[j];
    out.set(base, off + O);
  };
  const spec = () =>
    residualPolicySpec({
      layers: denseSpecs(model.actor, params.front),
      obsDim: O,
      actionDim: A,
      actionScale: cfg.actionScale,
      useBase: true,
      obsMean,
      obsStd,
      version: 0,
      metadata: { 'resrt.trained_by': 'resrt residual PPO (ResiP)' },
    });
  let currentSpec = spec();
  const evalPolicy = new ResidualActor(options.base, () => currentSpec, A);

  const curve: CurvePoint[] = [];
  let envSteps = 0;
  let updates = 0;
  let episodes = 0;
  const recent: boolean[] = [];
  let lastEvalAt = -1;
  let lastLoss: number | null = null;
  const runEval = async (): Promise<EvalResult> => {
    currentSpec = spec();
    const r = await evaluatePolicy(evalEnv, evalPolicy, {
      episodes: evalEpisodes,
      seed: 1_000_000 + seed * 10_000,
    });
    curve.push({
      envSteps,
      updates,
      wallSeconds: (performance.now() - t0) / 1000,
      episodes,
      successRate: r.successRate,
      ciLow: r.ci95.low,
      ciHigh: r.ci95.high,
      evalEpisodes: r.episodes,
      trainSuccessRate: recent.length ? recent.filter(Boolean).length / recent.length : null,
      qMean: null,
      criticLoss: lastLoss,
      actorLoss: null,
      updatesPerSec: null,
    });
    lastEvalAt = envSteps;
    writeCurves(options.outDir, curve, `${taskName}: residual PPO success rate`);
    return r;
  };
  const progress = (phase: TrainProgress['phase']): void =>
    options.onProgress?.({
      envSteps,
      totalSteps: options.steps,
      episodes,
      updates,
      updatesPerSec: 0,
      evalSuccessRate: curve[curve.length - 1]?.successRate ?? null,
      trainSuccessRate: recent.length ? recent.filter(Boolean).length / recent.length : null,
      qMean: null,
      criticLoss: lastLoss,
      actorLoss: null,
      phase,
    });

  /** Mean residual and value for rows of inputs [n, I]. */
  const forward = (x: Float32Array, n: number): Promise<{ mean: Float32Array; v: Float32Array }> =>
    model.forward(params.front, x, n);

  const baseEval = await runEval();
  const obs: Float32Array[] = [];
  const baseAct: Float32Array[] = [];
  const success: boolean[] = Array(N).fill(false);
  let episodeSeed = seed * 1_000_003;
  for (let i = 0; i < N; i++) {
    const s = episodeSeed++;
    obs.push((await envs[i].reset({ seed: s })).obs);
    bases[i].reset?.(s);
    baseAct.push(Float32Array.from(await bases[i].act(obs[i])));
  }

  // Rollout storage, [T, N, ·] flattened.
  const X = new Float32Array(T * N * I);
  const RES = new Float32Array(T * N * A);
  const LOGP = new Float32Array(T * N);
  const V = new Float32Array(T * N);
  const R = new Float32Array(T * N);
  const TERM = new Uint8Array(T * N);
  const TRUNC = new Uint8Array(T * N);
  const VFINAL = new Float32Array(T * N);

  while (envSteps < options.steps) {
    const std = Array.from(model.layout.view(params.front, 'logStd'), (l) => Math.exp(l));
    const logStdSum = std.reduce((s, v) => s + Math.log(v), 0);
    for (let t = 0; t < T; t++) {
      const x = new Float32Array(N * I);
      for (let i = 0; i < N; i++) inputRow(obs[i], baseAct[i], x, i * I);
      const { mean, v } = await forward(x, N);
      for (let i = 0; i < N; i++) {
        const k = t * N + i;
        X.set(x.subarray(i * I, (i + 1) * I), k * I);
        V[k] = v[i];
        let lp = -logStdSum - 0.5 * A * LOG_2PI;
        const action = new Float32Array(A);
        for (let j = 0; j < A; j++) {
          const eps = rng.normal();
          const r = mean[i * A + j] + std[j] * eps;
          RES[k * A + j] = r;
          lp -= 0.5 * eps * eps;
          action[j] = Math.max(-1, Math.min(1, baseAct[i][j] + r));
        }
        LOGP[k] = lp;
        const step = await envs[i].step(action);
        if (step.info.success) success[i] = true;
        R[k] = step.reward;
        TERM[k] = step.terminated ? 1 : 0;
        TRUNC[k] = step.truncated && !step.terminated ? 1 : 0;
        envSteps++;
        if (step.terminated || step.truncated) {
          if (TRUNC[k]) {
            const xf = new Float32Array(I);
            inputRow(step.obs, Float32Array.from(await bases[i].act(step.obs)), xf, 0);
            VFINAL[k] = (await forward(xf, 1)).v[0];
          }
          episodes++;
          recent.push(success[i]);
          if (recent.length > 100) recent.shift();
          success[i] = false;
          const s = episodeSeed++;
          obs[i] = (await envs[i].reset({ seed: s })).obs;
          bases[i].reset?.(s);
        } else {
          obs[i] = step.obs;
        }
        baseAct[i] = Float32Array.from(await bases[i].act(obs[i]));
      }
    }
    if (cfg.normalizeObs && !obsMean) {
      // Freeze statistics on the first rollout (the base's own state distribution) and normalize
      // it in place. Its log-probabilities stay valid: the mean head is still exactly zero.
      const m = new Float64Array(O);
      const s2 = new Float64Array(O);
      for (let k = 0; k < T * N; k++) for (let j = 0; j < O; j++) m[j] += X[k * I + j] / (T * N);
      for (let k = 0; k < T * N; k++)
        for (let j = 0; j < O; j++) s2[j] += (X[k * I + j] - m[j]) ** 2 / (T * N);
      obsMean = Float32Array.from(m);
      obsStd = Float32Array.from(s2, (v) => Math.max(1e-2, Math.sqrt(v)));
      for (let k = 0; k < T * N; k++)
        for (let j = 0; j < O; j++) X[k * I + j] = (X[k * I + j] - obsMean[j]) / obsStd[j];
    }
    // GAE, cut at episode ends; truncated steps bootstrap from the value of their final state.
    const xLast = new Float32Array(N * I);
    for (let i = 0; i < N; i++) inputRow(obs[i], baseAct[i], xLast, i * I);
    const vLast = (await forward(xLast, N)).v;
    const ADV = new Float32Array(T * N);
    const RET = new Float32Array(T * N);
    for (let i = 0; i < N; i++) {
      let gae = 0;
      for (let t = T - 1; t >= 0; t--) {
        const k = t * N + i;
        let delta: number;
        if (TERM[k]) {
          delta = R[k] - V[k];
          gae = delta;
        } else if (TRUNC[k]) {
          delta = R[k] + cfg.gamma * VFINAL[k] - V[k];
          gae = delta;
        } else {
          const next = t === T - 1 ? vLast[i] : V[(t + 1) * N + i];
          delta = R[k] + cfg.gamma * next - V[k];
          gae = delta + cfg.gamma * cfg.gaeLambda * gae;
        }
        ADV[k] = gae;
        RET[k] = gae + V[k];
      }
    }
    let mu = 0;
    for (const a of ADV) mu += a / ADV.length;
    let sd = 0;
    for (const a of ADV) sd += (a - mu) ** 2 / ADV.length;
    sd = Math.sqrt(sd) + 1e-8;
    for (let k = 0; k < ADV.length; k++) ADV[k] = (ADV[k] - mu) / sd;

    // Clipped-surrogate epochs.
    const M = T * N;
    const mb = Math.max(1, Math.floor(M / cfg.minibatches));
    const order = [...Array(M).keys()];
    for (let epoch = 0; epoch < cfg.epochs; epoch++) {
      for (let i = M - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [order[i], order[j]] = [order[j], order[i]];
      }
      for (let start = 0; start + mb <= M; start += mb) {
        const idx = order.slice(start, start + mb);
        const gx = new Float32Array(mb * I);
        const gr = new Float32Array(mb * A);
        const glp = new Float32Array(mb);
        const gadv = new Float32Array(mb);
        const gret = new Float32Array(mb);
        idx.forEach((k, r) => {
          gx.set(X.subarray(k * I, (k + 1) * I), r * I);
          gr.set(RES.subarray(k * A, (k + 1) * A), r * A);
          glp[r] = LOGP[k];
          gadv[r] = ADV[k];
          gret[r] = RET[k];
        });
        const scalars = clock.nextScalars();
        const out = await (
          await model.trainGraph(mb)
        ).run(
          {
            params: params.front,
            m: moments.m.front,
            v: moments.v.front,
            stepSize: scalars.stepSize,
            epsHat: scalars.epsHat,
            x: gx,
            residual: gr,
            logp: glp,
            adv: gadv,
            ret: gret,
          },
          { 'next:params': params.back, 'next:m': moments.m.back, 'next:v': moments.v.back },
        );
        lastLoss = out.loss[0];
        if (!Number.isFinite(lastLoss)) {
          throw new ResrtError(
            `PPO diverged at update ${updates} (loss ${lastLoss})`,
            'lower lr or check rewards for NaN',
          );
        }
        params.swap();
        moments.m.swap();
        moments.v.swap();
        clock.commit();
        updates++;
      }
    }
    progress('training');
    if (evalEvery > 0 && envSteps - lastEvalAt >= evalEvery && envSteps < options.steps) await runEval();
  }
  const finalEval = lastEvalAt === envSteps ? null : await runEval();
  currentSpec = spec();
  const onnxPath = join(options.outDir, 'residual-ppo.onnx');
  exportResidualOnnx(currentSpec, onnxPath);
  progress('done');
  await model.release();
  for (const e of envs) await e.close();
  await evalEnv.close();
  return {
    config: cfg,
    backend: engine.description,
    envSteps,
    updates,
    curve,
    baseEval,
    finalEval,
    onnxPath,
    wallSeconds: (performance.now() - t0) / 1000,
  };
}
