/** The cameras a robot config lists, opened as CameraSources (closed again if one fails). */
import type { CameraSource } from '../../types.js';
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
