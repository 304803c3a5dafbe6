/**
 * Binary payloads of the MQTT bridge (docs/mqtt-topics.md). Every message starts with a format
 * version byte and a message-type byte, then little-endian fields; arrays are float32. Decoders
 * are strict: a payload that is short, long, of another version or type, or carries a non-finite
 * number is rejected with a PayloadError, never half-read.
 */
import { ResrtError } from '../../util/errors.js';

export const PAYLOAD_FORMAT_VERSION = 1;

export const MessageType = {
  command: 1,
  state: 2,
  estop: 3,
  reset: 4,
  // 5 is a camera frame, on its own topic (src/hw/camera/mqtt-camera.ts).
  hold: 6,
} as const;
export type MessageTypeName = keyof typeof MessageType;

export type PayloadRejectReason = 'malformed' | 'version' | 'type' | 'dimension' | 'non-finite' | 'range';

export class PayloadError extends ResrtError {
  constructor(
    readonly reason: PayloadRejectReason,
    message: string,
    hint?: string,
  ) {
    super(message, hint);
    this.name = 'PayloadError';
  }
}

/** State flag bits. */
export const StateFlags = {
  /** An e-stop is latched; only a reset message clears it. */
  estopLatched: 1 << 0,
  /** The plant holds its safe state: no valid command yet, the watchdog fired, or a hold message. */
  watchdogHold: 1 << 1,
  /** Watchdog mode latch: the watchdog fired and only a reset message clears it. */
  watchdogLatched: 1 << 2,
} as const;

export interface CommandPayload {
  /** Random per sender connection, so a restarted sender is not mistaken for a replay. */
  session: number;
  seq: number;
  /** Sender wall clock (epoch ms) when the command was sent. */
  sentAtMs: number;
  validForMs: number;
  action: Float32Array;
}

export interface StatePayload {
  flags: number;
  seq: number;
  deviceTimeUs: number;
  /** Session and sequence of the last command the device applied (0, 0 before any). */
  lastCommandSession: number;
  lastCommandSeq: number;
  positions: Float32Array;
  velocities: Float32Array;
  efforts: Float32Array;
  sensors: Float32Array;
}

export interface EstopPayload {
  reason: string;
}

/** Reset and hold: a nonce the device echoes on the events topic when it acted. */
export interface ResetPayload {
  nonce: number;
}

// Layouts (byte offsets). Fixed-size headers keep decoding a handful of DataView reads.
const HEADER = 2; // version u8, type u8
const COMMAND_HEADER = 24; // + dim u16, session u32, seq u32, validForMs u32, sentAtMs f64
const STATE_HEADER = 28; // + flags u16, seq u32, deviceTimeUs f64, lastSession u32, lastSeq u32, joints u16, sensors u16
const ESTOP_HEADER = 4; // + reason length u16, utf-8 reason
const NONCE_SIZE = 8; // reset and hold: + reserved u16, nonce u32
const MAX_DIM = 0xffff;
const MAX_REASON_BYTES = 1024;

function isU32(v: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

function header(view: DataView, type: MessageTypeName): void {
  view.setUint8(0, PAYLOAD_FORMAT_VERSION);
  view.setUint8(1, MessageType[type]);
}

function checkHeader(bytes: Uint8Array, type: MessageTypeName, minLength: number): DataView {
  if (bytes.length < HEADER) {
    throw new PayloadError('malformed', `${type} payload has ${bytes.length} bytes, too short for a header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint8(0);
  if (version !== PAYLOAD_FORMAT_VERSION) {
    throw new PayloadError(
      'version',
      `${type} payload has format version ${version}, this build speaks ${PAYLOAD_FORMAT_VERSION}`,
      'run the same resrt payload format on the robot and the controller',
    );
  }
  const got = view.getUint8(1);
  if (got !== MessageType[type]) {
    throw new PayloadError('type', `expected a ${type} message (type ${MessageType[type]}), got type ${got}`);
  }
  if (bytes.length < minLength) {
    throw new PayloadError(
      'malformed',
      `${type} payload has ${bytes.length} bytes, needs at least ${minLength}`,
    );
  }
  return view;
}

function writeFloats(view: DataView, offset: number, values: ArrayLike<number>, what: string): number {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) {
      throw new PayloadError('non-finite', `${what}[${i}] is ${v}`, 'send finite numbers only');
    }
    view.setFloat32(offset, v, true);
    offset += 4;
  }
  return offset;
}

function readFloats(view: DataView, offset: number, count: number, what: string): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const v = view.getFloat32(offset + 4 * i, true);
    if (!Number.isFinite(v)) throw new PayloadError('non-finite', `${what}[${i}] is ${v}`);
    out[i] = v;
  }
  return out;
}

export function encodeCommand(cmd: CommandPayload): Uint8Array {
  const dim = cmd.action.length;
  if (dim === 0 || dim > MAX_DIM) {
    throw new PayloadError('dimension', `command action has ${dim} dimensions, must be 1..${MAX_DIM}`);
  }
  if (!isU32(cmd.session) || !isU32(cmd.seq)) {
    throw new PayloadError('range', `command session ${cmd.session} / seq ${cmd.seq} must be u32 integers`);
  }
  if (!isU32(cmd.validForMs) || cmd.validForMs === 0) {
    throw new PayloadError('range', `validForMs ${cmd.validForMs} must be an integer in 1..2^32-1`);
  }
  if (!Number.isFinite(cmd.sentAtMs)) {
    throw new PayloadError('non-finite', `command sentAtMs is ${cmd.sentAtMs}`);
  }
  const bytes = new Uint8Array(COMMAND_HEADER + 4 * dim);
  const view = new DataView(bytes.buffer);
  header(view, 'command');
  view.setUint16(2, dim, true);
  view.setUint32(4, cmd.session, true);
  view.setUint32(8, cmd.seq, true);
  view.setUint32(12, cmd.validForMs, true);
  view.setFloat64(16, cmd.sentAtMs, true);
  writeFloats(view, COMMAND_HEADER, cmd.action, 'action');
  return bytes;
}

/** Decodes a command; `expectedDim` rejects a command shaped for another robot. */
export function decodeCommand(bytes: Uint8Array, expectedDim?: number): CommandPayload {
  const view = checkHeader(bytes, 'command', COMMAND_HEADER);
  const dim = view.getUint16(2, true);
  if (bytes.length !== COMMAND_HEADER + 4 * dim) {
    throw new PayloadError('malformed', `command declares ${dim} dims but has ${bytes.length} bytes`);
  }
  if (expectedDim !== undefined && dim !== expectedDim) {
    throw new PayloadError(
      'dimension',
      `command has ${dim} action dimensions, this robot takes ${expectedDim}`,
      'check the controller is configured for this robot',
    );
  }
  const validForMs = view.getUint32(12, true);
  if (validForMs === 0) throw new PayloadError('range', 'command validForMs is 0');
  const sentAtMs = view.getFloat64(16, true);
  if (!Number.isFinite(sentAtMs)) throw new PayloadError('non-finite', `command sentAtMs is ${sentAtMs}`);
  return {
    session: view.getUint32(4, true),
    seq: view.getUint32(8, true),
    validForMs,
    sentAtMs,
    action: readFloats(view, COMMAND_HEADER, dim, 'action'),
  };
}

export function encodeState(state: StatePayload): Uint8Array {
  const joints = state.positions.length;
  if (state.velocities.length !== joints || state.efforts.length !== joints) {
    throw new PayloadError(
      'dimension',
      `state has ${joints} positions, ${state.velocities.length} velocities, ${state.efforts.length} efforts`,
      'positions, velocities and efforts must have one entry per joint',
    );
  }
  if (joints > MAX_DIM || state.sensors.length > MAX_DIM) {
    throw new PayloadError('dimension', `state arrays longer than ${MAX_DIM}`);
  }
  if (!isU32(state.seq) || !isU32(state.lastCommandSession) || !isU32(state.lastCommandSeq)) {
    throw new PayloadError('range', 'state seq / lastCommandSession / lastCommandSeq must be u32 integers');
  }
  if (!Number.isInteger(state.flags) || state.flags < 0 || state.flags > 0xffff) {
    throw new PayloadError('range', `state flags ${state.flags} must fit in u16`);
  }
  if (!Number.isFinite(state.deviceTimeUs)) {
    throw new PayloadError('non-finite', `state deviceTimeUs is ${state.deviceTimeUs}`);
  }
  const bytes = new Uint8Array(STATE_HEADER + 4 * (3 * joints + state.sensors.length));
  const view = new DataView(bytes.buffer);
  header(view, 'state');
  view.setUint16(2, state.flags, true);
  view.setUint32(4, state.seq, true);
  view.setFloat64(8, state.deviceTimeUs, true);
  view.setUint32(16, state.lastCommandSession, true);
  view.setUint32(20, state.lastCommandSeq, true);
  view.setUint16(24, joints, true);
  view.setUint16(26, state.sensors.length, true);
  let off = writeFloats(view, STATE_HEADER, state.positions, 'positions');
  off = writeFloats(view, off, state.velocities, 'velocities');
  off = writeFloats(view, off, state.efforts, 'efforts');
  writeFloats(view, off, state.sensors, 'sensors');
  return bytes;
}

/** Decodes a state; `expected` rejects a state shaped unlike the robot's capabilities. */
export function decodeState(
  bytes: Uint8Array,
  expected?: { jointCount: number; sensorCount: number },
): StatePayload {
  const view = checkHeader(bytes, 'state', STATE_HEADER);
  const joints = view.getUint16(24, true);
  const sensors = view.getUint16(26, true);
  if (bytes.length !== STATE_HEADER + 4 * (3 * joints + sensors)) {
    throw new PayloadError(
      'malformed',
      `state declares ${joints} joints and ${sensors} sensors but has ${bytes.length} bytes`,
    );
  }
  if (expected && (joints !== expected.jointCount || sensors !== expected.sensorCount)) {
    throw new PayloadError(
      'dimension',
      `state has ${joints} joints / ${sensors} sensors, capabilities say ${expected.jointCount} / ${expected.sensorCount}`,
      'the device must publish capabilities that match its states',
    );
  }
  const deviceTimeUs = view.getFloat64(8, true);
  if (!Number.isFinite(deviceTimeUs)) throw new PayloadError('non-finite', `deviceTimeUs is ${deviceTimeUs}`);
  let off = STATE_HEADER;
  const positions = readFloats(view, off, joints, 'positions');
  off += 4 * joints;
  const velocities = readFloats(view, off, joints, 'velocities');
  off += 4 * joints;
  const efforts = readFloats(view, off, joints, 'efforts');
  off += 4 * joints;
  return {
    flags: view.getUint16(2, true),
    seq: view.getUint32(4, true),
    deviceTimeUs,
    lastCommandSession: view.getUint32(16, true),
    lastCommandSeq: view.getUint32(20, true),
    positions,
    velocities,
    efforts,
    sensors: readFloats(view, off, sensors, 'sensors'),
  };
}

export function encodeEstop(msg: EstopPayload): Uint8Array {
  let reason = Buffer.from(msg.reason, 'utf8');
  if (reason.length > MAX_REASON_BYTES) reason = reason.subarray(0, MAX_REASON_BYTES);
  const bytes = new Uint8Array(ESTOP_HEADER + reason.length);
  const view = new DataView(bytes.buffer);
  header(view, 'estop');
  view.setUint16(2, reason.length, true);
  bytes.set(reason, ESTOP_HEADER);
  return bytes;
}

export function decodeEstop(bytes: Uint8Array): EstopPayload {
  const view = checkHeader(bytes, 'estop', ESTOP_HEADER);
  const len = view.getUint16(2, true);
  if (bytes.length !== ESTOP_HEADER + len) {
    throw new PayloadError('malformed', `estop declares a ${len}-byte reason but has ${bytes.length} bytes`);
  }
  // A garbled reason must not stop an e-stop from latching: invalid UTF-8 decodes with U+FFFD.
  return { reason: Buffer.from(bytes.subarray(ESTOP_HEADER)).toString('utf8') };
}

/** A reset (type 4) or hold (type 6; type 5 is a camera frame) message: both carry only a nonce. */
export function encodeReset(msg: ResetPayload, type: 'reset' | 'hold' = 'reset'): Uint8Array {
  if (!isU32(msg.nonce)) throw new PayloadError('range', `${type} nonce ${msg.nonce} must be a u32 integer`);
  const bytes = new Uint8Array(NONCE_SIZE);
  const view = new DataView(bytes.buffer);
  header(view, type);
  view.setUint32(4, msg.nonce, true);
  return bytes;
}

export function decodeReset(bytes: Uint8Array, type: 'reset' | 'hold' = 'reset'): ResetPayload {
  const view = checkHeader(bytes, type, NONCE_SIZE);
  if (bytes.length !== NONCE_SIZE) {
    throw new PayloadError('malformed', `${type} payload has ${bytes.length} bytes, expected ${NONCE_SIZE}`);
  }
  return { nonce: view.getUint32(4, true) };
}
