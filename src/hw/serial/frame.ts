/** One frame: 5-byte header, payload, CRC-16 (little-endian) over both; COBS on the wire. */
import { ResrtError } from '../../util/errors.js';
import { cobsEncode } from './cobs.js';
import { crc16 } from './crc.js';
import { CRC_SIZE, HEADER_SIZE, MAX_FRAME, MAX_PAYLOAD, MIN_FRAME, versionLimits } from './protocol.js';

export interface Frame {
  version: number;
  type: number;
  /** Sender's 16-bit frame counter. */
  seq: number;
  flags: number;
  payload: Uint8Array;
}

/**
 * Header + payload + CRC, before COBS. The payload limit is that of the frame's version (a
 * version this implementation does not speak gets the largest, for fault-injection tests).
 */
export function serializeFrame(frame: Frame): Uint8Array {
  const max = versionLimits(frame.version)?.maxPayload ?? MAX_PAYLOAD;
  if (frame.payload.length > max) {
    throw new ResrtError(
      `serial frame payload of ${frame.payload.length} bytes exceeds the ${max}-byte limit of protocol version ${frame.version}`,
      'send fewer values per message (see docs/serial-protocol.md, "Limits")',
    );
  }
  const n = HEADER_SIZE + frame.payload.length;
  const raw = new Uint8Array(n + CRC_SIZE);
  raw[0] = frame.version & 0xff;
  raw[1] = frame.type & 0xff;
  raw[2] = frame.seq & 0xff;
  raw[3] = (frame.seq >> 8) & 0xff;
  raw[4] = frame.flags & 0xff;
  raw.set(frame.payload, HEADER_SIZE);
  const crc = crc16(raw, 0, n);
  raw[n] = crc & 0xff;
  raw[n + 1] = crc >> 8;
  return raw;
}

/** COBS-encodes a serialized frame and appends the 0x00 delimiter. */
export function wireFromRaw(raw: Uint8Array): Uint8Array {
  return cobsEncode(raw, 1);
}

export function encodeFrame(frame: Frame): Uint8Array {
  return wireFromRaw(serializeFrame(frame));
}

export type ParseResult = { ok: true; frame: Frame } | { ok: false; error: 'crc' | 'length' };

/** Checks length and CRC of a decoded frame raw[0, n); copies the payload out. */
export function parseFrame(raw: Uint8Array, n: number): ParseResult {
  if (n < MIN_FRAME || n > MAX_FRAME) return { ok: false, error: 'length' };
  const want = raw[n - 2] | (raw[n - 1] << 8);
  if (crc16(raw, 0, n - CRC_SIZE) !== want) return { ok: false, error: 'crc' };
  return {
    ok: true,
    frame: {
      version: raw[0],
      type: raw[1],
      seq: raw[2] | (raw[3] << 8),
      flags: raw[4],
      payload: raw.slice(HEADER_SIZE, n - CRC_SIZE),
    },
  };
}
