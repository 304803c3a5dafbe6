/**
 * `trainResidual`: the actor side of a residual run. This thread steps the environment, runs the
 * frozen base and the latest published residual (plain TypeScript MLP, no training engine), and feeds
 * transitions to the learner — in a worker thread by default, or in-process (deterministic). It
 * throttles itself so the learner keeps the configured update-to-data ratio, evaluates without
 * noise, writes curves, checkpoints and the ONNX residual.
 */
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { evaluatePolicy, type EvalResult } from '../runtime/evaluate.js';
import { Rng } from '../util/rng.js';
import { lockRunFolder, type RunLock } from '../util/run-lock.js';
import { ResrtError } from '../util/errors.js';
import { writeFileAtomic } from '../util/files.js';
import { initEngine } from '../nn/index.js';
import { checkEnvCameras, detectorOutcome } from '../runtime/success-detector.js';
import { makeConfig, profileFor } from './config.js';
import { packSteps, type StepBatch, type StepRecord } from './replay.js';
import { FramePacker } from './replay-frames.js';
import { replayFrameCameras } from './trainer-frames.js';
import { getRngState, setRngState } from './rng-state.js';
import { writeCurves } from './curves.js';
import { exportResidualOnnx } from './export.js';
import { exportLearnedResidualOnnx } from './learned-residual.js';
import { KeptResidual } from './kept-residual.js';
import { cameraFeatures, withFeatures, type CameraFeatures } from './camera-features.js';
import { checkpointMeta } from './checkpoint.js';
import { settleEncoder, type SettledEncoder } from './encoder-choice.js';
import {
  evaluateHeldOut,
  heldOutSeed,
  periodicEvalSeed,
  trainingEpisodeSeed,
  type HeldOutResult,
} from './held-out.js';
import { makeMixer, mixingEpisode, replayMixer, validateMixingSpec } from './mixing-run.js';
import { InProcessLink, WorkerLink, asDivergence, type LearnerLink } from './learner-link.js';
import { ResidualActor, compose } from './residual-actor.js';
import { checkDims, hasImageInputs, relabelDemos } from './trainer-inputs.js';
import { detectorAgreement, runEvaluations, writeRunSummary } from './trainer-report.js';
import type { TrainOptions, TrainProgress, TrainResult, TrainerState } from './trainer-types.js';

// Other modules import these from './trainer.js'; they live beside it, one job per file.
export type {
  TrainEpisode,
  TrainOptions,
  TrainProgress,
  TrainResult,
  TrainStepInfo,
} from './trainer-types.js';
export { DivergedError } from './learner-link.js';
export { ResidualActor } from './residual-actor.js';
export { checkDims, relabelDemos } from './trainer-inputs.js';

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
  const keep = options.keep ?? 'final';
  if (keep === 'best' && evalEvery <= 0) {
    throw new ResrtError(
      'keeping the best residual needs periodic evaluations to choose among, and evalEvery is 0',
      'pass --eval-every N (e.g. --eval-every 2500) with --keep best, or --keep final',
    );
  }
  const device = options.device ?? 'auto';
  // The acting thread runs no engine, but the profile follows the learner's device.
  const engine = await initEngine({ device, threads: options.threads });
  const chosen =
    options.profile && options.profile !== 'auto'
      ? { name: options.profile, why: 'chosen explicitly' }
      : profileFor(engine);
  let cfg = makeConfig(chosen.name, options.config);
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
  if (detector) checkEnvCameras(detector, env);
  const O = env.observationSpace.dim;
  const A = env.actionSpace.dim;
  const taskName = options.taskName ?? env.id;

  let features: CameraFeatures | null = null;
  let frameCameras: ReturnType<typeof replayFrameCameras> = null;
  let demoSteps: StepRecord[] = [];
  try {
    cfg = await settleEncoder(
      cfg,
      env,
      options.stateEncoder,
      {
        outDir: options.outDir,
        settledBefore: options.resume ? settledEncoder(checkpointMeta(options.outDir)) : null,
      },
      log,
    );
    features = await cameraFeatures(cfg, env, base);
    if (features) {
      const from = features.encoder
        ? ` from ${features.encoder.path} (cameras ${features.encoder.cameras.join(', ')})`
        : '';
      log(`camera features: encoder ${features.mode}${from}, ${features.dim} values per observation`);
    }
    frameCameras = replayFrameCameras(cfg, env, log);
    // What the base, the residual or replay reads of the cameras, so demonstrations must carry it.
    const readsCameras =
      features !== null || frameCameras !== null || (base !== null && hasImageInputs(base));
    demoSteps = options.demos
      ? await relabelDemos(options.demos, base, A, {
          frames: options.demoFrames,
          features,
          cameras: readsCameras ? (env.cameras ?? []).map((c) => c.name) : [],
        })
      : [];
  } catch (err) {
    await features?.close();
    await env.close();
    await evalEnv.close();
    throw err;
  }
  const E = features?.dim ?? 0;
  // The learner observes [features | state].
  const LO = E + O;
  const useWorker = options.worker ?? true;
  const link: LearnerLink = useWorker ? new WorkerLink() : new InProcessLink();
  // A file encoder's graph is part of what the checkpointed features mean: a resume must use it.
  const encoderChecksum = features?.encoder ? { encoderChecksum: features.encoder.checksum } : {};
  const meta = { task: taskName, obsDim: LO, actionDim: A, config: cfg, seed, ...encoderChecksum };
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
    await features?.close();
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

    // The spec and the encoder it reads come from one published policy.
    const actor = new ResidualActor(
      base,
      () => link.policy()?.spec ?? null,
      A,
      features,
      () => link.policy()?.encoder,
    );
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

    // The published residual as one ONNX file (its encoder inside, or chaining the base's embedding).
    const exportPublished = (path: string): boolean => {
      const published = link.policy();
      if (published?.spec && published.encoder)
        exportLearnedResidualOnnx(published.spec, published.encoder, path);
      else if (published?.spec) exportResidualOnnx(published.spec, path, features?.encoder ?? undefined);
      return !!published?.spec;
    };
    const kept = keep === 'best' ? KeptResidual.open(options.outDir, !!options.resume) : null;

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
      kept?.offer(
        { envSteps: state.envSteps, successRate: r.successRate, evalEpisodes: r.episodes },
        exportPublished,
      );
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
      let feat = features ? await features.read(first.frames) : null;
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
            const r = actor.residual(obs, baseAction, feat, frames);
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
        const nextFeat = features
          ? outcome.terminated
            ? new Float32Array(E)
            : await features.read(step.frames)
          : null;
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
    // The final evaluation was offered to `kept` too: the kept residual is at least as good.
    const wrote = kept?.copyTo(onnxPath) || exportPublished(onnxPath);
    if (kept?.kept) {
      const k = kept.kept;
      const last = state.curve[state.curve.length - 1];
      const rate = (x: number): string => `${(100 * x).toFixed(1)}%`;
      log(
        k.envSteps === state.envSteps
          ? `kept the final residual: its evaluation (${rate(k.successRate)} of ${k.evalEpisodes}) is the best`
          : `kept the residual evaluated at ${k.envSteps} env steps (${rate(k.successRate)} of ` +
              `${k.evalEpisodes}); the final one scored ${rate(last.successRate)}`,
      );
    }
    await checkpoint();
    // What the run reports is the file it wrote, on episodes nothing during training saw.
    let heldOut: HeldOutResult | null = null;
    if (wrote) {
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
    const p = link.progress();
    writeRunSummary(options.outDir, {
      task: taskName,
      profile: chosen.name,
      profileReason: chosen.why,
      backend: engine.description,
      envSteps: state.envSteps,
      updates: p?.updates ?? 0,
      evaluations,
      wallSeconds: wall(),
      config: cfg,
      ...(state.mixing ? { mixing: state.mixing } : {}),
      successDetector: detectorAgreement(trainEpisodes),
    });
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
      kept: kept?.kept ?? null,
      wallSeconds: wall(),
      resumedFrom,
      trainEpisodes,
      mixing: state.mixing ? state.mixing.records : null,
    };
  } catch (err) {
    throw asDivergence(err, options.outDir);
  } finally {
    await link.close();
    await features?.close();
    await env.close();
    await evalEnv.close();
    outLock.release();
  }
}

function recentRate(xs: readonly boolean[]): number | null {
  if (xs.length === 0) return null;
  return xs.filter(Boolean).length / xs.length;
}

/** The encoder a checkpoint's run settled on (its config's), or null. */
function settledEncoder(meta: Record<string, unknown> | null): SettledEncoder | null {
  const config = meta?.config as Partial<SettledEncoder> | undefined;
  if (typeof config?.encoder !== 'string') return null;
  return { encoder: config.encoder, encoderFile: config.encoderFile ?? '' };
}
