/**
 * The acting side's link to the learner: in a worker thread (WorkerLink, the default) or in-process
 * (InProcessLink, deterministic). Both drive the same LearnerHost (./learner-worker.ts).
 */
import '../util/ort-telemetry.js';
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { ResrtError } from '../util/errors.js';
import type { StepBatch } from './replay.js';
import {
  LearnerHost,
  errorMessage,
  type FromHost,
  type HostInit,
  type HostProgress,
  type HostReady,
  type PublishedPolicy,
  type ToHost,
} from './learner-worker.js';
import type { TrainerState } from './trainer-types.js';

export interface LearnerLink {
  start(init: HostInit): Promise<HostReady>;
  push(batch: StepBatch): void;
  /** Lets the learner run up to `target` updates and waits until it has done at least `atLeast`. */
  advance(target: number, atLeast: number): Promise<void>;
  checkpoint(trainer: TrainerState): Promise<{ generation: number; bytes: number }>;
  policy(): PublishedPolicy | null;
  progress(): HostProgress | null;
  close(): Promise<void>;
}

export class InProcessLink implements LearnerLink {
  private host: LearnerHost;
  private latest: PublishedPolicy | null = null;
  private prog: HostProgress | null = null;

  constructor() {
    this.host = new LearnerHost((msg) => {
      if (msg.type === 'policy') this.latest = msg.policy;
      else if (msg.type === 'progress') this.prog = msg.progress;
    });
  }
  start(init: HostInit): Promise<HostReady> {
    return this.host.start(init);
  }
  push(batch: StepBatch): void {
    this.host.push(batch);
  }
  async advance(target: number): Promise<void> {
    this.host.allow(target);
    await this.host.runSome(Number.MAX_SAFE_INTEGER);
  }
  async checkpoint(trainer: TrainerState): Promise<{ generation: number; bytes: number }> {
    return this.host.checkpoint(trainer);
  }
  policy(): PublishedPolicy | null {
    return this.latest;
  }
  progress(): HostProgress | null {
    return this.prog;
  }
  async close(): Promise<void> {
    await this.host.dispose();
  }
}

/**
 * Starts the learner worker. Compiled (dist/*.js) it is a plain module worker; from .ts sources
 * (tsx, vitest) the worker first registers tsx's ESM hooks through its API and then imports the
 * .ts entry — hooks registered by the parent's --import do not reach worker threads on Node 20.
 */
function startWorker(): Worker {
  const workerData = { resrtLearner: true };
  if (!import.meta.url.endsWith('.ts')) {
    return new Worker(new URL('./learner-worker.js', import.meta.url), { workerData });
  }
  const entry = new URL('./learner-worker.ts', import.meta.url).href;
  const tsxDir = dirname(createRequire(import.meta.url).resolve('tsx/package.json'));
  const api = pathToFileURL(join(tsxDir, 'dist', 'esm', 'api', 'index.mjs')).href;
  const bootstrap = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`;
  return new Worker(bootstrap, { eval: true, workerData });
}

export class WorkerLink implements LearnerLink {
  private worker: Worker;
  private latest: PublishedPolicy | null = null;
  private prog: HostProgress | null = null;
  // Updates done as the learner started (a resumed checkpoint's count): a resumed run that owes no
  // updates gets no progress message, and must not wait for one.
  private updatesAtStart = 0;
  private failure: Error | null = null;
  private waiters: (() => void)[] = [];
  private readyResolve: ((r: HostReady) => void) | null = null;
  private checkpointResolve = new Map<number, (r: { generation: number; bytes: number }) => void>();
  private nextId = 1;
  private exited = false;

  constructor() {
    this.worker = startWorker();
    this.worker.on('message', (msg: FromHost) => this.onMessage(msg));
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => {
      this.exited = true;
      if (code !== 0 && !this.failure) this.fail(new Error(`the learner worker exited with code ${code}`));
    });
  }

  private onMessage(msg: FromHost): void {
    switch (msg.type) {
      case 'ready':
        this.readyResolve?.(msg.ready);
        break;
      case 'policy':
        this.latest = msg.policy;
        break;
      case 'progress':
        this.prog = msg.progress;
        break;
      case 'checkpointed':
        this.checkpointResolve.get(msg.id)?.({ generation: msg.generation, bytes: msg.bytes });
        this.checkpointResolve.delete(msg.id);
        break;
      case 'error':
        this.fail(
          msg.diverged
            ? new DivergedError(msg.message, msg.update ?? -1)
            : new ResrtError(msg.message, msg.hint),
        );
        break;
      case 'stopped':
        break;
    }
    for (const w of this.waiters.splice(0)) w();
  }

  private fail(err: Error): void {
    if (!this.failure) this.failure = err;
    for (const w of this.waiters.splice(0)) w();
  }

  private post(msg: ToHost, transfer: ArrayBuffer[] = []): void {
    this.worker.postMessage(msg, transfer);
  }

  private async wait(until: () => boolean): Promise<void> {
    while (!until()) {
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (this.failure) throw this.failure;
  }

  async start(init: HostInit): Promise<HostReady> {
    const ready = new Promise<HostReady>((resolve) => (this.readyResolve = resolve));
    this.post({ type: 'init', init });
    let result: HostReady | null = null;
    void ready.then((r) => (result = r));
    await this.wait(() => result !== null);
    const r = result as unknown as HostReady;
    this.updatesAtStart = r.updates;
    return r;
  }

  push(batch: StepBatch): void {
    if (this.failure) throw this.failure;
    // Frames are packed fresh for each batch: hand their buffers over instead of copying them.
    this.post({ type: 'push', batch }, batch.frames?.data.map((d) => d.buffer as ArrayBuffer) ?? []);
  }

  async advance(target: number, atLeast: number): Promise<void> {
    this.post({ type: 'allow', updates: target });
    await this.wait(() => (this.prog?.updates ?? this.updatesAtStart) >= atLeast || atLeast <= 0);
  }

  async checkpoint(trainer: TrainerState): Promise<{ generation: number; bytes: number }> {
    const id = this.nextId++;
    let result: { generation: number; bytes: number } | null = null;
    this.checkpointResolve.set(id, (r) => (result = r));
    this.post({ type: 'checkpoint', trainer, id });
    await this.wait(() => result !== null);
    return result as unknown as { generation: number; bytes: number };
  }

  policy(): PublishedPolicy | null {
    return this.latest;
  }
  progress(): HostProgress | null {
    return this.prog;
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const stopped = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    if (!this.failure) this.post({ type: 'stop' });
    // The worker has nothing left to do after 'stop'; terminate ends its event loop.
    setTimeout(() => void this.worker.terminate(), 200).unref();
    await stopped;
  }
}

/** The learner diverged (NaN/∞ loss). */
export class DivergedError extends ResrtError {
  constructor(
    message: string,
    readonly update: number,
  ) {
    super(message);
  }
}

/** A diverged learner becomes one message that says the last good checkpoint is kept. */
export function asDivergence(err: unknown, outDir: string): unknown {
  const m = errorMessage(err);
  if (m.type === 'error' && (m.diverged || err instanceof DivergedError)) {
    const kept = existsSync(join(outDir, 'checkpoint.json'));
    return new ResrtError(
      `${m.message.split('\n')[0]}; training stopped. ${kept ? `The last good checkpoint in ${outDir} is kept.` : 'No checkpoint had been written yet.'}`,
      kept
        ? 'lower criticLr/actorLr or gradClip, then rerun with --resume to continue from the last good checkpoint'
        : 'lower criticLr/actorLr or gradClip and check rewards/observations for NaN, then start again',
    );
  }
  return err;
}
