// `resrt demo`, the README's first command, through bin/resrt.js on a small budget: every stage runs
// (collect, BC, residual RL keeping its best evaluation, held-out table) and leaves its files.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { tempDir } from './temp-dirs.js';
import { RESRT_CLI } from './fixtures/cli.js';

const run = promisify(execFile);

it('resrt demo collects, clones, trains, keeps the best residual and prints the held-out table', async () => {
  const out = join(tempDir('resrt-demo-'), 'demo');
  const args = ['demo', '--out', out, '--demo-episodes', '30', '--bc-epochs', '3'];
  const { stdout } = await run(
    process.execPath,
    [...RESRT_CLI, ...args, '--steps', '1200', '--eval-episodes', '20', '--seed', '3'],
    { maxBuffer: 1 << 24 },
  );
  expect(stdout).toMatch(/1\/4 collecting 30 scripted-expert demonstrations/);
  expect(stdout).toMatch(/\d+\/30 demonstrations succeeded/);
  expect(stdout).toMatch(
    /3\/4 residual RL .* keeps the residual of its best evaluation \(50 episodes every 2500 steps\)/,
  );
  expect(stdout).toMatch(/kept the (final residual|residual evaluated at \d+ env steps)/);
  expect(stdout).toMatch(/20 held-out evaluation episodes each \(seeds 2000300000…2000300019\)/);
  expect(stdout).toMatch(/BC base \(frozen ONNX\)\s+\d+\.\d%/);
  expect(stdout).toMatch(/base \+ residual\s+\d+\.\d%/);
  expect(stdout).toMatch(/residual: 1200 env steps, \d+ updates, profile cpu, engine onnxruntime-node/);

  for (const f of [
    'push-demos.jsonl',
    'push-base.onnx',
    'push-residual/residual.onnx',
    'push-residual/summary.json',
  ])
    expect(existsSync(join(out, f)), f).toBe(true);
  // residual.onnx is the kept residual, named by its record.
  const runDir = join(out, 'push-residual');
  const record = JSON.parse(readFileSync(join(runDir, 'residual-best.json'), 'utf8')) as { file: string };
  expect(readdirSync(runDir).filter((f) => f.startsWith('residual-best-'))).toEqual([record.file]);
  expect(readFileSync(join(runDir, 'residual.onnx')).equals(readFileSync(join(runDir, record.file)))).toBe(
    true,
  );
}, 300_000);
