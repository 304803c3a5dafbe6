// `train` reports the file it writes: `eval` of the written residual.onnx on the seeds train names
// gives train's numbers exactly, and those seeds are not the ones evaluated during training.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import type { EvaluationRecord } from '../src/residual/held-out.js';
import type { BatchResult } from './fixtures/cli-batch.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'resrt-train-eval-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Summary {
  baseSuccess: number;
  baseSuccessFrom: string;
  finalSuccess: number;
  finalSuccessFrom: string;
  evaluations: Record<string, EvaluationRecord>;
}

interface EvalJson {
  episodes: number;
  successes: number;
  success_rate: number;
  ci95: [number, number];
  mean_steps: number;
  seed: number;
}

async function batch(runs: string[][]): Promise<BatchResult[]> {
  const file = join(dir, `runs-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(runs));
  const { stdout } = await run(process.execPath, ['--import', 'tsx', 'test/fixtures/cli-batch.ts', file], {
    maxBuffer: 1 << 26,
  });
  const results = JSON.parse(stdout) as BatchResult[];
  for (const r of results) expect(r.code, `resrt ${r.args.join(' ')}\n${r.stderr}`).toBe(0);
  return results;
}

describe('train → eval', () => {
  it("eval of the written residual.onnx on train's held-out seeds reproduces train's final row", async () => {
    const demos = join(dir, 'demos.jsonl');
    const base = join(dir, 'base.onnx');
    const out = join(dir, 'run');
    const [, , train] = await batch([
      ['collect', '--task', 'reach', '--episodes', '40', '--out', demos],
      // A base that succeeds sometimes (reach: ~50% here), so episodes differ in outcome and length.
      ['bc', '--demos', demos, '--out', base, '--epochs', '30', '--hidden', '64,64'],
      [
        ...['train', '--task', 'reach', '--base', base, '--demos', demos, '--out', out],
        ...['--steps', '300', '--eval-every', '150', '--eval-episodes', '16', '--no-worker'],
        ...['--set', 'learningStarts=100', '--set', 'criticWarmupSteps=20', '--set', 'batchSize=32'],
        ...['--set', 'actorHidden=[32,32]', '--set', 'criticHidden=[32,32]'],
      ],
    ]);
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as Summary;
    const { initial, lastInTraining, heldOutBase, heldOutResidual } = summary.evaluations;
    // Each headline number says which evaluation it is.
    expect(summary.baseSuccessFrom).toBe('evaluations.heldOutBase');
    expect(summary.finalSuccessFrom).toBe('evaluations.heldOutResidual');
    expect(summary.baseSuccess).toBe(heldOutBase.successRate);
    expect(summary.finalSuccess).toBe(heldOutResidual.successRate);
    expect(initial.envSteps).toBe(0);
    expect(lastInTraining.envSteps).toBe(300);
    // Held-out seeds are disjoint from the seeds every evaluation during training used.
    const periodic = [initial.firstSeed, initial.firstSeed + initial.episodes - 1];
    const held = [heldOutResidual.firstSeed, heldOutResidual.firstSeed + heldOutResidual.episodes - 1];
    expect(held[0] > periodic[1] || held[1] < periodic[0]).toBe(true);
    expect(heldOutBase.firstSeed).toBe(heldOutResidual.firstSeed);
    expect(heldOutResidual.episodes).toBe(16);

    // train prints those numbers and the command that reproduces them.
    const reproduce = /reproduce: resrt (eval .*)$/m.exec(train.stdout)?.[1];
    expect(reproduce, train.stdout).toBeDefined();
    const args = reproduce!.split(' ');
    expect(args).toEqual(expect.arrayContaining(['--seed', String(held[0]), '--episodes', '16']));
    expect(train.stdout).toContain(`${(100 * heldOutResidual.successRate).toFixed(1)}%`);

    const [withResidual, baseAlone] = await batch([
      [...args, '--json'],
      ['eval', '--task', 'reach', '--base', base, '--seed', String(held[0]), '--episodes', '16', '--json'],
    ]);
    const r = JSON.parse(withResidual.stdout) as EvalJson;
    expect(r.seed).toBe(heldOutResidual.firstSeed);
    // Mean episode length too: the same episodes ended at the same steps, not just as often.
    expect([r.successes, r.success_rate, r.ci95, r.mean_steps]).toEqual([
      heldOutResidual.successes,
      heldOutResidual.successRate,
      heldOutResidual.ci95,
      heldOutResidual.meanSteps,
    ]);
    const b = JSON.parse(baseAlone.stdout) as EvalJson;
    expect([b.successes, b.success_rate, b.ci95, b.mean_steps]).toEqual([
      heldOutBase.successes,
      heldOutBase.successRate,
      heldOutBase.ci95,
      heldOutBase.meanSteps,
    ]);
    // Not a trivial match: some held-out episodes succeed and some do not.
    expect(b.successes).toBeGreaterThan(0);
    expect(b.successes).toBeLessThan(16);
  }, 240_000);
});
