/**
 * A pseudo-terminal pair from socat, at fixed link paths so that it can be unplugged (socat
 * stopped: the host side sees the port die, as when a USB adapter is pulled) and plugged back in
 * at the same path.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ResrtError } from '../../../util/errors.js';

export interface PtyPair {
  /** What the host opens (the "adapter"). */
  readonly hostPath: string;
  /** What the emulated bus opens. */
  readonly devicePath: string;
  readonly running: boolean;
  /** Stops socat: both ends disappear. */
  stop(): Promise<void>;
  /** Starts socat again at the same paths. */
  start(): Promise<void>;
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

export async function createPtyPair(
  dir: string,
  options: { socat?: string; startTimeoutMs?: number } = {},
): Promise<PtyPair> {
  const hostPath = join(dir, 'host');
  const devicePath = join(dir, 'bus');
  let child: ChildProcess | null = null;
  const start = async (): Promise<void> => {
    if (child) return;
    rmSync(hostPath, { force: true });
    rmSync(devicePath, { force: true });
    const c = spawn(
      options.socat ?? 'socat',
      ['-d', '-d', `pty,raw,echo=0,link=${hostPath}`, `pty,raw,echo=0,link=${devicePath}`],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    c.stderr?.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString();
    });
    let spawnError: Error | null = null;
    c.once('error', (err) => (spawnError = err));
    const deadline = performance.now() + (options.startTimeoutMs ?? 5000);
    while (!(existsSync(hostPath) && existsSync(devicePath))) {
      if (spawnError !== null || c.exitCode !== null || performance.now() > deadline) {
        c.kill('SIGKILL');
        const why =
          spawnError !== null
            ? (spawnError as Error).message
            : c.exitCode !== null
              ? `socat exited with ${c.exitCode}: ${stderr.trim()}`
              : 'socat did not create the ptys in time';
        throw new ResrtError(
          `cannot create the virtual servo bus: ${why}`,
          'install socat (apt-get install socat) and make sure the folder is writable',
        );
      }
      await sleep(10);
    }
    child = c;
  };
  const stop = async (): Promise<void> => {
    const c = child;
    child = null;
    if (!c) return;
    c.kill('SIGTERM');
    await waitExit(c, 2000);
  };
  await start();
  return {
    hostPath,
    devicePath,
    get running() {
      return child !== null;
    },
    stop,
    start,
  };
}
