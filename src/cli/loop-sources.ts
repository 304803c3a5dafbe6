/**
 * Observation sources a control loop's thread builds for itself (LoopPlan.source): a MuJoCo task
 * stepped in real time, or an MQTT or serial robot link opened in that thread, so its state
 * callbacks and command writes never pass through the main thread's event loop. (A serial link
 * there runs over a non-blocking fd that the loop polls each tick, not over serialport, whose
 * poller cannot run in a worker thread; servo buses stay on the main thread behind a
 * SharedRobotBridge.) They live with the CLI because they wire the simulator and the hardware
 * layer to the runtime.
 */
import { isMainThread } from 'node:worker_threads';
import { connectRobot } from '../hw/connect.js';
import { observationLength, observeState, parseRobotConfig, parseRobotUrl } from '../hw/robot-config.js';
import type { HostedSource, PlainData, SourceSpec } from '../runtime/loop-plan.js';
import { envSource, robotSource } from '../runtime/sources.js';
import { MujocoEnv } from '../sim/env.js';
import { loadTask } from '../sim/registry.js';
import { ResrtError } from '../util/errors.js';

const thisModule = import.meta.url;

export interface TaskSourceArgs {
  /** Built-in task name or a task module path. */
  task: string;
  /** Seed of the first episode; episode e uses seed + e. */
  seed?: number;
  maxEpisodeSteps?: number;
}

export interface RobotLinkArgs {
  /** serial:/dev/ttyACM0 or mqtt://host:port/robot-id. */
  url: string;
  /** The robot config (JSON object, as in the --robot-config file). */
  config: PlainData;
  username?: string;
  password?: string;
}

export function taskSourceSpec(args: TaskSourceArgs): SourceSpec {
  return { module: thisModule, export: 'taskSource', args: { ...args } };
}

export function robotLinkSpec(args: RobotLinkArgs): SourceSpec {
  return { module: thisModule, export: 'robotLinkSource', args: { ...args } };
}

function expectArgs<T>(args: PlainData | undefined, key: string, what: string): T {
  if (!args || typeof args !== 'object' || Array.isArray(args) || !(key in args)) {
    throw new ResrtError(`${what} needs { ${key}, ... } as its args`, `build the spec with ${what}Spec()`);
  }
  return args as unknown as T;
}

/** A simulated task as the loop's source. */
export async function taskSource(raw: PlainData | undefined): Promise<HostedSource> {
  const args = expectArgs<TaskSourceArgs>(raw, 'task', 'taskSource');
  const task = await loadTask(args.task);
  const env = await MujocoEnv.create(task, { maxEpisodeSteps: args.maxEpisodeSteps });
  return { source: envSource(env, { seed: args.seed }), close: async () => env.close() };
}

/** A robot link opened in the loop's thread, observed through its config's observation layout. */
export async function robotLinkSource(raw: PlainData | undefined): Promise<HostedSource> {
  const args = expectArgs<RobotLinkArgs>(raw, 'url', 'robotLink');
  const kind = parseRobotUrl(args.url).kind;
  if (kind === 'servo' && !isMainThread) {
    throw new ResrtError(
      `the servo bus ${args.url} cannot be opened in the control loop's thread: it runs over serialport, whose native poller is not worker-thread safe (a port opened there aborts the whole process)`,
      'open the robot on the main thread and hand it to the loop with new SharedRobotBridge(robot), as `resrt run --robot feetech:...` does',
    );
  }
  const config = parseRobotConfig(args.config, `robot config for ${args.url}`);
  const robot = await connectRobot(args.url, {
    username: args.username,
    password: args.password,
    config,
    // serialport cannot run here; the fd transport is read by the loop's own ticks (Robot.poll).
    serialTransport: 'fd',
  });
  const obsDim = observationLength(config, robot.capabilities);
  const source = robotSource(robot, {
    toObs: (s) => observeState(config, s, obsDim),
    obsDim,
    validForMs: config.commandValidMs,
    via: kind === 'serial' ? 'serial fd in the loop thread' : 'mqtt in the loop thread',
  });
  return { source, close: () => robot.close() };
}
