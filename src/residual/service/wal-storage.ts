/**
 * The learner's disk policy around its write-ahead log. A batch is logged (and so acknowledged)
 * only while
 *   - the log takes less than `limitBytes` on disk (compacted segments counted as stored),
 *   - the disk holding it has at least `minFreeBytes` free (the room checkpoints and compaction
 *     need), and
 *   - the append itself works.
 * Otherwise nothing is logged or acknowledged: the actors keep their transitions spooled (and stop
 * starting episodes at their own spool limits), so nothing is lost. The reason is said once, with
 * the fix, and goes to the learner's status; logging goes on by itself when the disk has room or
 * compaction brought the log under its limit (a higher limit needs a restart with --resume).
 */
import { freeSpaceProbe, mib } from '../../util/disk.js';
import type { StorageStatus } from '../../runtime/session/protocol.js';
import type { TransitionBatch } from '../../runtime/session/codec.js';
import type { TransitionWal } from './wal.js';

export interface WalStorageOptions {
  dir: string;
  limitBytes: number;
  minFreeBytes: number;
  log: (line: string) => void;
  /** The reason changed (stopped, another reason, or logging again). */
  onChange: () => void;
}

type Stop = { kind: 'limit' | 'free' | 'write'; message: string };

export class WalStorage {
  private readonly free: () => number | null;
  private stop: Stop | null = null;

  constructor(
    private readonly wal: TransitionWal,
    private readonly o: WalStorageOptions,
  ) {
    this.free = freeSpaceProbe(o.dir);
    const { log } = o;
    if (wal.report.tornBytes > 0)
      log(`write-ahead log: dropped a torn tail of ${wal.report.tornBytes} bytes`);
    if (wal.report.interruptedPacks > 0)
      log(`write-ahead log: settled ${wal.report.interruptedPacks} compactions a stop interrupted`);
    wal.startCompaction({
      started: (n) => log(`write-ahead log: compacting segment ${n}`),
      packed: (r) =>
        log(
          `write-ahead log: segment ${r.segment} compacted, ${kib(r.rawBytes)} → ${kib(r.packedBytes)} KiB`,
        ),
      failed: (n, err) =>
        log(
          `write-ahead log: compacting segment ${n} failed (${err.message.split('\n')[0]}); ` +
            'it stays as it is and is tried again',
        ),
    });
  }

  /**
   * Logs a batch (fsynced; ask refuses() first). False: the disk did not take it, the reason is
   * reported, and the batch must not be acknowledged.
   */
  append(batch: TransitionBatch): boolean {
    try {
      this.wal.appendTransitions(batch);
    } catch (err) {
      const cause = (err as Error).message.split('\n')[0];
      this.set({
        kind: 'write',
        message:
          `write-ahead log: cannot write to ${this.o.dir} (${cause}); nothing is acknowledged until it can: ` +
          'the actors keep their transitions spooled. Free disk space there',
      });
      return false;
    }
    this.set(null);
    return true;
  }

  /** Whether a batch would be refused now (checked before taking it, so nothing is half-accepted). */
  refuses(): boolean {
    const limit = this.limitReached();
    if (limit) this.set(limit);
    else if (this.stop?.kind !== 'write') this.set(null);
    return limit !== null;
  }

  private limitReached(): Stop | null {
    const { dir, limitBytes, minFreeBytes } = this.o;
    const free = this.free();
    const freeText = free === null ? '?' : mib(free);
    const used = this.wal.diskBytes;
    if (used >= limitBytes)
      return {
        kind: 'limit',
        message:
          `write-ahead log: ${dir} holds ${mib(used)} MiB, its limit is ${mib(limitBytes)} MiB (--wal-limit); ` +
          'nothing more is logged or acknowledged: the actors keep their transitions spooled and stop at ' +
          'their --spool-limit. Restart the learner with --resume and a higher --wal-limit ' +
          `(the disk has ${freeText} MiB free), or end the session here`,
      };
    if (free !== null && free < minFreeBytes)
      return {
        kind: 'free',
        message:
          `write-ahead log: the disk holding ${dir} has ${freeText} MiB free, less than the ${mib(minFreeBytes)} MiB ` +
          'kept for checkpoints and compaction (--min-free); nothing is logged or acknowledged until there is ' +
          'room: the actors keep their transitions spooled. Free space on that disk; logging goes on by itself',
      };
    return null;
  }

  private set(next: Stop | null): void {
    const changed = next?.kind !== this.stop?.kind;
    if (changed) this.o.log(next ? next.message : 'write-ahead log: writing again');
    this.stop = next;
    if (changed) this.o.onChange();
  }

  /** Why nothing is logged now (names the cause and the fix); null while logging works. */
  get stopped(): string | null {
    return this.stop?.message ?? null;
  }

  status(): StorageStatus & { segments: number; compactedSegments: number } {
    return {
      usedBytes: this.wal.diskBytes,
      limitBytes: this.o.limitBytes,
      freeBytes: this.free(),
      minFreeBytes: this.o.minFreeBytes,
      stopped: this.stopped,
      segments: this.wal.segments,
      compactedSegments: this.wal.packedSegments,
    };
  }
}

const kib = (bytes: number): string => (bytes / 1024).toFixed(0);
