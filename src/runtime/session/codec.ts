/**
 * The compact binary form of a batch of transitions, shared by the MQTT wire, the actor's spool
 * and the learner's write-ahead log (see docs/sessions.md, "Encodings"). Little-endian:
 *
 *   u32 magic 'RTB1' | u8 format (1) | u8 reserved | u16 robotId bytes | robotId (UTF-8)
 *   u16 obsDim O | u16 actionDim A | u32 count N | f64 firstSeq
 *   N × record: u32 episode | u32 step | u32 policyVersion | u16 safetyEvents | u8 flags | u8 share
 *               f32 reward | f32 obs[O] | f32 baseAction[A] | f32 residual[A] | f32 action[A]
 *               f32 nextObs[O] | f32 nextBaseAction[A]
 *   u32 CRC-32 of everything before it
 *
 * `share` is the episode's planned exploring share s* × 255 when the actor mixes (flag `mixed`),
 * else 0: older decoders read the byte as padding and the two new flag bits as unknown, so the
 * format number stays 1.
 *
 * Format 2 is format 1 with a camera section (src/runtime/session/camera-batch.ts): after firstSeq
 * the camera header, and after each record its camera flags and payloads. A batch without camera
 * data is written as format 1, byte for byte what it was, and both formats decode.
 *
 * Sequence numbers inside a batch are consecutive (firstSeq + i): actors number their transitions
 * and never reorder them, which is what makes (robotId, seq) a dedupe key.
 */
import { crc32 } from 'node:zlib';
import type { Transition } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import {
  cameraLayoutOf,
  cameraSectionBytes,
  readCameraHeader,
  readRecordCamera,
  writeCameraHeader,
  writeRecordCamera,
  type CameraLayout,
  type CameraPayload,
  type TransitionCamera,
} from './camera-batch.js';

export const BATCH_MAGIC = 0x31425452; // 'RTB1' little-endian
export const BATCH_FORMAT = 1;
/** Format 1 plus camera sections (features or JPEG frames per transition). */
export const BATCH_FORMAT_CAMERAS = 2;

export const Flag = {
  terminated: 1,
  truncated: 2,
  intervention: 4,
  success: 8,
  /** A person labelled the outcome (dashboard, terminal key, MQTT). */
  labelled: 16,
  /** Conservative mixing held the residual back at this step (weight < 1). */
  heldBack: 32,
  /** The actor mixes: the share byte holds the episode's planned share. */
  mixed: 64,
} as const;

/** A transition as a session moves it: numbered, with the base's action at nextObs. */
export interface SessionTransition extends Transition {
  robotId: string;
  seq: number;
  episode: number;
  step: number;
  /** The base's action at nextObs (zeros after termination); the learner's target needs it. */
  nextBaseAction: Float32Array;
  /** The episode succeeded (set on its last step only). */
  success: boolean;
  /** A person labelled this episode's outcome. */
  labelled: boolean;
  /** Conservative mixing held the residual back at this step (its weight was < 1). */
  heldBack?: boolean;
  /** With conservative mixing: the episode's planned exploring share s*, to 1/255. */
  mixingShare?: number;
  /** A camera session's features or JPEG frames of obs and nextObs (batch format 2). */
  camera?: TransitionCamera;
}

export interface TransitionBatch {
  robotId: string;
  obsDim: number;
  actionDim: number;
  firstSeq: number;
  transitions: SessionTransition[];
  /** What the camera payloads hold (format 2); absent for a batch without camera data. */
  camera?: CameraLayout;
}

export class BatchFormatError extends ResrtError {
  constructor(what: string) {
    super(`transition batch: ${what}`, 'actor and learner must run the same resrt version');
  }
}

const ROBOT_ID = /^[A-Za-z0-9_.-]{1,64}$/;

export function checkRobotId(id: string): string {
  if (!ROBOT_ID.test(id)) {
    throw new ResrtError(
      `robot id "${id}" is not usable in MQTT topics`,
      'use 1-64 characters from A-Z a-z 0-9 _ . -',
    );
  }
  return id;
}

const recordBytes = (O: number, A: number): number => 20 + 4 * (2 * O + 4 * A);

export function encodeBatch(batch: TransitionBatch): Uint8Array {
  const { obsDim: O, actionDim: A, transitions } = batch;
  const id = Buffer.from(batch.robotId, 'utf8');
  const N = transitions.length;
  const headerBytes = 4 + 2 + 2 + id.byteLength + 2 + 2 + 4 + 8;
  const camera = cameraLayoutOf(transitions);
  const total =
    headerBytes + N * recordBytes(O, A) + (camera ? cameraSectionBytes(camera, transitions) : 0) + 4;
  const buf = Buffer.alloc(total);
  let o = 0;
  o = buf.writeUInt32LE(BATCH_MAGIC, o);
  o = buf.writeUInt8(camera ? BATCH_FORMAT_CAMERAS : BATCH_FORMAT, o);
  o = buf.writeUInt8(0, o);
  o = buf.writeUInt16LE(id.byteLength, o);
  o += id.copy(buf, o);
  o = buf.writeUInt16LE(O, o);
  o = buf.writeUInt16LE(A, o);
  o = buf.writeUInt32LE(N, o);
  o = buf.writeDoubleLE(batch.firstSeq, o);
  if (camera) o = writeCameraHeader(buf, o, camera);
  const put = (v: Float32Array, n: number, what: string): void => {
    if (v.length !== n) throw new BatchFormatError(`${what} has ${v.length} values, expected ${n}`);
    for (let i = 0; i < n; i++) o = buf.writeFloatLE(v[i], o);
  };
  transitions.forEach((t, i) => {
    if (t.seq !== batch.firstSeq + i) throw new BatchFormatError(`seq ${t.seq} breaks the run at ${i}`);
    o = buf.writeUInt32LE(t.episode >>> 0, o);
    o = buf.writeUInt32LE(t.step >>> 0, o);
    o = buf.writeUInt32LE(t.policyVersion >>> 0, o);
    o = buf.writeUInt16LE(Math.min(0xffff, t.safetyEvents), o);
    const flags =
      (t.terminated ? Flag.terminated : 0) |
      (t.truncated ? Flag.truncated : 0) |
      (t.intervention ? Flag.intervention : 0) |
      (t.success ? Flag.success : 0) |
      (t.labelled ? Flag.labelled : 0) |
      (t.heldBack ? Flag.heldBack : 0) |
      (t.mixingShare !== undefined ? Flag.mixed : 0);
    o = buf.writeUInt8(flags, o);
    const share = t.mixingShare ?? 0;
    if (!(share >= 0 && share <= 1)) throw new BatchFormatError(`mixingShare ${share} is outside [0, 1]`);
    o = buf.writeUInt8(Math.round(share * 255), o);
    o = buf.writeFloatLE(t.reward, o);
    put(t.obs, O, 'obs');
    put(t.baseAction, A, 'baseAction');
    put(t.residual, A, 'residual');
    put(t.action, A, 'action');
    put(t.nextObs, O, 'nextObs');
    put(t.nextBaseAction, A, 'nextBaseAction');
    if (camera) o = writeRecordCamera(buf, o, camera, transitions, i);
  });
  if (o + 4 !== total) throw new BatchFormatError(`wrote ${o + 4} bytes, sized ${total}`);
  buf.writeUInt32LE(crc32(buf.subarray(0, o)), o);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

export function decodeBatch(bytes: Uint8Array): TransitionBatch {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.byteLength < 28) throw new BatchFormatError(`${buf.byteLength} bytes is too short`);
  if (buf.readUInt32LE(0) !== BATCH_MAGIC) throw new BatchFormatError('bad magic');
  const format = buf.readUInt8(4);
  if (format !== BATCH_FORMAT && format !== BATCH_FORMAT_CAMERAS)
    throw new BatchFormatError(`format ${format} is unknown`);
  const body = buf.byteLength - 4;
  if (crc32(buf.subarray(0, body)) !== buf.readUInt32LE(body)) throw new BatchFormatError('CRC-32 mismatch');
  const idLen = buf.readUInt16LE(6);
  let o = 8;
  if (o + idLen + 16 > body) throw new BatchFormatError('header runs past the end');
  const robotId = buf.toString('utf8', o, o + idLen);
  o += idLen;
  const O = buf.readUInt16LE(o);
  const A = buf.readUInt16LE(o + 2);
  const N = buf.readUInt32LE(o + 4);
  const firstSeq = buf.readDoubleLE(o + 8);
  o += 16;
  let camera: CameraLayout | undefined;
  if (format === BATCH_FORMAT_CAMERAS) ({ layout: camera, o } = readCameraHeader(buf, o, body));
  // Camera records vary in length; without them the records must fill the body exactly.
  if (camera ? o + N * recordBytes(O, A) > body : o + N * recordBytes(O, A) !== body)
    throw new BatchFormatError(`${N} records of O=${O}, A=${A} do not fill ${body - o} bytes`);
  if (!Number.isSafeInteger(firstSeq) || firstSeq < 0) throw new BatchFormatError(`firstSeq ${firstSeq}`);
  let previousNext: CameraPayload | null = null;
  const take = (n: number): Float32Array => {
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++, o += 4) v[i] = buf.readFloatLE(o);
    return v;
  };
  const transitions: SessionTransition[] = [];
  for (let i = 0; i < N; i++) {
    if (o + recordBytes(O, A) > body) throw new BatchFormatError(`record ${i} runs past the end`);
    const episode = buf.readUInt32LE(o);
    const step = buf.readUInt32LE(o + 4);
    const policyVersion = buf.readUInt32LE(o + 8);
    const safetyEvents = buf.readUInt16LE(o + 12);
    const flags = buf.readUInt8(o + 14);
    const shareByte = buf.readUInt8(o + 15);
    const reward = buf.readFloatLE(o + 16);
    o += 20;
    const obs = take(O);
    const baseAction = take(A);
    const residual = take(A);
    const action = take(A);
    const nextObs = take(O);
    const nextBaseAction = take(A);
    let cameraPart: TransitionCamera | undefined;
    if (camera) {
      ({ camera: cameraPart, o } = readRecordCamera(buf, o, body, camera, previousNext));
      previousNext = cameraPart?.next ?? null;
    }
    transitions.push({
      robotId,
      seq: firstSeq + i,
      episode,
      step,
      policyVersion,
      safetyEvents,
      reward,
      obs,
      baseAction,
      residual,
      action,
      nextObs,
      nextBaseAction,
      terminated: (flags & Flag.terminated) !== 0,
      truncated: (flags & Flag.truncated) !== 0,
      intervention: (flags & Flag.intervention) !== 0,
      success: (flags & Flag.success) !== 0,
      labelled: (flags & Flag.labelled) !== 0,
      ...((flags & Flag.heldBack) !== 0 ? { heldBack: true } : {}),
      ...((flags & Flag.mixed) !== 0 ? { mixingShare: shareByte / 255 } : {}),
      ...(cameraPart ? { camera: cameraPart } : {}),
    });
  }
  if (o !== body) throw new BatchFormatError(`${body - o} bytes left after ${N} records`);
  return { robotId, obsDim: O, actionDim: A, firstSeq, transitions, ...(camera ? { camera } : {}) };
}

export const ENVELOPE_MAGIC = 0x31585452; // 'RTX1'

/**
 * What goes on the wire around a spooled batch: u32 'RTX1' | f64 ackedSeq | batch. ackedSeq is the
 * highest seq this actor has seen acknowledged when it sends (−1 for none); a learner that has
 * never heard of the robot starts its numbering there instead of at 0, so an actor that outlived
 * its learner is not stalled waiting for a gap nobody will fill.
 */
export function encodeEnvelope(ackedSeq: number, batch: Uint8Array): Uint8Array {
  const out = Buffer.alloc(12 + batch.byteLength);
  out.writeUInt32LE(ENVELOPE_MAGIC, 0);
  out.writeDoubleLE(ackedSeq, 4);
  out.set(batch, 12);
  return out;
}

export function decodeEnvelope(bytes: Uint8Array): { ackedSeq: number; batch: TransitionBatch } {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.byteLength < 12 || buf.readUInt32LE(0) !== ENVELOPE_MAGIC)
    throw new BatchFormatError('bad envelope');
  const ackedSeq = buf.readDoubleLE(4);
  if (!Number.isSafeInteger(ackedSeq) || ackedSeq < -1)
    throw new BatchFormatError(`envelope ackedSeq ${ackedSeq}`);
  return { ackedSeq, batch: decodeBatch(bytes.subarray(12)) };
}
