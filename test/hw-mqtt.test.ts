import mqtt, { type MqttClient } from 'mqtt';
import { firstValueFrom, filter } from 'rxjs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  findMosquitto,
  startEmbeddedBroker,
  startMosquitto,
  type RunningBroker,
} from '../src/util/mqtt-broker.js';
import { FollowerPlant } from '../src/hw/mqtt/follower-plant.js';
import { serveMqttDevice, type MqttDeviceOptions } from '../src/hw/mqtt/mqtt-device.js';
import { MqttRobot, type MqttRobotOptions } from '../src/hw/mqtt/mqtt-robot.js';
import { encodeCommand, encodeState } from '../src/hw/mqtt/payload.js';
import { robotTopics } from '../src/hw/mqtt/topics.js';
import type { LinkStatus, RobotState } from '../src/types.js';

interface BrokerCase {
  name: string;
  start: () => Promise<RunningBroker>;
  /** MQTT level the bridge should settle on with this broker. */
  protocol: 4 | 5;
  skip: string | null;
}

const mosquitto = findMosquitto();
const requireMosquitto = process.env.RESRT_REQUIRE_MOSQUITTO === '1';
const cases: BrokerCase[] = [
  { name: 'aedes', start: () => startEmbeddedBroker({ port: 0 }), protocol: 4, skip: null },
  {
    name: 'mosquitto',
    start: () => startMosquitto({ port: 0 }),
    protocol: 5,
    skip: mosquitto || requireMosquitto ? null : 'mosquitto is not installed (apt-get install mosquitto)',
  },
];

if (!mosquitto && !requireMosquitto)
  console.warn('hw-mqtt: skipping the mosquitto cases: mosquitto is not installed');

async function waitFor(pred: () => boolean, what: string, timeoutMs = 3_000): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!pred()) {
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

for (const bc of cases) {
  describe.skipIf(bc.skip !== null)(`MQTT bridge over ${bc.name}`, () => {
    let broker: RunningBroker;
    const cleanups: (() => Promise<void>)[] = [];
    let idCounter = 0;

    beforeAll(async () => {
      if (bc.name === 'mosquitto' && !mosquitto) {
        throw new Error(
          'RESRT_REQUIRE_MOSQUITTO=1 but mosquitto is not installed (apt-get install mosquitto)',
        );
      }
      broker = await bc.start();
    });
    afterAll(async () => {
      await broker?.close();
    });
    afterEach(async () => {
      while (cleanups.length) await cleanups.pop()!();
    });

    async function setup(deviceOpts: MqttDeviceOptions = {}, robotOpts: MqttRobotOptions = {}, joints = 3) {
      const robotId = `${bc.name}-r${++idCounter}`;
      const url = `${broker.url}/${robotId}`;
      const applied: Float32Array[] = [];
      const plant = new FollowerPlant({
        joints,
        rateHz: 100,
        onCommand: (a) => applied.push(Float32Array.from(a)),
      });
      const device = await serveMqttDevice(url, plant, { reconnectBackoffMs: 50, ...deviceOpts });
      cleanups.push(() => device.close());
      const robot = await MqttRobot.connect(url, { reconnectBackoffMs: 50, ...robotOpts });
      cleanups.push(() => robot.close());
      const statuses: LinkStatus[] = [];
      robot.status$.subscribe((s) => statuses.push(s));
      let latest: RobotState | null = null;
      robot.state$.subscribe((s) => (latest = s));
      await firstValueFrom(robot.status$.pipe(filter((s) => s === 'connected')));
      return {
        robotId,
        url,
        plant,
        device,
        robot,
        applied,
        statuses,
        latest: () => latest as RobotState | null,
      };
    }

    async function rawClient(): Promise<MqttClient> {
      const c = await mqtt.connectAsync(broker.url, { protocolVersion: bc.protocol, reconnectPeriod: 0 });
      cleanups.push(() => c.endAsync(true));
      return c;
    }

    function rawCommand(seq: number, action: number[], sentAtMs = Date.now(), validForMs = 200, session = 7) {
      return Buffer.from(
        encodeCommand({ session, seq, sentAtMs, validForMs, action: Float32Array.from(action) }),
      );
    }

    it(`negotiates MQTT ${bc.protocol === 5 ? '5' : '3.1.1'} on both sides`, async () => {
      const { robot, device } = await setup();
      expect(robot.protocolVersion).toBe(bc.protocol);
      expect(device.protocolVersion).toBe(bc.protocol);
      expect(robot.counters().protocolVersion).toBe(bc.protocol);
    });

    it('round-trips commands and states, clamping to the capabilities', async () => {
      const { robot, plant, device, applied, latest } = await setup();
      expect(robot.capabilities).toMatchObject({ actionDim: 3, jointCount: 3, sensorCount: 1 });
      expect(robot.send({ action: Float32Array.of(0.5, -0.5, 0.25), validForMs: 500 })).toBe(true);
      await waitFor(() => applied.length === 1, 'the command to be applied');
      expect(Array.from(applied[0])).toEqual([0.5, -0.5, 0.25]);
      // The plant follows, and the states say so.
      const keepAlive = setInterval(
        () => robot.send({ action: Float32Array.of(0.5, -0.5, 0.25), validForMs: 500 }),
        20,
      );
      try {
        await waitFor(
          () => (latest()?.positions[0] ?? 0) > 0.4 && (latest()?.positions[1] ?? 0) < -0.4,
          'states',
        );
      } finally {
        clearInterval(keepAlive);
      }
      expect(latest()!.faulted).toBe(false);
      expect(latest()!.sensors.length).toBe(1);
      expect(robot.send({ action: Float32Array.of(3, -3, 0), validForMs: 500 })).toBe(true);
      await waitFor(() => Array.from(plant.targets).join() === '1,-1,0', 'the clamped command');
      expect(device.counters().clamped).toBe(1);
      expect(robot.counters().sent).toBeGreaterThanOrEqual(3);
      expect(robot.counters().statesReceived).toBeGreaterThan(0);
    });

    it('publishes states at the device rate', async () => {
      const { robot, device } = await setup({ rateHz: 50 });
      const before = robot.counters().statesReceived;
      const published = device.counters().statesPublished;
      await sleep(600);
      const received = robot.counters().statesReceived - before;
      // 50 Hz for 0.6 s = 30; wide margins for a loaded CI box (timers fire late, never early).
      expect(received).toBeGreaterThanOrEqual(20);
      expect(received).toBeLessThanOrEqual(36);
      expect(device.counters().statesPublished - published).toBeLessThanOrEqual(36);
    });

    it('never applies a command whose deadline has passed, nor one from the future', async () => {
      const { robotId, device, applied } = await setup();
      const raw = await rawClient();
      const cmd = robotTopics(robotId).cmd;
      await raw.publishAsync(cmd, rawCommand(1, [0.1, 0.1, 0.1], Date.now() - 1_000, 100));
      await raw.publishAsync(cmd, rawCommand(2, [0.2, 0.2, 0.2], Date.now() + 60_000, 100));
      await raw.publishAsync(cmd, rawCommand(3, [0.3, 0.3, 0.3]));
      await waitFor(() => applied.length === 1, 'the fresh command');
      await sleep(50);
      expect(applied.map((a) => a[0])).toEqual([Math.fround(0.3)]);
      expect(device.counters()).toMatchObject({ stale: 1, future: 1, applied: 1 });
    });

    it('drops duplicate and out-of-order sequences', async () => {
      const { robotId, device, applied } = await setup();
      const raw = await rawClient();
      const cmd = robotTopics(robotId).cmd;
      for (const seq of [5, 5, 3, 6, 6, 4, 7]) await raw.publishAsync(cmd, rawCommand(seq, [seq / 10, 0, 0]));
      await waitFor(
        () => device.counters().applied + device.counters().duplicate + device.counters().outOfOrder === 7,
        'all 7',
      );
      expect(applied.map((a) => Math.round(a[0] * 10))).toEqual([5, 6, 7]);
      expect(device.counters()).toMatchObject({ applied: 3, duplicate: 2, outOfOrder: 2 });
    });

    it('rejects a wrong dimension and non-finite values on both sides', async () => {
      const { robot, robotId, device, applied } = await setup();
      expect(robot.send({ action: Float32Array.of(0.1, 0.2), validForMs: 200 })).toBe(false);
      expect(robot.send({ action: Float32Array.of(0.1, NaN, 0), validForMs: 200 })).toBe(false);
      expect(robot.send({ action: Float32Array.of(0.1, Infinity, 0), validForMs: 200 })).toBe(false);
      expect(robot.counters().notSentInvalid).toBe(3);
      const raw = await rawClient();
      const cmd = robotTopics(robotId).cmd;
      await raw.publishAsync(cmd, rawCommand(1, [0.1, 0.2]));
      const nan = rawCommand(2, [0.1, 0.2, 0.3]);
      nan.writeFloatLE(NaN, nan.length - 4);
      await raw.publishAsync(cmd, nan);
      await raw.publishAsync(cmd, Buffer.from([1, 1, 0])); // truncated
      await waitFor(
        () => device.counters().rejected.dimension === 1 && device.counters().rejected['non-finite'] === 1,
        'the rejections',
      );
      await waitFor(() => device.counters().rejected.malformed === 1, 'the malformed rejection');
      expect(applied).toHaveLength(0);
    });

    it('drops states that do not match the capabilities or carry non-finite values', async () => {
      const { robot, robotId, device } = await setup({ rateHz: 5 });
      const raw = await rawClient();
      const seen: RobotState[] = [];
      robot.state$.subscribe((s) => seen.push(s));
      seen.length = 0; // the replayed latest one
      const state = (joints: number, value: number) => ({
        flags: 0,
        seq: 1,
        deviceTimeUs: 1,
        lastCommandSession: 0,
        lastCommandSeq: 0,
        positions: new Float32Array(joints).fill(value),
        velocities: new Float32Array(joints),
        efforts: new Float32Array(joints),
        sensors: Float32Array.of(0),
      });
      const topic = robotTopics(robotId).state;
      const before = robot.counters().statesRejected;
      await raw.publishAsync(topic, Buffer.from(encodeState(state(2, 0.5))));
      const nan = Buffer.from(encodeState(state(3, 0.5)));
      nan.writeFloatLE(NaN, 28);
      await raw.publishAsync(topic, nan);
      await raw.publishAsync(topic, Buffer.from(encodeState(state(3, 0.123))));
      await waitFor(
        () => seen.some((s) => Math.abs(s.positions[0] - 0.123) < 1e-6),
        'the valid injected state',
      );
      expect(robot.counters().statesRejected - before).toBe(2);
      expect(seen.every((s) => s.positions.length === 3 && s.positions.every(Number.isFinite))).toBe(true);
      expect(device.counters().statesPublished).toBeGreaterThan(0);
    });

    it('latches an e-stop until a reset message', async () => {
      const { robot, device, plant, applied, latest } = await setup();
      robot.send({ action: Float32Array.of(0.5, 0.5, 0.5), validForMs: 500 });
      await waitFor(() => applied.length === 1, 'first command');
      robot.estop('test stop');
      await waitFor(() => device.estopLatched, 'the e-stop to latch');
      await waitFor(() => latest()?.faulted === true, 'a faulted state');
      expect(Array.from(plant.targets)).toEqual([0, 0, 0]);
      for (let i = 0; i < 5; i++) {
        robot.send({ action: Float32Array.of(0.9, 0.9, 0.9), validForMs: 500 });
        await sleep(20);
      }
      await waitFor(() => device.counters().ignoredWhileEstopped === 5, 'ignored commands');
      expect(applied).toHaveLength(1);
      await robot.resetFault();
      expect(device.estopLatched).toBe(false);
      await waitFor(() => latest()?.faulted === false, 'an unfaulted state');
      robot.send({ action: Float32Array.of(0.2, 0.2, 0.2), validForMs: 500 });
      await waitFor(() => applied.length === 2, 'a command after the reset');
    });

    it('holds the plant when the watchdog sees no valid command', async () => {
      const { robot, device, plant, applied } = await setup({ watchdogMs: 80 });
      const holdsBefore = plant.holdCount;
      robot.send({ action: Float32Array.of(0.7, 0.7, 0.7), validForMs: 500 });
      await waitFor(() => applied.length === 1, 'the command');
      expect(Array.from(plant.targets).map((v) => v.toFixed(1))).toEqual(['0.7', '0.7', '0.7']);
      await waitFor(() => device.counters().watchdogTrips === 1, 'the watchdog', 2_000);
      expect(plant.holdCount).toBeGreaterThan(holdsBefore);
      expect(Array.from(plant.targets)).toEqual([0, 0, 0]);
    });

    it("reports 'lost' through the Last Will when the device dies", async () => {
      // A long state timeout, so only the Last Will can make the link 'lost' this quickly.
      const { robot, device, statuses } = await setup({}, { stateTimeoutMs: 20_000 });
      expect(robot.status).toBe('connected');
      device.abort();
      await waitFor(() => robot.status === 'lost', "status 'lost' after the Last Will", 5_000);
      expect(statuses).toContain('lost');
      expect(robot.send({ action: Float32Array.of(0, 0, 0), validForMs: 100 })).toBe(true); // the broker link is up
    });

    it("goes 'lost' when no state arrives within stateTimeoutMs", async () => {
      const { robot } = await setup({ rateHz: 2 }, { stateTimeoutMs: 150 });
      // At 2 Hz a state comes every 500 ms, longer than the 150 ms timeout.
      await waitFor(() => robot.status === 'lost', "status 'lost'", 2_000);
      await waitFor(() => robot.status === 'connected', "'connected' when the next state comes", 2_000);
    });

    it(
      bc.protocol === 5
        ? 'sends commands with an MQTT 5 message expiry'
        : 'sends commands without MQTT 5 properties on 3.1.1',
      async () => {
        const { robot, robotId } = await setup();
        const sniffer = await rawClient();
        const seen: (number | undefined)[] = [];
        sniffer.on('message', (_t, _p, packet) => seen.push(packet.properties?.messageExpiryInterval));
        await sniffer.subscribeAsync(robotTopics(robotId).cmd, { qos: 0 });
        robot.send({ action: Float32Array.of(0, 0, 0), validForMs: 1_500 });
        await waitFor(() => seen.length === 1, 'the sniffed command');
        expect(seen[0]).toBe(bc.protocol === 5 ? 2 : undefined);
      },
    );

    it('fails connect with a clear error when no device publishes capabilities', async () => {
      await expect(
        MqttRobot.connect(`${broker.url}/nobody-${bc.name}`, { connectTimeoutMs: 300 }),
      ).rejects.toThrow(/no retained capabilities.*\n.*fix: start the device first/);
    });
  });
}

describe('MQTT bridge without a broker', () => {
  it('fails connect with a clear error when the broker is unreachable', async () => {
    const broker = await startEmbeddedBroker({ port: 0 });
    const url = `${broker.url}/x`;
    await broker.close();
    await expect(MqttRobot.connect(url, { connectTimeoutMs: 300 })).rejects.toThrow(
      /cannot connect to MQTT broker/,
    );
  });

  it('rejects bad URLs with the fix', async () => {
    await expect(MqttRobot.connect('http://127.0.0.1:1/x')).rejects.toThrow(/expected mqtt: or mqtts:/);
    await expect(MqttRobot.connect('mqtt://127.0.0.1:1/')).rejects.toThrow(/names no robot id/);
    await expect(MqttRobot.connect('mqtt://127.0.0.1:1/a+b')).rejects.toThrow(/not a valid topic level/);
  });
});
