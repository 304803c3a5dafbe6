/**
 * docs/serial-protocol.md as one table of rules, run against both device implementations: the C
 * firmware core (host build over a real pseudo-terminal, its clock stepped by the test) and the
 * TypeScript DeviceCore. Each row names the section it checks. Beyond each row's expectations, the
 * two implementations' transcripts (every frame they sent, header and message, except what the
 * plant measures) must be identical: the next disagreement between them fails here.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cobsEncode } from '../src/hw/serial/cobs.js';
import { crc16 } from '../src/hw/serial/crc.js';
import { serializeFrame, wireFromRaw } from '../src/hw/serial/frame.js';
import { buildHostFirmware } from '../src/hw/serial/host-firmware.js';
import type {
  AckMessage,
  CapabilitiesMessage,
  HeartbeatMessage,
  Message,
  NackMessage,
  StateMessage,
} from '../src/hw/serial/messages.js';
import { ErrorCode, FLAG_ACK_REQ, MessageType, Status, typeName } from '../src/hw/serial/protocol.js';
import {
  CLOCK_START_US,
  exchange,
  frameBytes,
  startFirmwareDevice,
  startTsDevice,
  transcript,
  type DeviceSpec,
  type DeviceUnderTest,
  type Received,
} from './serial-conformance.js';

const f32 = (x: number): number => Math.fround(x);

const baseSpec: DeviceSpec = {
  joints: 3,
  sensors: 2,
  rateHz: 100,
  watchdogMs: 50,
  watchdogMode: 'latch',
  limitPercent: 90,
  safe: [0.1, -0.2, 0.05],
  maxVersion: 2,
};
const SAFE = baseSpec.safe.map(f32);
const PERIOD_US = 10_000;

/** What a case's steps see: the session version under test and frame builders. */
class Ctx {
  private nextSeq = 100;
  constructor(
    readonly v: 1 | 2,
    readonly spec: DeviceSpec,
  ) {}
  /** A host frame of the session's version (or `version`), with the next host seq unless given. */
  send(m: Message, o: { seq?: number; flags?: number; version?: number } = {}): Uint8Array {
    const seq = o.seq ?? this.nextSeq++;
    return frameBytes(m, { version: o.version ?? this.v, seq, flags: o.flags, payloadVersion: this.v });
  }
  command(seq: number, action: number[], o: { validityMs?: number; flags?: number } = {}): Uint8Array {
    return this.send(
      { type: 'command', validityMs: o.validityMs ?? 0, action: Float32Array.from(action) },
      { seq, flags: o.flags },
    );
  }
  heartbeat(timeUs = 1234): Uint8Array {
    return this.send({ type: 'heartbeat', timeUs, echoUs: 0 });
  }
  reset(flags = FLAG_ACK_REQ): Uint8Array {
    return this.send({ type: 'reset' }, { flags });
  }
  config(watchdogMs: number, low: number[], high: number[]): Uint8Array {
    return this.send(
      { type: 'config', watchdogMs, low: Float32Array.from(low), high: Float32Array.from(high) },
      { flags: FLAG_ACK_REQ },
    );
  }
  /** A frame with this header and these payload bytes as they are (malformed on purpose). */
  raw(
    type: number,
    payload: number[],
    o: { seq?: number; flags?: number; version?: number } = {},
  ): Uint8Array {
    return wireFromRaw(
      serializeFrame({
        version: o.version ?? this.v,
        type,
        seq: o.seq ?? this.nextSeq++,
        flags: o.flags ?? 0,
        payload: Uint8Array.from(payload),
      }),
    );
  }
}

/** One exchange's frames, with assertions that name what was expected. */
class Reply {
  constructor(readonly frames: Received[]) {}
  get types(): string[] {
    return this.frames.map((r) => typeName(r.frame.type));
  }
  /** Exactly these frame types, in this order. */
  only(...types: string[]): this {
    expect(this.types).toEqual(types);
    return this;
  }
  private all<T extends Message['type']>(type: T): Extract<Message, { type: T }>[] {
    for (const r of this.frames) expect(r.message, `undecodable ${typeName(r.frame.type)}`).not.toBeNull();
    return this.frames
      .map((r) => r.message)
      .filter((m): m is Extract<Message, { type: T }> => m?.type === type);
  }
  nack(): NackMessage {
    const n = this.all('nack');
    expect(n, `one NACK among ${this.types.join(', ')}`).toHaveLength(1);
    return n[0];
  }
  ack(): AckMessage {
    const a = this.all('ack');
    expect(a, `one ACK among ${this.types.join(', ')}`).toHaveLength(1);
    return a[0];
  }
  acks(): AckMessage[] {
    return this.all('ack');
  }
  states(): StateMessage[] {
    return this.all('state');
  }
  state(): StateMessage {
    const s = this.states();
    expect(s.length, `a STATE among ${this.types.join(', ') || 'nothing'}`).toBeGreaterThan(0);
    return s[s.length - 1];
  }
  capabilities(): CapabilitiesMessage {
    const c = this.all('capabilities');
    expect(c).toHaveLength(1);
    return c[0];
  }
  heartbeat(): HeartbeatMessage {
    const h = this.all('heartbeat');
    expect(h).toHaveLength(1);
    return h[0];
  }
}

const has = (s: StateMessage, bits: number): boolean => (s.status & bits) === bits;
const outputs = (s: StateMessage): number[] => Array.from(s.outputs);

interface Step {
  /** What the host writes, frames concatenated. */
  send?: (c: Ctx) => Uint8Array | Uint8Array[];
  /** How far the device clock advances after the write, ms. */
  waitMs?: number;
  expect?: (r: Reply, c: Ctx) => void;
}

interface Rule {
  /** Section of docs/serial-protocol.md and what it says. */
  rule: string;
  /** Session versions the rule is run in (default both). */
  versions?: (1 | 2)[];
  device?: Partial<DeviceSpec>;
  /** Start with HELLO [v] and its CAPABILITIES + STATE (default true). */
  negotiate?: boolean;
  steps: Step[];
}

const hello =
  (versions: number[], o: { version?: number; seq?: number } = {}) =>
  (c: Ctx) =>
    c.send({ type: 'hello', versions }, { version: o.version ?? 1, seq: o.seq });

const rules: Rule[] = [
  // ---- 2.5 Receiving --------------------------------------------------------------------------
  {
    rule: '2.5: a frame that fails its CRC is NACKed BAD_CRC (type 0, seq 0), before negotiation too',
    negotiate: false,
    steps: [
      {
        send: (c) => {
          const b = c.heartbeat();
          b[3] ^= 0x20;
          return b;
        },
        expect: (r) => {
          r.only('Nack');
          expect(r.nack()).toEqual({
            type: 'nack',
            nackedType: 0,
            nackedSeq: 0,
            error: ErrorCode.BadCrc,
            detail: 0,
          });
          expect(r.frames[0].frame.version).toBe(1);
        },
      },
    ],
  },
  {
    rule: '2.5: invalid COBS and a frame shorter than header + CRC are NACKed BAD_LENGTH (type 0, seq 0)',
    steps: [
      {
        send: () => Uint8Array.of(0x05, 0x11, 0x00),
        expect: (r) => expect(r.nack()).toMatchObject({ nackedType: 0, error: ErrorCode.BadLength }),
      },
      {
        send: () => Uint8Array.of(...cobsEncode(Uint8Array.of(1, 5, 0, 0)), 0),
        expect: (r) =>
          expect(r.nack()).toMatchObject({ nackedType: 0, nackedSeq: 0, error: ErrorCode.BadLength }),
      },
    ],
  },
  {
    rule: '2.5: a run longer than the largest encoded frame is dropped up to the next 0x00 and NACKed once (BAD_LENGTH); the next frame is read',
    steps: [
      {
        send: (c) => [new Uint8Array(1600).fill(0x55), Uint8Array.of(0), c.heartbeat(77)],
        expect: (r) => {
          r.only('Nack', 'Heartbeat');
          expect(r.nack()).toMatchObject({ nackedType: 0, error: ErrorCode.BadLength });
          expect(r.heartbeat().echoUs).toBe(77);
        },
      },
    ],
  },
  {
    rule: '2.5: repeated 0x00 are padding: no answer',
    steps: [{ send: () => new Uint8Array(8), expect: (r) => r.only() }],
  },
  {
    rule: '2.3: a receiver accepts a non-minimal COBS encoding (a trailing empty block after a full one)',
    versions: [2],
    steps: [
      {
        send: () => nonMinimalCommand(),
        // The frame was read (its seq is in the NACK): D=64 is not this device's D.
        expect: (r) =>
          expect(r.nack()).toMatchObject({
            nackedType: MessageType.Command,
            nackedSeq: nonMinimalSeq,
            error: ErrorCode.WrongDimension,
            detail: 3,
          }),
      },
    ],
  },
  // ---- 3 and 4: session, negotiation ------------------------------------------------------------
  {
    rule: '3: not negotiated: anything but HELLO, HEARTBEAT and ESTOP gets NOT_NEGOTIATED; no STATE is sent',
    negotiate: false,
    steps: [
      {
        send: (c) => c.command(1, [0.1, 0.1, 0.1]),
        waitMs: 100,
        expect: (r) => {
          r.only('Nack');
          expect(r.nack().error).toBe(ErrorCode.NotNegotiated);
        },
      },
      { send: (c) => c.reset(), expect: (r) => expect(r.nack().error).toBe(ErrorCode.NotNegotiated) },
      {
        send: (c) => c.send({ type: 'hold' }, { version: 1 }),
        expect: (r) => expect(r.nack().error).toBe(ErrorCode.NotNegotiated),
      },
    ],
  },
  {
    rule: '4: before negotiation the device answers a HEARTBEAT of any version it speaks, with a version 1 header',
    negotiate: false,
    steps: [
      {
        send: (c) => [
          c.send({ type: 'heartbeat', timeUs: 5, echoUs: 0 }, { version: 1 }),
          c.send({ type: 'heartbeat', timeUs: 6, echoUs: 0 }, { version: 2 }),
        ],
        expect: (r) => {
          r.only('Heartbeat', 'Heartbeat');
          expect(r.frames.map((f) => f.frame.version)).toEqual([1, 1]);
          expect(r.frames.map((f) => (f.message as HeartbeatMessage).echoUs)).toEqual([5, 6]);
          expect((r.frames[0].message as HeartbeatMessage).timeUs).toBe(CLOCK_START_US);
        },
      },
    ],
  },
  {
    rule: '4: before negotiation a HEARTBEAT whose header version the device does not speak gets BAD_VERSION (detail = its highest)',
    negotiate: false,
    steps: [
      {
        send: (c) => c.send({ type: 'heartbeat', timeUs: 5, echoUs: 0 }, { version: 5 }),
        expect: (r) => expect(r.nack()).toMatchObject({ error: ErrorCode.BadVersion, detail: 2 }),
      },
    ],
  },
  {
    rule: '5.1/5: HELLO with n outside 1..8 is BAD_LENGTH (a count, not a dimension)',
    negotiate: false,
    steps: [
      {
        send: (c) => c.raw(MessageType.Hello, [0], { version: 1 }),
        expect: (r) =>
          expect(r.nack()).toMatchObject({ nackedType: MessageType.Hello, error: ErrorCode.BadLength }),
      },
      {
        send: (c) => c.raw(MessageType.Hello, [9, 1, 1, 1, 1, 1, 1, 1, 1, 1], { version: 1 }),
        expect: (r) => expect(r.nack()).toMatchObject({ error: ErrorCode.BadLength }),
      },
      {
        send: (c) => c.raw(MessageType.Hello, [2, 1], { version: 1 }),
        expect: (r) => expect(r.nack()).toMatchObject({ error: ErrorCode.BadLength }),
      },
    ],
  },
  {
    rule: "4: no common version: NACK BAD_VERSION (detail = the device's highest), still not negotiated",
    negotiate: false,
    steps: [
      {
        send: hello([7, 9]),
        expect: (r) =>
          expect(r.nack()).toMatchObject({
            nackedType: MessageType.Hello,
            error: ErrorCode.BadVersion,
            detail: 2,
          }),
      },
      {
        send: (c) => c.command(1, [0, 0, 0]),
        expect: (r) => expect(r.nack().error).toBe(ErrorCode.NotNegotiated),
      },
    ],
  },
  {
    rule: '4: the device picks the highest common version; CAPABILITIES then a STATE at once; every later header carries it',
    negotiate: false,
    steps: [
      {
        send: hello([1, 2]),
        expect: (r) => {
          r.only('Capabilities', 'State');
          const cap = r.capabilities();
          expect(cap).toMatchObject({
            protocolVersion: 2,
            actionDim: 3,
            jointCount: 3,
            sensorCount: 2,
            rateHz: 100,
            watchdogMs: 50,
            watchdogMode: 'latch',
            name: 'resrt-bridge-host',
            firmwareVersion: '0.1.0',
          });
          expect(Array.from(cap.safe)).toEqual(SAFE);
          expect(Array.from(cap.high)).toEqual([f32(0.9), f32(0.9), f32(0.9)]);
          expect(r.frames.map((f) => f.frame.version)).toEqual([2, 2]);
          const s = r.state();
          expect(has(s, Status.Negotiated | Status.SafeHold)).toBe(true);
          expect(s.deviceTimeUs).toBe(CLOCK_START_US);
          expect(outputs(s)).toEqual(SAFE);
        },
      },
    ],
  },
  {
    rule: '4: a version 1 session uses the version 1 CAPABILITIES layout (no watchdog mode byte)',
    versions: [1],
    negotiate: false,
    steps: [
      {
        send: hello([1]),
        expect: (r) => {
          expect(r.capabilities()).toMatchObject({ protocolVersion: 1, watchdogMode: 'latch' });
          expect(r.frames[0].frame.payload.length).toBe(10 + 17 + 5 + 36);
        },
      },
    ],
  },
  {
    rule: '4: a version 1-only firmware answers HELLO [1, 2] with version 1, and a version 2 HOLD with UNKNOWN_TYPE',
    device: { maxVersion: 1 },
    versions: [1],
    negotiate: false,
    steps: [
      { send: hello([1, 2]), expect: (r) => expect(r.capabilities().protocolVersion).toBe(1) },
      {
        send: (c) => c.send({ type: 'hold' }, { version: 1 }),
        expect: (r) => expect(r.nack().error).toBe(ErrorCode.UnknownType),
      },
    ],
  },
  {
    rule: '2.4/4: a device whose STATE does not fit version 1 (20 sensors) offers version 2 only',
    device: { sensors: 20 },
    versions: [2],
    negotiate: false,
    steps: [
      {
        send: hello([1]),
        expect: (r) => expect(r.nack()).toMatchObject({ error: ErrorCode.BadVersion, detail: 2 }),
      },
      {
        send: hello([1, 2]),
        expect: (r) => {
          expect(r.capabilities()).toMatchObject({ protocolVersion: 2, sensorCount: 20 });
          expect(r.state().sensors).toHaveLength(20);
        },
      },
    ],
  },
  {
    rule: '2.4: version 2 carries 64 joints, 64 sensors and 64 actions in one STATE',
    device: { joints: 64, sensors: 64, safe: new Array<number>(64).fill(0.25) },
    versions: [2],
    steps: [
      {
        send: (c) =>
          c.command(
            1,
            Array.from({ length: 64 }, (_, i) => (i - 32) / 32),
          ),
        expect: (r) => {
          const s = r.state();
          expect([s.positions.length, s.sensors.length, s.outputs.length]).toEqual([64, 64, 64]);
          expect(s.outputs[0]).toBe(f32(-0.9));
          expect(s.outputs[63]).toBe(f32(31 / 32 > 0.9 ? 0.9 : 31 / 32));
          expect(s.lastCommandSeq).toBe(1);
        },
      },
    ],
  },
  {
    rule: '4: after negotiation a frame of another header version gets BAD_VERSION (detail = the negotiated version)',
    steps: [
      {
        send: (c) => c.send({ type: 'heartbeat', timeUs: 1, echoUs: 0 }, { version: c.v === 1 ? 2 : 1 }),
        expect: (r, c) => expect(r.nack()).toMatchObject({ error: ErrorCode.BadVersion, detail: c.v }),
      },
    ],
  },
  {
    rule: '4: HELLO is read whatever its header version, also after negotiation: a host that restarts renegotiates',
    steps: [
      {
        send: (c) => c.send({ type: 'hello', versions: [c.v] }, { version: 7 }),
        expect: (r, c) => {
          r.only('Capabilities', 'State');
          expect(r.capabilities().protocolVersion).toBe(c.v);
        },
      },
    ],
  },
  // ---- 3: STATE stream --------------------------------------------------------------------------
  {
    rule: '3: idle STATEs fall on a fixed grid of 1/rate_hz from negotiation: no drift',
    steps: [
      {
        waitMs: 1000,
        expect: (r) => {
          const t = r.states().map((s) => s.deviceTimeUs - CLOCK_START_US);
          expect(t).toEqual(Array.from({ length: 100 }, (_, k) => (k + 1) * PERIOD_US));
        },
      },
    ],
  },
  {
    rule: '3: the grid holds when 1e6/rate_hz is not a whole number of µs (300 Hz: slots at floor(k·1e6/300))',
    device: { rateHz: 300 },
    steps: [
      {
        waitMs: 100,
        expect: (r) =>
          expect(r.states().map((s) => s.deviceTimeUs - CLOCK_START_US)).toEqual(
            Array.from({ length: 30 }, (_, k) => Math.floor(((k + 1) * 1e6) / 300)),
          ),
      },
    ],
  },
  {
    rule: '3: one STATE after every applied COMMAND, carrying its seq, even for several COMMANDs in one write',
    steps: [
      {
        send: (c) => [1, 2, 3, 4, 5].map((s) => c.command(s, [0.1 * s, 0, 0], { flags: FLAG_ACK_REQ })),
        expect: (r) => {
          r.only(...Array.from({ length: 5 }, () => ['Ack', 'State']).flat());
          expect(r.states().map((s) => s.lastCommandSeq)).toEqual([1, 2, 3, 4, 5]);
          expect(r.acks().map((a) => a.ackedSeq)).toEqual([1, 2, 3, 4, 5]);
          expect(r.state().outputs[0]).toBe(f32(0.5));
        },
      },
    ],
  },
  {
    rule: '3: a STATE after a COMMAND restarts the grid: the next idle STATE follows it by one period',
    steps: [
      { waitMs: 3, expect: (r) => r.only() },
      {
        send: (c) => c.command(1, [0, 0, 0], { validityMs: 0 }),
        waitMs: 25,
        expect: (r) =>
          expect(r.states().map((s) => s.deviceTimeUs - CLOCK_START_US)).toEqual([3000, 13000, 23000]),
      },
    ],
  },
  // ---- 5.4 COMMAND --------------------------------------------------------------------------------
  {
    rule: "5.4: the payload length is checked against the frame's own D (BAD_LENGTH, detail = device D), then D against the device's (WRONG_DIM)",
    steps: [
      {
        send: (c) => c.raw(MessageType.Command, [0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        expect: (r) => expect(r.nack()).toMatchObject({ error: ErrorCode.BadLength, detail: 3 }),
      },
      {
        send: (c) => c.raw(MessageType.Command, [0, 0]),
        expect: (r) => expect(r.nack()).toMatchObject({ error: ErrorCode.BadLength, detail: 3 }),
      },
      {
        send: (c) => c.command(9, [0.1, 0.1]),
        expect: (r) =>
          expect(r.nack()).toMatchObject({ nackedSeq: 9, error: ErrorCode.WrongDimension, detail: 3 }),
      },
      {
        send: (c) => c.raw(MessageType.Command, [0, 0, 20, ...new Array<number>(80).fill(0)]),
        expect: (r) => expect(r.nack()).toMatchObject({ error: ErrorCode.WrongDimension, detail: 3 }),
      },
      { expect: (r) => r.only() },
    ],
  },
  {
    rule: '5.4: NaN or infinity: NON_FINITE (detail = index); nothing applied',
    steps: [
      {
        send: (c) => c.command(1, [0.2, NaN, 0]),
        expect: (r) => {
          r.only('Nack');
          expect(r.nack()).toMatchObject({ error: ErrorCode.NonFinite, detail: 1 });
        },
      },
      {
        send: (c) => c.command(2, [0, 0, -Infinity]),
        expect: (r) => expect(r.nack()).toMatchObject({ error: ErrorCode.NonFinite, detail: 2 }),
      },
      {
        waitMs: 10,
        expect: (r) => {
          expect(outputs(r.state())).toEqual(SAFE);
          expect(r.state().lastCommandSeq).toBe(0);
        },
      },
    ],
  },
  {
    rule: '5.4: seq must be newer in 16-bit serial arithmetic: duplicates and older ones get STALE_SEQ (detail = last applied)',
    steps: [
      {
        send: (c) => c.command(65535, [0.1, 0, 0]),
        expect: (r) => expect(r.state().lastCommandSeq).toBe(65535),
      },
      { send: (c) => c.command(0, [0.2, 0, 0]), expect: (r) => expect(r.state().lastCommandSeq).toBe(0) },
      {
        send: (c) => c.command(0, [0.3, 0, 0]),
        expect: (r) =>
          expect(r.nack()).toMatchObject({ error: ErrorCode.StaleSequence, nackedSeq: 0, detail: 0 }),
      },
      {
        send: (c) => c.command(65535, [0.3, 0, 0]),
        expect: (r) => expect(r.nack()).toMatchObject({ error: ErrorCode.StaleSequence, detail: 0 }),
      },
      {
        send: (c) => c.command(0x8000, [0.3, 0, 0]),
        expect: (r) => expect(r.nack()).toMatchObject({ error: ErrorCode.StaleSequence }),
      },
      {
        send: (c) => c.command(0x7fff, [0.3, 0, 0]),
        expect: (r) => expect(r.state().lastCommandSeq).toBe(0x7fff),
      },
    ],
  },
  {
    rule: '4: a new HELLO restarts command numbering',
    steps: [
      { send: (c) => c.command(500, [0.1, 0, 0]) },
      {
        send: (c) => [c.send({ type: 'hello', versions: [c.v] }, { version: 1 }), c.command(3, [0.2, 0, 0])],
        expect: (r) => expect(r.state().lastCommandSeq).toBe(3),
      },
    ],
  },
  {
    rule: '5.4: each value is clamped to [low, high]; CLAMPED says so; the next unclamped command clears it',
    steps: [
      {
        send: (c) => c.command(1, [2, -5, 0.5]),
        expect: (r) => {
          const s = r.state();
          expect(outputs(s)).toEqual([f32(0.9), f32(-0.9), 0.5]);
          expect(has(s, Status.Clamped)).toBe(true);
          expect(has(s, Status.SafeHold)).toBe(false);
        },
      },
      {
        send: (c) => c.command(2, [0.1, 0.1, 0.1]),
        expect: (r) => expect(has(r.state(), Status.Clamped)).toBe(false),
      },
    ],
  },
  {
    rule: '5.4: ACK only when ACK_REQ is set',
    steps: [
      { send: (c) => c.command(1, [0, 0, 0]), expect: (r) => r.only('State') },
      {
        send: (c) => c.command(2, [0, 0, 0], { flags: FLAG_ACK_REQ }),
        expect: (r) => {
          r.only('Ack', 'State');
          expect(r.ack()).toMatchObject({ ackedType: MessageType.Command, ackedSeq: 2 });
        },
      },
    ],
  },
  {
    rule: "3/5.4: a command's validity expires into the safe action (EXPIRED, not latched); the next command applies",
    steps: [
      {
        send: (c) => c.command(1, [0.5, 0.5, 0.5], { validityMs: 20 }),
        waitMs: 20,
        expect: (r) => expect(outputs(r.state())).toEqual([0.5, 0.5, 0.5]),
      },
      {
        waitMs: 1,
        expect: (r) => {
          const s = r.state();
          expect(outputs(s)).toEqual(SAFE);
          expect(has(s, Status.Expired | Status.SafeHold)).toBe(true);
          expect(has(s, Status.Watchdog)).toBe(false);
        },
      },
      {
        send: (c) => c.command(2, [0.3, 0.3, 0.3]),
        expect: (r) => {
          const s = r.state();
          expect(outputs(s)[0]).toBe(f32(0.3));
          expect(s.status & (Status.Expired | Status.SafeHold)).toBe(0);
        },
      },
    ],
  },
  {
    rule: '5.4: check order: a stale seq is STALE_SEQ even while the e-stop is latched; a new one is ESTOPPED',
    steps: [
      { send: (c) => [c.command(10, [0.1, 0, 0]), c.send({ type: 'estop', reason: 'x' })] },
      {
        send: (c) => c.command(10, [0.1, 0, 0]),
        expect: (r) => expect(r.nack().error).toBe(ErrorCode.StaleSequence),
      },
      {
        send: (c) => c.command(11, [0.1, 0, 0]),
        expect: (r) => expect(r.nack().error).toBe(ErrorCode.Estopped),
      },
    ],
  },
  // ---- 3: watchdog ----------------------------------------------------------------------------------
  {
    rule: '3: the watchdog is not armed before the first applied COMMAND',
    steps: [
      {
        waitMs: 1000,
        expect: (r) => {
          const s = r.state();
          expect(has(s, Status.Watchdog)).toBe(false);
          expect(has(s, Status.SafeHold)).toBe(true);
        },
      },
    ],
  },
  {
    rule: '3: no COMMAND for watchdog_ms after one was applied: safe action and WATCHDOG latched; COMMANDs get FAULTED',
    steps: [
      {
        send: (c) => c.command(1, [0.5, 0.5, 0.5]),
        waitMs: 50,
        expect: (r) => expect(has(r.state(), Status.Watchdog)).toBe(false),
      },
      {
        waitMs: 1,
        expect: (r) => {
          const s = r.state();
          expect(has(s, Status.Watchdog | Status.SafeHold)).toBe(true);
          expect(outputs(s)).toEqual(SAFE);
        },
      },
      {
        send: (c) => c.command(2, [0.5, 0.5, 0.5]),
        waitMs: 100,
        expect: (r) => {
          expect(r.nack().error).toBe(ErrorCode.Faulted);
          expect(outputs(r.state())).toEqual(SAFE);
        },
      },
    ],
  },
  {
    rule: '3: watchdog mode hold (version 2): the safe action and WATCHDOG_HOLD, nothing latched; the next COMMAND applies and clears it',
    device: { watchdogMode: 'hold' },
    versions: [2],
    steps: [
      {
        send: (c) => c.command(1, [0.5, 0.5, 0.5]),
        waitMs: 51,
        expect: (r) => {
          const s = r.state();
          expect(has(s, Status.WatchdogHold | Status.SafeHold)).toBe(true);
          expect(has(s, Status.Watchdog)).toBe(false);
          expect(outputs(s)).toEqual(SAFE);
        },
      },
      {
        send: (c) => c.command(2, [0.4, 0.4, 0.4]),
        expect: (r) => {
          r.only('State');
          const s = r.state();
          expect(outputs(s)[0]).toBe(f32(0.4));
          expect(s.status & (Status.WatchdogHold | Status.SafeHold)).toBe(0);
        },
      },
      { waitMs: 51, expect: (r) => expect(has(r.state(), Status.WatchdogHold)).toBe(true) },
    ],
  },
  {
    rule: '3: a hold-mode device reports it in CAPABILITIES (version 2) and latches in a version 1 session',
    device: { watchdogMode: 'hold' },
    versions: [1],
    negotiate: false,
    steps: [
      {
        send: (c) => [c.send({ type: 'hello', versions: [2] }, { version: 1 })],
        expect: (r) => expect(r.capabilities().watchdogMode).toBe('hold'),
      },
      {
        send: (c) => [
          c.send({ type: 'hello', versions: [1] }, { version: 1 }),
          c.command(1, [0.5, 0.5, 0.5]),
        ],
        waitMs: 51,
        expect: (r) => expect(has(r.state(), Status.Watchdog)).toBe(true),
      },
    ],
  },
  // ---- 5.7 RESET --------------------------------------------------------------------------------
  {
    rule: '5.7: RESET without a HEARTBEAT within watchdog_ms: STALE_HEARTBEAT, nothing changes',
    steps: [
      {
        send: (c) => [c.command(1, [0.5, 0.5, 0.5]), c.reset()],
        expect: (r) => {
          expect(r.nack()).toMatchObject({ nackedType: MessageType.Reset, error: ErrorCode.StaleHeartbeat });
          expect(outputs(r.state())).toEqual([0.5, 0.5, 0.5]);
        },
      },
      { send: (c) => [c.heartbeat(), c.command(2, [0.5, 0.5, 0.5])], waitMs: 49 },
      { send: (c) => [c.command(3, [0.5, 0.5, 0.5])], waitMs: 2 },
      { send: (c) => c.reset(), expect: (r) => expect(r.nack().error).toBe(ErrorCode.StaleHeartbeat) },
    ],
  },
  {
    rule: '3/5.7: after any RESET, also with nothing latched, the outputs are the safe action until the next applied COMMAND, which arms the watchdog again (issue 18)',
    steps: [
      {
        send: (c) => c.command(1, [0.4, -0.4, 0.4]),
        expect: (r) => expect(outputs(r.state())).toEqual([f32(0.4), f32(-0.4), f32(0.4)]),
      },
      {
        send: (c) => [c.heartbeat(), c.reset()],
        expect: (r) => {
          r.only('Heartbeat', 'Ack', 'State');
          const s = r.state();
          expect(outputs(s)).toEqual(SAFE);
          expect(has(s, Status.SafeHold)).toBe(true);
        },
      },
      {
        waitMs: 500,
        expect: (r) => {
          for (const s of r.states()) {
            expect(outputs(s)).toEqual(SAFE);
            expect(has(s, Status.SafeHold)).toBe(true);
            expect(has(s, Status.Watchdog)).toBe(false);
          }
        },
      },
      {
        send: (c) => c.command(2, [0.2, 0.2, 0.2]),
        waitMs: 51,
        expect: (r) => {
          const s = r.state();
          expect(has(s, Status.Watchdog)).toBe(true);
          expect(outputs(s)).toEqual(SAFE);
        },
      },
    ],
  },
  {
    rule: '5.7: RESET after a fresh HEARTBEAT clears ESTOP and WATCHDOG; commands apply again',
    steps: [
      {
        send: (c) => c.command(1, [0.5, 0.5, 0.5]),
        waitMs: 60,
        expect: (r) => expect(has(r.state(), Status.Watchdog)).toBe(true),
      },
      {
        send: (c) => c.send({ type: 'estop', reason: 'r' }),
        expect: (r) => expect(has(r.state(), Status.Estop | Status.Watchdog)).toBe(true),
      },
      {
        send: (c) => [c.heartbeat(), c.reset(0)],
        expect: (r) => {
          r.only('Heartbeat', 'State');
          expect(r.state().status & (Status.Estop | Status.Watchdog)).toBe(0);
        },
      },
      {
        send: (c) => c.command(2, [0.3, 0.3, 0.3]),
        expect: (r) => expect(outputs(r.state())[0]).toBe(f32(0.3)),
      },
    ],
  },
  {
    rule: '3: latches survive a new HELLO',
    steps: [
      { send: (c) => c.send({ type: 'estop', reason: 'r' }) },
      { send: hello([2, 1]), expect: (r) => expect(has(r.state(), Status.Estop)).toBe(true) },
    ],
  },
  // ---- 5.6 ESTOP --------------------------------------------------------------------------------
  {
    rule: '5.6: ESTOP latches and is ACKed whatever its payload (a bad length, a 65-byte reason) or header version',
    steps: [
      {
        send: (c) => c.raw(MessageType.Estop, [5, 65], { flags: FLAG_ACK_REQ, seq: 40 }),
        expect: (r) => {
          r.only('Ack', 'State');
          expect(r.ack()).toMatchObject({ ackedType: MessageType.Estop, ackedSeq: 40 });
          expect(has(r.state(), Status.Estop | Status.SafeHold)).toBe(true);
        },
      },
      {
        send: (c) =>
          c.raw(MessageType.Estop, [65, ...new Array<number>(65).fill(0x61)], {
            flags: FLAG_ACK_REQ,
            seq: 41,
          }),
        expect: (r) => {
          r.only('Ack', 'State');
          expect(r.ack().ackedSeq).toBe(41);
        },
      },
      {
        send: (c) => c.raw(MessageType.Estop, [], { flags: FLAG_ACK_REQ, seq: 42, version: 9 }),
        expect: (r) => expect(r.ack().ackedSeq).toBe(42),
      },
    ],
  },
  {
    rule: '3/5.6: ESTOP before negotiation latches (and is ACKed); the latch shows after HELLO',
    negotiate: false,
    steps: [
      {
        send: (c) => c.send({ type: 'estop', reason: 'button' }, { flags: FLAG_ACK_REQ, version: 1, seq: 3 }),
        expect: (r) => {
          r.only('Ack');
          expect(r.frames[0].frame.version).toBe(1);
        },
      },
      {
        send: (c) => c.send({ type: 'hello', versions: [c.v] }, { version: 1 }),
        expect: (r) => expect(has(r.state(), Status.Estop)).toBe(true),
      },
    ],
  },
  {
    rule: '3: ESTOP disarms the watchdog (the e-stop, not a watchdog fault, is what latched)',
    steps: [
      {
        send: (c) => [c.command(1, [0.5, 0.5, 0.5]), c.send({ type: 'estop', reason: '' })],
        waitMs: 200,
        expect: (r) => {
          const s = r.state();
          expect(has(s, Status.Estop)).toBe(true);
          expect(has(s, Status.Watchdog)).toBe(false);
          expect(outputs(s)).toEqual(SAFE);
        },
      },
    ],
  },
  // ---- 5.5 HEARTBEAT ------------------------------------------------------------------------------
  {
    rule: '5.5/5.8: HEARTBEAT is answered by a HEARTBEAT echoing its time, never by an ACK (ACK_REQ is ignored)',
    steps: [
      {
        send: (c) => c.send({ type: 'heartbeat', timeUs: 4242, echoUs: 0 }, { flags: FLAG_ACK_REQ }),
        expect: (r) => {
          r.only('Heartbeat');
          expect(r.heartbeat()).toMatchObject({ echoUs: 4242, timeUs: CLOCK_START_US });
        },
      },
    ],
  },
  {
    rule: '5.5: a HEARTBEAT of the wrong length is BAD_LENGTH and does not count for RESET',
    steps: [
      {
        send: (c) => c.raw(MessageType.Heartbeat, [1, 2, 3]),
        expect: (r) => expect(r.nack().error).toBe(ErrorCode.BadLength),
      },
      { send: (c) => c.reset(), expect: (r) => expect(r.nack().error).toBe(ErrorCode.StaleHeartbeat) },
    ],
  },
  // ---- 5.10 CONFIG --------------------------------------------------------------------------------
  {
    rule: '5.10: CONFIG narrows the clamp and sets the watchdog; later CAPABILITIES show them',
    steps: [
      {
        send: (c) => c.config(100, [-0.5, -0.5, -0.9], [0.5, 0.25, 0.9]),
        expect: (r) => {
          r.only('Ack');
          expect(r.ack().ackedType).toBe(MessageType.Config);
        },
      },
      {
        send: (c) => c.command(1, [0.7, 0.7, 0.7]),
        expect: (r) => expect(outputs(r.state())).toEqual([0.5, 0.25, f32(0.7)]),
      },
      { waitMs: 100, expect: (r) => expect(has(r.state(), Status.Watchdog)).toBe(false) },
      { waitMs: 1, expect: (r) => expect(has(r.state(), Status.Watchdog)).toBe(true) },
      {
        send: hello([2, 1]),
        expect: (r) => {
          const cap = r.capabilities();
          expect(cap.watchdogMs).toBe(100);
          expect(Array.from(cap.high)).toEqual([0.5, 0.25, f32(0.9)]);
        },
      },
    ],
  },
  {
    rule: '5.10: CONFIG outside the factory limits, low > high, a non-finite bound or a watchdog outside 10..60000: BAD_CONFIG, nothing changes',
    steps: [
      {
        send: (c) => c.config(100, [-1, -0.5, -0.5], [0.5, 0.5, 0.5]),
        expect: (r) => expect(r.nack().error).toBe(ErrorCode.BadConfig),
      },
      {
        send: (c) => c.config(100, [0.2, -0.5, -0.5], [0.1, 0.5, 0.5]),
        expect: (r) => expect(r.nack().error).toBe(ErrorCode.BadConfig),
      },
      {
        send: (c) => c.config(100, [NaN, -0.5, -0.5], [0.5, 0.5, 0.5]),
        expect: (r) => expect(r.nack().error).toBe(ErrorCode.BadConfig),
      },
      {
        send: (c) => c.config(5, [-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]),
        expect: (r) => expect(r.nack().error).toBe(ErrorCode.BadConfig),
      },
      {
        send: (c) => c.command(1, [0.8, 0.8, 0.8]),
        waitMs: 51,
        expect: (r) => {
          expect(r.states()[0].outputs[0]).toBe(f32(0.8));
          expect(has(r.state(), Status.Watchdog)).toBe(true);
        },
      },
    ],
  },
  {
    rule: '5.10: a malformed CONFIG gets the framing errors: BAD_LENGTH (short), WRONG_DIM (another D); nothing changes',
    steps: [
      {
        send: (c) => c.raw(MessageType.Config, [100, 0], { flags: FLAG_ACK_REQ }),
        expect: (r) => expect(r.nack()).toMatchObject({ error: ErrorCode.BadLength, detail: 3 }),
      },
      {
        send: (c) => c.config(100, [-0.5, -0.5], [0.5, 0.5]),
        expect: (r) => expect(r.nack()).toMatchObject({ error: ErrorCode.WrongDimension, detail: 3 }),
      },
      {
        send: (c) => c.command(1, [0.8, 0.8, 0.8]),
        expect: (r) => expect(r.state().outputs[0]).toBe(f32(0.8)),
      },
    ],
  },
  {
    rule: '5.10: new limits bind at once: a command being held is clamped again (CLAMPED); the safe action is not',
    steps: [
      {
        send: (c) => c.command(1, [0.8, -0.8, 0.1]),
        expect: (r) => expect(outputs(r.state())).toEqual([f32(0.8), f32(-0.8), f32(0.1)]),
      },
      {
        send: (c) => c.config(50, [-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]),
        expect: (r) => {
          r.only('Ack', 'State');
          const s = r.state();
          expect(outputs(s)).toEqual([0.5, -0.5, f32(0.1)]);
          expect(has(s, Status.Clamped)).toBe(true);
        },
      },
    ],
  },
  {
    rule: '5.10: CONFIG is accepted while a latch is set (a host reconnecting to a latched device configures it before it clears the latch)',
    steps: [
      { send: (c) => c.send({ type: 'estop', reason: '' }) },
      {
        send: (c) => c.config(80, [-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]),
        expect: (r) => {
          r.only('Ack');
          expect(r.ack().ackedType).toBe(MessageType.Config);
        },
      },
    ],
  },
  // ---- 5.11 HOLD (version 2) ------------------------------------------------------------------------
  {
    rule: '5.11: HOLD: the safe action now, the watchdog disarmed until the next applied COMMAND, which arms it again',
    versions: [2],
    steps: [
      { send: (c) => c.command(1, [0.5, 0.5, 0.5]) },
      {
        send: (c) => c.send({ type: 'hold' }, { flags: FLAG_ACK_REQ, seq: 60 }),
        expect: (r) => {
          r.only('Ack', 'State');
          expect(r.ack()).toMatchObject({ ackedType: MessageType.Hold, ackedSeq: 60 });
          expect(outputs(r.state())).toEqual(SAFE);
          expect(has(r.state(), Status.SafeHold)).toBe(true);
        },
      },
      {
        waitMs: 2000,
        expect: (r) => {
          for (const s of r.states()) {
            expect(has(s, Status.Watchdog)).toBe(false);
            expect(outputs(s)).toEqual(SAFE);
          }
        },
      },
      {
        send: (c) => c.command(2, [0.3, 0.3, 0.3]),
        waitMs: 51,
        expect: (r) => expect(has(r.state(), Status.Watchdog)).toBe(true),
      },
    ],
  },
  {
    rule: '5.11: HOLD leaves latches alone (ACKed while the e-stop is latched); a HOLD with a payload is BAD_LENGTH',
    versions: [2],
    steps: [
      { send: (c) => c.send({ type: 'estop', reason: '' }) },
      {
        send: (c) => c.send({ type: 'hold' }, { flags: FLAG_ACK_REQ }),
        expect: (r) => {
          expect(r.ack().ackedType).toBe(MessageType.Hold);
          expect(has(r.state(), Status.Estop)).toBe(true);
        },
      },
      {
        send: (c) => c.raw(MessageType.Hold, [1]),
        expect: (r) => expect(r.nack().error).toBe(ErrorCode.BadLength),
      },
    ],
  },
  {
    rule: '5.11: version 1 has no HOLD: UNKNOWN_TYPE',
    versions: [1],
    steps: [
      {
        send: (c) => c.send({ type: 'hold' }),
        expect: (r) =>
          expect(r.nack()).toMatchObject({ nackedType: MessageType.Hold, error: ErrorCode.UnknownType }),
      },
    ],
  },
  // ---- 5 messages ---------------------------------------------------------------------------------
  {
    rule: '5: a type the device does not accept (unknown, or device → host) is UNKNOWN_TYPE',
    steps: [
      {
        send: (c) => c.raw(0x42, []),
        expect: (r) => expect(r.nack()).toMatchObject({ nackedType: 0x42, error: ErrorCode.UnknownType }),
      },
      {
        send: (c) => c.raw(MessageType.State, [1, 2, 3]),
        expect: (r) =>
          expect(r.nack()).toMatchObject({ nackedType: MessageType.State, error: ErrorCode.UnknownType }),
      },
    ],
  },
];

// ---- a COMMAND whose COBS encoding may end in an empty block after a full one -----------------------

const nonMinimalSeq = (() => {
  // D=64 with every payload byte non-zero except the top byte of action[0] (a denormal): the
  // frame ends in a run of exactly 254 non-zero bytes (252 payload + 2 CRC), one full COBS block.
  for (let seq = 0x0101; ; seq++) {
    if ((seq & 0xff) === 0 || seq >> 8 === 0) continue;
    const raw = commandRaw(seq);
    if (raw[raw.length - 1] !== 0 && raw[raw.length - 2] !== 0) return seq;
  }
})();

function commandRaw(seq: number): Uint8Array {
  const action = new Float32Array(64).fill(0.3);
  action[0] = new Float32Array(new Uint32Array([0x000116c2]).buffer)[0];
  const payload = new Uint8Array(3 + 256);
  const view = new DataView(payload.buffer);
  view.setUint16(0, 0x0101, true);
  payload[2] = 64;
  for (let i = 0; i < 64; i++) view.setFloat32(3 + 4 * i, action[i], true);
  return serializeFrame({ version: 2, type: MessageType.Command, seq, flags: 1, payload });
}

function nonMinimalCommand(): Uint8Array {
  const raw = commandRaw(nonMinimalSeq);
  const minimal = cobsEncode(raw);
  // Minimal form: the final block is FF + 254 bytes. The non-minimal form appends an empty block.
  expect(minimal[minimal.length - 255]).toBe(0xff);
  expect(crc16(raw, 0, raw.length - 2)).toBe(raw[raw.length - 2] | (raw[raw.length - 1] << 8));
  return Uint8Array.of(...minimal, 0x01, 0x00);
}

// ---- the runner -------------------------------------------------------------------------------------

let bins = { full: '', v1: '' };
beforeAll(() => {
  bins = { full: buildHostFirmware('full'), v1: buildHostFirmware('v1') };
});

interface Run {
  transcript: unknown[];
}
const runs = new Map<string, Run[]>();

async function runRule(
  rule: Rule,
  v: 1 | 2,
  start: (spec: DeviceSpec) => Promise<DeviceUnderTest>,
): Promise<unknown[]> {
  const spec = { ...baseSpec, ...rule.device };
  const dut = await start(spec);
  const c = new Ctx(v, spec);
  const all: Received[] = [];
  try {
    const steps: Step[] =
      rule.negotiate === false
        ? rule.steps
        : [{ send: hello([v]), expect: (r) => r.only('Capabilities', 'State') }, ...rule.steps];
    for (const [k, step] of steps.entries()) {
      const out = step.send?.(c) ?? new Uint8Array(0);
      const bytes = out instanceof Uint8Array ? out : Uint8Array.from(out.flatMap((b) => Array.from(b)));
      const got = await exchange(dut, bytes, Math.round((step.waitMs ?? 0) * 1000));
      all.push(...got);
      try {
        step.expect?.(new Reply(got), c);
      } catch (err) {
        (err as Error).message = `${dut.name}, version ${v}, step ${k}: ${(err as Error).message}`;
        throw err;
      }
    }
  } finally {
    await dut.close();
  }
  return transcript(all);
}

describe.each([
  ['C firmware over a pty', (spec: DeviceSpec) => startFirmwareDevice(bins, spec)],
  ['TypeScript DeviceCore', (spec: DeviceSpec) => Promise.resolve(startTsDevice(spec))],
])('serial protocol conformance: %s', (_name, start) => {
  for (const rule of rules) {
    for (const v of rule.versions ?? [1, 2]) {
      it(`v${v} ${rule.rule}`, async () => {
        const t = await runRule(rule, v as 1 | 2, start);
        const key = `${v} ${rule.rule}`;
        runs.set(key, [...(runs.get(key) ?? []), { transcript: t }]);
      });
    }
  }
});

describe('serial protocol conformance: both implementations', () => {
  it('send identical transcripts for every rule', () => {
    let compared = 0;
    for (const [key, r] of runs) {
      if (r.length !== 2) continue;
      expect(r[1].transcript, `transcripts differ: ${key}`).toEqual(r[0].transcript);
      compared++;
    }
    // Every rule ran on both (a rule that failed on one side has already failed above).
    const expected = rules.reduce((n, rule) => n + (rule.versions ?? [1, 2]).length, 0);
    expect(compared).toBe(expected);
  });
});

afterAll(() => runs.clear());
