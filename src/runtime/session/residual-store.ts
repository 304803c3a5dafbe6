/**
 * The actor's residual: a message from the learner is verified (sha256, dims, a newer version),
 * written atomically to the state folder and loaded with onnxruntime; only then does it become
 * the candidate that the actor swaps in at the next episode start. The last good residual is
 * reloaded after a restart, so an actor without a learner keeps the best it had.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadResidual } from '../camera-residual.js';
import type { ResidualModel } from '../compose.js';
import { writeFileAtomic } from '../../util/files.js';
import { decodePolicyMessage, sha256Hex, type PolicyHeader } from './protocol.js';

export interface LoadedResidual {
  /** A state-only residual, or a camera residual reading the base's embedding too. */
  policy: ResidualModel & { close(): Promise<void> };
  header: PolicyHeader;
}

export class ResidualStore {
  private candidate: LoadedResidual | null = null;
  private newest = -1;
  private lineage: string | null = null;
  private chain: Promise<void> = Promise.resolve();
  rejected = 0;
  lastError: string | null = null;

  constructor(
    private readonly dir: string,
    private readonly obsDim: number,
    private readonly actionDim: number,
  ) {}

  private get onnxPath(): string {
    return join(this.dir, 'residual.onnx');
  }
  private get headerPath(): string {
    return join(this.dir, 'residual.json');
  }

  /** The residual last accepted before a restart, if its file still matches its checksum. */
  async loadLastGood(): Promise<LoadedResidual | null> {
    if (!existsSync(this.onnxPath) || !existsSync(this.headerPath)) return null;
    try {
      const header = JSON.parse(readFileSync(this.headerPath, 'utf8')) as PolicyHeader;
      const bytes = readFileSync(this.onnxPath);
      if (sha256Hex(bytes) !== header.sha256) throw new Error('residual.onnx does not match its sha256');
      const policy = await this.load(this.onnxPath);
      this.newest = header.version;
      this.lineage = header.lineage;
      return { policy, header };
    } catch (err) {
      this.lastError = `last good residual unusable: ${(err as Error).message.split('\n')[0]}`;
      return null;
    }
  }

  private load(path: string): Promise<LoadedResidual['policy']> {
    return loadResidual(path, {
      expectObsDim: this.obsDim,
      expectActionDim: this.actionDim,
      warmupRuns: 2,
    });
  }

  /** Verifies and loads a residual message in the background; bad ones are counted and dropped. */
  offer(payload: Uint8Array): void {
    this.chain = this.chain.then(() => this.accept(payload));
  }

  /** Resolves when every offered message has been handled. */
  settled(): Promise<void> {
    return this.chain;
  }

  private async accept(payload: Uint8Array): Promise<void> {
    try {
      const { header, onnx } = decodePolicyMessage(payload);
      // A retained copy of what we run, or an older one. Another lineage (a new learner folder)
      // starts its own numbering, and its residuals are taken whatever their number.
      if (header.lineage === this.lineage && header.version <= this.newest) return;
      if (header.obsDim !== this.obsDim || header.actionDim !== this.actionDim) {
        throw new Error(
          `residual v${header.version} is for obs/action ${header.obsDim}/${header.actionDim}, this actor has ${this.obsDim}/${this.actionDim}`,
        );
      }
      const staged = join(this.dir, `.residual-v${header.version}.onnx`);
      writeFileAtomic(staged, onnx);
      let policy: LoadedResidual['policy'];
      try {
        policy = await this.load(staged);
      } finally {
        rmSync(staged, { force: true });
      }
      // Persist as the last good one only once onnxruntime accepted it.
      writeFileAtomic(this.onnxPath, onnx);
      writeFileAtomic(this.headerPath, JSON.stringify(header));
      const old = this.candidate;
      this.candidate = { policy, header };
      this.newest = header.version;
      this.lineage = header.lineage;
      if (old) await old.policy.close();
    } catch (err) {
      this.rejected++;
      this.lastError = (err as Error).message.split('\n')[0];
    }
  }

  /** The newest verified residual not yet taken, handed over once. */
  take(): LoadedResidual | null {
    const c = this.candidate;
    this.candidate = null;
    return c;
  }

  async close(): Promise<void> {
    await this.chain;
    if (this.candidate) await this.candidate.policy.close();
    this.candidate = null;
  }
}
