/**
 * Baseline: residual PPO as in "From Imitation to Refinement" (ResiP). A Gaussian residual head
 * whose mean network starts at exactly zero (so the composed policy starts as the base), a value
 * network, N vectorized environments stepped in lockstep, GAE, the clipped surrogate, several
 * epochs of minibatch updates per rollout. On-policy: no replay, no demonstrations. Runs in-process.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type * as tfjs from '@tensorflow/tfjs';
import type { Env, Policy } from '../types.js';
import { evaluatePolicy, type EvalResult } from '../runtime/evaluate.js';
import { Rng } from '../util/rng.js';
import { ResrtError } from '../util/errors.js';
import { initTf, type BackendPreference } from '../util/tf-backend.js';
import { ActorNet, Adam, CriticEnsemble, type ParamSet } from './networks.js';
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
  backend?: BackendPreference;
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
let runs = 0;

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
  const { tf, description } = await initTf(options.backend ?? 'auto');
  // Which backend and profile run is always worth a line; pass log: () => {} to silence it.
  const log = options.log ?? ((line: string): void => void process.stderr.write(`${line}\n`));
  log(`backend: ${description}`);
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
  const actor = new ActorNet(
    tf,
    I,
    cfg.hidden,
    A,
    cfg.actionScale,
    cfg.layerNorm,
    init.nextUint32(),
    `ppoActor#${runs}`,
  );
  const value = new CriticEnsemble(
    tf,
    I,
    cfg.hidden,
    1,
    cfg.layerNorm,
    init.nextUint32(),
    `ppoValue#${runs}`,
  );
  const logStd = tf.variable(tf.fill([A], Math.log(cfg.initStd)), true, `ppoLogStd#${runs++}`);
  const params: ParamSet = {
    names: [...actor.params().names, ...value.params().names, 'logStd'],
    vars: [...actor.params().vars, ...value.params().vars, logStd],
  };
  const opt = new Adam(tf, params, cfg.lr, cfg.gradClip);
  const rng = init.fork();
  let obsMean: Float32Array | null = null;
  let obsStd: Float32Array | null = null;

  const inputRow = (obs: Float32Array, base: Float32Array, out: Float32Array, off: number): void => {
    for (let j = 0; j < O; j++) out[off + j] = obsMean && obsStd ? (obs[j] - obsMean[j]) / obsStd[j] : obs[j];
    out.set(base, off + O);
  };
  const spec = () =>
    residualPolicySpec({
      layers: actor.toDenseSpecs(),
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
  const forward = (x: Float32Array, n: number): { mean: Float32Array; v: Float32Array } =>
    tf.tidy(() => {
      const xt = tf.tensor2d(x, [n, I]);
      return {
        mean: actor.apply(xt).dataSync() as Float32Array,
        v: value.apply(xt).dataSync() as Float32Array,
      };
    });

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
    const std = Array.from(logStd.dataSync(), (l) => Math.exp(l));
    const logStdSum = std.reduce((s, v) => s + Math.log(v), 0);
    for (let t = 0; t < T; t++) {
      const x = new Float32Array(N * I);
      for (let i = 0; i < N; i++) inputRow(obs[i], baseAct[i], x, i * I);
      const { mean, v } = forward(x, N);
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
            VFINAL[k] = forward(xf, 1).v[0];
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
    const vLast = forward(xLast, N).v;
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
        tf.tidy(() => {
          const xt = tf.tensor2d(gx, [mb, I]);
          const rt = tf.tensor2d(gr, [mb, A]);
          const { value: loss, grads } = tf.variableGrads(() => {
            const mean = actor.apply(xt);
            const z = tf.div(tf.sub(rt, mean), tf.exp(logStd));
            const logp = tf.sub(
              tf.mul(-0.5, tf.sum(tf.square(z), 1)),
              tf.add(tf.sum(logStd), 0.5 * A * LOG_2PI),
            );
            const ratio = tf.exp(tf.sub(logp, tf.tensor1d(glp)));
            const adv = tf.tensor1d(gadv);
            const surrogate = tf.minimum(
              tf.mul(ratio, adv),
              tf.mul(tf.clipByValue(ratio, 1 - cfg.clip, 1 + cfg.clip), adv),
            );
            const v = tf.reshape(value.apply(xt), [mb]);
            const vLoss = tf.mean(tf.square(tf.sub(v, tf.tensor1d(gret))));
            const entropy = tf.add(tf.sum(logStd), 0.5 * A * (1 + LOG_2PI));
            return tf.sub(
              tf.add(tf.neg(tf.mean(surrogate)), tf.mul(cfg.valueCoef, vLoss)),
              tf.mul(cfg.entropyCoef, entropy),
            ) as tfjs.Scalar;
          }, params.vars);
          lastLoss = loss.dataSync()[0];
          if (!Number.isFinite(lastLoss)) {
            throw new ResrtError(
              `PPO diverged at update ${updates} (loss ${lastLoss})`,
              'lower lr or check rewards for NaN',
            );
          }
          opt.apply(params.vars.map((p) => grads[p.name]));
        });
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
  opt.dispose();
  tf.dispose([...params.vars]);
  for (const e of envs) await e.close();
  await evalEnv.close();
  return {
    config: cfg,
    backend: description,
    envSteps,
    updates,
    curve,
    baseEval,
    finalEval,
    onnxPath,
    wallSeconds: (performance.now() - t0) / 1000,
  };
}
