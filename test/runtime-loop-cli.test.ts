// `resrt run` as a user runs it: its own process, the loop in its own thread, base + residual fused.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import type { LoopStats } from '../src/runtime/loop.js';
import type { PriorityOutcome } from '../src/runtime/thread-priority.js';
import { exportMlpToOnnx, MetaKey, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { Rng } from '../src/util/rng.js';
import { RESRT_CLI } from './fixtures/cli.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'resrt-run-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('resrt run', () => {
  it('runs base + residual on a task through the loop thread and prints the stats as JSON', async () => {
    const rng = new Rng(8);
    const base = join(dir, 'base.onnx');
    const residual = join(dir, 'residual.onnx');
    writeFileSync(
      base,
      exportMlpToOnnx(randomMlpSpec({ inputs: [{ name: 'obs', dim: 10 }], hidden: [16], actionDim: 2, rng })),
    );
    const spec = randomMlpSpec({
      inputs: [
        { name: 'obs', dim: 10 },
        { name: 'base_action', dim: 2 },
      ],
      hidden: [16],
      actionDim: 2,
      tanhScale: 0.1,
      rng,
    });
    spec.metadata[MetaKey.kind] = 'residual';
    writeFileSync(residual, exportMlpToOnnx(spec));
    const args = [
      'run',
      '--task',
      'reach',
      '--base',
      base,
      '--residual',
      residual,
      '--duration',
      '1',
      '--json',
    ];
    const { stdout } = await run(process.execPath, [...RESRT_CLI, ...args]);
    const out = JSON.parse(stdout) as {
      target: string;
      fusion: string;
      priority: PriorityOutcome;
      stats: LoopStats;
      episodes: number;
    };
    expect(out.target).toMatch(/reach/);
    expect(out.fusion).toBe('fused');
    // Real-time by default: granted, or refused with the reason and the ways to allow it.
    if (out.priority.applied === 'realtime') expect(out.priority.detail).toMatch(/^SCHED_FIFO \d+$/);
    else expect(out.priority.detail).toMatch(/refused: .*--priority normal/);
    expect(out.stats.rateHz).toBe(50);
    expect(out.stats.ticks).toBeGreaterThan(10);
    expect(out.stats.latency.policy.count).toBeGreaterThan(0);
    expect(out.stats.events.stopped).toBe(1);
  }, 60_000);

  it('names the cause when the base policy does not fit the task', async () => {
    const rng = new Rng(9);
    const base = join(dir, 'base-bad.onnx');
    writeFileSync(
      base,
      exportMlpToOnnx(randomMlpSpec({ inputs: [{ name: 'obs', dim: 7 }], hidden: [8], actionDim: 2, rng })),
    );
    const failed = await run(process.execPath, [
      ...RESRT_CLI,
      'run',
      '--task',
      'reach',
      '--base',
      base,
      '--duration',
      '1',
    ]).then(
      () => null,
      (err: { stderr: string; code: number }) => err,
    );
    expect(failed?.code).not.toBe(0);
    expect(failed?.stderr).toMatch(/takes 7 observation values but the task provides 10/);
    expect(failed?.stderr).not.toMatch(/at .*\.ts:\d+/); // one clear line, no stack trace
  }, 60_000);

  it('rejects a --priority it does not know, naming both it knows', async () => {
    const failed = await run(process.execPath, [
      ...RESRT_CLI,
      'run',
      '--task',
      'reach',
      '--base',
      join(dir, 'base.onnx'),
      '--priority',
      'high',
    ]).then(
      () => null,
      (err: { stderr: string; code: number }) => err,
    );
    expect(failed?.code).not.toBe(0);
    expect(failed?.stderr).toMatch(/--priority: 'high' is not a scheduling/);
    expect(failed?.stderr).toMatch(/--priority realtime or --priority normal/);
  }, 60_000);
});
