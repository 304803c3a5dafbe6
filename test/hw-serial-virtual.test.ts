/**
 * The TypeScript device side: a Plant served over a socat pty pair (startVirtualSerialLink) to
 * SerialRobot. DeviceCore's protocol rules are in test/hw-serial-conformance.test.ts.
 */
import { SerialPort } from 'serialport';
import { afterEach, describe, expect, it } from 'vitest';
import { DeviceCore } from '../src/hw/serial/device-core.js';
import { encodeFrame } from '../src/hw/serial/frame.js';
import { FrameDecoder } from '../src/hw/serial/frame-decoder.js';
import { encodePayload } from '../src/hw/serial/messages.js';
import { MessageType, typeName } from '../src/hw/serial/protocol.js';
import { serveSerialDevice } from '../src/hw/serial/serial-device.js';
import { SerialRobot } from '../src/hw/serial/serial-robot.js';
import { startVirtualSerialLink, type VirtualSerialLink } from '../src/hw/serial/virtual-link.js';
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

describe('DeviceCore (TypeScript device)', () => {
  // Its protocol rules are checked against the C firmware's in test/hw-serial-conformance.test.ts.
  it('refuses plants that cannot be served, naming the problem', () => {
    const io = { write: () => undefined, nowUs: () => 0 };
    const wide = new TestPlant();
    Object.assign(wide.capabilities, { jointCount: 65 });
    expect(() => new DeviceCore(wide, io)).toThrow(/version 2 carries at most 64/);
    // 20 sensors fit version 2 only: a version 1-only device cannot serve them.
    const push = new TestPlant();
    Object.assign(push.capabilities, { sensorCount: 20 });
    expect(() => new DeviceCore(push, io)).not.toThrow();
    expect(() => new DeviceCore(push, io, { maxVersion: 1 })).toThrow(/version 1 carries at most 16/);
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

  /**
   * A device played by the test on the device end of a pty pair: it records every frame the host
   * writes and answers the first HELLO with CAPABILITIES after `answerAfterMs` (never, when null).
   */
  async function slowDevice(
    answerAfterMs: number | null,
  ): Promise<{ hostPath: string; seen: string[]; link: VirtualSerialLink }> {
    const link = await startVirtualSerialLink(new TestPlant());
    cleanups.push(() => link.close());
    await link.device.close(); // its own device goes away; the test plays the device
    const port = new SerialPort({ path: link.devicePath, baudRate: 1_000_000 });
    cleanups.push(() => new Promise((r) => (port.isOpen ? port.close(() => r(undefined)) : r(undefined))));
    const decoder = new FrameDecoder();
    const seen: string[] = [];
    let answered = false;
    port.on('data', (chunk: Buffer) =>
      decoder.push(chunk, (f) => {
        if (answered) return;
        seen.push(typeName(f.type));
        if (
          answerAfterMs === null ||
          f.type !== MessageType.Hello ||
          seen.filter((t) => t === 'Hello').length > 1
        )
          return;
        setTimeout(() => {
          answered = true;
          const payload = encodePayload(
            {
              type: 'capabilities',
              protocolVersion: 2,
              actionDim: 2,
              jointCount: 2,
              sensorCount: 1,
              rateHz: 200,
              watchdogMs: 150,
              watchdogMode: 'latch',
              name: 'slow',
              firmwareVersion: '1',
              low: Float32Array.of(-1, -1),
              high: Float32Array.of(1, 1),
              safe: Float32Array.of(0, 0),
            },
            2,
          );
          port.write(
            Buffer.from(
              encodeFrame({ version: 2, type: MessageType.Capabilities, seq: 0, flags: 0, payload }),
            ),
          );
        }, answerAfterMs);
      }),
    );
    port.on('error', () => undefined);
    return { hostPath: link.hostPath, seen, link };
  }

  it('sends nothing but HELLO until the answer arrives (a frame in the old version could cross the switch)', async () => {
    const device = await slowDevice(80);
    const robot = await SerialRobot.open(device.hostPath, {
      heartbeatMs: 5,
      linkTimeoutMs: 2000,
      handshakeTimeoutMs: 5000,
      reconnect: false,
    });
    cleanups.push(() => robot.close());
    expect(robot.protocolVersion).toBe(2);
    // Heartbeats before the HELLO are fine (read in order); none may follow it before the answer.
    const firstHello = device.seen.indexOf('Hello');
    expect(firstHello).toBeGreaterThanOrEqual(0);
    expect([...new Set(device.seen.slice(firstHello))]).toEqual(['Hello']);
  });

  it('waits for a device that is silent after the port opens (a board in its bootloader) up to the handshake timeout, not the link timeout', async () => {
    const device = await slowDevice(400);
    const robot = await SerialRobot.open(device.hostPath, {
      heartbeatMs: 20,
      linkTimeoutMs: 100,
      handshakeTimeoutMs: 5000,
      reconnect: false,
    });
    cleanups.push(() => robot.close());
    expect(robot.capabilities.name).toBe('slow');
    // HELLO was repeated meanwhile.
    expect(device.seen.filter((t) => t === 'Hello').length).toBeGreaterThan(1);
  });

  it('fails the handshake at once, with the reason, when the link is lost and will not reopen', async () => {
    const device = await slowDevice(null);
    const opening = SerialRobot.open(device.hostPath, {
      heartbeatMs: 20,
      linkTimeoutMs: 100,
      handshakeTimeoutMs: 20_000,
      reconnect: false,
    });
    const t0 = performance.now();
    setTimeout(() => void device.link.close(), 150); // the pty pair goes away: the next HELLO cannot be written
    await expect(opening).rejects.toThrow(/lost during the handshake: (write failed|port)/);
    expect(performance.now() - t0).toBeLessThan(10_000);
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
