/**
 * The learner's write-ahead log: every transition accepted from an actor and every finished
 * episode, in arrival order, in framed CRC-32 records (src/runtime/session/record-log.ts). It is
 * also the session's dataset, so nothing in it is ever dropped: segments are sealed at
 * `segmentBytes` and compacted (compressed into packs that hold the same records, in the same
 * order), and what bounds the disk is the learner's limit and its stop policy (docs/sessions.md).
 *
 * fsync policy: a batch of transitions is appended and fsynced before the learner acknowledges it
 * to the actor (which then deletes it from its spool), so an acknowledged transition survives
 * kill -9 and power loss. Episode records are fsynced with the next batch (or at close); one lost
 * in a crash is rebuilt from its transitions on resume. A packing commits by rename; a kill -9 at
 * any point of it leaves every segment readable exactly once (record-log.ts).
 */
import { RecordLog, type OpenReport, type PackResult } from '../../runtime/session/record-log.js';
import { decodeBatch, encodeBatch, type TransitionBatch } from '../../runtime/session/codec.js';

const TRANSITIONS = 1;
const EPISODE = 2;

export interface EpisodeRecord {
  robotId: string;
  episode: number;
  /** seq of the episode's last transition. */
  lastSeq: number;
  steps: number;
  ret: number;
  success: boolean;
  /** A person labelled the outcome. */
  labelled: boolean;
  interventions: number;
  safetyEvents: number;
  policyVersion: number;
}

export interface WalVisitor {
  transitions(batch: TransitionBatch): void;
  episode(e: EpisodeRecord): void;
}

export interface WalOptions {
  /** A segment is sealed (and then compacted) once it holds this many bytes. Default 32 MiB. */
  segmentBytes?: number;
}

export interface CompactionEvents {
  started?(segment: number): void;
  packed?(result: PackResult): void;
  failed?(segment: number, err: Error): void;
}

/** After a failed packing (e.g. no room for the pack), the next try waits this long. */
const RETRY_MS = 5000;

export class TransitionWal {
  private compaction: {
    events: CompactionEvents;
    running: Promise<void> | null;
    retry: NodeJS.Timeout | null;
    stopped: boolean;
  } | null = null;

  private constructor(
    private readonly log: RecordLog,
    readonly report: OpenReport,
  ) {}

  /** Opens the log in `dir`, cutting a torn tail, and replays every record into `visit`. */
  static open(dir: string, visit: WalVisitor, options: WalOptions = {}): TransitionWal {
    const segmentBytes = options.segmentBytes ?? 32 << 20;
    const { log, report } = RecordLog.open(dir, { prefix: 'wal', segmentBytes }, (r) => {
      if (r.type === TRANSITIONS) visit.transitions(decodeBatch(r.payload));
      else if (r.type === EPISODE)
        visit.episode(JSON.parse(Buffer.from(r.payload).toString('utf8')) as EpisodeRecord);
    });
    return new TransitionWal(log, report);
  }

  /** Appends and fsyncs: on return the batch is durable and may be acknowledged. */
  appendTransitions(batch: TransitionBatch): void {
    this.log.append(TRANSITIONS, encodeBatch(batch));
    this.log.sync();
    this.compactSoon();
  }

  appendEpisode(e: EpisodeRecord): void {
    this.log.append(EPISODE, Buffer.from(JSON.stringify(e)));
    this.compactSoon();
  }

  sync(): void {
    this.log.sync();
  }

  /** Bytes on disk: sealed packs and segments, and the segment being written. */
  get diskBytes(): number {
    return this.log.diskBytes;
  }

  get segments(): number {
    return this.log.segments.length;
  }

  get packedSegments(): number {
    return this.log.packedSegments;
  }

  /**
   * Compacts sealed segments in the background, oldest first, one at a time: those left by an
   * earlier run now, each new one as it is sealed. A failed packing leaves its segment as it was
   * and is tried again after a while.
   */
  startCompaction(events: CompactionEvents = {}): void {
    this.compaction ??= { events, running: null, retry: null, stopped: false };
    this.compactSoon();
  }

  private compactSoon(): void {
    const c = this.compaction;
    if (!c || c.running || c.retry || c.stopped) return;
    const segment = this.log.sealedUnpacked()[0];
    if (segment === undefined) return;
    c.running = (async () => {
      c.events.started?.(segment);
      try {
        c.events.packed?.(await this.log.pack(segment));
      } catch (err) {
        c.events.failed?.(segment, err as Error);
        c.retry = setTimeout(() => {
          c.retry = null;
          this.compactSoon();
        }, RETRY_MS);
        c.retry.unref();
      } finally {
        c.running = null;
      }
      this.compactSoon();
    })();
  }

  /** Stops compaction (waiting for a packing in progress) and closes the log. */
  async close(): Promise<void> {
    const c = this.compaction;
    if (c) {
      c.stopped = true;
      if (c.retry) clearTimeout(c.retry);
      await c.running;
    }
    this.log.close();
  }
}
