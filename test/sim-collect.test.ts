import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadComposedPolicy } from '../src/cli/policy-commands.js';
import { collectDemos } from '../src/sim/collect.js';
import { loadEpisodeFrames, readDemos } from '../src/sim/demos.js';
import { humanLikeExpert } from '../src/sim/expert.js';
import { builtInTasks } from '../src/sim/registry.js';
import { resrtInProcess } from './fixtures/cli-in-process.js';
import { visuomotorOnnx } from './fixtures/visuomotor-onnx.js';
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

  it("records a camera policy's rollouts: each action is what the policy does with the recorded frames", async () => {
    const dir = tempDir('resrt-collect-base-');
    const basePath = join(dir, 'base.onnx');
    // push-cam: 12 state values and the 84 x 84 "top" camera; 3 actions.
    writeFileSync(basePath, visuomotorOnnx({ state: 12, image: 84, actions: 3, chunk: 1 }));
    const collect = (...args: string[]): Promise<string> =>
      resrtInProcess('collect', '--task', 'push-cam', ...args);
    const out = join(dir, 'rollouts.jsonl');
    const printed = await collect('--base', basePath, '--episodes', '3', '--seed', '40', '--out', out);
    expect(printed).toMatch(/wrote 3 rollouts \(\d+ steps, \d+ successful\) of push-cam/);
    const demos = readDemos(out);
    expect(demos.header.source).toBe('policy base.onnx (jitter 0, bias 0, pauses 0)');
    expect(demos.episodes.map((e) => e.seed)).toEqual([40, 41, 42]);
    const replay = await loadComposedPolicy(
      { observationSpace: { dim: 12 }, actionSpace: { dim: 3 }, cameras: demos.header.cameras },
      basePath,
    );
    let compared = 0;
    for (const ep of demos.episodes) {
      const frames = loadEpisodeFrames(demos, ep);
      replay.reset?.(ep.seed);
      for (let t = 0; t < ep.actions.length; t++) {
        const again = await replay.act(ep.obs[t], frames[t]);
        for (let i = 0; i < 3; i++)
          expect(ep.actions[t][i]).toBeCloseTo(Math.max(-1, Math.min(1, again[i])), 5);
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(30);

    // With noise asked for, the recorded actions leave the policy's.
    const noisy = join(dir, 'noisy.jsonl');
    await collect('--base', basePath, '--episodes', '1', '--seed', '40', '--jitter', '0.2', '--out', noisy);
    const first = readDemos(noisy).episodes[0];
    expect(readDemos(noisy).header.source).toMatch(/^policy base\.onnx \(jitter 0\.2,/);
    expect(first.actions[0]).not.toEqual(demos.episodes[0].actions[0]);

    // A policy for another task is refused before anything is written.
    writeFileSync(basePath, visuomotorOnnx({ state: 12, image: 84, actions: 2, chunk: 1 }));
    const wrong = join(dir, 'wrong.jsonl');
    await expect(collect('--base', basePath, '--episodes', '1', '--out', wrong)).rejects.toThrow(/action/);
    expect(existsSync(wrong) || existsSync(`${wrong}.partial`) || existsSync(`${wrong}.frames`)).toBe(false);
    await expect(collect('--residual', basePath, '--episodes', '1', '--out', wrong)).rejects.toThrow(
      /--residual needs --base/,
    );
  }, 60_000);

  it('rejects a file that is not a demonstration file', () => {
    const dir = tempDir('resrt-bad-demos-');
    const path = join(dir, 'x.jsonl');
    writeFileSync(path, '{"hello":1}\n');
    expect(() => readDemos(path)).toThrow(/expected resrt-demos version 1/);
    expect(() => readDemos(join(dir, 'missing.jsonl'))).toThrow(/does not exist/);
  });
});
