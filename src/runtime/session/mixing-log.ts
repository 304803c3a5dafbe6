/**
 * The actor's conservative-mixing evidence: `stateDir/mixing.jsonl`, the settings on its first line
 * and then one line per finished episode (plan and outcome), each fsynced before the next episode
 * is planned. At restart the actor replays these lines through a fresh mixer, which then plans
 * exactly as the uninterrupted one would have. A crash can tear only the last line, which is cut.
 */
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { ResrtError } from '../../util/errors.js';
import type { MixingEpisode, MixingSpec } from '../../residual/mixing-run.js';

export class MixingLog {
  private constructor(
    private fd: number,
    readonly path: string,
    /** The episodes already logged, in order. */
    readonly records: readonly MixingEpisode[],
    /** Bytes cut from the end (a line torn by a crash). */
    readonly tornBytes: number,
  ) {}

  /** Opens (or starts) the log; refuses one written with other mixing settings. */
  static open(stateDir: string, spec: MixingSpec): MixingLog {
    const path = join(stateDir, 'mixing.jsonl');
    const specLine = JSON.stringify({ spec }) + '\n';
    if (!existsSync(path)) {
      const fd = openSync(path, 'a');
      writeSync(fd, specLine);
      fsyncSync(fd);
      return new MixingLog(fd, path, [], 0);
    }
    const text = readFileSync(path, 'utf8');
    const end = text.lastIndexOf('\n') + 1;
    const lines = text.slice(0, end).split('\n').slice(0, -1);
    const corrupt = (what: string): ResrtError =>
      new ResrtError(
        `${path}: ${what}`,
        'the actor keeps its mixing evidence there; move the file away to start the evidence over',
      );
    if (lines.length === 0) throw corrupt('has no settings line');
    if (lines[0] + '\n' !== specLine) {
      throw new ResrtError(
        `${path} was written with mixing settings ${lines[0]}, this actor runs ${specLine.trim()}`,
        'run the actor with the same mixing settings, or use another --state-dir (or move mixing.jsonl away) to start the evidence over',
      );
    }
    const records = lines.slice(1).map((line, i) => {
      try {
        return JSON.parse(line) as MixingEpisode;
      } catch {
        throw corrupt(`line ${i + 2} is not JSON`);
      }
    });
    const goodBytes = Buffer.byteLength(text.slice(0, end));
    const tornBytes = Buffer.byteLength(text) - goodBytes;
    const fd = openSync(path, 'a');
    if (tornBytes > 0) {
      ftruncateSync(fd, goodBytes);
      fsyncSync(fd);
    }
    return new MixingLog(fd, path, records, tornBytes);
  }

  /**
   * Appends one line durably. A write that fails part-way (a full disk) is cut back, so the next
   * append does not land behind half a line, which open() would refuse as corrupt.
   */
  append(record: MixingEpisode): void {
    const line = Buffer.from(JSON.stringify(record) + '\n');
    const before = fstatSync(this.fd).size;
    try {
      let off = 0;
      while (off < line.byteLength) off += writeSync(this.fd, line, off, line.byteLength - off);
      fsyncSync(this.fd);
    } catch (err) {
      try {
        ftruncateSync(this.fd, before);
      } catch {
        // The caller sees the write's error either way.
      }
      throw err;
    }
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
