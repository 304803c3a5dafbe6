/**
 * From batches as they arrive (duplicated, reordered, after reconnects and restarts) to the
 * learner's input: per robot, transitions are accepted strictly in sequence-number order exactly
 * once, and handed on as whole episodes so the replay's n-step sums never mix two robots.
 */
import type { SessionTransition } from '../../runtime/session/codec.js';

/** Per-robot exactly-once, in-order acceptance keyed by (robotId, seq). */
export class Sequencer {
  private readonly next = new Map<string, number>();
  private readonly early = new Map<string, Map<number, SessionTransition>>();
  duplicates = 0;

  /** The highest seq accepted for a robot (everything up to it is accepted), −1 for none. */
  watermark(robotId: string): number {
    return (this.next.get(robotId) ?? 0) - 1;
  }

  robots(): string[] {
    return [...this.next.keys()];
  }

  /** Marks everything up to `seq` as accepted (what the WAL already holds). */
  restore(robotId: string, seq: number): void {
    this.next.set(robotId, Math.max(this.next.get(robotId) ?? 0, seq + 1));
  }

  /**
   * The actor says everything up to `ackedSeq` was acknowledged (by this learner or an earlier
   * one). For a robot this learner has never logged, numbering starts after it; for a known robot
   * whose acknowledged seq is ahead of this log (a learner restored from an older copy, another
   * learner's folder), the gap can never be filled and is skipped. Returns how many seqs were
   * skipped that way.
   */
  adopt(robotId: string, ackedSeq: number): number {
    const known = this.next.get(robotId);
    if (known === undefined) {
      this.next.set(robotId, ackedSeq + 1);
      return 0;
    }
    if (ackedSeq + 1 <= known) return 0;
    this.next.set(robotId, ackedSeq + 1);
    const early = this.early.get(robotId);
    if (early) for (const seq of [...early.keys()]) if (seq <= ackedSeq) early.delete(seq);
    return ackedSeq + 1 - known;
  }

  /** Takes back acceptance from `seq` on (they could not be logged); the actor resends them. */
  rewind(robotId: string, seq: number): void {
    const next = this.next.get(robotId);
    if (next !== undefined && seq < next) this.next.set(robotId, seq);
  }

  /** Returns the transitions that are new and now contiguous, in order. */
  accept(robotId: string, transitions: readonly SessionTransition[]): SessionTransition[] {
    let next = this.next.get(robotId) ?? 0;
    let early = this.early.get(robotId);
    if (!early) this.early.set(robotId, (early = new Map()));
    for (const t of transitions) {
      if (t.seq < next || early.has(t.seq)) this.duplicates++;
      else early.set(t.seq, t);
    }
    const out: SessionTransition[] = [];
    for (let t = early.get(next); t !== undefined; t = early.get(next)) {
      out.push(t);
      early.delete(next);
      next++;
    }
    // A gap waits for the actor's resend; bound what waits so a broken actor cannot grow it forever.
    if (early.size > 100_000) early.clear();
    this.next.set(robotId, next);
    return out;
  }
}

/** Collects each robot's running episode until its last step. */
export class EpisodeAssembler {
  private readonly running = new Map<string, SessionTransition[]>();

  /** Adds one transition; returns the episodes it finished (usually none or one). */
  add(t: SessionTransition): SessionTransition[][] {
    const done: SessionTransition[][] = [];
    let ep = this.running.get(t.robotId) ?? [];
    // A new episode number without an end flag means the actor restarted mid-episode: the cut
    // part still counts, ended as truncated.
    if (ep.length && ep[ep.length - 1].episode !== t.episode) {
      ep[ep.length - 1] = { ...ep[ep.length - 1], truncated: true };
      done.push(ep);
      ep = [];
    }
    ep.push(t);
    if (t.terminated || t.truncated) {
      done.push(ep);
      ep = [];
    }
    this.running.set(t.robotId, ep);
    return done;
  }

  /** Transitions waiting for their episode to end. */
  get waiting(): number {
    let n = 0;
    for (const ep of this.running.values()) n += ep.length;
    return n;
  }
}

export type RewardMode = 'task' | 'rlif';

/**
 * The rewards the learner trains on for one whole episode. 'task': the actor's rewards. 'rlif'
 * (RLIF): −1 on each step where a person takes over (an intervention that was not running on the
 * step before), 0 everywhere else, whatever the task reward said.
 */
export function episodeRewards(ep: readonly SessionTransition[], mode: RewardMode): Float32Array {
  const out = new Float32Array(ep.length);
  for (let i = 0; i < ep.length; i++) {
    if (mode === 'task') out[i] = ep[i].reward;
    else out[i] = ep[i].intervention && !(i > 0 && ep[i - 1].intervention) ? -1 : 0;
  }
  return out;
}

/**
 * Intervention steps as demonstrations (HIL-SERL): each one is its own 1-step fragment (ended as
 * truncated unless it terminated), so n-step sums never run from a person's step into the policy's.
 */
export function interventionDemos<T extends SessionTransition>(ep: readonly T[], rewards: Float32Array): T[] {
  const out: T[] = [];
  ep.forEach((t, i) => {
    if (t.intervention) out.push({ ...t, reward: rewards[i], truncated: !t.terminated });
  });
  return out;
}
