/** The camera side of the CLI: `eval --video` (real ffmpeg, and PNG frames) and `collect` of push-cam. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readDemos } from '../src/sim/demos.js';
import { resrtInProcess } from './fixtures/cli-in-process.js';

const dir = mkdtempSync(join(tmpdir(), 'resrt-cli-camera-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const resrt = resrtInProcess;

const evalVideo = (task: string, out: string): Promise<string> =>
  resrt('eval', '--task', task, '--policy', 'expert', '--episodes', '1', '--video', out);

const hasFfmpeg = spawnSync('ffmpeg', ['-version'], { stdio: 'ignore' }).status === 0;

describe('resrt CLI with cameras', () => {
  it.skipIf(!hasFfmpeg && !process.env.CI)(
    'eval --video writes an MP4 of what the push-cam camera saw',
    async () => {
      const out = join(dir, 'push-cam.mp4');
      const stdout = await evalVideo('push-cam', out);
      expect(stdout).toMatch(/camera video \(\d+ frames\) written to/);
      const probe = spawnSync('ffprobe', [
        '-v',
        'error',
        '-show_entries',
        'stream=width,height,codec_name',
        '-of',
        'csv=p=0',
        out,
      ]);
      expect(probe.stdout.toString().trim()).toBe('h264,84,84');
    },
  );

  it('eval --video DIR writes PNG frames of every camera of a state-only task', async () => {
    const out = join(dir, 'reach-frames');
    const stdout = await evalVideo('reach', out);
    expect(stdout).toMatch(/written as \d+ PNG files/);
    const files = readdirSync(out);
    expect(files.length).toBeGreaterThan(2);
    expect(files[0]).toMatch(/^frame-0+\.png$/);
  });

  it('collect on push-cam records the frames beside the demonstrations', async () => {
    const out = join(dir, 'demos.jsonl');
    await resrt('collect', '--task', 'push-cam', '--episodes', '1', '--out', out, '--clean');
    expect(existsSync(`${out}.frames`)).toBe(true);
    expect(readDemos(out).header.cameras?.map((c) => c.name)).toEqual(['top']);
  });
});
