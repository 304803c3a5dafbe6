/**
 * What an actor keeps on its robot computer's disk, and when that stops collection: transitions
 * are batched and appended (fsynced) to the spool, and an episode starts only while
 *   - every write into the state folder works (spool, episode counter, mixing log),
 *   - the disk there has at least `minFreeBytes` free (room for the OS and what else runs there),
 *   - the spool holds less than `spoolLimitBytes` the learner has not acknowledged.
 * Otherwise the actor waits between episodes (phase `disk-full` or `spool-full`), says why once with
 * the fix, and goes on by itself when the cause is gone: the disk has room again, the failed write
 * went through, or the learner acknowledged (which deletes spooled segments). A spool write that
 * fails mid-episode also ends that episode (with the safe action): transitions that cannot be kept
 * are not collected, and the unsaved batch waits in memory to be written first.
 */
import type { SessionTransition } from './codec.js';
import { Spool } from './spool.js';
import type { StorageStatus } from './protocol.js';
import { freeSpaceProbe, mib } from '../../util/disk.js';

export interface ActorStorageOptions {
  stateDir: string;
  robotId: string;
  obsDim: number;
  actionDim: number;
  /** Transitions per batch. */
  batchSize: number;
  /** A partial batch is written after this long. */
  flushMs: number;
  spoolLimitBytes: number;
  minFreeBytes: number;
  log: (line: string) => void;
  /** A batch is in the spool: publish it. */
  onSpooled: () => void;
  /** Why the learner logs nothing (from its status), for the spool-full message. */
  learnerStopped: () => string | null;
}

/** A failed write is tried again after this long (not at every tick of a full disk). */
const RETRY_MS = 1000;

type Hold = 'spool-full' | 'disk-full';

export class ActorStorage {
  readonly spool: Spool;
  private batch: SessionTransition[] = [];
  private batchStartedAt = 0;
  /** Writes a partial batch after flushMs; started with the first transition. */
  private timer: NodeJS.Timeout | null = null;
  private readonly free: () => number | null;
  /** Writes that failed and have not gone through since: what → { message, retryAt }. */
  private readonly failures = new Map<string, { message: string; retryAt: number }>();
  private held: { kind: string; hold: Hold; message: string } | null = null;

  constructor(private readonly o: ActorStorageOptions) {
    // Acknowledged data leaves the disk a whole segment at a time: segments well below the limit.
    this.spool = Spool.open(o.stateDir, Math.max(4096, Math.min(1 << 20, o.spoolLimitBytes / 8)));
    if (this.spool.tornBytes > 0) o.log(`spool: dropped a torn tail of ${this.spool.tornBytes} bytes`);
    this.free = freeSpaceProbe(o.stateDir);
  }

  /** Adds a transition to the batch being filled; a full batch goes to the spool. */
  emit(t: SessionTransition): void {
    this.timer ??= setInterval(
      () => {
        if (this.batch.length && performance.now() - this.batchStartedAt >= this.o.flushMs) this.flush();
      },
      Math.max(10, this.o.flushMs / 2),
    );
    if (this.batch.length === 0) this.batchStartedAt = performance.now();
    this.batch.push(t);
    if (this.batch.length >= this.o.batchSize) this.flush();
  }

  /** Writes the batch being filled (if the spool's last write failed, at most once a second). */
  flush(): void {
    if (this.batch.length === 0) return;
    const { robotId, obsDim, actionDim } = this.o;
    const batch = this.batch;
    const ok = this.attempt('spool', () =>
      this.spool.append({ robotId, obsDim, actionDim, firstSeq: batch[0].seq, transitions: batch }),
    );
    if (!ok) return;
    this.batch = [];
    this.o.onSpooled();
  }

  /**
   * Runs a write into the state folder. A failure is reported once (with the fix) and holds
   * episodes until the same write goes through; until then it is not tried more than once a second.
   */
  attempt(what: string, write: () => void): boolean {
    const failed = this.failures.get(what);
    if (failed && performance.now() < failed.retryAt) return false;
    try {
      write();
    } catch (err) {
      const cause = (err as Error).message.split('\n')[0];
      if (!failed) {
        const free = this.free();
        const message =
          `${what}: cannot write to ${this.o.stateDir} (${cause}; ${free === null ? '?' : mib(free)} MiB free there). ` +
          (what === 'spool'
            ? `The running episode ends with the safe action and no new one starts; ${this.batch.length} transitions wait in memory. `
            : 'No new episode starts until it is written. ') +
          'Free space on that disk: collection goes on by itself once the write works';
        this.o.log(message);
        this.failures.set(what, { message, retryAt: 0 });
      }
      this.failures.get(what)!.retryAt = performance.now() + RETRY_MS;
      return false;
    }
    if (failed) {
      this.failures.delete(what);
      this.o.log(`${what}: writing again`);
    }
    return true;
  }

  /** A spool write failed and its batch is not written yet: the running episode must end. */
  get spoolFailed(): boolean {
    return this.failures.has('spool');
  }

  /**
   * Whether an episode may start: null, or why not (as an actor phase). Says so once when a hold
   * begins or changes, and once when it ends.
   */
  holdEpisodes(): Hold | null {
    const now = this.reason();
    if (now && now.kind !== this.held?.kind && !this.failures.has(now.kind)) this.o.log(now.message);
    if (!now && this.held) {
      this.o.log(
        this.held.hold === 'spool-full'
          ? 'spool: the learner is acknowledging again; episodes go on'
          : `${this.held.kind === 'free' ? 'disk' : this.held.kind}: room again; episodes go on`,
      );
    }
    this.held = now;
    return now?.hold ?? null;
  }

  private reason(): { kind: string; hold: Hold; message: string } | null {
    // A batch that failed before is tried again here, so the hold ends as soon as the disk has room.
    if (this.failures.has('spool')) this.flush();
    for (const [kind, f] of this.failures) return { kind, hold: 'disk-full', message: f.message };
    const free = this.free();
    const { stateDir, minFreeBytes, spoolLimitBytes } = this.o;
    if (free !== null && free < minFreeBytes) {
      return {
        kind: 'free',
        hold: 'disk-full',
        message:
          `disk: ${mib(free)} MiB free where the spool is (${stateDir}), less than --min-free ${mib(minFreeBytes)} MiB: ` +
          'no new episode until there is room. Free space on that disk (the learner deletes spooled ' +
          'segments as it acknowledges them), or lower --min-free if the robot computer needs less headroom',
      };
    }
    if (this.spool.pendingBytes >= spoolLimitBytes) {
      const learner = this.o.learnerStopped();
      return {
        // Said again once the learner's own reason is known.
        kind: learner ? 'spool-limit (learner stopped)' : 'spool-limit',
        hold: 'spool-full',
        message:
          `spool: ${mib(this.spool.pendingBytes)} MiB not acknowledged by the learner ` +
          `(limit ${mib(spoolLimitBytes)} MiB): no new episode until it is back. ` +
          (learner
            ? `The learner logs nothing: ${learner}`
            : 'Start the learner, or raise spoolLimitMiB (--spool-limit) if the disk allows'),
      };
    }
    return null;
  }

  status(): StorageStatus {
    const stopped = [...this.failures.values()][0]?.message ?? this.held?.message ?? null;
    return {
      usedBytes: this.spool.pendingBytes,
      limitBytes: this.o.spoolLimitBytes,
      freeBytes: this.free(),
      minFreeBytes: this.o.minFreeBytes,
      stopped,
    };
  }

  /** Stops the batch timer and writes what is left; returns how many transitions could not be. */
  finish(): number {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.failures.delete('spool');
    this.flush();
    return this.batch.length;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.spool.close();
  }
}
