/**
 * The live control loop: per tick, latest observation (with its camera frames where the source has
 * cameras) -> policy (base + residual) -> safety hook -> actuator, at a fixed rate, with
 * latest-value semantics (a slow stage never builds a backlog), and every failure turned into the
 * safe action plus an event instead of a dead loop.
 */
import { Subject, type Observable, type Subscription, EMPTY } from 'rxjs';
import type { CameraFrames, Policy, SafetyDecision, SafetyEvent, SafetyHook, Transition } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { LatencyHistogram, type Percentiles } from '../util/stats.js';
import type { ComposedStep } from './compose.js';
import { fixedRate, nowMs, type SchedulerOptions, type Tick } from './scheduler.js';
import type { ActuationRecord, ObservationSource } from './sources.js';

export type LoopEventKind =
  | 'deadline_miss'
  | 'overrun'
  | 'skipped_ticks'
  | 'no_observation'
  | 'stale_observation'
  | 'source_fault'
  | 'policy_error'
  | 'invalid_action'
  | 'safety_error'
  | 'actuator_error'
  | 'late_result_dropped'
  | 'episode_end'
  | 'estop'
  | 'loop_crash'
  | 'started'
  | 'stopped';

export interface LoopEvent {
  /** A LoopEventKind, or the kind of a safety event passed through from the hook. */
  kind: LoopEventKind | string;
  source: 'loop' | 'safety';
  atMs: number;
  tick: number;
  detail?: string;
}

/** The identity hook: passes valid proposals through; the safe action when there is none. */
export function passThroughSafety(actionDim: number, safeAction?: ArrayLike<number>): SafetyHook {
  const safe = safeAction ? Float32Array.from(safeAction) : new Float32Array(actionDim);
  if (safe.length !== actionDim) {
    throw new ResrtError(
      `safe action has ${safe.length} values, expected ${actionDim}`,
      'give one safe value per action dimension',
    );
  }
  return {
    filter(proposed: Float32Array | null): SafetyDecision {
      if (proposed) return { action: proposed, events: [], overridden: false };
      return { action: Float32Array.from(safe), events: [], overridden: true };
    },
    safeAction: () => Float32Array.from(safe),
  };
}

export interface ControlLoopOptions {
  source: ObservationSource;
  policy: Policy;
  /** Default passThroughSafety(actionDim, safeAction). */
  safety?: SafetyHook;
  /** Used by the default hook and when the hook itself fails. Default zeros. */
  safeAction?: ArrayLike<number>;
  rateHz: number;
  /** Observations older than this yield the safe action. Default max(3 periods, 10 ms). */
  maxObsAgeMs?: number;
  /**
   * A tick that finds the previous one still computing: 'safe' sends the safe action, 'hold'
   * sends nothing (the device keeps its last command until validForMs expires). Default 'safe'.
   */
  onOverrun?: 'safe' | 'hold';
  /** Called at start and after each episode reset (e.g. to set the residual scale for the episode). */
  onEpisodeStart?: (episode: number) => void;
  scheduler?: SchedulerOptions;
  /** How long stop() waits for a tick still computing before it sends the safe action anyway. Default 1000 ms. */
  stopTimeoutMs?: number;
}

export type LatencyStage = 'obsAge' | 'policy' | 'safety' | 'actuate' | 'endToEnd' | 'jitter';

export interface LoopStats {
  rateHz: number;
  durationS: number;
  /** Ticks fired / duration. */
  achievedHz: number;
  ticks: number;
  /** Ticks whose action was not handed to the actuator before the next deadline. */
  deadlineMisses: number;
  /** Ticks that found the previous tick still computing. */
  overruns: number;
  /** Deadlines never fired because the process woke up more than a period late. */
  skippedTicks: number;
  /** Ticks that sent the safe action instead of the policy's. */
  safeActions: number;
  episodes: number;
  events: Record<string, number>;
  /** ms; jitter is tick fire time minus deadline. */
  latency: Record<LatencyStage, Percentiles>;
}

interface InFlight {
  tick: number;
  stage: 'policy' | 'actuate';
  superseded: boolean;
  done: Promise<void>;
}

function finiteOfLength(v: unknown, n: number): v is Float32Array {
  if (!(v instanceof Float32Array) || v.length !== n) return false;
  for (let i = 0; i < n; i++) if (!Number.isFinite(v[i])) return false;
  return true;
}

function hasLast(p: Policy): p is Policy & { readonly last: ComposedStep | null } {
  return 'last' in p;
}

export class ControlLoop {
  readonly events$: Observable<LoopEvent>;
  readonly transitions$: Observable<Transition>;
  private readonly events = new Subject<LoopEvent>();
  private readonly safety: SafetyHook;
  private readonly fallbackSafe: Float32Array;
  private readonly periodMs: number;
  private readonly maxObsAgeMs: number;
  private readonly hist: Record<LatencyStage, LatencyHistogram>;
  private readonly counters: Record<string, number> = {};
  private ticks = 0;
  private deadlineMisses = 0;
  private overruns = 0;
  private skippedTicks = 0;
  private safeActions = 0;
  private episodes = 0;
  private startedAt = 0;
  private stoppedAt = 0;
  private subscription: Subscription | null = null;
  private inFlight: InFlight | null = null;
  /** Safe actuations started by overrun ticks, so none overlaps another actuation. */
  private sideActuation: Promise<void> | null = null;
  private state: 'idle' | 'running' | 'stopping' | 'stopped' = 'idle';
  /** Set by estop(): every later tick sends the safe action without asking the policy. */
  private estopReason: string | null = null;

  constructor(private readonly options: ControlLoopOptions) {
    const { source, policy, rateHz } = options;
    if (!(rateHz > 0 && Number.isFinite(rateHz)))
      throw new ResrtError(`control rate ${rateHz} Hz`, 'use a positive rate, e.g. --hz 50');
    if (policy.actionDim !== source.actionDim) {
      throw new ResrtError(
        `the policy outputs ${policy.actionDim} action dims but ${source.kind} takes ${source.actionDim}`,
        'use the policy exported for this robot/task',
      );
    }
    this.periodMs = 1000 / rateHz;
    this.maxObsAgeMs = options.maxObsAgeMs ?? Math.max(3 * this.periodMs, 10);
    this.fallbackSafe = options.safeAction
      ? Float32Array.from(options.safeAction)
      : new Float32Array(source.actionDim);
    if (this.fallbackSafe.length !== source.actionDim) {
      throw new ResrtError(
        `safe action has ${this.fallbackSafe.length} values, expected ${source.actionDim}`,
      );
    }
    this.safety = options.safety ?? passThroughSafety(source.actionDim, this.fallbackSafe);
    this.hist = {
      obsAge: new LatencyHistogram(),
      policy: new LatencyHistogram(),
      safety: new LatencyHistogram(),
      actuate: new LatencyHistogram(),
      endToEnd: new LatencyHistogram(),
      jitter: new LatencyHistogram(),
    };
    this.events$ = this.events.asObservable();
    this.transitions$ = source.transitions$ ?? EMPTY;
  }

  get running(): boolean {
    return this.state === 'running';
  }

  async start(): Promise<void> {
    if (this.state !== 'idle')
      throw new ResrtError(`the control loop is ${this.state}; create a new one to run again`);
    this.state = 'running';
    await this.options.source.open();
    this.options.policy.reset?.();
    this.options.onEpisodeStart?.(0);
    this.startedAt = nowMs();
    this.emit('started', -1, `${this.options.rateHz} Hz, ${this.options.source.kind}`);
    this.subscription = fixedRate(this.options.rateHz, this.options.scheduler).subscribe({
      next: (tick) => this.onTick(tick),
      // The scheduler only errors on a bug; keep the device safe and say so.
      error: (err: unknown) => {
        this.emit('actuator_error', -1, `scheduler failed: ${(err as Error).message}`);
        void this.stop();
      },
    });
  }

  /**
   * Latching emergency stop: from the next tick on, the policy is not asked and every tick sends
   * what the safety hook gives for no proposal (the safe action, or a SafetyLayer's latched hold).
   * The hook and the device are told too (SafetyLayer.estop, Robot.estop through the source).
   * It holds until the loop is stopped; a new loop starts clear.
   */
  estop(source: string, detail?: string): void {
    if (this.estopReason !== null) return;
    this.estopReason = detail ? `${source}: ${detail}` : source;
    this.emit('estop', this.ticks, this.estopReason);
    const hook = this.safety as SafetyHook & { estop?: (source: string, detail?: string) => void };
    try {
      hook.estop?.(source, detail);
    } catch (err) {
      this.emit('safety_error', this.ticks, `the safety hook's estop failed: ${(err as Error).message}`);
    }
    try {
      this.options.source.estop?.(this.estopReason);
    } catch (err) {
      this.emit('actuator_error', this.ticks, `the device e-stop failed: ${(err as Error).message}`);
    }
  }

  get estopped(): boolean {
    return this.estopReason !== null;
  }

  /**
   * An error that escaped every stage (a bug in a source's callbacks, a subscriber): reported as
   * a 'loop_crash' event, then the loop stops, which sends the safe action last.
   */
  async crash(err: unknown): Promise<LoopStats> {
    const message = err instanceof Error ? err.message : String(err);
    this.emit('loop_crash', this.ticks, `${message}; stopping with the safe action`);
    return this.stop();
  }

  /** Stops ticking, waits for the last tick to finish, sends the safe action last. */
  async stop(): Promise<LoopStats> {
    if (this.state === 'idle') {
      this.state = 'stopped';
      return this.stats();
    }
    if (this.state === 'stopped' || this.state === 'stopping') {
      while (this.state === 'stopping') await new Promise((r) => setTimeout(r, 1));
      return this.stats();
    }
    this.state = 'stopping';
    this.subscription?.unsubscribe();
    this.subscription = null;
    // A hung policy must not keep the device from its safe action: wait a bounded time, then
    // supersede the tick so its result, should it ever come, is dropped.
    const flight = this.inFlight;
    if (flight) {
      const timeout = this.options.stopTimeoutMs ?? 1000;
      let timer: NodeJS.Timeout | undefined;
      const finished = await Promise.race([
        flight.done.then(() => true),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeout))),
      ]);
      clearTimeout(timer);
      if (!finished) {
        flight.superseded = true;
        this.emit(
          'late_result_dropped',
          flight.tick,
          `tick still in its ${flight.stage} stage ${timeout} ms after stop()`,
        );
      }
    }
    await this.sideActuation;
    this.stoppedAt = nowMs();
    try {
      await this.options.source.close(this.safeActionNow());
    } catch (err) {
      this.emit(
        'actuator_error',
        this.ticks,
        `sending the final safe action failed: ${(err as Error).message}`,
      );
    }
    this.state = 'stopped';
    this.emit('stopped', this.ticks);
    this.events.complete();
    return this.stats();
  }

  /** Runs for `durationMs` (or until stopped elsewhere) and returns the stats. */
  async runFor(durationMs: number): Promise<LoopStats> {
    await this.start();
    await new Promise((r) => setTimeout(r, durationMs));
    return this.stop();
  }

  stats(): LoopStats {
    const end = this.state === 'stopped' ? this.stoppedAt : nowMs();
    const durationS = this.startedAt ? (end - this.startedAt) / 1000 : 0;
    const latency = {} as Record<LatencyStage, Percentiles>;
    for (const key of Object.keys(this.hist) as LatencyStage[]) latency[key] = this.hist[key].summary();
    return {
      rateHz: this.options.rateHz,
      durationS,
      achievedHz: durationS > 0 ? this.ticks / durationS : 0,
      ticks: this.ticks,
      deadlineMisses: this.deadlineMisses,
      overruns: this.overruns,
      skippedTicks: this.skippedTicks,
      safeActions: this.safeActions,
      episodes: this.episodes,
      events: { ...this.counters },
      latency,
    };
  }

  // -------------------------------------------------------------------------------------------

  private emit(kind: string, tick: number, detail?: string, source: LoopEvent['source'] = 'loop'): void {
    this.counters[kind] = (this.counters[kind] ?? 0) + 1;
    if (!this.events.closed) this.events.next({ kind, source, atMs: nowMs(), tick, detail });
  }

  private safeActionNow(): Float32Array {
    try {
      const a = this.safety.safeAction();
      if (finiteOfLength(a, this.fallbackSafe.length)) return a;
    } catch {
      // Fall through to the configured safe action: the hook is broken, the device must not be.
    }
    return Float32Array.from(this.fallbackSafe);
  }

  private onTick(tick: Tick): void {
    if (this.state !== 'running') return;
    this.ticks++;
    this.hist.jitter.record(tick.lateMs);
    if (tick.skipped > 0) {
      this.skippedTicks += tick.skipped;
      this.deadlineMisses += tick.skipped;
      this.emit(
        'skipped_ticks',
        tick.index,
        `${tick.skipped} deadline(s) passed while the process was stalled (${tick.lateMs.toFixed(2)} ms late)`,
      );
    }
    const busy = this.inFlight;
    if (busy || this.sideActuation) {
      this.overruns++;
      this.emit(
        'overrun',
        tick.index,
        busy ? `tick ${busy.tick} still in its ${busy.stage} stage` : 'a safe actuation is still running',
      );
      // Only a tick still computing can be superseded; one already actuating finishes alone.
      if (busy && busy.stage === 'policy' && !busy.superseded) busy.superseded = true;
      if (this.options.onOverrun !== 'hold' && !this.sideActuation && (!busy || busy.stage === 'policy')) {
        this.safeActions++;
        const safe = this.safeActionNow();
        const latest = this.options.source.latest();
        const record: ActuationRecord = {
          obs: latest?.obs ?? null,
          ...(latest?.frames ? { frames: latest.frames } : {}),
          baseAction: null,
          residual: null,
          safetyEvents: 1,
          policyVersion: 0,
        };
        this.sideActuation = this.actuate(tick, safe, record, tick.firedMs).finally(() => {
          this.sideActuation = null;
        });
      }
      return;
    }
    const flight: InFlight = {
      tick: tick.index,
      stage: 'policy',
      superseded: false,
      done: Promise.resolve(),
    };
    this.inFlight = flight;
    flight.done = this.runTick(tick, flight).finally(() => {
      if (this.inFlight === flight) this.inFlight = null;
    });
  }

  private async runTick(tick: Tick, flight: InFlight): Promise<void> {
    const { source, policy } = this.options;
    const t0 = tick.firedMs;
    let proposed: Float32Array | null = null;
    let safetyEvents = 0;
    let composed: ComposedStep | null = null;

    // 1. Observation: the latest one, if recent and trusted.
    const sample = source.latest();
    const obsAge = sample ? t0 - sample.atMs : Infinity;
    if (sample) this.hist.obsAge.record(obsAge);
    const fault = source.fault();
    let obs: Float32Array | null = null;
    let frames: CameraFrames | undefined;
    if (!sample)
      this.emit('no_observation', tick.index, `${source.kind} has not produced an observation yet`);
    else if (fault) this.emit('source_fault', tick.index, fault);
    else if (this.estopReason !== null) {
      // Latched: no policy output reaches the actuator; the hook decides what "safe" is.
    } else if (obsAge > this.maxObsAgeMs)
      this.emit(
        'stale_observation',
        tick.index,
        `observation is ${obsAge.toFixed(1)} ms old (limit ${this.maxObsAgeMs} ms)`,
      );
    else {
      obs = sample.obs;
      frames = sample.frames;
    }

    // 2. Policy (base + residual).
    if (obs) {
      const p0 = nowMs();
      try {
        const out = await policy.act(obs, frames);
        if (finiteOfLength(out, source.actionDim)) proposed = out;
        else
          this.emit(
            'invalid_action',
            tick.index,
            `policy returned ${describeInvalid(out, source.actionDim)}`,
          );
        if (hasLast(policy)) composed = policy.last;
      } catch (err) {
        this.emit('policy_error', tick.index, (err as Error).message);
      }
      this.hist.policy.record(nowMs() - p0);
    }
    if (flight.superseded) {
      // A later tick already sent the safe action in this one's place; this result is stale.
      this.emit(
        'late_result_dropped',
        tick.index,
        `policy finished ${(nowMs() - t0).toFixed(2)} ms after its tick`,
      );
      this.deadlineMisses++;
      return;
    }

    // 3. Safety.
    const s0 = nowMs();
    let action: Float32Array;
    try {
      const decision = this.safety.filter(proposed, {
        obs,
        baseAction: composed?.baseAction ?? null,
        nowMs: s0,
        obsAgeMs: obsAge,
      });
      for (const e of decision.events) this.forwardSafetyEvent(e, tick.index);
      safetyEvents = decision.events.length;
      if (finiteOfLength(decision.action, source.actionDim)) action = decision.action;
      else {
        this.emit(
          'safety_error',
          tick.index,
          `safety hook returned ${describeInvalid(decision.action, source.actionDim)}`,
        );
        action = this.safeActionNow();
        safetyEvents++;
      }
      if (!proposed || decision.overridden || action !== decision.action) this.safeActions++;
    } catch (err) {
      this.emit('safety_error', tick.index, (err as Error).message);
      action = this.safeActionNow();
      safetyEvents++;
      this.safeActions++;
    }
    this.hist.safety.record(nowMs() - s0);

    // 4. Actuate.
    flight.stage = 'actuate';
    const record: ActuationRecord = {
      obs,
      ...(frames ? { frames } : {}),
      baseAction: proposed && composed ? composed.baseAction : null,
      residual: proposed && composed ? composed.residual : null,
      safetyEvents: safetyEvents + (proposed ? 0 : 1),
      policyVersion: proposed && composed ? composed.policyVersion : 0,
    };
    await this.actuate(tick, action, record, t0);
  }

  private async actuate(
    tick: Tick,
    action: Float32Array,
    record: ActuationRecord,
    t0: number,
  ): Promise<void> {
    const a0 = nowMs();
    try {
      const result = await this.options.source.actuate(action, record);
      if (!result.ok)
        this.emit('actuator_error', tick.index, result.detail ?? 'the actuator refused the command');
      if (result.episodeEnded) {
        this.episodes++;
        this.emit('episode_end', tick.index, result.detail);
        this.options.policy.reset?.();
        this.options.onEpisodeStart?.(this.episodes);
      }
    } catch (err) {
      this.emit('actuator_error', tick.index, (err as Error).message);
    }
    const end = nowMs();
    this.hist.actuate.record(end - a0);
    this.hist.endToEnd.record(end - t0);
    if (end > tick.deadlineMs + this.periodMs) {
      this.deadlineMisses++;
      this.emit(
        'deadline_miss',
        tick.index,
        `actuated ${(end - tick.deadlineMs).toFixed(2)} ms after the deadline (period ${this.periodMs.toFixed(2)} ms)`,
      );
    }
  }

  private forwardSafetyEvent(e: SafetyEvent, tick: number): void {
    this.counters[e.kind] = (this.counters[e.kind] ?? 0) + 1;
    if (!this.events.closed)
      this.events.next({ kind: e.kind, source: 'safety', atMs: e.atMs, tick, detail: e.detail });
  }
}

function describeInvalid(v: unknown, n: number): string {
  if (!(v instanceof Float32Array)) return `a ${v === null ? 'null' : typeof v} instead of a Float32Array`;
  if (v.length !== n) return `${v.length} values instead of ${n}`;
  const bad = Array.from(v).findIndex((x) => !Number.isFinite(x));
  return `a non-finite value (${v[bad]}) at index ${bad}`;
}

/** Starts a loop, runs it for `durationMs`, stops it; returns the stats. */
export async function runControlLoop(
  options: ControlLoopOptions & { durationMs: number },
): Promise<LoopStats> {
  return new ControlLoop(options).runFor(options.durationMs);
}

/** The stats table printed by `resrt run`. */
export function formatLatencyTable(stats: LoopStats): string {
  const f = (v: number): string => (Number.isFinite(v) ? v.toFixed(3) : '-');
  const rows: [string, LatencyStage][] = [
    ['observation age', 'obsAge'],
    ['policy', 'policy'],
    ['safety', 'safety'],
    ['actuate', 'actuate'],
    ['end-to-end', 'endToEnd'],
    ['tick jitter', 'jitter'],
  ];
  const header = `${'stage (ms)'.padEnd(18)}${['p50', 'p90', 'p99', 'max', 'count'].map((h) => h.padStart(10)).join('')}`;
  const lines = [
    `control loop: ${stats.rateHz} Hz target, ${stats.achievedHz.toFixed(1)} Hz achieved over ${stats.durationS.toFixed(2)} s (${stats.ticks} ticks, ${stats.episodes} episodes)`,
    header,
    '-'.repeat(header.length),
  ];
  for (const [label, key] of rows) {
    const p = stats.latency[key];
    lines.push(
      `${label.padEnd(18)}${[p.p50, p.p90, p.p99, p.max].map((v) => f(v).padStart(10)).join('')}${String(p.count).padStart(10)}`,
    );
  }
  lines.push(
    `deadline misses: ${stats.deadlineMisses}   overruns: ${stats.overruns}   skipped ticks: ${stats.skippedTicks}   safe actions: ${stats.safeActions}`,
  );
  const kinds = Object.entries(stats.events).filter(([k]) => k !== 'started' && k !== 'stopped');
  if (kinds.length) lines.push(`events: ${kinds.map(([k, n]) => `${k}=${n}`).join('  ')}`);
  return lines.join('\n');
}
