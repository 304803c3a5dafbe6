/**
 * Logged transitions on their way into training: episodes are assembled per robot, counted for the
 * dashboard (returns, labels, interventions, held-back steps), recorded in the log once, and put
 * into the replay (intervention steps into the demonstration replay too) exactly once: an episode
 * already in a checkpointed replay is counted but not added again when the log is replayed.
 */
import type { SessionTransition, TransitionBatch } from '../../runtime/session/codec.js';
import { EpisodeCurve } from '../../runtime/dashboard/episode-curve.js';
import { packSteps, type ReplayBuffer } from '../replay.js';
import type { ResidualLearner } from '../td3.js';
import { EpisodeAssembler, episodeRewards, interventionDemos, type RewardMode } from './ingest.js';
import type { EpisodeRecord, TransitionWal } from './wal.js';
import type { CameraIngest } from './camera-ingest.js';

/** What the replay holds of the log; checkpointed with the replay. */
export interface ReplayProgress {
  /** Last seq per robot whose episode is in the replay. */
  replayed: Record<string, number>;
  /** Transitions in the replay. */
  ingested: number;
}

export interface EpisodeIntakeOptions {
  learner: ResidualLearner;
  demos: ReplayBuffer;
  /** A camera session turns episodes into [features | state] before the replay; null otherwise. */
  cameraIngest: CameraIngest | null;
  progress: ReplayProgress;
  /** The replay's observation width (features + state) and action width. */
  width: number;
  actionDim: number;
  rewardMode: RewardMode;
}

/** Recent episode records kept for episodes(). */
const KEPT_EPISODES = 2000;

export class EpisodeIntake {
  readonly curve = new EpisodeCurve();
  /** The latest KEPT_EPISODES episodes. */
  readonly episodes: EpisodeRecord[] = [];
  totalEpisodes = 0;
  labels = 0;
  labelledSuccesses = 0;
  interventionSteps = 0;
  heldBackSteps = 0;
  /** The lowest of the robots' latest mixed episodes' shares; null before one. */
  mixingShare: number | null = null;
  /** Where finished episodes' records are written (not while the log itself is replayed). */
  wal: TransitionWal | null = null;
  private readonly assembler = new EpisodeAssembler();
  private readonly lastEpisodeSeq = new Map<string, number>();
  private readonly mixingShares = new Map<string, number>();

  constructor(private readonly o: EpisodeIntakeOptions) {}

  /** Logged transitions (`replaying`: read back from the log at start). */
  take(batch: TransitionBatch, replaying: boolean): void {
    for (const t of batch.transitions) {
      if (t.intervention) this.interventionSteps++;
      if (t.heldBack) this.heldBackSteps++;
      for (const ep of this.assembler.add(t)) this.finishEpisode(ep, replaying);
    }
  }

  /** An episode record read back from the log. */
  restoreEpisode(e: EpisodeRecord): void {
    this.lastEpisodeSeq.set(e.robotId, Math.max(this.lastEpisodeSeq.get(e.robotId) ?? -1, e.lastSeq));
    this.count(e);
  }

  private count(e: EpisodeRecord): void {
    this.totalEpisodes++;
    this.episodes.push(e);
    if (this.episodes.length > KEPT_EPISODES) this.episodes.shift();
    if (e.labelled) {
      this.labels++;
      if (e.success) this.labelledSuccesses++;
    }
    this.curve.add(e);
  }

  private finishEpisode(ep: SessionTransition[], replaying: boolean): void {
    const { learner, demos, progress, width: W, actionDim: A } = this.o;
    const robotId = ep[0].robotId;
    const last = ep[ep.length - 1];
    const alreadyReplayed = last.seq <= (progress.replayed[robotId] ?? -1);
    // A mixing actor's share weighs the held-back term (td3.ts). With several robots the least
    // trusting one counts: held-back rows are where a mixer did not yet let the residual act.
    // Set from the log too, so a resume has it.
    if (last.mixingShare !== undefined) {
      this.mixingShares.set(robotId, last.mixingShare);
      learner.mixingShare = this.mixingShare = Math.min(...this.mixingShares.values());
    }
    if (!alreadyReplayed) {
      const rewards = episodeRewards(ep, this.o.rewardMode);
      const steps = ep.map((t, i) => ({ ...t, reward: rewards[i] }));
      // Replayed and its watermark moved together, so a checkpoint never holds half of it.
      const intoReplay = (rows: SessionTransition[] | null): void => {
        if (rows) {
          learner.replay.online.addBatch(packSteps(rows, W, A));
          const demoSteps = interventionDemos(rows, rewards);
          if (demoSteps.length) demos.addBatch(packSteps(demoSteps, W, A));
          progress.ingested += ep.length;
        }
        progress.replayed[robotId] = last.seq;
      };
      if (this.o.cameraIngest) this.o.cameraIngest.enqueue(steps, intoReplay);
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
    if (last.seq > (this.lastEpisodeSeq.get(robotId) ?? -1)) {
      this.lastEpisodeSeq.set(robotId, last.seq);
      if (!replaying) {
        try {
          this.wal?.appendEpisode(record);
        } catch {
          // Rebuilt from its transitions on resume; the transitions' own write reports the disk.
        }
      }
      this.count(record);
    }
  }
}
