/**
 * A pseudo-terminal pair (socat) with a Plant served as a serial device on one end: the host end
 * behaves like a USB serial robot, for `resrt virtual-robot --serial` and tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Plant } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { serveSerialDevice, type SerialDeviceOptions, type SerialDeviceServer } from './serial-device.js';

export interface VirtualSerialLinkOptions extends SerialDeviceOptions {
  /** Where the two pty links are created (default: a fresh temporary folder). */
  dir?: string;
  /** socat executable (default 'socat' on PATH). */
  socat?: string;
  /** How long to wait for socat to create both ptys, ms (default 5000). */
  startTimeoutMs?: number;
}

export interface VirtualSerialLink {
  /** Open this with SerialRobot.open. */
  hostPath: string;
  devicePath: string;
  device: SerialDeviceServer;
  close(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function waitExit(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      resolve();
    }, ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

export async function startVirtualSerialLink(
  plant: Plant,
  options: VirtualSerialLinkOptions = {},
): Promise<VirtualSerialLink> {
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'resrt-pty-'));
  const hostPath = join(dir, 'host');
  const devicePath = join(dir, 'device');
  const socat = options.socat ?? 'socat';
  const cleanupDir = (): void => {
    if (ownDir) rmSync(dir, { recursive: true, force: true });
  };
  const child = spawn(
    socat,
    ['-d', '-d', `pty,raw,echo=0,link=${hostPath}`, `pty,raw,echo=0,link=${devicePath}`],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    if (stderr.length < 4096) stderr += d.toString();
  });
  let spawnError: Error | null = null;
  child.once('error', (err) => {
    spawnError = err;
  });
  const deadline = performance.now() + (options.startTimeoutMs ?? 5000);
  while (!(existsSync(hostPath) && existsSync(devicePath))) {
    if (spawnError !== null || child.exitCode !== null || performance.now() > deadline) {
      child.kill('SIGKILL');
      cleanupDir();
      const why =
        spawnError !== null
          ? (spawnError as Error).message
          : child.exitCode !== null
            ? `socat exited with ${child.exitCode}: ${stderr.trim()}`
            : 'socat did not create the ptys in time';
      throw new ResrtError(
        `cannot create the virtual serial link: ${why}`,
        'install socat (apt-get install socat) and make sure the temporary folder is writable',
      );
    }
    await sleep(10);
  }
  let device: SerialDeviceServer;
  try {
    device = await serveSerialDevice(devicePath, plant, options);
  } catch (err) {
    child.kill('SIGTERM');
    await waitExit(child, 1000);
    cleanupDir();
    throw err;
  }
  let closed = false;
  return {
    hostPath,
    devicePath,
    device,
    close: async () => {
      if (closed) return;
      closed = true;
      await device.close();
      child.kill('SIGTERM');
      await waitExit(child, 2000);
      cleanupDir();
    },
  };
}
