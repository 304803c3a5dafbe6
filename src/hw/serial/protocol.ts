/**
 * Constants of the resrt serial protocol, version 1 (docs/serial-protocol.md). Mirrors
 * firmware-bridge/src/resrt_proto.h; the codec tests check both produce the same bytes.
 */

export const PROTOCOL_VERSION = 1;
/** Versions this host implementation speaks, highest first. */
export const SUPPORTED_VERSIONS: readonly number[] = [1];

export const HEADER_SIZE = 5;
export const CRC_SIZE = 2;
/** Largest decoded frame: header + payload + CRC. */
export const MAX_FRAME = 256;
export const MAX_PAYLOAD = MAX_FRAME - HEADER_SIZE - CRC_SIZE;
export const MIN_FRAME = HEADER_SIZE + CRC_SIZE;
/** COBS adds one byte per started block of 254 (the wire adds the 0x00 delimiter). */
export const MAX_ENCODED = MAX_FRAME + Math.ceil(MAX_FRAME / 254);

export const MAX_DIM = 16;
export const MAX_JOINTS = 16;
export const MAX_SENSORS = 16;
export const MAX_NAME = 24;
export const MAX_FW = 16;
export const MAX_VERSIONS = 8;
export const MAX_REASON = 64;
export const STATE_FIXED = 15;

export const WATCHDOG_MIN_MS = 10;
export const WATCHDOG_MAX_MS = 60_000;

export const MessageType = {
  Hello: 0x01,
  Capabilities: 0x02,
  State: 0x03,
  Command: 0x04,
  Heartbeat: 0x05,
  Estop: 0x06,
  Reset: 0x07,
  Ack: 0x08,
  Nack: 0x09,
  Config: 0x0a,
} as const;
export type MessageTypeCode = (typeof MessageType)[keyof typeof MessageType];

export const FLAG_ACK_REQ = 0x01;

export const ErrorCode = {
  BadCrc: 1,
  BadLength: 2,
  WrongDimension: 3,
  BadVersion: 4,
  StaleSequence: 5,
  Estopped: 6,
  NonFinite: 7,
  UnknownType: 8,
  NotNegotiated: 9,
  BadConfig: 10,
  StaleHeartbeat: 11,
  Faulted: 12,
} as const;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

const errorNames = new Map<number, string>(Object.entries(ErrorCode).map(([k, v]) => [v, k]));
const typeNames = new Map<number, string>(Object.entries(MessageType).map(([k, v]) => [v, k]));

export function errorName(code: number): string {
  return errorNames.get(code) ?? `error ${code}`;
}

export function typeName(code: number): string {
  return typeNames.get(code) ?? `type 0x${code.toString(16)}`;
}

export const Status = {
  Estop: 0x0001,
  Watchdog: 0x0002,
  Clamped: 0x0004,
  SafeHold: 0x0008,
  Expired: 0x0010,
  Negotiated: 0x0020,
} as const;

/** True when a STATE of this shape fits in one frame. */
export function stateFits(joints: number, sensors: number, dim: number): boolean {
  return (
    joints <= MAX_JOINTS &&
    sensors <= MAX_SENSORS &&
    dim <= MAX_DIM &&
    STATE_FIXED + 12 * joints + 4 * sensors + 4 * dim <= MAX_PAYLOAD
  );
}

/** RFC 1982 serial-number comparison on 16 bits: a is newer than b. */
export function seqNewer(a: number, b: number): boolean {
  const diff = (a - b) & 0xffff;
  return diff !== 0 && diff < 0x8000;
}
