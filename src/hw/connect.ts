/**
 * From a transport string to a Robot, and from a robot to an environment: what `resrt run/eval
 * --robot` and the virtual robot use, so that nothing above knows which transport runs.
 */
import type { Env, Robot } from '../types.js';
import { HardwareEnv, type HardwareEnvOptions } from './hardware-env.js';
import { MqttRobot } from './mqtt/mqtt-robot.js';
import { parseRobotUrl, type RobotConfig } from './robot-config.js';
import { SerialRobot } from './serial/serial-robot.js';

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
}

export async function connectRobot(transport: string, options: ConnectOptions = {}): Promise<Robot> {
  const url = parseRobotUrl(transport);
  if (url.kind === 'serial') {
    return SerialRobot.open(url.path, {
      baudRate: url.baudRate ?? 1_000_000,
      actionNames: options.actionNames,
      ...(options.watchdogMs !== undefined ? { config: { watchdogMs: options.watchdogMs } } : {}),
    });
  }
  return MqttRobot.connect(`${url.brokerUrl}/${url.robotId}`, {
    username: options.username,
    password: options.password,
  });
}

/**
 * A HardwareEnv over a robot. For a resrt virtual robot (`virtualScene`) the simulated scene resets
 * itself, so a manual reset is confirmed as soon as the robot reports a fresh scene (step counter
 * back at zero), and a latched fault is cleared as part of the reset: there is no cell and no person
 * to ask. For a real robot the caller's onResetPrompt and onFaultPrompt ask a person, and latched
 * faults are cleared only once they confirm.
 */
export function robotEnv(
  robot: Robot,
  config: RobotConfig,
  options: HardwareEnvOptions & { virtualScene?: { obsDim: number } } = {},
): Env {
  const virtual = options.virtualScene;
  if (!virtual) return new HardwareEnv(robot, config, options);
  const env: HardwareEnv = new HardwareEnv(robot, config, {
    ...options,
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
