// The CLI through its real entry point, bin/resrt.js (dist/ compiled from the source by test/build-cli.ts).
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { tempDir } from './temp-dirs.js';
import { RESRT_CLI } from './fixtures/cli.js';

const run = promisify(execFile);
const cli = RESRT_CLI;

async function resrt(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [...cli, ...args], { maxBuffer: 1 << 24 });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

describe('resrt CLI', () => {
  it('tasks --json lists the built-in tasks', async () => {
    const r = await resrt('tasks', '--json');
    expect(r.code).toBe(0);
    const names = (JSON.parse(r.stdout) as { tasks: { name: string }[] }).tasks.map((t) => t.name);
    expect(names).toEqual(['reach', 'push', 'peg-insert', 'push-cam', 'so101-pick-place']);
  });

  it('eval --json prints one object with the success rate and its 95% interval', async () => {
    const r = await resrt('eval', '--task', 'reach', '--policy', 'expert', '--episodes', '20', '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as {
      task: string;
      episodes: number;
      success_rate: number;
      ci95: number[];
    };
    expect(out.task).toBe('reach');
    expect(out.episodes).toBe(20);
    expect(out.success_rate).toBe(1);
    expect(out.ci95[0]).toBeGreaterThan(0.8);
  });

  it('--version prints the package version; help shows each default once', async () => {
    const v = await resrt('--version');
    expect(v.code).toBe(0);
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    expect(v.stdout.trim()).toBe(pkg.version);
    const help = await resrt('run', '--help');
    expect(help.stdout).toMatch(/--rate <hz> +control rate \(default: the task or robot rate\)\n/);
    expect(help.stdout).not.toMatch(/\(default: [^)]*\) \(default:/);
  });

  it('bad input gets one clear line with the fix, not a stack trace', async () => {
    const r = await resrt('eval', '--task', 'nope');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/unknown task "nope"/);
    expect(r.stderr).toMatch(/fix: /);
    expect(r.stderr).not.toMatch(/at .*\.ts:\d+/);
    const r2 = await resrt('eval', '--task', 'reach', '--episodes', 'many');
    expect(r2.code).not.toBe(0);
    expect(r2.stderr).toMatch(/--episodes must be an integer/);
    const r3 = await resrt(
      'train',
      '--task',
      'reach',
      '--base',
      'b.onnx',
      '--mixing',
      'step',
      '--mix-probes',
      '2',
    );
    expect(r3.code).not.toBe(0);
    expect(r3.stderr).toMatch(/--mix-probes must be a number in \[0, 1\], got "2"/);
    expect(r3.stderr).not.toMatch(/at .*\.ts:\d+/);
    const r4 = await resrt(
      'actor',
      ...['--robot-id', 'a', '--broker', 'mqtt://127.0.0.1:1', '--base', 'b.onnx', '--state', 's'],
      ...['--task', 'reach', '--mixing', 'eps'],
    );
    expect(r4.code).toBe(1);
    expect(r4.stderr).toMatch(/an actor has none[\s\S]*fix: .*--baseline 45\/100/);
  }, 240_000);

  it('collect → bc → inspect → infer → eval --base works end to end and draws a plot', async () => {
    const dir = tempDir('resrt-cli-');
    const demos = join(dir, 'reach.jsonl');
    const base = join(dir, 'reach.onnx');
    const plot = join(dir, 'reach.svg');
    const collect = await resrt('collect', '--task', 'reach', '--episodes', '40', '--out', demos);
    expect(collect.code).toBe(0);
    // stderr is a pipe here: plain progress lines, with no unfilled template field.
    expect(collect.stderr).toMatch(/^collect reach: 0\/40 \(0%\) success -, 0:\d\d elapsed$/m);
    expect(collect.stderr).toMatch(/^collect reach: 40\/40 \(100%\) success \d+\.\d%, /m);
    expect(collect.stderr).not.toMatch(/\{\w+\}/);
    const bc = await resrt('bc', '--demos', demos, '--out', base, '--epochs', '15', '--hidden', '64,64');
    expect(bc.code).toBe(0);
    expect(bc.stdout).toMatch(/onnxruntime matches the trained network/);
    const inspect = JSON.parse((await resrt('inspect', base, '--task', 'reach', '--json')).stdout) as {
      fits: boolean;
    };
    expect(inspect.fits).toBe(true);
    const mismatch = await resrt('inspect', base, '--task', 'push', '--json');
    expect(JSON.parse(mismatch.stdout).fits).toBe(false);
    // A file that does not fit fails the check, and still shows what the file itself is.
    const shown = await resrt('inspect', base, '--task', 'push');
    expect(shown.code).toBe(1);
    expect(shown.stdout).toMatch(/kind: base {3}obs dim: 10 {3}action dim: 2 /);
    expect(shown.stdout).toMatch(/normalization: baked/);
    expect(shown.stdout).toMatch(
      /fits: NO\n {2}- output 'action' .* gives 2 action dims but the robot\/task has 3/,
    );
    const infer = JSON.parse(
      (await resrt('infer', base, '--obs', JSON.stringify(new Array(10).fill(0.1)), '--json')).stdout,
    ) as {
      actions: number[][];
    };
    expect(infer.actions[0]).toHaveLength(2);
    const ev = await resrt(
      'eval',
      '--task',
      'reach',
      '--base',
      base,
      '--episodes',
      '30',
      '--plot',
      plot,
      '--json',
    );
    expect(ev.code).toBe(0);
    const out = JSON.parse(ev.stdout) as { policy: string; success_rate: number };
    expect(out.policy).toBe('base');
    // BC of the reach expert on 40 episodes learns the task far above chance (random: ~1%; this run: ~23%).
    expect(out.success_rate).toBeGreaterThan(0.1);
    const svg = readFileSync(plot, 'utf8');
    expect(svg).toMatch(/^<svg/);
    expect(svg).toMatch(/<path d="M/);
    // A base for another task is refused with the mismatch named.
    const wrong = await resrt('eval', '--task', 'push', '--base', base, '--episodes', '1');
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/2 action dims but the robot\/task has 3/);
  }, 240_000);
});
