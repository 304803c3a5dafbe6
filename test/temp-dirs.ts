// Temporary folders that a test file's tests share, removed after that file's tests: importing
// this module registers the removal for the importing file (vitest evaluates it once per file).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

const made: string[] = [];

afterAll(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** mkdtemp under the OS temp folder (`prefix` such as 'resrt-collect-'), removed after the file. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}
