/**
 * The residual versions a learner publishes: each is written to outDir/residual.onnx and its number
 * to outDir/published.json before any actor can see it (so a restart never reuses a number), and
 * goes out as one checksummed policy message of the session's lineage (one per output folder).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { writeFileAtomic } from '../../util/files.js';
import { exportResidualOnnx, residualPolicySpec, type ResidualSpecInput } from '../export.js';
import { encodePolicyMessage, type PolicyHeader } from '../../runtime/session/protocol.js';

export class ResidualPublisher {
  /** This output folder's lineage: actors compare versions only within one. */
  readonly lineage: string;
  private readonly versionFile: string;

  constructor(
    private readonly outDir: string,
    private readonly log: (line: string) => void,
  ) {
    const lineageFile = join(outDir, 'lineage.json');
    if (!existsSync(lineageFile))
      writeFileAtomic(lineageFile, JSON.stringify({ lineage: randomBytes(8).toString('hex') }));
    this.lineage = (JSON.parse(readFileSync(lineageFile, 'utf8')) as { lineage: string }).lineage;
    this.versionFile = join(outDir, 'published.json');
  }

  /** The highest version ever published from this folder (0 before any). */
  publishedVersion(): number {
    if (!existsSync(this.versionFile)) return 0;
    return (JSON.parse(readFileSync(this.versionFile, 'utf8')) as { version: number }).version;
  }

  /**
   * Writes version `spec.version` and returns its policy message, or null when the disk refused the
   * files (said in the log; the caller goes on training and tries again at its next publish).
   */
  publish(
    spec: ResidualSpecInput,
    header: Omit<PolicyHeader, 'lineage' | 'version' | 'sha256' | 'bytes' | 'createdAt'>,
  ): Buffer | null {
    let onnx: Uint8Array;
    try {
      onnx = exportResidualOnnx(residualPolicySpec(spec), join(this.outDir, 'residual.onnx'));
      // On disk before any actor sees it, so a restart never reuses the number.
      writeFileAtomic(this.versionFile, JSON.stringify({ version: spec.version }));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === undefined) throw err;
      // A disk that refuses the files (full): this one is not published, training goes on.
      this.log(
        `publishing residual v${spec.version} failed (${(err as Error).message.split('\n')[0]}); ` +
          `the next publish tries again. Free disk space in ${this.outDir}`,
      );
      return null;
    }
    const msg = encodePolicyMessage(
      { lineage: this.lineage, version: spec.version, ...header, createdAt: new Date().toISOString() },
      onnx,
    );
    return Buffer.from(msg);
  }
}
