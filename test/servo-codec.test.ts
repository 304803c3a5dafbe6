// Servo-bus packets byte for byte: Feetech protocol 0 checksums, Dynamixel 2.0 CRC-16 and byte
// stuffing (vectors from the vendors' manuals), streaming decoders under noise and chunking,
// sign-magnitude and two's-complement fields, and the calibration's normalization.
import { describe, expect, it } from 'vitest';
import { dynamixelCodec, dynamixelCrc, stuff, unstuff } from '../src/hw/servo/dynamixel-codec.js';
import { feetechCodec } from '../src/hw/servo/feetech-codec.js';
import { decodeRegister, encodeRegister, STS3215, XL330_M288 } from '../src/hw/servo/models.js';
import {
  Instruction,
  readParams,
  syncReadParams,
  syncWriteParams,
  type StatusPacket,
} from '../src/hw/servo/packet.js';
import { denormalize, normalize, type JointCalibration } from '../src/hw/servo/calibration.js';
import { parseServoUrl } from '../src/hw/servo/servo-config.js';

const bytes = (s: string): Uint8Array => Uint8Array.from(s.split(' ').map((h) => parseInt(h, 16)));
const hexOf = (b: Uint8Array): string =>
  Array.from(b, (x) => x.toString(16).padStart(2, '0').toUpperCase()).join(' ');

function decodeAll(
  codec: typeof feetechCodec,
  wire: Uint8Array,
  chunk = 1,
): { packets: StatusPacket[]; d: ReturnType<typeof codec.statusDecoder> } {
  const d = codec.statusDecoder();
  const packets: StatusPacket[] = [];
  for (let i = 0; i < wire.length; i += chunk) d.push(wire.subarray(i, i + chunk), (p) => packets.push(p));
  return { packets, d };
}

describe('Feetech protocol 0 packets', () => {
  it('encodes PING and READ with the one-byte checksum ~(ID + LEN + INSTR + params)', () => {
    expect(
      hexOf(
        feetechCodec.encodeInstruction({ id: 1, instruction: Instruction.Ping, params: new Uint8Array(0) }),
      ),
    ).toBe('FF FF 01 02 01 FB');
    // Present_Position (56 = 0x38), 2 bytes.
    const read = feetechCodec.encodeInstruction({
      id: 1,
      instruction: Instruction.Read,
      params: readParams(feetechCodec, 56, 2),
    });
    expect(hexOf(read)).toBe('FF FF 01 04 02 38 02 BE');
  });

  it('lays out SYNC READ and SYNC WRITE to the broadcast id with one-byte address and length', () => {
    const sr = feetechCodec.encodeInstruction({
      id: 0xfe,
      instruction: Instruction.SyncRead,
      params: syncReadParams(feetechCodec, 56, 2, [1, 2]),
    });
    expect(hexOf(sr.subarray(0, 9))).toBe('FF FF FE 06 82 38 02 01 02');
    const sw = feetechCodec.encodeInstruction({
      id: 0xfe,
      instruction: Instruction.SyncWrite,
      params: syncWriteParams(feetechCodec, 42, 2, [
        { id: 1, data: Uint8Array.of(0x00, 0x08) },
        { id: 2, data: Uint8Array.of(0xff, 0x07) },
      ]),
    });
    expect(hexOf(sw.subarray(0, sw.length - 1))).toBe('FF FF FE 0A 83 2A 02 01 00 08 02 FF 07');
    expect(() => syncWriteParams(feetechCodec, 42, 2, [{ id: 1, data: Uint8Array.of(1) }])).toThrow(
      /1 bytes, expected 2/,
    );
  });

  it('decodes status packets from any chunking, skips noise, counts and drops bad checksums', () => {
    const a = feetechCodec.encodeStatus({ id: 3, error: 0x20, params: Uint8Array.of(0x10, 0x08) });
    const b = feetechCodec.encodeStatus({ id: 4, error: 0, params: Uint8Array.of(0xff, 0xff) });
    const bad = Uint8Array.from(a);
    bad[6] ^= 0x01;
    const wire = Uint8Array.from([0x00, 0x13, 0xff, ...bad, ...a, 0xff, ...b]);
    for (const chunk of [1, 3, wire.length]) {
      const { packets, d } = decodeAll(feetechCodec, wire, chunk);
      expect(packets.map((p) => [p.id, p.error, hexOf(p.params)])).toEqual([
        [3, 0x20, '10 08'],
        [4, 0, 'FF FF'],
      ]);
      expect(d.counters.checksumErrors).toBe(1);
      expect(d.counters.packets).toBe(2);
    }
  });
});

describe('Dynamixel protocol 2.0 packets', () => {
  it('matches the e-Manual examples (PING, READ of Present_Position, its status packet)', () => {
    expect(
      hexOf(
        dynamixelCodec.encodeInstruction({ id: 1, instruction: Instruction.Ping, params: new Uint8Array(0) }),
      ),
    ).toBe('FF FF FD 00 01 03 00 01 19 4E');
    const read = dynamixelCodec.encodeInstruction({
      id: 1,
      instruction: Instruction.Read,
      params: readParams(dynamixelCodec, 132, 4),
    });
    expect(hexOf(read)).toBe('FF FF FD 00 01 07 00 02 84 00 04 00 1D 15');
    const status = bytes('FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0');
    const { packets } = decodeAll(dynamixelCodec, status);
    expect(packets).toHaveLength(1);
    expect(decodeRegister(XL330_M288.registers.presentPosition, packets[0].params)).toBe(166);
    expect(hexOf(dynamixelCodec.encodeStatus(packets[0]))).toBe(hexOf(status));
  });

  it('stuffs 0xFD after FF FF FD, counts the stuffed length, and undoes it on receive', () => {
    expect(hexOf(stuff(bytes('03 FF FF FD 01')))).toBe('03 FF FF FD FD 01');
    expect(hexOf(stuff(bytes('FF FF FD FD')))).toBe('FF FF FD FD FD');
    for (const body of ['03 FF FF FD 01', 'FF FF FD FD', 'FF FF FF FD FF FF FD 00']) {
      expect(hexOf(unstuff(stuff(bytes(body))))).toBe(hexOf(bytes(body)));
    }
    const params = bytes('74 00 04 00 FF FF FD 00');
    const wire = dynamixelCodec.encodeStatus({ id: 7, error: 0, params });
    expect(wire[5] | (wire[6] << 8)).toBe(2 + params.length + 1 + 2);
    expect(dynamixelCrc(wire, 0, wire.length - 2)).toBe(wire[wire.length - 2] | (wire[wire.length - 1] << 8));
    const { packets, d } = decodeAll(dynamixelCodec, Uint8Array.from([0xff, 0xff, 0xfd, ...wire]), 2);
    expect(hexOf(packets[0].params)).toBe(hexOf(params));
    expect(d.counters.checksumErrors).toBe(0);
  });

  it('counts a CRC error, keeps the next packet, and drops a status with an impossible length', () => {
    const ok = dynamixelCodec.encodeStatus({ id: 2, error: 0x80, params: Uint8Array.of(1, 2) });
    const bad = Uint8Array.from(ok);
    bad[9] ^= 0x40;
    const junk = bytes('FF FF FD 00 01 FF FF');
    const { packets, d } = decodeAll(dynamixelCodec, Uint8Array.from([...bad, ...junk, ...ok]), 5);
    expect(packets.map((p) => [p.id, p.error])).toEqual([[2, 0x80]]);
    expect(d.counters.checksumErrors).toBe(1);
    expect(d.counters.malformed).toBeGreaterThanOrEqual(1);
  });
});

describe('register encodings', () => {
  it("stores Feetech signed fields as sign-magnitude and Dynamixel ones as two's complement", () => {
    expect(hexOf(encodeRegister(STS3215.registers.homingOffset, -100))).toBe('64 08');
    expect(decodeRegister(STS3215.registers.homingOffset, bytes('64 08'))).toBe(-100);
    expect(decodeRegister(STS3215.registers.presentVelocity, bytes('05 80'))).toBe(-5);
    expect(decodeRegister(STS3215.registers.presentLoad, bytes('2C 05'))).toBe(-300);
    expect(hexOf(encodeRegister(XL330_M288.registers.homingOffset, -1))).toBe('FF FF FF FF');
    expect(decodeRegister(XL330_M288.registers.presentVelocity, bytes('F6 FF FF FF'))).toBe(-10);
    expect(() => encodeRegister(STS3215.registers.homingOffset, 2048)).toThrow(/sign bit 11/);
    expect(() => encodeRegister(STS3215.registers.goalPosition, -1)).toThrow(/unsigned/);
  });

  it('normalizes over the calibrated range in either direction', () => {
    const c: JointCalibration = {
      id: 1,
      model: 'sts3215',
      homingOffset: 0,
      rangeMin: 1000,
      rangeMax: 3000,
      direction: -1,
    };
    expect(normalize(c, 1000)).toBe(1);
    expect(normalize(c, 3000)).toBe(-1);
    expect(normalize(c, 2000)).toBeCloseTo(0, 12);
    for (const n of [-1, -0.3, 0.7]) expect(normalize(c, denormalize(c, n))).toBeCloseTo(n, 12);
  });

  it('parses feetech: and dynamixel: robot URLs with an optional baud rate', () => {
    expect(parseServoUrl('feetech:/dev/ttyACM0')).toEqual({
      kind: 'servo',
      protocol: 'feetech',
      path: '/dev/ttyACM0',
    });
    expect(parseServoUrl('dynamixel:/dev/ttyUSB0?baud=57600')).toMatchObject({
      protocol: 'dynamixel',
      baudRate: 57600,
    });
    expect(parseServoUrl('serial:/dev/ttyUSB0')).toBeNull();
    expect(() => parseServoUrl('feetech:ttyACM0')).toThrow(/feetech:\/dev\/ttyACM0/);
    expect(() => parseServoUrl('feetech:/dev/ttyACM0?speed=1')).toThrow(/baud=/);
  });
});
