/** `resrt virtual-robot`, and the hardware side of `eval`: robots as environments. */
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { connectRobotEnv, robotEnv, virtualSceneOf } from '../hw/connect.js';
import { startEmbeddedBroker } from '../util/mqtt-broker.js';
import { HardwareEnv } from '../hw/hardware-env.js';
import { loadRobotConfig, type RobotConfig } from '../hw/robot-config.js';
import { startVirtualRobot } from '../hw/virtual-robot.js';
import { parseCameraStreams } from '../sim/camera/sim-cameras.js';
import { loadTask } from '../sim/registry.js';
import type { Env, Robot } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { checkOutputFile, parseIntArg } from './common.js';

export function registerRobotCommands(program: Command): void {
  program
    .command('virtual-robot')
    .description(
      'serve a simulated task as a robot over the serial protocol or MQTT (the whole stack without hardware)',
    )
    .requiredOption('--task <name|path>', 'built-in task name or path to a task module')
    .option('--serial', 'serve over a pseudo-terminal pair (needs socat)')
    .option('--mqtt <url>', 'serve over this MQTT broker, e.g. mqtt://127.0.0.1:1883')
    .option('--embedded-broker [port]', 'start an MQTT broker on 127.0.0.1 and serve over it')
    .option('--robot-id <id>', 'MQTT robot id (default virtual-<task>)')
    .option('--config-out <file>', 'write the robot config a client needs', 'virtual-robot.json')
    .option('--seed <s>', 'first scene seed', parseIntArg('--seed', 0), 0)
    .option(
      '--detector-cameras <streams>',
      'with MQTT: also publish cameras at sizes of their own for a success detector, [NAME=]CAMERA@WxH (the config marks them detector: true)',
    )
    .action(async (opts: VirtualCliOptions) => {
      const modes = [opts.serial, opts.mqtt, opts.embeddedBroker].filter(Boolean).length;
      if (modes !== 1)
        throw new ResrtError('choose one transport', 'pass --serial, --mqtt URL or --embedded-broker');
      checkOutputFile(opts.configOut, '--config-out');
      if (opts.detectorCameras && opts.serial)
        throw new ResrtError(
          '--detector-cameras publishes camera frames over MQTT, and --serial has no camera channel',
          'serve over --mqtt URL or --embedded-broker',
        );
      const task = await loadTask(opts.task);
      let closeBroker: (() => Promise<void>) | null = null;
      let brokerUrl = opts.mqtt;
      if (opts.embeddedBroker) {
        const port = typeof opts.embeddedBroker === 'string' ? Number(opts.embeddedBroker) : 1883;
        const broker = await startEmbeddedBroker({ port });
        brokerUrl = broker.url;
        closeBroker = () => broker.close();
      }
      const robot = await startVirtualRobot(task, {
        transport: opts.serial ? 'serial' : { brokerUrl: brokerUrl!, robotId: opts.robotId },
        seed: opts.seed,
        detectorCameras: opts.detectorCameras ? parseCameraStreams(opts.detectorCameras) : undefined,
      });
      writeFileSync(opts.configOut, JSON.stringify(robot.config, null, 2) + '\n');
      console.log(`virtual robot for ${task.name} at ${robot.robotUrl}`);
      console.log(`robot config written to ${opts.configOut}; try:`);
      console.log(
        `  npx resrt eval --task ${opts.task} --robot ${robot.robotUrl} --robot-config ${opts.configOut} --virtual --policy expert --episodes 10`,
      );
      console.log('Ctrl-C stops it.');
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await robot.close();
      await closeBroker?.();
    });
}

interface VirtualCliOptions {
  task: string;
  serial?: boolean;
  mqtt?: string;
  embeddedBroker?: boolean | string;
  robotId?: string;
  configOut: string;
  seed: number;
  detectorCameras?: string;
}

/**
 * A robot as an environment for eval/train. A resrt virtual robot resets its own scene; a real one
 * asks the person at the terminal to reset the cell and press Enter, and to type "clear" before a
 * latched e-stop or watchdog fault is cleared.
 */
export async function openRobotEnv(robotUrl: string, configPath: string, virtual: boolean): Promise<Env> {
  const config = loadRobotConfig(configPath);
  const { env } = await connectRobotEnv(robotUrl, { config }, (robot) => robotEnvFor(robot, config, virtual));
  return env;
}

function robotEnvFor(robot: Robot, config: RobotConfig, virtual: boolean): Env {
  // robotEnv opens the config's cameras.
  if (virtual) {
    return robotEnv(robot, config, { virtualScene: virtualSceneOf(config) });
  }
  const env: HardwareEnv = robotEnv(robot, config, {
    onResetPrompt: (message) => {
      const rl = createInterface({ input: process.stdin, output: process.stderr });
      rl.question(`${message} — press Enter when the cell is reset `, () => {
        rl.close();
        env.confirmReset();
      });
    },
    onFaultPrompt: (message) => askToClear(message, () => env.confirmFaultClear()),
  });
  return env;
}

/** Asks until the person types "clear": a latch is cleared only on a deliberate answer. */
export function askToClear(
  message: string,
  confirm: () => void,
  input: NodeJS.ReadableStream = process.stdin,
  output: NodeJS.WritableStream = process.stderr,
): void {
  const rl = createInterface({ input, output });
  output.write(`\n${message}.\n`);
  const ask = (): void =>
    rl.question('Type "clear" and press Enter to clear it (Ctrl-C stops): ', (answer) => {
      if (answer.trim().toLowerCase() !== 'clear') return ask();
      rl.close();
      confirm();
    });
  ask();
}
