/**
 * What resrt tells a person about a robot's latched fault, and the check that a robot config's
 * watchdog is what the device does (docs/serial-protocol.md §3, docs/mqtt-topics.md).
 */
import type { WatchdogSpec } from '../types.js';
import { ResrtError } from '../util/errors.js';
import type { RobotConfig } from './robot-config.js';

export type FaultKind = 'estop' | 'watchdog' | 'unknown';

/** What a person needs to know about a latched fault, and what to check before clearing it. */
export function describeFault(robot: string, kind: FaultKind, watchdog: WatchdogSpec | undefined): string {
  if (kind === 'estop') {
    return (
      `the e-stop of ${robot} is latched and it holds its safe action. Find out why it was stopped, ` +
      'make the cell safe and release any e-stop button before clearing it'
    );
  }
  if (kind === 'watchdog') {
    const ms = watchdog ? `${watchdog.timeoutMs} ms` : 'its watchdog timeout';
    return (
      `the watchdog of ${robot} latched: it received no command for ${ms} (the controller stopped or ` +
      'stalled, or the link dropped) and holds its safe action. Check the robot and the cell are as ' +
      'you expect before clearing it'
    );
  }
  return `${robot} reports a latched fault and holds its safe action. Check the robot and the cell before clearing it`;
}

/** The config's watchdog must be what the device does: a mismatch is refused before any motion. */
export function checkWatchdog(config: RobotConfig, device: WatchdogSpec | undefined): void {
  const want = config.watchdog;
  if (!want) return;
  if (!device) {
    throw new ResrtError(
      `robot config ${config.name} asks for watchdog ${JSON.stringify(want)}, but the robot does not report its watchdog`,
      'remove "watchdog" from the config, or update the device (serial protocol version 2, or a resrt MQTT device)',
    );
  }
  if (device.onTimeout !== want.onTimeout) {
    throw new ResrtError(
      `robot config ${config.name} has watchdog.onTimeout "${want.onTimeout}", the device's watchdog does "${device.onTimeout}"`,
      want.onTimeout === 'hold'
        ? 'set "onTimeout": "latch" in the config, or run the device in hold mode (resrt-bridge-host --watchdog-mode hold, serveMqttDevice watchdogMode)'
        : 'set "onTimeout": "hold" in the config, or run the device in latch mode (the firmware default; serveMqttDevice watchdogMode: "latch")',
    );
  }
  if (want.timeoutMs !== undefined && device.timeoutMs !== want.timeoutMs) {
    throw new ResrtError(
      `robot config ${config.name} has watchdog.timeoutMs ${want.timeoutMs}, the device's watchdog is ${device.timeoutMs} ms`,
      `set "timeoutMs": ${device.timeoutMs} in the config (or leave it out), or configure the device's watchdog`,
    );
  }
}
