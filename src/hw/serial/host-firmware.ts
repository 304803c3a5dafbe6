/**
 * Builds and runs the host build of the C firmware bridge (firmware-bridge/host): the real
 * firmware core behind a pseudo-terminal with a simulated plant. Tests and the benchmark use it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ResrtError } from '../../util/errors.js';

export interface HostFirmwareArgs {
  /** Joints = action dimensions, 1..64 (default 3). */
  joints?: number;
  /** 0..64 (default 2): the mean position, the plant clock in s, then each sensor's own index. */
  sensors?: number;
  rateHz?: number;
  watchdogMs?: number;
  /** What the watchdog does in a version 2 session (default 'latch'). */
  watchdogMode?: 'latch' | 'hold';
  /** Percent of full scale for the command clamp (default 90). */
  limitPercent?: number;
  /** The safe action, one value per joint (default zeros). */
  safe?: number[];
  corruptEvery?: number;
  /**
   * Conformance tests: the device clock stands still and the pty is read only on a
   * "step <us> <nbytes>" line on the child's stdin (see firmware-bridge/host/main.c).
   */
  manualClock?: boolean;
  log?: boolean;
}

export interface HostFirmware {
  /** The pseudo-terminal to open. */
  path: string;
  child: ChildProcess;
  /** What the firmware wrote to stderr so far (with log: true, its counters). */
  stderr(): string;
  /** SIGTERM, then SIGKILL after 2 s; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** firmware-bridge/ at the package root (this file sits in src/hw/serial or dist/hw/serial). */
export function firmwareDir(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'firmware-bridge');
}

/**
 * Runs `make` in firmware-bridge/ and returns the host binary's path: the full firmware, or with
 * 'v1' a build that speaks protocol version 1 only (RP_MAX_VERSION=1, as on a small board).
 */
export function buildHostFirmware(variant: 'full' | 'v1' = 'full'): string {
  const dir = firmwareDir();
  const target = variant === 'v1' ? 'build/resrt-bridge-host-v1' : 'build/resrt-bridge-host';
  try {
    execFileSync('make', ['-C', dir, '--no-print-directory', '-s', target], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') {
      throw new ResrtError(
        'cannot build the firmware bridge: make is not installed',
        'install make and a C compiler (apt-get install build-essential)',
      );
    }
    throw new ResrtError(
      `building the firmware bridge failed: ${e.stderr?.toString().trim() || e.message}`,
      'install a C99 compiler (apt-get install build-essential) and run make -C firmware-bridge to see the error',
    );
  }
  const bin = join(dir, target);
  if (!existsSync(bin))
    throw new ResrtError(`make succeeded but ${bin} is missing`, 'run make -C firmware-bridge clean all');
  return bin;
}

/** Starts the host firmware and waits for its "PTY <path>" line. */
export function spawnHostFirmware(
  bin: string,
  args: HostFirmwareArgs = {},
  startTimeoutMs = 5000,
): Promise<HostFirmware> {
  const argv: string[] = [];
  if (args.joints !== undefined) argv.push('--joints', String(args.joints));
  if (args.sensors !== undefined) argv.push('--sensors', String(args.sensors));
  if (args.rateHz !== undefined) argv.push('--rate', String(args.rateHz));
  if (args.watchdogMs !== undefined) argv.push('--watchdog-ms', String(args.watchdogMs));
  if (args.watchdogMode !== undefined) argv.push('--watchdog-mode', args.watchdogMode);
  if (args.limitPercent !== undefined) argv.push('--limit', String(args.limitPercent));
  if (args.safe !== undefined) argv.push('--safe', args.safe.join(','));
  if (args.corruptEvery !== undefined) argv.push('--corrupt-every', String(args.corruptEvery));
  if (args.manualClock) argv.push('--manual-clock');
  if (args.log) argv.push('--log');
  const child = spawn(bin, argv, { stdio: [args.manualClock ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 65536) stderr = stderr.slice(-32768);
  });
  const stop = (): Promise<number | null> => {
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
    return new Promise((res) => {
      const t = setTimeout(() => child.kill('SIGKILL'), 2000);
      child.stdin?.end();
      child.once('exit', (code) => {
        clearTimeout(t);
        res(code);
      });
      child.kill('SIGTERM');
    });
  };
  return new Promise((res, rej) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      rej(
        new ResrtError(
          `the firmware bridge did not print its PTY within ${startTimeoutMs} ms: ${stderr.trim()}`,
          'run firmware-bridge/build/resrt-bridge-host --log by hand',
        ),
      );
    }, startTimeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      rej(
        new ResrtError(
          `the firmware bridge exited with ${code} before printing its PTY: ${stderr.trim()}`,
          'check its arguments',
        ),
      );
    });
    const onStdout = (d: Buffer): void => {
      out += d.toString();
      const m = /^PTY (\S+)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        // Later stdout (the manual clock's answers) belongs to whoever drives the child.
        child.stdout?.off('data', onStdout);
        res({ path: m[1], child, stderr: () => stderr, stop });
      }
    };
    child.stdout?.on('data', onStdout);
  });
}
