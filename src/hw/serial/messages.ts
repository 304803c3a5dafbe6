/**
 * Typed encode/decode of every message payload (little-endian, float32). The session's protocol
 * version decides the STATE limits and whether HOLD exists; CAPABILITIES is laid out by its own
 * version field (version 2 adds the watchdog mode byte).
 */
import { ResrtError } from '../../util/errors.js';
import {
  ErrorCode,
  MAX_DIM,
  MAX_FW,
  MAX_NAME,
  MAX_REASON,
  MAX_VERSIONS,
  MessageType,
  STATE_FIXED,
  WATCHDOG_MODE_CODE,
  stateFits,
  versionLimits,
  type ErrorCodeValue,
  type WatchdogMode,
} from './protocol.js';

export interface HelloMessage {
  type: 'hello';
  versions: number[];
}

export interface CapabilitiesMessage {
  type: 'capabilities';
  protocolVersion: number;
  actionDim: number;
  jointCount: number;
  sensorCount: number;
  rateHz: number;
  watchdogMs: number;
  /** On the wire from version 2; a version 1 device always latches. */
  watchdogMode: WatchdogMode;
  name: string;
  firmwareVersion: string;
  low: Float32Array;
  high: Float32Array;
  safe: Float32Array;
}

export interface StateMessage {
  type: 'state';
  /** u64 on the wire; exact as a number below 2^53 µs (285 years of uptime). */
  deviceTimeUs: number;
  status: number;
  lastCommandSeq: number;
  positions: Float32Array;
  velocities: Float32Array;
  efforts: Float32Array;
  sensors: Float32Array;
  /** What the device is driving now, after clamping (the safe action while holding). */
  outputs: Float32Array;
}

export interface CommandMessage {
  type: 'command';
  /** 0: no expiry of its own (the watchdog still applies). */
  validityMs: number;
  action: Float32Array;
}

export interface HeartbeatMessage {
  type: 'heartbeat';
  /** Sender clock, µs, low 32 bits. */
  timeUs: number;
  /** The peer's latest heartbeat timeUs (0 if none): the peer computes its round trip. */
  echoUs: number;
}

export interface EstopMessage {
  type: 'estop';
  reason: string;
}

export interface ResetMessage {
  type: 'reset';
}

/** Version 2: safe action now, watchdog disarmed until the next applied COMMAND. */
export interface HoldMessage {
  type: 'hold';
}

export interface AckMessage {
  type: 'ack';
  ackedType: number;
  ackedSeq: number;
}

export interface NackMessage {
  type: 'nack';
  nackedType: number;
  nackedSeq: number;
  error: number;
  /** Error-specific: the expected dimension, the offending index, the device's version... */
  detail: number;
}

export interface ConfigMessage {
  type: 'config';
  watchdogMs: number;
  low: Float32Array;
  high: Float32Array;
}

export type Message =
  | HelloMessage
  | CapabilitiesMessage
  | StateMessage
  | CommandMessage
  | HeartbeatMessage
  | EstopMessage
  | ResetMessage
  | HoldMessage
  | AckMessage
  | NackMessage
  | ConfigMessage;

export type DecodeResult = { ok: true; message: Message } | { ok: false; error: ErrorCodeValue };

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

/** UTF-8 bytes of s, cut at a character boundary so they fit in max bytes. */
function boundedUtf8(s: string, max: number): Uint8Array {
  let bytes = utf8.encode(s);
  let chars = [...s];
  while (bytes.length > max) {
    chars = chars.slice(0, -1);
    bytes = utf8.encode(chars.join(''));
  }
  return bytes;
}

class Writer {
  readonly bytes: Uint8Array;
  private readonly view: DataView;
  private o = 0;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
  }
  u8(v: number): this {
    this.view.setUint8(this.o, v);
    this.o += 1;
    return this;
  }
  u16(v: number): this {
    this.view.setUint16(this.o, v, true);
    this.o += 2;
    return this;
  }
  u32(v: number): this {
    this.view.setUint32(this.o, v >>> 0, true);
    this.o += 4;
    return this;
  }
  u64(v: number): this {
    this.view.setBigUint64(this.o, BigInt(Math.max(0, Math.floor(v))), true);
    this.o += 8;
    return this;
  }
  f32s(v: ArrayLike<number>): this {
    for (let i = 0; i < v.length; i++) {
      this.view.setFloat32(this.o, v[i], true);
      this.o += 4;
    }
    return this;
  }
  raw(b: Uint8Array): this {
    this.bytes.set(b, this.o);
    this.o += b.length;
    return this;
  }
}

function f32s(view: DataView, offset: number, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = view.getFloat32(offset + 4 * i, true);
  return out;
}

function checkRange(what: string, v: number, lo: number, hi: number): void {
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw new ResrtError(
      `${what} must be an integer in [${lo}, ${hi}], got ${v}`,
      'see docs/serial-protocol.md, "Limits"',
    );
  }
}

function checkDim(what: string, n: number, version: number, min = 1): void {
  const max = versionLimits(version)?.maxCount ?? MAX_DIM;
  if (n < min || n > max) {
    throw new ResrtError(
      `${what} has ${n} values; protocol version ${version} carries ${min} to ${max}`,
      version < 2
        ? 'use a device and host that speak protocol version 2 (up to 64)'
        : 'reduce the action dimension',
    );
  }
}

function shapeError(version: number, j: number, s: number, d: number): ResrtError {
  const l = versionLimits(version);
  return new ResrtError(
    `a STATE of ${j} joints, ${s} sensors and ${d} outputs does not fit protocol version ${version}`,
    l && version < 2
      ? `version 1 carries at most 16 of each and 12*joints + 4*sensors + 4*actions <= 234; version 2 carries 64 of each`
      : `protocol version 2 carries at most ${MAX_DIM} joints, sensors and actions each`,
  );
}

/** Message type code of a message. */
export function messageTypeCode(m: Message): number {
  switch (m.type) {
    case 'hello':
      return MessageType.Hello;
    case 'capabilities':
      return MessageType.Capabilities;
    case 'state':
      return MessageType.State;
    case 'command':
      return MessageType.Command;
    case 'heartbeat':
      return MessageType.Heartbeat;
    case 'estop':
      return MessageType.Estop;
    case 'reset':
      return MessageType.Reset;
    case 'hold':
      return MessageType.Hold;
    case 'ack':
      return MessageType.Ack;
    case 'nack':
      return MessageType.Nack;
    case 'config':
      return MessageType.Config;
  }
}

/** The payload bytes of a message in a session of this version; throws ResrtError when it cannot be represented. */
export function encodePayload(m: Message, version: number): Uint8Array {
  switch (m.type) {
    case 'hello': {
      checkRange('HELLO version count', m.versions.length, 1, MAX_VERSIONS);
      const w = new Writer(1 + m.versions.length).u8(m.versions.length);
      for (const v of m.versions) w.u8(v);
      return w.bytes;
    }
    case 'capabilities': {
      const name = boundedUtf8(m.name, MAX_NAME);
      const fw = boundedUtf8(m.firmwareVersion, MAX_FW);
      const d = m.actionDim;
      const v = m.protocolVersion;
      checkDim('CAPABILITIES action', d, v);
      if (m.low.length !== d || m.high.length !== d || m.safe.length !== d) {
        throw new ResrtError(
          `CAPABILITIES limits must have ${d} values each`,
          'pass low/high/safe of the action dimension',
        );
      }
      if (!stateFits(v, m.jointCount, m.sensorCount, d)) throw shapeError(v, m.jointCount, m.sensorCount, d);
      checkRange('rate (Hz)', m.rateHz, 1, 65535);
      checkRange('watchdog (ms)', m.watchdogMs, 0, 65535);
      const w = new Writer((v >= 2 ? 11 : 10) + name.length + fw.length + 12 * d)
        .u8(v)
        .u8(d)
        .u8(m.jointCount)
        .u8(m.sensorCount)
        .u16(m.rateHz)
        .u16(m.watchdogMs);
      if (v >= 2) w.u8(WATCHDOG_MODE_CODE[m.watchdogMode]);
      return w.u8(name.length).raw(name).u8(fw.length).raw(fw).f32s(m.low).f32s(m.high).f32s(m.safe).bytes;
    }
    case 'state': {
      const j = m.positions.length;
      const s = m.sensors.length;
      const d = m.outputs.length;
      if (m.velocities.length !== j || m.efforts.length !== j) {
        throw new ResrtError(
          'STATE positions, velocities and efforts must have the same length',
          'report one value per joint',
        );
      }
      if (!stateFits(version, j, s, d)) throw shapeError(version, j, s, d);
      return new Writer(STATE_FIXED + 12 * j + 4 * s + 4 * d)
        .u64(m.deviceTimeUs)
        .u16(m.status)
        .u16(m.lastCommandSeq)
        .u8(j)
        .u8(s)
        .u8(d)
        .f32s(m.positions)
        .f32s(m.velocities)
        .f32s(m.efforts)
        .f32s(m.sensors)
        .f32s(m.outputs).bytes;
    }
    case 'command':
      checkDim('COMMAND action', m.action.length, version, 0);
      checkRange('COMMAND validity (ms)', m.validityMs, 0, 65535);
      return new Writer(3 + 4 * m.action.length).u16(m.validityMs).u8(m.action.length).f32s(m.action).bytes;
    case 'heartbeat':
      return new Writer(8).u32(m.timeUs).u32(m.echoUs).bytes;
    case 'estop': {
      const reason = boundedUtf8(m.reason, MAX_REASON);
      return new Writer(1 + reason.length).u8(reason.length).raw(reason).bytes;
    }
    case 'reset':
    case 'hold':
      return new Uint8Array(0);
    case 'ack':
      return new Writer(3).u8(m.ackedType).u16(m.ackedSeq).bytes;
    case 'nack':
      return new Writer(6).u8(m.nackedType).u16(m.nackedSeq).u8(m.error).u16(m.detail).bytes;
    case 'config':
      checkDim('CONFIG limits', m.low.length, version, 0);
      if (m.high.length !== m.low.length) {
        throw new ResrtError(
          'CONFIG low and high must have the same length',
          'pass one bound per action dimension',
        );
      }
      checkRange('CONFIG watchdog (ms)', m.watchdogMs, 0, 65535);
      return new Writer(3 + 8 * m.low.length).u16(m.watchdogMs).u8(m.low.length).f32s(m.low).f32s(m.high)
        .bytes;
  }
}

const bad = (error: ErrorCodeValue): DecodeResult => ({ ok: false, error });

const watchdogModes: readonly WatchdogMode[] = ['latch', 'hold'];

/**
 * Decodes a payload of the given type received in a session of this version; the same
 * validation, in the same order, as the C unpack functions.
 */
export function decodePayload(type: number, p: Uint8Array, version: number): DecodeResult {
  const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const n = p.length;
  switch (type) {
    case MessageType.Hello: {
      if (n < 1) return bad(ErrorCode.BadLength);
      const count = p[0];
      if (count < 1 || count > MAX_VERSIONS || n !== 1 + count) return bad(ErrorCode.BadLength);
      return { ok: true, message: { type: 'hello', versions: Array.from(p.subarray(1, 1 + count)) } };
    }
    case MessageType.Capabilities: {
      if (n < 10) return bad(ErrorCode.BadLength);
      const v = p[0];
      const d = p[1];
      const jointCount = p[2];
      const sensorCount = p[3];
      if (versionLimits(v) === null) return bad(ErrorCode.BadVersion);
      const at = v >= 2 ? 9 : 8;
      if (n < at + 2) return bad(ErrorCode.BadLength);
      if (d < 1 || !stateFits(v, jointCount, sensorCount, d)) return bad(ErrorCode.WrongDimension);
      const nl = p[at];
      if (nl > MAX_NAME || at + 2 + nl > n) return bad(ErrorCode.BadLength);
      const fl = p[at + 1 + nl];
      if (fl > MAX_FW || n !== at + 2 + nl + fl + 12 * d) return bad(ErrorCode.BadLength);
      const watchdogMode = v >= 2 ? watchdogModes[p[8]] : 'latch';
      if (watchdogMode === undefined) return bad(ErrorCode.BadLength);
      const o = at + 2 + nl + fl;
      return {
        ok: true,
        message: {
          type: 'capabilities',
          protocolVersion: v,
          actionDim: d,
          jointCount,
          sensorCount,
          rateHz: view.getUint16(4, true),
          watchdogMs: view.getUint16(6, true),
          watchdogMode,
          name: utf8Decoder.decode(p.subarray(at + 1, at + 1 + nl)),
          firmwareVersion: utf8Decoder.decode(p.subarray(at + 2 + nl, at + 2 + nl + fl)),
          low: f32s(view, o, d),
          high: f32s(view, o + 4 * d, d),
          safe: f32s(view, o + 8 * d, d),
        },
      };
    }
    case MessageType.State: {
      if (n < STATE_FIXED) return bad(ErrorCode.BadLength);
      const j = p[12];
      const s = p[13];
      const d = p[14];
      if (!stateFits(version, j, s, d)) return bad(ErrorCode.WrongDimension);
      if (n !== STATE_FIXED + 12 * j + 4 * s + 4 * d) return bad(ErrorCode.BadLength);
      let o = STATE_FIXED;
      const take = (k: number): Float32Array => {
        const v = f32s(view, o, k);
        o += 4 * k;
        return v;
      };
      return {
        ok: true,
        message: {
          type: 'state',
          deviceTimeUs: Number(view.getBigUint64(0, true)),
          status: view.getUint16(8, true),
          lastCommandSeq: view.getUint16(10, true),
          positions: take(j),
          velocities: take(j),
          efforts: take(j),
          sensors: take(s),
          outputs: take(d),
        },
      };
    }
    case MessageType.Command: {
      // Length against the frame's own D first, then D against what any version carries; the
      // device compares D with its own.
      if (n < 3) return bad(ErrorCode.BadLength);
      const d = p[2];
      if (n !== 3 + 4 * d) return bad(ErrorCode.BadLength);
      if (d > MAX_DIM) return bad(ErrorCode.WrongDimension);
      return {
        ok: true,
        message: { type: 'command', validityMs: view.getUint16(0, true), action: f32s(view, 3, d) },
      };
    }
    case MessageType.Heartbeat:
      if (n !== 8) return bad(ErrorCode.BadLength);
      return {
        ok: true,
        message: { type: 'heartbeat', timeUs: view.getUint32(0, true), echoUs: view.getUint32(4, true) },
      };
    case MessageType.Estop: {
      if (n < 1) return bad(ErrorCode.BadLength);
      const rl = p[0];
      if (rl > MAX_REASON || n !== 1 + rl) return bad(ErrorCode.BadLength);
      return { ok: true, message: { type: 'estop', reason: utf8Decoder.decode(p.subarray(1, 1 + rl)) } };
    }
    case MessageType.Reset:
      if (n !== 0) return bad(ErrorCode.BadLength);
      return { ok: true, message: { type: 'reset' } };
    case MessageType.Hold:
      if (version < 2) return bad(ErrorCode.UnknownType);
      if (n !== 0) return bad(ErrorCode.BadLength);
      return { ok: true, message: { type: 'hold' } };
    case MessageType.Ack:
      if (n !== 3) return bad(ErrorCode.BadLength);
      return { ok: true, message: { type: 'ack', ackedType: p[0], ackedSeq: view.getUint16(1, true) } };
    case MessageType.Nack:
      if (n !== 6) return bad(ErrorCode.BadLength);
      return {
        ok: true,
        message: {
          type: 'nack',
          nackedType: p[0],
          nackedSeq: view.getUint16(1, true),
          error: p[3],
          detail: view.getUint16(4, true),
        },
      };
    case MessageType.Config: {
      if (n < 3) return bad(ErrorCode.BadLength);
      const d = p[2];
      if (n !== 3 + 8 * d) return bad(ErrorCode.BadLength);
      if (d > MAX_DIM) return bad(ErrorCode.WrongDimension);
      return {
        ok: true,
        message: {
          type: 'config',
          watchdogMs: view.getUint16(0, true),
          low: f32s(view, 3, d),
          high: f32s(view, 3 + 4 * d, d),
        },
      };
    }
    default:
      return bad(ErrorCode.UnknownType);
  }
}
