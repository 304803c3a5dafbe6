/**
 * Any Robot as an Env: the observation is the latest device state laid out per the robot config;
 * a step sends one command and returns one control period later with a state that arrived after
 * it. A step never throws inside an episode: a lost link, a faulted robot, a missing state or an
 * unusable action sends the safe action and truncates the episode with info.fault.
 *
 * Between episodes the robot is in its safe hold (Robot.hold: the safe action, the watchdog
 * disarmed), from the end of an episode through the scene reset, so a watchdog that latches does
 * not fire while a person works. A latch that has fired anyway is cleared only after a person
 * confirms (onFaultPrompt), never by the environment on its own.
 */
import { setImmediate as yieldToIo, setTimeout as sleep } from 'node:timers/promises';
import type { Subscription } from 'rxjs';
import type {
  BoxSpace,
  CameraFrame,
  CameraSource,
  CameraSpec,
  Env,
  LinkStatus,
  ResetResult,
  Robot,
  RobotState,
  StepInfo,
  StepResult,
} from '../types.js';
import { ResrtError } from '../util/errors.js';
import {
  type CameraHealth,
  type CameraLimits,
  defaultCameraLimits,
  FrameMonitor,
} from './camera/frame-monitor.js';
import {
  observationLength,
  observeState,
  type ObservationEntry,
  type RobotConfig,
  type SuccessSpec,
} from './robot-config.js';
import { checkWatchdog, describeFault, type FaultKind } from './robot-faults.js';

export type { FaultKind } from './robot-faults.js';

/** Decides whether an episode succeeded. */
export interface SuccessSource {
  reset(): void;
  /** true: success, false: failure, null: not decided yet. */
  judge(state: RobotState): boolean | null;
}

/** Success when state.sensors[index] >= threshold. */
export class SensorThresholdSuccess implements SuccessSource {
  constructor(
    readonly index: number,
    readonly threshold: number,
  ) {}
  reset(): void {}
  judge(state: RobotState): boolean | null {
    const v = state.sensors[this.index];
    return v !== undefined && v >= this.threshold ? true : null;
  }
}

/** A person (or a CLI key press) labels the outcome; undecided until then. */
export class ManualSuccess implements SuccessSource {
  private labelled: boolean | null = null;
  label(success: boolean): void {
    this.labelled = success;
  }
  reset(): void {
    this.labelled = null;
  }
  judge(): boolean | null {
    return this.labelled;
  }
}

export function successSourceFor(spec: SuccessSpec): SuccessSource {
  return spec.mode === 'sensor'
    ? new SensorThresholdSuccess(spec.index, spec.threshold)
    : new ManualSuccess();
}

/** Sleeps until an absolute hrtime: a timer for the bulk, then yielding to I/O for the last stretch. */
export async function sleepUntilNs(targetNs: bigint): Promise<void> {
  for (;;) {
    const remainingMs = Number(targetNs - process.hrtime.bigint()) / 1e6;
    if (remainingMs <= 0) return;
    // Timers fire up to ~1 ms late; wake early and finish by yielding, which keeps I/O flowing.
    if (remainingMs > 2) await sleep(remainingMs - 1.5);
    else await yieldToIo();
  }
}

/** Fixed-rate ticks on the monotonic clock; re-anchors after a caller ran over a whole period. */
export class PeriodClock {
  private next: bigint | null = null;
  overruns = 0;
  constructor(readonly periodNs: bigint) {}
  restart(): void {
    this.next = null;
  }
  /** Resolves at the next tick; returns how far the tick was behind schedule before re-anchoring, ms. */
  async tick(): Promise<number> {
    const now = process.hrtime.bigint();
    let lateMs = 0;
    if (this.next === null) this.next = now + this.periodNs;
    else {
      this.next += this.periodNs;
      if (this.next < now) {
        lateMs = Number(now - this.next) / 1e6;
        this.overruns++;
        this.next = now + this.periodNs;
      }
    }
    await sleepUntilNs(this.next);
    return lateMs;
  }
}

export interface HardwareEnvOptions {
  /** Overrides the config's success source. */
  successSource?: SuccessSource;
  /** Called when a manual reset waits for a person; answer with confirmReset(). */
  onResetPrompt?: (message: string) => void;
  /**
   * Called when reset() finds a latched e-stop or watchdog fault: the message says what happened
   * and what to check. Answer with confirmFaultClear() once the person confirms; reset() then
   * clears the latch and goes on. A latch cleared by other means (a dashboard) also lets it go on.
   * Without it, reset() throws on a latched fault.
   */
  onFaultPrompt?: (message: string, kind: FaultKind) => void;
  /** How long reset() waits for the link and a fresh state; default 10 s. */
  resetTimeoutMs?: number;
  /** How long past the control period a step waits for a fresh state before it counts as a fault; default 2 periods. */
  stateGraceMs?: number;
  /** Close the robot in close(); default true. */
  closeRobot?: boolean;
  /** Cameras beside the robot: their latest frames come with every observation. */
  cameras?: CameraSource[];
  /** When a frame is too old, frozen or future-dated to act on (see FrameMonitor). */
  cameraLimits?: Partial<CameraLimits>;
  /** Close the cameras in close(); default true. */
  closeCameras?: boolean;
}

export interface HardwareStepInfo extends StepInfo {
  /** What was sent (after clipping to the config's limits), or the safe action on a fault. */
  action: Float32Array;
  /** Why the episode was cut short, when it was. */
  fault?: string;
  /** Age of the state behind the observation when step returned, ms. */
  stateAgeMs?: number;
  /** The caller was this late for the control period (the clock re-anchored), ms. */
  lateMs?: number;
  /** Per camera: frame age, frame-to-state skew, how long the image has not changed. */
  cameras?: CameraHealth[];
}

type Waiter = {
  accept: (s: RobotState) => boolean;
  resolve: (s: RobotState | null) => void;
  timer?: NodeJS.Timeout;
};

export class HardwareEnv implements Env {
  readonly id: string;
  readonly observationSpace: BoxSpace;
  readonly actionSpace: BoxSpace;
  readonly controlDt: number;
  readonly maxEpisodeSteps: number;
  readonly cameras: readonly CameraSpec[];
  /** The config's detector cameras (`detector: true`): in the frames, not read by the policy. */
  readonly auxCameras: readonly CameraSpec[];
  private readonly cameraSources: CameraSource[];
  private readonly monitors: FrameMonitor[];
  private readonly success: SuccessSource;
  private readonly manualLabel = new ManualSuccess();
  private readonly low: Float32Array;
  private readonly high: Float32Array;
  private readonly safe: Float32Array;
  private readonly clock: PeriodClock;
  private readonly subs: Subscription[] = [];
  private latest: RobotState | null = null;
  private status: LinkStatus = 'connecting';
  private waiters: Waiter[] = [];
  private inEpisode = false;
  private steps = 0;
  private lastObs: Float32Array;
  /** The cameras' frames of lastObs (none before the first reset, or without cameras). */
  private lastFrames: Record<string, CameraFrame> | undefined;
  private confirm: (() => void) | null = null;
  private faultConfirm: (() => void) | null = null;
  private closed = false;

  constructor(
    readonly robot: Robot,
    readonly config: RobotConfig,
    private readonly options: HardwareEnvOptions = {},
  ) {
    const caps = robot.capabilities;
    if (config.action.dim !== caps.actionDim) {
      throw new ResrtError(
        `robot config ${config.name} has action.dim ${config.action.dim}, the robot reports ${caps.actionDim}`,
        'make the config match the device (or connect to the right robot)',
      );
    }
    for (const [k, e] of config.observation.entries()) {
      const size = e.field === 'sensors' ? caps.sensorCount : caps.jointCount;
      const bad = e.indices?.find((i) => i >= size);
      if (bad !== undefined) {
        throw new ResrtError(
          `observation[${k}] takes ${e.field}[${bad}], the robot reports ${size} ${e.field}`,
          `use indices below ${size}`,
        );
      }
    }
    const succ = config.episode.success;
    if (succ.mode === 'sensor' && succ.index >= caps.sensorCount) {
      throw new ResrtError(
        `episode.success.index ${succ.index} is past the robot's ${caps.sensorCount} sensors`,
        `use a sensor index below ${caps.sensorCount}`,
      );
    }
    checkWatchdog(config, caps.watchdog);
    if (config.rateHz > caps.rateHz) {
      throw new ResrtError(
        `config rateHz ${config.rateHz} is above the device's ${caps.rateHz} Hz: steps would not see fresh states`,
        `lower rateHz to at most ${caps.rateHz}`,
      );
    }
    this.id = `hw:${config.name}`;
    this.controlDt = 1 / config.rateHz;
    this.maxEpisodeSteps = config.episode.maxSteps;
    this.success = options.successSource ?? successSourceFor(succ);
    this.low = Float32Array.from(config.action.low);
    this.high = Float32Array.from(config.action.high);
    this.safe = Float32Array.from(config.action.safe);
    this.clock = new PeriodClock(BigInt(Math.round(1e9 / config.rateHz)));
    const obsDim = observationLength(config, caps);
    this.observationSpace = {
      dim: obsDim,
      low: new Array<number>(obsDim).fill(-Infinity),
      high: new Array<number>(obsDim).fill(Infinity),
      names: observationNames(config.observation, caps),
    };
    this.actionSpace = {
      dim: caps.actionDim,
      low: new Array<number>(caps.actionDim).fill(-1),
      high: new Array<number>(caps.actionDim).fill(1),
      names: [...config.action.names],
    };
    this.lastObs = new Float32Array(obsDim);
    this.cameraSources = options.cameras ?? [];
    const names = this.cameraSources.map((c) => c.spec.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup !== undefined) {
      throw new ResrtError(`two cameras are named "${dup}"`, 'give every camera of a robot its own name');
    }
    const detectorCameras = new Set((config.cameras ?? []).filter((c) => c.detector).map((c) => c.name));
    const specs = this.cameraSources.map((c) => c.spec);
    this.cameras = specs.filter((c) => !detectorCameras.has(c.name));
    this.auxCameras = specs.filter((c) => detectorCameras.has(c.name));
    const limits = { ...defaultCameraLimits, ...options.cameraLimits };
    this.monitors = this.cameraSources.map((c) => new FrameMonitor(c.spec.name, limits));
    this.cameraSources.forEach((c, k) =>
      this.subs.push(c.frame$.subscribe((f) => this.monitors[k].observe(f))),
    );
    this.subs.push(
      robot.state$.subscribe((s) => this.onState(s)),
      robot.status$.subscribe((s) => {
        this.status = s;
      }),
    );
  }

  private onState(s: RobotState): void {
    this.latest = s;
    if (this.waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.accept(s)) {
        clearTimeout(w.timer);
        w.resolve(s);
      } else still.push(w);
    }
    this.waiters = still;
  }

  /** The latest or next state that `accept`s, or null after timeoutMs (never, when Infinity). */
  private waitState(accept: (s: RobotState) => boolean, timeoutMs: number): Promise<RobotState | null> {
    if (this.latest && accept(this.latest)) return Promise.resolve(this.latest);
    return new Promise((resolve) => {
      const w: Waiter = { accept, resolve };
      if (Number.isFinite(timeoutMs)) {
        w.timer = setTimeout(
          () => {
            this.waiters = this.waiters.filter((x) => x !== w);
            resolve(null);
          },
          Math.max(0, timeoutMs),
        );
      }
      this.waiters.push(w);
    });
  }

  /** The first state that arrived after `afterMs` (performance.now()), or null after timeoutMs. */
  private stateAfter(afterMs: number, timeoutMs: number): Promise<RobotState | null> {
    return this.waitState((s) => s.receivedAtMs > afterMs, timeoutMs);
  }

  private observe(s: RobotState): Float32Array {
    return observeState(this.config, s, this.observationSpace.dim);
  }

  private faultNow(): string | null {
    if (this.closed) return 'environment closed';
    if (this.status !== 'connected') return `robot link ${this.status}`;
    const s = this.latest;
    if (s?.faulted) return `robot faulted (${s.faultKind === 'watchdog' ? 'watchdog' : 'e-stop'} latched)`;
    return null;
  }

  /** True while a manual reset waits for confirmReset(). */
  get awaitingResetConfirmation(): boolean {
    return this.confirm !== null;
  }

  /** A person confirms the robot is reset; returns false when no reset was waiting. */
  confirmReset(): boolean {
    const c = this.confirm;
    if (!c) return false;
    this.confirm = null;
    c();
    return true;
  }

  /** True while reset() waits for a person to confirm clearing a latched fault. */
  get awaitingFaultConfirmation(): boolean {
    return this.faultConfirm !== null;
  }

  /** A person confirms a latched fault may be cleared; returns false when none was waiting. */
  confirmFaultClear(): boolean {
    const c = this.faultConfirm;
    if (!c) return false;
    this.faultConfirm = null;
    c();
    return true;
  }

  /** A person's verdict on the running episode; it wins over the configured success source. */
  labelSuccess(success: boolean): void {
    this.manualLabel.label(success);
  }

  private get resetTimeoutMs(): number {
    return this.options.resetTimeoutMs ?? 10_000;
  }

  private async waitConnected(what: string): Promise<void> {
    const end = performance.now() + this.resetTimeoutMs;
    while (this.status !== 'connected') {
      if (this.closed) throw new ResrtError(`${this.id}: environment closed during ${what}`);
      if (performance.now() > end) {
        throw new ResrtError(
          `${this.id}: robot link is ${this.status} (waited ${this.resetTimeoutMs} ms during ${what})`,
          'check the robot is powered and its transport is reachable, then reset again',
        );
      }
      await sleep(10);
    }
  }

  async reset(_options?: { seed?: number }): Promise<ResetResult> {
    if (this.closed) throw new ResrtError(`${this.id} is closed`, 'create a new environment');
    this.inEpisode = false;
    await this.waitConnected('reset');
    await this.safeHold();
    await this.clearLatch();
    const proc = this.config.episode.reset;
    if (proc.mode === 'manual') {
      const prompt = proc.prompt ?? `reset ${this.config.name} by hand, then confirm`;
      const confirmed = new Promise<void>((resolve) => (this.confirm = resolve));
      this.options.onResetPrompt?.(prompt);
      await confirmed;
      await this.waitConnected('reset');
      // Someone may have pressed the e-stop while the scene was reset.
      await this.clearLatch();
    } else {
      for (const [k, wp] of proc.waypoints.entries()) {
        const action = this.clip(Float32Array.from(wp.action));
        const end = performance.now() + wp.holdMs;
        this.clock.restart();
        // Resent every period: each command is only valid for commandValidMs.
        while (performance.now() < end) {
          const fault = this.faultNow();
          if (fault || !this.robot.send({ action, validForMs: this.config.commandValidMs })) {
            throw new ResrtError(
              `${this.id}: home reset stopped at waypoint ${k}: ${fault ?? 'the link refused the command'}`,
              'check the robot and its link, then reset again',
            );
          }
          await this.clock.tick();
        }
      }
    }
    this.success.reset();
    this.manualLabel.reset();
    this.steps = 0;
    const state = await this.stateAfter(performance.now(), this.resetTimeoutMs);
    if (!state) {
      throw new ResrtError(
        `${this.id}: no state within ${this.resetTimeoutMs} ms after reset`,
        'check the robot link',
      );
    }
    if (state.faulted) {
      throw new ResrtError(
        `${this.id}: the robot latched a fault (${state.faultKind ?? 'e-stop or watchdog'}) as the reset finished`,
        'check the cell, then reset again (you will be asked to confirm clearing the fault)',
      );
    }
    this.lastObs = this.observe(state);
    const frames = await this.framesForReset(state);
    this.lastFrames = frames;
    this.inEpisode = true;
    this.clock.restart();
    return frames
      ? { obs: this.lastObs, info: { success: false }, frames }
      : { obs: this.lastObs, info: { success: false } };
  }

  /**
   * The device's safe hold (the safe action, its watchdog disarmed until the next command), where
   * the robot offers one: a watchdog that latches must not fire while nobody commands the robot.
   */
  private async safeHold(): Promise<void> {
    if (!this.robot.hold) return;
    try {
      await this.robot.hold();
    } catch (err) {
      throw new ResrtError(
        `${this.id}: the robot did not enter its safe hold: ${(err as Error).message.split('\n')[0]}`,
        'check the robot and its link, then reset again',
      );
    }
  }

  /** Episode over: hold at once (a person may take a while to reset the scene). Errors wait for reset(). */
  private holdBetweenEpisodes(): boolean {
    if (!this.robot.hold || this.closed) return false;
    this.robot.hold().catch(() => undefined);
    return true;
  }

  /** A latched fault is cleared only once a person confirms it (or clears it elsewhere). */
  private async clearLatch(): Promise<void> {
    const s = this.latest;
    if (!s?.faulted) return;
    const kind: FaultKind = s.faultKind ?? 'unknown';
    const message = describeFault(this.config.name, kind, this.robot.capabilities.watchdog);
    const prompt = this.options.onFaultPrompt;
    if (!prompt) {
      throw new ResrtError(
        `${this.id}: ${message}`,
        'clear the latch once the cell is safe (resrt asks for confirmation where a person runs it; the actor dashboard has "reset e-stop")',
      );
    }
    let confirmed = false;
    const confirmation = new Promise<void>((resolve) => {
      this.faultConfirm = () => {
        confirmed = true;
        resolve();
      };
    });
    const clearedElsewhere = this.waitState((st) => !st.faulted, Infinity);
    prompt(message, kind);
    await Promise.race([confirmation, clearedElsewhere]);
    this.faultConfirm = null;
    if (this.closed) throw new ResrtError(`${this.id}: environment closed during reset`);
    if (confirmed) {
      await this.waitConnected('clearing the fault');
      try {
        await this.robot.resetFault();
      } catch (err) {
        throw new ResrtError(
          `${this.id}: the robot refused to clear its ${kind === 'unknown' ? 'fault' : kind} latch: ${(err as Error).message.split('\n')[0]}`,
          'check the robot and its link, then reset again',
        );
      }
    }
    const cleared = await this.waitState((st) => !st.faulted, this.resetTimeoutMs);
    if (!cleared) {
      throw new ResrtError(
        `${this.id}: the robot still reports a latched fault ${this.resetTimeoutMs} ms after it was cleared`,
        'check the robot (a hardware e-stop button may still be pressed), then reset again',
      );
    }
  }

  private clip(action: Float32Array): Float32Array {
    for (let i = 0; i < action.length; i++)
      action[i] = Math.min(this.high[i], Math.max(this.low[i], action[i]));
    return action;
  }

  private endWithFault(fault: string): StepResult {
    const action = Float32Array.from(this.safe);
    if (!this.holdBetweenEpisodes() && !this.closed)
      this.robot.send({ action, validForMs: this.config.commandValidMs });
    this.inEpisode = false;
    const info: HardwareStepInfo = { success: false, fault, action };
    // The last good observation with its frames: a visuomotor policy can still act on it (the
    // session actor asks its base for the next base action of every step).
    const result: StepResult = { obs: this.lastObs, reward: 0, terminated: false, truncated: true, info };
    if (this.lastFrames) result.frames = this.lastFrames;
    return result;
  }

  async step(action: ArrayLike<number>): Promise<StepResult> {
    if (!this.inEpisode) {
      throw new ResrtError(
        `${this.id}: step() outside an episode`,
        'call reset() first (and after each episode end)',
      );
    }
    if (action.length !== this.actionSpace.dim) {
      return this.endWithFault(`action has ${action.length} dimensions, expected ${this.actionSpace.dim}`);
    }
    const cmd = new Float32Array(action.length);
    for (let i = 0; i < action.length; i++) {
      if (!Number.isFinite(action[i])) return this.endWithFault(`action[${i}] is ${action[i]}`);
      cmd[i] = action[i];
    }
    const before = this.faultNow();
    if (before) return this.endWithFault(before);
    this.clip(cmd);
    if (!this.robot.send({ action: cmd, validForMs: this.config.commandValidMs })) {
      return this.endWithFault('the link refused the command');
    }
    const sentAt = performance.now();
    const lateMs = await this.clock.tick();
    const grace = this.options.stateGraceMs ?? 2000 * this.controlDt;
    const state = await this.stateAfter(sentAt, grace);
    const after = this.faultNow();
    if (after) return this.endWithFault(after);
    if (!state)
      return this.endWithFault(`no fresh state within ${Math.round(1000 * this.controlDt + grace)} ms`);
    const seen = this.cameraHealth(state);
    if (seen?.fault) return this.endWithFault(seen.fault);
    this.steps++;
    this.lastObs = this.observe(state);
    this.lastFrames = seen?.frames;
    const verdict = this.manualLabel.judge() ?? this.success.judge(state);
    const terminated = verdict !== null;
    const truncated = !terminated && this.steps >= this.maxEpisodeSteps;
    if (terminated || truncated) {
      this.inEpisode = false;
      this.holdBetweenEpisodes();
    }
    const info: HardwareStepInfo = {
      success: verdict === true,
      action: cmd,
      stateAgeMs: performance.now() - state.receivedAtMs,
      ...(lateMs > 0 ? { lateMs } : {}),
      ...(seen ? { cameras: seen.health } : {}),
    };
    const result: StepResult = {
      obs: this.lastObs,
      reward: verdict === true ? 1 : 0,
      terminated,
      truncated,
      info,
    };
    if (seen) result.frames = seen.frames;
    return result;
  }

  /**
   * The cameras' latest frames for an observation built from `state`, with their health; a fault
   * names the first camera that cannot be trusted (missing, stale, frozen, future-dated).
   */
  private cameraHealth(
    state: RobotState,
  ): { frames: Record<string, CameraFrame>; health: CameraHealth[]; fault?: string } | null {
    if (this.cameraSources.length === 0) return null;
    const now = performance.now();
    const frames: Record<string, CameraFrame> = {};
    const health: CameraHealth[] = [];
    let fault: string | undefined;
    this.cameraSources.forEach((source, k) => {
      const frame = source.latest();
      const h = this.monitors[k].check(frame, now, state.receivedAtMs);
      health.push(h);
      if (frame) frames[source.spec.name] = frame;
      fault ??= h.detail && h.fault ? h.detail : undefined;
    });
    return { frames, health, fault };
  }

  /** At reset, every camera must deliver a fit frame within the reset timeout. */
  private async framesForReset(state: RobotState): Promise<Record<string, CameraFrame> | undefined> {
    if (this.cameraSources.length === 0) return undefined;
    const end = performance.now() + this.resetTimeoutMs;
    for (;;) {
      const seen = this.cameraHealth(state)!;
      // The state ages while we wait: pair the frames with a state that is as fresh as they are.
      if (!seen.fault) return seen.frames;
      if (performance.now() > end || this.closed) {
        throw new ResrtError(
          `${this.id}: ${seen.fault} (waited ${this.resetTimeoutMs} ms at reset)`,
          'check the camera is connected and streaming (for ffmpeg sources: `ffplay` the same input; for MQTT: mosquitto_sub -t resrt/v1/+/camera/#), then reset again',
        );
      }
      await sleep(10);
      if (this.latest) state = this.latest;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.inEpisode = false;
    // A manual reset waiting for a person wakes up and fails on the closed environment.
    this.confirmReset();
    this.confirmFaultClear();
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.resolve(null);
    }
    this.waiters = [];
    for (const s of this.subs) s.unsubscribe();
    if (this.options.closeCameras ?? true) for (const c of this.cameraSources) await c.close();
    if (this.options.closeRobot ?? true) await this.robot.close();
  }
}

function observationNames(
  entries: readonly ObservationEntry[],
  caps: { jointCount: number; sensorCount: number },
): string[] {
  const names: string[] = [];
  for (const e of entries) {
    const n = e.field === 'sensors' ? caps.sensorCount : caps.jointCount;
    const idx = e.indices ?? Array.from({ length: n }, (_, i) => i);
    for (const i of idx) names.push(`${e.field}[${i}]`);
  }
  return names;
}
