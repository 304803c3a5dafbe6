/**
 * End to end over a real pseudo-terminal: the C firmware bridge (host build, simulated plant)
 * on one side, SerialRobot on the other.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HardwareEnv } from '../src/hw/hardware-env.js';
import { parseRobotConfig, type RobotConfig } from '../src/hw/robot-config.js';
import { encodeFrame } from '../src/hw/serial/frame.js';
import {
  buildHostFirmware,
  spawnHostFirmware,
  type HostFirmware,
  type HostFirmwareArgs,
} from '../src/hw/serial/host-firmware.js';
import { encodePayload } from '../src/hw/serial/messages.js';
import { ErrorCode, MessageType, Status } from '../src/hw/serial/protocol.js';
import {
  SerialRobot,
  type NackEvent,
  type SerialRobotOptions,
  type SerialRobotState,
} from '../src/hw/serial/serial-robot.js';
import { ResrtError } from '../src/util/errors.js';

let bin = '';
let binV1 = '';
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(() => {
  // No skipping: a box without make or cc fails here with the fix in the message.
  bin = buildHostFirmware();
  binV1 = buildHostFirmware('v1');
});

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, pred: () => boolean, timeoutMs = 2000): Promise<number> {
  const t0 = performance.now();
  while (!pred()) {
    if (performance.now() - t0 > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
  return performance.now() - t0;
}

async function start(
  args: HostFirmwareArgs = {},
  opts: SerialRobotOptions = {},
  firmware = bin,
): Promise<{ fw: HostFirmware; robot: SerialRobot; nacks: NackEvent[] }> {
  const fw = await spawnHostFirmware(firmware, { joints: 3, rateHz: 200, watchdogMs: 200, ...args });
  cleanups.push(() => fw.stop());
  const robot = await SerialRobot.open(fw.path, {
    heartbeatMs: 20,
    linkTimeoutMs: 150,
    reconnect: false,
    // A busy 2-core CI box can take a while to schedule the fresh firmware process.
    handshakeTimeoutMs: 5000,
    ...opts,
  });
  cleanups.push(() => robot.close());
  const nacks: NackEvent[] = [];
  robot.nack$.subscribe((n) => nacks.push(n));
  return { fw, robot, nacks };
}

const cmd = (...v: number[]) => ({ action: Float32Array.from(v), validForMs: 100 });

/** Streams a command every 5 ms until stopped (the device watchdog needs a steady stream). */
function stream(robot: SerialRobot, action: number[]): () => void {
  const t = setInterval(() => robot.send(cmd(...action)), 5);
  return () => clearInterval(t);
}

describe('SerialRobot over a pty to the C firmware bridge', () => {
  it('negotiates, reads capabilities, and the plant follows commands', async () => {
    const { robot, nacks } = await start();
    expect(robot.status).toBe('connected');
    expect(robot.protocolVersion).toBe(2);
    const c = robot.capabilities;
    expect(c).toMatchObject({
      name: 'resrt-bridge-host',
      actionDim: 3,
      jointCount: 3,
      sensorCount: 2,
      rateHz: 200,
      firmwareVersion: '0.1.0',
      protocolVersion: 2,
      watchdogMs: 200,
      watchdog: { timeoutMs: 200, onTimeout: 'latch' },
    });
    expect(c.safeAction).toEqual([0, 0, 0]);
    expect(c.actionHigh[0]).toBeCloseTo(0.9, 6);
    const stop = stream(robot, [0.5, -0.3, 1.0]);
    cleanups.push(async () => stop());
    await waitFor('positions near the target', () => {
      const s = robot.latestState;
      return s !== null && Math.abs(s.positions[0] - 0.5) < 0.01 && Math.abs(s.positions[1] + 0.3) < 0.01;
    });
    const s = robot.latestState as SerialRobotState;
    // The third dimension was clamped by the firmware to its own limit.
    expect(s.outputs[2]).toBeCloseTo(0.9, 6);
    expect(s.clamped).toBe(true);
    expect(s.positions[2]).toBeLessThan(0.9 + 1e-6);
    expect(s.faulted).toBe(false);
    expect(s.deviceTimeUs).toBeGreaterThan(0);
    expect(s.sensors[0]).toBeCloseTo((s.positions[0] + s.positions[1] + s.positions[2]) / 3, 4);
    // A steady stream both ways: waited for, not assumed, since a loaded machine fires fewer
    // 5 ms timers before the plant arrives (10 commands had not gone out at a load of 5).
    await waitFor(
      'a steady stream of commands and states',
      () => {
        const n = robot.counters();
        return n.commandsSent > 10 && n.statesIn > 10;
      },
      10_000,
    );
    stop();
    // One STATE per applied command: the device confirms the last one sent, whatever the load.
    await waitFor(
      'the last command confirmed',
      () => robot.latestState?.lastCommandSeq === robot.lastCommandSeq,
    );
    const k = robot.counters();
    expect(k.crcErrors).toBe(0);
    expect(nacks).toEqual([]);
    expect(k.commandsSent).toBeGreaterThan(0);
    expect(k.statesIn).toBeGreaterThanOrEqual(k.commandsSent);
    expect(k.lastHeartbeatRttMs).toBeGreaterThan(0);
  });

  it('refuses bad commands on the host, and the firmware NACKs them when forced through', async () => {
    // A long watchdog and validity: the applied command must still be driven at the end, however loaded the machine.
    const { robot, nacks } = await start({ watchdogMs: 10_000 });
    const out0 = robot.counters().framesOut;
    expect(robot.send(cmd(0.1, 0.2))).toBe(false);
    expect(robot.send(cmd(0.1, NaN, 0))).toBe(false);
    expect(robot.send(cmd(0.1, Infinity, 0))).toBe(false);
    expect(robot.send({ action: Float32Array.from([0, 0, 0]), validForMs: NaN })).toBe(false);
    expect(robot.counters().commandsRefused).toBe(4);
    // Heartbeats may have gone out meanwhile, but no COMMAND: the device applied nothing.
    expect(robot.lastCommandSeq).toBe(-1);
    expect(robot.counters().framesOut - out0).toBeLessThan(5);

    const raw = (action: number[], seq: number): boolean =>
      robot.writeRaw(
        encodeFrame({
          version: robot.protocolVersion,
          type: MessageType.Command,
          seq,
          flags: 0,
          payload: encodePayload(
            { type: 'command', validityMs: 60_000, action: Float32Array.from(action) },
            robot.protocolVersion,
          ),
        }),
      );
    expect(raw([0.5, 0.5], 40000)).toBe(true);
    await waitFor('wrong-dimension NACK', () => nacks.some((n) => n.error === ErrorCode.WrongDimension));
    expect(nacks.find((n) => n.error === ErrorCode.WrongDimension)).toMatchObject({
      rejectedType: MessageType.Command,
      rejectedSeq: 40000,
      detail: 3,
    });
    expect(raw([0.5, NaN, 0.5], 40001)).toBe(true);
    await waitFor('non-finite NACK', () => nacks.some((n) => n.error === ErrorCode.NonFinite));
    expect(nacks.find((n) => n.error === ErrorCode.NonFinite)?.detail).toBe(1);
    // A valid raw command, then a duplicate and an older one (sequence numbers wrap at 16 bits).
    expect(raw([0.25, 0.25, 0.25], 65535)).toBe(true);
    expect(raw([0.7, 0.7, 0.7], 65535)).toBe(true);
    expect(raw([0.7, 0.7, 0.7], 65534)).toBe(true);
    await waitFor(
      'two stale-sequence NACKs',
      () => nacks.filter((n) => n.error === ErrorCode.StaleSequence).length === 2,
    );
    expect(raw([0.3, 0.3, 0.3], 0)).toBe(true); // newer than 65535 across the wrap
    await waitFor('the wrapped command applied', () => robot.latestState?.lastCommandSeq === 0);
    expect(robot.latestState?.outputs[0]).toBeCloseTo(0.3, 6);
    // A corrupted frame is NACKed as such and never applied.
    const bad = encodeFrame({
      version: robot.protocolVersion,
      type: MessageType.Command,
      seq: 1,
      flags: 0,
      payload: encodePayload(
        { type: 'command', validityMs: 100, action: Float32Array.from([0.8, 0.8, 0.8]) },
        robot.protocolVersion,
      ),
    });
    bad[6] ^= 0x01;
    expect(robot.writeRaw(bad)).toBe(true);
    await waitFor('bad-CRC NACK', () => nacks.some((n) => n.error === ErrorCode.BadCrc));
    await sleep(20);
    expect(robot.latestState?.lastCommandSeq).toBe(0);
    expect(robot.latestState?.outputs[0]).toBeCloseTo(0.3, 6);
  });

  it('latches an e-stop until RESET with a fresh heartbeat', async () => {
    const { robot, nacks } = await start();
    const stop = stream(robot, [0.4, 0.4, 0.4]);
    cleanups.push(async () => stop());
    await waitFor('commands applied', () => (robot.latestState?.outputs[0] ?? 0) > 0.39);
    robot.estop('test button');
    await waitFor('e-stop latched in STATE', () => robot.latestState?.estopLatched === true);
    const s = robot.latestState as SerialRobotState;
    expect(s.faulted).toBe(true);
    expect(Array.from(s.outputs)).toEqual([0, 0, 0]);
    await waitFor('commands NACKed as estopped', () => nacks.some((n) => n.error === ErrorCode.Estopped));
    await sleep(50);
    expect(robot.latestState?.estopLatched).toBe(true);
    expect(Array.from(robot.latestState?.outputs ?? [])).toEqual([0, 0, 0]);
    await robot.resetFault();
    await waitFor(
      'e-stop cleared and commands applied again',
      () => robot.latestState?.estopLatched === false && (robot.latestState?.outputs[0] ?? 0) > 0.39,
    );
    stop();
  });

  it('holds the safe action and latches the watchdog fault when commands stop', async () => {
    const { robot, nacks } = await start({ watchdogMs: 100 });
    const stop = stream(robot, [0.6, 0.6, 0.6]);
    await waitFor('commands applied', () => (robot.latestState?.outputs[0] ?? 0) > 0.59);
    stop();
    const stoppedAt = performance.now();
    await waitFor('watchdog fault', () => robot.latestState?.watchdogFault === true, 1000);
    const elapsed = performance.now() - stoppedAt;
    expect(elapsed).toBeGreaterThanOrEqual(90); // not before its timeout...
    expect(elapsed).toBeLessThan(100 + 400); // ...and soon after it (margin for a loaded CI box)
    const s = robot.latestState as SerialRobotState;
    expect(Array.from(s.outputs)).toEqual([0, 0, 0]);
    expect(s.holdingSafe).toBe(true);
    expect(s.status & Status.Watchdog).toBeTruthy();
    // The link itself stayed up: heartbeats flow both ways.
    expect(robot.status).toBe('connected');
    // Latched: new commands are refused by the device until RESET.
    expect(robot.send(cmd(0.2, 0.2, 0.2))).toBe(true);
    await waitFor('faulted NACK', () => nacks.some((n) => n.error === ErrorCode.Faulted));
    await robot.resetFault();
    expect(robot.send(cmd(0.2, 0.2, 0.2))).toBe(true);
    await waitFor(
      'command applied after reset',
      () => Math.abs((robot.latestState?.outputs[0] ?? 0) - 0.2) < 1e-6 && !robot.latestState?.watchdogFault,
    );
  });

  it('after a RESET with nothing latched, holds the safe action until the next command, which arms the watchdog (issue 18)', async () => {
    const safe = [0.1, -0.2, 0.05];
    const { robot } = await start({ watchdogMs: 50, safe });
    // Valid for a minute: only the watchdog and RESET can take the outputs back.
    expect(robot.send({ action: Float32Array.of(0.4, -0.4, 0.4), validForMs: 60_000 })).toBe(true);
    await waitFor('the command applied', () => robot.latestState?.outputs[0] === Math.fround(0.4));
    await robot.resetFault();
    await sleep(10 * 50);
    const s = robot.latestState as SerialRobotState;
    expect(Array.from(s.outputs)).toEqual(safe.map(Math.fround));
    expect(s.holdingSafe).toBe(true);
    expect(s.watchdogFault).toBe(false);
    expect(robot.send(cmd(0.2, 0.2, 0.2))).toBe(true);
    await waitFor(
      'the watchdog armed again and fired',
      () => robot.latestState?.watchdogFault === true,
      1000,
    );
  });

  it('counts CRC errors from a noisy device and never delivers a corrupted state', async () => {
    const { robot } = await start({ corruptEvery: 7, rateHz: 500 });
    const states: SerialRobotState[] = [];
    robot.state$.subscribe((s) => states.push(s));
    const stop = stream(robot, [0.3, -0.3, 0.1]);
    await sleep(600);
    stop();
    const k = robot.counters();
    expect(k.crcErrors).toBeGreaterThan(20);
    // Every CRC error is a frame the host did not take (the sequence shows the gap). A loaded
    // host can miss more: the device drops whole frames while nobody reads the tty.
    expect(k.crcErrors).toBeLessThanOrEqual(k.framesMissed + 1);
    expect(k.cobsErrors + k.lengthErrors + k.dropped).toBe(0);
    // The fake plant's second sensor is its clock: a corrupted state would break the identity.
    for (const s of states) {
      expect(Math.abs(s.sensors[1] - s.deviceTimeUs * 1e-6)).toBeLessThan(1e-3);
      for (const v of s.positions) expect(Math.abs(v)).toBeLessThanOrEqual(0.9 + 1e-6);
    }
    expect(states.length).toBeGreaterThan(100);
  });

  it('reports the link lost within 100 ms when the firmware is killed, and refuses commands', async () => {
    const { fw, robot } = await start();
    const stop = stream(robot, [0.1, 0.1, 0.1]);
    cleanups.push(async () => stop());
    await waitFor('states flowing', () => robot.counters().statesIn > 5);
    let lostAt = 0;
    robot.status$.subscribe((s) => {
      if (s === 'lost' && lostAt === 0) lostAt = performance.now();
    });
    const killedAt = performance.now();
    fw.child.kill('SIGKILL');
    await waitFor('status lost', () => lostAt > 0, 1000);
    expect(lostAt - killedAt).toBeLessThan(100);
    expect(robot.send(cmd(0.1, 0.1, 0.1))).toBe(false);
    await expect(robot.resetFault()).rejects.toThrow(ResrtError);
    expect(robot.counters().linkLosses).toBe(1);
  });

  it('keeps the link when the host thread, not the device, went quiet for longer than the link timeout', async () => {
    const { robot } = await start();
    const stop = stream(robot, [0.1, 0.1, 0.1]);
    cleanups.push(async () => stop());
    await waitFor('states flowing', () => robot.counters().statesIn > 5);
    const statuses: string[] = [];
    robot.status$.subscribe((s) => statuses.push(s));
    // The firmware keeps sending its states; this thread cannot read them for 3x linkTimeoutMs
    // (a long synchronous step on the host, or a loaded machine that did not schedule it).
    const blockedUntil = performance.now() + 450;
    while (performance.now() < blockedUntil) {
      // blocked
    }
    const statesBefore = robot.counters().statesIn;
    await waitFor('states after the stall', () => robot.counters().statesIn > statesBefore + 5);
    expect(statuses).not.toContain('lost');
    expect(robot.counters().linkLosses).toBe(0);
  });

  it('carries 64 joints, 64 sensors and 64 actions in version 2 frames, host to firmware and back', async () => {
    const safe = Array.from({ length: 64 }, (_, i) => ((i % 5) - 2) / 10);
    const { robot } = await start({ joints: 64, sensors: 64, rateHz: 100, safe });
    expect(robot.protocolVersion).toBe(2);
    expect(robot.capabilities).toMatchObject({ actionDim: 64, jointCount: 64, sensorCount: 64 });
    expect(robot.capabilities.safeAction).toEqual(safe.map(Math.fround));
    // A COMMAND of 64 values is a 264-byte frame: over version 1's 256, two COBS blocks of 254.
    const target = Array.from({ length: 64 }, (_, i) => (i - 32) / 40);
    const stop = stream(robot, target);
    cleanups.push(async () => stop());
    await waitFor('all 64 joints near their targets', () => {
      const s = robot.latestState;
      return s !== null && target.every((t, i) => Math.abs(s.positions[i] - t) < 0.01);
    });
    stop();
    const s = robot.latestState as SerialRobotState;
    expect(Array.from(s.outputs)).toEqual(target.map(Math.fround));
    // The host plant's sensors: mean position, its clock, then each sensor's own index.
    expect(s.sensors[0]).toBeCloseTo(target.reduce((a, b) => a + b) / 64, 3);
    expect(s.sensors[1]).toBeCloseTo(s.deviceTimeUs * 1e-6, 3);
    for (let i = 2; i < 64; i++) expect(s.sensors[i]).toBe(i);
    const k = robot.counters();
    expect(k.crcErrors + k.cobsErrors + k.lengthErrors + k.oversize + k.dropped + k.nacks).toBe(0);
    // A host that speaks version 1 only cannot drive it, and is told which version it needs.
    const fw1 = await spawnHostFirmware(bin, { joints: 64, sensors: 64 });
    cleanups.push(() => fw1.stop());
    await expect(SerialRobot.open(fw1.path, { protocolVersions: [1], reconnect: false })).rejects.toThrow(
      /rejected HELLO \(BadVersion\): it speaks protocol version 2/,
    );
  });

  it('fails open() with a clear error when the device shares no protocol version', async () => {
    const fw = await spawnHostFirmware(bin, { joints: 2 });
    cleanups.push(() => fw.stop());
    await expect(SerialRobot.open(fw.path, { protocolVersions: [7, 9] })).rejects.toThrow(
      /rejected HELLO \(BadVersion\).*version 2/,
    );
    // The port was released: a compatible host can still connect.
    const robot = await SerialRobot.open(fw.path, { reconnect: false });
    cleanups.push(() => robot.close());
    expect(robot.capabilities.actionDim).toBe(2);
  });

  it('applies a narrower CONFIG and rejects one wider than the device limits', async () => {
    const { robot } = await start(
      {},
      { config: { watchdogMs: 300, actionLow: [-0.5, -0.5, -0.5], actionHigh: [0.5, 0.5, 0.2] } },
    );
    const stop = stream(robot, [0.8, 0.8, 0.8]);
    cleanups.push(async () => stop());
    await waitFor(
      'clamped to the configured limits',
      () => Math.abs((robot.latestState?.outputs[2] ?? 0) - 0.2) < 1e-6,
    );
    expect(robot.latestState?.outputs[0]).toBeCloseTo(0.5, 6);
    stop();
    const fw = await spawnHostFirmware(bin, { joints: 3 });
    cleanups.push(() => fw.stop());
    await expect(
      SerialRobot.open(fw.path, { reconnect: false, config: { actionHigh: [1, 1, 1] } }),
    ).rejects.toThrow(/BadConfig/);
  });
});

/** A robot config for the host firmware's plant (3 joints, 2 sensors) with a manual reset. */
function hostConfig(robotUrl: string, watchdogMs: number): RobotConfig {
  return parseRobotConfig({
    name: 'bridge',
    transport: robotUrl,
    rateHz: 50,
    commandValidMs: 100,
    action: { dim: 3, names: ['a', 'b', 'c'], low: [-1, -1, -1], high: [1, 1, 1], safe: [0, 0, 0] },
    observation: [{ field: 'positions' }],
    episode: { maxSteps: 50, reset: 'manual', success: 'manual' },
    watchdog: { onTimeout: 'latch', timeoutMs: watchdogMs },
  });
}

describe('HardwareEnv over the C firmware: resets on a real robot', () => {
  const WATCHDOG_MS = 100;

  async function episode(env: HardwareEnv): Promise<void> {
    const resetting = env.reset();
    await waitFor('the reset prompt', () => env.awaitingResetConfirmation);
    env.confirmReset();
    await resetting;
    await env.step([0.3, 0.3, 0.3]);
    env.labelSuccess(true);
    expect((await env.step([0.3, 0.3, 0.3])).terminated).toBe(true);
  }

  it('keeps a latching firmware in its safe hold (HOLD) while a person resets the scene for 5x its watchdog', async () => {
    const { fw, robot } = await start({ watchdogMs: WATCHDOG_MS });
    expect(robot.hold).toBeDefined();
    const env = new HardwareEnv(robot, hostConfig(`serial:${fw.path}`, WATCHDOG_MS), {
      closeRobot: false,
    });
    cleanups.push(() => env.close());
    await episode(env);
    await sleep(5 * WATCHDOG_MS);
    const resetting = env.reset();
    await waitFor('the reset prompt', () => env.awaitingResetConfirmation);
    await sleep(5 * WATCHDOG_MS);
    const s = robot.latestState as SerialRobotState;
    expect(s.watchdogFault).toBe(false);
    expect(s.holdingSafe).toBe(true);
    env.confirmReset();
    await resetting;
    expect((await env.step([0.1, 0.1, 0.1])).truncated).toBe(false);
  });

  it('talks version 1 to a version 1-only firmware; without HOLD its latch fires, and reset() clears it only when the person confirms', async () => {
    const { fw, robot } = await start({ watchdogMs: WATCHDOG_MS }, {}, binV1);
    expect(robot.protocolVersion).toBe(1);
    expect(robot.hold).toBeUndefined();
    expect(robot.capabilities.watchdog).toEqual({ timeoutMs: WATCHDOG_MS, onTimeout: 'latch' });
    const faults: string[] = [];
    const env = new HardwareEnv(robot, hostConfig(`serial:${fw.path}`, WATCHDOG_MS), {
      closeRobot: false,
      onFaultPrompt: (m) => faults.push(m),
    });
    cleanups.push(() => env.close());
    await episode(env);
    await waitFor('the watchdog latched', () => robot.latestState?.watchdogFault === true, 2000);
    const resetting = env.reset();
    await waitFor('the fault prompt', () => env.awaitingFaultConfirmation);
    expect(faults[0]).toMatch(/watchdog of bridge latched: it received no command for 100 ms/);
    await sleep(3 * WATCHDOG_MS);
    expect(robot.latestState?.watchdogFault).toBe(true);
    env.confirmFaultClear();
    await waitFor('the reset prompt', () => env.awaitingResetConfirmation);
    expect(robot.latestState?.watchdogFault).toBe(false);
    env.confirmReset();
    await resetting;
  });
});
