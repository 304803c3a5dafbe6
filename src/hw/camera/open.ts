/** The cameras a robot config lists, opened as CameraSources (closed again if one fails). */
import { Subject, type Observable, type Subscription } from 'rxjs';
import type { CameraFrame, CameraSource, CameraSpec } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import type { RobotConfig } from '../robot-config.js';
import { FfmpegCamera } from './ffmpeg-camera.js';
import { MqttCamera } from './mqtt-camera.js';

export async function openCameras(config: RobotConfig, robotUrl: string): Promise<CameraSource[]> {
  const opened: CameraSource[] = [];
  try {
    for (const cam of config.cameras ?? []) {
      if (cam.source === 'mqtt') {
        if (!/^mqtts?:\/\//.test(robotUrl)) {
          throw new ResrtError(
            `camera "${cam.name}" reads MQTT frames but the robot is at ${robotUrl}`,
            'give the camera an ffmpeg source (/dev/videoN or a URL), or connect the robot over MQTT',
          );
        }
        opened.push(await MqttCamera.connect(robotUrl, cam.name, { width: cam.width, height: cam.height }));
      } else {
        opened.push(
          await FfmpegCamera.start({
            name: cam.name,
            input: cam.source,
            width: cam.width,
            height: cam.height,
            fps: cam.fps,
          }),
        );
      }
    }
    return opened;
  } catch (err) {
    for (const c of opened) await c.close();
    throw err;
  }
}

/**
 * A robot config's cameras for a caller that builds its environment at once (robotEnv, for the
 * session actor): each source has the config's spec now and delivers frames once openCameras has
 * opened it. If opening failed, latest() throws that error, so the environment's next reset or
 * step fails with the cause and its fix instead of a camera that merely shows nothing.
 */
export function openCamerasInBackground(config: RobotConfig, robotUrl: string): CameraSource[] {
  const configured = config.cameras ?? [];
  if (configured.length === 0) return [];
  let failure: unknown = null;
  const opening = openCameras(config, robotUrl).catch((err: unknown) => {
    failure = err;
    return null;
  });
  return configured.map(
    (cam, k) =>
      new BackgroundCamera(
        { name: cam.name, width: cam.width, height: cam.height, channels: 3, depth: false },
        opening.then((sources) => sources?.[k] ?? null),
        () => failure,
      ),
  );
}

/** One camera of openCamerasInBackground: its frames once its source is open. */
class BackgroundCamera implements CameraSource {
  readonly frame$: Observable<CameraFrame>;
  private readonly frames = new Subject<CameraFrame>();
  private source: CameraSource | null = null;
  private forwarding: Subscription | null = null;
  private closed = false;

  constructor(
    readonly spec: CameraSpec,
    private readonly opened: Promise<CameraSource | null>,
    private readonly failure: () => unknown,
  ) {
    this.frame$ = this.frames.asObservable();
    void opened.then((source) => {
      if (!source || this.closed) return;
      this.source = source;
      this.forwarding = source.frame$.subscribe((f) => this.frames.next(f));
    });
  }

  latest(): CameraFrame | null {
    const failure = this.failure();
    if (failure) throw failure;
    return this.source?.latest() ?? null;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.forwarding?.unsubscribe();
    this.frames.complete();
    // A source still opening is closed as soon as it is open.
    await (await this.opened)?.close();
  }
}
