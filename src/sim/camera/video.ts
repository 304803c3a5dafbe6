/**
 * `resrt eval --video FILE`: what each camera saw, cameras side by side, one video frame per
 * control step. MP4 (H.264) or GIF through ffmpeg when it is installed; otherwise, or for a path
 * without those extensions, numbered PNG frames in a directory.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import type { CameraFrames } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { encodeRgbPng, type RgbImage } from '../../util/image-codec.js';

export function ffmpegAvailable(): boolean {
  return spawnSync('ffmpeg', ['-version'], { stdio: 'ignore' }).status === 0;
}

/** The cameras of one step side by side, in name order, on a black background. */
export function tileFrames(frames: CameraFrames): RgbImage {
  const list = Object.keys(frames)
    .sort()
    .map((k) => frames[k]);
  if (list.length === 0) throw new ResrtError('no camera frames to tile', 'give the task a camera');
  const width = list.reduce((s, f) => s + f.width, 0);
  const height = Math.max(...list.map((f) => f.height));
  const data = new Uint8Array(width * height * 3);
  let x0 = 0;
  for (const f of list) {
    for (let y = 0; y < f.height; y++)
      data.set(f.data.subarray(y * f.width * 3, (y + 1) * f.width * 3), (y * width + x0) * 3);
    x0 += f.width;
  }
  return { width, height, data };
}

export interface VideoResult {
  kind: 'mp4' | 'gif' | 'png';
  /** The file written, or the directory of PNG frames. */
  path: string;
  frames: number;
}

export async function writeVideo(
  path: string,
  images: readonly RgbImage[],
  fps: number,
): Promise<VideoResult> {
  if (images.length === 0) throw new ResrtError('no frames were recorded', 'run at least one step');
  const { width, height } = images[0];
  if (images.some((i) => i.width !== width || i.height !== height)) {
    throw new ResrtError('video frames differ in size', 'keep every camera at one size');
  }
  const ext = extname(path).toLowerCase();
  const wantsVideo = ext === '.mp4' || ext === '.gif';
  if (wantsVideo && ffmpegAvailable()) {
    await encodeWithFfmpeg(path, ext === '.gif' ? 'gif' : 'mp4', images, fps);
    return { kind: ext === '.gif' ? 'gif' : 'mp4', path, frames: images.length };
  }
  const dir = wantsVideo ? `${path.slice(0, -ext.length)}-frames` : path;
  mkdirSync(dir, { recursive: true });
  const digits = String(images.length - 1).length;
  images.forEach((img, i) =>
    writeFileSync(join(dir, `frame-${String(i).padStart(digits, '0')}.png`), encodeRgbPng(img)),
  );
  return { kind: 'png', path: dir, frames: images.length };
}

function encodeWithFfmpeg(
  path: string,
  kind: 'mp4' | 'gif',
  images: readonly RgbImage[],
  fps: number,
): Promise<void> {
  const { width, height } = images[0];
  const input = [
    '-f',
    'rawvideo',
    '-pix_fmt',
    'rgb24',
    '-s',
    `${width}x${height}`,
    '-r',
    String(fps),
    '-i',
    '-',
  ];
  // H.264 in yuv420p needs even sizes; GIF gets a palette made from its own frames.
  const output =
    kind === 'mp4'
      ? [
          '-vf',
          'pad=ceil(iw/2)*2:ceil(ih/2)*2',
          '-c:v',
          'libx264',
          '-pix_fmt',
          'yuv420p',
          '-crf',
          '18',
          '-movflags',
          '+faststart',
        ]
      : ['-vf', 'split[a][b];[a]palettegen[p];[b][p]paletteuse'];
  return new Promise((resolve, reject) => {
    const child = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', ...input, ...output, path], {
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err) =>
      reject(
        new ResrtError(
          `ffmpeg failed to start: ${err.message}`,
          'install ffmpeg (apt-get install ffmpeg) or write PNG frames (--video DIR)',
        ),
      ),
    );
    child.on('close', (code) => {
      if (code === 0) resolve();
      else
        reject(
          new ResrtError(
            `ffmpeg could not write ${path}: ${stderr.trim().split('\n').slice(-2).join(' ') || `exit ${code}`}`,
            'check the path is writable; or write PNG frames instead (--video DIR)',
          ),
        );
    });
    child.stdin.on('error', () => {
      /* ffmpeg exited early; its exit code and stderr say why. */
    });
    for (const img of images) child.stdin.write(img.data);
    child.stdin.end();
  });
}
