/**
 * A camera through an ffmpeg child process: a V4L2 device (/dev/video0), any URL ffmpeg opens
 * (rtsp://, http://, a file), or an ffmpeg lavfi source (lavfi:testsrc=size=640x480:rate=30).
 * ffmpeg scales every frame to the requested size and writes raw RGB to its stdout; each complete
 * frame becomes the latest frame (latest-frame semantics: nothing queues). The capture time is the
 * host time the frame's last byte arrived: ffmpeg's own timestamps are not on this host's clock.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { BehaviorSubject, filter, type Observable, type Subscription } from 'rxjs';
import type { CameraFrame, CameraSource, CameraSpec } from '../../types.js';
import { ResrtError } from '../../util/errors.js';

export interface FfmpegCameraOptions {
  name: string;
  /** /dev/videoN, a URL or file ffmpeg opens, or lavfi:<filter graph>. */
  input: string;
  width: number;
  height: number;
  /** Frames per second delivered (ffmpeg drops or repeats to hold it). Default 30. */
  fps?: number;
  /** Extra ffmpeg input options (before -i), e.g. ['-input_format', 'mjpeg']. */
  inputOptions?: string[];
  /** How long start() waits for the first frame. Default 10 s. */
  startTimeoutMs?: number;
}

export type CameraStatus = 'starting' | 'streaming' | 'ended';

export class FfmpegCamera implements CameraSource {
  readonly spec: CameraSpec;
  readonly frame$: Observable<CameraFrame>;
  /** Why ffmpeg stopped, when it did. */
  error: string | null = null;
  private readonly latestFrame = new BehaviorSubject<CameraFrame | null>(null);
  private readonly statusValue = new BehaviorSubject<CameraStatus>('starting');
  private child: ChildProcess | null = null;
  private seq = 0;
  private closing = false;

  private constructor(private readonly options: FfmpegCameraOptions) {
    this.spec = {
      name: options.name,
      width: options.width,
      height: options.height,
      channels: 3,
      depth: false,
    };
    this.frame$ = this.latestFrame.pipe(filter((f): f is CameraFrame => f !== null));
  }

  /** Starts ffmpeg and resolves on the first frame; the error names ffmpeg's own complaint. */
  static async start(options: FfmpegCameraOptions): Promise<FfmpegCamera> {
    const { width, height } = options;
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
      throw new ResrtError(
        `camera ${options.name}: size ${width}x${height} is invalid`,
        'give width and height in pixels, e.g. 640x480',
      );
    }
    if (spawnSync('ffmpeg', ['-version'], { stdio: 'ignore' }).status !== 0) {
      throw new ResrtError(
        `camera ${options.name} needs ffmpeg, which is not installed`,
        'install it (Debian/Ubuntu: apt-get install ffmpeg)',
      );
    }
    const camera = new FfmpegCamera(options);
    camera.spawn();
    await camera.firstFrame(options.startTimeoutMs ?? 10_000);
    return camera;
  }

  get status(): CameraStatus {
    return this.statusValue.value;
  }

  latest(): CameraFrame | null {
    return this.latestFrame.value;
  }

  async close(): Promise<void> {
    this.closing = true;
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(timer);
    }
    this.statusValue.next('ended');
    this.latestFrame.complete();
  }

  private spawn(): void {
    const o = this.options;
    const fps = o.fps ?? 30;
    const input = o.input.startsWith('lavfi:')
      ? ['-f', 'lavfi', '-i', o.input.slice('lavfi:'.length)]
      : o.input.startsWith('/dev/video')
        ? ['-f', 'v4l2', ...(o.inputOptions ?? []), '-i', o.input]
        : [...(o.inputOptions ?? []), '-i', o.input];
    const args = [
      '-hide_banner',
      '-loglevel',
      'error',
      '-nostdin',
      ...input,
      '-vf',
      `scale=${o.width}:${o.height}`,
      '-r',
      String(fps),
      '-f',
      'rawvideo',
      '-pix_fmt',
      'rgb24',
      '-',
    ];
    const child = spawn('ffmpeg', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const frameBytes = o.width * o.height * 3;
    let buffer: Buffer = Buffer.alloc(0);
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      // Only the newest complete frame matters; older complete ones in the same read are dropped.
      const complete = Math.floor(buffer.length / frameBytes);
      if (complete === 0) return;
      const start = (complete - 1) * frameBytes;
      const data = new Uint8Array(frameBytes);
      data.set(buffer.subarray(start, start + frameBytes));
      this.seq += complete;
      buffer = buffer.subarray(complete * frameBytes);
      this.statusValue.next('streaming');
      this.latestFrame.next({
        width: o.width,
        height: o.height,
        channels: 3,
        data,
        capturedAtMs: performance.now(),
        seq: this.seq - 1,
      });
    });
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-2000);
    });
    child.on('error', (err) => {
      this.error = `ffmpeg failed to start: ${err.message}`;
      this.statusValue.next('ended');
    });
    child.on('exit', (code, signal) => {
      if (!this.closing) {
        this.error = `ffmpeg exited (${signal ?? `code ${code}`}): ${stderr.trim().split('\n').slice(-2).join(' ') || 'no message'}`;
      }
      this.statusValue.next('ended');
    });
  }

  private firstFrame(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const subs: Subscription[] = [];
      const fail = async (why: string): Promise<void> => {
        subs.forEach((x) => x.unsubscribe());
        clearTimeout(timer);
        await this.close();
        reject(
          new ResrtError(
            `camera ${this.options.name} (${this.options.input}) delivered no frame: ${why}`,
            this.options.input.startsWith('/dev/video')
              ? 'check the device exists and is free (v4l2-ctl --list-devices), and that the user may read it (group video)'
              : 'check the input plays with `ffplay INPUT` (or `ffmpeg -i INPUT -frames:v 1 out.png`)',
          ),
        );
      };
      const timer = setTimeout(() => void fail(`nothing within ${timeoutMs} ms`), timeoutMs);
      const sub = this.statusValue.subscribe((s) => {
        if (s === 'streaming') {
          // (A synchronous first emission is 'starting': sub is assigned before this can run.)
          queueMicrotask(() => sub.unsubscribe());
          clearTimeout(timer);
          resolve();
        } else if (s === 'ended') void fail(this.error ?? 'ffmpeg ended');
      });
      subs.push(sub);
    });
  }
}
