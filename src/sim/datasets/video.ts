/**
 * Camera streams of LeRobot datasets through ffmpeg: a segment of an MP4 decoded to RGB frames, and
 * RGB frames encoded the way LeRobot records them (AV1 through libsvtav1, yuv420p, GOP 2, CRF 30).
 * SVT-AV1 takes frames of at least 64×64 with even sides; other frames go to libaom-av1 (4:4:4 when
 * a side is odd), and an ffmpeg without an AV1 encoder writes H.264 (LeRobot decodes both).
 */
import { spawn, spawnSync } from 'node:child_process';
import { ResrtError } from '../../util/errors.js';

const INSTALL = 'install ffmpeg (apt-get install ffmpeg)';

export interface VideoStream {
  codec: string;
  width: number;
  height: number;
  /** Frames per second (the stream's average rate). */
  fps: number;
  pixFmt: string;
}

/** The first video stream of a file, from ffprobe. */
export function probeVideo(path: string): VideoStream {
  const r = spawnSync(
    'ffprobe',
    [
      '-v',
      'error',
      '-select_streams',
      'v:0',
      '-show_entries',
      'stream=codec_name,width,height,avg_frame_rate,r_frame_rate,pix_fmt',
      '-of',
      'json',
      path,
    ],
    { encoding: 'utf8' },
  );
  if (r.error) throw new ResrtError(`ffprobe failed to start: ${r.error.message}`, INSTALL);
  if (r.status !== 0) {
    throw new ResrtError(
      `cannot read video ${path}: ${lastLine(r.stderr)}`,
      'check that the file is a complete MP4 (an interrupted download leaves a torn one)',
    );
  }
  const s = (JSON.parse(r.stdout) as { streams?: Record<string, string | number>[] }).streams?.[0];
  if (!s) throw new ResrtError(`${path} has no video stream`, 'point the dataset at its camera videos');
  const rate = (v: unknown): number => {
    const [n, d] = String(v ?? '0/1')
      .split('/')
      .map(Number);
    return d ? n / d : 0;
  };
  return {
    codec: String(s.codec_name),
    width: Number(s.width),
    height: Number(s.height),
    fps: rate(s.avg_frame_rate) || rate(s.r_frame_rate),
    pixFmt: String(s.pix_fmt),
  };
}

/**
 * `count` RGB frames (height × width × 3 each) starting with the frame shown at `fromS` seconds.
 * The seek lands half a frame early and ffmpeg drops the frames before it, so rounding in the
 * container's time base cannot skip the first frame.
 */
export async function decodeFrames(
  path: string,
  stream: VideoStream,
  fromS: number,
  count: number,
): Promise<Uint8Array[]> {
  const frameBytes = stream.width * stream.height * 3;
  const seek = Math.max(0, fromS - 0.5 / stream.fps);
  const args = ['-hide_banner', '-loglevel', 'error', '-nostdin'];
  if (seek > 0) args.push('-ss', seek.toFixed(6));
  args.push('-i', path, '-map', '0:v:0', '-frames:v', String(count), '-f', 'rawvideo');
  args.push('-pix_fmt', 'rgb24', '-fps_mode', 'passthrough', 'pipe:1');
  const out = await run(args);
  const got = Math.floor(out.length / frameBytes);
  if (got < count) {
    throw new ResrtError(
      `${path} holds ${got} frames from ${fromS.toFixed(3)} s, the episode needs ${count}`,
      "the dataset's videos and its episode metadata disagree; download the dataset again",
    );
  }
  return Array.from({ length: count }, (_, k) => out.subarray(k * frameBytes, (k + 1) * frameBytes));
}

export interface VideoCodecChoice {
  /** ffmpeg encoder name. */
  encoder: string;
  /** What info.json records (video.codec). */
  codec: 'av1' | 'h264';
  pixFmt: 'yuv420p' | 'yuv444p';
  args: string[];
}

let encoderList: Set<string> | null = null;

function encoders(): Set<string> {
  if (encoderList) return encoderList;
  const r = spawnSync('ffmpeg', ['-hide_banner', '-encoders'], { encoding: 'utf8' });
  if (r.error) throw new ResrtError(`ffmpeg failed to start: ${r.error.message}`, INSTALL);
  encoderList = new Set(
    r.stdout
      .split('\n')
      .map((l) => /^\s*V\S*\s+(\S+)/.exec(l)?.[1])
      .filter((n): n is string => Boolean(n)),
  );
  return encoderList;
}

/** The encoder for frames of this size: LeRobot's choice where ffmpeg has it. */
export function chooseEncoder(width: number, height: number): VideoCodecChoice {
  const have = encoders();
  const even = width % 2 === 0 && height % 2 === 0;
  const pixFmt = even ? 'yuv420p' : 'yuv444p';
  if (have.has('libsvtav1') && even && width >= 64 && height >= 64) {
    return {
      encoder: 'libsvtav1',
      codec: 'av1',
      pixFmt,
      args: ['-c:v', 'libsvtav1', '-pix_fmt', pixFmt, '-g', '2', '-crf', '30'],
    };
  }
  if (have.has('libaom-av1')) {
    return {
      encoder: 'libaom-av1',
      codec: 'av1',
      pixFmt,
      args: [
        '-c:v',
        'libaom-av1',
        '-cpu-used',
        '8',
        '-row-mt',
        '1',
        '-pix_fmt',
        pixFmt,
        '-g',
        '2',
        '-crf',
        '30',
      ],
    };
  }
  if (have.has('libx264')) {
    return {
      encoder: 'libx264',
      codec: 'h264',
      pixFmt,
      args: ['-c:v', 'libx264', '-pix_fmt', pixFmt, '-g', '2', '-crf', '18'],
    };
  }
  throw new ResrtError(
    'this ffmpeg has no AV1 (libsvtav1, libaom-av1) or H.264 (libx264) encoder',
    "install Debian's ffmpeg (apt-get install ffmpeg), which has them",
  );
}

/** Writes RGB frames of one size into one MP4, streamed to ffmpeg as they come. */
export class VideoWriter {
  private readonly child;
  private readonly done: Promise<void>;
  frames = 0;

  private constructor(
    readonly path: string,
    readonly width: number,
    readonly height: number,
    readonly choice: VideoCodecChoice,
    fps: number,
  ) {
    const args = ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'rawvideo', '-pix_fmt', 'rgb24'];
    args.push('-s', `${width}x${height}`, '-r', String(fps), '-i', 'pipe:0', ...choice.args, path);
    this.child = spawn('ffmpeg', args, { stdio: ['pipe', 'ignore', 'pipe'] });
    this.done = collect(this.child, args);
    // close() reports a failure; until then it must not count as unhandled.
    this.done.catch(() => undefined);
  }

  static open(path: string, width: number, height: number, fps: number): VideoWriter {
    return new VideoWriter(path, width, height, chooseEncoder(width, height), fps);
  }

  async write(rgb: Uint8Array): Promise<void> {
    if (rgb.length !== this.width * this.height * 3) {
      throw new ResrtError(
        `a ${rgb.length}-byte frame for a ${this.width}×${this.height} RGB video`,
        'keep every frame of a camera at one size',
      );
    }
    this.frames++;
    if (!this.child.stdin.write(rgb)) {
      await new Promise<void>((resolve) => {
        this.child.stdin.once('drain', resolve);
        this.child.once('close', resolve);
      });
    }
  }

  async close(): Promise<void> {
    this.child.stdin.end();
    await this.done;
  }
}

/** Runs ffmpeg and returns what it wrote to stdout. */
async function run(args: string[]): Promise<Buffer> {
  const child = spawn('ffmpeg', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  child.stdout!.on('data', (d: Buffer) => out.push(d));
  await collect(child, args);
  return Buffer.concat(out);
}

/** Resolves when ffmpeg exits 0; rejects with its last error line otherwise. */
function collect(child: ReturnType<typeof spawn>, args: string[]): Promise<void> {
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin?.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    child.once('error', (err) => reject(new ResrtError(`ffmpeg failed to start: ${err.message}`, INSTALL)));
    child.once('close', (code) => {
      if (code === 0) resolve();
      else
        reject(
          new ResrtError(
            `ffmpeg ${args.includes('pipe:0') ? 'encoding' : 'decoding'} failed (exit ${code}): ${lastLine(stderr)}`,
            'check that the video is complete and that ffmpeg is the Debian build (apt-get install ffmpeg)',
          ),
        );
    });
  });
}

function lastLine(s: string): string {
  return (
    s
      .trim()
      .split('\n')
      .filter((l) => !/^Svt\[info\]/.test(l))
      .pop() ?? 'no message'
  );
}
