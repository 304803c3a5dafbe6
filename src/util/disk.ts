/** Free space on the filesystem that holds a folder, for the session's storage limits. */
import { statfsSync } from 'node:fs';

/** Bytes an unprivileged process may still write under `dir`; null where statfs fails. */
export function freeBytes(dir: string): number | null {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return null;
  }
}

/** Bytes as MiB for messages (two decimals below 10 MiB, where small limits live). */
export function mib(bytes: number): string {
  const m = bytes / 2 ** 20;
  return m.toFixed(m < 10 ? 2 : 1);
}

/**
 * freeBytes, read at most every `everyMs`: the checks run per batch or per control-loop wait, and
 * the answer only needs to be as fresh as the writes it guards.
 */
export function freeSpaceProbe(dir: string, everyMs = 500): () => number | null {
  let at = -Infinity;
  let last: number | null = null;
  return () => {
    const now = performance.now();
    if (now - at >= everyMs) {
      at = now;
      last = freeBytes(dir);
    }
    return last;
  };
}
