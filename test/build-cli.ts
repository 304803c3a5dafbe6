// Vitest global setup: compiles src/ into dist/ once per test run, so the CLI tests run the same
// bin/resrt.js a user runs — current with the source — without paying tsx's per-process start-up
// (about 4 s a CLI process on two cores) in every spawned command.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';

let built = false;

export default function setup(): void {
  if (built) return;
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { stdio: 'inherit' });
  built = true;
}
