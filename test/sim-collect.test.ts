import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { collectDemos } from '../src/sim/collect.js';
import { readDemos } from '../src/sim/demos.js';
import { humanLikeExpert } from '../src/sim/expert.js';
import { builtInTasks } from '../src/sim/registry.js';
import { tempDir } from './temp-dirs.js';

describe('resrt collect', () => {
  it('writes a demonstration file whose episodes replay the recorded transitions', async () => {
    const dir = tempDir('resrt-collect-');
    const out = join(dir, 'reach.jsonl');
    const summary = await collectDemos({
      task: builtInTasks.reach,
      episodes: 8,
      out,
      seed: 3,
      noise: humanLikeExpert,
    });
    expect(summary.episodes).toBe(8);
    const demos = readDemos(out);
    expect(demos.header.task).toBe('reach');
    expect(demos.header.obsDim).toBe(10);
    expect(demos.header.actionDim).toBe(2);
    expect(demos.episodes).toHaveLength(8);
    expect(demos.tornTail).toBe(false);
    for (const ep of demos.episodes) {
      expect(ep.obs.length).toBe(ep.actions.length + 1);
      expect(ep.terminated || ep.truncated).toBe(true);
      expect(ep.rewards.at(-1)).toBe(ep.success ? 1 : 0);
      for (const a of ep.actions) for (const v of a) expect(Math.abs(v)).toBeLessThanOrEqual(1);
    }
    expect(demos.episodes.filter((e) => e.success).length).toBe(summary.successes);
    // Refuses to overwrite without being asked.
    await expect(
      collectDemos({ task: builtInTasks.reach, episodes: 1, out, noise: humanLikeExpert }),
    ).rejects.toThrow(/already exists/);
  });

  it('loses at most the episode in progress when killed with SIGKILL', async () => {
    const dir = tempDir('resrt-collect-kill-');
    const out = join(dir, 'push.jsonl');
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/collect-forever.ts', out], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    // Wait until a few episodes are on disk, then kill mid-run.
    await new Promise<void>((resolve, reject) => {
      const timer = setInterval(() => {
        if (existsSync(out) && readFileSync(out, 'utf8').split('\n').length > 5) {
          clearInterval(timer);
          resolve();
        }
      }, 50);
      child.on('exit', () => reject(new Error('collector exited early')));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    const demos = readDemos(out);
    expect(demos.episodes.length).toBeGreaterThanOrEqual(4);
    demos.episodes.forEach((ep, i) => {
      expect(ep.episode).toBe(i);
      expect(ep.obs.length).toBe(ep.actions.length + 1);
    });
  });

  it('rejects a file that is not a demonstration file', () => {
    const dir = tempDir('resrt-bad-demos-');
    const path = join(dir, 'x.jsonl');
    writeFileSync(path, '{"hello":1}\n');
    expect(() => readDemos(path)).toThrow(/expected resrt-demos version 1/);
    expect(() => readDemos(join(dir, 'missing.jsonl'))).toThrow(/does not exist/);
  });
});
