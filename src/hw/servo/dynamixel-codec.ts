/**
 * Dynamixel Protocol 2.0 packets (ROBOTIS e-Manual, "Protocol 2.0"):
 *
 *   instruction: 0xFF 0xFF 0xFD 0x00 ID LEN_L LEN_H INSTRUCTION PARAM...        CRC_L CRC_H
 *   status:      0xFF 0xFF 0xFD 0x00 ID LEN_L LEN_H 0x55 ERROR  PARAM...        CRC_L CRC_H
 *
 * LEN counts everything after itself (instruction, parameters after stuffing, CRC). Byte stuffing:
 * wherever 0xFF 0xFF 0xFD appears from the instruction byte on, a 0xFD is inserted after it so a
 * header can never appear inside a packet. The CRC is CRC-16 with polynomial 0x8005, initial value
 * 0, most significant bit first, over every byte from the header to the last (stuffed) parameter.
 * Addresses and lengths inside the parameters are two bytes, little-endian.
 *
 * The error byte: bit 7 (0x80) is the hardware-error alert (read Hardware_Error_Status, address 70,
 * for the cause); bits 0-6 hold an error number (1 result fail, 2 instruction error, 3 CRC error,
 * 4 data range error, 5 data length error, 6 data limit error, 7 access error).
 */
import { ByteQueue } from './byte-queue.js';
import type {
  DecoderCounters,
  InstructionPacket,
  PacketCodec,
  PacketDecoder,
  StatusPacket,
} from './packet.js';

const STATUS = 0x55;
/** Longest LEN accepted from the wire; anything above is line noise. */
const MAX_LEN = 1024;

const CRC_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let b = 0; b < 8; b++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x8005) & 0xffff : (crc << 1) & 0xffff;
    t[i] = crc;
  }
  return t;
})();

export function dynamixelCrc(bytes: Uint8Array, from = 0, to = bytes.length): number {
  let crc = 0;
  for (let i = from; i < to; i++) crc = ((crc << 8) ^ CRC_TABLE[((crc >> 8) ^ bytes[i]) & 0xff]) & 0xffff;
  return crc;
}

/** Inserts 0xFD after every 0xFF 0xFF 0xFD of the original body. */
export function stuff(body: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (let k = 0; k < body.length; k++) {
    out.push(body[k]);
    if (k >= 2 && body[k] === 0xfd && body[k - 1] === 0xff && body[k - 2] === 0xff) out.push(0xfd);
  }
  return Uint8Array.from(out);
}

/** Removes the 0xFD that stuffing added after each 0xFF 0xFF 0xFD. */
export function unstuff(body: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (let k = 0; k < body.length; k++) {
    out.push(body[k]);
    if (k >= 2 && body[k] === 0xfd && body[k - 1] === 0xff && body[k - 2] === 0xff && body[k + 1] === 0xfd) {
      k++;
    }
  }
  return Uint8Array.from(out);
}

function encode(id: number, body: Uint8Array): Uint8Array {
  const stuffed = stuff(body);
  const len = stuffed.length + 2;
  const out = new Uint8Array(7 + len);
  out.set([0xff, 0xff, 0xfd, 0x00, id, len & 0xff, (len >> 8) & 0xff], 0);
  out.set(stuffed, 7);
  const crc = dynamixelCrc(out, 0, out.length - 2);
  out[out.length - 2] = crc & 0xff;
  out[out.length - 1] = crc >> 8;
  return out;
}

class DynamixelDecoder<T> implements PacketDecoder<T> {
  private readonly q = new ByteQueue();
  readonly counters: DecoderCounters = { packets: 0, checksumErrors: 0, malformed: 0, discardedBytes: 0 };

  constructor(private readonly make: (id: number, body: Uint8Array) => T | null) {}

  get pending(): number {
    return this.q.length;
  }

  reset(): void {
    this.counters.discardedBytes += this.q.length;
    this.q.clear();
  }

  private headerAt(i: number): boolean {
    const q = this.q;
    return q.at(i) === 0xff && q.at(i + 1) === 0xff && q.at(i + 2) === 0xfd && q.at(i + 3) === 0x00;
  }

  push(chunk: Uint8Array, onPacket: (packet: T) => void): void {
    const q = this.q;
    q.push(chunk);
    for (;;) {
      let skip = 0;
      while (skip + 3 < q.length && !this.headerAt(skip)) skip++;
      if (skip + 3 >= q.length) {
        // No whole header yet: keep the last three bytes, which may be its start.
        const keep = Math.min(3, q.length);
        this.counters.discardedBytes += q.length - keep;
        q.drop(q.length - keep);
        return;
      }
      if (skip > 0) {
        this.counters.discardedBytes += skip;
        q.drop(skip);
      }
      if (q.length < 7) return;
      const id = q.at(4);
      const len = q.at(5) | (q.at(6) << 8);
      if (id === 0xfd || id === 0xff || len < 3 || len > MAX_LEN) {
        this.counters.malformed++;
        this.counters.discardedBytes++;
        q.drop(1);
        continue;
      }
      const total = 7 + len;
      if (q.length < total) return;
      const frame = q.view(0, total);
      const crc = frame[total - 2] | (frame[total - 1] << 8);
      if (dynamixelCrc(frame, 0, total - 2) !== crc) {
        this.counters.checksumErrors++;
        this.counters.discardedBytes++;
        q.drop(1);
        continue;
      }
      const packet = this.make(id, unstuff(frame.subarray(7, total - 2)));
      q.drop(total);
      if (packet === null) {
        this.counters.malformed++;
        continue;
      }
      this.counters.packets++;
      onPacket(packet);
    }
  }
}

export const dynamixelCodec: PacketCodec = {
  protocol: 'dynamixel',
  fieldBytes: 2,
  encodeInstruction: (p) => {
    const body = new Uint8Array(1 + p.params.length);
    body[0] = p.instruction;
    body.set(p.params, 1);
    return encode(p.id, body);
  },
  encodeStatus: (p) => {
    const body = new Uint8Array(2 + p.params.length);
    body[0] = STATUS;
    body[1] = p.error;
    body.set(p.params, 2);
    return encode(p.id, body);
  },
  instructionDecoder: () =>
    new DynamixelDecoder<InstructionPacket>((id, body) =>
      body.length < 1 || body[0] === STATUS ? null : { id, instruction: body[0], params: body.slice(1) },
    ),
  statusDecoder: () =>
    new DynamixelDecoder<StatusPacket>((id, body) =>
      body.length < 2 || body[0] !== STATUS || id === 0xfe
        ? null
        : { id, error: body[1], params: body.slice(2) },
    ),
  statusSize: (dataBytes) => dataBytes + 11,
  instructionSize: (paramBytes) => paramBytes + 10,
};

/** Error numbers of bits 0-6 of a Dynamixel status packet's error byte. */
export const DYNAMIXEL_STATUS_ERRORS: Record<number, string> = {
  1: 'result fail',
  2: 'instruction error',
  3: 'CRC error',
  4: 'data range error',
  5: 'data length error',
  6: 'data limit error',
  7: 'access error',
};

/** Bit 7 of the error byte: read Hardware_Error_Status (70) for the cause. */
export const DYNAMIXEL_ALERT = 0x80;
