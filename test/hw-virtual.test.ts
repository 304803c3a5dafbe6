// The whole hardware path without hardware: a MuJoCo task behind a real MQTT broker or a real
// pseudo-terminal pair, driven through Robot → HardwareEnv exactly as a physical robot would be.
import { afterEach, describe, expect, it } from 'vitest';
import { connectRobot, robotEnv } from '../src/hw/connect.js';
import { startEmbeddedBroker, type RunningBroker } from '../src/util/mqtt-broker.js';
import { startVirtualRobot, type VirtualRobot } from '../src/hw/virtual-robot.js';
import { evaluatePolicy } from '../src/runtime/evaluate.js';
import { cleanExpert, ImperfectExpert } from '../src/sim/expert.js';
import { builtInTasks } from '../src/sim/registry.js';
import type { AnyTask } from '../src/sim/registry.js';
import type { Robot } from '../src/types.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function runExpertOver(
  virtual: VirtualRobot,
  task: AnyTask = builtInTasks.reach,
  episodes = 4,
): Promise<{ successes: number; episodes: number; robot: Robot }> {
  const robot: Robot = await connectRobot(virtual.robotUrl, { actionNames: virtual.config.action.names });
  cleanups.push(() => robot.close());
  const env = robotEnv(robot, virtual.config, {
    virtualScene: { obsDim: virtual.plant.obsDim },
    closeRobot: false,
  });
  const expert = new ImperfectExpert(task.expert!(), env.actionSpace.dim, cleanExpert);
  const r = await evaluatePolicy(env, expert, { episodes });
  return { successes: r.successes, episodes: r.episodes, robot };
}

describe('virtual robot', () => {
  it('runs a MuJoCo task over MQTT (embedded broker): the expert succeeds through the bridge', async () => {
    const broker: RunningBroker = await startEmbeddedBroker({ port: 0 });
    cleanups.push(() => broker.close());
    const virtual = await startVirtualRobot(builtInTasks.reach, { transport: { brokerUrl: broker.url } });
    cleanups.push(() => virtual.close());
    const r = await runExpertOver(virtual);
    expect(r.episodes).toBe(4);
    expect(r.successes).toBeGreaterThanOrEqual(3);
    // The scene was reset between episodes by the virtual robot itself.
    expect(virtual.plant.episode).toBeGreaterThanOrEqual(3);
  }, 60_000);

  it('runs a MuJoCo task over the serial protocol on a pseudo-terminal pair', async () => {
    const virtual = await startVirtualRobot(builtInTasks.reach, { transport: 'serial' });
    cleanups.push(() => virtual.close());
    expect(virtual.robotUrl).toMatch(/^serial:\//);
    const r = await runExpertOver(virtual);
    expect(r.episodes).toBe(4);
    expect(r.successes).toBeGreaterThanOrEqual(3);
  }, 60_000);

  // 19 and 21 sensors: over version 1's 16, so these run on protocol version 2 frames.
  it.each([
    ['push', 19],
    ['peg-insert', 21],
  ] as const)(
    'runs %s over the serial protocol (version 2 frames)',
    async (name, sensors) => {
      const task = builtInTasks[name];
      const virtual = await startVirtualRobot(task, { transport: 'serial' });
      cleanups.push(() => virtual.close());
      const r = await runExpertOver(virtual, task, 3);
      expect(r.robot.capabilities).toMatchObject({ protocolVersion: 2, sensorCount: sensors, jointCount: 0 });
      expect(r.episodes).toBe(3);
      // The expert closes its loop over a real-time link: a loaded host costs it episodes, but
      // one success shows the version-2 state reached it and its commands moved the scene.
      expect(r.successes).toBeGreaterThanOrEqual(1);
    },
    60_000,
  );

  it('a watchdog fault latched while the host waits for the scene is cleared by the reset', async () => {
    // The scene resets itself 1.5 s after an episode, past the serial device's 1 s watchdog: every
    // reset waits through a latched fault (what a loaded host meets with the default delay).
    const virtual = await startVirtualRobot(builtInTasks.reach, { transport: 'serial', resetDelayMs: 1500 });
    cleanups.push(() => virtual.close());
    const r = await runExpertOver(virtual, builtInTasks.reach, 2);
    expect(r.episodes).toBe(2);
    expect(r.successes).toBeGreaterThanOrEqual(1);
  }, 60_000);
});
