/**
 * The safety layer: the last code between a policy and the actuators. One filter() per control tick:
 *
 *   latches (e-stop, fault) → teleop selection → guards & watchdog → masks (see masks.ts) → output
 *
 * Whatever the proposal holds, the output is finite, inside the hard box and, unless a latch is in
 * force, inside the rate limits. See docs/safety.md for the rules and their reasons.
 */
import { Subject, type Observable } from 'rxjs';
import type { SafetyContext, SafetyEvent, SafetyHook } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import {
  parseSafetyConfig,
  resolveSafetyConfig,
  type ResolvedSafetyConfig,
  type SafetyConfig,
  type SafetyConfigInput,
} from './config.js';
import { maskProbability } from './epsilon.js';
import type { ResetResult, SafetyEventKind, SafetyFilterResult, SafetyState } from './events.js';
import { f32Within } from './f32.js';
import {
  MaskBit,
  makeProjectionScratch,
  projectAction,
  workspaceBounds,
  type MaskInputs,
  type ProjectionScratch,
} from './masks.js';

/**
 * State-dependent relevant set: writes the allowed interval per action dim for this observation.
 * low/high arrive filled with −∞/+∞, so the function writes only the dims it constrains. It must
 * not keep references to its arguments (they are reused every tick).
 */
export type RelevantSetFn = (obs: Float32Array, low: Float64Array, high: Float64Array) => void;

export interface SafetyLayerOptions {
  relevantSet?: RelevantSetFn;
  /** Monotonic ms clock for latches, resets and teleop timestamps; share its base with ctx.nowMs. */
  clock?: () => number;
  /** The command the actuators hold now (rate limits start from it); default: the safe action. */
  initialAction?: ArrayLike<number>;
}

const NO_EVENTS: SafetyEvent[] = Object.freeze([] as SafetyEvent[]) as SafetyEvent[];

const MASK_EVENTS: readonly [number, SafetyEventKind][] = [
  [MaskBit.base, 'clip-base'],
  [MaskBit.relevant, 'clip-relevant'],
  [MaskBit.accel, 'clip-accel'],
  [MaskBit.velocity, 'clip-velocity'],
  [MaskBit.workspace, 'clip-workspace'],
  [MaskBit.box, 'clip-box'],
  [MaskBit.rateConflict, 'rate-conflict'],
];

function allFinite(v: ArrayLike<number>): boolean {
  for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) return false;
  return true;
}

export class SafetyLayer implements SafetyHook {
  readonly config: SafetyConfig;
  private readonly cfg: ResolvedSafetyConfig;
  private readonly n: number;
  private readonly clock: () => number;
  private readonly relevantSet: RelevantSetFn | null;
  private readonly subject = new Subject<SafetyEvent>();
  readonly events$: Observable<SafetyEvent> = this.subject.asObservable();
  private readonly counts = new Map<string, number>();

  // Rate-limiter state: the last safe action and its per-tick velocity.
  private readonly prev: Float64Array;
  private readonly vel: Float64Array;
  // Per-tick scratch, reused so filter() allocates only its output.
  private readonly scratch: ProjectionScratch;
  private readonly target: Float64Array;
  private readonly relLow: Float64Array;
  private readonly relHigh: Float64Array;
  private readonly wsLow: Float64Array;
  private readonly wsHigh: Float64Array;
  private wsValid = false;
  private readonly inputs: MaskInputs;
  private readonly needObs: boolean;

  private readonly rng: Rng;
  private baseMaskOn = false;
  private episode = 0;
  private ticks = 0;

  private readonly teleop: Float64Array;
  private teleopSet = false;
  private teleopAtMs = 0;
  private intervening = false;

  private estopped = false;
  private estopSources: string[] = [];
  private faulted = false;
  private faultReason: string | null = null;
  private latchedAtMs: number | null = null;
  private misses = 0;

  /** Events of the tick in progress; null outside filter() so API-call events never leak into a decision. */
  private tickEvents: SafetyEvent[] | null = null;
  private inTick = false;

  /** Takes a parsed config or the raw JSON object; either way it is validated again here. */
  constructor(config: SafetyConfigInput, options: SafetyLayerOptions = {}) {
    this.config = parseSafetyConfig(config);
    this.cfg = resolveSafetyConfig(this.config);
    const n = (this.n = this.cfg.dim);
    this.clock = options.clock ?? (() => performance.now());
    this.relevantSet = options.relevantSet ?? null;
    this.prev = new Float64Array(n);
    this.vel = new Float64Array(n);
    this.scratch = makeProjectionScratch(n);
    this.target = new Float64Array(n);
    this.relLow = new Float64Array(n);
    this.relHigh = new Float64Array(n);
    this.wsLow = new Float64Array(n);
    this.wsHigh = new Float64Array(n);
    this.teleop = new Float64Array(n);
    this.inputs = {
      prev: this.prev,
      vel: this.vel,
      base: null,
      relLow: null,
      relHigh: null,
      wsLow: null,
      wsHigh: null,
    };
    const ws = this.cfg.workspace;
    if (ws && ws.mode === 'absolute') this.wsValid = workspaceBounds(ws, null, this.wsLow, this.wsHigh);
    this.needObs =
      this.config.guards.obsDim !== undefined ||
      this.relevantSet !== null ||
      (ws !== null && ws.mode === 'delta');
    this.rng = new Rng(this.cfg.baseMask ? this.cfg.baseMask.seed : 0);
    this.drawEpisodeMask();

    // Start from rest at the safe action (hold: the box point nearest zero) unless told otherwise.
    this.safeTarget(this.target);
    this.prime(options.initialAction ?? this.target);
  }

  // -------------------------------------------------------------------------------------------
  // Public API

  /**
   * Sets the rate limiter's starting point: the command the actuators currently hold and its
   * per-tick velocity (default 0: at rest). Call after connecting to a robot.
   */
  prime(lastAction: ArrayLike<number>, velocity?: ArrayLike<number>): void {
    this.checkVector('prime(lastAction)', lastAction);
    if (velocity !== undefined) this.checkVector('prime(velocity)', velocity);
    for (let i = 0; i < this.n; i++) {
      this.prev[i] = f32Within(
        Math.min(this.cfg.boxHigh[i], Math.max(this.cfg.boxLow[i], lastAction[i])),
        this.cfg.boxLow[i],
        this.cfg.boxHigh[i],
      );
      this.vel[i] = velocity === undefined ? 0 : velocity[i];
    }
  }

  /** Marks the start of an episode: advances episode-unit schedules and redraws the ε-mask. */
  beginEpisode(): void {
    this.episode++;
    this.drawEpisodeMask();
  }

  /** The action sent when nothing can be trusted (see docs/safety.md: hold / zero / pose). */
  safeAction(): Float32Array {
    this.safeTarget(this.target);
    const out = new Float32Array(this.n);
    for (let i = 0; i < this.n; i++)
      out[i] = f32Within(this.target[i], this.cfg.boxLow[i], this.cfg.boxHigh[i]);
    return out;
  }

  /** Latching e-stop. Takes effect on the next filter() and holds until reset() with a fresh heartbeat. */
  estop(source: string, detail?: string): void {
    if (typeof source !== 'string' || source.length === 0) {
      throw new ResrtError(
        'estop(source): source must be a non-empty string',
        'name who asked: "cli-key", "mqtt", "dashboard", "hardware"',
      );
    }
    this.estopped = true;
    this.estopSources.push(source);
    this.latchedAtMs = this.clock();
    this.emit('estop', this.latchedAtMs, detail ? `${source}: ${detail}` : source);
  }

  /**
   * Clears a latched e-stop or fault. heartbeatMs is the time (layer clock) of the operator's latest
   * heartbeat: it must be within estop.resetWindowMs of now, not in the future beyond
   * estop.maxClockSkewMs, and not older than the latch itself (a heartbeat from before the stop does
   * not acknowledge it).
   */
  reset(heartbeatMs: number): ResetResult {
    const now = this.clock();
    const { resetWindowMs, maxClockSkewMs } = this.config.estop;
    let reason: string | null = null;
    if (typeof heartbeatMs !== 'number' || !Number.isFinite(heartbeatMs))
      reason = 'heartbeat is not a finite timestamp';
    else if (heartbeatMs > now + maxClockSkewMs)
      reason = `heartbeat is ${(heartbeatMs - now).toFixed(1)} ms in the future`;
    else if (now - heartbeatMs > resetWindowMs)
      reason = `heartbeat is stale: ${(now - heartbeatMs).toFixed(1)} ms old, window ${resetWindowMs} ms`;
    else if (this.latchedAtMs !== null && heartbeatMs < this.latchedAtMs)
      reason = 'heartbeat predates the latch it would clear';
    if (reason !== null) {
      this.emit('reset-refused', now, reason);
      return { ok: false, reason };
    }
    const was = this.estopped || this.faulted;
    this.estopped = false;
    this.estopSources = [];
    this.faulted = false;
    this.faultReason = null;
    this.misses = 0;
    if (was) {
      // A latch held the actuators still: restart the rate limiter from rest. Without a latch the
      // robot may be moving, and zeroing the velocity would let the next tick exceed maxAccel.
      this.vel.fill(0);
      this.emit('reset', now);
    }
    return { ok: true };
  }

  /**
   * The teleoperation device's latest command (normalized), or null when it is released. It takes
   * over while its norm exceeds teleop.threshold and it is younger than teleop.timeoutMs.
   */
  setTeleop(action: ArrayLike<number> | null, atMs: number = this.clock()): void {
    if (action === null) {
      this.teleopSet = false;
      return;
    }
    if (action.length !== this.n) {
      throw new ResrtError(
        `setTeleop: action has ${action.length} entries, expected ${this.n}`,
        'map the device axes onto the action dimensions first',
      );
    }
    for (let i = 0; i < this.n; i++) this.teleop[i] = action[i];
    this.teleopSet = true;
    this.teleopAtMs = atMs;
  }

  get state(): SafetyState {
    return {
      estopped: this.estopped,
      estopSources: [...this.estopSources],
      faulted: this.faulted,
      faultReason: this.faultReason,
      latchedAtMs: this.latchedAtMs,
      consecutiveMisses: this.misses,
      intervention: this.intervening,
      episode: this.episode,
      ticks: this.ticks,
      baseMaskActive: this.baseMaskOn,
    };
  }

  /** Events seen so far, by kind. */
  counters(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }

  /** Completes events$ (subscribers see complete). */
  close(): void {
    this.subject.complete();
  }

  // -------------------------------------------------------------------------------------------
  // The tick

  filter(proposed: Float32Array | null, ctx: SafetyContext): SafetyFilterResult {
    const n = this.n;
    const now = Number.isFinite(ctx.nowMs) ? ctx.nowMs : this.clock();
    const out = new Float32Array(n);
    this.tickEvents = null;
    this.inTick = true;
    try {
      return this.tick(proposed, ctx, out, now);
    } finally {
      this.inTick = false;
      this.tickEvents = null;
    }
  }

  private tick(
    proposed: Float32Array | null,
    ctx: SafetyContext,
    out: Float32Array,
    now: number,
  ): SafetyFilterResult {
    const n = this.n;
    this.ticks++;
    const bm = this.cfg.baseMask;
    if (bm !== null && bm.resample === 'step') {
      this.baseMaskOn =
        this.rng.uniform() <
        maskProbability(bm.schedule, bm.schedule.unit === 'step' ? this.ticks - 1 : this.episode);
    }

    if (this.estopped || this.faulted) return this.latchedTick(out, now);

    // Teleoperation: a live command above the dead zone replaces the policy's.
    let teleopActive = false;
    let miss = false;
    if (this.teleopSet) {
      if (now - this.teleopAtMs > this.config.teleop.timeoutMs) {
        this.teleopSet = false;
        this.emit('teleop-stale', now);
      } else if (!allFinite(this.teleop)) {
        this.emit('guard-teleop', now, 'teleop command is not finite');
        miss = true;
      } else {
        teleopActive = this.teleopNorm() > this.config.teleop.threshold;
      }
    }
    if (teleopActive !== this.intervening) {
      this.intervening = teleopActive;
      this.emit(teleopActive ? 'intervention-start' : 'intervention-end', now);
    }

    // Guards and watchdog.
    if (!(ctx.obsAgeMs <= this.config.watchdog.obsDeadlineMs)) {
      this.emit('watchdog-stale-obs', now);
      miss = true;
    }
    const obs = ctx.obs;
    let obsOk = obs !== null;
    if (obs === null) {
      if (this.needObs) {
        this.emit('guard-obs', now, 'observation missing');
        miss = true;
      }
    } else if (!this.obsValid(obs)) {
      obsOk = false;
      this.emit('guard-obs', now, 'observation has the wrong length or non-finite values');
      miss = true;
    }
    const useBase = this.baseMaskOn && !teleopActive;
    const base = ctx.baseAction;
    if (base !== null) {
      if (base.length !== n || !allFinite(base)) {
        this.emit('guard-base', now, `base action must be ${n} finite values`);
        miss = true;
      }
    } else if (useBase) {
      this.emit('guard-base', now, 'base action missing while the base-relative mask is in force');
      miss = true;
    }
    let source: ArrayLike<number> | null = null;
    if (teleopActive) {
      source = this.teleop;
    } else if (proposed === null) {
      this.emit('watchdog-no-output', now);
      miss = true;
    } else if (proposed.length !== n) {
      this.emit('guard-proposal', now, `proposal has ${proposed.length} entries, expected ${n}`);
      miss = true;
    } else if (!allFinite(proposed)) {
      this.emit('guard-proposal', now, 'proposal has non-finite values');
      miss = true;
    } else {
      source = proposed;
    }

    // The workspace keeps its last valid bounds when a delta-mode observation is unusable.
    const ws = this.cfg.workspace;
    if (ws !== null && ws.mode === 'delta' && obsOk && obs !== null) {
      this.wsValid = workspaceBounds(ws, obs, this.wsLow, this.wsHigh) || this.wsValid;
    }
    const inputs = this.inputs;
    inputs.wsLow = this.wsValid ? this.wsLow : null;
    inputs.wsHigh = this.wsValid ? this.wsHigh : null;

    inputs.relLow = null;
    inputs.relHigh = null;
    if (!miss && this.relevantSet !== null && obs !== null) {
      if (this.evalRelevantSet(obs, now)) {
        inputs.relLow = this.relLow;
        inputs.relHigh = this.relHigh;
      } else {
        miss = true;
      }
    }

    if (miss) {
      this.misses++;
      if (this.misses >= this.config.watchdog.maxConsecutiveMisses) {
        this.faulted = true;
        this.faultReason = `${this.misses} consecutive ticks without a usable observation or proposal`;
        this.latchedAtMs = this.clock();
        this.emit('watchdog-fault', now, this.faultReason);
        return this.latchedTick(out, now);
      }
      // Not latched yet: the safe action goes out, braking within the rate limits.
      this.safeTarget(this.target);
      source = this.target;
      inputs.base = null;
      inputs.relLow = null;
      inputs.relHigh = null;
    } else {
      this.misses = 0;
      inputs.base = useBase ? base : null;
    }

    const bits = projectAction(source as ArrayLike<number>, inputs, this.cfg, this.scratch, out);
    if (bits !== 0) {
      for (const [bit, kind] of MASK_EVENTS) if (bits & bit) this.emit(kind, now);
    }
    this.commit(out, false);
    return {
      action: out,
      events: this.tickEvents ?? NO_EVENTS,
      overridden: miss,
      intervention: teleopActive && !miss,
      baseMasked: inputs.base !== null,
      latched: false,
    };
  }

  // -------------------------------------------------------------------------------------------

  private latchedTick(out: Float32Array, now: number): SafetyFilterResult {
    // Under a latch the safe action goes out at once, bypassing the rate limits (docs/safety.md).
    if (this.intervening) {
      this.intervening = false;
      this.emit('intervention-end', now);
    }
    this.emit(this.estopped ? 'estop-active' : 'fault-active', now);
    this.safeTarget(this.target);
    for (let i = 0; i < this.n; i++)
      out[i] = f32Within(this.target[i], this.cfg.boxLow[i], this.cfg.boxHigh[i]);
    this.commit(out, true);
    return {
      action: out,
      events: this.tickEvents ?? NO_EVENTS,
      overridden: true,
      intervention: false,
      baseMasked: false,
      latched: true,
    };
  }

  private commit(out: Float32Array, atRest: boolean): void {
    for (let i = 0; i < this.n; i++) {
      this.vel[i] = atRest ? 0 : out[i] - this.prev[i];
      this.prev[i] = out[i];
    }
  }

  /** Writes the safe action's target (before rounding) into t, inside the box. */
  private safeTarget(t: Float64Array): void {
    const kind = this.config.safeAction.kind;
    const { boxLow, boxHigh, safePose } = this.cfg;
    for (let i = 0; i < this.n; i++) {
      const v = kind === 'hold' ? this.prev[i] : kind === 'zero' ? 0 : (safePose as Float64Array)[i];
      t[i] = v < boxLow[i] ? boxLow[i] : v > boxHigh[i] ? boxHigh[i] : v;
    }
  }

  private obsValid(obs: Float32Array): boolean {
    const g = this.config.guards;
    if (g.obsDim !== undefined && obs.length !== g.obsDim) return false;
    if (this.cfg.maxObsIndex >= obs.length) return false;
    return !g.checkObsFinite || allFinite(obs);
  }

  private evalRelevantSet(obs: Float32Array, now: number): boolean {
    this.relLow.fill(-Infinity);
    this.relHigh.fill(Infinity);
    try {
      (this.relevantSet as RelevantSetFn)(obs, this.relLow, this.relHigh);
    } catch (err) {
      this.emit('guard-relevant', now, `relevant-set function threw: ${(err as Error).message}`);
      return false;
    }
    for (let i = 0; i < this.n; i++) {
      // NaN fails both comparisons; an empty interval is a broken function, not a constraint.
      if (!(this.relLow[i] <= this.relHigh[i])) {
        this.emit('guard-relevant', now, `relevant set is empty or NaN in dim ${i}`);
        return false;
      }
    }
    return true;
  }

  private teleopNorm(): number {
    let acc = 0;
    if (this.config.teleop.norm === 'l2') {
      for (let i = 0; i < this.n; i++) acc += this.teleop[i] * this.teleop[i];
      return Math.sqrt(acc);
    }
    for (let i = 0; i < this.n; i++) acc = Math.max(acc, Math.abs(this.teleop[i]));
    return acc;
  }

  private drawEpisodeMask(): void {
    const bm = this.cfg.baseMask;
    if (bm === null) return;
    if (bm.resample === 'episode') {
      const t = bm.schedule.unit === 'step' ? this.ticks : this.episode;
      this.baseMaskOn = this.rng.uniform() < maskProbability(bm.schedule, t);
    }
  }

  private checkVector(what: string, v: ArrayLike<number>): void {
    if (v == null || v.length !== this.n || !allFinite(v)) {
      throw new ResrtError(
        `${what}: expected ${this.n} finite numbers`,
        'pass one normalized value per action dimension',
      );
    }
  }

  private emit(kind: SafetyEventKind, atMs: number, detail?: string): void {
    const event: SafetyEvent = detail === undefined ? { kind, atMs } : { kind, atMs, detail };
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
    if (this.inTick) {
      if (this.tickEvents === null) this.tickEvents = [];
      this.tickEvents.push(event);
    }
    this.subject.next(event);
  }
}
