/**
 * Serves a Plant as a resrt serial device on a tty path (the device end of a socat pty pair, or a
 * real port wired to a host). The protocol logic lives in DeviceCore; this module only moves bytes
 * and keeps the core's clock ticking.
 */
import { SerialPort } from 'serialport';
import type { Plant } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { DeviceCore, type DeviceCoreOptions, type DeviceCounters } from './device-core.js';

export interface SerialDeviceOptions extends DeviceCoreOptions {
  baudRate?: number;
  /** Output queued beyond this many bytes is dropped, as a UART would (default 64 KiB). */
  maxQueuedBytes?: number;
}

export interface SerialDeviceServer {
  readonly path: string;
  counters(): DeviceCounters & { writeDrops: number };
  close(): Promise<void>;
}

export async function serveSerialDevice(
  path: string,
  plant: Plant,
  options: SerialDeviceOptions = {},
): Promise<SerialDeviceServer> {
  const port = new SerialPort({ path, baudRate: options.baudRate ?? 1_000_000, autoOpen: false });
  await new Promise<void>((resolve, reject) =>
    port.open((err) =>
      err
        ? reject(
            new ResrtError(
              `cannot open device side ${path}: ${err.message}`,
              'check the path and that nothing else holds it',
            ),
          )
        : resolve(),
    ),
  );
  const maxQueued = options.maxQueuedBytes ?? 65536;
  let writeDrops = 0;
  let closed = false;
  const t0 = performance.now();
  const core = new DeviceCore(
    plant,
    {
      write: (bytes) => {
        // Nobody reading the other end: drop like a UART instead of growing a queue without bound.
        if (closed || port.writableLength > maxQueued) {
          writeDrops++;
          return;
        }
        port.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      },
      nowUs: () => (performance.now() - t0) * 1000,
    },
    options,
  );
  let timer: NodeJS.Timeout | null = null;
  const schedule = (): void => {
    if (closed) return;
    if (timer) clearTimeout(timer);
    const waitMs = Math.max(
      0,
      Math.min(100, (core.nextDeadlineUs() - (performance.now() - t0) * 1000) / 1000),
    );
    timer = setTimeout(() => {
      timer = null;
      core.tick();
      schedule();
    }, waitMs);
  };
  port.on('data', (chunk: Buffer) => {
    core.feed(chunk);
    core.tick();
    schedule();
  });
  port.on('error', () => undefined);
  schedule();
  return {
    path,
    counters: () => ({ ...core.counters, writeDrops }),
    close: async () => {
      if (closed) return;
      closed = true;
      if (timer) clearTimeout(timer);
      plant.hold();
      if (port.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
    },
  };
}
