/**
 * A session actor's robot (`runActor`'s `robot` option): the opener that connects it and wraps it
 * as an Env, and the two numbers of its config the actor reads itself. The runtime imports nothing
 * of hw; the CLI (and tests) hand this in, as `resrt run` hands the loop its robot.
 */
import type { ActorRobotOptions, OpenedRobot } from '../types.js';
import { connectRobotEnv, robotEnv } from './connect.js';
import type { RobotConfig } from './robot-config.js';

export interface ActorRobotSpec {
  /** serial:/dev/ttyACM0, mqtt://host:port/robot-id, ... (see connectRobot). */
  url: string;
  config: RobotConfig;
  /** A resrt virtual robot (it resets its own scene): its task observation width. */
  virtualScene?: { obsDim: number };
  username?: string;
  password?: string;
}

/**
 * Connects the robot and wraps it as a HardwareEnv that leaves the robot open (the actor closes
 * it after the env); reset and fault prompts go to `log`.
 */
export async function openActorRobot(
  spec: ActorRobotSpec,
  log: (line: string) => void,
): Promise<OpenedRobot> {
  const { robot, env } = await connectRobotEnv(
    spec.url,
    { config: spec.config, username: spec.username, password: spec.password },
    (connected) =>
      robotEnv(connected, spec.config, {
        virtualScene: spec.virtualScene,
        closeRobot: false,
        onResetPrompt: (m) => log(`reset: ${m} (confirm on the dashboard or with confirm-reset)`),
        onFaultPrompt: (m) => log(`fault: ${m}; then clear it with "reset e-stop" on the dashboard or key x`),
      }),
  );
  return { robot, env, confirmReset: () => void env.confirmReset() };
}

/** `runActor`'s `robot` option for this robot. */
export function actorRobot(spec: ActorRobotSpec): ActorRobotOptions {
  return {
    open: (log) => openActorRobot(spec, log),
    commandValidMs: spec.config.commandValidMs,
    rateHz: spec.config.rateHz,
    virtualScene: spec.virtualScene,
  };
}
