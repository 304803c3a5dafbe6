import mqtt from 'mqtt';
import { describe, expect, it } from 'vitest';
import {
  findMosquitto,
  startEmbeddedBroker,
  startMosquitto,
  type RunningBroker,
} from '../src/util/mqtt-broker.js';
import { FollowerPlant } from '../src/hw/mqtt/follower-plant.js';
import { serveMqttDevice } from '../src/hw/mqtt/mqtt-device.js';
import { MqttRobot } from '../src/hw/mqtt/mqtt-robot.js';
import { encodeCommand } from '../src/hw/mqtt/payload.js';
import { robotTopics } from '../src/hw/mqtt/topics.js';

const mosquitto = findMosquitto();
const requireMosquitto = process.env.RESRT_REQUIRE_MOSQUITTO === '1';
if (!mosquitto && !requireMosquitto) {
  console.warn('hw-mqtt-reconnect: skipping the mosquitto case: mosquitto is not installed');
}

const cases: { name: string; start: (port: number) => Promise<RunningBroker>; skip: boolean }[] = [
  { name: 'aedes', start: (port) => startEmbeddedBroker({ port }), skip: false },
  { name: 'mosquitto', start: (port) => startMosquitto({ port }), skip: !mosquitto && !requireMosquitto },
];

async function waitFor(pred: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!pred()) {
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const VALID_FOR_MS = 100;
const SKEW_MS = 25;

for (const bc of cases) {
  describe.skipIf(bc.skip)(`broker restart (${bc.name})`, () => {
    it('reconnects, and the device applies nothing sent while the link was down nor past its deadline', async () => {
      if (bc.name === 'mosquitto' && !mosquitto) {
        throw new Error(
          'RESRT_REQUIRE_MOSQUITTO=1 but mosquitto is not installed (apt-get install mosquitto)',
        );
      }
      let broker = await bc.start(0);
      const port = broker.port;
      const url = `${broker.url}/restart-${bc.name}`;
      // Each command carries a marker in action[0]; the plant logs when it applied which.
      const appliedAt = new Map<number, number>();
      const plant = new FollowerPlant({
        joints: 2,
        rateHz: 100,
        onCommand: (a) => appliedAt.set(Math.round(a[0] * 1000), Date.now()),
      });
      const backoff = { initialMs: 50, maxMs: 200 };
      const device = await serveMqttDevice(url, plant, {
        reconnectBackoffMs: backoff,
        allowedClockSkewMs: SKEW_MS,
      });
      const robot = await MqttRobot.connect(url, { reconnectBackoffMs: backoff });
      // A naive controller: mqtt.js defaults (queueQoSZero true) queue QoS 0 publishes while offline
      // and replay them on reconnect. It reconnects when the test says so, once the device is back.
      const naive = await mqtt.connectAsync(broker.url, { protocolVersion: 4, reconnectPeriod: 60_000 });
      naive.on('error', () => {});
      try {
        await waitFor(() => robot.status === 'connected', 'the first connection');
        const sentAt = new Map<number, number>();
        const sentWhileDown: number[] = [];
        let marker = 0;
        let phase: 'before' | 'down' | 'after' = 'before';
        const loop = setInterval(() => {
          marker++;
          const now = Date.now();
          const ok = robot.send({ action: Float32Array.of(marker / 1000, 0), validForMs: VALID_FOR_MS });
          if (ok) sentAt.set(marker, now);
          else if (phase === 'down') sentWhileDown.push(marker);
        }, 10);
        try {
          await sleep(250);
          phase = 'down';
          await broker.close();
          await waitFor(() => robot.status === 'lost', "robot status 'lost'");
          // Publish only once the naive client knows it is offline, so mqtt.js queues rather than writes.
          await waitFor(() => !naive.connected, 'the naive client to see the outage');
          const naiveMarkers = [901, 902, 903];
          for (const m of naiveMarkers) {
            const payload = encodeCommand({
              session: 99,
              seq: m,
              sentAtMs: Date.now(),
              validForMs: VALID_FOR_MS,
              action: Float32Array.of(m / 1000, 0),
            });
            naive.publish(robotTopics(`restart-${bc.name}`).cmd, Buffer.from(payload), { qos: 0 });
          }
          // Down for longer than any command's deadline.
          await sleep(300);
          broker = await bc.start(port);
          await waitFor(() => robot.status === 'connected', "robot status 'connected' again");
          phase = 'after';
          await waitFor(() => device.counters().reconnects >= 1, 'the device to reconnect');
          await sleep(100); // its subscriptions settle
          naive.reconnect();
          await waitFor(() => naive.connected, 'the naive client to reconnect');
          await sleep(250);
        } finally {
          clearInterval(loop);
        }
        const stats = device.counters();
        expect(sentWhileDown.length).toBeGreaterThan(5);
        for (const m of sentWhileDown) expect(appliedAt.has(m), `marker ${m} sent while down`).toBe(false);
        // The replayed commands of the naive client reached the device and were dropped as stale.
        await waitFor(() => device.counters().stale >= 3, 'the replayed commands to be judged stale');
        for (const m of [901, 902, 903]) expect(appliedAt.has(m), `replayed marker ${m}`).toBe(false);
        // Everything applied was applied inside its deadline.
        for (const [m, at] of appliedAt) {
          const sent = sentAt.get(m);
          expect(sent, `applied marker ${m} was sent`).toBeDefined();
          expect(at - sent!).toBeLessThanOrEqual(VALID_FOR_MS + SKEW_MS);
        }
        // Commands flow again after the restart.
        const appliedAfter = [...appliedAt.keys()].filter((m) => m > Math.max(...sentWhileDown));
        expect(appliedAfter.length).toBeGreaterThan(5);
        expect(robot.counters().reconnects).toBeGreaterThanOrEqual(1);
        expect(stats.reconnects).toBeGreaterThanOrEqual(1);
        expect(robot.counters().notSentOffline).toBe(sentWhileDown.length);
      } finally {
        await naive.endAsync(true);
        await robot.close();
        await device.close();
        await broker.close();
      }
    });

    it('delivers an e-stop issued while the link was down once it is back', async () => {
      if (bc.name === 'mosquitto' && !mosquitto) {
        throw new Error(
          'RESRT_REQUIRE_MOSQUITTO=1 but mosquitto is not installed (apt-get install mosquitto)',
        );
      }
      let broker = await bc.start(0);
      const url = `${broker.url}/estop-${bc.name}`;
      const plant = new FollowerPlant({ joints: 2, rateHz: 100 });
      const backoff = { initialMs: 50, maxMs: 200 };
      const device = await serveMqttDevice(url, plant, { reconnectBackoffMs: backoff });
      const robot = await MqttRobot.connect(url, { reconnectBackoffMs: backoff });
      try {
        await waitFor(() => robot.status === 'connected', 'the first connection');
        await broker.close();
        await waitFor(() => robot.status === 'lost' && !robot.brokerConnected, 'the broker link to drop');
        robot.estop('pressed while the broker was down');
        await expect(robot.resetFault()).rejects.toThrow(/link is down/);
        broker = await bc.start(broker.port);
        await waitFor(() => device.estopLatched, 'the queued e-stop to latch');
        await waitFor(() => robot.status === 'connected' && robot.faulted, 'a faulted, connected robot');
      } finally {
        await robot.close();
        await device.close();
        await broker.close();
      }
    });
  });
}
