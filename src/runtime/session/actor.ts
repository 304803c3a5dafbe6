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
import { checkCameras, detectorOutcome, type SuccessJudge } from '../success-detector.js';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CameraFrames, Env, Policy, Robot } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { LatencyHistogram, wilsonInterval } from '../../util/stats.js';
import { Rng } from '../../util/rng.js';
import { writeFileAtomic } from '../../util/files.js';
import { OnnxPolicy } from '../onnx-policy.js';
import { ResidualComposer } from '../compose.js';
import { SafetyLayer } from '../../safety/layer.js';
import type { SafetyConfigInput } from '../../safety/config.js';
import { connectRobot, robotEnv } from '../../hw/connect.js';
import type { RobotConfig } from '../../hw/robot-config.js';
import { HardwareEnv } from '../../hw/hardware-env.js';
import { checkRobotId, type SessionTransition } from './codec.js';
import { ActorStorage } from './actor-storage.js';
import { ActorLink } from './actor-link.js';
import { ResidualStore, type LoadedResidual } from './residual-store.js';
import type { ActorStatus, ControlCommand, LearnerStatus } from './protocol.js';
import { EpisodeCurve } from '../dashboard/episode-curve.js';
import { startDashboard, type Dashboard } from '../dashboard/server.js';
import {
  makeMixer,
  mixingEpisode,
  replayMixer,
  validateMixingSpec,
  type MixingSpec,
} from '../../residual/mixing-run.js';
import type { ConservativeMixer, EpisodePlan } from '../../safety/mixing.js';
import { MixingLog } from './mixing-log.js';
import type { MixingEpisode } from '../../residual/mixing-run.js';
import { checkSendFrames, type CameraPayload, type SendFrames } from './camera-batch.js';
import { CameraSender } from './camera-sender.js';

export interface ActorRobotOptions {
  /** serial:/dev/ttyACM0, mqtt://host:port/robot-id, ... (see connectRobot). */
  url: string;
  config: RobotConfig;
  /** A resrt virtual robot (it resets its own scene): its task observation width. */
  virtualScene?: { obsDim: number };
  username?: string;
  password?: string;
}

export interface ActorOptions {
  robotId: string;
  /** mqtt://host:port of the session's broker (the learner prints it). */
  brokerUrl: string;
  /** Session name: the topic namespace shared with the learner. Default 'default'. */
  session?: string;
  /** Spool and last good residual live here; keep it across restarts. */
  stateDir: string;
  /** The frozen base: an ONNX path or any Policy. */
  base: string | Policy;
  /** A simulated environment (exactly one of env and robot). */
  env?: Env;
  robot?: ActorRobotOptions;
  /** Safety layer config; default: the box [-1, 1] with the layer's default watchdog and teleop. */
  safety?: SafetyConfigInput;
  /** A simulated env steps at this rate (real time); default: as fast as it answers. */
  rateHz?: number;
  /** Transitions per batch. Default 32. */
  batchSize?: number;
  /** A partial batch is flushed after this long. Default 200 ms. */
  flushMs?: number;
  /** Resend batches unacknowledged for this long. Default 2000 ms. */
  resendMs?: number;
  /** Stop after this many episodes (default: run until stop()). */
  episodes?: number;
  /**
   * No new episode starts while the spool holds this many MiB the learner has not acknowledged
   * (the learner has been away long; the robot's disk must not fill). Default 1024.
   */
  spoolLimitMiB?: number;
  /**
   * No new episode starts while the disk holding stateDir has less than this many MiB free (room
   * for the OS and whatever else writes there). Default 256.
   */
  minFreeMiB?: number;
  /**
   * After an episode that hit the time limit, wait this long for a person's success/failure label
   * (dashboard, MQTT, terminal). 0 (default): no label phase, the success source decides.
   */
  labelTimeoutMs?: number;
  seed?: number;
  /** Serve the actor's dashboard on this port (0 picks one). Default: no dashboard. */
  dashboardPort?: number;
  /** Dashboard bind address. Default 127.0.0.1; anything else needs a token. */
  host?: string;
  token?: string;
  /**
   * Accept e-stop resets from MQTT (the learner's dashboard). Default false: the e-stop is cleared
   * where someone sees the robot (this actor's dashboard, its terminal keys, or the API).
   */
  remoteEstopReset?: boolean;
  /**
   * Conservative mixing (docs/safety.md): every episode runs a plan of this mixer, which keeps
   * its expected success ≥ (1 − α)·V_base. The baseline is the base's success on this robot
   * ({ value } or counts from `resrt eval`). Plans and outcomes are kept in stateDir/mixing.jsonl
   * and replayed at restart.
   */
  mixing?: MixingSpec;
  /**
   * What each transition carries of the cameras (docs/sessions.md "Cameras"): the base's embedding
   * ('features'), every frame as JPEG ('jpeg', at `jpegQuality`, default 85), or nothing ('none',
   * the default).
   */
  sendFrames?: SendFrames;
  jpegQuality?: number;
  /** Called with every command handed to the robot/env (logging, tests). */
  onCommand?: (action: Float32Array) => void;
  log?: (line: string) => void;
  /**
   * A learned success detector (resrt reward train) as the success source: it ends an episode
   * with reward 1 when it fires. A person's label overrides it.
   */
  successDetector?: SuccessJudge & { path?: string };
}

export interface ActorHandle {
  readonly robotId: string;
  readonly dashboardUrl: string | null;
  status(): ActorStatus;
  estop(source?: string): void;
  /** Clears an e-stop (the operator's heartbeat is now); false when the layer refused. */
  resetEstop(): boolean;
  pause(): void;
  resume(): void;
  /** A person's verdict on the running (or just finished) episode. */
  label(success: boolean): void;
  /** A person confirms a manual reset. */
  confirmReset(): void;
  /** Teleoperation: a normalized action takes over through the safety layer; null releases. */
  setTeleop(action: number[] | null): void;
  stop(): Promise<ActorStatus>;
  /** Resolves when the actor stops (episodes done, stop(), or a fatal error). */
  readonly done: Promise<ActorStatus>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runActor(options: ActorOptions): Promise<ActorHandle> {
  const robotId = checkRobotId(options.robotId);
  const log = options.log ?? ((): void => {});
  if (!!options.env === !!options.robot) {
    throw new ResrtError(
      'runActor needs exactly one of env (simulated) and robot (hardware)',
      'pass { robot: { url, config } } for a robot, or { env } for a simulator',
    );
  }
  const positiveInt = (v: number | undefined, what: string): void => {
    if (v !== undefined && !(Number.isInteger(v) && v > 0))
      throw new ResrtError(`${what} = ${v}`, `${what} must be a positive whole number`);
  };
  positiveInt(options.batchSize, 'batchSize');
  positiveInt(options.episodes, 'episodes');
  for (const [k, v] of [
    ['flushMs', options.flushMs],
    ['resendMs', options.resendMs],
  ] as const)
    if (v !== undefined && !(v > 0))
      throw new ResrtError(`${k} = ${v}`, `${k} must be a positive number of ms`);
  if (options.labelTimeoutMs !== undefined && !(options.labelTimeoutMs >= 0))
    throw new ResrtError(
      `labelTimeoutMs = ${options.labelTimeoutMs}`,
      'give 0 (no label phase) or a positive number of ms',
    );
  if (
    options.spoolLimitMiB !== undefined &&
    !(options.spoolLimitMiB > 0 && Number.isFinite(options.spoolLimitMiB))
  )
    throw new ResrtError(
      `spoolLimitMiB = ${options.spoolLimitMiB}`,
      'give a positive number of MiB the actor may spool while the learner is away (default 1024)',
    );
  if (options.minFreeMiB !== undefined && !(options.minFreeMiB >= 0 && Number.isFinite(options.minFreeMiB)))
    throw new ResrtError(
      `minFreeMiB = ${options.minFreeMiB}`,
      'give the MiB to keep free on the disk that holds the state folder (default 256; 0 for none)',
    );
  if (options.rateHz !== undefined && !(options.rateHz > 0 && Number.isFinite(options.rateHz)))
    throw new ResrtError(`rateHz ${options.rateHz}`, 'give a positive rate in Hz, or leave it out');
  if (options.mixing) {
    validateMixingSpec(options.mixing);
    if (options.mixing.baseline === 'initial-eval') {
      throw new ResrtError(
        "mixing.baseline 'initial-eval' needs a trainer's step-0 evaluation, and an actor has none",
        'evaluate the base on this robot and pass its counts (--baseline 45/100) or rate (--baseline 0.45)',
      );
    }
  }
  mkdirSync(options.stateDir, { recursive: true });

  // -- the plant side ----------------------------------------------------------------------------
  let robot: Robot | null = null;
  let env: Env;
  if (options.robot) {
    robot = await connectRobot(options.robot.url, {
      actionNames: options.robot.config.action.names,
      watchdogMs: options.robot.config.watchdog?.timeoutMs,
      config: options.robot.config,
      username: options.robot.username,
      password: options.robot.password,
    });
    env = robotEnv(robot, options.robot.config, {
      virtualScene: options.robot.virtualScene,
      closeRobot: false,
      onResetPrompt: (m) => log(`reset: ${m} (confirm on the dashboard or with confirm-reset)`),
      onFaultPrompt: (m) => log(`fault: ${m}; then clear it with "reset e-stop" on the dashboard or key x`),
    });
  } else env = options.env as Env;
  const sendFrames = checkSendFrames(options.sendFrames, options.jpegQuality);
  const O = env.observationSpace.dim;
  const A = env.actionSpace.dim;
  const detector = options.successDetector ?? null;
  if (detector) checkCameras(detector.cameras, env.cameras ?? [], detector.path ?? 'the success detector');
  const base: Policy =
    typeof options.base === 'string'
      ? await OnnxPolicy.load(options.base, {
          expectObsDim: O,
          expectActionDim: A,
          cameras: Object.fromEntries((env.cameras ?? []).map((c) => [c.name, c])),
        })
      : options.base;
  const cameras = CameraSender.create(sendFrames, base, env.cameras ?? [], options.jpegQuality);
  if (base.actionDim !== A) {
    throw new ResrtError(
      `the base policy outputs ${base.actionDim} action dims, ${env.id} takes ${A}`,
      'use the base policy exported for this robot/task',
    );
  }
  const safety = new SafetyLayer(options.safety ?? { actionDim: A });
  if (safety.config.actionDim !== A) {
    throw new ResrtError(
      `the safety config has actionDim ${safety.config.actionDim}, ${env.id} takes ${A}`,
      'write the safety config for this robot',
    );
  }

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
  let mixer: ConservativeMixer | null = null;
  let mixingLog: MixingLog | null = null;
  if (options.mixing) {
    mixingLog = MixingLog.open(options.stateDir, options.mixing);
    if (mixingLog.tornBytes > 0) log(`mixing: dropped a torn tail of ${mixingLog.tornBytes} bytes`);
    mixer = makeMixer(options.mixing, {
      horizon: env.maxEpisodeSteps,
      seed: options.seed ?? 0,
      initialEval: null,
    });
    replayMixer(mixer, mixingLog.records);
    if (mixingLog.records.length) log(`mixing: resumed from ${mixingLog.records.length} episodes`);
  }
  let current: LoadedResidual | null = await store.loadLastGood();
  if (current) composer.setResidual(current.policy);
  /** The running episode's mixing plan. */
  let plan: EpisodePlan | null = null;
  let pendingLabel: boolean | null = null;
  let paused = false;
  let stopping = false;
  /** A finished mixed episode whose line the mixing log could not take yet (a full disk). */
  let unsavedOutcome: { record: MixingEpisode; success: boolean; plan: EpisodePlan } | null = null;
  const saveOutcome = (): void => {
    const u = unsavedOutcome;
    if (!u || !mixingLog || !mixer) return;
    // The mixer learns the outcome only with its line on disk, so a restart plans as it would.
    if (!storage.attempt('mixing log', () => (mixingLog as MixingLog).append(u.record))) return;
    mixer.endEpisode(u.success, u.plan);
    unsavedOutcome = null;
  };

  // Episode numbers go on across restarts: the learner tells a restarted actor's abandoned episode
  // from its next one by the number, and a simulator's reset seed follows it.
  const episodeFile = join(options.stateDir, 'episode.json');
  const firstEpisode = existsSync(episodeFile) ? readEpisodeCounter(episodeFile) : 0;
  /** The episode number whose successor the counter file holds (-1: none written by this run). */
  let counterWritten = -1;
  const rng = new Rng((options.seed ?? 0) ^ 0xac70);
  const latency = new LatencyHistogram();
  // This robot's episodes as the actor dashboard charts them.
  const curve = new EpisodeCurve();
  const baseline = options.mixing?.baseline;
  if (baseline && baseline !== 'initial-eval') {
    // The base's measured rate the mixer guards (--baseline): an evaluation, drawn at episode 0.
    const b = 'value' in baseline ? null : wilsonInterval(baseline.successes, baseline.trials);
    const rate = 'value' in baseline ? baseline.value : baseline.successes / baseline.trials;
    curve.addEvaluation({
      successRate: rate,
      ciLow: b?.low ?? rate,
      ciHigh: b?.high ?? rate,
      label: 'base (--baseline)',
    });
  }
  const stats = {
    phase: 'starting' as ActorStatus['phase'],
    episode: firstEpisode,
    episodes: 0,
    successes: 0,
    lastReturn: null as number | null,
    transitions: 0,
    interventionSteps: 0,
    safetyEvents: 0,
  };

  const control = (c: ControlCommand): void => {
    switch (c.cmd) {
      case 'estop':
        handle.estop(c.source);
        break;
      case 'reset-estop':
        handle.resetEstop();
        break;
      case 'pause':
        handle.pause();
        break;
      case 'resume':
        handle.resume();
        break;
      case 'label':
        handle.label(c.success);
        break;
      case 'confirm-reset':
        handle.confirmReset();
        break;
    }
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
      control(c);
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
      mixingShare: plan?.share ?? mixer?.allowedShare().share ?? null,
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
      // Only a hardware env with a manual reset waits for a person; a virtual scene resets itself.
      if (env instanceof HardwareEnv) env.confirmReset();
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
    dashboard = await startDashboard({
      title: `resrt actor ${robotId}`,
      port: options.dashboardPort,
      host: options.host,
      token: options.token,
      snapshot: () => ({ role: 'actor', actionDim: A, robots: { [robotId]: status() }, ...curve.snapshot() }),
      frame: (robot, camera) => (robot === robotId ? cameras.latest(camera) : null),
      command: (robot, c) => {
        if (robot !== robotId && robot !== '') return false;
        control(c);
        return true;
      },
      teleop: (robot, a) => {
        if (robot !== robotId && robot !== '') return false;
        handle.setTeleop(a);
        return true;
      },
    });
    (handle as { dashboardUrl: string | null }).dashboardUrl = dashboard.url;
  }

  // -- the episodes ---------------------------------------------------------------------------------
  const zeros = new Float32Array(A);
  const exploration = (res: Float32Array): Float32Array => {
    const out = Float32Array.from(res);
    const l = learner as LearnerStatus | null;
    if (!l) return out;
    const scale = current?.header.actionScale ?? l.actionScale;
    for (let i = 0; i < A; i++) {
      const v = l.warmup
        ? (rng.uniform() * 2 - 1) * l.warmupNoise * l.actionScale
        : out[i] + rng.normal(0, l.explorationStd);
      out[i] = Math.max(-scale, Math.min(scale, v));
    }
    return out;
  };
  const sendSafe = (): void => {
    // Nothing more goes to the device: its watchdog holds the safe state; say it once explicitly.
    if (!robot) return;
    const action = safety.safeAction();
    options.onCommand?.(action);
    robot.send({ action, validForMs: options.robot?.config.commandValidMs ?? 100 });
  };

  /**
   * A virtual scene ends its episode on its own clock and brakes when commands stop; if this actor
   * counted its time limit a step or two early (a stalled event loop), the scene would wait forever
   * mid-episode. Holding the last safe command while the reset is pending lets it run out its
   * clock and reset itself, which is the scripted reset of a virtual robot.
   */
  const keepSceneRunning = async <T>(reset: Promise<T>): Promise<T> => {
    const virtual = options.robot?.virtualScene;
    if (!virtual || !robot) return reset;
    const r = robot;
    const periodMs = 1000 / (options.robot?.config.rateHz ?? 50);
    const hold = setInterval(() => {
      if (safety.state.estopped) return;
      const action = safety.safeAction();
      options.onCommand?.(action);
      r.send({ action, validForMs: 3 * periodMs });
    }, periodMs);
    try {
      return await reset;
    } finally {
      clearInterval(hold);
    }
  };

  let simNextAt = 0;
  const simPace = async (): Promise<void> => {
    const hz = options.rateHz;
    if (!hz) return new Promise<void>((resolve) => setImmediate(resolve));
    const now = performance.now();
    simNextAt = Math.max(simNextAt + 1000 / hz, now - 1000 / hz);
    await sleep(Math.max(0, simNextAt - now));
  };

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
          saveOutcome();
          if (counterWritten !== stats.episode) {
            const next = { next: stats.episode + 1 };
            if (storage.attempt('episode counter', () => writeFileAtomic(episodeFile, JSON.stringify(next))))
              counterWritten = stats.episode;
          }
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
        const result = await Promise.race([keepSceneRunning(resetting), stopSignal]);
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
      plan = mixer?.beginEpisode() ?? null;
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
        const residual = exploration(raw);
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
        // A simulator answers at once; without a turn of the event loop here, MQTT and timers
        // would never run between steps.
        if (!robot) await simPace();
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
        // After termination the base is not queried: no features to send (the learner uses zeros).
        const nextCamera = terminated ? cameras.see(r.frames) : cameras.capture(r.frames);
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
      if (plan && mixer && options.mixing) {
        // An episode cut by an e-stop or a stop counts with the outcome it had (a failure, so far);
        // one that never ran a step is taken back.
        if (held || step > 0) {
          // envSteps: every transition this actor ever numbered, across restarts.
          unsavedOutcome = {
            record: mixingEpisode(options.mixing, plan, success, seqCursor, step),
            success,
            plan,
          };
          saveOutcome();
        } else mixer.cancelEpisode(plan);
        plan = null;
      }
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
      if (unsavedOutcome) log('mixing log: the last episode could not be saved (the disk refuses writes)');
      // Give the learner a moment to acknowledge what is in flight; the spool keeps the rest.
      const until = performance.now() + 1000;
      while (spool.pendingTransitions > 0 && link.connected && performance.now() < until) await sleep(20);
      await link.close(status());
      storage.close();
      mixingLog?.close();
      await store.close();
      if (current) await current.policy.close();
      if (typeof options.base === 'string') await (base as OnnxPolicy).close();
      await dashboard?.close();
      if (robot) {
        await env.close();
        await robot.close();
      }
    }
    return status();
  })();
  finished.catch(() => {});
  return handle;
}

function readEpisodeCounter(path: string): number {
  let next: unknown;
  try {
    next = (JSON.parse(readFileSync(path, 'utf8')) as { next?: unknown }).next;
  } catch {
    next = undefined;
  }
  if (typeof next !== 'number' || !Number.isSafeInteger(next) || next < 0) {
    throw new ResrtError(
      `${path} does not hold an episode counter ({"next": N})`,
      'move the file away; the actor then numbers episodes from 0 again',
    );
  }
  return next;
}

/** clip(base + weight·residual) to the normalized box. */
function clipAdd(base: Float32Array, res: Float32Array, weight: number): Float32Array {
  const out = new Float32Array(base.length);
  for (let i = 0; i < base.length; i++) {
    const v = base[i] + weight * res[i];
    out[i] = v > 1 ? 1 : v < -1 ? -1 : v;
  }
  return out;
}
