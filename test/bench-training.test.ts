// The training benchmarks' shared flags through their real entry point: a run continued with
// --resume picks up from its checkpoint instead of starting over, and bad flags get one line with
// the fix, not a stack trace.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { writeWeakReachBase } from './session-fixtures.js';
import { tempDir } from './temp-dirs.js';

const run = promisify(execFile);

async function bench(
  script: string,
  ...args: string[]
): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', script, ...args], {
      maxBuffer: 1 << 24,
    });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

interface LearnResult {
  rows: { envSteps: number; curve: { envSteps: number; successRate: number }[] }[];
}

// Each test runs the benchmark script several times as child processes (each compiles the sources
// through tsx and trains): minutes on a loaded 2-core machine, hence the generous limits.
describe('training benchmarks', () => {
  it('bench/learn --resume continues each run from its checkpoint', async () => {
    const dir = tempDir('resrt-bench-');
    const base = join(dir, 'base.onnx');
    writeWeakReachBase(base);
    const out = join(dir, 'out');
    const common = ['--task', 'reach', '--base', base, '--seeds', '0', '--methods', 'residual'];
    const flags = [...common, '--eval-every', '0', '--eval-episodes', '5', '--out', out, '--json'];

    const first = await bench('bench/learn.ts', ...flags, '--steps', '300');
    expect(first.code, first.stderr).toBe(0);
    const a = JSON.parse(first.stdout) as LearnResult;
    expect(a.rows[0].curve.map((p) => p.envSteps)).toEqual([0, 300]);
    expect(existsSync(join(out, 'reach-residual-seed0', 'checkpoint.json'))).toBe(true);

    // The resumed run keeps the first run's evaluations and adds its own at the new end.
    const resumed = await bench('bench/learn.ts', ...flags, '--steps', '500', '--resume');
    expect(resumed.code, resumed.stderr).toBe(0);
    const b = JSON.parse(resumed.stdout) as LearnResult;
    expect(b.rows[0].envSteps).toBe(500);
    expect(b.rows[0].curve.map((p) => p.envSteps)).toEqual([0, 300, 500]);
    expect(b.rows[0].curve.slice(0, 2)).toEqual(a.rows[0].curve);
    const curves = readFileSync(join(out, 'reach-residual-seed0', 'curves.csv'), 'utf8')
      .trim()
      .split('\n');
    expect(curves).toHaveLength(1 + 3);

    // Resuming a finished run trains nothing and reports it whole.
    const again = await bench('bench/learn.ts', ...flags, '--steps', '500', '--resume');
    expect(again.code, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as LearnResult).rows[0].curve).toEqual(b.rows[0].curve);

    // Without --resume the run folder is replaced: a fresh run from step 0.
    const fresh = await bench('bench/learn.ts', ...flags, '--steps', '300');
    expect(fresh.code, fresh.stderr).toBe(0);
    expect((JSON.parse(fresh.stdout) as LearnResult).rows[0].curve.map((p) => p.envSteps)).toEqual([0, 300]);
  }, 300_000);

  it('bench/safety --resume on finished runs reports them without training again', async () => {
    const dir = tempDir('resrt-bench-');
    const base = join(dir, 'base.onnx');
    writeWeakReachBase(base);
    const flags = [
      ...['--task', 'reach', '--base', base, '--seeds', '0', '--modes', 'none', '--steps', '300'],
      ...['--learning-starts', '100', '--baseline-episodes', '5', '--eval-every', '0'],
      ...['--eval-episodes', '5', '--window', '3', '--out', join(dir, 'out'), '--json'],
    ];
    const first = await bench('bench/safety.ts', ...flags);
    expect(first.code, first.stderr).toBe(0);
    // The learner worker owes no updates here, so it sends no progress; this used to wait forever.
    const again = await bench('bench/safety.ts', ...flags, '--resume');
    expect(again.code, again.stderr).toBe(0);
    type Runs = { runs: { curve: unknown; trainEpisodes: number; windows: number }[] };
    const [a, b] = [first, again].map((r) => (JSON.parse(r.stdout) as Runs).runs[0]);
    expect(b.curve).toEqual(a.curve);
    expect(b.trainEpisodes).toBe(a.trainEpisodes);
    expect(b.windows).toBe(a.windows);
  }, 300_000);

  it('bad flags print the problem and the fix without a stack trace', async () => {
    const common = ['--task', 'reach', '--base', 'none.onnx'];
    const cases: [script: string, flags: string[], message: string][] = [
      ['bench/learn.ts', ['--seeds', '0,x'], '--seeds 0,x is not a list of seeds'],
      ['bench/safety.ts', ['--seeds', '0,x'], '--seeds 0,x is not a list of seeds'],
      ['bench/learn.ts', ['--methods', 'ppo', '--resume'], '--resume cannot continue residual PPO runs'],
      ['bench/safety.ts', ['--held-back-bc', '-1'], '--held-back-bc must be a number in [0, 100], got "-1"'],
      ['bench/safety.ts', ['--probe-fraction', '2'], '--probe-fraction must be a number in [0, 1], got "2"'],
    ];
    for (const [script, flags, message] of cases) {
      const r = await bench(script, ...common, ...flags);
      expect(r.code, `${script} ${flags.join(' ')}`).toBe(1);
      expect(r.stderr).toContain(message);
      expect(r.stderr).toContain('fix:');
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  }, 60_000);
});
