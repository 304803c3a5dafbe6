/**
 * `keep: 'best'`: the residual of the periodic evaluation with the highest success rate (the later
 * one on a tie), kept beside the run so that the run's residual.onnx is that one, not whatever the
 * last update left. Which is chosen depends only on the periodic evaluations' seeds; the held-out
 * evaluation that the run reports never saw them (held-out.ts), so its number stays unbiased.
 *
 * On disk: residual-best-<envSteps>.onnx and residual-best.json naming it. A new best is written
 * file first, record second, the old file deleted last, so a kill -9 at any point leaves a record
 * that names a whole file with its own score; open() deletes the files no record names.
 */
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/files.js';

export interface KeptEvaluation {
  /** Env steps when the kept residual was evaluated. */
  envSteps: number;
  successRate: number;
  evalEpisodes: number;
}

interface KeptRecord extends KeptEvaluation {
  file: string;
}

const RECORD = 'residual-best.json';
const fileFor = (envSteps: number): string => `residual-best-${envSteps}.onnx`;
const isKeptFile = (name: string): boolean => /^residual-best-\d+\.onnx$/.test(name);

export class KeptResidual {
  private record: KeptRecord | null;

  /** A fresh run starts with nothing kept; a resumed one keeps what its earlier part chose. */
  private constructor(
    private readonly dir: string,
    record: KeptRecord | null,
  ) {
    this.record = record;
  }

  static open(dir: string, resume: boolean): KeptResidual {
    let record: KeptRecord | null = null;
    const recordPath = join(dir, RECORD);
    if (resume && existsSync(recordPath)) {
      const r = JSON.parse(readFileSync(recordPath, 'utf8')) as KeptRecord;
      if (existsSync(join(dir, r.file))) record = r;
    }
    if (!record) rmSync(recordPath, { force: true });
    for (const name of existsSync(dir) ? readdirSync(dir) : [])
      if (isKeptFile(name) && name !== record?.file) rmSync(join(dir, name), { force: true });
    return new KeptResidual(dir, record);
  }

  get kept(): KeptEvaluation | null {
    if (!this.record) return null;
    const { envSteps, successRate, evalEpisodes } = this.record;
    return { envSteps, successRate, evalEpisodes };
  }

  /**
   * An evaluation of the residual published now: kept when it scores at least the kept one.
   * `write` writes that residual's ONNX to the path it is given (false: nothing published yet).
   */
  offer(e: KeptEvaluation, write: (path: string) => boolean): boolean {
    if (this.record && e.successRate < this.record.successRate) return false;
    const file = fileFor(e.envSteps);
    if (!write(join(this.dir, file))) return false;
    const previous = this.record?.file;
    this.record = { ...e, file };
    writeFileAtomic(join(this.dir, RECORD), JSON.stringify(this.record, null, 2) + '\n');
    if (previous && previous !== file) rmSync(join(this.dir, previous), { force: true });
    return true;
  }

  /** Writes the kept residual to `target` (atomically); false when nothing was kept. */
  copyTo(target: string): boolean {
    if (!this.record) return false;
    writeFileAtomic(target, readFileSync(join(this.dir, this.record.file)));
    return true;
  }
}
