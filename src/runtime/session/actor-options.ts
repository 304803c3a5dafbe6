/**
 * What `runActor` takes, and the checks on it that need nothing opened yet: a bad option is an
 * error naming it and its fix before a robot is connected or a file written.
 */
import type { ActorRobotOptions, Env, Policy } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import type { SuccessJudge } from '../success-detector.js';
import type { SafetyConfigInput } from '../../safety/config.js';
import { validateMixingSpec, type MixingSpec } from '../../residual/mixing-run.js';
import type { SendFrames } from './camera-batch.js';

export type { ActorRobotOptions, OpenedRobot, RobotOpener } from '../../types.js';

export interface ActorOptions {
  robotId: string;
  /** mqtt://host:port of the session's broker (the learner prints it). */
  brokerUrl: string;
  /** Session name: the topic namespace shared with the learner. Default 'default'. */
  session?: string;
  /** Spool and last good residual live here; keep it across restarts. */
  stateDir: string;
  /** The frozen base: an ONNX path or any Policy. */
  base: string | Policy;
  /** A simulated environment (exactly one of env and robot). */
  env?: Env;
  robot?: ActorRobotOptions;
  /** Safety layer config; default: the box [-1, 1] with the layer's default watchdog and teleop. */
  safety?: SafetyConfigInput;
  /** A simulated env steps at this rate (real time); default: as fast as it answers. */
  rateHz?: number;
  /** Transitions per batch. Default 32. */
  batchSize?: number;
  /** A partial batch is flushed after this long. Default 200 ms. */
  flushMs?: number;
  /** Resend batches unacknowledged for this long. Default 2000 ms. */
  resendMs?: number;
  /** Stop after this many episodes (default: run until stop()). */
  episodes?: number;
  /**
   * No new episode starts while the spool holds this many MiB the learner has not acknowledged
   * (the learner has been away long; the robot's disk must not fill). Default 1024.
   */
  spoolLimitMiB?: number;
  /**
   * No new episode starts while the disk holding stateDir has less than this many MiB free (room
   * for the OS and whatever else writes there). Default 256.
   */
  minFreeMiB?: number;
  /**
   * After an episode that hit the time limit, wait this long for a person's success/failure label
   * (dashboard, MQTT, terminal). 0 (default): no label phase, the success source decides.
   */
  labelTimeoutMs?: number;
  seed?: number;
  /** Serve the actor's dashboard on this port (0 picks one). Default: no dashboard. */
  dashboardPort?: number;
  /** Dashboard bind address. Default 127.0.0.1; anything else needs a token. */
  host?: string;
  token?: string;
  /**
   * Accept e-stop resets from MQTT (the learner's dashboard). Default false: the e-stop is cleared
   * where someone sees the robot (this actor's dashboard, its terminal keys, or the API).
   */
  remoteEstopReset?: boolean;
  /**
   * Conservative mixing (docs/safety.md): every episode runs a plan of this mixer, which keeps
   * its expected success ≥ (1 − α)·V_base. The baseline is the base's success on this robot
   * ({ value } or counts from `resrt eval`). Plans and outcomes are kept in stateDir/mixing.jsonl
   * and replayed at restart.
   */
  mixing?: MixingSpec;
  /**
   * What each transition carries of the cameras (docs/sessions.md "Cameras"): the base's embedding
   * ('features'), every frame as JPEG ('jpeg', at `jpegQuality`, default 85), or nothing ('none',
   * the default).
   */
  sendFrames?: SendFrames;
  jpegQuality?: number;
  /** Called with every command handed to the robot/env (logging, tests). */
  onCommand?: (action: Float32Array) => void;
  log?: (line: string) => void;
  /**
   * A learned success detector (resrt reward train) as the success source: it ends an episode
   * with reward 1 when it fires. A person's label overrides it.
   */
  successDetector?: SuccessJudge & { path?: string };
}

/** Throws a ResrtError naming the first bad option and its fix. */
export function checkActorOptions(options: ActorOptions): void {
  if (!!options.env === !!options.robot) {
    throw new ResrtError(
      'runActor needs exactly one of env (simulated) and robot (hardware)',
      'pass { robot: actorRobot({ url, config }) } (src/hw/actor-robot.ts) for a robot, or { env } for a simulator',
    );
  }
  const positiveInt = (v: number | undefined, what: string): void => {
    if (v !== undefined && !(Number.isInteger(v) && v > 0))
      throw new ResrtError(`${what} = ${v}`, `${what} must be a positive whole number`);
  };
  positiveInt(options.batchSize, 'batchSize');
  positiveInt(options.episodes, 'episodes');
  for (const [k, v] of [
    ['flushMs', options.flushMs],
    ['resendMs', options.resendMs],
  ] as const)
    if (v !== undefined && !(v > 0))
      throw new ResrtError(`${k} = ${v}`, `${k} must be a positive number of ms`);
  if (options.labelTimeoutMs !== undefined && !(options.labelTimeoutMs >= 0))
    throw new ResrtError(
      `labelTimeoutMs = ${options.labelTimeoutMs}`,
      'give 0 (no label phase) or a positive number of ms',
    );
  if (
    options.spoolLimitMiB !== undefined &&
    !(options.spoolLimitMiB > 0 && Number.isFinite(options.spoolLimitMiB))
  )
    throw new ResrtError(
      `spoolLimitMiB = ${options.spoolLimitMiB}`,
      'give a positive number of MiB the actor may spool while the learner is away (default 1024)',
    );
  if (options.minFreeMiB !== undefined && !(options.minFreeMiB >= 0 && Number.isFinite(options.minFreeMiB)))
    throw new ResrtError(
      `minFreeMiB = ${options.minFreeMiB}`,
      'give the MiB to keep free on the disk that holds the state folder (default 256; 0 for none)',
    );
  if (options.rateHz !== undefined && !(options.rateHz > 0 && Number.isFinite(options.rateHz)))
    throw new ResrtError(`rateHz ${options.rateHz}`, 'give a positive rate in Hz, or leave it out');
  if (options.mixing) {
    validateMixingSpec(options.mixing);
    if (options.mixing.baseline === 'initial-eval') {
      throw new ResrtError(
        "mixing.baseline 'initial-eval' needs a trainer's step-0 evaluation, and an actor has none",
        'evaluate the base on this robot and pass its counts (--baseline 45/100) or rate (--baseline 0.45)',
      );
    }
  }
}
