/**
 * An append-only log of framed records (record-frame.ts) in numbered segment files
 * (<prefix>-00000001.log, ...): the storage under both the actor's spool and the learner's
 * write-ahead log.
 *
 * A crash can tear only the record being written, the last of the newest segment: open() detects
 * it (short header, length past the end, CRC mismatch) and truncates it away. A bad record
 * anywhere else is real corruption and is reported, not silently dropped.
 *
 * Sealed segments (every one below the segment being written) can be packed: compressed into
 * <prefix>-N.pack, which holds the same bytes (segment-pack.ts). Packing commits by rename, so a
 * kill -9 at any point leaves each segment readable in exactly one form:
 *   1. <prefix>-N.pack.tmp is written and fsynced;      a crash here: open() deletes the .tmp
 *   2. renamed to <prefix>-N.pack, the folder fsynced;   the pack is the segment from now on
 *   3. <prefix>-N.log is deleted;                        a crash before: open() deletes the .log
 * The pack is inflated and compared with the segment before step 1, and again at open() in the
 * state between 2 and 3 before the .log goes.
 */
import {
  closeSync,
  fstatSync,
  fsync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { ResrtError } from '../../util/errors.js';
import { frameRecord, parseRecords, type LogRecord } from './record-frame.js';
import { PackError, packSegment, unpackSegment, unpackSegmentAsync } from './segment-pack.js';

export { RECORD_MAGIC, type LogRecord } from './record-frame.js';

export interface RecordLogOptions {
  prefix: string;
  /** A new segment starts once the current one is this large. Default 8 MiB. */
  segmentBytes?: number;
}

export interface OpenReport {
  /** Bytes cut from the newest segment's end (a record torn by a crash). */
  tornBytes: number;
  records: number;
  /** Packings a crash interrupted, finished (pack committed) or undone (pack not yet committed). */
  interruptedPacks: number;
}

interface SegmentFile {
  n: number;
  packed: boolean;
  /** Bytes on disk for this segment (both files while a packing is between rename and delete). */
  bytes: number;
}

export interface PackResult {
  segment: number;
  rawBytes: number;
  packedBytes: number;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function segmentPath(dir: string, prefix: string, segment: number, form: 'log' | 'pack'): string {
  return join(dir, `${prefix}-${String(segment).padStart(8, '0')}.${form}`);
}

/**
 * The segment's bytes from its pack. With the segment's .log still beside it, a pack that does not
 * verify is reported as null (the .log is kept); alone, it is corruption.
 */
function readPack(path: string, segment: number, logExists: boolean): Buffer | null {
  try {
    return unpackSegment(readFileSync(path), segment);
  } catch (err) {
    if (!(err instanceof PackError)) throw err;
    if (logExists) return null;
    throw new ResrtError(
      `${path} is corrupt (${err.message})`,
      'restore the folder from a backup; the other segments are intact',
    );
  }
}

const fsyncAsync = promisify(fsync);

export class RecordLog {
  private fd: number | null = null;
  private current: number;
  private size = 0;
  private readonly segmentBytes: number;
  private dirty = false;
  private closed = false;
  private packing = false;

  private constructor(
    readonly dir: string,
    private readonly prefix: string,
    segmentBytes: number,
    private files: SegmentFile[],
  ) {
    this.segmentBytes = segmentBytes;
    const last = files[files.length - 1];
    // A packed segment is sealed: never append to it again.
    this.current = !last ? 1 : last.packed ? last.n + 1 : last.n;
  }

  private pathOf(segment: number, form: 'log' | 'pack' = 'log'): string {
    return segmentPath(this.dir, this.prefix, segment, form);
  }

  /**
   * Opens (creating) the log in `dir`, settles packings a crash interrupted, reads every record,
   * and cuts a torn tail off the newest segment. `onRecord` sees each intact record in order.
   */
  static open(
    dir: string,
    options: RecordLogOptions,
    onRecord: (r: LogRecord) => void = () => {},
  ): { log: RecordLog; report: OpenReport } {
    if (!/^[a-z][a-z0-9-]*$/.test(options.prefix))
      throw new ResrtError(`record log prefix "${options.prefix}"`, 'use lower-case letters, digits, -');
    mkdirSync(dir, { recursive: true });
    const pattern = new RegExp(`^${options.prefix}-(\\d{8})\\.(log|pack|pack\\.tmp)$`);
    const found = new Map<number, Set<string>>();
    for (const name of readdirSync(dir)) {
      const m = pattern.exec(name);
      if (!m) continue;
      const n = Number(m[1]);
      if (!found.has(n)) found.set(n, new Set());
      found.get(n)!.add(m[2]);
    }
    const pathOf = (n: number, form: 'log' | 'pack' = 'log'): string =>
      segmentPath(dir, options.prefix, n, form);
    let interruptedPacks = 0;
    const files: SegmentFile[] = [];
    for (const n of [...found.keys()].sort((a, b) => a - b)) {
      const forms = found.get(n)!;
      if (forms.has('pack.tmp')) {
        // Step 1 never finished: the .log is still the segment.
        unlinkSync(pathOf(n, 'pack') + '.tmp');
        interruptedPacks++;
      }
      if (forms.has('pack') && forms.has('log')) {
        interruptedPacks++;
        if (readPack(pathOf(n, 'pack'), n, true)) {
          // Step 3 never finished: the committed pack holds the segment, byte for byte.
          unlinkSync(pathOf(n));
          forms.delete('log');
        } else {
          // A pack damaged on disk beside its intact segment: keep the segment.
          unlinkSync(pathOf(n, 'pack'));
          forms.delete('pack');
        }
      }
      const packed = forms.has('pack');
      if (packed || forms.has('log'))
        files.push({ n, packed, bytes: statSync(pathOf(n, packed ? 'pack' : 'log')).size });
    }
    if (interruptedPacks > 0) fsyncDir(dir);
    let tornBytes = 0;
    let count = 0;
    files.forEach((f, k) => {
      const path = pathOf(f.n, f.packed ? 'pack' : 'log');
      const bytes = f.packed ? readPack(path, f.n, false)! : readFileSync(path);
      const { records, goodEnd } = parseRecords(bytes, f.n);
      for (const r of records) onRecord(r);
      count += records.length;
      if (goodEnd === bytes.byteLength) return;
      if (f.packed || k !== files.length - 1) {
        throw new ResrtError(
          `${path} is corrupt at byte ${goodEnd} (not the newest segment, so not a torn write)`,
          'restore the folder from a backup; the records before that byte are intact',
        );
      }
      // Only the record being appended when the process died can be torn; cut it away.
      tornBytes = bytes.byteLength - goodEnd;
      f.bytes = goodEnd;
      const fd = openSync(path, 'r+');
      try {
        ftruncateSync(fd, goodEnd);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    });
    const log = new RecordLog(dir, options.prefix, options.segmentBytes ?? 8 << 20, files);
    return { log, report: { tornBytes, records: count, interruptedPacks } };
  }

  /** Segment numbers, oldest first. */
  get segments(): readonly number[] {
    return this.files.map((f) => f.n);
  }

  get currentSegment(): number {
    return this.current;
  }

  /** Bytes the log occupies on disk (segments and packs). */
  get diskBytes(): number {
    return this.files.reduce((n, f) => n + f.bytes, 0);
  }

  get packedSegments(): number {
    return this.files.filter((f) => f.packed).length;
  }

  /** Sealed segments not packed yet, oldest first. */
  sealedUnpacked(): number[] {
    return this.files.filter((f) => !f.packed && f.n < this.current).map((f) => f.n);
  }

  private ensureOpen(): number {
    if (this.closed) throw new ResrtError(`record log ${this.dir} is closed`);
    if (this.fd === null) {
      this.fd = openSync(this.pathOf(this.current), 'a');
      this.size = fstatSync(this.fd).size;
      if (!this.files.some((f) => f.n === this.current))
        this.files.push({ n: this.current, packed: false, bytes: this.size });
    }
    return this.fd;
  }

  private currentFile(): SegmentFile | undefined {
    const last = this.files[this.files.length - 1];
    return last?.n === this.current ? last : undefined;
  }

  /** Appends one record (not yet durable: call sync()). Returns where it went. */
  append(type: number, payload: Uint8Array): { segment: number; offset: number } {
    if (this.fd !== null && this.size >= this.segmentBytes) this.rotate();
    const fd = this.ensureOpen();
    const bytes = frameRecord(type, payload);
    let off = 0;
    try {
      while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
    } catch (err) {
      this.abandonPartialWrite(fd);
      throw err;
    }
    const at = { segment: this.current, offset: this.size };
    this.size += bytes.byteLength;
    const file = this.currentFile();
    if (file) file.bytes = this.size;
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

  /** Closes the current segment (it is sealed now) and starts the next one. */
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
    const keep: SegmentFile[] = [];
    for (const f of this.files) {
      if (f.n < segment && f.n !== this.current) unlinkSync(this.pathOf(f.n, f.packed ? 'pack' : 'log'));
      else keep.push(f);
    }
    this.files = keep;
  }

  /**
   * Packs one sealed segment (module comment: steps 1–3). Reading, compressing and checking run
   * off the event loop; appends may go on meanwhile. One packing at a time.
   */
  async pack(segment: number): Promise<PackResult> {
    const file = this.files.find((f) => f.n === segment);
    if (!file || file.packed || segment >= this.current)
      throw new Error(`segment ${segment} of ${this.dir} is not a sealed, unpacked segment`);
    if (this.packing) throw new Error(`${this.dir}: a packing is already running`);
    this.packing = true;
    try {
      const logPath = this.pathOf(segment);
      // A sealed segment was just written: it is in the page cache.
      const raw = readFileSync(logPath);
      const { records, goodEnd } = parseRecords(raw, segment);
      if (goodEnd !== raw.byteLength)
        throw new ResrtError(
          `${logPath} is corrupt at byte ${goodEnd} (a sealed segment); it is left unpacked`,
          'restore the folder from a backup; the records before that byte are intact',
        );
      const pack = await packSegment(raw, segment, records.length);
      const back = await unpackSegmentAsync(pack, segment);
      if (!back.equals(raw)) throw new Error(`the pack of ${logPath} does not inflate to the segment`);
      // Compressing runs on the thread pool and the two fsyncs wait there for the device; the file
      // operations between them are quick and stay synchronous (each await is a turn of a busy loop).
      const packPath = this.pathOf(segment, 'pack');
      const tmp = `${packPath}.tmp`;
      const fd = openSync(tmp, 'w');
      try {
        let off = 0;
        while (off < pack.byteLength) off += writeSync(fd, pack, off, pack.byteLength - off);
        await fsyncAsync(fd);
      } catch (err) {
        closeSync(fd);
        unlinkSync(tmp);
        throw err;
      }
      closeSync(fd);
      renameSync(tmp, packPath);
      const dirFd = openSync(this.dir, 'r');
      try {
        await fsyncAsync(dirFd);
      } finally {
        closeSync(dirFd);
      }
      // Committed: the pack is the segment now. The .log goes without an fsync of the folder: if
      // its deletion is lost, open() finds both and settles it.
      file.packed = true;
      unlinkSync(logPath);
      file.bytes = pack.byteLength;
      return { segment, rawBytes: raw.byteLength, packedBytes: pack.byteLength };
    } finally {
      this.packing = false;
    }
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
