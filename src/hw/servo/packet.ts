/**
 * What the two servo-bus protocols share: instruction and status packets, the instruction codes
 * both use, and a streaming decoder interface. Feetech SCS/STS "protocol 0" (feetech-codec.ts) and
 * Dynamixel Protocol 2.0 (dynamixel-codec.ts) implement `PacketCodec`; the bus transaction layer
 * (bus.ts) and the virtual bus (virtual/) speak only this interface.
 */

export type ProtocolName = 'feetech' | 'dynamixel';

/** Host → servo. `params` are the instruction's parameters, unstuffed. */
export interface InstructionPacket {
  id: number;
  instruction: number;
  params: Uint8Array;
}

/** Servo → host. `error` is the status packet's error byte; `params` the data, unstuffed. */
export interface StatusPacket {
  id: number;
  error: number;
  params: Uint8Array;
}

/** Instruction codes with the same value in both protocols (Feetech manual; ROBOTIS e-Manual, Protocol 2.0). */
export const Instruction = {
  Ping: 0x01,
  Read: 0x02,
  Write: 0x03,
  RegWrite: 0x04,
  Action: 0x05,
  SyncRead: 0x82,
  SyncWrite: 0x83,
} as const;

/** Every servo on the bus executes a packet sent to this id; none answers it (except sync read). */
export const BROADCAST_ID = 0xfe;

export interface DecoderCounters {
  /** Packets that passed their checksum/CRC. */
  packets: number;
  /** Framed packets whose checksum or CRC did not match (dropped). */
  checksumErrors: number;
  /** Framed packets whose length field or id cannot be right (dropped). */
  malformed: number;
  /** Bytes skipped while looking for a header. */
  discardedBytes: number;
}

/** Reassembles packets from a byte stream that arrives in arbitrary chunks. */
export interface PacketDecoder<T> {
  push(chunk: Uint8Array, onPacket: (packet: T) => void): void;
  /** Forget a partial packet (after a timeout: what is left is the tail of a lost answer). */
  reset(): void;
  readonly counters: DecoderCounters;
  /** Bytes held of a packet not yet complete. */
  readonly pending: number;
}

export interface PacketCodec {
  readonly protocol: ProtocolName;
  /** Width of addresses and lengths inside instruction parameters: 1 byte (Feetech) or 2 (Dynamixel). */
  readonly fieldBytes: 1 | 2;
  encodeInstruction(packet: InstructionPacket): Uint8Array;
  encodeStatus(packet: StatusPacket): Uint8Array;
  instructionDecoder(): PacketDecoder<InstructionPacket>;
  statusDecoder(): PacketDecoder<StatusPacket>;
  /** Wire size of a status packet carrying `dataBytes` of data (before any byte stuffing). */
  statusSize(dataBytes: number): number;
  /** Wire size of an instruction packet with `paramBytes` of parameters (before any byte stuffing). */
  instructionSize(paramBytes: number): number;
}

/** Little-endian address/length fields of the protocol's width. */
export function putField(out: number[], value: number, bytes: 1 | 2): void {
  out.push(value & 0xff);
  if (bytes === 2) out.push((value >> 8) & 0xff);
}

export function readField(params: Uint8Array, offset: number, bytes: 1 | 2): number {
  return bytes === 1 ? params[offset] : params[offset] | (params[offset + 1] << 8);
}

/** Instruction parameters for READ: address, length. */
export function readParams(codec: PacketCodec, address: number, length: number): Uint8Array {
  const out: number[] = [];
  putField(out, address, codec.fieldBytes);
  putField(out, length, codec.fieldBytes);
  return Uint8Array.from(out);
}

/** Instruction parameters for WRITE: address, data. */
export function writeParams(codec: PacketCodec, address: number, data: Uint8Array): Uint8Array {
  const out: number[] = [];
  putField(out, address, codec.fieldBytes);
  for (const b of data) out.push(b);
  return Uint8Array.from(out);
}

/** Instruction parameters for SYNC READ: address, length, then the ids that answer in this order. */
export function syncReadParams(
  codec: PacketCodec,
  address: number,
  length: number,
  ids: readonly number[],
): Uint8Array {
  const out: number[] = [];
  putField(out, address, codec.fieldBytes);
  putField(out, length, codec.fieldBytes);
  for (const id of ids) out.push(id);
  return Uint8Array.from(out);
}

/** Instruction parameters for SYNC WRITE: address, length, then (id, data) per servo. */
export function syncWriteParams(
  codec: PacketCodec,
  address: number,
  length: number,
  entries: readonly { id: number; data: Uint8Array }[],
): Uint8Array {
  const out: number[] = [];
  putField(out, address, codec.fieldBytes);
  putField(out, length, codec.fieldBytes);
  for (const e of entries) {
    if (e.data.length !== length) {
      throw new RangeError(`sync write entry for id ${e.id} has ${e.data.length} bytes, expected ${length}`);
    }
    out.push(e.id);
    for (const b of e.data) out.push(b);
  }
  return Uint8Array.from(out);
}

export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');
}
