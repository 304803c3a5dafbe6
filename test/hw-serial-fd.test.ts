/**
 * The serial link over a plain non-blocking file descriptor (FdTransport, openSerialFd): its
 * write queue against a real pipe whose reader is slow, then SerialRobot over it to the C firmware
 * bridge on a real pseudo-terminal, on this thread and inside the control loop's worker thread.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { robotLinkSpec } from '../src/cli/loop-sources.js';
import { parseRobotConfig } from '../src/hw/robot-config.js';
import { FdTransport } from '../src/hw/serial/fd-transport.js';
import { buildHostFirmware, spawnHostFirmware, type HostFirmware } from '../src/hw/serial/host-firmware.js';
import { ErrorCode } from '../src/hw/serial/protocol.js';
import { SerialRobot, type NackEvent, type SerialRobotState } from '../src/hw/serial/serial-robot.js';
import type { TransportEnd } from '../src/hw/serial/transport.js';
import type { PlainData } from '../src/runtime/loop-plan.js';
import { WorkerControlLoop } from '../src/runtime/loop-host.js';
import type { LoopEvent } from '../src/runtime/loop.js';
import { exportMlpToOnnx, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { ResrtError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';
import { tempDir } from './temp-dirs.js';

let bin = '';
const cleanups: (() => Promise<unknown> | unknown)[] = [];

beforeAll(() => {
  bin = buildHostFirmware();
});

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, pred: () => boolean, timeoutMs = 5000): Promise<void> {
  const t0 = performance.now();
  while (!pred()) {
    if (performance.now() - t0 > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
}

/** A FIFO in a temp folder: a kernel pipe (64 KiB buffer) with a path, opened as two fds. */
function fifo(): { writeEnd: number; readEnd: number } {
  const path = join(tempDir('resrt-serialfd-'), 'pipe');
  execFileSync('mkfifo', [path]);
  // The read end first: a non-blocking write-only open needs a reader.
  const readEnd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const writeEnd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  return { writeEnd, readEnd };
}

/**
 * A transport that writes into one pipe and reads from another (whose writer stays open and
 * silent), as a tty's two directions; the test holds the first pipe's read end.
 */
function pipedTransport(maxQueuedBytes: number): { transport: FdTransport; readEnd: number } {
  const out = fifo();
  const back = fifo();
  const transport = new FdTransport(back.readEnd, { writeFd: out.writeEnd, maxQueuedBytes });
  cleanups.push(() => {
    closeSync(out.readEnd);
    closeSync(back.writeEnd);
  });
  cleanups.push(() => transport.close());
  return { transport, readEnd: out.readEnd };
}

function readAvailable(fd: number, into: number[], max = 4096): number {
  const buf = Buffer.alloc(max);
  try {
    const n = readSync(fd, buf, 0, max, null);
    for (let i = 0; i < n; i++) into.push(buf[i]);
    return n;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return 0;
    throw err;
  }
}

describe('FdTransport over a real pipe', () => {
  it('queues what a full pipe does not take, then writes it in order as the slow reader drains it', async () => {
    const { transport, readEnd } = pipedTransport(1 << 20);
    const ends: TransportEnd[] = [];
    transport.onEnd((e) => ends.push(e));
    // 200 KiB in 1 KiB writes, a pattern that shows any lost, doubled or reordered byte.
    const total = 200 * 1024;
    const expected = Uint8Array.from({ length: total }, (_, i) => (i * 7 + (i >> 10)) & 0xff);
    for (let at = 0; at < total; at += 1024)
      expect(transport.write(expected.subarray(at, at + 1024))).toBe(true);
    // The pipe holds 64 KiB: the rest waits in the queue, and no write blocked or failed.
    expect(transport.writesQueued).toBeGreaterThan(0);
    expect(transport.pendingBytes).toBeGreaterThan(0);
    expect(transport.pendingBytes).toBeLessThan(total);
    const got: number[] = [];
    // A slow reader: 4 KiB per turn; the transport's own idle poll moves the queue forward.
    await waitFor(
      'every byte through the pipe',
      () => {
        readAvailable(readEnd, got);
        return got.length >= total;
      },
      30_000,
    );
    expect(transport.pendingBytes).toBe(0);
    expect(got.length).toBe(total);
    expect(Buffer.from(got).equals(Buffer.from(expected))).toBe(true);
    expect(ends).toEqual([]);
  });

  it('ends with the reason, not silently, when the reader stops and the queue passes its limit', () => {
    const { transport } = pipedTransport(8192);
    const ends: TransportEnd[] = [];
    transport.onEnd((e) => ends.push(e));
    const chunk = new Uint8Array(4096);
    let accepted = 0;
    while (transport.write(chunk) && accepted < 1000) accepted++;
    // What the pipe holds (64 KiB, or one page for a user over pipe-user-pages-soft), then the
    // queue's two chunks: the third over the limit ends it.
    expect(accepted).toBeGreaterThanOrEqual(3);
    expect(accepted).toBeLessThan(1000);
    expect(ends).toHaveLength(1);
    expect(ends[0].cause).toBe('write');
    expect(ends[0].reason).toMatch(/stopped reading.*limit 8192/);
    expect(transport.write(chunk)).toBe(false);
  });

  it('hands over what arrives and reports a dead peer when the other end closes', async () => {
    const { writeEnd, readEnd } = fifo();
    const transport = new FdTransport(readEnd);
    cleanups.push(() => transport.close());
    const got: number[] = [];
    const ends: TransportEnd[] = [];
    transport.onData((chunk) => got.push(...chunk));
    transport.onEnd((e) => ends.push(e));
    writeFileSync(writeEnd, Buffer.from([1, 2, 3]));
    transport.poll(); // on the caller's time, not the timer's
    expect(got).toEqual([1, 2, 3]);
    closeSync(writeEnd);
    await waitFor('the end of file seen', () => ends.length > 0);
    expect(ends).toEqual([{ cause: 'read', reason: 'the peer is gone (read: end of file)' }]);
  });
});

async function firmware(args: Parameters<typeof spawnHostFirmware>[1] = {}): Promise<HostFirmware> {
  const fw = await spawnHostFirmware(bin, { joints: 3, rateHz: 200, watchdogMs: 200, log: true, ...args });
  cleanups.push(() => fw.stop());
  return fw;
}

async function openRobot(fw: HostFirmware): Promise<{ robot: SerialRobot; nacks: NackEvent[] }> {
  const robot = await SerialRobot.open(fw.path, {
    transport: 'fd',
    heartbeatMs: 20,
    linkTimeoutMs: 150,
    reconnect: false,
    // A busy 2-core box can take a while to schedule the fresh firmware process.
    handshakeTimeoutMs: 5000,
  });
  cleanups.push(() => robot.close());
  const nacks: NackEvent[] = [];
  robot.nack$.subscribe((n) => nacks.push(n));
  return { robot, nacks };
}

const cmd = (...v: number[]) => ({ action: Float32Array.from(v), validForMs: 100 });

function stream(robot: SerialRobot, action: number[]): () => void {
  const t = setInterval(() => robot.send(cmd(...action)), 5);
  cleanups.push(() => clearInterval(t));
  return () => clearInterval(t);
}

describe('SerialRobot over an fd to the C firmware bridge on a pty', () => {
  it('negotiates, and the plant follows commands', async () => {
    const fw = await firmware();
    const { robot, nacks } = await openRobot(fw);
    expect(robot.transport).toBe('fd');
    expect(robot.status).toBe('connected');
    expect(robot.protocolVersion).toBe(2);
    expect(robot.capabilities).toMatchObject({ name: 'resrt-bridge-host', actionDim: 3, watchdogMs: 200 });
    const stop = stream(robot, [0.5, -0.3, 1.0]);
    await waitFor('positions near the target', () => {
      const s = robot.latestState;
      return s !== null && Math.abs(s.positions[0] - 0.5) < 0.01 && Math.abs(s.positions[1] + 0.3) < 0.01;
    });
    const s = robot.latestState as SerialRobotState;
    expect(s.outputs[2]).toBeCloseTo(0.9, 6); // clamped by the firmware
    stop();
    await waitFor(
      'the last command confirmed',
      () => robot.latestState?.lastCommandSeq === robot.lastCommandSeq,
    );
    const k = robot.counters();
    expect(k.crcErrors + k.cobsErrors + k.writeErrors).toBe(0);
    expect(k.statesIn).toBeGreaterThanOrEqual(k.commandsSent);
    expect(k.lastHeartbeatRttMs).toBeGreaterThan(0);
    expect(nacks).toEqual([]);
  });

  it('latches an e-stop until RESET', async () => {
    const fw = await firmware();
    const { robot, nacks } = await openRobot(fw);
    const stop = stream(robot, [0.4, 0.4, 0.4]);
    await waitFor('commands applied', () => (robot.latestState?.outputs[0] ?? 0) > 0.39);
    robot.estop('test button');
    await waitFor('e-stop latched in STATE', () => robot.latestState?.estopLatched === true);
    expect(robot.latestState?.faulted).toBe(true);
    expect(Array.from(robot.latestState?.outputs ?? [])).toEqual([0, 0, 0]);
    await waitFor('commands NACKed as estopped', () => nacks.some((n) => n.error === ErrorCode.Estopped));
    await robot.resetFault();
    await waitFor(
      'e-stop cleared and commands applied again',
      () => robot.latestState?.estopLatched === false && (robot.latestState?.outputs[0] ?? 0) > 0.39,
    );
    stop();
  });

  it('reports the link lost when the firmware is killed, and refuses commands', async () => {
    const fw = await firmware();
    const { robot } = await openRobot(fw);
    stream(robot, [0.1, 0.1, 0.1]);
    await waitFor('states flowing', () => robot.counters().statesIn > 5);
    fw.child.kill('SIGKILL');
    await waitFor('status lost', () => robot.status === 'lost');
    expect(robot.send(cmd(0.1, 0.1, 0.1))).toBe(false);
    await expect(robot.resetFault()).rejects.toThrow(ResrtError);
    expect(robot.counters().linkLosses).toBe(1);
  });
});

describe('the serial link inside the control loop thread', () => {
  const dir = tempDir('resrt-serialfd-loop-');
  const basePath = join(dir, 'base.onnx');
  writeFileSync(
    basePath,
    exportMlpToOnnx(
      randomMlpSpec({ inputs: [{ name: 'obs', dim: 3 }], hidden: [8], actionDim: 3, rng: new Rng(4) }),
    ),
  );

  function plan(fw: HostFirmware) {
    const config = parseRobotConfig({
      name: 'bridge',
      transport: `serial:${fw.path}`,
      rateHz: 100,
      // A loaded box: a command may wait a while for the loop thread.
      commandValidMs: 1000,
      action: { dim: 3, names: ['a', 'b', 'c'], low: [-1, -1, -1], high: [1, 1, 1], safe: [0, 0, 0] },
      observation: [{ field: 'positions' }],
      episode: { maxSteps: 50, reset: 'manual', success: 'manual' },
      watchdog: { onTimeout: 'latch', timeoutMs: 1000 },
    });
    return {
      policy: { base: basePath },
      source: robotLinkSpec({ url: `serial:${fw.path}`, config: structuredClone(config) as PlainData }),
      safety: null,
      safeAction: [0, 0, 0],
      rateHz: 100,
      maxObsAgeMs: 200,
    };
  }

  async function runningLoop(fw: HostFirmware): Promise<{ loop: WorkerControlLoop; events: LoopEvent[] }> {
    const loop = await WorkerControlLoop.create(plan(fw));
    cleanups.push(() => loop.stop());
    const events: LoopEvent[] = [];
    loop.events$.subscribe((e) => events.push(e));
    await loop.start();
    return { loop, events };
  }

  it('opens the port over an fd in the worker, drives the firmware, e-stops it, and stops cleanly', async () => {
    const fw = await firmware();
    const { loop, events } = await runningLoop(fw);
    // Hosted in the loop thread, not behind the main thread's shared-memory bridge.
    expect(loop.kind).toBe('robot:resrt-bridge-host via serial fd in the loop thread');
    await waitFor('the policy running on states', () => loop.stats().latency.policy.count > 20, 20_000);
    loop.estop('test', 'button');
    await waitFor(
      'the device latch seen by the loop',
      () => events.some((e) => e.kind === 'source_fault' && /latched fault or e-stop/.test(e.detail ?? '')),
      10_000,
    );
    const stats = await loop.stop();
    expect(stats.latency.policy.count).toBeGreaterThan(20);
    expect(events.at(-1)?.kind).toBe('stopped');
    await fw.stop();
    // The firmware applied the loop's commands (its own count, printed as it exits).
    const applied = Number(/exiting \(rx \d+ tx \d+ applied (\d+)/.exec(fw.stderr())?.[1]);
    expect(applied).toBeGreaterThan(20);
  });

  it('turns a dead peer into a source fault and the safe action, and keeps running', async () => {
    const fw = await firmware();
    const { loop, events } = await runningLoop(fw);
    await waitFor('the policy running on states', () => loop.stats().latency.policy.count > 10, 20_000);
    fw.child.kill('SIGKILL');
    await waitFor(
      'the lost link seen by the loop',
      () => events.some((e) => e.kind === 'source_fault' && /robot link is lost/.test(e.detail ?? '')),
      10_000,
    );
    const before = loop.stats().ticks;
    await waitFor('ticks after the loss', () => loop.stats().ticks > before + 5, 10_000);
    const stats = await loop.stop();
    expect(stats.safeActions).toBeGreaterThan(0);
    expect(events.some((e) => e.kind === 'loop_crash')).toBe(false);
  });
});
