// A real, small filesystem for disk-full tests: a tmpfs of a few MiB mounted on a temp folder (needs
// root, as CI has). Where mounting is not permitted the tests skip with the reason, unless
// RESRT_REQUIRE_TMPFS=1 (set by .ci/run), which turns that into a failure.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { freeBytes } from '../src/util/disk.js';

export interface SmallDisk {
  path: string;
  /** Fills the disk with a filler file until about `leaveBytes` are free. */
  fill(leaveBytes: number): void;
  /** Deletes the filler: the room comes back. */
  release(): void;
  unmount(): void;
}

/** Mounts a tmpfs of `sizeBytes`; returns why not when this machine does not allow it. */
export function mountSmallDisk(sizeBytes: number): SmallDisk | string {
  const path = mkdtempSync(join(tmpdir(), 'resrt-small-disk-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0755`, 'tmpfs', path], {
      stdio: 'pipe',
    });
  } catch (err) {
    rmSync(path, { recursive: true, force: true });
    const why =
      `cannot mount a ${sizeBytes}-byte tmpfs (${((err as { stderr?: Buffer }).stderr?.toString() ?? (err as Error).message).trim()}); ` +
      'the disk-full tests need root (CI runs them as root)';
    if (process.env.RESRT_REQUIRE_TMPFS === '1') throw new Error(`RESRT_REQUIRE_TMPFS=1 but ${why}`);
    return why;
  }
  const filler = join(path, 'filler');
  let mounted = true;
  return {
    path,
    fill(leaveBytes) {
      const fd = openSync(filler, 'a');
      try {
        const chunk = Buffer.alloc(4096, 0x5a);
        for (;;) {
          const free = freeBytes(path) ?? 0;
          if (free <= leaveBytes) break;
          writeSync(fd, chunk, 0, Math.min(chunk.byteLength, Math.max(1, Math.floor(free - leaveBytes))));
        }
      } finally {
        closeSync(fd);
      }
    },
    release() {
      try {
        unlinkSync(filler);
      } catch {
        // Nothing filled.
      }
    },
    unmount() {
      if (!mounted) return;
      mounted = false;
      execFileSync('umount', ['-l', path], { stdio: 'pipe' });
      rmSync(path, { recursive: true, force: true });
    },
  };
}
