/**
 * `runLearnerService` (the future `resrt learner`): the learner of a real-world session. It takes
 * transition batches from a fleet of actors over MQTT (starting an embedded broker on loopback
 * when given no URL), logs them durably (write-ahead log, fsync before the acknowledgement), trains
 * the residual TD3 learner on them, and publishes the residual as a retained, versioned,
 * checksummed ONNX message every `publishEvery` actor updates.
 *
 * Exactly once: per robot, transitions enter the log in sequence order with duplicates dropped
 * (src/residual/service/ingest.ts). On `resume` the checkpoint restores the networks and replays,
 * and the log re-feeds whatever came after the checkpoint, so a kill -9 at any moment loses nothing
 * that was acknowledged and duplicates nothing.
 *
 * Interventions (HIL-SERL): teleoperated steps also go into the demonstration replay, which the
 * learner samples symmetrically with online data. rewardMode 'rlif' (RLIF) replaces the task reward
 * with −1 on the step a person takes over and 0 elsewhere.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { lockRunFolder } from '../../util/run-lock.js';
import { ResrtError } from '../../util/errors.js';
import { initEngine } from '../../nn/index.js';
import { makeConfig, profileFor, type EncoderMode } from '../config.js';
import { ReplayBuffer } from '../replay.js';
import { ResidualLearner, type UpdateStats } from '../td3.js';
import { readCheckpoint, writeCheckpoint, hasCheckpoint } from '../checkpoint.js';
import { OnnxPolicy } from '../../runtime/onnx-policy.js';
import { decodeEnvelope, type TransitionBatch } from '../../runtime/session/codec.js';
import type { ControlCommand, LearnerStatus } from '../../runtime/session/protocol.js';
import { startDashboard, type Dashboard } from '../../runtime/dashboard/server.js';
import { Sequencer } from './ingest.js';
import { TransitionWal, type EpisodeRecord } from './wal.js';
import { WalStorage } from './wal-storage.js';
import { CameraIngest } from './camera-ingest.js';
import { checkServiceOptions, type LearnerServiceOptions } from './service-options.js';
import { LearnerLink, openSessionBroker } from './learner-link.js';
import { ResidualPublisher } from './residual-publisher.js';
import { EpisodeIntake, type ReplayProgress } from './episode-intake.js';
import { TrainingPump } from './training-pump.js';

export interface LearnerSnapshot {
  online: boolean;
  version: number;
  updates: number;
  updatesPerSec: number;
  /** Transitions in the write-ahead log. */
  logged: number;
  /** Transitions in the replay (whole episodes). */
  ingested: number;
  duplicates: number;
  episodes: number;
  successRate: number | null;
  interventionRate: number | null;
  /** Logged steps where an actor's conservative mixing held the residual back. */
  heldBackSteps: number;
  /**
   * The exploring share the held-back term is weighted with: the lowest of the robots' latest mixed
   * episodes' shares; null before one.
   */
  mixingShare: number | null;
  labels: number;
  labelledSuccesses: number;
  /** Intervention steps in the demonstration replay. */
  demoTransitions: number;
  warmup: boolean;
  /** Highest seq logged per robot. */
  watermarks: Record<string, number>;
  /** Why training stopped (divergence), while logging goes on; null while it runs. */
  trainingError: string | null;
  /** The write-ahead log against its limit; `stopped` says why nothing is logged. */
  storage: ReturnType<WalStorage['status']>;
  /** A camera session: feature width, steps logged without camera data, episodes whose frames failed. */
  camera: { featureDim: number; missingSteps: number; failedEpisodes: number } | null;
  last: UpdateStats | null;
}

export interface LearnerService {
  readonly brokerUrl: string;
  readonly dashboardUrl: string | null;
  readonly session: string;
  snapshot(): LearnerSnapshot;
  episodes(): readonly EpisodeRecord[];
  /** Sends a control command to one actor (or every known one with robotId ''). */
  command(robotId: string, c: ControlCommand): boolean;
  /** Writes a checkpoint now (after the update in flight, if any). */
  checkpoint(): Promise<void>;
  close(): Promise<void>;
}

/** What the service checkpoints beside the networks and replays. */
interface ServiceState extends ReplayProgress {
  /** The last residual version published. */
  version: number;
}

/** The camera modes a learner session can serve (camera-ingest.ts). */
const SESSION_ENCODERS: readonly EncoderMode[] = ['base-embedding', 'none'];

export async function runLearnerService(options: LearnerServiceOptions): Promise<LearnerService> {
  checkServiceOptions(options);
  mkdirSync(options.outDir, { recursive: true });
  // One learner per session folder: a second would append to the same write-ahead log and checkpoint.
  const lock = lockRunFolder(options.outDir, 'learner');
  let service: LearnerService;
  try {
    service = await startLearnerService(options);
  } catch (err) {
    lock.release();
    throw err;
  }
  return {
    ...service,
    async close() {
      try {
        await service.close();
      } finally {
        lock.release();
      }
    },
  };
}

async function startLearnerService(options: LearnerServiceOptions): Promise<LearnerService> {
  const log = options.log ?? ((): void => {});
  const session = options.session ?? 'default';
  const outDir = options.outDir;
  if (!options.resume && (hasCheckpoint(outDir) || existsSync(join(outDir, 'wal')))) {
    throw new ResrtError(
      `${outDir} already holds a session (checkpoint or write-ahead log)`,
      'pass --resume to continue it, or choose another --out folder',
    );
  }

  // -- dimensions and the learner -------------------------------------------------------------
  let obsDim = options.obsDim;
  let actionDim = options.actionDim;
  let base: OnnxPolicy | null = null;
  if (options.base) {
    base = await OnnxPolicy.load(options.base, { warmupRuns: 0 });
    if (
      (obsDim !== undefined && obsDim !== base.obsDim) ||
      (actionDim !== undefined && actionDim !== base.actionDim)
    )
      throw new ResrtError(
        `the base ${options.base} has obs/action ${base.obsDim}/${base.actionDim}, the options say ${obsDim}/${actionDim}`,
        'drop obsDim/actionDim or use the matching base',
      );
    obsDim = base.obsDim;
    actionDim = base.actionDim;
  }
  if (!obsDim || !actionDim)
    throw new ResrtError('the learner needs the observation and action widths', 'pass --base BASE.onnx');
  const O = obsDim;
  const A = actionDim;
  const engine = await initEngine({ device: options.device ?? 'auto' });
  const chosen =
    options.profile && options.profile !== 'auto'
      ? { name: options.profile, why: 'chosen' }
      : profileFor(engine);
  // A session computes camera features from the base's embedding only (camera-ingest.ts); a profile
  // whose own default is another mode gets base-embedding here, and an explicit other mode is refused.
  const asked = options.config?.encoder;
  if (asked !== undefined && !SESSION_ENCODERS.includes(asked)) {
    throw new ResrtError(
      `encoder ${asked}: a learner session serves ${SESSION_ENCODERS.join(' and ')} only`,
      "pass --encoder base-embedding (the base's own embedding) or --encoder none, or train offline with `resrt train --encoder " +
        asked +
        '`',
    );
  }
  const profileConfig = makeConfig(chosen.name);
  const cfg = makeConfig(chosen.name, {
    ...(SESSION_ENCODERS.includes(profileConfig.encoder) ? {} : { encoder: 'base-embedding' }),
    ...options.config,
  });
  // A base with an embedding and encoder base-embedding: the residual learns on [features | state].
  const cameraIngest =
    base && base.embeddingDim > 0 && cfg.encoder === 'base-embedding' ? new CameraIngest(base, log) : null;
  if (!cameraIngest) await base?.close();
  const E = cameraIngest?.featureDim ?? 0;
  const W = E + O;
  if (E) log(`learner: camera session, ${E} base-embedding features per observation`);
  log(`learner: ${engine.description}, profile ${chosen.name}`);
  const seed = options.seed ?? 0;
  const demos = new ReplayBuffer(options.demoCapacity ?? 50_000, W, A);
  const learner = await ResidualLearner.create(engine, cfg, { obsDim: W, actionDim: A }, seed, demos);
  const meta = {
    session,
    obsDim: O,
    actionDim: A,
    config: cfg,
    rewardMode: options.rewardMode ?? 'task',
    ...(E ? { featureDim: E } : {}),
  };

  let state: ServiceState = { replayed: {}, ingested: 0, version: 0 };
  if (options.resume) {
    const ck = readCheckpoint(outDir);
    if (ck) {
      if (JSON.stringify(ck.meta) !== JSON.stringify(meta)) {
        throw new ResrtError(
          `the checkpoint in ${outDir} was written for ${JSON.stringify(ck.meta).slice(0, 200)}`,
          'resume with the same session, base, config and reward mode, or use a new --out',
        );
      }
      learner.setState(ck.learner, outDir);
      learner.replay.online.restoreFrom(ck.online);
      if (ck.demos) demos.restoreFrom(ck.demos);
      state = ck.trainer as ServiceState;
    }
  }
  const publisher = new ResidualPublisher(outDir, log);
  // Versions published after the last checkpoint were seen by actors: never reuse them.
  state.version = Math.max(state.version, publisher.publishedVersion());

  // -- the log, replayed ---------------------------------------------------------------------------
  const sequencer = new Sequencer();
  const intake = new EpisodeIntake({
    learner,
    demos,
    cameraIngest,
    progress: state,
    width: W,
    actionDim: A,
    rewardMode: options.rewardMode ?? 'task',
  });
  let logged = 0;
  const walDir = join(outDir, 'wal');
  const walLog = TransitionWal.open(
    walDir,
    {
      transitions(b) {
        sequencer.restore(b.robotId, b.firstSeq + b.transitions.length - 1);
        logged += b.transitions.length;
        intake.take(b, true);
      },
      episode: (e) => intake.restoreEpisode(e),
    },
    { segmentBytes: Math.round((options.walSegmentMiB ?? 32) * 2 ** 20) },
  );
  intake.wal = walLog;
  if (options.resume)
    log(
      `resumed: ${logged} transitions in the log, ${state.ingested} in the replay, ${learner.updates} updates`,
    );

  // -- the broker and the link ----------------------------------------------------------------------
  const { url: brokerUrl, broker } = await openSessionBroker(options.brokerUrl, options.brokerPort, log);
  const incarnation = randomBytes(6).toString('hex');
  const statusOf = (online: boolean): LearnerStatus => ({
    online,
    learner: incarnation,
    version: state.version,
    updates: learner.updates,
    ingested: state.ingested,
    warmup: state.ingested < cfg.learningStarts,
    explorationStd: cfg.explorationStd,
    warmupNoise: cfg.warmupNoise,
    actionScale: cfg.actionScale,
    storageStopped: walStorage.stopped,
  });
  const walStorage = new WalStorage(walLog, {
    dir: walDir,
    limitBytes: (options.walLimitMiB ?? 65536) * 2 ** 20,
    minFreeBytes: (options.minFreeMiB ?? 1024) * 2 ** 20,
    log,
    // Actors show the learner's reason next to their own spool.
    onChange: () => link.publishStatus(),
  });
  let closed = false;
  let rejected = 0;
  let lastPolicy: Buffer | null = null;
  const ack = (robotId: string): void => link.ack(robotId, sequencer.watermark(robotId));

  const onBatch = (robotId: string, payload: Buffer): void => {
    // After close() began nothing is logged or acknowledged: the actors keep it spooled.
    if (closed) return;
    let batch: TransitionBatch;
    let ackedSeq: number;
    try {
      ({ batch, ackedSeq } = decodeEnvelope(new Uint8Array(payload)));
      if (batch.robotId !== robotId || batch.obsDim !== O || batch.actionDim !== A)
        throw new Error(`robot ${batch.robotId} obs/action ${batch.obsDim}/${batch.actionDim}`);
      cameraIngest?.check(batch);
    } catch (err) {
      rejected++;
      log(`rejected a batch on ${robotId}: ${(err as Error).message.split('\n')[0]}`);
      return;
    }
    // At the log's limit or on a disk without room: not logged, not acknowledged, sent again.
    if (walStorage.refuses()) return;
    const skipped = sequencer.adopt(robotId, ackedSeq);
    if (skipped > 0)
      log(
        `${robotId}: ${skipped} transitions acknowledged by an earlier learner are not in this log; going on after them`,
      );
    const fresh = sequencer.accept(robotId, batch.transitions);
    if (fresh.length) {
      const accepted: TransitionBatch = { ...batch, firstSeq: fresh[0].seq, transitions: fresh };
      // Durable before acknowledged: the actor deletes what we acknowledge.
      if (!walStorage.append(accepted)) {
        // Unacknowledged, the batch stays in the actor's spool and comes again.
        sequencer.rewind(robotId, fresh[0].seq);
        return;
      }
      logged += fresh.length;
      intake.take(accepted, false);
    }
    ack(robotId);
  };

  // -- training, publishing, checkpoints ------------------------------------------------------------
  const publish = (): void => {
    const message = publisher.publish(
      {
        layers: learner.actorLayers(),
        obsDim: W,
        featureDim: E,
        actionDim: A,
        actionScale: cfg.actionScale,
        useBase: cfg.useBase,
        obsMean: learner.obsMean,
        obsStd: learner.obsStd,
        version: state.version + 1,
      },
      { obsDim: O, actionDim: A, actionScale: cfg.actionScale, updates: learner.updates },
    );
    pump.published();
    if (!message) return;
    state.version++;
    lastPolicy = message;
    link.publishPolicy(message);
  };

  const pump = new TrainingPump({
    learner,
    cfg,
    allowed: () =>
      state.ingested === 0 || state.ingested < cfg.learningStarts
        ? 0
        : cfg.criticWarmupSteps + (state.ingested - cfg.learningStarts) * cfg.utd,
    publishEvery: options.publishEvery ?? 50,
    checkpointEverySec: options.checkpointEverySec ?? 60,
    publish,
    checkpoint: () => {
      walLog.sync();
      writeCheckpoint(outDir, {
        learner: learner.getState(),
        online: learner.replay.online,
        demos,
        trainer: state,
        meta,
      });
    },
    publishStatus: () => link.publishStatus(),
    log,
  });

  const link = new LearnerLink({
    session,
    brokerUrl,
    username: options.username,
    password: options.password,
    incarnation,
    status: statusOf,
    onConnect: () => {
      for (const id of sequencer.robots()) ack(id);
      // Retained messages die with an in-memory broker: say the current residual again.
      if (lastPolicy) link.publishPolicy(lastPolicy);
      else if (state.version > 0) publish();
    },
    onBatch,
  });
  pump.start();

  const snapshot = (): LearnerSnapshot => {
    const watermarks: Record<string, number> = {};
    for (const id of sequencer.robots()) watermarks[id] = sequencer.watermark(id);
    return {
      online: !closed,
      version: state.version,
      updates: learner.updates,
      updatesPerSec: pump.rate,
      logged,
      ingested: state.ingested,
      duplicates: sequencer.duplicates,
      episodes: intake.totalEpisodes,
      successRate: intake.curve.recentRate(),
      interventionRate: logged ? intake.interventionSteps / logged : null,
      heldBackSteps: intake.heldBackSteps,
      mixingShare: intake.mixingShare,
      labels: intake.labels,
      labelledSuccesses: intake.labelledSuccesses,
      demoTransitions: demos.size,
      warmup: state.ingested < cfg.learningStarts,
      watermarks,
      trainingError: pump.trainingError,
      last: pump.last,
      storage: walStorage.status(),
      camera: cameraIngest
        ? {
            featureDim: E,
            missingSteps: cameraIngest.missingSteps,
            failedEpisodes: cameraIngest.failedEpisodes,
          }
        : null,
    };
  };

  const command = (robotId: string, c: ControlCommand): boolean => {
    const ids = robotId === '' ? [...new Set([...link.actors.keys(), ...sequencer.robots()])] : [robotId];
    link.command(ids, c);
    return ids.length > 0;
  };

  let closing: Promise<void> | null = null;
  let dashboard: Dashboard | null = null;
  if (options.dashboardPort !== undefined) {
    dashboard = await startDashboard({
      title: `resrt learner (${session})`,
      port: options.dashboardPort,
      host: options.host,
      token: options.token,
      snapshot: () => ({
        role: 'learner',
        actionDim: A,
        learner: snapshot(),
        robots: Object.fromEntries(link.actors),
        ...intake.curve.snapshot(),
        rejected,
      }),
      frame: (robotId, camera) => link.latestFrames.get(robotId, camera),
      command,
      teleop: (robotId, action) => {
        if (!robotId) return false;
        link.teleop(robotId, action);
        return true;
      },
    });
    log(`dashboard: ${dashboard.url}`);
  }

  return {
    brokerUrl,
    dashboardUrl: dashboard?.url ?? null,
    session,
    snapshot,
    episodes: () => intake.episodes,
    command,
    checkpoint: () => pump.checkpoint(),
    close() {
      closing ??= shutdown();
      return closing;
    },
  };

  async function shutdown(): Promise<void> {
    closed = true;
    await pump.stop();
    await cameraIngest?.close();
    await dashboard?.close();
    dashboard = null;
    await link.disconnect();
    try {
      pump.checkpointNow();
    } catch (err) {
      // Nothing is lost: the previous checkpoint stays whole and --resume replays the log after it.
      log(
        `checkpoint at stop failed (${(err as Error).message.split('\n')[0]}); ` +
          'the last checkpoint and the write-ahead log are kept: --resume continues from them',
      );
    }
    await walLog.close();
    await learner.dispose();
    await broker?.close();
  }
}
