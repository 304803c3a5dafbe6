// A robot config that does not fit the robot it connects to: the opener refuses it, and closes what
// it opened for it (the robot's MQTT link and the config's MQTT camera), seen from the broker.
import mqtt from 'mqtt';
import { afterEach, expect, it } from 'vitest';
import { openActorRobot } from '../src/hw/actor-robot.js';
import { startVirtualRobot } from '../src/hw/virtual-robot.js';
import { builtInTasks } from '../src/sim/registry.js';
import { startEmbeddedBroker } from '../src/util/mqtt-broker.js';
import { waitFor } from './session-fixtures.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

it('openActorRobot refuses a config that does not fit the robot and closes the robot link and its cameras', async () => {
  const broker = await startEmbeddedBroker();
  cleanups.push(() => broker.close());
  const v = await startVirtualRobot(builtInTasks.reach, {
    transport: { brokerUrl: broker.url, robotId: 'arm' },
    seed: 0,
  });
  cleanups.push(() => v.close());

  // Every client that connects from now on, and every one that leaves (the broker's $SYS events).
  const watcher = await mqtt.connectAsync(broker.url);
  cleanups.push(() => watcher.endAsync());
  const joined = new Set<string>();
  const left = new Set<string>();
  watcher.on('message', (topic, payload) => {
    const id = payload.toString();
    if (id === watcher.options.clientId) return;
    (topic.endsWith('/new/clients') ? joined : left).add(id);
  });
  await watcher.subscribeAsync(['$SYS/+/new/clients', '$SYS/+/disconnect/clients']);

  const tooFast = {
    ...v.config,
    rateHz: 100_000,
    cameras: [{ name: 'top', source: 'mqtt', width: 32, height: 32 }],
  };
  await expect(
    openActorRobot({ url: v.robotUrl, config: tooFast, virtualScene: { obsDim: v.plant.obsDim } }, () => {}),
  ).rejects.toThrow(/config rateHz 100000 is above the device's/);
  // Two clients came for this config, the robot's link and the camera's, and both left again.
  await waitFor(
    'the robot link and the camera to disconnect',
    () => joined.size === 2 && [...joined].every((id) => left.has(id)),
    10_000,
  ).catch((err: unknown) => {
    throw new Error(
      `${(err as Error).message}: joined ${[...joined].join(', ')}; left ${[...left].join(', ')}`,
    );
  });
});
