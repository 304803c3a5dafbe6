/**
 * The two device implementations of docs/serial-protocol.md behind one interface, on a clock the
 * test drives: the C firmware core (host build, --manual-clock) over a real pseudo-terminal, and
 * the TypeScript DeviceCore in-process. test/hw-serial-conformance.test.ts runs the page's rules
 * against both and compares their transcripts.
 */
import { createInterface } from 'node:readline';
import { SerialPort } from 'serialport';
import { DeviceCore } from '../src/hw/serial/device-core.js';
import { encodeFrame, type Frame } from '../src/hw/serial/frame.js';
import { FrameDecoder } from '../src/hw/serial/frame-decoder.js';
import { spawnHostFirmware, type HostFirmware } from '../src/hw/serial/host-firmware.js';
import { decodePayload, encodePayload, messageTypeCode, type Message } from '../src/hw/serial/messages.js';
import type { Plant, RobotCapabilities, RobotState } from '../src/types.js';

/** One device configuration both implementations can take (the C host build's flags). */
export interface DeviceSpec {
  joints: number;
  sensors: number;
  rateHz: number;
  watchdogMs: number;
  watchdogMode: 'latch' | 'hold';
  /** Clamp in percent of full scale, symmetric. */
  limitPercent: number;
  safe: number[];
  /** 1: a version 1-only firmware (RP_MAX_VERSION=1 / DeviceCore maxVersion 1). */
  maxVersion: 1 | 2;
}

/** What the device sent during one exchange, decoded. */
export interface Received {
  frame: Frame;
  /** null when the payload did not decode (a conformance failure in itself). */
  message: Message | null;
}

export interface DeviceUnderTest {
  readonly name: string;
  /**
   * Writes bytes to the device, then advances its clock by `us` µs, letting it act at every
   * deadline it names; returns every frame it sent meanwhile.
   */
  exchange(bytes: Uint8Array, us: number): Promise<Received[]>;
  close(): Promise<void>;
}

/** The device clock starts here on both sides, so "within the last watchdog_ms" never reaches below 0. */
export const CLOCK_START_US = 1_000_000;
/** Longest clock advance per round trip: keeps what the C device writes well inside the pty buffer. */
const MAX_STEP_US = 100_000;

function decodeReceived(frame: Frame): Received {
  const d = decodePayload(frame.type, frame.payload, frame.version);
  return { frame, message: d.ok ? d.message : null };
}

/** A plant with the C host build's identity, so CAPABILITIES match byte for byte. */
class SpecPlant implements Plant {
  readonly capabilities: RobotCapabilities;
  constructor(spec: DeviceSpec) {
    const l = spec.limitPercent / 100;
    this.capabilities = {
      name: 'resrt-bridge-host',
      firmwareVersion: '0.1.0',
      actionDim: spec.joints,
      actionNames: Array.from({ length: spec.joints }, (_, i) => `a${i}`),
      jointCount: spec.joints,
      sensorCount: spec.sensors,
      rateHz: spec.rateHz,
      safeAction: [...spec.safe],
      actionLow: new Array<number>(spec.joints).fill(-l),
      actionHigh: new Array<number>(spec.joints).fill(l),
    };
  }
  command(): void {}
  hold(): void {}
  sample(): Omit<RobotState, 'receivedAtMs' | 'faulted'> {
    const j = this.capabilities.jointCount;
    return {
      deviceTimeUs: 0,
      positions: new Float32Array(j),
      velocities: new Float32Array(j),
      efforts: new Float32Array(j),
      sensors: new Float32Array(this.capabilities.sensorCount),
    };
  }
}

export function startTsDevice(spec: DeviceSpec): DeviceUnderTest {
  let now = CLOCK_START_US;
  let out: Received[] = [];
  const decoder = new FrameDecoder();
  const core = new DeviceCore(
    new SpecPlant(spec),
    {
      write: (bytes) => decoder.push(bytes, (f) => out.push(decodeReceived(f))),
      nowUs: () => now,
    },
    { watchdogMs: spec.watchdogMs, watchdogMode: spec.watchdogMode, maxVersion: spec.maxVersion },
  );
  return {
    name: 'TypeScript DeviceCore',
    exchange: (bytes, us) => {
      out = [];
      // The same order as the C host's manual clock: feed, tick, every deadline, the target.
      core.feed(bytes);
      core.tick();
      const target = now + us;
      for (;;) {
        const d = core.nextDeadlineUs();
        if (d > target) break;
        if (d > now) now = d;
        core.tick();
      }
      now = target;
      core.tick();
      return Promise.resolve(out);
    },
    close: () => Promise.resolve(),
  };
}

/** The C firmware core behind a pty, its clock stepped through stdin ("step <us> <nbytes>"). */
export async function startFirmwareDevice(
  bins: { full: string; v1: string },
  spec: DeviceSpec,
): Promise<DeviceUnderTest> {
  const fw: HostFirmware = await spawnHostFirmware(spec.maxVersion === 1 ? bins.v1 : bins.full, {
    joints: spec.joints,
    sensors: spec.sensors,
    rateHz: spec.rateHz,
    watchdogMs: spec.watchdogMs,
    watchdogMode: spec.watchdogMode,
    limitPercent: spec.limitPercent,
    safe: spec.safe,
    manualClock: true,
  });
  const port = new SerialPort({ path: fw.path, baudRate: 1_000_000, autoOpen: false });
  try {
    await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
  } catch (err) {
    await fw.stop();
    throw err;
  }
  const decoder = new FrameDecoder();
  let out: Received[] = [];
  let rxBytes = 0;
  port.on('data', (chunk: Buffer) => {
    rxBytes += chunk.length;
    decoder.push(chunk, (f) => out.push(decodeReceived(f)));
  });
  // The host answers each clock step with one line. Lines are queued, so that one that lands in
  // the same chunk as another, or before its waiter, is not left unread.
  const lines: string[] = [];
  let lineWaiter: (() => void) | null = null;
  createInterface({ input: fw.child.stdout! }).on('line', (line) => {
    lines.push(line);
    lineWaiter?.();
  });
  // A loaded machine can stall this process for seconds; the answer is checked once more before
  // the wait counts as a failure, since an expired timer runs before the pipe's pending data.
  const nextLine = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const take = (): boolean => {
        const line = lines.shift();
        if (line === undefined) return false;
        clearTimeout(t);
        lineWaiter = null;
        resolve(line);
        return true;
      };
      const t = setTimeout(() => {
        setImmediate(() => {
          if (take()) return;
          lineWaiter = null;
          reject(
            new Error(
              `the firmware host did not answer its clock step within 30 s (exit code ${fw.child.exitCode}, ${rxBytes} bytes read from the pty): ${fw.stderr()}`,
            ),
          );
        });
      }, 30_000);
      if (!take()) lineWaiter = take;
    });
  let expectedBytes = 0;
  return {
    name: 'C firmware (host build over a pty)',
    async exchange(bytes, us) {
      out = [];
      if (bytes.length > 0) {
        await new Promise<void>((resolve, reject) =>
          port.write(Buffer.from(bytes), (err) => (err ? reject(err) : port.drain(() => resolve()))),
        );
      }
      const answer = nextLine();
      fw.child.stdin?.write(`step ${us} ${bytes.length}\n`);
      const line = await answer;
      const m = /^ok (\d+) (\d+)$/.exec(line);
      if (!m) throw new Error(`unexpected answer from the firmware host: '${line}'`);
      expectedBytes += Number(m[2]);
      const t0 = performance.now();
      while (rxBytes < expectedBytes) {
        if (performance.now() - t0 > 10_000)
          throw new Error(`only ${rxBytes} of ${expectedBytes} bytes the firmware wrote arrived within 10 s`);
        await new Promise((r) => setTimeout(r, 1));
      }
      return out;
    },
    async close() {
      if (port.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
      await fw.stop();
    },
  };
}

/** Splits long clock advances so a device never writes more than a pty buffer holds at once. */
export async function exchange(dut: DeviceUnderTest, bytes: Uint8Array, us: number): Promise<Received[]> {
  const got = await dut.exchange(bytes, Math.min(us, MAX_STEP_US));
  for (let left = us - MAX_STEP_US; left > 0; left -= MAX_STEP_US) {
    got.push(...(await dut.exchange(new Uint8Array(0), Math.min(left, MAX_STEP_US))));
  }
  return got;
}

/** A host frame: the message in a session of `version`, with this header. */
export function frameBytes(
  message: Message,
  header: { version: number; seq: number; flags?: number; payloadVersion?: number },
): Uint8Array {
  return encodeFrame({
    version: header.version,
    type: messageTypeCode(message),
    seq: header.seq,
    flags: header.flags ?? 0,
    payload: encodePayload(message, header.payloadVersion ?? Math.min(Math.max(header.version, 1), 2)),
  });
}

/**
 * What both implementations must agree on, byte for byte: every frame's header and message, except
 * what the plant reports (positions, velocities, efforts, sensors), which differs by design.
 */
export function transcript(frames: Received[]): unknown[] {
  return frames.map(({ frame, message }) => {
    const head = { version: frame.version, type: frame.type, seq: frame.seq, flags: frame.flags };
    if (message === null) return { ...head, undecodable: Buffer.from(frame.payload).toString('hex') };
    if (message.type !== 'state') return { ...head, message };
    return {
      ...head,
      deviceTimeUs: message.deviceTimeUs,
      status: message.status,
      lastCommandSeq: message.lastCommandSeq,
      counts: [message.positions.length, message.sensors.length, message.outputs.length],
      outputs: Array.from(message.outputs),
    };
  });
}
