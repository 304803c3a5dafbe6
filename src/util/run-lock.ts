// One writer per run folder. Two learners appending to one replay, write-ahead log or checkpoint
// would each overwrite the other's files and lose data without a word, so a run takes the folder
// with a lock file first. The lock names its holder; a lock left by a process that no longer runs
// (kill -9, power loss) is taken over, so --resume after a crash needs nothing by hand.
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ResrtError } from './errors.js';

export const RUN_LOCK_FILE = '.resrt-lock';

interface LockHolder {
  pid: number;
  host: string;
  what: string;
  since: string;
}

export interface RunLock {
  readonly path: string;
  /** Removes the lock file if it is still this holder's; safe to call more than once. */
  release(): void;
}

/** Locks every run of this process takes, released at exit however the process ends short of a kill. */
const held = new Set<RunLock>();
let exitHookInstalled = false;

/**
 * Takes `dir` (which must exist) for this process. Throws a ResrtError naming the holder when a
 * live process has it; takes over a lock whose holder is gone.
 */
export function lockRunFolder(dir: string, what: string): RunLock {
  const path = join(dir, RUN_LOCK_FILE);
  const me: LockHolder = { pid: process.pid, host: hostname(), what, since: new Date().toISOString() };
  const text = `${JSON.stringify(me)}\n`;
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = readHolder(path);
      if (holder && holderIsAlive(holder)) {
        const who = holder.pid === process.pid ? 'this process' : `pid ${holder.pid} on ${holder.host}`;
        throw new ResrtError(
          `${dir} is in use by another resrt ${holder.what} (${who}, since ${holder.since})`,
          `wait for it to finish or stop it${holder.pid === process.pid ? '' : ` (kill ${holder.pid})`}, ` +
            'or choose another --out folder',
        );
      }
      // The holder is gone (or the file was cut short by a crash while it was written).
      try {
        unlinkSync(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      continue;
    }
    try {
      writeSync(fd, text);
    } finally {
      closeSync(fd);
    }
    const lock: RunLock = {
      path,
      release() {
        if (!held.delete(lock)) return;
        try {
          if (readFileSync(path, 'utf8') === text) unlinkSync(path);
        } catch {
          // Already gone: nothing to release.
        }
      },
    };
    held.add(lock);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', () => {
        for (const l of [...held]) l.release();
      });
    }
    return lock;
  }
  throw new ResrtError(
    `could not take ${path}: another process keeps creating it`,
    'make sure only one resrt run uses this --out folder',
  );
}

function readHolder(path: string): LockHolder | null {
  try {
    const h = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockHolder>;
    if (typeof h.pid !== 'number' || typeof h.host !== 'string') return null;
    return { pid: h.pid, host: h.host, what: String(h.what ?? 'run'), since: String(h.since ?? '?') };
  } catch {
    return null;
  }
}

function holderIsAlive(h: LockHolder): boolean {
  // A holder on another host (a shared disk) cannot be checked: believe it.
  if (h.host !== hostname()) return true;
  if (h.pid === process.pid) return true;
  try {
    process.kill(h.pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A live pid may be a different program that reused the number after the holder died.
  try {
    return /node|resrt/.test(readFileSync(`/proc/${h.pid}/cmdline`, 'utf8'));
  } catch {
    return true;
  }
}
