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
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { lockRunFolder } from '../../util/run-lock.js';
import { ResrtError } from '../../util/errors.js';
import { writeFileAtomic } from '../../util/files.js';
import { initEngine, type DevicePreference } from '../../nn/index.js';
import { makeConfig, profileFor, type ProfileName, type ResidualConfig } from '../config.js';
import { ReplayBuffer, packSteps } from '../replay.js';
import { ResidualLearner, type UpdateStats } from '../td3.js';
import { readCheckpoint, writeCheckpoint, hasCheckpoint } from '../checkpoint.js';
import { exportResidualOnnx, residualPolicySpec } from '../export.js';
import { OnnxPolicy } from '../../runtime/onnx-policy.js';
import { startEmbeddedBroker, type RunningBroker } from '../../hw/mqtt/broker.js';
import { decodeEnvelope, type SessionTransition, type TransitionBatch } from '../../runtime/session/codec.js';
import {
  encodePolicyMessage,
  lastLevel,
  parseJson,
  sessionTopics,
  type ActorStatus,
  type ControlCommand,
  type LearnerStatus,
} from '../../runtime/session/protocol.js';
import { z } from 'zod';
import { EpisodeCurve } from '../../runtime/dashboard/episode-curve.js';
import { startDashboard, type Dashboard } from '../../runtime/dashboard/server.js';
import { EpisodeAssembler, Sequencer, episodeRewards, interventionDemos } from './ingest.js';
import { TransitionWal, type EpisodeRecord } from './wal.js';
import { WalStorage } from './wal-storage.js';
import { CameraIngest, LatestFrames } from './camera-ingest.js';

export interface LearnerServiceOptions {
  /** Checkpoints, the write-ahead log and the exported residual go here. */
  outDir: string;
  /** Continue the session in outDir (after a crash, kill -9 or a planned stop). */
  resume?: boolean;
  /** The session's broker; none: start the embedded broker on loopback (`brokerPort`). */
  brokerUrl?: string;
  /** Port of the embedded broker. Default 1883; 0 picks a free one. */
  brokerPort?: number;
  username?: string;
  password?: string;
  /** Topic namespace shared with the actors. Default 'default'. */
  session?: string;
  /** The base ONNX (for its observation/action widths); or give obsDim and actionDim. */
  base?: string;
  obsDim?: number;
  actionDim?: number;
  profile?: ProfileName | 'auto';
  config?: Partial<ResidualConfig>;
  /** Publish the residual every this many actor updates. Default 50. */
  publishEvery?: number;
  /** Checkpoint at most this often (and at close). Default 60 s. */
  checkpointEverySec?: number;
  /** 'task': the actors' rewards; 'rlif': −1 on the step a person intervenes, else 0. */
  rewardMode?: 'task' | 'rlif';
  /** Capacity of the intervention (demonstration) replay. Default 50 000. */
  demoCapacity?: number;
  /**
   * The write-ahead log (the session's dataset) may take this many MiB on disk, compacted segments
   * counted as stored. At the limit nothing more is logged or acknowledged: the actors keep their
   * transitions spooled and stop at their spool limits. Default 65536 (64 GiB).
   */
  walLimitMiB?: number;
  /**
   * Nothing is logged while the disk holding outDir has less than this many MiB free: the room
   * checkpoints and compaction need. Default 1024.
   */
  minFreeMiB?: number;
  /** Log segments are sealed and compacted at this size. Default 32. */
  walSegmentMiB?: number;
  seed?: number;
  /** Where the learner computes: 'auto' (CUDA when installed and working, else CPU), 'cpu', 'cuda'. */
  device?: DevicePreference;
  dashboardPort?: number;
  host?: string;
  token?: string;
  log?: (line: string) => void;
}

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

interface ServiceState {
  /** Last seq per robot whose episode is in the replay (checkpointed with it). */
  replayed: Record<string, number>;
  ingested: number;
  version: number;
}

const actorStatusSchema = z.object({ robotId: z.string(), online: z.boolean() }).passthrough();

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
  const topics = sessionTopics(session);
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
  const cfg = makeConfig(chosen.name, options.config);
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
  const lineageFile = join(outDir, 'lineage.json');
  if (!existsSync(lineageFile))
    writeFileAtomic(lineageFile, JSON.stringify({ lineage: randomBytes(8).toString('hex') }));
  const lineage = (JSON.parse(readFileSync(lineageFile, 'utf8')) as { lineage: string }).lineage;
  const versionFile = join(outDir, 'published.json');
  if (existsSync(versionFile)) {
    // Versions published after the last checkpoint were seen by actors: never reuse them.
    const v = (JSON.parse(readFileSync(versionFile, 'utf8')) as { version: number }).version;
    state.version = Math.max(state.version, v);
  }

  // -- the log, replayed ---------------------------------------------------------------------------
  const sequencer = new Sequencer();
  const assembler = new EpisodeAssembler();
  const episodes: EpisodeRecord[] = [];
  const lastEpisodeSeq = new Map<string, number>();
  let logged = 0;
  let labels = 0;
  let labelledSuccesses = 0;
  let interventionSteps = 0;
  let heldBackSteps = 0;
  let mixingShare: number | null = null;
  const mixingShares = new Map<string, number>();
  const curve = new EpisodeCurve();
  const rewardMode = options.rewardMode ?? 'task';

  let totalEpisodes = 0;
  const countEpisode = (e: EpisodeRecord): void => {
    totalEpisodes++;
    episodes.push(e);
    if (episodes.length > 2000) episodes.shift();
    if (e.labelled) {
      labels++;
      if (e.success) labelledSuccesses++;
    }
    curve.add(e);
  };

  let wal: TransitionWal | null = null;
  const finishEpisode = (ep: SessionTransition[], replaying: boolean): void => {
    const robotId = ep[0].robotId;
    const last = ep[ep.length - 1];
    const alreadyReplayed = last.seq <= (state.replayed[robotId] ?? -1);
    // A mixing actor's share weighs the held-back term (td3.ts). With several robots the least
    // trusting one counts: held-back rows are where a mixer did not yet let the residual act.
    // Set from the log too, so a resume has it.
    if (last.mixingShare !== undefined) {
      mixingShares.set(robotId, last.mixingShare);
      learner.mixingShare = mixingShare = Math.min(...mixingShares.values());
    }
    if (!alreadyReplayed) {
      const rewards = episodeRewards(ep, rewardMode);
      const steps = ep.map((t, i) => ({ ...t, reward: rewards[i] }));
      // Replayed and its watermark moved together, so a checkpoint never holds half of it.
      const intoReplay = (rows: SessionTransition[] | null): void => {
        if (rows) {
          learner.replay.online.addBatch(packSteps(rows, W, A));
          const demoSteps = interventionDemos(rows, rewards);
          if (demoSteps.length) demos.addBatch(packSteps(demoSteps, W, A));
          state.ingested += ep.length;
        }
        state.replayed[robotId] = last.seq;
      };
      if (cameraIngest) cameraIngest.enqueue(steps, intoReplay);
      else intoReplay(steps);
    }
    const record: EpisodeRecord = {
      robotId,
      episode: last.episode,
      lastSeq: last.seq,
      steps: ep.length,
      ret: ep.reduce((s, t) => s + t.reward, 0),
      success: last.success,
      labelled: last.labelled,
      interventions: ep.filter((t) => t.intervention).length,
      safetyEvents: ep.reduce((s, t) => s + t.safetyEvents, 0),
      policyVersion: last.policyVersion,
    };
    if (last.seq > (lastEpisodeSeq.get(robotId) ?? -1)) {
      lastEpisodeSeq.set(robotId, last.seq);
      if (!replaying) {
        try {
          wal?.appendEpisode(record);
        } catch {
          // Rebuilt from its transitions on resume; the transitions' own write reports the disk.
        }
      }
      countEpisode(record);
    }
  };

  const take = (batch: TransitionBatch, replaying: boolean): void => {
    for (const t of batch.transitions) {
      if (t.intervention) interventionSteps++;
      if (t.heldBack) heldBackSteps++;
      for (const ep of assembler.add(t)) finishEpisode(ep, replaying);
    }
  };

  const walDir = join(outDir, 'wal');
  const walLog = TransitionWal.open(
    walDir,
    {
      transitions(b) {
        sequencer.restore(b.robotId, b.firstSeq + b.transitions.length - 1);
        logged += b.transitions.length;
        take(b, true);
      },
      episode(e) {
        lastEpisodeSeq.set(e.robotId, Math.max(lastEpisodeSeq.get(e.robotId) ?? -1, e.lastSeq));
        countEpisode(e);
      },
    },
    { segmentBytes: Math.round((options.walSegmentMiB ?? 32) * 2 ** 20) },
  );
  wal = walLog;
  if (options.resume)
    log(
      `resumed: ${logged} transitions in the log, ${state.ingested} in the replay, ${learner.updates} updates`,
    );

  // -- the broker and the link ----------------------------------------------------------------------
  let broker: RunningBroker | null = null;
  let brokerUrl = options.brokerUrl;
  if (!brokerUrl) {
    broker = await startEmbeddedBroker({ port: options.brokerPort ?? 1883, host: '127.0.0.1' });
    brokerUrl = broker.url;
    log(`embedded MQTT broker on ${brokerUrl}`);
  }
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
    onChange: () => {
      if (client.connected)
        client.publish(topics.learnerStatus, JSON.stringify(statusOf(true)), { qos: 1, retain: true });
    },
  });
  const client: MqttClient = mqtt.connect(brokerUrl, {
    clientId: `resrt-learner-${session}-${incarnation}`,
    clean: true,
    reconnectPeriod: 500,
    username: options.username,
    password: options.password,
    will: {
      topic: topics.learnerStatus,
      payload: Buffer.from(JSON.stringify(statusOf(false))),
      qos: 1,
      retain: true,
    },
  });
  client.on('error', () => {});
  const actors = new Map<string, ActorStatus>();
  const latestFrames = new LatestFrames(topics.frameWildcard.slice(0, -3));
  let rejected = 0;

  const ack = (robotId: string): void => {
    client.publish(
      topics.ack(robotId),
      JSON.stringify({ seq: sequencer.watermark(robotId), learner: incarnation }),
      {
        qos: 1,
        retain: true,
      },
    );
  };

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
      take(accepted, false);
    }
    ack(robotId);
  };

  let lastPolicy: Buffer | null = null;
  client.on('connect', () => {
    client.subscribe({
      [topics.transitionsWildcard]: { qos: 1 },
      [topics.actorStatusWildcard]: { qos: 1 },
      [topics.frameWildcard]: { qos: 0 },
    });
    client.publish(topics.learnerStatus, JSON.stringify(statusOf(true)), { qos: 1, retain: true });
    for (const id of sequencer.robots()) ack(id);
    // Retained messages die with an in-memory broker: say the current residual again.
    if (lastPolicy) client.publish(topics.policy, lastPolicy, { qos: 1, retain: true });
    else if (state.version > 0) publish();
  });
  client.on('message', (topic, payload) => {
    if (latestFrames.offer(topic, payload)) return;
    const robotId = lastLevel(topic);
    if (topic === topics.transitions(robotId)) onBatch(robotId, payload);
    else if (topic === topics.actorStatus(robotId)) {
      const s = parseJson(actorStatusSchema, payload);
      if (s) actors.set(robotId, s as unknown as ActorStatus);
    }
  });

  // -- training, publishing, checkpoints ------------------------------------------------------------
  let lastPublishedActor = learner.actorUpdates;
  let last: UpdateStats | null = null;
  let rate = 0;
  let window = { t: performance.now(), updates: learner.updates };
  let lastCheckpointAt = performance.now();
  let closed = false;
  let trainingError: string | null = null;

  const publish = (): void => {
    const spec = residualPolicySpec({
      layers: learner.actorLayers(),
      obsDim: W,
      featureDim: E,
      actionDim: A,
      actionScale: cfg.actionScale,
      useBase: cfg.useBase,
      obsMean: learner.obsMean,
      obsStd: learner.obsStd,
      version: state.version + 1,
    });
    let onnx: Uint8Array;
    try {
      onnx = exportResidualOnnx(spec, join(outDir, 'residual.onnx'));
      // On disk before any actor sees it, so a restart never reuses the number.
      writeFileAtomic(versionFile, JSON.stringify({ version: state.version + 1 }));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === undefined) throw err;
      // A disk that refuses the files (full): this one is not published, training goes on.
      lastPublishedActor = learner.actorUpdates;
      log(
        `publishing residual v${state.version + 1} failed (${(err as Error).message.split('\n')[0]}); ` +
          `the next publish tries again. Free disk space in ${outDir}`,
      );
      return;
    }
    state.version++;
    const msg = encodePolicyMessage(
      {
        lineage,
        version: state.version,
        obsDim: O,
        actionDim: A,
        actionScale: cfg.actionScale,
        updates: learner.updates,
        createdAt: new Date().toISOString(),
      },
      onnx,
    );
    lastPolicy = Buffer.from(msg);
    client.publish(topics.policy, lastPolicy, { qos: 1, retain: true });
    lastPublishedActor = learner.actorUpdates;
  };

  const checkpoint = (): void => {
    wal?.sync();
    writeCheckpoint(outDir, {
      learner: learner.getState(),
      online: learner.replay.online,
      demos,
      trainer: state,
      meta,
    });
    lastCheckpointAt = performance.now();
  };

  const allowed = (): number =>
    state.ingested === 0 || state.ingested < cfg.learningStarts
      ? 0
      : cfg.criticWarmupSteps + (state.ingested - cfg.learningStarts) * cfg.utd;

  let cancelPump: (() => void) | null = null;
  /** The slice of updates running now: checkpoints and shutdown wait for it, never cut into it. */
  let slice: Promise<void> | null = null;
  /** Soon: after pending I/O (setImmediate, no setTimeout ≥ 1 ms floor); otherwise in 20 ms. */
  const schedulePump = (soon: boolean): void => {
    if (soon) {
      const immediate = setImmediate(pump);
      cancelPump = () => clearImmediate(immediate);
    } else {
      const timeout = setTimeout(pump, 20);
      cancelPump = () => clearTimeout(timeout);
    }
  };
  const pump = (): void => {
    cancelPump = null;
    if (closed) return;
    slice = runSlice().finally(() => (slice = null));
  };
  const runSlice = async (): Promise<void> => {
    const t0 = performance.now();
    const target = allowed();
    try {
      // Slices of ~5 ms keep MQTT, acknowledgements and the dashboard responsive between updates,
      // and actors sharing this process (one-laptop sessions, tests) on time: with 25 ms slices two
      // 50 Hz actors missed their periods, their robots held commands for uneven times, and a
      // fleet that otherwise learned the puck task to 100% ended at 39–73%. An update longer than
      // the slice (2×256 networks) still runs whole, so large learners lose nothing.
      while (!closed && learner.updates < target && performance.now() - t0 < 5) {
        if (cfg.normalizeObs && !learner.obsMean) {
          const { mean, std } = learner.computeObsNormalization();
          learner.setObsNormalization(mean, std);
        }
        last = await learner.update();
        if (learner.actorUpdates - lastPublishedActor >= (options.publishEvery ?? 50)) publish();
      }
    } catch (err) {
      // Training stops (a diverged learner keeps its last checkpoint); logging and acknowledging
      // go on, so the actors lose nothing while a person looks at it.
      trainingError = (err as Error).message.split('\n')[0];
      log(`training stopped: ${(err as Error).message}`);
      return;
    }
    if (closed) return;
    const now = performance.now();
    if (now - window.t >= 1000) {
      rate = ((learner.updates - window.updates) * 1000) / (now - window.t);
      window = { t: now, updates: learner.updates };
      if (client.connected)
        client.publish(topics.learnerStatus, JSON.stringify(statusOf(true)), { qos: 1, retain: true });
    }
    if (now - lastCheckpointAt >= (options.checkpointEverySec ?? 60) * 1000) {
      try {
        checkpoint();
      } catch (err) {
        // The previous checkpoint stays whole (written atomically) and the log holds everything
        // since: try again at the next interval.
        lastCheckpointAt = now;
        log(`checkpoint failed: ${(err as Error).message.split('\n')[0]}; the last one and the log are kept`);
      }
    }
    schedulePump(learner.updates < allowed());
  };
  schedulePump(true);

  const snapshot = (): LearnerSnapshot => {
    const watermarks: Record<string, number> = {};
    for (const id of sequencer.robots()) watermarks[id] = sequencer.watermark(id);
    return {
      online: !closed,
      version: state.version,
      updates: learner.updates,
      updatesPerSec: rate,
      logged,
      ingested: state.ingested,
      duplicates: sequencer.duplicates,
      episodes: totalEpisodes,
      successRate: curve.recentRate(),
      interventionRate: logged ? interventionSteps / logged : null,
      heldBackSteps,
      mixingShare,
      labels,
      labelledSuccesses,
      demoTransitions: demos.size,
      warmup: state.ingested < cfg.learningStarts,
      watermarks,
      trainingError,
      last,
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
    const ids = robotId === '' ? [...new Set([...actors.keys(), ...sequencer.robots()])] : [robotId];
    for (const id of ids) client.publish(topics.control(id), JSON.stringify(c), { qos: 1 });
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
        robots: Object.fromEntries(actors),
        ...curve.snapshot(),
        rejected,
      }),
      frame: (robotId, camera) => latestFrames.get(robotId, camera),
      command,
      teleop: (robotId, action) => {
        if (!robotId) return false;
        client.publish(topics.teleop(robotId), JSON.stringify({ action }), { qos: 0 });
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
    episodes: () => episodes,
    command,
    async checkpoint() {
      await slice;
      checkpoint();
    },
    close() {
      closing ??= shutdown();
      return closing;
    },
  };

  async function shutdown(): Promise<void> {
    closed = true;
    cancelPump?.();
    cancelPump = null;
    await slice;
    await cameraIngest?.close();
    await dashboard?.close();
    dashboard = null;
    if (client.connected) {
      await new Promise<void>((resolve) =>
        client.publish(topics.learnerStatus, JSON.stringify(statusOf(false)), { qos: 1, retain: true }, () =>
          resolve(),
        ),
      );
    }
    await new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
    try {
      checkpoint();
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

function checkServiceOptions(o: LearnerServiceOptions): void {
  const bad = (what: string, fix: string): never => {
    throw new ResrtError(`learner: ${what}`, fix);
  };
  if (o.publishEvery !== undefined && !(Number.isInteger(o.publishEvery) && o.publishEvery > 0))
    bad(`publishEvery = ${o.publishEvery}`, 'publish every N actor updates, N a positive integer (e.g. 50)');
  if (o.checkpointEverySec !== undefined && !(o.checkpointEverySec > 0))
    bad(`checkpointEverySec = ${o.checkpointEverySec}`, 'give a positive number of seconds (e.g. 60)');
  if (o.rewardMode !== undefined && o.rewardMode !== 'task' && o.rewardMode !== 'rlif')
    bad(`rewardMode = ${String(o.rewardMode)}`, "use 'task' or 'rlif'");
  for (const [key, value, min, fix] of [
    [
      'walLimitMiB',
      o.walLimitMiB,
      1 / 1024,
      'give the MiB the write-ahead log may take on disk (default 65536)',
    ],
    [
      'minFreeMiB',
      o.minFreeMiB,
      0,
      'give the MiB to keep free on the disk of --out (default 1024; 0 for none)',
    ],
    ['walSegmentMiB', o.walSegmentMiB, 1 / 1024, 'give a segment size in MiB (default 32)'],
  ] as const)
    if (value !== undefined && !(Number.isFinite(value) && value >= min)) bad(`${key} = ${value}`, fix);
  if (o.demoCapacity !== undefined && !(Number.isInteger(o.demoCapacity) && o.demoCapacity > 0))
    bad(`demoCapacity = ${o.demoCapacity}`, 'give a positive whole number of transitions');
  if (
    o.brokerPort !== undefined &&
    !(Number.isInteger(o.brokerPort) && o.brokerPort >= 0 && o.brokerPort < 65536)
  )
    bad(`brokerPort = ${o.brokerPort}`, 'use a TCP port in 0..65535 (0 picks a free one)');
}
