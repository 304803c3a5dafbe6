/**
 * The actor's on-disk spool: every batch is appended (and fsynced) before it is published, and
 * stays until the learner acknowledges it, so nothing is lost while the broker or the learner is
 * away, or when the actor itself restarts. Acknowledgements are appended as watermark records
 * ("every seq ≤ W is in the learner's log"); segments whose batches are all acknowledged are
 * deleted. The spool also carries the actor's sequence counter across restarts.
 */
import { RecordLog } from './record-log.js';
import { decodeBatch, encodeBatch, type TransitionBatch } from './codec.js';

const BATCH = 1;
const ACK = 2;

export interface SpooledBatch {
  firstSeq: number;
  lastSeq: number;
  bytes: Uint8Array;
  count: number;
  segment: number;
  /** performance.now() of the last publish, 0 when never sent by this process. */
  sentAtMs: number;
}

export class Spool {
  private readonly pending = new Map<number, SpooledBatch>();
  private readonly segmentMax = new Map<number, number>();
  private acked = -1;
  private next = 0;
  private bytesPending = 0;
  readonly tornBytes: number;

  private constructor(private readonly log: RecordLog) {
    this.tornBytes = 0;
  }

  /** segmentBytes: a new spool file starts past this size (default 1 MiB); acked files are deleted whole. */
  static open(dir: string, segmentBytes = 1 << 20): Spool {
    const batches: SpooledBatch[] = [];
    let acked = -1;
    const { log, report } = RecordLog.open(dir, { prefix: 'spool', segmentBytes }, (r) => {
      if (r.type === BATCH) {
        const b = decodeBatch(r.payload);
        const n = b.transitions.length;
        batches.push({
          firstSeq: b.firstSeq,
          lastSeq: b.firstSeq + n - 1,
          bytes: r.payload,
          count: n,
          segment: r.segment,
          sentAtMs: 0,
        });
      } else if (r.type === ACK) {
        acked = Math.max(acked, Buffer.from(r.payload).readDoubleLE(0));
      }
    });
    const spool = new Spool(log);
    (spool as { tornBytes: number }).tornBytes = report.tornBytes;
    spool.acked = acked;
    spool.next = acked + 1;
    for (const b of batches) {
      spool.next = Math.max(spool.next, b.lastSeq + 1);
      spool.segmentMax.set(b.segment, Math.max(spool.segmentMax.get(b.segment) ?? -1, b.lastSeq));
      if (b.lastSeq > acked) spool.track(b);
    }
    return spool;
  }

  /** The sequence number the next transition gets. */
  get nextSeq(): number {
    return this.next;
  }

  /** Everything up to here is in the learner's log. */
  get ackedSeq(): number {
    return this.acked;
  }

  /** Transitions spooled and not yet acknowledged. */
  get pendingTransitions(): number {
    let n = 0;
    for (const b of this.pending.values()) n += b.lastSeq - Math.max(b.firstSeq, this.acked + 1) + 1;
    return n;
  }

  /** Bytes of the batches not yet acknowledged (what a spool limit counts). */
  get pendingBytes(): number {
    return this.bytesPending;
  }

  /**
   * Raises the sequence counter (the learner already holds seqs below `seq`, e.g. after the
   * spool folder was lost), so new transitions are never mistaken for duplicates.
   */
  advanceTo(seq: number): void {
    if (seq > this.next) this.next = seq;
  }

  /** Appends a batch durably (fsync) and returns it for publishing. */
  append(batch: TransitionBatch): SpooledBatch {
    const n = batch.transitions.length;
    const bytes = encodeBatch(batch);
    const at = this.log.append(BATCH, bytes);
    this.log.sync();
    const entry: SpooledBatch = {
      firstSeq: batch.firstSeq,
      lastSeq: batch.firstSeq + n - 1,
      bytes,
      count: n,
      segment: at.segment,
      sentAtMs: 0,
    };
    this.segmentMax.set(at.segment, Math.max(this.segmentMax.get(at.segment) ?? -1, entry.lastSeq));
    this.track(entry);
    this.next = Math.max(this.next, entry.lastSeq + 1);
    return entry;
  }

  private track(b: SpooledBatch): void {
    // A batch written again (its first write's fsync failed) replaces the earlier copy.
    const earlier = this.pending.get(b.firstSeq);
    if (earlier) this.bytesPending -= earlier.bytes.byteLength;
    this.pending.set(b.firstSeq, b);
    this.bytesPending += b.bytes.byteLength;
  }

  /** Unacknowledged batches, oldest first. */
  unacked(): SpooledBatch[] {
    return [...this.pending.values()].sort((a, b) => a.firstSeq - b.firstSeq);
  }

  /** The learner has every seq ≤ watermark: drop those batches and the segments they filled. */
  ack(watermark: number): void {
    if (!(watermark > this.acked)) return;
    this.acked = watermark;
    const payload = Buffer.alloc(8);
    payload.writeDoubleLE(watermark, 0);
    // Not fsynced, and a write that fails (disk full) is let go: a lost ack only makes the actor
    // resend, and the learner drops duplicates.
    try {
      this.log.append(ACK, payload);
    } catch {
      // The spool's own appends report the disk (the actor holds collection there).
    }
    for (const [k, b] of this.pending) {
      if (b.lastSeq > watermark) continue;
      this.pending.delete(k);
      this.bytesPending -= b.bytes.byteLength;
    }
    let firstLive = this.log.currentSegment;
    for (const [seg, max] of this.segmentMax) if (max > watermark) firstLive = Math.min(firstLive, seg);
    this.log.removeBefore(firstLive);
    for (const seg of [...this.segmentMax.keys()]) if (seg < firstLive) this.segmentMax.delete(seg);
  }

  close(): void {
    this.log.close();
  }
}
