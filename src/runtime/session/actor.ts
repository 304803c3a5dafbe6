/**
 * `runActor` (the future `resrt actor`): episodes on a robot (any transport) or a simulated Env with
 * the frozen ONNX base, the newest verified residual plus exploration noise, and the SafetyLayer
 * between them and the actuators. Every transition is numbered, spooled durably and streamed to the
 * learner; a newer residual is swapped in between episodes. Without a learner the actor keeps
 * going on its last good residual (or the base alone) and its spool grows until the learner is back.
 *
 * Episode phases: reset (scripted, or a person confirms) → run → label (optional: a person says
 * success or failure after a time-limit end) → next episode; pause/resume and e-stop at any time.
 */
import { mkdirSync } from 'node:fs';
import { detectorOutcome } from '../success-detector.js';
import type { CameraFrames } from '../../types.js';
import { LatencyHistogram } from '../../util/stats.js';
import { Rng } from '../../util/rng.js';
import { ResidualComposer } from '../compose.js';
import { checkRobotId, type SessionTransition } from './codec.js';
import { ActorStorage } from './actor-storage.js';
import { ActorLink } from './actor-link.js';
import { ResidualStore, type LoadedResidual } from './residual-store.js';
import type { ActorStatus, LearnerStatus } from './protocol.js';
import { applyControl, startActorDashboard, type ActorHandle } from './actor-handle.js';
import { EpisodeCurve } from '../dashboard/episode-curve.js';
import type { Dashboard } from '../dashboard/server.js';
import type { CameraPayload } from './camera-batch.js';
import { checkActorOptions, type ActorOptions } from './actor-options.js';
import { ActorPlant } from './actor-plant.js';
import { openActorPolicy } from './actor-policy.js';
import { ActorMixing, baselineEvaluation } from './actor-mixing.js';
import { EpisodeCounter } from './episode-counter.js';
import { clipAdd, exploreResidual } from './exploration.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runActor(options: ActorOptions): Promise<ActorHandle> {
  const robotId = checkRobotId(options.robotId);
  const log = options.log ?? ((): void => {});
  checkActorOptions(options);
  mkdirSync(options.stateDir, { recursive: true });

  // -- the plant side ----------------------------------------------------------------------------
  const plant = await ActorPlant.open(options, log);
  const { env, robot } = plant;
  const O = env.observationSpace.dim;
  const A = env.actionSpace.dim;
  const detector = options.successDetector ?? null;
  const policy = await openActorPolicy(options, env);
  const { base, cameras, safety } = policy;

  // -- durable state and the link --------------------------------------------------------------
  let learner: LearnerStatus | null = null;
  /** Publishes what was spooled (the link, once it exists). */
  let pumpLink = (): void => {};
  const storage = new ActorStorage({
    stateDir: options.stateDir,
    robotId,
    obsDim: O,
    actionDim: A,
    batchSize: options.batchSize ?? 32,
    flushMs: options.flushMs ?? 200,
    spoolLimitBytes: (options.spoolLimitMiB ?? 1024) * 2 ** 20,
    minFreeBytes: (options.minFreeMiB ?? 256) * 2 ** 20,
    log,
    onSpooled: () => pumpLink(),
    learnerStopped: () => (learner as LearnerStatus | null)?.storageStopped ?? null,
  });
  const spool = storage.spool;
  const store = new ResidualStore(options.stateDir, O, A);
  const composer = new ResidualComposer(A, null, 1);
  const mixing = options.mixing
    ? ActorMixing.open(options.mixing, {
        stateDir: options.stateDir,
        horizon: env.maxEpisodeSteps,
        seed: options.seed ?? 0,
        log,
        attempt: (what, write) => storage.attempt(what, write),
      })
    : null;
  let current: LoadedResidual | null = await store.loadLastGood();
  if (current) composer.setResidual(current.policy);
  let pendingLabel: boolean | null = null;
  let paused = false;
  let stopping = false;
  const counter = new EpisodeCounter(options.stateDir, (what, write) => storage.attempt(what, write));
  const rng = new Rng((options.seed ?? 0) ^ 0xac70);
  const latency = new LatencyHistogram();
  // This robot's episodes as the actor dashboard charts them.
  const curve = new EpisodeCurve();
  const baseline = baselineEvaluation(options.mixing);
  // The base's measured rate the mixer guards (--baseline): an evaluation, drawn at episode 0.
  if (baseline) curve.addEvaluation(baseline);
  const stats = {
    phase: 'starting' as ActorStatus['phase'],
    episode: counter.first,
    episodes: 0,
    successes: 0,
    lastReturn: null as number | null,
    transitions: 0,
    interventionSteps: 0,
    safetyEvents: 0,
  };

  const link = new ActorLink({
    brokerUrl: options.brokerUrl,
    session: options.session ?? 'default',
    robotId,
    spool,
    resendMs: options.resendMs,
    onPolicy: (p) => store.offer(p),
    onLearnerStatus: (s) => (learner = s),
    onControl: (c) => {
      // Clearing an e-stop is for a person who can see the robot: from MQTT only when allowed.
      if (c.cmd === 'reset-estop' && !options.remoteEstopReset) {
        log('ignored an e-stop reset from MQTT (remoteEstopReset is off): clear it at the robot');
        return;
      }
      applyControl(handle, c);
    },
    onTeleop: (a) => handle.setTeleop(a),
  });

  let wakeOnStop: () => void = () => {};
  const stopSignal = new Promise<null>((resolve) => (wakeOnStop = () => resolve(null)));
  let finished: Promise<ActorStatus> = Promise.resolve({} as ActorStatus);
  const status = (): ActorStatus => {
    return {
      robotId,
      online: stats.phase !== 'stopped',
      phase: stats.phase,
      episode: stats.episode,
      episodes: stats.episodes,
      successes: stats.successes,
      recentSuccessRate: curve.recentRate(),
      lastReturn: stats.lastReturn,
      residualVersion: composer.version,
      transitions: stats.transitions,
      pendingTransitions: spool.pendingTransitions,
      ackedSeq: spool.ackedSeq,
      interventionSteps: stats.interventionSteps,
      safetyEvents: stats.safetyEvents,
      latencyMs: { p50: latency.quantile(0.5) || 0, p99: latency.quantile(0.99) || 0 },
      learnerOnline: learner?.online ?? false,
      brokerConnected: link.connected,
      mixingShare: mixing?.share ?? null,
      cameras: [...cameras.cameras],
      cameraStepsMissing: cameras.missing,
      storage: storage.status(),
    };
  };

  const handle: ActorHandle = {
    robotId,
    dashboardUrl: null,
    status,
    estop(source = 'api') {
      safety.estop(source);
      // The device latches too: a hung actor process must not be able to move it.
      robot?.estop(`resrt actor: e-stop from ${source}`);
      log(`e-stop from ${source}`);
    },
    resetEstop() {
      const r = safety.reset(performance.now());
      if (r.ok && robot) void robot.resetFault().catch(() => {});
      return r.ok;
    },
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
    },
    label(success) {
      pendingLabel = success;
    },
    confirmReset() {
      plant.confirmReset();
    },
    setTeleop(action) {
      try {
        safety.setTeleop(action, performance.now());
      } catch (err) {
        log(`teleop ignored: ${(err as Error).message.split('\n')[0]}`);
      }
    },
    stop: async () => {
      stopping = true;
      wakeOnStop();
      return finished;
    },
    get done() {
      return finished;
    },
  };

  // A fresh spool folder must not restart numbering below what the learner already holds.
  if (spool.nextSeq === 0) {
    const until = performance.now() + 2000;
    while (!link.ackKnown && performance.now() < until) await sleep(20);
    if (link.learnerSeq >= 0) spool.advanceTo(link.learnerSeq + 1);
  }
  // Every transition gets the next number; batches are appended to the spool in this order.
  let seqCursor = spool.nextSeq;

  // -- batching (ActorStorage) ---------------------------------------------------------------------
  pumpLink = () => link.pump();
  const statusTimer = setInterval(() => {
    link.publishStatus(status());
    // The learner's dashboard shows each robot's latest frames.
    cameras.eachLatest((name, jpeg) => link.publishFrame(name, jpeg));
  }, 500);
  const emit = (t: SessionTransition): void => {
    storage.emit(t);
    stats.transitions++;
    if (t.intervention) stats.interventionSteps++;
  };

  let dashboard: Dashboard | null = null;
  if (options.dashboardPort !== undefined) {
    dashboard = await startActorDashboard(handle, {
      port: options.dashboardPort,
      host: options.host,
      token: options.token,
      actionDim: A,
      curve,
      frame: (camera) => cameras.latest(camera),
    });
    (handle as { dashboardUrl: string | null }).dashboardUrl = dashboard.url;
  }

  // -- the episodes ---------------------------------------------------------------------------------
  const zeros = new Float32Array(A);
  const sendSafe = (): void => plant.sendSafe(safety.safeAction());

  const runEpisodes = async (): Promise<void> => {
    const seed0 = options.seed ?? 0;
    while (!stopping && (options.episodes === undefined || stats.episodes < options.episodes)) {
      // Waiting states between episodes. The last episode's mixing outcome and this episode's number
      // are on disk before it starts; a disk that refuses them holds episodes like a full spool.
      for (;;) {
        if (stopping) break;
        if (safety.state.estopped) stats.phase = 'estopped';
        else if (paused) stats.phase = 'paused';
        else {
          mixing?.saveOutcome();
          counter.save(stats.episode);
          const hold = storage.holdEpisodes();
          if (hold === null) break;
          stats.phase = hold;
        }
        await sleep(20);
      }
      if (stopping) break;
      const next = store.take();
      if (next) {
        const old = current;
        current = next;
        composer.setResidual(next.policy);
        log(`residual v${next.header.version} in use`);
        if (old) await old.policy.close();
      }
      stats.phase = 'reset';
      pendingLabel = null;
      const epSeed = seed0 * 1_000_003 + stats.episode;
      let obs: Float32Array;
      let frames: CameraFrames | undefined;
      try {
        const resetting = Promise.resolve(env.reset({ seed: epSeed }));
        // A reset can wait on a person indefinitely; stop() must not.
        resetting.catch(() => {});
        const result = await Promise.race([
          plant.keepSceneRunning(resetting, () => (safety.state.estopped ? null : safety.safeAction())),
          stopSignal,
        ]);
        if (result === null) break;
        obs = Float32Array.from(result.obs);
        frames = result.frames;
      } catch (err) {
        log(`reset failed: ${(err as Error).message.split('\n')[0]}`);
        await sleep(200);
        continue;
      }
      base.reset?.(epSeed);
      safety.beginEpisode();
      const plan = mixing?.beginEpisode() ?? null;
      let obsAt = performance.now();
      let baseStarted = performance.now();
      let baseAction = Float32Array.from(await base.act(obs, frames));
      let obsCamera: CameraPayload | null = cameras.capture(frames);
      // Loop latency = base + residual + safety for one observation (the base runs one step ahead).
      let baseMs = performance.now() - baseStarted;
      let held: SessionTransition | null = null;
      let ret = 0;
      let step = 0;
      let success = false;
      stats.phase = 'run';
      for (;;) {
        while (paused && !stopping && !safety.state.estopped) {
          stats.phase = 'paused';
          await sleep(20);
        }
        stats.phase = 'run';
        const t0 = performance.now();
        const raw = composer.residualModel
          ? await composer.residual(obs, baseAction, cameras.residualContext(frames))
          : zeros;
        const residual = exploreResidual(raw, learner, current?.header.actionScale, rng);
        // The mixer's weight on the exploring residual at this step (1 without mixing).
        const weight = plan ? plan.weightAt(step) : 1;
        const proposed =
          composer.residualModel || learner ? clipAdd(baseAction, residual, weight) : baseAction;
        const decision = safety.filter(proposed, {
          obs,
          baseAction,
          nowMs: performance.now(),
          obsAgeMs: performance.now() - obsAt,
        });
        stats.safetyEvents += decision.events.length;
        const estopped = decision.latched || safety.state.estopped;
        if (estopped || stopping || storage.spoolFailed) {
          // The e-stop (or shutdown, or a spool that cannot keep what is collected) takes this
          // tick: no policy command goes out any more.
          sendSafe();
          if (held) {
            held.truncated = !held.terminated;
            emit(held);
            held = null;
          }
          break;
        }
        const action = decision.action;
        latency.record(baseMs + performance.now() - t0);
        options.onCommand?.(action);
        const r = await env.step(action);
        await plant.afterStep();
        step++;
        obsAt = performance.now();
        const nextObs = Float32Array.from(r.obs);
        let terminated = r.terminated;
        let truncated = r.truncated || (!terminated && step >= env.maxEpisodeSteps);
        let reward = r.reward;
        let labelled = false;
        if (pendingLabel !== null) {
          // A person's verdict ends the episode with that outcome.
          success = pendingLabel;
          reward = pendingLabel ? 1 : 0;
          terminated = true;
          truncated = false;
          labelled = true;
          pendingLabel = null;
        } else if (detector) {
          const judged = detectorOutcome(
            { reward, terminated, truncated, envSuccess: !!r.info.success },
            await detector.judge(r.frames),
          );
          ({ reward, terminated, truncated } = judged);
          if (judged.success) success = true;
        } else if (r.info.success) success = true;
        baseStarted = performance.now();
        const nextBase = terminated ? zeros : Float32Array.from(await base.act(nextObs, r.frames));
        // After termination the base is not queried: no features to send (the learner uses zeros),
        // but JPEG frames go: the last observation is what a success detector learns from.
        const nextCamera = terminated ? cameras.captureTerminal(r.frames) : cameras.capture(r.frames);
        baseMs = performance.now() - baseStarted;
        if (held) emit(held);
        held = {
          robotId,
          seq: seqCursor++,
          episode: stats.episode,
          step: step - 1,
          obs,
          baseAction,
          residual,
          action: Float32Array.from(action),
          reward,
          nextObs,
          nextBaseAction: nextBase,
          terminated,
          truncated,
          intervention: decision.intervention,
          safetyEvents: decision.events.length,
          policyVersion: composer.version,
          success: success && (terminated || truncated),
          labelled,
          ...(plan ? { heldBack: weight < 1, mixingShare: plan.share } : {}),
          ...(obsCamera && (terminated || nextCamera)
            ? { camera: { obs: obsCamera, next: nextCamera } }
            : {}),
        };
        obsCamera = nextCamera;
        frames = r.frames;
        ret += reward;
        obs = nextObs;
        baseAction = nextBase;
        if (terminated || truncated) break;
      }
      if (held && held.truncated && !held.terminated && (options.labelTimeoutMs ?? 0) > 0) {
        stats.phase = 'label';
        const until = performance.now() + (options.labelTimeoutMs ?? 0);
        while (pendingLabel === null && !stopping && performance.now() < until) await sleep(20);
        if (pendingLabel !== null) {
          ret += (pendingLabel ? 1 : 0) - held.reward;
          held.reward = pendingLabel ? 1 : 0;
          held.terminated = true;
          held.truncated = false;
          held.labelled = true;
          held.success = pendingLabel;
          success = pendingLabel;
          pendingLabel = null;
        }
      }
      if (held) emit(held);
      storage.flush();
      // envSteps: every transition this actor ever numbered, across restarts.
      mixing?.endEpisode(!!held || step > 0, success, seqCursor, step);
      if (held || step > 0) {
        stats.episodes++;
        if (success) stats.successes++;
        curve.add({ success, steps: step, ret });
        stats.lastReturn = ret;
      }
      stats.episode++;
    }
  };

  finished = (async (): Promise<ActorStatus> => {
    try {
      await runEpisodes();
    } catch (err) {
      log(`actor stopped on an error: ${(err as Error).stack ?? String(err)}`);
      sendSafe();
      throw err;
    } finally {
      stats.phase = 'stopped';
      clearInterval(statusTimer);
      const unsaved = storage.finish();
      if (unsaved > 0) log(`spool: ${unsaved} transitions could not be saved (the disk refuses writes)`);
      if (mixing?.hasUnsavedOutcome)
        log('mixing log: the last episode could not be saved (the disk refuses writes)');
      // Give the learner a moment to acknowledge what is in flight; the spool keeps the rest.
      const until = performance.now() + 1000;
      while (spool.pendingTransitions > 0 && link.connected && performance.now() < until) await sleep(20);
      await link.close(status());
      storage.close();
      mixing?.close();
      await store.close();
      if (current) await current.policy.close();
      await policy.close();
      await dashboard?.close();
      await plant.close();
    }
    return status();
  })();
  finished.catch(() => {});
  return handle;
}
