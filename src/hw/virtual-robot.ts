/**
 * `resrt virtual-robot`: a MuJoCo task served over the serial protocol (a socat pseudo-terminal
 * pair) or MQTT, with the robot config a client needs to drive it like real hardware.
 */
import type { CameraStream } from '../sim/camera/sim-cameras.js';
import type { AnyTask } from '../sim/registry.js';
import type { CameraFrame, CameraFrames } from '../types.js';
import { type CameraPublisher, publishMqttCamera } from './camera/mqtt-camera.js';
import { serveMqttDevice } from './mqtt/mqtt-device.js';
import type { RobotConfig } from './robot-config.js';
import { startVirtualSerialLink } from './serial/virtual-link.js';
import { VirtualPlant, virtualRobotConfig } from './virtual-plant.js';

export interface VirtualRobotOptions {
  /** 'serial', or an MQTT broker URL (mqtt://host:port). */
  transport: 'serial' | { brokerUrl: string; robotId?: string };
  seed?: number;
  resetDelayMs?: number;
  /** Over MQTT: camera streams at sizes of their own, published for a success detector. */
  detectorCameras?: readonly CameraStream[];
}

export interface VirtualRobot {
  plant: VirtualPlant;
  /** What a client passes as --robot: serial:/dev/pts/N or mqtt://host:port/robot-id. */
  robotUrl: string;
  config: RobotConfig;
  close(): Promise<void>;
}

export async function startVirtualRobot(task: AnyTask, options: VirtualRobotOptions): Promise<VirtualRobot> {
  const plant = await VirtualPlant.create(task, {
    seed: options.seed,
    resetDelayMs: options.resetDelayMs,
    detectorCameras: options.detectorCameras,
  });
  if (options.transport === 'serial') {
    // Like the firmware's default, the watchdog latches; between episodes the host holds the
    // robot (HOLD), so it fires only when a running episode's commands stop.
    const watchdog = { onTimeout: 'latch', timeoutMs: 500 } as const;
    const link = await startVirtualSerialLink(plant, {
      watchdogMs: watchdog.timeoutMs,
      watchdogMode: watchdog.onTimeout,
    });
    const robotUrl = `serial:${link.hostPath}`;
    return {
      plant,
      robotUrl,
      config: { ...virtualRobotConfig(plant, robotUrl), watchdog },
      async close() {
        await link.close();
        plant.close();
      },
    };
  }
  const robotId = options.transport.robotId ?? `virtual-${task.name}`;
  const robotUrl = `${options.transport.brokerUrl.replace(/\/$/, '')}/${robotId}`;
  const watchdog = { onTimeout: 'hold', timeoutMs: 250 } as const;
  const device = await serveMqttDevice(robotUrl, plant, {
    watchdogMs: watchdog.timeoutMs,
    watchdogMode: watchdog.onTimeout,
    stateOnCommand: true,
  });
  // The task's cameras go out as a real camera node would send them: JPEG frames on their topics.
  const cameras: CameraPublisher[] = [];
  const specs = [...plant.cameras.specs, ...plant.cameras.auxSpecs];
  // One render per period serves every camera of the plant.
  let shot: { atMs: number; frames: CameraFrames | undefined } = { atMs: -Infinity, frames: undefined };
  const grab = (name: string): CameraFrame | undefined => {
    if (performance.now() - shot.atMs > 1000 / plant.capabilities.rateHz / 2) {
      shot = { atMs: performance.now(), frames: plant.captureFrames() };
    }
    return shot.frames?.[name];
  };
  for (const spec of specs) {
    cameras.push(
      await publishMqttCamera(robotUrl, spec.name, () => grab(spec.name), {
        rateHz: plant.capabilities.rateHz,
      }),
    );
  }
  return {
    plant,
    robotUrl,
    config: { ...virtualRobotConfig(plant, robotUrl), watchdog },
    async close() {
      for (const c of cameras) await c.close();
      await device.close();
      plant.close();
    },
  };
}
