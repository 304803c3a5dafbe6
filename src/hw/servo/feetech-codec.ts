/**
 * Feetech SCS/STS serial-bus packets, "protocol 0" (STS/SMS series, little-endian data), as the
 * Feetech communication manual and its scservo SDK define them:
 *
 *   instruction: 0xFF 0xFF ID LEN INSTRUCTION PARAM... CHECKSUM
 *   status:      0xFF 0xFF ID LEN ERROR       PARAM... CHECKSUM
 *
 * LEN = number of parameters + 2; CHECKSUM = ~(ID + LEN + INSTRUCTION/ERROR + PARAMs) & 0xFF.
 * Addresses and lengths inside the parameters are one byte each. The error byte's bits are
 * voltage (0x01), angle sensor (0x02), overheat (0x04), over-current (0x08) and overload (0x20); a
 * status byte above 0x7F cannot be right and is treated as a corrupt packet.
 */
import { ByteQueue } from './byte-queue.js';
import type {
  DecoderCounters,
  InstructionPacket,
  PacketCodec,
  PacketDecoder,
  StatusPacket,
} from './packet.js';

function checksum(bytes: Uint8Array, from: number, to: number): number {
  let sum = 0;
  for (let i = from; i < to; i++) sum += bytes[i];
  return ~sum & 0xff;
}

function encode(id: number, code: number, params: Uint8Array): Uint8Array {
  if (params.length > 253) {
    throw new RangeError(`a Feetech packet carries at most 253 parameter bytes, got ${params.length}`);
  }
  const out = new Uint8Array(params.length + 6);
  out[0] = 0xff;
  out[1] = 0xff;
  out[2] = id;
  out[3] = params.length + 2;
  out[4] = code;
  out.set(params, 5);
  out[out.length - 1] = checksum(out, 2, out.length - 1);
  return out;
}

class FeetechDecoder<T> implements PacketDecoder<T> {
  private readonly q = new ByteQueue();
  readonly counters: DecoderCounters = { packets: 0, checksumErrors: 0, malformed: 0, discardedBytes: 0 };

  constructor(private readonly make: (id: number, code: number, params: Uint8Array) => T | null) {}

  get pending(): number {
    return this.q.length;
  }

  reset(): void {
    this.counters.discardedBytes += this.q.length;
    this.q.clear();
  }

  push(chunk: Uint8Array, onPacket: (packet: T) => void): void {
    const q = this.q;
    q.push(chunk);
    for (;;) {
      // Find the 0xFF 0xFF header.
      let skip = 0;
      while (skip + 1 < q.length && !(q.at(skip) === 0xff && q.at(skip + 1) === 0xff)) skip++;
      if (skip + 1 >= q.length) {
        // No header yet; a trailing 0xFF may be its first byte.
        const keep = q.length > 0 && q.at(q.length - 1) === 0xff ? 1 : 0;
        this.counters.discardedBytes += q.length - keep;
        q.drop(q.length - keep);
        return;
      }
      if (skip > 0) {
        this.counters.discardedBytes += skip;
        q.drop(skip);
      }
      if (q.length < 4) return;
      const id = q.at(2);
      if (id === 0xff) {
        // 0xFF 0xFF 0xFF: the header starts one byte later.
        this.counters.discardedBytes++;
        q.drop(1);
        continue;
      }
      const len = q.at(3);
      if (len < 2) {
        this.counters.malformed++;
        this.counters.discardedBytes++;
        q.drop(1);
        continue;
      }
      const total = len + 4;
      if (q.length < total) return;
      const frame = q.view(0, total);
      if (checksum(frame, 2, total - 1) !== frame[total - 1]) {
        // Drop one byte only: the real packet may begin inside the corrupt one.
        this.counters.checksumErrors++;
        this.counters.discardedBytes++;
        q.drop(1);
        continue;
      }
      const packet = this.make(id, frame[4], frame.slice(5, total - 1));
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

export const feetechCodec: PacketCodec = {
  protocol: 'feetech',
  fieldBytes: 1,
  encodeInstruction: (p) => encode(p.id, p.instruction, p.params),
  encodeStatus: (p) => encode(p.id, p.error, p.params),
  instructionDecoder: () =>
    new FeetechDecoder<InstructionPacket>((id, instruction, params) => ({ id, instruction, params })),
  statusDecoder: () =>
    new FeetechDecoder<StatusPacket>((id, error, params) =>
      // A servo never answers as broadcast, and bit 7 of the error byte is never set.
      id >= 0xfe || error > 0x7f ? null : { id, error, params },
    ),
  statusSize: (dataBytes) => dataBytes + 6,
  instructionSize: (paramBytes) => paramBytes + 6,
};

/** Names of the bits of a Feetech status packet's error byte. */
export const FEETECH_STATUS_ERRORS: readonly [number, string][] = [
  [0x01, 'input voltage'],
  [0x02, 'angle sensor'],
  [0x04, 'overheat'],
  [0x08, 'over-current'],
  [0x20, 'overload'],
];
