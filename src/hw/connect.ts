/**
 * From a transport string to a Robot, and from a robot to an environment: what `resrt run/eval
 * --robot` and the virtual robot use, so that nothing above knows which transport runs.
 */
import type { Env, Robot, RobotState } from '../types.js';
import { HardwareEnv, type HardwareEnvOptions } from './hardware-env.js';
import { MqttRobot } from './mqtt/mqtt-robot.js';
import { parseRobotUrl, type RobotConfig } from './robot-config.js';
import { SerialRobot } from './serial/serial-robot.js';

export interface ConnectOptions {
  /** Names for the action dimensions (the serial protocol carries none). */
  actionNames?: string[];
  username?: string;
  password?: string;
}

export async function connectRobot(transport: string, options: ConnectOptions = {}): Promise<Robot> {
  const url = parseRobotUrl(transport);
  if (url.kind === 'serial') {
    return SerialRobot.open(url.path, {
      baudRate: url.baudRate ?? 1_000_000,
      actionNames: options.actionNames,
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
 * back at zero), and a watchdog fault latched while the host waited between episodes is cleared as
 * part of the reset, as the person resetting a real cell would. For a real robot the caller's
 * onResetPrompt asks a person, and latched faults stay for a person to clear.
 */
export function robotEnv(
  robot: Robot,
  config: RobotConfig,
  options: HardwareEnvOptions & { virtualScene?: { obsDim: number } } = {},
): Env {
  const env = new HardwareEnv(robot, config, options);
  const virtual = options.virtualScene;
  if (!virtual) return env;
  const stepIndex = virtual.obsDim + 2;
  const episodeIndex = virtual.obsDim + 1;
  let lastEpisode = -1;
  let latest: RobotState | null = null;
  robot.state$.subscribe((s) => {
    latest = s;
    if (!env.awaitingResetConfirmation) return;
    const episode = s.sensors[episodeIndex];
    // Fresh: not stepped yet, and not the scene we just ran.
    if (s.sensors[stepIndex] === 0 && episode !== lastEpisode) {
      lastEpisode = episode;
      env.confirmReset();
    }
  });
  return {
    id: env.id,
    observationSpace: env.observationSpace,
    actionSpace: env.actionSpace,
    controlDt: env.controlDt,
    maxEpisodeSteps: env.maxEpisodeSteps,
    cameras: env.cameras,
    async reset(opts) {
      if ((latest as RobotState | null)?.faulted) await robot.resetFault();
      return env.reset(opts);
    },
    step: (action) => env.step(action),
    close: () => env.close(),
  };
}
