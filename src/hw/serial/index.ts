/** The serial transport: protocol codec, host-side SerialRobot, device-side server. */
export { SerialRobot } from './serial-robot.js';
export type {
  SerialRobotOptions,
  SerialRobotConfig,
  SerialRobotState,
  SerialRobotCapabilities,
  SerialRobotCounters,
  NackEvent,
} from './serial-robot.js';
export { startVirtualSerialLink } from './virtual-link.js';
export type { VirtualSerialLink, VirtualSerialLinkOptions } from './virtual-link.js';
export { serveSerialDevice } from './serial-device.js';
export type { SerialDeviceOptions, SerialDeviceServer } from './serial-device.js';
export { DeviceCore } from './device-core.js';
export type { DeviceCoreOptions, DeviceCounters } from './device-core.js';
export type { SerialLinkOptions, LinkCounters } from './link.js';
export { SerialPortTransport } from './transport.js';
export type { ByteTransport, SerialTransportKind, TransportEnd, TransportOpener } from './transport.js';
export { FdTransport } from './fd-transport.js';
export type { FdTransportOptions } from './fd-transport.js';
export { openSerialFd, closeSerialFd, openFdTransport } from './serial-fd.js';
export { ErrorCode, MessageType, Status, PROTOCOL_VERSION, SUPPORTED_VERSIONS } from './protocol.js';
export { buildHostFirmware, spawnHostFirmware, firmwareDir } from './host-firmware.js';
export type { HostFirmware, HostFirmwareArgs } from './host-firmware.js';
