/**
 * From a transport string to a Robot, and from a robot to an environment: what `resrt run/eval
 * --robot` and the virtual robot use, so that nothing above knows which transport runs.
 */
import type { Robot } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { openCamerasInBackground } from './camera/open.js';
import { HardwareEnv, type HardwareEnvOptions } from './hardware-env.js';
import { MqttRobot } from './mqtt/mqtt-robot.js';
import { parseRobotUrl, type RobotConfig } from './robot-config.js';
import { SerialRobot } from './serial/serial-robot.js';
import type { SerialTransportKind } from './serial/transport.js';
import { loadCalibration } from './servo/calibration.js';
import { ServoRobot } from './servo/servo-robot.js';

export interface ConnectOptions {
  /** Names for the action dimensions (the serial protocol carries none). */
  actionNames?: string[];
  /**
   * The robot config's watchdog timeout (watchdog.timeoutMs): a serial device is configured to it
   * (CONFIG) on every connect; an MQTT device must already use it (HardwareEnv checks).
   */
  watchdogMs?: number;
  username?: string;
  password?: string;
  /**
   * The robot config: a servo arm (feetech:/dynamixel:) needs its `servo` section and calibration,
   * and it gives actionNames (action.names) and watchdogMs (watchdog.timeoutMs) unless those are set.
   */
  config?: RobotConfig;
  /**
   * What carries a serial link's bytes: 'fd' (a non-blocking fd polled by the control loop, any
   * thread) or 'serialport' (main thread only). Default: 'serialport' on the main thread, 'fd' in a
   * worker thread (the control loop's).
   */
  serialTransport?: SerialTransportKind;
}

export async function connectRobot(transport: string, given: ConnectOptions = {}): Promise<Robot> {
  const options: ConnectOptions = {
    actionNames: given.config?.action.names,
    watchdogMs: given.config?.watchdog?.timeoutMs,
    ...given,
  };
  const url = parseRobotUrl(transport);
  if (url.kind === 'servo') {
    const config = options.config;
    if (!config?.servo) {
      throw new ResrtError(
        `${transport} is a ${url.protocol} servo bus, and its robot config has no "servo" section`,
        'add the servo section (joints with ids and models, calibration file, onFault) — see docs/servo-bus.md',
      );
    }
    const calibration = loadCalibration(config.servo.calibration, config.servo.joints, {
      robotUrl: transport,
    });
    return ServoRobot.open(url, {
      name: config.name,
      section: config.servo,
      calibration,
      safeAction: config.action.safe,
      robotUrl: transport,
    });
  }
  if (url.kind === 'serial') {
    return SerialRobot.open(url.path, {
      baudRate: url.baudRate ?? 1_000_000,
      actionNames: options.actionNames,
      ...(options.serialTransport ? { transport: options.serialTransport } : {}),
      ...(options.watchdogMs !== undefined ? { config: { watchdogMs: options.watchdogMs } } : {}),
    });
  }
  return MqttRobot.connect(`${url.brokerUrl}/${url.robotId}`, {
    username: options.username,
    password: options.password,
  });
}

/**
 * Connects the robot and hands it to `wrap` (robotEnv with the caller's prompts). When the config
 * does not fit the robot (wrap throws), nothing took the robot: it is closed before the error goes on.
 */
export async function connectRobotEnv<E>(
  transport: string,
  options: ConnectOptions,
  wrap: (robot: Robot) => E,
): Promise<{ robot: Robot; env: E }> {
  const robot = await connectRobot(transport, options);
  try {
    return { robot, env: wrap(robot) };
  } catch (err) {
    await robot.close();
    throw err;
  }
}

/**
 * The scene of a resrt virtual robot, from the config it wrote (virtual-plant.ts): the observation
 * is the first obsDim sensors, and the scene's episode and step counters follow them.
 */
export function virtualSceneOf(config: RobotConfig): { obsDim: number } {
  return { obsDim: config.observation.reduce((n, e) => n + (e.indices?.length ?? 0), 0) };
}

/** How long a step waits for the state of a lockstep virtual scene. */
const LOCKSTEP_STATE_GRACE_MS = 2000;

/**
 * A HardwareEnv over a robot, with the robot config's cameras unless `options.cameras` gives them
 * (those open in the background and are closed with the env; an MQTT camera reads the robot's own
 * camera topic). For a resrt virtual robot (`virtualScene`) the simulated scene resets
 * itself, so a manual reset is confirmed as soon as the robot reports a fresh scene (step counter
 * back at zero), and a latched fault is cleared as part of the reset: there is no cell and no person
 * to ask. For a real robot the caller's onResetPrompt and onFaultPrompt ask a person, and latched
 * faults are cleared only once they confirm.
 */
export function robotEnv(
  robot: Robot,
  config: RobotConfig,
  options: HardwareEnvOptions & { virtualScene?: { obsDim: number } } = {},
): HardwareEnv {
  // A lockstep scene does not move while the host is late: wait for its states (ServoRobot's own
  // link timeout still catches a bus that went quiet).
  const lockstep = options.virtualScene !== undefined && config.servo?.scene?.lockstep === true;
  const opened = options.cameras
    ? null
    : openCamerasInBackground(config, robot instanceof MqttRobot ? robot.url : config.transport);
  const hardwareOptions: HardwareEnvOptions = {
    ...options,
    cameras: opened ?? options.cameras,
    cameraLimits: options.cameraLimits ?? config.cameraLimits,
    // The env owns the cameras it opened.
    closeCameras: opened ? true : options.closeCameras,
    ...(lockstep && options.stateGraceMs === undefined ? { stateGraceMs: LOCKSTEP_STATE_GRACE_MS } : {}),
  };
  try {
    return wrapRobot(robot, config, hardwareOptions, options.virtualScene);
  } catch (err) {
    // The config does not fit the robot: no env took the cameras opened for it (an ffmpeg child,
    // an MQTT client), so they are closed here.
    for (const camera of opened ?? []) void camera.close();
    throw err;
  }
}

function wrapRobot(
  robot: Robot,
  config: RobotConfig,
  hardwareOptions: HardwareEnvOptions,
  virtual: { obsDim: number } | undefined,
): HardwareEnv {
  if (!virtual) return new HardwareEnv(robot, config, hardwareOptions);
  const env: HardwareEnv = new HardwareEnv(robot, config, {
    ...hardwareOptions,
    onFaultPrompt: () => env.confirmFaultClear(),
  });
  const stepIndex = virtual.obsDim + 2;
  const episodeIndex = virtual.obsDim + 1;
  let lastEpisode = -1;
  robot.state$.subscribe((s) => {
    if (!env.awaitingResetConfirmation) return;
    const episode = s.sensors[episodeIndex];
    // Fresh: not stepped yet, and not the scene we just ran.
    if (s.sensors[stepIndex] === 0 && episode !== lastEpisode) {
      lastEpisode = episode;
      env.confirmReset();
    }
  });
  return env;
}
