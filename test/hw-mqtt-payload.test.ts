import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CommandGate } from '../src/hw/mqtt/command-gate.js';
import { decodeCapabilities } from '../src/hw/mqtt/messages.js';
import {
  PAYLOAD_FORMAT_VERSION,
  PayloadError,
  decodeCommand,
  decodeEstop,
  decodeReset,
  decodeState,
  encodeCommand,
  encodeEstop,
  encodeReset,
  encodeState,
  type CommandPayload,
} from '../src/hw/mqtt/payload.js';
import { parseMqttRobotUrl, robotTopics } from '../src/hw/mqtt/topics.js';

const f32 = fc.float({ noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 });
const u32 = fc.integer({ min: 0, max: 0xffffffff });

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PayloadError);
    return (err as PayloadError).reason;
  }
  throw new Error('expected a PayloadError');
}

describe('command payload', () => {
  it('round-trips any valid command', () => {
    fc.assert(
      fc.property(
        u32,
        u32,
        fc.integer({ min: 1, max: 0xffffffff }),
        fc.double({ min: 0, max: 4e12, noNaN: true }),
        fc.array(f32, { minLength: 1, maxLength: 64 }),
        (session, seq, validForMs, sentAtMs, action) => {
          const cmd = { session, seq, validForMs, sentAtMs, action: Float32Array.from(action) };
          const bytes = encodeCommand(cmd);
          expect(bytes.length).toBe(24 + 4 * action.length);
          expect(bytes[0]).toBe(PAYLOAD_FORMAT_VERSION);
          expect(decodeCommand(bytes, action.length)).toEqual(cmd);
        },
      ),
    );
  });

  it('has the documented little-endian layout', () => {
    const bytes = encodeCommand({
      session: 0x01020304,
      seq: 7,
      validForMs: 100,
      sentAtMs: 1.5,
      action: Float32Array.of(0.25),
    });
    const view = new DataView(bytes.buffer);
    expect([bytes[0], bytes[1], view.getUint16(2, true)]).toEqual([1, 1, 1]);
    expect(view.getUint32(4, true)).toBe(0x01020304);
    expect(view.getUint32(8, true)).toBe(7);
    expect(view.getUint32(12, true)).toBe(100);
    expect(view.getFloat64(16, true)).toBe(1.5);
    expect(view.getFloat32(24, true)).toBe(0.25);
  });

  it('rejects bad commands strictly', () => {
    const ok = encodeCommand({
      session: 1,
      seq: 1,
      validForMs: 50,
      sentAtMs: 1,
      action: Float32Array.of(0, 0),
    });
    expect(reason(() => decodeCommand(ok, 3))).toBe('dimension');
    expect(reason(() => decodeCommand(ok.subarray(0, ok.length - 1)))).toBe('malformed');
    expect(reason(() => decodeCommand(Uint8Array.of(...ok, 0)))).toBe('malformed');
    expect(reason(() => decodeCommand(ok.subarray(0, 1)))).toBe('malformed');
    const v2 = Uint8Array.from(ok);
    v2[0] = 2;
    expect(reason(() => decodeCommand(v2))).toBe('version');
    const state = Uint8Array.from(ok);
    state[1] = 2;
    expect(reason(() => decodeCommand(state))).toBe('type');
    const nan = Uint8Array.from(ok);
    new DataView(nan.buffer).setFloat32(28, NaN, true);
    expect(reason(() => decodeCommand(nan))).toBe('non-finite');
    const inf = Uint8Array.from(ok);
    new DataView(inf.buffer).setFloat64(16, Infinity, true);
    expect(reason(() => decodeCommand(inf))).toBe('non-finite');
    const zero = Uint8Array.from(ok);
    new DataView(zero.buffer).setUint32(12, 0, true);
    expect(reason(() => decodeCommand(zero))).toBe('range');
    const base: CommandPayload = {
      session: 1,
      seq: 1,
      validForMs: 50,
      sentAtMs: 1,
      action: Float32Array.of(NaN),
    };
    expect(reason(() => encodeCommand(base))).toBe('non-finite');
    expect(reason(() => encodeCommand({ ...base, action: new Float32Array(0) }))).toBe('dimension');
    expect(reason(() => encodeCommand({ ...base, action: Float32Array.of(0), seq: -1 }))).toBe('range');
  });
});

describe('state payload', () => {
  it('round-trips any valid state', () => {
    fc.assert(
      fc.property(
        fc
          .integer({ min: 0, max: 16 })
          .chain((j) =>
            fc.tuple(
              fc.array(f32, { minLength: j, maxLength: j }),
              fc.array(f32, { minLength: j, maxLength: j }),
              fc.array(f32, { minLength: j, maxLength: j }),
              fc.array(f32, { maxLength: 8 }),
            ),
          ),
        fc.integer({ min: 0, max: 0xffff }),
        u32,
        fc.double({ min: 0, max: 1e15, noNaN: true }),
        ([p, v, e, s], flags, seq, deviceTimeUs) => {
          const state = {
            flags,
            seq,
            deviceTimeUs,
            lastCommandSession: 3,
            lastCommandSeq: seq,
            positions: Float32Array.from(p),
            velocities: Float32Array.from(v),
            efforts: Float32Array.from(e),
            sensors: Float32Array.from(s),
          };
          const bytes = encodeState(state);
          expect(decodeState(bytes, { jointCount: p.length, sensorCount: s.length })).toEqual(state);
        },
      ),
    );
  });

  it('rejects mismatched shapes and non-finite values', () => {
    const state = {
      flags: 0,
      seq: 1,
      deviceTimeUs: 10,
      lastCommandSession: 0,
      lastCommandSeq: 0,
      positions: Float32Array.of(1, 2),
      velocities: Float32Array.of(0, 0),
      efforts: Float32Array.of(0, 0),
      sensors: Float32Array.of(5),
    };
    const bytes = encodeState(state);
    expect(reason(() => decodeState(bytes, { jointCount: 3, sensorCount: 1 }))).toBe('dimension');
    expect(reason(() => decodeState(bytes.subarray(0, bytes.length - 4)))).toBe('malformed');
    expect(reason(() => encodeState({ ...state, velocities: Float32Array.of(0) }))).toBe('dimension');
    expect(reason(() => encodeState({ ...state, sensors: Float32Array.of(Infinity) }))).toBe('non-finite');
    const nan = Uint8Array.from(bytes);
    new DataView(nan.buffer).setFloat32(28, NaN, true);
    expect(reason(() => decodeState(nan))).toBe('non-finite');
  });
});

describe('e-stop and reset payloads', () => {
  it('round-trip and reject malformed input', () => {
    expect(decodeEstop(encodeEstop({ reason: 'hand in cell ✋' }))).toEqual({ reason: 'hand in cell ✋' });
    expect(decodeEstop(encodeEstop({ reason: 'x'.repeat(5000) })).reason).toHaveLength(1024);
    expect(reason(() => decodeEstop(Uint8Array.of(1, 3, 5, 0)))).toBe('malformed');
    expect(decodeReset(encodeReset({ nonce: 0xdeadbeef }))).toEqual({ nonce: 0xdeadbeef });
    expect(reason(() => decodeReset(encodeEstop({ reason: '' })))).toBe('type');
  });
});

describe('CommandGate', () => {
  const cmd = (seq: number, sentAtMs: number, session = 1, validForMs = 100): CommandPayload => ({
    session,
    seq,
    sentAtMs,
    validForMs,
    action: Float32Array.of(0),
  });

  it('applies only fresh commands in sequence order', () => {
    const gate = new CommandGate({ allowedClockSkewMs: 10 });
    const now = 1_000_000;
    expect(gate.admit(cmd(1, now - 200), now)).toBe('stale');
    expect(gate.admit(cmd(1, now - 110), now)).toBe('ok'); // inside validFor + skew
    expect(gate.admit(cmd(1, now - 50), now)).toBe('duplicate');
    expect(gate.admit(cmd(0, now - 50), now)).toBe('out-of-order');
    expect(gate.admit(cmd(3, now + 11), now)).toBe('future');
    expect(gate.admit(cmd(3, now + 5), now)).toBe('ok');
    expect(gate.lastAccepted).toEqual({ session: 1, seq: 3 });
  });

  it('follows a restarted sender but not a straggler of the old one', () => {
    const gate = new CommandGate({ allowedClockSkewMs: 0 });
    const now = 5_000;
    expect(gate.admit(cmd(900, now - 10, 1), now)).toBe('ok');
    expect(gate.admit(cmd(1, now - 5, 2), now)).toBe('ok'); // new session, sent later
    expect(gate.admit(cmd(901, now - 8, 1), now)).toBe('out-of-order'); // old session, sent earlier
    expect(gate.admit(cmd(2, now, 2), now)).toBe('ok');
  });
});

describe('topics and capabilities', () => {
  it('lays out the topics under resrt/v1/{robot}', () => {
    expect(robotTopics('arm-1')).toEqual({
      state: 'resrt/v1/arm-1/state',
      cmd: 'resrt/v1/arm-1/cmd',
      status: 'resrt/v1/arm-1/status',
      capabilities: 'resrt/v1/arm-1/capabilities',
      estop: 'resrt/v1/arm-1/estop',
      reset: 'resrt/v1/arm-1/reset',
      hold: 'resrt/v1/arm-1/hold',
      events: 'resrt/v1/arm-1/events',
    });
    expect(() => robotTopics('#')).toThrow(/not a valid topic level/);
    expect(parseMqttRobotUrl('mqtt://[::1]:1999/r')).toEqual({
      brokerUrl: 'mqtt://[::1]:1999',
      robotId: 'r',
      tls: false,
    });
  });

  it('validates capabilities', () => {
    const caps = {
      name: 'x',
      actionDim: 2,
      actionNames: ['a', 'b'],
      jointCount: 2,
      sensorCount: 0,
      rateHz: 50,
      safeAction: [0, 0],
      actionLow: [-1, -1],
      actionHigh: [1, 1],
    };
    expect(decodeCapabilities(JSON.stringify(caps), 't').actionDim).toBe(2);
    expect(() => decodeCapabilities(JSON.stringify({ ...caps, safeAction: [0] }), 't')).toThrow(/safeAction/);
    expect(() => decodeCapabilities(JSON.stringify({ ...caps, protocolVersion: 9 }), 't')).toThrow(
      /payload format 9/,
    );
    expect(() => decodeCapabilities('nope', 't')).toThrow(/not JSON/);
  });
});
