/** Public surface of the MQTT bridge (see docs/mqtt-topics.md). */
export { MqttRobot, type MqttRobotOptions, type MqttRobotCounters } from './mqtt-robot.js';
export {
  serveMqttDevice,
  type MqttDevice,
  type MqttDeviceOptions,
  type MqttDeviceCounters,
} from './mqtt-device.js';
export {
  startEmbeddedBroker,
  startMosquitto,
  findMosquitto,
  type RunningBroker,
} from '../../util/mqtt-broker.js';
export { FollowerPlant, type FollowerPlantOptions } from './follower-plant.js';
export { robotTopics, parseMqttRobotUrl, TOPIC_ROOT, TOPIC_QOS, type RobotTopics } from './topics.js';
export type { MqttAuthOptions, MqttTlsOptions, ProtocolPreference } from './connection.js';
export { PayloadError, PAYLOAD_FORMAT_VERSION } from './payload.js';
