/**
 * Constants of the resrt serial protocol, versions 1 and 2 (docs/serial-protocol.md). Mirrors
 * firmware-bridge/src/resrt_proto.h; the codec tests check both produce the same bytes.
 */

/** The highest version this implementation speaks. */
export const PROTOCOL_VERSION = 2;
/** Versions this implementation speaks, highest first. */
export const SUPPORTED_VERSIONS: readonly number[] = [2, 1];
/**
 * The header version a device writes before negotiation, and a host on its HELLO: every peer
 * reads it, and the frames of that phase (HELLO, HEARTBEAT, ACK, NACK) are alike in all versions.
 */
export const HANDSHAKE_VERSION = 1;

export const HEADER_SIZE = 5;
export const CRC_SIZE = 2;
export const MIN_FRAME = HEADER_SIZE + CRC_SIZE;

/** Per-version limits: a frame is header + payload + CRC; counts are per field (D, J, S). */
export interface VersionLimits {
  maxFrame: number;
  maxPayload: number;
  maxCount: number;
}
const V1: VersionLimits = { maxFrame: 256, maxPayload: 249, maxCount: 16 };
const V2: VersionLimits = { maxFrame: 1536, maxPayload: 1529, maxCount: 64 };

/** Limits of a protocol version, or null for one this implementation does not speak. */
export function versionLimits(version: number): VersionLimits | null {
  return version === 1 ? V1 : version === 2 ? V2 : null;
}

/** Largest decoded frame of any version spoken here (receive buffers are this big). */
export const MAX_FRAME = V2.maxFrame;
export const MAX_PAYLOAD = V2.maxPayload;
/** COBS adds one byte per started block of 254 (the wire adds the 0x00 delimiter). */
export const MAX_ENCODED = MAX_FRAME + Math.ceil(MAX_FRAME / 254);

/** Largest action dimension, joint and sensor count of any version spoken here. */
export const MAX_DIM = V2.maxCount;
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
  /** Version 2. */
  Hold: 0x0b,
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
  /** Version 2: the watchdog fired in hold mode (not latched). */
  WatchdogHold: 0x0040,
} as const;

/** What the device's watchdog does when commands stop (CAPABILITIES from version 2). */
export type WatchdogMode = 'latch' | 'hold';
export const WATCHDOG_MODE_CODE: Record<WatchdogMode, number> = { latch: 0, hold: 1 };

/** True when a device of this shape can speak this version (its STATE fits one frame). */
export function stateFits(version: number, joints: number, sensors: number, dim: number): boolean {
  const l = versionLimits(version);
  if (l === null) return false;
  return (
    joints <= l.maxCount &&
    sensors <= l.maxCount &&
    dim <= l.maxCount &&
    STATE_FIXED + 12 * joints + 4 * sensors + 4 * dim <= l.maxPayload
  );
}

/** RFC 1982 serial-number comparison on 16 bits: a is newer than b. */
export function seqNewer(a: number, b: number): boolean {
  const diff = (a - b) & 0xffff;
  return diff !== 0 && diff < 0x8000;
}
