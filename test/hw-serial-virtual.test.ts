/**
 * The TypeScript device side: DeviceCore's safety rules with a fake clock, and a Plant served
 * over a socat pty pair (startVirtualSerialLink) to SerialRobot.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { DeviceCore } from '../src/hw/serial/device-core.js';
import { encodeFrame, type Frame } from '../src/hw/serial/frame.js';
import { FrameDecoder } from '../src/hw/serial/frame-decoder.js';
import {
  decodePayload,
  encodePayload,
  messageTypeCode,
  type Message,
  type NackMessage,
  type StateMessage,
} from '../src/hw/serial/messages.js';
import { ErrorCode, FLAG_ACK_REQ, MessageType, Status } from '../src/hw/serial/protocol.js';
import { serveSerialDevice } from '../src/hw/serial/serial-device.js';
import { SerialRobot } from '../src/hw/serial/serial-robot.js';
import { startVirtualSerialLink } from '../src/hw/serial/virtual-link.js';
import type { Plant, RobotCapabilities, RobotState } from '../src/types.js';
import { ResrtError } from '../src/util/errors.js';

/** Two joints that move toward the commanded targets with a 20 ms time constant. */
class TestPlant implements Plant {
  readonly capabilities: RobotCapabilities = {
    name: 'test-plant',
    actionDim: 2,
    actionNames: ['x', 'y'],
    jointCount: 2,
    sensorCount: 1,
    rateHz: 200,
    safeAction: [0, 0.1],
    actionLow: [-0.8, -0.8],
    actionHigh: [0.8, 0.8],
    firmwareVersion: 'test-1',
  };
  readonly commands: Float32Array[] = [];
  holds = 0;
  private target = [0, 0.1];
  private pos = [0, 0];
  private vel = [0, 0];
  private readonly t0 = performance.now();
  private last = performance.now();

  private advance(): void {
    const now = performance.now();
    const dt = (now - this.last) / 1000;
    this.last = now;
    if (dt <= 0) return;
    for (let i = 0; i < 2; i++) {
      const next = this.target[i] + (this.pos[i] - this.target[i]) * Math.exp(-dt / 0.02);
      this.vel[i] = (next - this.pos[i]) / dt;
      this.pos[i] = next;
    }
  }
  command(action: Float32Array): void {
    this.advance();
    this.commands.push(action);
    this.target = Array.from(action);
  }
  hold(): void {
    this.advance();
    this.holds++;
    this.target = [...this.capabilities.safeAction];
  }
  sample(): Omit<RobotState, 'receivedAtMs' | 'faulted'> {
    this.advance();
    return {
      deviceTimeUs: Math.round((performance.now() - this.t0) * 1000),
      positions: Float32Array.from(this.pos),
      velocities: Float32Array.from(this.vel),
      efforts: Float32Array.from(this.pos.map((p, i) => this.target[i] - p)),
      sensors: Float32Array.of(this.pos[0] + this.pos[1]),
    };
  }
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
async function waitFor(what: string, pred: () => boolean, timeoutMs = 10_000): Promise<void> {
  const t0 = performance.now();
  while (!pred()) {
    if (performance.now() - t0 > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
}

/** A DeviceCore on a fake clock, with the host side's frames decoded for inspection. */
function fakeDevice(watchdogMs = 50) {
  const plant = new TestPlant();
  let now = 1_000_000;
  const received: Message[] = [];
  const decoder = new FrameDecoder();
  const core = new DeviceCore(
    plant,
    {
      write: (bytes) =>
        decoder.push(bytes, (f: Frame) => {
          const d = decodePayload(f.type, f.payload);
          if (d.ok) received.push(d.message);
        }),
      nowUs: () => now,
    },
    { watchdogMs },
  );
  let seq = 100;
  const send = (m: Message, frameSeq = seq++, flags = 0): void => {
    core.feed(
      encodeFrame({ version: 1, type: messageTypeCode(m), seq: frameSeq, flags, payload: encodePayload(m) }),
    );
    core.tick();
  };
  const lastOf = <T extends Message['type']>(type: T) =>
    [...received].reverse().find((m) => m.type === type) as Extract<Message, { type: T }> | undefined;
  return {
    plant,
    core,
    send,
    lastOf,
    advance: (us: number) => {
      now += us;
      core.tick();
    },
    command: (s: number, ...v: number[]) =>
      send({ type: 'command', validityMs: 0, action: Float32Array.from(v) }, s),
  };
}

describe('DeviceCore (TypeScript device) safety rules', () => {
  it('clamps, rejects non-finite and wrong-sized commands, and orders sequences across the wrap', () => {
    const d = fakeDevice();
    d.command(1, 0.1, 0.1);
    expect(d.lastOf('nack')).toMatchObject({ error: ErrorCode.NotNegotiated });
    d.send({ type: 'hello', versions: [1, 5] });
    expect(d.lastOf('capabilities')).toMatchObject({
      protocolVersion: 1,
      actionDim: 2,
      name: 'test-plant',
      firmwareVersion: 'test-1',
    });
    d.command(65535, 2, -0.5);
    expect(Array.from(d.plant.commands.at(-1) ?? [])).toEqual([Float32Array.of(0.8)[0], -0.5]);
    expect((d.lastOf('state') as StateMessage).status & Status.Clamped).toBeTruthy();
    d.command(0, 0.2, 0.2);
    expect(d.plant.commands.at(-1)?.[0]).toBeCloseTo(0.2, 6);
    d.command(0, 0.3, 0.3);
    expect(d.lastOf('nack')).toMatchObject({ error: ErrorCode.StaleSequence, nackedSeq: 0, detail: 0 });
    d.command(1, NaN, 0);
    expect(d.lastOf('nack')).toMatchObject({ error: ErrorCode.NonFinite, detail: 0 });
    d.command(2, 0.1);
    expect(d.lastOf('nack')).toMatchObject({ error: ErrorCode.WrongDimension, detail: 2 });
    expect(d.plant.commands).toHaveLength(2);
  });

  it('trips the watchdog, latches e-stop, and resets only after a fresh heartbeat', () => {
    const d = fakeDevice(50);
    d.send({ type: 'hello', versions: [1] });
    d.advance(1_000_000); // not armed before the first command
    expect(d.core.status & Status.Watchdog).toBe(0);
    d.command(1, 0.5, 0.5);
    d.advance(50_000);
    expect(d.core.status & Status.Watchdog).toBe(0);
    const holds = d.plant.holds;
    d.advance(2_000);
    expect(d.core.status & Status.Watchdog).toBeTruthy();
    expect(d.plant.holds).toBe(holds + 1);
    expect(Array.from((d.lastOf('state') as StateMessage).outputs)).toEqual([0, Float32Array.of(0.1)[0]]);
    d.command(2, 0.5, 0.5);
    expect(d.lastOf('nack')).toMatchObject({ error: ErrorCode.Faulted });
    d.send({ type: 'reset' }, undefined, FLAG_ACK_REQ);
    expect(d.lastOf('nack')).toMatchObject({ error: ErrorCode.StaleHeartbeat });
    d.send({ type: 'heartbeat', timeUs: 1, echoUs: 0 });
    d.send({ type: 'reset' }, 500, FLAG_ACK_REQ);
    expect(d.lastOf('ack')).toMatchObject({ ackedType: MessageType.Reset, ackedSeq: 500 });
    d.command(3, 0.4, 0.4);
    expect(d.plant.commands.at(-1)?.[0]).toBeCloseTo(0.4, 6);
    // E-stop even with a foreign header version; stays latched across a new HELLO.
    d.core.feed(
      encodeFrame({
        version: 9,
        type: MessageType.Estop,
        seq: 7,
        flags: FLAG_ACK_REQ,
        payload: encodePayload({ type: 'estop', reason: 'x' }),
      }),
    );
    expect(d.core.status & Status.Estop).toBeTruthy();
    d.send({ type: 'hello', versions: [1] });
    d.command(0, 0.4, 0.4);
    expect(d.lastOf('nack')).toMatchObject({ error: ErrorCode.Estopped });
    d.send({ type: 'heartbeat', timeUs: 2, echoUs: 0 });
    d.send({ type: 'reset' });
    expect(d.core.status & Status.Estop).toBe(0);
  });

  it('narrows its limits by CONFIG but never widens them', () => {
    const d = fakeDevice();
    d.send({ type: 'hello', versions: [1] });
    d.send(
      { type: 'config', watchdogMs: 100, low: Float32Array.of(-0.9, -0.5), high: Float32Array.of(0.5, 0.5) },
      20,
      FLAG_ACK_REQ,
    );
    expect((d.lastOf('nack') as NackMessage).error).toBe(ErrorCode.BadConfig);
    d.send(
      { type: 'config', watchdogMs: 100, low: Float32Array.of(-0.5, -0.5), high: Float32Array.of(0.5, 0.25) },
      21,
      FLAG_ACK_REQ,
    );
    expect(d.lastOf('ack')).toMatchObject({ ackedType: MessageType.Config, ackedSeq: 21 });
    d.command(1, 0.7, 0.7);
    expect(Array.from(d.plant.commands.at(-1) ?? [])).toEqual([0.5, 0.25]);
  });

  it('refuses plants that cannot be served, naming the problem', () => {
    const plant = new TestPlant();
    Object.assign(plant.capabilities, { jointCount: 16, sensorCount: 16 });
    expect(() => new DeviceCore(plant, { write: () => undefined, nowUs: () => 0 })).toThrow(
      /do not fit in one STATE frame/,
    );
  });
});

describe('startVirtualSerialLink with SerialRobot', () => {
  it('serves a plant over a socat pty pair', async () => {
    const plant = new TestPlant();
    const link = await startVirtualSerialLink(plant, { watchdogMs: 150 });
    cleanups.push(() => link.close());
    const robot = await SerialRobot.open(link.hostPath, {
      heartbeatMs: 20,
      linkTimeoutMs: 200,
      handshakeTimeoutMs: 5000,
      actionNames: ['x', 'y'],
    });
    cleanups.push(() => robot.close());
    expect(robot.capabilities).toMatchObject({
      name: 'test-plant',
      actionDim: 2,
      actionNames: ['x', 'y'],
      jointCount: 2,
      sensorCount: 1,
      rateHz: 200,
      watchdogMs: 150,
    });
    expect(robot.capabilities.safeAction[1]).toBeCloseTo(0.1, 6);
    const t = setInterval(() => robot.send({ action: Float32Array.of(0.5, 1.0), validForMs: 100 }), 5);
    cleanups.push(async () => clearInterval(t));
    await waitFor('plant follows', () => {
      const s = robot.latestState;
      return s !== null && Math.abs(s.positions[0] - 0.5) < 0.01 && Math.abs(s.positions[1] - 0.8) < 0.01;
    });
    expect(robot.latestState?.clamped).toBe(true);
    expect(plant.commands.every((c) => c[1] <= 0.8 + 1e-6)).toBe(true);
    clearInterval(t);
    // Commands stop: the TS device's watchdog holds the safe action too.
    await waitFor('watchdog fault', () => robot.latestState?.watchdogFault === true);
    expect(Array.from(robot.latestState?.outputs ?? [])).toEqual([0, Float32Array.of(0.1)[0]]);
    await robot.resetFault();
    await waitFor('fault cleared', () => robot.latestState?.faulted === false);
    robot.estop('virtual');
    await waitFor('e-stop latched', () => robot.latestState?.estopLatched === true);
    expect(robot.send({ action: Float32Array.of(0, 0), validForMs: 50 })).toBe(true);
    // The device refuses it (NACK) and stays latched; how soon the NACK comes back is the machine's
    // load, not behaviour.
    await waitFor('NACK of the command sent under e-stop', () => robot.counters().nacks > 0);
    expect(robot.latestState?.estopLatched).toBe(true);
  });

  it('reconnects when the device comes back, and reports lost meanwhile', async () => {
    const plant = new TestPlant();
    const link = await startVirtualSerialLink(plant);
    cleanups.push(() => link.close());
    const robot = await SerialRobot.open(link.hostPath, {
      heartbeatMs: 20,
      linkTimeoutMs: 100,
      backoffInitialMs: 20,
      backoffMaxMs: 100,
      handshakeTimeoutMs: 300,
    });
    cleanups.push(() => robot.close());
    const statuses: string[] = [];
    robot.status$.subscribe((s) => statuses.push(s));
    await link.device.close(); // the device goes silent; the pty stays
    await waitFor('lost', () => robot.status === 'lost', 1000);
    expect(robot.send({ action: Float32Array.of(0, 0), validForMs: 50 })).toBe(false);
    const again = await serveSerialDevice(link.devicePath, plant);
    cleanups.push(() => again.close());
    await waitFor('connected again', () => robot.status === 'connected', 5000);
    expect(robot.counters().reconnects).toBeGreaterThanOrEqual(1);
    expect(statuses).toContain('connecting');
    expect(robot.send({ action: Float32Array.of(0.3, 0.3), validForMs: 100 })).toBe(true);
    await waitFor(
      'command applied after reconnect',
      () => Math.abs((robot.latestState?.outputs[0] ?? 0) - 0.3) < 1e-6,
    );
  });

  it('explains a missing socat', async () => {
    await expect(startVirtualSerialLink(new TestPlant(), { socat: '/nonexistent/socat' })).rejects.toThrow(
      ResrtError,
    );
    await expect(startVirtualSerialLink(new TestPlant(), { socat: '/nonexistent/socat' })).rejects.toThrow(
      /apt-get install socat/,
    );
  });
});
