/**
 * The main thread's handle on a control loop that runs in its own worker thread (loop-worker.ts):
 * the ControlLoop surface (start, stop, runFor, stats, events$, transitions$) plus the commands
 * that cross into the loop's thread: e-stop, residual scale, a new residual version.
 */
import { Subject, type Observable } from 'rxjs';
import type { Worker } from 'node:worker_threads';
import type { CameraFrames, Transition } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { startModuleWorker, siblingModule } from '../util/module-worker.js';
import { checkResidualSwap, planResidualSwap } from './fused-policy.js';
import type { LoopEvent, LoopStats } from './loop.js';
import type { LoopPlan } from './loop-plan.js';
import type { ErrorInfo, FromLoop, LoopWorkerData, ToLoop } from './loop-worker.js';
import { nowMs } from './scheduler.js';
import type { SharedRobotBridge } from './shared-robot.js';
import type { PriorityOutcome } from './thread-priority.js';

export interface WorkerLoopOptions {
  /**
   * The main-thread robot the plan's source reads through shared memory (plan.source must be
   * bridge.sourceSpec): started with the loop, e-stopped with it, closed after its last command.
   */
  bridge?: SharedRobotBridge;
  /** Events and transitions cross to this thread at most this often. Default 20 ms. */
  reportEveryMs?: number;
  /** Stats snapshots (what stats() returns while running) this often. Default 250 ms. */
  statsEveryMs?: number;
}

function toError(info: ErrorInfo): ResrtError {
  return new ResrtError(info.message, info.hint);
}

function emptyStats(rateHz: number): LoopStats {
  const none = { count: 0, mean: NaN, p50: NaN, p90: NaN, p99: NaN, max: NaN };
  return {
    rateHz,
    durationS: 0,
    achievedHz: 0,
    ticks: 0,
    deadlineMisses: 0,
    overruns: 0,
    skippedTicks: 0,
    safeActions: 0,
    episodes: 0,
    events: {},
    latency: { obsAge: none, policy: none, safety: none, actuate: none, endToEnd: none, jitter: none },
  };
}

export class WorkerControlLoop {
  readonly events$: Observable<LoopEvent>;
  readonly transitions$: Observable<Transition>;
  /** 'fused', or why base and residual run as separate calls. */
  readonly fusion: string;
  /** How the policy runs in the loop thread: 'native' (synchronous), 'public-api', or 'two-call'. */
  readonly sessionMode: string;
  readonly kind: string;
  readonly obsDim: number;
  readonly actionDim: number;
  /** The source's cameras (name -> size). */
  readonly cameras: Record<string, { width: number; height: number }>;
  /** The loop thread's scheduling: what plan.priority got, or why not and how to allow it. */
  readonly priority: PriorityOutcome;
  private readonly events = new Subject<LoopEvent>();
  private readonly transitions = new Subject<Transition>();
  private latestStats: LoopStats;
  private state: 'idle' | 'running' | 'stopping' | 'stopped' = 'idle';
  private stopped: Promise<LoopStats>;
  private resolveStopped!: (stats: LoopStats) => void;
  private started: { resolve: () => void; reject: (err: Error) => void } | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: number) => void; reject: (e: Error) => void }>();
  /** Loop-thread time + this = this thread's time (performance.now of both). */
  private readonly clockOffsetMs: number;

  private constructor(
    private readonly worker: Worker,
    private readonly plan: LoopPlan,
    ready: Extract<FromLoop, { type: 'ready' }>,
    private readonly bridge: SharedRobotBridge | undefined,
  ) {
    this.clockOffsetMs = ready.timeOrigin - performance.timeOrigin;
    this.fusion = ready.fusion;
    this.sessionMode = ready.sessionMode;
    this.kind = ready.kind;
    this.obsDim = ready.obsDim;
    this.actionDim = ready.actionDim;
    this.cameras = ready.cameras;
    this.priority = ready.priority;
    this.latestStats = emptyStats(plan.rateHz);
    this.events$ = this.events.asObservable();
    this.transitions$ = this.transitions.asObservable();
    const stopped = new Promise<LoopStats>((r) => (this.resolveStopped = r));
    // The bridge forwards the loop's last command (its safe action) before stop() resolves.
    this.stopped = stopped.then(async (stats) => {
      await bridge?.close();
      return stats;
    });
    bridge?.start();
    worker.on('message', (msg: FromLoop) => this.onMessage(msg));
    worker.on('error', (err) => this.onWorkerGone(`the loop thread failed: ${err.message}`));
    worker.on('exit', (code) => this.onWorkerGone(`the loop thread exited (code ${code})`));
  }

  /**
   * Starts the loop thread and builds the plan's loop there (policy sessions, safety layer, the
   * source's env or robot link). Rejects with the loop thread's error when that fails.
   */
  static async create(plan: LoopPlan, options: WorkerLoopOptions = {}): Promise<WorkerControlLoop> {
    const data: LoopWorkerData = {
      resrtLoop: true,
      plan,
      reportEveryMs: options.reportEveryMs,
      statsEveryMs: options.statsEveryMs,
    };
    const worker = startModuleWorker(siblingModule(import.meta.url, 'loop-worker'), { workerData: data });
    const ready = await new Promise<Extract<FromLoop, { type: 'ready' }>>((resolve, reject) => {
      const onMessage = (msg: FromLoop): void => {
        if (msg.type === 'ready') done(() => resolve(msg));
        else if (msg.type === 'failed') done(() => reject(toError(msg.error)));
      };
      const onError = (err: Error): void => done(() => reject(err));
      const onExit = (code: number): void =>
        done(() =>
          reject(new ResrtError(`the control loop thread exited (code ${code}) before it was ready`)),
        );
      const done = (settle: () => void): void => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
        settle();
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    }).catch(async (err: unknown) => {
      await worker.terminate();
      throw err;
    });
    return new WorkerControlLoop(worker, plan, ready, options.bridge);
  }

  get running(): boolean {
    return this.state === 'running';
  }

  async start(): Promise<void> {
    if (this.state !== 'idle')
      throw new ResrtError(`the control loop is ${this.state}; create a new one to run again`);
    this.state = 'running';
    await new Promise<void>((resolve, reject) => {
      this.started = { resolve, reject };
      this.send({ type: 'start' });
    });
  }

  /** Stops the loop (it sends the safe action last), ends the thread, returns the final stats. */
  async stop(): Promise<LoopStats> {
    if (this.state === 'idle') {
      this.state = 'stopping';
      this.send({ type: 'stop' });
    } else if (this.state === 'running') {
      this.state = 'stopping';
      this.send({ type: 'stop' });
    }
    return this.stopped;
  }

  async runFor(durationMs: number): Promise<LoopStats> {
    await this.start();
    await new Promise((r) => setTimeout(r, durationMs));
    return this.stop();
  }

  /** The latest snapshot from the loop thread (every statsEveryMs while running; final after stop). */
  stats(): LoopStats {
    return this.latestStats;
  }

  /** Latching e-stop inside the loop thread (ControlLoop.estop): reaches it between two ticks. */
  estop(source: string, detail?: string): void {
    this.send({ type: 'estop', source, detail });
    // A main-thread robot hears it from here at once, not after the loop thread's next tick.
    this.bridge?.estop(detail ? `${source}: ${detail}` : source);
  }

  /** The residual's weight (the safety layer's lambda), from the next tick on. */
  setScale(value: number): void {
    if (!Number.isFinite(value) || value < 0) {
      throw new ResrtError(
        `residual scale ${value} is not a finite non-negative number`,
        'use a scale in [0, 1]',
      );
    }
    this.send({ type: 'scale', value });
  }

  /**
   * Swaps in a new residual ONNX file; resolves with its version once the loop uses it. A fused
   * loop gets the new fused model planned and verified in this thread; the loop thread only opens
   * the session (about a millisecond of its time).
   */
  async setResidual(path: string): Promise<number> {
    if (this.state === 'stopped' || this.state === 'stopping')
      throw new ResrtError('the control loop has stopped; start a new one with this residual');
    // Checked (and, for a fused loop, fused and verified) in this thread against the running base.
    const files = { expectObsDim: this.obsDim, expectActionDim: this.actionDim, cameras: this.cameras };
    let msg: ToLoop;
    if (this.fusion === 'fused') {
      const plan = await planResidualSwap(this.plan.policy.base, path, files);
      msg = { type: 'residual', id: this.nextId++, plan };
    } else {
      await checkResidualSwap(this.plan.policy.base, path, files);
      msg = { type: 'residual', id: this.nextId++, path };
    }
    return new Promise<number>((resolve, reject) => {
      this.pending.set(msg.id, { resolve, reject });
      this.send(msg);
    });
  }

  private send(msg: ToLoop): void {
    if (this.state === 'stopped') return;
    this.worker.postMessage(msg);
  }

  private onMessage(msg: FromLoop): void {
    switch (msg.type) {
      case 'started':
        this.started?.resolve();
        this.started = null;
        return;
      case 'report':
        this.deliver(msg.events, msg.transitions);
        if (msg.stats) this.latestStats = msg.stats;
        return;
      case 'residual': {
        const waiter = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        if (msg.error) waiter?.reject(toError(msg.error));
        else waiter?.resolve(msg.version ?? 0);
        return;
      }
      case 'failed':
        this.started?.reject(toError(msg.error));
        this.started = null;
        return;
      case 'stopped':
        this.deliver(msg.events, msg.transitions);
        this.latestStats = msg.stats;
        this.finish();
        void this.worker.terminate();
        return;
      case 'ready':
        return;
    }
  }

  private deliver(events: LoopEvent[], transitions: Transition[]): void {
    for (const t of transitions) this.transitions.next(this.onThisClock(t));
    for (const e of events) this.events.next({ ...e, atMs: e.atMs + this.clockOffsetMs });
  }

  /** Camera capture times move to this thread's clock (the pixel buffers are not copied again). */
  private onThisClock(t: Transition): Transition {
    if (!t.frames && !t.nextFrames) return t;
    const shift = (frames: CameraFrames | undefined): CameraFrames | undefined =>
      frames &&
      Object.fromEntries(
        Object.entries(frames).map(([name, f]) => [
          name,
          { ...f, capturedAtMs: f.capturedAtMs + this.clockOffsetMs },
        ]),
      );
    const out: Transition = { ...t };
    if (t.frames) out.frames = shift(t.frames);
    if (t.nextFrames) out.nextFrames = shift(t.nextFrames);
    return out;
  }

  /** The thread died without its 'stopped' message (a native crash, out of memory, terminate). */
  private onWorkerGone(why: string): void {
    if (this.state === 'stopped') return;
    this.events.next({
      kind: 'loop_crash',
      source: 'loop',
      atMs: nowMs(),
      tick: this.latestStats.ticks,
      detail: `${why}; the device holds its last command only until it expires (validForMs)`,
    });
    this.started?.reject(new ResrtError(why));
    this.started = null;
    this.finish();
  }

  private finish(): void {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    for (const waiter of this.pending.values())
      waiter.reject(new ResrtError('the control loop stopped first'));
    this.pending.clear();
    this.started?.reject(new ResrtError('the control loop stopped before it started'));
    this.started = null;
    this.transitions.complete();
    this.events.complete();
    this.resolveStopped(this.latestStats);
  }
}
