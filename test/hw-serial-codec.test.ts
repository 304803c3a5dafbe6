import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cobsDecode, cobsDecodeInto, cobsEncode } from '../src/hw/serial/cobs.js';
import { crc16 } from '../src/hw/serial/crc.js';
import { encodeFrame, serializeFrame, wireFromRaw, type Frame } from '../src/hw/serial/frame.js';
import { FrameDecoder } from '../src/hw/serial/frame-decoder.js';
import { buildHostFirmware, firmwareDir } from '../src/hw/serial/host-firmware.js';
import { decodePayload, encodePayload, messageTypeCode, type Message } from '../src/hw/serial/messages.js';
import {
  ErrorCode,
  FLAG_ACK_REQ,
  MAX_ENCODED,
  MAX_FRAME,
  MAX_PAYLOAD,
  MessageType,
  Status,
  seqNewer,
} from '../src/hw/serial/protocol.js';
import { Rng } from '../src/util/rng.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Bitwise CRC-16/CCITT-FALSE, written apart from the table-driven one under test. */
function referenceCrc(data: Uint8Array): number {
  let crc = 0xffff;
  for (const byte of data) {
    crc ^= byte << 8;
    for (let b = 0; b < 8; b++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}
const f32 = (...v: number[]): Float32Array => Float32Array.from(v);

function frameOf(m: Message, seq: number, flags = 0, version = 1): Frame {
  return { version, type: messageTypeCode(m), seq, flags, payload: encodePayload(m, version) };
}

function decodeAll(bytes: Uint8Array, decoder = new FrameDecoder()): Frame[] {
  const out: Frame[] = [];
  decoder.push(bytes, (f) => out.push(f));
  return out;
}

/** The same messages as firmware-bridge/test/vectors.c, built with the TypeScript encoder. */
const vectors: { name: string; frame: Frame }[] = [
  { name: 'hello', frame: frameOf({ type: 'hello', versions: [1, 2] }, 0) },
  {
    name: 'capabilities',
    frame: frameOf(
      {
        type: 'capabilities',
        protocolVersion: 1,
        actionDim: 2,
        jointCount: 2,
        sensorCount: 1,
        rateHz: 500,
        watchdogMs: 200,
        watchdogMode: 'latch',
        name: 'arm',
        firmwareVersion: '0.1.0',
        low: f32(-0.9, -0.5),
        high: f32(0.9, 1.0),
        safe: f32(0, -0.25),
      },
      1,
    ),
  },
  {
    name: 'state',
    frame: frameOf(
      {
        type: 'state',
        deviceTimeUs: 1234567,
        status: Status.Negotiated | Status.Clamped,
        lastCommandSeq: 0x1234,
        positions: f32(0.5, -0.5),
        velocities: f32(1, 0),
        efforts: f32(0.125, -2),
        sensors: f32(3),
        outputs: f32(0.9, 0),
      },
      2,
    ),
  },
  { name: 'command', frame: frameOf({ type: 'command', validityMs: 100, action: f32(0.5, -0.25) }, 0x1234) },
  { name: 'heartbeat', frame: frameOf({ type: 'heartbeat', timeUs: 1_000_000, echoUs: 0 }, 7) },
  { name: 'estop', frame: frameOf({ type: 'estop', reason: 'button' }, 8, FLAG_ACK_REQ) },
  { name: 'reset', frame: frameOf({ type: 'reset' }, 9, FLAG_ACK_REQ) },
  { name: 'ack', frame: frameOf({ type: 'ack', ackedType: MessageType.Reset, ackedSeq: 9 }, 3) },
  {
    name: 'nack',
    frame: frameOf(
      {
        type: 'nack',
        nackedType: MessageType.Command,
        nackedSeq: 0x1235,
        error: ErrorCode.WrongDimension,
        detail: 2,
      },
      4,
    ),
  },
  {
    name: 'config',
    frame: frameOf(
      { type: 'config', watchdogMs: 250, low: f32(-0.5, -0.5), high: f32(0.5, 0.75) },
      10,
      FLAG_ACK_REQ,
    ),
  },
  {
    name: 'capabilities_v2',
    frame: frameOf(
      {
        type: 'capabilities',
        protocolVersion: 2,
        actionDim: 3,
        jointCount: 0,
        sensorCount: 19,
        rateHz: 25,
        watchdogMs: 1000,
        watchdogMode: 'hold',
        name: 'push',
        firmwareVersion: '2.0',
        low: f32(-1, -1, -1),
        high: f32(1, 1, 1),
        safe: f32(0, 0, 0),
      },
      1,
      0,
      2,
    ),
  },
  {
    name: 'state_v2',
    frame: frameOf(
      {
        type: 'state',
        deviceTimeUs: 5_000_000,
        status: Status.Negotiated | Status.SafeHold | Status.WatchdogHold,
        lastCommandSeq: 77,
        positions: f32(),
        velocities: f32(),
        efforts: f32(),
        sensors: Float32Array.from({ length: 20 }, (_, i) => i * 0.5),
        outputs: f32(0, 0, 0),
      },
      40,
      0,
      2,
    ),
  },
  { name: 'hold', frame: frameOf({ type: 'hold' }, 11, FLAG_ACK_REQ, 2) },
  {
    name: 'command_v2_64',
    frame: frameOf(
      { type: 'command', validityMs: 20, action: Float32Array.from({ length: 64 }, (_, i) => (i - 32) / 64) },
      300,
      0,
      2,
    ),
  },
];

describe('serial codec primitives', () => {
  it('CRC-16/CCITT-FALSE matches its published check value', () => {
    expect(crc16(new TextEncoder().encode('123456789'))).toBe(0x29b1);
    expect(crc16(new Uint8Array(0))).toBe(0xffff);
    expect(crc16(Uint8Array.of(0))).toBe(0xe1f0);
  });

  it('COBS encodes the reference examples and round-trips the block edges', () => {
    expect(hex(cobsEncode(Uint8Array.of(0)))).toBe('0101');
    expect(hex(cobsEncode(Uint8Array.of(0x11, 0x22, 0x00, 0x33)))).toBe('0311220233');
    expect(hex(cobsEncode(new Uint8Array(0)))).toBe('01');
    const run = (n: number, zeroAt = -1): Uint8Array => {
      const b = Uint8Array.from({ length: n }, (_, i) => (i % 255) + 1);
      if (zeroAt >= 0) b[zeroAt] = 0;
      return b;
    };
    for (const [src, len] of [
      [run(253), 254],
      [run(254), 255],
      [run(255), 257],
      [run(508), 510],
      [run(255, 254), 257],
    ] as const) {
      const enc = cobsEncode(src);
      expect(enc.length).toBe(len);
      expect(enc.includes(0)).toBe(false);
      expect(cobsDecode(enc)).toEqual(src);
    }
    expect(cobsDecode(Uint8Array.of(0x05, 0x11, 0x22))).toBeNull();
    expect(cobsDecode(Uint8Array.of(0x03, 0x11, 0x00))).toBeNull();
  });

  it('compares 16-bit sequence numbers across the wrap', () => {
    expect(seqNewer(0, 65535)).toBe(true);
    expect(seqNewer(65535, 0)).toBe(false);
    expect(seqNewer(0x7fff, 0)).toBe(true);
    expect(seqNewer(0x8000, 0)).toBe(false);
    expect(seqNewer(5, 5)).toBe(false);
  });
});

describe('serial messages', () => {
  it('round-trips every message type', () => {
    for (const { frame } of vectors) {
      const d = decodePayload(frame.type, frame.payload, frame.version);
      expect(d.ok).toBe(true);
      if (!d.ok) continue;
      expect(encodePayload(d.message, frame.version)).toEqual(frame.payload);
    }
  });

  it('rejects malformed payloads with the protocol error codes', () => {
    expect(decodePayload(MessageType.Command, Uint8Array.of(100, 0, 2, 0, 0), 1)).toEqual({
      ok: false,
      error: ErrorCode.BadLength,
    });
    // Length against the frame's own D first: 3 + 4*65 bytes is well-formed but carries too many.
    expect(
      decodePayload(MessageType.Command, Uint8Array.of(100, 0, 65, ...new Array<number>(260).fill(0)), 2),
    ).toEqual({
      ok: false,
      error: ErrorCode.WrongDimension,
    });
    expect(decodePayload(MessageType.Command, Uint8Array.of(100, 0, 17), 2)).toEqual({
      ok: false,
      error: ErrorCode.BadLength,
    });
    expect(decodePayload(MessageType.Hello, Uint8Array.of(0), 1)).toEqual({
      ok: false,
      error: ErrorCode.BadLength,
    });
    expect(decodePayload(MessageType.Hold, new Uint8Array(0), 1)).toEqual({
      ok: false,
      error: ErrorCode.UnknownType,
    });
    expect(decodePayload(0x42, new Uint8Array(0), 2)).toEqual({ ok: false, error: ErrorCode.UnknownType });
    const state = vectors[2].frame.payload;
    expect(decodePayload(MessageType.State, state.subarray(0, state.length - 1), 1)).toEqual({
      ok: false,
      error: ErrorCode.BadLength,
    });
    // 20 sensors: a version 2 STATE, not a version 1 one.
    const wide = vectors.find((v) => v.name === 'state_v2')!.frame.payload;
    expect(decodePayload(MessageType.State, wide, 1)).toEqual({ ok: false, error: ErrorCode.WrongDimension });
    expect(decodePayload(MessageType.State, wide, 2).ok).toBe(true);
  });

  it('refuses to encode what does not fit, with a fix', () => {
    expect(() => encodePayload({ type: 'command', validityMs: 10, action: new Float32Array(17) }, 1)).toThrow(
      /version 2/,
    );
    expect(() => encodePayload({ type: 'command', validityMs: 10, action: new Float32Array(65) }, 2)).toThrow(
      /fix:/,
    );
    expect(() =>
      encodeFrame({ version: 1, type: 1, seq: 0, flags: 0, payload: new Uint8Array(MAX_PAYLOAD + 1) }),
    ).toThrow(/249-byte/);
  });

  it('produces byte-identical frames to the C implementation', () => {
    buildHostFirmware();
    execFileSync('make', ['-C', firmwareDir(), '--no-print-directory', '-s', 'vectors']);
    const lines = execFileSync(join(firmwareDir(), 'build', 'vectors'))
      .toString()
      .trim()
      .split('\n');
    const fromC = new Map(
      lines
        .map((l) => JSON.parse(l) as { name: string; version: number; hex: string })
        .map((v) => [v.name, v.hex]),
    );
    expect(fromC.size).toBe(vectors.length);
    for (const { name, frame } of vectors) {
      expect(hex(encodeFrame(frame)), name).toBe(fromC.get(name));
      // And the TypeScript decoder reads the C frame back to the same fields.
      const decoded = decodeAll(Buffer.from(fromC.get(name) ?? '', 'hex'));
      expect(decoded).toHaveLength(1);
      expect(decoded[0]).toEqual(frame);
    }
    // The command vector the page explains byte by byte.
    expect(fromC.get('command')).toBe('0501043412026402020101023f010580be662e00');
  });

  it('docs/serial-protocol.md quotes exactly the vectors the C generator prints', () => {
    execFileSync('make', ['-C', firmwareDir(), '--no-print-directory', '-s', 'vectors']);
    const generated = execFileSync(join(firmwareDir(), 'build', 'vectors'), ['--markdown']).toString();
    const page = readFileSync(join(firmwareDir(), '..', 'docs', 'serial-protocol.md'), 'utf8');
    const section = /<!-- vectors:begin[^\n]*-->\n([\s\S]*?)<!-- vectors:end -->/.exec(page);
    expect(section, 'the page has its vector markers').not.toBeNull();
    expect(section?.[1], "the page's vectors are stale: run make -C firmware-bridge docs").toBe(generated);
  });
});

describe('frame decoder', () => {
  it('resynchronizes after garbage at the next delimiter and counts what it dropped', () => {
    const good = encodeFrame(vectors[3].frame);
    const garbage = Uint8Array.from({ length: 40 }, (_, i) => (i * 37 + 1) & 0xff || 1);
    const stream = Buffer.concat([
      garbage,
      Uint8Array.of(0, 0x42, 0x17),
      good,
      good,
      new Uint8Array(MAX_ENCODED + 10).fill(0x55),
      Uint8Array.of(0),
      good,
    ]);
    const d = new FrameDecoder();
    const frames = decodeAll(stream, d);
    expect(frames).toHaveLength(2); // the frame glued to "42 17" is lost, the rest survive
    expect(d.counters.oversize).toBe(1);
    expect(d.counters.crcErrors + d.counters.cobsErrors + d.counters.lengthErrors).toBeGreaterThanOrEqual(2);
  });

  it('decodes frames split across arbitrary chunk boundaries', () => {
    const stream = Buffer.concat(vectors.map((v) => encodeFrame(v.frame)));
    const rng = new Rng(3);
    const d = new FrameDecoder();
    const out: Frame[] = [];
    for (let i = 0; i < stream.length;) {
      const n = 1 + rng.int(20);
      d.push(stream.subarray(i, i + n), (f) => out.push(f));
      i += n;
    }
    expect(out.map((f) => f.type)).toEqual(vectors.map((v) => v.frame.type));
  });

  it('survives 1M random and mutated frames without throwing or accepting a bad CRC', () => {
    const rng = new Rng(20260101);
    const decoder = new FrameDecoder();
    const buf = new Uint8Array(4000);
    let accepted = 0;
    let badAccepted = 0;
    let corrupted = 0;
    let corruptedAccepted = 0;
    let resyncExpected = 0;
    let resyncOk = 0;
    let disagreements = 0;
    let got: Frame[] = [];
    const onFrame = (f: Frame): void => {
      accepted++;
      got.push(f);
    };
    // Every delimited segment judged by an independent reference (bitwise CRC, no decoder state).
    const refBuf = new Uint8Array(MAX_ENCODED + 8);
    const push = (chunk: Uint8Array): Frame[] => {
      got = [];
      decoder.push(chunk, onFrame);
      let start = 0;
      let valid = 0;
      for (let i = 0; i < chunk.length; i++) {
        if (chunk[i] !== 0) continue;
        const seg = chunk.subarray(start, i);
        start = i + 1;
        if (seg.length === 0 || seg.length > MAX_ENCODED) continue;
        const n = cobsDecodeInto(seg, 0, seg.length, refBuf);
        if (n < 7 || n > MAX_FRAME) continue;
        const raw = refBuf.subarray(0, n);
        if (
          referenceCrc(raw.subarray(0, raw.length - 2)) !==
          (raw[raw.length - 2] | (raw[raw.length - 1] << 8))
        )
          continue;
        const f = got[valid];
        if (
          !f ||
          f.type !== raw[1] ||
          f.seq !== (raw[2] | (raw[3] << 8)) ||
          !sameBytes(f.payload, raw.subarray(5, raw.length - 2))
        ) {
          disagreements++;
        }
        valid++;
      }
      if (valid !== got.length) badAccepted += Math.max(0, got.length - valid);
      return got;
    };
    const randomFrame = (): Frame => {
      const len = rng.int(8) === 0 ? rng.int(MAX_PAYLOAD + 1) : rng.int(64);
      const payload = new Uint8Array(len);
      for (let i = 0; i < len; i++) {
        // One generator call per byte: the low byte is the value, the high bits pick a zero (1 in 4).
        const x = rng.nextUint32();
        payload[i] = x >>> 30 === 0 ? 0 : x & 0xff;
      }
      // Frames over version 1's 256 bytes are version 2 frames.
      return {
        version: len > 249 ? 2 : 1,
        type: rng.int(12),
        seq: rng.int(65536),
        flags: rng.int(3),
        payload,
      };
    };
    const total = 1_000_000;
    for (let k = 0; k < total; k++) {
      const kind = k % 10;
      if (kind < 4) {
        const len = rng.int(rng.int(8) === 0 ? 2000 : 150);
        for (let i = 0; i < len; i++) {
          const x = rng.nextUint32();
          buf[i] = x >>> 28 === 0 ? 0 : x & 0xff;
        }
        buf[len] = 0;
        push(buf.subarray(0, len + 1));
      } else if (kind < 6) {
        const g = rng.int(64);
        for (let i = 0; i < g; i++) buf[i] = rng.nextUint32() & 0xff;
        buf[g] = 0;
        const f = randomFrame();
        const wire = encodeFrame(f);
        buf.set(wire, g + 1);
        const frames = push(buf.subarray(0, g + 1 + wire.length));
        resyncExpected++;
        const last = frames[frames.length - 1];
        if (last && last.seq === f.seq && last.type === f.type && sameBytes(last.payload, f.payload))
          resyncOk++;
      } else if (kind < 9) {
        const wire = encodeFrame(randomFrame());
        let n = wire.length;
        buf.set(wire);
        const muts = 1 + rng.int(4);
        for (let m = 0; m < muts && n > 1; m++) {
          const at = rng.int(n);
          switch (rng.int(5)) {
            case 0:
              buf[at] ^= 1 << rng.int(8);
              break;
            case 1:
              buf[at] = rng.int(256);
              break;
            case 2:
              buf.copyWithin(at + 1, at, n);
              buf[at] = rng.int(256);
              n++;
              break;
            case 3:
              buf.copyWithin(at, at + 1, n);
              n--;
              break;
            default:
              n = at + 1;
              buf[at] = 0;
          }
        }
        if (buf[n - 1] !== 0) buf[n++] = 0;
        push(buf.subarray(0, n));
      } else {
        // One byte of the content changed after the CRC: a CRC-16 always catches it.
        const raw = serializeFrame(randomFrame());
        raw[rng.int(raw.length)] ^= 1 + rng.int(255);
        corrupted++;
        if (push(wireFromRaw(raw)).length > 0) corruptedAccepted++;
      }
    }
    expect(badAccepted).toBe(0);
    expect(disagreements).toBe(0);
    expect(corruptedAccepted).toBe(0);
    expect(corrupted).toBe(100_000);
    expect(resyncOk).toBe(resyncExpected);
    expect(accepted).toBeGreaterThanOrEqual(resyncExpected);
    expect(decoder.counters.crcErrors).toBeGreaterThan(100_000);
    // ~12 s alone; a loaded 2-core box has taken over a minute.
  }, 240_000);
});
