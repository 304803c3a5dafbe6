/**
 * The learner side of the actor/learner split. `LearnerHost` owns the networks and both replays and
 * runs updates up to the number the actor allows (UTD × env steps); it publishes the actor's
 * weights as an MlpPolicySpec so the acting thread runs no training engine. The same host runs
 * either in-process (deterministic) or in a worker_threads Worker beside the acting thread — this
 * file is also that worker's entry point.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { MlpPolicySpec } from '../types.js';
import { initEngine, type DevicePreference } from '../nn/index.js';
import { ResrtError } from '../util/errors.js';
import type { ResidualConfig } from './config.js';
import { ReplayBuffer, type StepBatch } from './replay.js';
import { DivergenceError, ResidualLearner, type LearnerDims, type UpdateStats } from './td3.js';
import { readCheckpoint, writeCheckpoint } from './checkpoint.js';
import { residualPolicySpec } from './export.js';
import type { PublishedEncoder } from './learned-residual.js';

export interface HostInit {
  cfg: ResidualConfig;
  /** obsDim is the learner's: featureDim camera features, then the state. */
  dims: LearnerDims;
  /** Leading observation columns that are cached camera features (0: state only). */
  featureDim?: number;
  seed: number;
  /** Relabelled demonstrations, or null. */
  demos: StepBatch | null;
  outDir: string;
  /** Continue from outDir's checkpoint. */
  resume: boolean;
  device: DevicePreference;
  /** onnxruntime intra-op threads (default: src/nn's `defaultThreads()`). */
  threads?: number;
  /** Publish the actor every this many updates. */
  publishEvery: number;
  /** Written into the checkpoint manifest and checked on resume. */
  meta: Record<string, unknown>;
}

export interface HostReady {
  backend: string;
  description: string;
  /** The trainer state of the checkpoint resumed from, if any. */
  resumedTrainer: unknown;
  updates: number;
}

export interface PublishedPolicy {
  spec: MlpPolicySpec;
  version: number;
  /** The learned encoders (encoder 'learned'): the spec's first input is their features. */
  encoder?: PublishedEncoder;
}

export interface HostProgress {
  updates: number;
  actorUpdates: number;
  last: UpdateStats | null;
  /** Updates per second over the last reporting window. */
  updatesPerSec: number;
}

export type ToHost =
  | { type: 'init'; init: HostInit }
  | { type: 'push'; batch: StepBatch }
  | { type: 'allow'; updates: number }
  | { type: 'checkpoint'; trainer: unknown; id: number }
  | { type: 'stop' };

export type FromHost =
  | { type: 'ready'; ready: HostReady }
  | { type: 'policy'; policy: PublishedPolicy }
  | { type: 'progress'; progress: HostProgress }
  | { type: 'checkpointed'; id: number; generation: number; bytes: number }
  | { type: 'error'; message: string; hint?: string; diverged: boolean; update?: number }
  | { type: 'stopped' };

export class LearnerHost {
  private learner!: ResidualLearner;
  private init!: HostInit;
  private allowed = 0;
  private last: UpdateStats | null = null;
  private lastPublishedAt = -1;
  private lastPublished: PublishedPolicy | null = null;
  private windowStart = { t: performance.now(), updates: 0 };
  private rate = 0;

  constructor(private readonly emit: (msg: FromHost, transfer?: ArrayBuffer[]) => void) {}

  async start(init: HostInit): Promise<HostReady> {
    this.init = init;
    const engine = await initEngine({ device: init.device, threads: init.threads });
    let demos: ReplayBuffer | null = null;
    if (init.demos && init.demos.count > 0) {
      const frameCameras = init.demos.frames ? init.dims.frameCameras : undefined;
      demos = new ReplayBuffer(init.demos.count, init.dims.obsDim, init.dims.actionDim, frameCameras);
      demos.addBatch(init.demos);
      // Demo episodes are complete; the last step of each carries its own flag.
    }
    this.learner = await ResidualLearner.create(engine, init.cfg, init.dims, init.seed, demos);
    let resumedTrainer: unknown = null;
    if (init.resume) {
      const ck = readCheckpoint(init.outDir);
      if (ck) {
        checkMeta(ck.meta, init.meta, init.outDir);
        this.learner.setState(ck.learner, init.outDir);
        const online = this.learner.replay.online;
        online.restoreFrom(ck.online);
        online.markEpisodeBoundary();
        if (ck.demos && this.learner.replay.demos) this.learner.replay.demos.restoreFrom(ck.demos);
        const saved = ck.trainer as SavedHostState;
        resumedTrainer = saved.trainer;
        // The actor continues with exactly the policy it was acting with at the checkpoint.
        this.lastPublishedAt = saved.lastPublishedAt;
        const published = saved.published;
        this.lastPublished = published
          ? {
              spec: specFromJson(published.spec),
              version: published.version,
              ...(published.encoder ? { encoder: specFromJson<PublishedEncoder>(published.encoder) } : {}),
            }
          : null;
      }
    }
    this.allowed = this.learner.updates;
    if (this.lastPublished) this.emit({ type: 'policy', policy: this.lastPublished });
    else this.publish();
    return {
      backend: engine.device,
      description: engine.description,
      resumedTrainer,
      updates: this.learner.updates,
    };
  }

  get updates(): number {
    return this.learner.updates;
  }

  push(batch: StepBatch): void {
    this.learner.replay.online.addBatch(batch);
    if (batch.mixingShare !== undefined) this.learner.mixingShare = batch.mixingShare;
  }

  allow(updates: number): void {
    this.allowed = Math.max(this.allowed, updates);
  }

  /** True while allowed updates remain. */
  get pending(): boolean {
    return this.learner.updates < this.allowed;
  }

  /** Runs up to `max` of the allowed updates; returns how many ran. */
  async runSome(max: number): Promise<number> {
    let n = 0;
    while (n < max && this.learner.updates < this.allowed) {
      if (this.learner.updates === 0 && this.init.cfg.normalizeObs && !this.learner.obsMean) {
        const { mean, std } = this.learner.computeObsNormalization();
        this.learner.setObsNormalization(mean, std);
      }
      this.last = await this.learner.update();
      n++;
      if (this.learner.updates - this.lastPublishedAt >= this.init.publishEvery) this.publish();
    }
    if (n > 0) this.report();
    return n;
  }

  private report(): void {
    const now = performance.now();
    const dt = now - this.windowStart.t;
    if (dt >= 500) {
      this.rate = ((this.learner.updates - this.windowStart.updates) * 1000) / dt;
      this.windowStart = { t: now, updates: this.learner.updates };
    }
    this.emit({
      type: 'progress',
      progress: {
        updates: this.learner.updates,
        actorUpdates: this.learner.actorUpdates,
        last: this.last,
        updatesPerSec: this.rate,
      },
    });
  }

  policySpec(): MlpPolicySpec {
    const l = this.learner;
    return residualPolicySpec({
      layers: l.actorLayers(),
      obsDim: l.dims.obsDim,
      featureDim: this.init.featureDim ?? 0,
      learnedFeatures: l.encoder?.features ?? 0,
      actionDim: l.dims.actionDim,
      actionScale: l.cfg.actionScale,
      useBase: l.cfg.useBase,
      obsMean: l.obsMean,
      obsStd: l.obsStd,
      version: l.actorUpdates,
      encoder: l.cfg.encoder,
    });
  }

  /** The learned encoders' current parameters (copies), or undefined without a learned encoder. */
  publishedEncoder(): PublishedEncoder | undefined {
    const net = this.learner.encoder;
    if (!net) return undefined;
    const flat = this.learner.params('encoder');
    const params = Object.fromEntries(
      net.layout.entries.map((e) => [
        e.name,
        { shape: [...e.shape], data: net.layout.view(flat, e.name).slice() },
      ]),
    );
    return { cameras: net.cameras, params };
  }

  publish(): void {
    this.lastPublishedAt = this.learner.updates;
    const encoder = this.publishedEncoder();
    this.lastPublished = {
      spec: this.policySpec(),
      version: this.learner.actorUpdates,
      ...(encoder ? { encoder } : {}),
    };
    this.emit({ type: 'policy', policy: this.lastPublished });
  }

  checkpoint(trainer: unknown): { generation: number; bytes: number } {
    const l = this.learner;
    const saved: SavedHostState = {
      trainer,
      lastPublishedAt: this.lastPublishedAt,
      published: this.lastPublished
        ? {
            spec: specToJson(this.lastPublished.spec),
            version: this.lastPublished.version,
            ...(this.lastPublished.encoder ? { encoder: specToJson(this.lastPublished.encoder) } : {}),
          }
        : null,
    };
    return writeCheckpoint(this.init.outDir, {
      learner: l.getState(),
      online: l.replay.online,
      demos: l.replay.demos,
      trainer: saved,
      meta: this.init.meta,
    });
  }

  async dispose(): Promise<void> {
    await this.learner?.dispose();
  }
}

/** What the host adds to the trainer's state in a checkpoint. */
interface SavedHostState {
  trainer: unknown;
  lastPublishedAt: number;
  published: { spec: unknown; version: number; encoder?: unknown } | null;
}

/** MlpPolicySpec (or any data) with every Float32Array as a plain array (float32 values survive JSON exactly). */
function specToJson(spec: object): unknown {
  return JSON.parse(
    JSON.stringify(spec, (_k, v: unknown) => (v instanceof Float32Array ? { f32: Array.from(v) } : v)),
  );
}

export function specFromJson<Spec = MlpPolicySpec>(json: unknown): Spec {
  return JSON.parse(JSON.stringify(json), (_k, v: unknown) =>
    v && typeof v === 'object' && 'f32' in v && Array.isArray((v as { f32: unknown }).f32)
      ? Float32Array.from((v as { f32: number[] }).f32)
      : v,
  ) as Spec;
}

/**
 * A checkpoint written before a config key existed lacks it; it resumes with the key's value in
 * this run (heldBackBc, added later, never acts on unmixed runs). Every key both sides know must match.
 */
function checkMeta(saved: Record<string, unknown>, now: Record<string, unknown>, outDir: string): void {
  const savedConfig = saved.config;
  const nowConfig = now.config;
  const known =
    savedConfig && typeof savedConfig === 'object' && nowConfig && typeof nowConfig === 'object'
      ? { ...saved, config: { ...nowConfig, ...savedConfig } }
      : saved;
  for (const key of Object.keys(now)) {
    if (JSON.stringify(known[key]) !== JSON.stringify(now[key])) {
      throw new ResrtError(
        `the checkpoint in ${outDir} was written with ${key} = ${JSON.stringify(known[key])}, this run has ${JSON.stringify(now[key])}`,
        'resume with the same task, base policy and config, or use a new outDir',
      );
    }
  }
}

export function errorMessage(err: unknown): FromHost {
  if (err instanceof DivergenceError)
    return { type: 'error', message: err.message, diverged: true, update: err.update };
  if (err instanceof ResrtError)
    return { type: 'error', message: err.message, hint: err.hint, diverged: false };
  const e = err as Error;
  return { type: 'error', message: e?.stack ?? String(err), diverged: false };
}

// -- worker entry -------------------------------------------------------------------------------

interface WorkerMarker {
  resrtLearner?: boolean;
}

if (!isMainThread && parentPort && (workerData as WorkerMarker | undefined)?.resrtLearner) {
  const port = parentPort;
  const host = new LearnerHost((msg, transfer) => port.postMessage(msg, transfer ?? []));
  let stopping = false;
  let scheduled = false;
  const fail = (err: unknown): void => {
    if (stopping) return;
    stopping = true;
    port.postMessage(errorMessage(err));
  };
  // Messages and update slices run one after another: an update is one awaited onnxruntime call,
  // and a checkpoint or a push must never land in the middle of one (the checkpoint would hold the
  // RNG after the batch was drawn but the weights before the step).
  let chain: Promise<void> = Promise.resolve();
  const enqueue = (job: () => Promise<void> | void): void => {
    chain = chain.then(job).catch(fail);
  };
  // Updates run in small slices so pushes and allowances are received between them.
  const schedule = (): void => {
    if (scheduled || stopping) return;
    scheduled = true;
    setImmediate(() =>
      enqueue(async () => {
        scheduled = false;
        if (stopping) return;
        await host.runSome(4);
        if (host.pending) schedule();
      }),
    );
  };
  const handle = async (msg: ToHost): Promise<void> => {
    if (stopping && msg.type !== 'stop') return;
    switch (msg.type) {
      case 'init': {
        const ready = await host.start(msg.init);
        port.postMessage({ type: 'ready', ready } satisfies FromHost);
        break;
      }
      case 'push':
        host.push(msg.batch);
        break;
      case 'allow':
        host.allow(msg.updates);
        schedule();
        break;
      case 'checkpoint': {
        const r = host.checkpoint(msg.trainer);
        port.postMessage({ type: 'checkpointed', id: msg.id, ...r } satisfies FromHost);
        break;
      }
      case 'stop':
        stopping = true;
        await host.dispose();
        port.postMessage({ type: 'stopped' } satisfies FromHost);
        break;
    }
  };
  port.on('message', (msg: ToHost) => enqueue(() => handle(msg)));
}
