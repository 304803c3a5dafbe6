/**
 * Conservative mixing on an actor (docs/safety.md): the mixer plans each episode, and learns its
 * outcome only once that outcome's line is in stateDir/mixing.jsonl, so a restarted actor replays
 * the log and plans exactly as it would have.
 */
import {
  makeMixer,
  mixingEpisode,
  replayMixer,
  type MixingEpisode,
  type MixingSpec,
} from '../../residual/mixing-run.js';
import type { ConservativeMixer, EpisodePlan } from '../../safety/mixing.js';
import { wilsonInterval } from '../../util/stats.js';
import { MixingLog } from './mixing-log.js';

export interface ActorMixingOptions {
  stateDir: string;
  /** The env's episode length. */
  horizon: number;
  seed: number;
  log: (line: string) => void;
  /** Runs a write into the state folder; false when the disk refused it (ActorStorage.attempt). */
  attempt: (what: string, write: () => void) => boolean;
}

export class ActorMixing {
  /** The running episode's plan; null between episodes. */
  plan: EpisodePlan | null = null;
  /** A finished episode whose line the mixing log could not take yet (a full disk). */
  private unsaved: { record: MixingEpisode; success: boolean; plan: EpisodePlan } | null = null;

  private constructor(
    private readonly spec: MixingSpec,
    private readonly mixer: ConservativeMixer,
    private readonly mixingLog: MixingLog,
    private readonly attempt: ActorMixingOptions['attempt'],
  ) {}

  /** Opens the mixing log in stateDir and replays it into a fresh mixer. */
  static open(spec: MixingSpec, o: ActorMixingOptions): ActorMixing {
    const mixingLog = MixingLog.open(o.stateDir, spec);
    if (mixingLog.tornBytes > 0) o.log(`mixing: dropped a torn tail of ${mixingLog.tornBytes} bytes`);
    const mixer = makeMixer(spec, { horizon: o.horizon, seed: o.seed, initialEval: null });
    replayMixer(mixer, mixingLog.records);
    if (mixingLog.records.length) o.log(`mixing: resumed from ${mixingLog.records.length} episodes`);
    return new ActorMixing(spec, mixer, mixingLog, o.attempt);
  }

  beginEpisode(): EpisodePlan {
    this.plan = this.mixer.beginEpisode();
    return this.plan;
  }

  /**
   * The running episode ended. One cut by an e-stop or a stop counts with the outcome it had (a
   * failure, so far); one that never ran (`ran` false) is taken back. `envSteps`: every transition
   * this actor ever numbered, across restarts.
   */
  endEpisode(ran: boolean, success: boolean, envSteps: number, steps: number): void {
    const plan = this.plan;
    if (!plan) return;
    if (ran) {
      this.unsaved = { record: mixingEpisode(this.spec, plan, success, envSteps, steps), success, plan };
      this.saveOutcome();
    } else this.mixer.cancelEpisode(plan);
    this.plan = null;
  }

  /** Writes an outcome the disk refused before; called between episodes until it goes through. */
  saveOutcome(): void {
    const u = this.unsaved;
    if (!u) return;
    // The mixer learns the outcome only with its line on disk, so a restart plans as it would.
    if (!this.attempt('mixing log', () => this.mixingLog.append(u.record))) return;
    this.mixer.endEpisode(u.success, u.plan);
    this.unsaved = null;
  }

  /** The running episode's exploring share, or the share the next one would get. */
  get share(): number {
    return this.plan?.share ?? this.mixer.allowedShare().share;
  }

  /** An outcome is still waiting for the disk. */
  get hasUnsavedOutcome(): boolean {
    return this.unsaved !== null;
  }

  close(): void {
    this.mixingLog.close();
  }
}

/** The base's measured rate the mixer guards (--baseline), as an evaluation point to chart at episode 0. */
export function baselineEvaluation(
  spec: MixingSpec | undefined,
): { successRate: number; ciLow: number; ciHigh: number; label: string } | null {
  const baseline = spec?.baseline;
  if (!baseline || baseline === 'initial-eval') return null;
  const b = 'value' in baseline ? null : wilsonInterval(baseline.successes, baseline.trials);
  const rate = 'value' in baseline ? baseline.value : baseline.successes / baseline.trials;
  return { successRate: rate, ciLow: b?.low ?? rate, ciHigh: b?.high ?? rate, label: 'base (--baseline)' };
}
