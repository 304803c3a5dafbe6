/** Topic layout and QoS of the MQTT bridge; docs/mqtt-topics.md says why each is what it is. */
import { ResrtError } from '../../util/errors.js';

export const TOPIC_ROOT = 'resrt/v1';

export interface RobotTopics {
  /** Device → controller, binary state, QoS 0, at the device's rate. */
  state: string;
  /** Controller → device, binary command, QoS 0, never retained, MQTT 5 expiry + own deadline. */
  cmd: string;
  /** Device → all, JSON, retained, QoS 1; the Last Will publishes offline here. */
  status: string;
  /** Device → all, JSON capabilities, retained, QoS 1. */
  capabilities: string;
  /** Controller → device, binary, QoS 1: latches the device's e-stop. */
  estop: string;
  /** Controller → device, binary, QoS 1: clears a latched e-stop or watchdog fault. */
  reset: string;
  /** Controller → device, binary, QoS 1: the safe hold between episodes (watchdog disarmed). */
  hold: string;
  /** Device → all, JSON events (e-stop latched, reset done, watchdog), QoS 1, not retained. */
  events: string;
}

export const TOPIC_QOS = {
  state: 0,
  cmd: 0,
  status: 1,
  capabilities: 1,
  estop: 1,
  reset: 1,
  hold: 1,
  events: 1,
} as const satisfies Record<keyof RobotTopics, 0 | 1 | 2>;

const ROBOT_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function checkRobotId(robotId: string): string {
  if (!ROBOT_ID.test(robotId)) {
    throw new ResrtError(
      `robot id ${JSON.stringify(robotId)} is not a valid topic level`,
      'use 1-64 characters from A-Z a-z 0-9 _ . - (no "/", "+", "#" or spaces), starting with a letter or digit',
    );
  }
  return robotId;
}

export function robotTopics(robotId: string): RobotTopics {
  const base = `${TOPIC_ROOT}/${checkRobotId(robotId)}`;
  return {
    state: `${base}/state`,
    cmd: `${base}/cmd`,
    status: `${base}/status`,
    capabilities: `${base}/capabilities`,
    estop: `${base}/estop`,
    reset: `${base}/reset`,
    hold: `${base}/hold`,
    events: `${base}/events`,
  };
}

/**
 * Device -> controller, one camera's frames: binary (format version, type 5, size, seq, capture
 * time, JPEG), QoS 0, never retained (docs/mqtt-topics.md). The camera name is one topic level.
 */
export function cameraTopic(robotId: string, camera: string): string {
  if (!ROBOT_ID.test(camera)) {
    throw new ResrtError(
      `camera name ${JSON.stringify(camera)} is not a valid topic level`,
      'use 1-64 characters from A-Z a-z 0-9 _ . - (no "/", "+", "#" or spaces), starting with a letter or digit',
    );
  }
  return `${TOPIC_ROOT}/${checkRobotId(robotId)}/camera/${camera}`;
}

export const CAMERA_QOS = 0;

export interface MqttRobotUrl {
  /** Broker URL without the robot id, e.g. mqtt://127.0.0.1:1883. */
  brokerUrl: string;
  robotId: string;
  tls: boolean;
}

/** Splits `mqtt://host:port/robot-id` (or mqtts://) into the broker URL and the robot id. */
export function parseMqttRobotUrl(url: string): MqttRobotUrl {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ResrtError(`${JSON.stringify(url)} is not a URL`, 'write mqtt://host:port/robot-id');
  }
  if (parsed.protocol !== 'mqtt:' && parsed.protocol !== 'mqtts:') {
    throw new ResrtError(
      `${JSON.stringify(url)} has scheme ${parsed.protocol}, expected mqtt: or mqtts:`,
      'write mqtt://host:port/robot-id (mqtts:// for TLS)',
    );
  }
  if (!parsed.hostname) {
    throw new ResrtError(`${JSON.stringify(url)} names no broker host`, 'write mqtt://host:port/robot-id');
  }
  if (parsed.username || parsed.password) {
    throw new ResrtError(
      `${JSON.stringify(url)} carries credentials in the URL`,
      'pass username/password as options (or from the environment) so they do not end up in logs and configs',
    );
  }
  if (parsed.search || parsed.hash) {
    throw new ResrtError(`${JSON.stringify(url)} has a query or fragment`, 'write mqtt://host:port/robot-id');
  }
  const path = parsed.pathname.replace(/^\//, '');
  if (!path) {
    throw new ResrtError(
      `${JSON.stringify(url)} names no robot id`,
      'append the robot id: mqtt://host:port/robot-id',
    );
  }
  const robotId = checkRobotId(decodeURIComponent(path));
  const tls = parsed.protocol === 'mqtts:';
  const port = parsed.port || (tls ? '8883' : '1883');
  return { brokerUrl: `${parsed.protocol}//${parsed.host.replace(/:\d+$/, '')}:${port}`, robotId, tls };
}
