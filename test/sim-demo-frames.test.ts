/** Demonstrations with camera frames: the binary sidecar, its round trip, and its failure modes. */
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { collectDemos } from '../src/sim/collect.js';
import { loadEpisodeFrames, readDemos } from '../src/sim/demos.js';
import { MujocoEnv } from '../src/sim/env.js';
import { cleanExpert, ImperfectExpert } from '../src/sim/expert.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'resrt-demo-frames-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('demonstrations with camera frames', () => {
  it('push-cam: the privileged expert succeeds and the frames read back as rendered', async () => {
    const out = join(dir, 'push-cam.jsonl');
    const summary = await collectDemos({
      task: pushCamTask,
      episodes: 2,
      out,
      seed: 11,
      noise: cleanExpert,
      cameras: { depth: true },
    });
    expect(summary.successes).toBe(2);
    expect(existsSync(`${out}.frames`)).toBe(true);
    expect(existsSync(`${out}.partial`) || existsSync(`${out}.frames.partial`)).toBe(false);
    // No pixels in the JSON: the lines hold only states, actions and a byte range.
    const text = readFileSync(out, 'utf8');
    expect(text.length).toBeLessThan(200_000);
    const set = readDemos(out);
    expect(set.header.cameras).toEqual([{ name: 'top', width: 84, height: 84, channels: 3, depth: true }]);
    expect(set.header.framesFile).toBe('push-cam.jsonl.frames');
    expect(set.header.obsDim).toBe(12);
    // Compact: far below raw RGB + float32 depth (84*84*7 bytes per frame).
    const frames = set.episodes.reduce((s, e) => s + e.obs.length, 0);
    expect(statSync(`${out}.frames`).size).toBeLessThan(frames * 84 * 84 * 7 * 0.25);

    // Replaying the episode's seed and actions renders the same frames that were stored.
    const env = await MujocoEnv.create(pushCamTask, { cameras: { depth: true } });
    for (const ep of set.episodes.slice(1)) {
      const stored = loadEpisodeFrames(set, ep);
      expect(stored).toHaveLength(ep.obs.length);
      const replay = [env.reset({ seed: ep.seed }).frames!];
      for (const a of ep.actions) replay.push(env.step(a).frames!);
      stored.forEach((frames, t) => {
        expect(frames.top.data).toEqual(replay[t].top.data);
        expect(frames.top.seq).toBe(stored[0].top.seq + t);
        const depth = frames.top.depth!;
        const truth = replay[t].top.depth!;
        let worst = 0;
        for (let i = 0; i < depth.length; i++) worst = Math.max(worst, Math.abs(depth[i] - truth[i]));
        expect(worst).toBeLessThanOrEqual(0.0005 + 1e-6); // millimetre storage
      });
    }
    env.close();
  });

  it('names the problem when the sidecar is missing, truncated or not frames', async () => {
    const out = join(dir, 'cam.jsonl');
    await collectDemos({ task: pushCamTask, episodes: 1, out, seed: 1, noise: cleanExpert });
    const set = readDemos(out);
    const frames = `${out}.frames`;
    const bytes = readFileSync(frames);

    truncateSync(frames, bytes.length - 100);
    expect(() => loadEpisodeFrames(readDemos(out), set.episodes[0])).toThrow(
      /frames end at byte[\s\S]*fix: the frames file is corrupt/,
    );
    writeFileSync(frames, Buffer.alloc(bytes.length, 7));
    expect(() => loadEpisodeFrames(readDemos(out), set.episodes[0])).toThrow(/no frame record at byte 0/);
    rmSync(frames);
    expect(() => readDemos(out)).toThrow(/records cameras \(top\) but its frames file .* is missing/);
    // Collecting again over the file needs --overwrite, as for the JSONL.
    writeFileSync(frames, bytes);
    await expect(collectDemos({ task: pushCamTask, episodes: 1, out, noise: cleanExpert })).rejects.toThrow(
      /already exists/,
    );
  });

  it('a state-only file stays as it was: no sidecar, no camera fields', async () => {
    const out = join(dir, 'push.jsonl');
    const env = await MujocoEnv.create(pushCamTask, { cameras: { names: 'none' } });
    expect(env.cameras).toEqual([]);
    expect(env.reset({ seed: 0 }).frames).toBeUndefined();
    env.close();
    const { builtInTasks } = await import('../src/sim/registry.js');
    await collectDemos({ task: builtInTasks.push, episodes: 1, out, noise: cleanExpert });
    const header = JSON.parse(readFileSync(out, 'utf8').split('\n')[0]) as Record<string, unknown>;
    expect(header.cameras).toBeUndefined();
    expect(existsSync(`${out}.frames`)).toBe(false);
    expect(readDemos(out).framesPath).toBeUndefined();
  });

  it('the expert alone on the state-only observation cannot solve push-cam (the goal is only in the image)', async () => {
    const env = await MujocoEnv.create(pushCamTask, { cameras: { names: 'none' } });
    // The push expert reads the goal at obs[12..13]; push-cam's observation stops at 12 values.
    const blind = new ImperfectExpert(pushCamTask.expert!(), 3, cleanExpert, 0);
    const { obs } = env.reset({ seed: 0 });
    blind.reset(0);
    const action = blind.act(obs);
    expect(Array.from(action).some((v) => Number.isNaN(v))).toBe(true);
    env.close();
  });
});
