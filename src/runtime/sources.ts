/**
 * Where the control loop gets observations and where its actions go: a simulator stepped once
 * per tick, or a robot link (latest state in, command out).
 */
import { Subject, type Observable, type Subscription } from 'rxjs';
import type {
  CameraFrames,
  CameraSpec,
  Env,
  LinkStatus,
  MaybePromise,
  Robot,
  RobotState,
  Transition,
} from '../types.js';
import { ResrtError } from '../util/errors.js';
import { nowMs } from './scheduler.js';

export interface ObservationSample {
  obs: Float32Array;
  /** Host time (nowMs) at which the observation was taken or received. */
  atMs: number;
  /** The cameras' frames of this observation, from sources with cameras (visuomotor bases read them). */
  frames?: CameraFrames;
}

/** What the loop knows about the action it hands to the actuator, for transition records. */
export interface ActuationRecord {
  /** The observation the action was computed from (null when none was usable). */
  obs: Float32Array | null;
  /** The camera frames that came with `obs`, if any. */
  frames?: CameraFrames;
  baseAction: Float32Array | null;
  residual: Float32Array | null;
  safetyEvents: number;
  policyVersion: number;
}

export interface ActuationResult {
  ok: boolean;
  detail?: string;
  /** The episode ended on this step and the source has started a new one. */
  episodeEnded?: boolean;
}

export interface ObservationSource {
  readonly kind: string;
  readonly obsDim: number;
  readonly actionDim: number;
  /** The cameras whose frames come with every observation (ObservationSample.frames); absent: none. */
  readonly cameras?: readonly CameraSpec[];
  /** Only sources with rewards (simulators) emit transitions. */
  readonly transitions$?: Observable<Transition>;
  open(): Promise<void>;
  latest(): ObservationSample | null;
  /** A reason not to trust the latest observation (device fault), or null. */
  fault(): string | null;
  actuate(action: Float32Array, record: ActuationRecord): MaybePromise<ActuationResult>;
  /** Latching e-stop on the device, where there is one (Robot.estop). */
  estop?(reason: string): void;
  /** After the last tick: send `safeAction` where there is hardware, release subscriptions. */
  close(safeAction: Float32Array): Promise<void>;
}

// ---------------------------------------------------------------------------------------------

export interface EnvSourceOptions {
  /** Seed of the first episode; episode e uses seed + e. */
  seed?: number;
}

export interface EnvSource extends ObservationSource {
  readonly transitions$: Observable<Transition>;
  readonly episode: number;
}

function sampleOf(obs: Float32Array, frames: CameraFrames | undefined): ObservationSample {
  return frames ? { obs, atMs: nowMs(), frames } : { obs, atMs: nowMs() };
}

/**
 * A simulator as a source: each actuation steps the env once; terminated/truncated (or
 * maxEpisodeSteps, like gymnasium's TimeLimit) resets it. The env stays owned by the caller.
 */
export function envSource(env: Env, options: EnvSourceOptions = {}): EnvSource {
  const transitions = new Subject<Transition>();
  let current: ObservationSample | null = null;
  let episode = 0;
  let step = 0;
  const seedFor = (e: number): number | undefined =>
    options.seed === undefined ? undefined : options.seed + e;
  const reset = async (): Promise<void> => {
    const r = await env.reset({ seed: seedFor(episode) });
    // Simulators may reuse their observation buffer on the next step; keep our own copy. Frames
    // are fresh per step (the CameraFrame contract): kept by reference.
    current = sampleOf(Float32Array.from(r.obs), r.frames);
    step = 0;
  };
  return {
    kind: `env:${env.id}`,
    obsDim: env.observationSpace.dim,
    actionDim: env.actionSpace.dim,
    cameras: env.cameras?.length ? env.cameras : undefined,
    transitions$: transitions.asObservable(),
    get episode() {
      return episode;
    },
    open: reset,
    latest: () => current,
    fault: () => null,
    async actuate(action, record) {
      const before = current;
      const result = await env.step(action);
      const nextObs = Float32Array.from(result.obs);
      step++;
      const truncated = result.truncated || (!result.terminated && step >= env.maxEpisodeSteps);
      current = sampleOf(nextObs, result.frames);
      const executed = Float32Array.from(action);
      // What the action was computed from: the loop's record, else the observation it acted on.
      const from = record.obs ? { obs: record.obs, frames: record.frames } : (before ?? current);
      transitions.next({
        obs: from.obs,
        ...(from.frames ? { frames: from.frames } : {}),
        baseAction: record.baseAction ?? executed,
        residual: record.residual ?? new Float32Array(action.length),
        action: executed,
        reward: result.reward,
        nextObs,
        ...(result.frames ? { nextFrames: result.frames } : {}),
        terminated: result.terminated,
        truncated,
        intervention: false,
        safetyEvents: record.safetyEvents,
        policyVersion: record.policyVersion,
        episode,
        step: step - 1,
      });
      if (result.terminated || truncated) {
        episode++;
        await reset();
        return { ok: true, episodeEnded: true, detail: result.terminated ? 'terminated' : 'truncated' };
      }
      return { ok: true };
    },
    async close() {
      // A simulator holds nothing physical: nothing to make safe, and stepping it once more
      // would add a transition nobody asked for.
      transitions.complete();
    },
  };
}

// ---------------------------------------------------------------------------------------------

export interface RobotSourceOptions {
  /** State -> observation; default [positions, velocities, sensors]. */
  toObs?: (state: RobotState) => Float32Array;
  /** Width of toObs's result; required with a custom toObs. */
  obsDim?: number;
  /** Command validity sent with every command (RobotCommand.validForMs). Default 3 periods. */
  validForMs?: number;
  /** How the robot is reached, for the source's kind ("robot:NAME via WHAT"). */
  via?: string;
}

/** Why a robot link in this status is no link to act on (null when it is up or still connecting). */
export function linkDownReason(status: LinkStatus): string | null {
  return status === 'lost' || status === 'closed' ? `the robot link is ${status}` : null;
}

export function defaultRobotObs(state: RobotState): Float32Array {
  const out = new Float32Array(state.positions.length + state.velocities.length + state.sensors.length);
  out.set(state.positions, 0);
  out.set(state.velocities, state.positions.length);
  out.set(state.sensors, state.positions.length + state.velocities.length);
  return out;
}

/** A robot link as a source: the latest state$ value in, robot.send out. */
export function robotSource(robot: Robot, options: RobotSourceOptions = {}): ObservationSource {
  const caps = robot.capabilities;
  if (options.toObs && options.obsDim === undefined) {
    throw new ResrtError(
      'robotSource: a custom toObs needs obsDim',
      'pass { toObs, obsDim } with the width toObs returns',
    );
  }
  const toObs = options.toObs ?? defaultRobotObs;
  const obsDim = options.obsDim ?? 2 * caps.jointCount + caps.sensorCount;
  const validForMs = options.validForMs ?? 3000 / caps.rateHz;
  let state: RobotState | null = null;
  let sample: ObservationSample | null = null;
  let linkStatus: LinkStatus = 'connecting';
  const subscriptions: Subscription[] = [];
  return {
    kind: options.via ? `robot:${caps.name} via ${options.via}` : `robot:${caps.name}`,
    obsDim,
    actionDim: caps.actionDim,
    async open() {
      subscriptions.push(
        robot.state$.subscribe((s) => {
          state = s;
          sample = null; // converted lazily: at 1 kHz most states are never read
        }),
        robot.status$.subscribe((s) => {
          linkStatus = s;
        }),
      );
    },
    latest() {
      // The loop reads the latest state once per tick: bytes already in the kernel land first.
      robot.poll?.();
      if (!state) return null;
      if (!sample) sample = { obs: toObs(state), atMs: state.receivedAtMs };
      return sample;
    },
    fault() {
      if (state?.faulted) return 'the device reports a latched fault or e-stop';
      // The last state of a link that is gone is no state to act on, however recent.
      return linkDownReason(linkStatus);
    },
    estop: (reason) => robot.estop(reason),
    actuate(action) {
      const down = linkDownReason(linkStatus);
      if (down) return { ok: false, detail: `${down}; the command may not reach the device` };
      const ok = robot.send({ action, validForMs });
      return ok ? { ok } : { ok, detail: 'robot.send refused the command (link down or bad shape)' };
    },
    async close(safeAction) {
      robot.send({ action: safeAction, validForMs });
      for (const s of subscriptions.splice(0)) s.unsubscribe();
    },
  };
}
