/**
 * `trainResidual`: the actor side of a residual run. This thread steps the environment, runs the
 * frozen base and the latest published residual (plain TypeScript MLP, no training engine), and feeds
 * transitions to the learner — in a worker thread by default, or in-process (deterministic). It
 * throttles itself so the learner keeps the configured update-to-data ratio, evaluates without
 * noise, writes curves, checkpoints and the ONNX residual.
 */
import { Worker } from 'node:worker_threads';
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import type { CameraFrames, Env, MlpPolicySpec, Policy } from '../types.js';
import type { DemoEpisode, DemoSet } from '../sim/demos.js';
import { mlpForward } from '../runtime/onnx-export.js';
import { evaluatePolicy, type EvalResult } from '../runtime/evaluate.js';
import { Rng } from '../util/rng.js';
import { lockRunFolder, type RunLock } from '../util/run-lock.js';
import { ResrtError } from '../util/errors.js';
import { writeFileAtomic } from '../util/files.js';
import { initEngine, type DevicePreference } from '../nn/index.js';
import { makeConfig, profileFor, type ProfileName, type ResidualConfig } from './config.js';
import { packSteps, type StepBatch, type StepRecord } from './replay.js';
import { FramePacker } from './replay-frames.js';
import { replayFrameCameras } from './trainer-frames.js';
import {
  LearnerHost,
  errorMessage,
  type FromHost,
  type HostInit,
  type HostProgress,
  type HostReady,
  type PublishedPolicy,
  type ToHost,
} from './learner-worker.js';
import { getRngState, setRngState, type RngState } from './rng-state.js';
import { writeCurves, type CurvePoint } from './curves.js';
import { exportResidualOnnx } from './export.js';
import { checkCameras, detectorOutcome, type SuccessJudge } from '../runtime/success-detector.js';
import { cameraFeatures, withFeatures, type CameraFeatures } from './camera-features.js';
import {
  evaluateHeldOut,
  heldOutSeed,
  periodicEvalSeed,
  recordOf,
  recordOfCurvePoint,
  trainingEpisodeSeed,
  type EvaluationRecord,
  type HeldOutResult,
} from './held-out.js';
import {
  makeMixer,
  mixingEpisode,
  replayMixer,
  validateMixingSpec,
  type MixingEpisode,
  type MixingSpec,
  type MixingState,
} from './mixing-run.js';

export interface TrainProgress {
  envSteps: number;
  totalSteps: number;
  episodes: number;
  updates: number;
  updatesPerSec: number;
  /** Latest evaluation success rate (no noise). */
  evalSuccessRate: number | null;
  /** Success over the last 100 training episodes. */
  trainSuccessRate: number | null;
  qMean: number | null;
  criticLoss: number | null;
  actorLoss: number | null;
  phase: 'warmup' | 'critic-warmup' | 'training' | 'evaluating' | 'done';
  /** With mixing: the exploring share planned for the current episode. */
  mixingShare?: number;
}

/** One training step as executed, for observers (tests, logging). */
export interface TrainStepInfo {
  /** Training episode index (0-based, counting resumed ones). */
  episode: number;
  /** Step within the episode. */
  step: number;
  obs: Float32Array;
  baseAction: Float32Array;
  /** The exploring residual (policy + noise, clipped to ±actionScale) before mixing; zero when w = 0. */
  residual: Float32Array;
  /** The exploring policy's weight w_t (1 without mixing). */
  weight: number;
  /** What was sent to the environment: clip(base + w·residual). */
  action: Float32Array;
}

export interface TrainOptions {
  /** A fresh environment per call (training and evaluation use separate instances). */
  makeEnv: () => Env | Promise<Env>;
  /** The frozen base policy. Ignored (zero base) when config.useBase is false. */
  base: Policy;
  demos?: DemoSet;
  /**
   * The camera frames of a demonstration episode (one per observation), for visuomotor bases and
   * camera residuals: the CLI passes the sidecar reader (src/sim/demos.ts loadEpisodeFrames).
   */
  demoFrames?: (episode: DemoEpisode) => CameraFrames[];
  /** Environment steps to train for (total, including any resumed ones). */
  steps: number;
  outDir: string;
  resume?: boolean;
  seed?: number;
  /** 'auto' picks from the learner's device (GPU → gpu); see docs/learner.md. */
  profile?: ProfileName | 'auto';
  config?: Partial<ResidualConfig>;
  /** Evaluate every this many env steps (at the next episode end); 0 = only at start and end. */
  evalEvery?: number;
  evalEpisodes?: number;
  /**
   * The evaluation the run reports, after training: the written residual.onnx with the base, on
   * held-out seeds (src/residual/held-out.ts). `episodes` defaults to evalEpisodes; `base: false`
   * skips the base's own held-out evaluation (a robot's time), leaving the step-0 one.
   */
  heldOut?: { episodes?: number; base?: boolean };
  /** Checkpoint every this many env steps (at the next episode end); 0 = only at the end. */
  checkpointEvery?: number;
  /** Run the learner in a worker thread (second core). Default true; false is deterministic. */
  worker?: boolean;
  /** Where the learner computes: 'auto' (CUDA when installed and working, else CPU), 'cpu', 'cuda'. */
  device?: DevicePreference;
  /** The learner's onnxruntime intra-op threads (default: docs/learner.md, "Threads"). */
  threads?: number;
  /** Called at most every ~100 ms and at every evaluation. */
  onProgress?: (p: TrainProgress) => void;
  /** Log lines (engine, profile, checkpoints). Default: stderr. */
  log?: (line: string) => void;
  /** Task name for file titles and the checkpoint check. */
  taskName?: string;
  /**
   * Conservative mixing (src/safety/mixing.ts): each training episode gets a plan and executes
   * clip(a_base + w_t·a_res) with w_t = plan.weightAt(t); the replay stores the executed action.
   * Evaluation is unaffected (it measures the residual itself). Omit it for unconstrained training.
   */
  mixing?: MixingSpec;
  /** Called after every training step with what was executed. */
  onTrainStep?: (s: TrainStepInfo) => void;
  /**
   * A learned success detector as the training episodes' success source (reward, termination);
   * the task's own success is kept beside it (TrainEpisode.trueSuccess). Evaluation still
   * measures the task's success.
   */
  successDetector?: SuccessJudge & { path?: string };
}

/** A training episode's outcome. */
export interface TrainEpisode {
  episode: number;
  /** Env steps done when it ended (cumulative). */
  envSteps: number;
  steps: number;
  success: boolean;
  /** With a success detector: the task's own verdict (`success` is the detector's). */
  trueSuccess?: boolean;
}

export interface TrainResult {
  profile: ProfileName;
  profileReason: string;
  /** The training engine that ran, in words (e.g. "onnxruntime-node 1.30.0 on the CPU, 1 intra-op thread"). */
  backend: string;
  config: ResidualConfig;
  envSteps: number;
  updates: number;
  episodes: number;
  curve: CurvePoint[];
  /** The first evaluation (the base alone, since the residual starts at zero). */
  baseEval: EvalResult | null;
  /** The last evaluation during training (null when it happened before a resume). */
  finalEval: EvalResult | null;
  /** What the run reports: residual.onnx (and the base) on held-out seeds; null if nothing was written. */
  heldOut: HeldOutResult | null;
  /** Every evaluation summary.json names, keyed as there. */
  evaluations: Record<string, EvaluationRecord>;
  onnxPath: string;
  wallSeconds: number;
  resumedFrom: number | null;
  /**
   * Every training episode in order, resumed ones included (a checkpoint written before this was
   * kept holds none, so episodes before such a resume are missing).
   */
  trainEpisodes: TrainEpisode[];
  /** With mixing: every training episode's plan and outcome (resumed ones included), as in mixing.jsonl. */
  mixing: MixingEpisode[] | null;
}

interface TrainerState {
  envSteps: number;
  episodes: number;
  rng: RngState;
  curve: CurvePoint[];
  recentSuccess: boolean[];
  /** Absent in checkpoints written before it was kept. */
  trainEpisodes?: TrainEpisode[];
  wallSeconds: number;
  lastEvalAt: number;
  lastCheckpointAt: number;
  /** Present only for runs with mixing, so checkpoints of other runs are unchanged. */
  mixing?: MixingState;
}

// -- the link to the learner ---------------------------------------------------------------------

interface LearnerLink {
  start(init: HostInit): Promise<HostReady>;
  push(batch: StepBatch): void;
  /** Lets the learner run up to `target` updates and waits until it has done at least `atLeast`. */
  advance(target: number, atLeast: number): Promise<void>;
  checkpoint(trainer: TrainerState): Promise<{ generation: number; bytes: number }>;
  policy(): PublishedPolicy | null;
  progress(): HostProgress | null;
  close(): Promise<void>;
}

class InProcessLink implements LearnerLink {
  private host: LearnerHost;
  private latest: PublishedPolicy | null = null;
  private prog: HostProgress | null = null;

  constructor() {
    this.host = new LearnerHost((msg) => {
      if (msg.type === 'policy') this.latest = msg.policy;
      else if (msg.type === 'progress') this.prog = msg.progress;
    });
  }
  start(init: HostInit): Promise<HostReady> {
    return this.host.start(init);
  }
  push(batch: StepBatch): void {
    this.host.push(batch);
  }
  async advance(target: number): Promise<void> {
    this.host.allow(target);
    await this.host.runSome(Number.MAX_SAFE_INTEGER);
  }
  async checkpoint(trainer: TrainerState): Promise<{ generation: number; bytes: number }> {
    return this.host.checkpoint(trainer);
  }
  policy(): PublishedPolicy | null {
    return this.latest;
  }
  progress(): HostProgress | null {
    return this.prog;
  }
  async close(): Promise<void> {
    await this.host.dispose();
  }
}

/**
 * Starts the learner worker. Compiled (dist/*.js) it is a plain module worker; from .ts sources
 * (tsx, vitest) the worker first registers tsx's ESM hooks through its API and then imports the
 * .ts entry — hooks registered by the parent's --import do not reach worker threads on Node 20.
 */
function startWorker(): Worker {
  const workerData = { resrtLearner: true };
  if (!import.meta.url.endsWith('.ts')) {
    return new Worker(new URL('./learner-worker.js', import.meta.url), { workerData });
  }
  const entry = new URL('./learner-worker.ts', import.meta.url).href;
  const tsxDir = dirname(createRequire(import.meta.url).resolve('tsx/package.json'));
  const api = pathToFileURL(join(tsxDir, 'dist', 'esm', 'api', 'index.mjs')).href;
  const bootstrap = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`;
  return new Worker(bootstrap, { eval: true, workerData });
}

class WorkerLink implements LearnerLink {
  private worker: Worker;
  private latest: PublishedPolicy | null = null;
  private prog: HostProgress | null = null;
  // Updates done as the learner started (a resumed checkpoint's count): a resumed run that owes no
  // updates gets no progress message, and must not wait for one.
  private updatesAtStart = 0;
  private failure: Error | null = null;
  private waiters: (() => void)[] = [];
  private readyResolve: ((r: HostReady) => void) | null = null;
  private checkpointResolve = new Map<number, (r: { generation: number; bytes: number }) => void>();
  private nextId = 1;
  private exited = false;

  constructor() {
    this.worker = startWorker();
    this.worker.on('message', (msg: FromHost) => this.onMessage(msg));
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => {
      this.exited = true;
      if (code !== 0 && !this.failure) this.fail(new Error(`the learner worker exited with code ${code}`));
    });
  }

  private onMessage(msg: FromHost): void {
    switch (msg.type) {
      case 'ready':
        this.readyResolve?.(msg.ready);
        break;
      case 'policy':
        this.latest = msg.policy;
        break;
      case 'progress':
        this.prog = msg.progress;
        break;
      case 'checkpointed':
        this.checkpointResolve.get(msg.id)?.({ generation: msg.generation, bytes: msg.bytes });
        this.checkpointResolve.delete(msg.id);
        break;
      case 'error':
        this.fail(
          msg.diverged
            ? new DivergedError(msg.message, msg.update ?? -1)
            : new ResrtError(msg.message, msg.hint),
        );
        break;
      case 'stopped':
        break;
    }
    for (const w of this.waiters.splice(0)) w();
  }

  private fail(err: Error): void {
    if (!this.failure) this.failure = err;
    for (const w of this.waiters.splice(0)) w();
  }

  private post(msg: ToHost, transfer: ArrayBuffer[] = []): void {
    this.worker.postMessage(msg, transfer);
  }

  private async wait(until: () => boolean): Promise<void> {
    while (!until()) {
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (this.failure) throw this.failure;
  }

  async start(init: HostInit): Promise<HostReady> {
    const ready = new Promise<HostReady>((resolve) => (this.readyResolve = resolve));
    this.post({ type: 'init', init });
    let result: HostReady | null = null;
    void ready.then((r) => (result = r));
    await this.wait(() => result !== null);
    const r = result as unknown as HostReady;
    this.updatesAtStart = r.updates;
    return r;
  }

  push(batch: StepBatch): void {
    if (this.failure) throw this.failure;
    // Frames are packed fresh for each batch: hand their buffers over instead of copying them.
    this.post({ type: 'push', batch }, batch.frames?.data.map((d) => d.buffer as ArrayBuffer) ?? []);
  }

  async advance(target: number, atLeast: number): Promise<void> {
    this.post({ type: 'allow', updates: target });
    await this.wait(() => (this.prog?.updates ?? this.updatesAtStart) >= atLeast || atLeast <= 0);
  }

  async checkpoint(trainer: TrainerState): Promise<{ generation: number; bytes: number }> {
    const id = this.nextId++;
    let result: { generation: number; bytes: number } | null = null;
    this.checkpointResolve.set(id, (r) => (result = r));
    this.post({ type: 'checkpoint', trainer, id });
    await this.wait(() => result !== null);
    return result as unknown as { generation: number; bytes: number };
  }

  policy(): PublishedPolicy | null {
    return this.latest;
  }
  progress(): HostProgress | null {
    return this.prog;
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const stopped = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    if (!this.failure) this.post({ type: 'stop' });
    // The worker has nothing left to do after 'stop'; terminate ends its event loop.
    setTimeout(() => void this.worker.terminate(), 200).unref();
    await stopped;
  }
}

/** The learner diverged (NaN/∞ loss). */
export class DivergedError extends ResrtError {
  constructor(
    message: string,
    readonly update: number,
  ) {
    super(message);
  }
}

// -- helpers --------------------------------------------------------------------------------------

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
  ) {
    this.actionDim = actionDim;
  }
  reset(seed?: number): void {
    this.base?.reset?.(seed);
  }
  /** r(features, obs, a_base), its inputs fed by name as the export names them. */
  residual(obs: Float32Array, baseAction: Float32Array, features: Float32Array | null = null): Float32Array {
    const spec = this.spec();
    if (!spec) return new Float32Array(this.actionDim);
    const parts: Record<string, Float32Array | null> = {
      base_embedding: features,
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
    const res = this.residual(obs, baseAction, this.features?.read() ?? null);
    this.lastBase = baseAction;
    this.lastResidual = res;
    return compose(baseAction, res);
  }
}

/** clip(base + w·res, −1, 1), rounded to float32 once (w = 1 is the plain composition, bit for bit). */
function compose(base: ArrayLike<number>, res: ArrayLike<number>, w = 1): Float32Array {
  const out = new Float32Array(base.length);
  for (let i = 0; i < base.length; i++) out[i] = Math.max(-1, Math.min(1, base[i] + w * res[i]));
  return out;
}

/** Checks that the env, base and demos agree, with the fix in every message. */
export function checkDims(env: Env, base: Policy | null, demos: DemoSet | undefined): void {
  const O = env.observationSpace.dim;
  const A = env.actionSpace.dim;
  if (base && base.actionDim !== A) {
    throw new ResrtError(
      `the base policy outputs ${base.actionDim} action dims but the environment ${env.id} takes ${A}`,
      `use a base policy trained for ${env.id} (resrt inspect BASE.onnx shows its dims)`,
    );
  }
  if (demos) {
    const h = demos.header;
    if (h.obsDim !== O || h.actionDim !== A) {
      throw new ResrtError(
        `the demonstrations have obs/action dims ${h.obsDim}/${h.actionDim} (task ${h.task}) but the environment ${env.id} has ${O}/${A}`,
        `collect demonstrations on ${env.id} with \`resrt collect\`, or pass the matching --demos file`,
      );
    }
  }
}

/**
 * Demonstrations as learner steps, relabelled with the base: each step's base action is the base's
 * own action on that demo observation (its residual target is demo − base, clipped to the residual
 * range); the executed action stays the demo's, since the demo's next observation followed from it.
 */
export async function relabelDemos(
  demos: DemoSet,
  base: Policy | null,
  actionDim: number,
  camera: {
    frames?: (episode: DemoEpisode) => CameraFrames[];
    features?: CameraFeatures | null;
    /** The cameras the base or residual reads (frames must come with every demo observation). */
    cameras?: readonly string[];
  } = {},
): Promise<StepRecord[]> {
  const steps: StepRecord[] = [];
  const zero = new Float32Array(actionDim);
  const features = camera.features ?? null;
  const cameras = camera.cameras ?? [];
  const noFeatures = features ? new Float32Array(features.dim) : null;
  for (const [index, ep] of demos.episodes.entries()) {
    base?.reset?.(ep.seed);
    const T = ep.actions.length;
    const frames = cameras.length ? demoFramesOf(demos, ep, index, camera.frames, cameras) : undefined;
    let baseHere = base ? Float32Array.from(await base.act(ep.obs[0], frames?.[0])) : zero;
    let featHere = features ? features.read() : null;
    for (let t = 0; t < T; t++) {
      const last = t === T - 1;
      const terminated = last && ep.terminated;
      const nextBase =
        base && !terminated ? Float32Array.from(await base.act(ep.obs[t + 1], frames?.[t + 1])) : zero;
      // No base query after termination: its features are never bootstrapped from (discount 0).
      const nextFeat = features ? (terminated ? noFeatures : features.read()) : null;
      steps.push({
        ...(frames ? { frames: frames[t], nextFrames: frames[t + 1] } : {}),
        obs: withFeatures(featHere, ep.obs[t]),
        baseAction: baseHere,
        action: ep.actions[t],
        reward: ep.rewards[t],
        nextObs: withFeatures(nextFeat, ep.obs[t + 1]),
        nextBaseAction: nextBase,
        terminated,
        // An episode that ended neither way (a cut recording) is still a boundary for n-step sums.
        truncated: last && !terminated,
      });
      baseHere = nextBase;
      featHere = nextFeat;
    }
  }
  return steps;
}

/** An episode's frames, checked: one per observation, with every camera the run reads. */
function demoFramesOf(
  demos: DemoSet,
  ep: DemoEpisode,
  index: number,
  load: ((episode: DemoEpisode) => CameraFrames[]) | undefined,
  cameras: readonly string[],
): CameraFrames[] {
  const task = demos.header.task;
  const recorded = (demos.header.cameras ?? []).map((c) => c.name);
  const missing = cameras.filter((c) => !recorded.includes(c));
  if (!load || missing.length) {
    throw new ResrtError(
      `the demonstrations of ${task} have no frames of camera ${missing.length ? missing.join(', ') : cameras.join(', ')} (they record: ${recorded.join(', ') || 'none'}), and the base or residual reads it`,
      `collect them with the camera: \`resrt collect --task ${task} --out DEMOS.jsonl\` writes DEMOS.jsonl.frames beside them; or train without --demos`,
    );
  }
  const frames = load(ep);
  if (frames.length !== ep.obs.length || frames.some((f) => cameras.some((c) => !f[c]))) {
    throw new ResrtError(
      `demonstration episode ${index} of ${task} has ${frames.length} frames of ${cameras.join(', ')} for ${ep.obs.length} observations`,
      'frames are missing from some of its steps: collect the demonstrations again with `resrt collect`',
    );
  }
  return frames;
}

const recentWindow = 100;

// -- the run --------------------------------------------------------------------------------------

export async function trainResidual(options: TrainOptions): Promise<TrainResult> {
  const t0 = performance.now();
  // Which engine and profile run is always worth a line; pass log: () => {} to silence it.
  const log = options.log ?? ((line: string): void => void process.stderr.write(`${line}\n`));
  const seed = options.seed ?? 0;
  const evalEpisodes = options.evalEpisodes ?? 100;
  const evalEvery = options.evalEvery ?? 0;
  const checkpointEvery = options.checkpointEvery ?? 0;
  if (!Number.isInteger(options.steps) || options.steps <= 0) {
    throw new ResrtError(
      `steps = ${options.steps}`,
      'train for a positive whole number of environment steps',
    );
  }
  if (options.mixing) validateMixingSpec(options.mixing);
  const device = options.device ?? 'auto';
  // The acting thread runs no engine, but the profile follows the learner's device.
  const engine = await initEngine({ device, threads: options.threads });
  const chosen =
    options.profile && options.profile !== 'auto'
      ? { name: options.profile, why: 'chosen explicitly' }
      : profileFor(engine);
  const cfg = makeConfig(chosen.name, options.config);
  log(`engine: ${engine.description}`);
  log(`profile: ${chosen.name} (${chosen.why})`);

  const manifestExists = existsSync(join(options.outDir, 'checkpoint.json'));
  if (manifestExists && !options.resume) {
    throw new ResrtError(
      `${options.outDir} already holds a residual run (checkpoint.json)`,
      'pass --resume to continue it, or choose another --out folder',
    );
  }

  const env = await options.makeEnv();
  const evalEnv = await options.makeEnv();
  const base = cfg.useBase ? options.base : null;
  try {
    checkDims(env, options.base, options.demos);
  } catch (err) {
    await env.close();
    await evalEnv.close();
    throw err;
  }
  // Only now, with the inputs checked, does the run folder appear.
  mkdirSync(options.outDir, { recursive: true });
  const detector = options.successDetector ?? null;
  if (detector) checkCameras(detector.cameras, env.cameras ?? [], detector.path ?? 'the success detector');
  const O = env.observationSpace.dim;
  const A = env.actionSpace.dim;
  const taskName = options.taskName ?? env.id;

  const features = cameraFeatures(cfg, env, base);
  const E = features?.dim ?? 0;
  if (features) log(`camera features: encoder ${features.mode}, ${E} values per observation`);
  const frameCameras = replayFrameCameras(cfg, env, log);
  // What the base, the residual or replay reads of the cameras, so demonstrations must carry it.
  const readsCameras = features !== null || frameCameras !== null || (base !== null && hasImageInputs(base));
  const demoSteps = options.demos
    ? await relabelDemos(options.demos, base, A, {
        frames: options.demoFrames,
        features,
        cameras: readsCameras ? (env.cameras ?? []).map((c) => c.name) : [],
      })
    : [];
  // The learner observes [features | state].
  const LO = E + O;
  const useWorker = options.worker ?? true;
  const link: LearnerLink = useWorker ? new WorkerLink() : new InProcessLink();
  const meta = { task: taskName, obsDim: LO, actionDim: A, config: cfg, seed };
  const rng = new Rng((seed ^ 0x5eed1e55) >>> 0);
  let state: TrainerState = {
    envSteps: 0,
    episodes: 0,
    rng: getRngState(rng),
    curve: [],
    recentSuccess: [],
    wallSeconds: 0,
    lastEvalAt: -1,
    lastCheckpointAt: 0,
  };
  let baseEval: EvalResult | null = null;
  let finalEval: EvalResult | null = null;
  let resumedFrom: number | null = null;
  const onnxPath = join(options.outDir, 'residual.onnx');

  // One writer per run folder (a second learner would overwrite this one's checkpoints).
  let outLock: RunLock;
  try {
    outLock = lockRunFolder(options.outDir, 'training run');
  } catch (err) {
    await env.close();
    await evalEnv.close();
    throw err;
  }
  try {
    const ready = await link.start({
      cfg,
      dims: { obsDim: LO, actionDim: A, ...(frameCameras ? { frameCameras } : {}) },
      featureDim: E,
      seed,
      demos: demoSteps.length
        ? packSteps(demoSteps, LO, A, frameCameras ? new FramePacker(frameCameras) : undefined)
        : null,
      outDir: options.outDir,
      resume: !!options.resume,
      device: engine.device,
      threads: engine.threads,
      publishEvery: useWorker ? 20 : 10,
      meta,
    });
    if (ready.resumedTrainer) {
      state = ready.resumedTrainer as TrainerState;
      setRngState(rng, state.rng);
      resumedFrom = state.envSteps;
      log(`resumed from ${options.outDir} at ${state.envSteps} env steps, ${ready.updates} updates`);
      const saved = JSON.stringify(state.mixing?.spec ?? null);
      if (saved !== JSON.stringify(options.mixing ?? null)) {
        throw new ResrtError(
          `resuming ${options.outDir}: its mixing settings ${saved} differ from the given ${JSON.stringify(options.mixing ?? null)}`,
          'resume with the same mixing flags, or start a new run in another --out folder',
        );
      }
    }
    const wallBefore = state.wallSeconds;
    const wall = (): number => wallBefore + (performance.now() - t0) / 1000;

    const actor = new ResidualActor(base, () => link.policy()?.spec ?? null, A, features);
    let lastProgressAt = 0;
    let phase: TrainProgress['phase'] = state.envSteps < cfg.learningStarts ? 'warmup' : 'training';
    let mixingShare: number | undefined;
    const emitProgress = (force = false, share?: number): void => {
      if (share !== undefined) mixingShare = share;
      if (!options.onProgress) return;
      const now = performance.now();
      if (!force && now - lastProgressAt < 100) return;
      lastProgressAt = now;
      const p = link.progress();
      const last = state.curve[state.curve.length - 1];
      options.onProgress({
        envSteps: state.envSteps,
        totalSteps: options.steps,
        episodes: state.episodes,
        updates: p?.updates ?? 0,
        updatesPerSec: p?.updatesPerSec ?? 0,
        evalSuccessRate: last?.successRate ?? null,
        trainSuccessRate: recentRate(state.recentSuccess),
        qMean: p?.last?.qMean ?? null,
        criticLoss: p?.last?.criticLoss ?? null,
        actorLoss: p?.last?.actorLoss ?? null,
        phase,
        ...(mixingShare !== undefined ? { mixingShare } : {}),
      });
    };

    const runEval = async (): Promise<EvalResult> => {
      const before = phase;
      phase = 'evaluating';
      emitProgress(true);
      const r = await evaluatePolicy(evalEnv, actor, {
        episodes: evalEpisodes,
        seed: periodicEvalSeed(seed),
      });
      const p = link.progress();
      state.curve.push({
        envSteps: state.envSteps,
        updates: p?.updates ?? 0,
        wallSeconds: wall(),
        episodes: state.episodes,
        successRate: r.successRate,
        ciLow: r.ci95.low,
        ciHigh: r.ci95.high,
        evalEpisodes: r.episodes,
        trainSuccessRate: recentRate(state.recentSuccess),
        qMean: p?.last?.qMean ?? null,
        criticLoss: p?.last?.criticLoss ?? null,
        actorLoss: p?.last?.actorLoss ?? null,
        updatesPerSec: p?.updatesPerSec ?? null,
      });
      state.lastEvalAt = state.envSteps;
      writeCurves(
        options.outDir,
        state.curve,
        `${taskName}: residual success rate (${cfg.useBase ? 'ResFiT' : 'from scratch'})`,
      );
      phase = before;
      emitProgress(true);
      return r;
    };

    const checkpoint = async (): Promise<void> => {
      state.rng = getRngState(rng);
      state.wallSeconds = wall();
      state.lastCheckpointAt = state.envSteps;
      const { generation, bytes } = await link.checkpoint(state);
      log(`checkpoint ${generation} at ${state.envSteps} env steps (${(bytes / 1e6).toFixed(1)} MB)`);
    };

    if (state.lastEvalAt < 0) baseEval = await runEval();

    // The mixer needs the step-0 evaluation (for an 'initial-eval' baseline), so it starts here;
    // a resumed run replays its checkpointed episodes to reach the same evidence.
    const mixingPath = join(options.outDir, 'mixing.jsonl');
    let mixer: ReturnType<typeof makeMixer> | null = null;
    if (options.mixing) {
      const first = state.curve[0];
      mixer = makeMixer(options.mixing, {
        horizon: env.maxEpisodeSteps,
        seed: (seed ^ 0x6d1c5eed) >>> 0,
        initialEval: first
          ? { successes: Math.round(first.successRate * first.evalEpisodes), episodes: first.evalEpisodes }
          : null,
      });
      state.mixing ??= { spec: options.mixing, records: [] };
      replayMixer(mixer, state.mixing.records);
      // Episodes after the checkpoint are run again, so the file restarts from the checkpoint's records.
      writeFileAtomic(mixingPath, state.mixing.records.map((r) => JSON.stringify(r) + '\n').join(''));
    }
    const trainEpisodes = (state.trainEpisodes ??= []);

    // Updates owed for `steps` env steps: the critic warm-up once learningStarts is reached, then UTD per step.
    const targetUpdates = (steps: number): number =>
      steps < cfg.learningStarts ? 0 : cfg.criticWarmupSteps + (steps - cfg.learningStarts) * cfg.utd;
    // How far the learner may trail the actor before the actor waits (worker mode).
    const slack = cfg.utd * 16;

    const zero = new Float32Array(A);
    const onlineFrames = frameCameras ? new FramePacker(frameCameras) : undefined;
    let realtime = false;
    while (state.envSteps < options.steps) {
      const epSeed = trainingEpisodeSeed(seed, state.episodes);
      const first = await env.reset({ seed: epSeed });
      let obs = first.obs;
      let frames = first.frames;
      base?.reset?.(epSeed);
      let baseAction = base ? Float32Array.from(await base.act(obs, first.frames)) : zero;
      let feat = features ? features.read() : null;
      let success = false;
      let trueSuccess = false;
      const pending: StepRecord[] = [];
      const plan = mixer ? mixer.beginEpisode() : null;
      if (plan) emitProgress(true, plan.share);
      const stepPack = (steps: StepRecord[]): StepBatch => {
        const batch = packSteps(steps, LO, A, onlineFrames);
        if (plan) batch.mixingShare = plan.share;
        return batch;
      };
      // The learner learns the episode's share before its first update in the episode, so a
      // resumed run (which starts at an episode) updates exactly as the uninterrupted one.
      if (plan) link.push(stepPack([]));
      let t = 0;
      for (;;) {
        const w = plan ? plan.weightAt(t) : 1;
        const res = new Float32Array(A);
        // A base-only step (w = 0) needs neither the residual nor noise draws.
        if (w > 0) {
          if (state.envSteps < cfg.learningStarts) {
            for (let i = 0; i < A; i++) res[i] = (rng.uniform() * 2 - 1) * cfg.warmupNoise * cfg.actionScale;
          } else {
            const r = actor.residual(obs, baseAction, feat);
            for (let i = 0; i < A; i++) {
              const v = r[i] + rng.normal(0, cfg.explorationStd);
              res[i] = Math.max(-cfg.actionScale, Math.min(cfg.actionScale, v));
            }
          }
        }
        const action = compose(baseAction, res, w);
        options.onTrainStep?.({
          episode: state.episodes,
          step: t,
          obs,
          baseAction,
          residual: res,
          weight: w,
          action,
        });
        t++;
        const pendingStep = env.step(action);
        // Hardware answers with promises: a real robot must not stand still mid-episode waiting for
        // the learner, so there the actor only catches the learner up at episode ends.
        if (pendingStep instanceof Promise) realtime = true;
        const step = await pendingStep;
        if (step.info.success) trueSuccess = true;
        const outcome = detector
          ? detectorOutcome({ ...step, envSuccess: !!step.info.success }, await detector.judge(step.frames))
          : { ...step, success: !!step.info.success };
        if (outcome.success) success = true;
        const done = outcome.terminated || outcome.truncated;
        const nextBase =
          base && !outcome.terminated ? Float32Array.from(await base.act(step.obs, step.frames)) : zero;
        // After termination the base is not queried; those features are never bootstrapped from.
        const nextFeat = features ? (outcome.terminated ? new Float32Array(E) : features.read()) : null;
        pending.push({
          obs: withFeatures(feat, obs),
          baseAction,
          action,
          reward: outcome.reward,
          nextObs: withFeatures(nextFeat, step.obs),
          nextBaseAction: nextBase,
          terminated: outcome.terminated,
          truncated: outcome.truncated,
          heldBack: w < 1,
          frames,
          nextFrames: step.frames,
        });
        state.envSteps++;
        // Steps travel in small packs; the learner only needs them before it samples them.
        if (pending.length >= 8 || done || state.envSteps === cfg.learningStarts) {
          link.push(stepPack(pending.splice(0)));
        }
        const target = targetUpdates(state.envSteps);
        if (target > 0) {
          if (state.envSteps === cfg.learningStarts && cfg.criticWarmupSteps > 0) phase = 'critic-warmup';
          await link.advance(target, realtime && !done ? 0 : target - slack);
          phase = 'training';
        }
        emitProgress();
        obs = step.obs;
        frames = step.frames;
        baseAction = nextBase;
        feat = nextFeat;
        if (done || state.envSteps >= options.steps) {
          if (pending.length) link.push(stepPack(pending.splice(0)));
          break;
        }
      }
      if (plan && mixer && state.mixing) {
        mixer.endEpisode(success, plan);
        const rec = mixingEpisode(state.mixing.spec, plan, success, state.envSteps, t);
        state.mixing.records.push(rec);
        appendFileSync(mixingPath, JSON.stringify(rec) + '\n');
      }
      trainEpisodes.push({
        episode: state.episodes,
        envSteps: state.envSteps,
        steps: t,
        success,
        ...(detector ? { trueSuccess } : {}),
      });
      state.episodes++;
      state.recentSuccess.push(success);
      if (state.recentSuccess.length > recentWindow) state.recentSuccess.shift();
      if (evalEvery > 0 && state.envSteps - state.lastEvalAt >= evalEvery && state.envSteps < options.steps) {
        await link.advance(targetUpdates(state.envSteps), targetUpdates(state.envSteps));
        await runEval();
      }
      if (checkpointEvery > 0 && state.envSteps - state.lastCheckpointAt >= checkpointEvery)
        await checkpoint();
    }

    // Let the learner finish what it owes, then evaluate, export and checkpoint the final state.
    await link.advance(targetUpdates(state.envSteps), targetUpdates(state.envSteps));
    finalEval = state.lastEvalAt === state.envSteps && state.curve.length ? null : await runEval();
    const spec = link.policy()?.spec;
    if (spec) exportResidualOnnx(spec, onnxPath);
    await checkpoint();
    // What the run reports is the file it wrote, on episodes nothing during training saw.
    let heldOut: HeldOutResult | null = null;
    if (spec) {
      const episodes = options.heldOut?.episodes ?? evalEpisodes;
      const firstSeed = heldOutSeed(seed, episodes, {
        periodicEpisodes: evalEpisodes,
        trainingEpisodes: state.episodes,
      });
      phase = 'evaluating';
      emitProgress(true);
      heldOut = await evaluateHeldOut({
        env: evalEnv,
        base,
        onnxPath,
        firstSeed,
        episodes,
        evaluateBase: options.heldOut?.base ?? true,
      });
    }
    phase = 'done';
    emitProgress(true);
    const evaluations = runEvaluations(state.curve, periodicEvalSeed(seed), heldOut, state.envSteps);
    const baseFrom = evaluations.heldOutBase ? 'heldOutBase' : evaluations.initial ? 'initial' : null;
    const finalFrom = evaluations.heldOutResidual
      ? 'heldOutResidual'
      : evaluations.lastInTraining
        ? 'lastInTraining'
        : null;
    const p = link.progress();
    writeFileAtomic(
      join(options.outDir, 'summary.json'),
      JSON.stringify(
        {
          task: taskName,
          profile: chosen.name,
          profileReason: chosen.why,
          backend: engine.description,
          envSteps: state.envSteps,
          updates: p?.updates ?? 0,
          baseSuccess: baseFrom ? evaluations[baseFrom].successRate : null,
          baseSuccessFrom: baseFrom && `evaluations.${baseFrom}`,
          finalSuccess: finalFrom ? evaluations[finalFrom].successRate : null,
          finalSuccessFrom: finalFrom && `evaluations.${finalFrom}`,
          evaluations,
          wallSeconds: wall(),
          config: cfg,
          ...(state.mixing ? { mixing: mixingSummary(state.mixing) } : {}),
        },
        null,
        2,
      ),
    );
    return {
      profile: chosen.name,
      profileReason: chosen.why,
      backend: engine.description,
      config: cfg,
      envSteps: state.envSteps,
      updates: p?.updates ?? 0,
      episodes: state.episodes,
      curve: state.curve,
      baseEval,
      finalEval,
      heldOut,
      evaluations,
      onnxPath,
      wallSeconds: wall(),
      resumedFrom,
      trainEpisodes,
      mixing: state.mixing ? state.mixing.records : null,
    };
  } catch (err) {
    throw asDivergence(err, options.outDir);
  } finally {
    await link.close();
    await env.close();
    await evalEnv.close();
    outLock.release();
  }
}

/** The run's evaluations by name, each saying what it measured and on which episodes. */
function runEvaluations(
  curve: readonly CurvePoint[],
  periodicSeed: number,
  heldOut: HeldOutResult | null,
  envSteps: number,
): Record<string, EvaluationRecord> {
  const out: Record<string, EvaluationRecord> = {};
  const periodic = 'on the seeds every evaluation during training uses (curves.csv)';
  if (curve.length > 0)
    out.initial = recordOfCurvePoint(
      `the base alone (the residual starts at zero), evaluated during training at step 0 ${periodic}`,
      periodicSeed,
      curve[0],
    );
  if (curve.length > 1)
    out.lastInTraining = recordOfCurvePoint(
      `base + the learner's latest residual, evaluated during training at its last point ${periodic}`,
      periodicSeed,
      curve[curve.length - 1],
    );
  if (heldOut?.base)
    out.heldOutBase = recordOf(
      'the base alone on held-out seeds, as `resrt eval --base BASE.onnx --seed firstSeed --episodes episodes` runs it',
      envSteps,
      heldOut.firstSeed,
      heldOut.base,
    );
  if (heldOut)
    out.heldOutResidual = recordOf(
      'base + residual.onnx as written, on held-out seeds, as `resrt eval --base BASE.onnx --residual residual.onnx --seed firstSeed --episodes episodes` runs it',
      envSteps,
      heldOut.firstSeed,
      heldOut.residual,
    );
  return out;
}

function mixingSummary(m: MixingState): Record<string, unknown> {
  const n = m.records.length;
  const mean = (f: (r: MixingEpisode) => number): number | null =>
    n ? m.records.reduce((a, r) => a + f(r), 0) / n : null;
  return {
    spec: m.spec,
    episodes: n,
    meanShare: mean((r) => r.share),
    meanRealizedShare: mean((r) => r.realizedShare),
    trainSuccess: mean((r) => (r.success ? 1 : 0)),
    lastShare: n ? m.records[n - 1].share : null,
  };
}

/** A visuomotor ONNX base (it reads camera frames). */
function hasImageInputs(base: Policy): boolean {
  const images = (base as { imageInputs?: readonly unknown[] }).imageInputs;
  return Array.isArray(images) && images.length > 0;
}

function recentRate(xs: readonly boolean[]): number | null {
  if (xs.length === 0) return null;
  return xs.filter(Boolean).length / xs.length;
}

/** A diverged learner becomes one message that says the last good checkpoint is kept. */
function asDivergence(err: unknown, outDir: string): unknown {
  const m = errorMessage(err);
  if (m.type === 'error' && (m.diverged || err instanceof DivergedError)) {
    const kept = existsSync(join(outDir, 'checkpoint.json'));
    return new ResrtError(
      `${m.message.split('\n')[0]}; training stopped. ${kept ? `The last good checkpoint in ${outDir} is kept.` : 'No checkpoint had been written yet.'}`,
      kept
        ? 'lower criticLr/actorLr or gradClip, then rerun with --resume to continue from the last good checkpoint'
        : 'lower criticLr/actorLr or gradClip and check rewards/observations for NaN, then start again',
    );
  }
  return err;
}
