/**
 * The framing of one record in a record log (and inside a packed segment):
 *
 *   record = u32 magic 'RLR1' | u32 payload length | u32 CRC-32(type, payload) | u8 type | payload
 *
 * Payloads are of any length: nothing here (or above it) assumes a fixed record size.
 */
import { crc32 } from 'node:zlib';

export const RECORD_MAGIC = 0x31524c52; // 'RLR1'
export const RECORD_HEADER_BYTES = 13;

export interface LogRecord {
  segment: number;
  offset: number;
  type: number;
  payload: Uint8Array;
}

export function frameRecord(type: number, payload: Uint8Array): Buffer {
  const out = Buffer.alloc(RECORD_HEADER_BYTES + payload.byteLength);
  out.writeUInt32LE(RECORD_MAGIC, 0);
  out.writeUInt32LE(payload.byteLength, 4);
  out.writeUInt8(type, 12);
  out.set(payload, RECORD_HEADER_BYTES);
  out.writeUInt32LE(crc32(out.subarray(12)), 8);
  return out;
}

/**
 * Parses framed records from the start of `bytes`; returns them and the offset of the first byte
 * that does not begin an intact record (bytes.byteLength when all of it is records).
 */
export function parseRecords(bytes: Buffer, segment: number): { records: LogRecord[]; goodEnd: number } {
  const records: LogRecord[] = [];
  const H = RECORD_HEADER_BYTES;
  let o = 0;
  while (o < bytes.byteLength) {
    if (o + H > bytes.byteLength) break;
    if (bytes.readUInt32LE(o) !== RECORD_MAGIC) break;
    const len = bytes.readUInt32LE(o + 4);
    if (o + H + len > bytes.byteLength) break;
    const crc = bytes.readUInt32LE(o + 8);
    if (crc32(bytes.subarray(o + 12, o + H + len)) !== crc) break;
    records.push({
      segment,
      offset: o,
      type: bytes.readUInt8(o + 12),
      payload: new Uint8Array(bytes.subarray(o + H, o + H + len)),
    });
    o += H + len;
  }
  return { records, goodEnd: o };
}
