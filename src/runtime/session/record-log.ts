/**
 * An append-only log of framed records in numbered segment files (<prefix>-00000001.log, ...):
 * the storage under both the actor's spool and the learner's write-ahead log.
 *
 *   record = u32 magic 'RLR1' | u32 payload length | u32 CRC-32(type, payload) | u8 type | payload
 *
 * A crash can tear only the record being written, the last of the newest segment: open() detects
 * it (short header, length past the end, CRC mismatch) and truncates it away. A bad record
 * anywhere else is real corruption and is reported, not silently dropped.
 */
import {
  closeSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { ResrtError } from '../../util/errors.js';

export const RECORD_MAGIC = 0x31524c52; // 'RLR1'
const HEADER = 13;

export interface LogRecord {
  segment: number;
  offset: number;
  type: number;
  payload: Uint8Array;
}

export interface RecordLogOptions {
  prefix: string;
  /** A new segment starts once the current one is this large. Default 8 MiB. */
  segmentBytes?: number;
}

export interface OpenReport {
  /** Bytes cut from the newest segment's end (a record torn by a crash). */
  tornBytes: number;
  records: number;
}

function frame(type: number, payload: Uint8Array): Buffer {
  const out = Buffer.alloc(HEADER + payload.byteLength);
  out.writeUInt32LE(RECORD_MAGIC, 0);
  out.writeUInt32LE(payload.byteLength, 4);
  out.writeUInt8(type, 12);
  out.set(payload, HEADER);
  out.writeUInt32LE(crc32(out.subarray(12)), 8);
  return out;
}

/** Parses one segment; returns its records and the offset of the first byte that is not one. */
function parseSegment(bytes: Buffer, segment: number): { records: LogRecord[]; goodEnd: number } {
  const records: LogRecord[] = [];
  let o = 0;
  while (o < bytes.byteLength) {
    if (o + HEADER > bytes.byteLength) break;
    if (bytes.readUInt32LE(o) !== RECORD_MAGIC) break;
    const len = bytes.readUInt32LE(o + 4);
    if (o + HEADER + len > bytes.byteLength) break;
    const crc = bytes.readUInt32LE(o + 8);
    if (crc32(bytes.subarray(o + 12, o + HEADER + len)) !== crc) break;
    records.push({
      segment,
      offset: o,
      type: bytes.readUInt8(o + 12),
      payload: new Uint8Array(bytes.subarray(o + HEADER, o + HEADER + len)),
    });
    o += HEADER + len;
  }
  return { records, goodEnd: o };
}

export class RecordLog {
  private fd: number | null = null;
  private current: number;
  private size = 0;
  private readonly segmentBytes: number;
  private dirty = false;
  private closed = false;

  private constructor(
    readonly dir: string,
    private readonly prefix: string,
    segmentBytes: number,
    private segmentList: number[],
  ) {
    this.segmentBytes = segmentBytes;
    this.current = segmentList.length ? segmentList[segmentList.length - 1] : 1;
  }

  private pathOf(segment: number): string {
    return join(this.dir, `${this.prefix}-${String(segment).padStart(8, '0')}.log`);
  }

  /**
   * Opens (creating) the log in `dir`, reads every record, and cuts a torn tail off the newest
   * segment. `onRecord` sees each intact record in order.
   */
  static open(
    dir: string,
    options: RecordLogOptions,
    onRecord: (r: LogRecord) => void = () => {},
  ): { log: RecordLog; report: OpenReport } {
    if (!/^[a-z][a-z0-9-]*$/.test(options.prefix))
      throw new ResrtError(`record log prefix "${options.prefix}"`, 'use lower-case letters, digits, -');
    mkdirSync(dir, { recursive: true });
    const pattern = new RegExp(`^${options.prefix}-(\\d{8})\\.log$`);
    const segments = readdirSync(dir)
      .map((n) => pattern.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    const log = new RecordLog(dir, options.prefix, options.segmentBytes ?? 8 << 20, segments);
    let tornBytes = 0;
    let count = 0;
    segments.forEach((seg, k) => {
      const path = log.pathOf(seg);
      const bytes = readFileSync(path);
      const { records, goodEnd } = parseSegment(bytes, seg);
      for (const r of records) onRecord(r);
      count += records.length;
      if (goodEnd === bytes.byteLength) return;
      if (k !== segments.length - 1) {
        throw new ResrtError(
          `${path} is corrupt at byte ${goodEnd} (not the newest segment, so not a torn write)`,
          'restore the folder from a backup; the records before that byte are intact',
        );
      }
      // Only the record being appended when the process died can be torn; cut it away.
      tornBytes = bytes.byteLength - goodEnd;
      const fd = openSync(path, 'r+');
      try {
        ftruncateSync(fd, goodEnd);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    });
    return { log, report: { tornBytes, records: count } };
  }

  get segments(): readonly number[] {
    return this.segmentList;
  }

  get currentSegment(): number {
    return this.current;
  }

  private ensureOpen(): number {
    if (this.closed) throw new ResrtError(`record log ${this.dir} is closed`);
    if (this.fd === null) {
      this.fd = openSync(this.pathOf(this.current), 'a');
      this.size = fstatSync(this.fd).size;
      if (!this.segmentList.includes(this.current)) this.segmentList = [...this.segmentList, this.current];
    }
    return this.fd;
  }

  /** Appends one record (not yet durable: call sync()). Returns where it went. */
  append(type: number, payload: Uint8Array): { segment: number; offset: number } {
    if (this.fd !== null && this.size >= this.segmentBytes) this.rotate();
    const fd = this.ensureOpen();
    const bytes = frame(type, payload);
    let off = 0;
    try {
      while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
    } catch (err) {
      this.abandonPartialWrite(fd);
      throw err;
    }
    const at = { segment: this.current, offset: this.size };
    this.size += bytes.byteLength;
    this.dirty = true;
    return at;
  }

  /**
   * A write that failed part-way (disk full, I/O error) would leave a torn record in the middle of
   * the segment once later appends succeed, and open() would then refuse the segment as corrupt:
   * cut the file back to its last whole record, and reopen it on the next append.
   */
  private abandonPartialWrite(fd: number): void {
    try {
      ftruncateSync(fd, this.size);
    } catch {
      // A device that cannot be truncated took nothing of the record either.
    }
    try {
      // Whole records appended before this one were promised to a later sync().
      if (this.dirty) fsyncSync(fd);
    } catch {
      // The caller sees the write's error; a failing disk fails the next sync() too.
    }
    try {
      closeSync(fd);
    } catch {
      // The descriptor is dropped either way.
    }
    this.fd = null;
    this.dirty = false;
  }

  /** fsync of the current segment: every record appended so far survives a power cut. */
  sync(): void {
    if (this.fd !== null && this.dirty) fsyncSync(this.fd);
    this.dirty = false;
  }

  /** Closes the current segment and starts the next one. */
  rotate(): void {
    if (this.fd !== null) {
      this.sync();
      closeSync(this.fd);
      this.fd = null;
    }
    this.current++;
  }

  /** Deletes whole segments numbered below `segment` (never the current one). */
  removeBefore(segment: number): void {
    const keep: number[] = [];
    for (const s of this.segmentList) {
      if (s < segment && s !== this.current) unlinkSync(this.pathOf(s));
      else keep.push(s);
    }
    this.segmentList = keep;
  }

  close(): void {
    if (this.closed) return;
    if (this.fd !== null) {
      this.sync();
      closeSync(this.fd);
      this.fd = null;
    }
    this.closed = true;
  }
}
