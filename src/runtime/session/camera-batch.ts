/**
 * The camera part of a transition batch (batch format 2, docs/sessions.md "Encodings"): what a
 * camera session's actor sends beside each transition's state, chosen with `--send-frames`:
 *
 *   features  the base's embedding of the observation (E floats), the learner's input as it is
 *   jpeg      every camera's frame as JPEG; the learner runs the base on them for the embedding
 *
 * Batch header after the format-1 header: u8 mode (1 features, 2 jpeg) | u8 cameras C | u16 E |
 * C × (u8 name bytes | name). Each record is followed by u8 camera flags and its payloads:
 *   1 obs payload follows | 2 obs payload is the previous record's next payload | 4 next payload follows
 * (no 1 or 2: the actor had no camera data for this step). A payload is f32[E] (features) or, per
 * camera in header order, u32 length | JPEG bytes. The observation of step k is the next
 * observation of step k-1, so inside a batch each payload travels once.
 */
import type { CameraFrames } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { decodeImage } from '../../util/image-codec.js';

export type SendFrames = 'features' | 'jpeg' | 'none';
export const SEND_FRAMES_MODES: readonly SendFrames[] = ['features', 'jpeg', 'none'];

export type CameraPayload =
  { kind: 'features'; features: Float32Array } | { kind: 'jpeg'; jpeg: Readonly<Record<string, Uint8Array>> };

/** What a transition carries of its cameras: its observation's, and its next observation's. */
export interface TransitionCamera {
  obs: CameraPayload;
  /**
   * After termination: JPEG frames (kept in the log for `resrt import session`), or null; the
   * learner never bootstraps from it either way (its features are zeros).
   */
  next: CameraPayload | null;
}

export type CameraLayout = { kind: 'features'; featureDim: number } | { kind: 'jpeg'; cameras: string[] };

/**
 * A JPEG payload's frames, decoded to RGB; `where` (e.g. "episode 3 observation 7") prefixes the
 * name of a frame that does not decode.
 */
export function decodeJpegPayload(jpeg: Readonly<Record<string, Uint8Array>>, where?: string): CameraFrames {
  return Object.fromEntries(
    Object.entries(jpeg).map(([name, bytes]) => {
      const img = decodeImage(bytes, `${where ? `${where}, ` : ''}camera "${name}" frame`);
      return [name, { ...img, channels: 3, capturedAtMs: 0, seq: 0 }];
    }),
  );
}

export const CameraFlag = { obs: 1, obsIsPreviousNext: 2, next: 4 } as const;

const MODE_BYTE = { features: 1, jpeg: 2 } as const;

export class CameraBatchError extends ResrtError {
  constructor(what: string, fix = 'actor and learner must run the same resrt version') {
    super(`transition batch: ${what}`, fix);
  }
}

/** The layout shared by every camera payload of these transitions; null when none has one. */
export function cameraLayoutOf(transitions: readonly { camera?: TransitionCamera }[]): CameraLayout | null {
  let layout: CameraLayout | null = null;
  const check = (p: CameraPayload): void => {
    const here: CameraLayout =
      p.kind === 'features'
        ? { kind: 'features', featureDim: p.features.length }
        : { kind: 'jpeg', cameras: Object.keys(p.jpeg) };
    if (!layout) {
      layout = here;
      return;
    }
    if (JSON.stringify(here) !== JSON.stringify(layout))
      throw new CameraBatchError(
        `camera payloads differ inside one batch (${JSON.stringify(layout)} and ${JSON.stringify(here)})`,
        'an actor sends one --send-frames mode with one set of cameras',
      );
  };
  for (const t of transitions) {
    if (!t.camera) continue;
    check(t.camera.obs);
    if (t.camera.next) check(t.camera.next);
  }
  return layout;
}

const payloadBytes = (p: CameraPayload): number =>
  p.kind === 'features'
    ? 4 * p.features.length
    : Object.values(p.jpeg).reduce((s, b) => s + 4 + b.byteLength, 0);

/** Whether two payloads hold the same features or the same JPEG bytes. */
export function samePayload(a: CameraPayload, b: CameraPayload): boolean {
  if (a === b) return true;
  if (a.kind === 'features' && b.kind === 'features')
    return a.features.length === b.features.length && a.features.every((v, i) => Object.is(v, b.features[i]));
  if (a.kind === 'jpeg' && b.kind === 'jpeg') {
    const names = Object.keys(a.jpeg);
    return names.every((n) => b.jpeg[n] !== undefined && Buffer.from(a.jpeg[n]).equals(b.jpeg[n]));
  }
  return false;
}

interface CameraRecord {
  episode: number;
  step: number;
  camera?: TransitionCamera;
}

/** Whether record i's observation payload can be taken from record i-1's next payload. */
function sharesPrevious(records: readonly CameraRecord[], i: number): boolean {
  const t = records[i];
  const prev = records[i - 1];
  return (
    i > 0 &&
    !!t.camera &&
    !!prev.camera?.next &&
    prev.episode === t.episode &&
    prev.step + 1 === t.step &&
    samePayload(prev.camera.next, t.camera.obs)
  );
}

/** Bytes of the camera header plus every record's camera part. */
export function cameraSectionBytes(layout: CameraLayout, records: readonly CameraRecord[]): number {
  let n = 4;
  if (layout.kind === 'jpeg') n += layout.cameras.reduce((s, c) => s + 1 + Buffer.byteLength(c, 'utf8'), 0);
  records.forEach((t, i) => {
    n += 1;
    if (!t.camera) return;
    if (!sharesPrevious(records, i)) n += payloadBytes(t.camera.obs);
    if (t.camera.next) n += payloadBytes(t.camera.next);
  });
  return n;
}

export function writeCameraHeader(buf: Buffer, o: number, layout: CameraLayout): number {
  o = buf.writeUInt8(MODE_BYTE[layout.kind], o);
  if (layout.kind === 'features') {
    o = buf.writeUInt8(0, o);
    return buf.writeUInt16LE(layout.featureDim, o);
  }
  if (layout.cameras.length > 255) throw new CameraBatchError(`${layout.cameras.length} cameras`);
  o = buf.writeUInt8(layout.cameras.length, o);
  o = buf.writeUInt16LE(0, o);
  for (const name of layout.cameras) {
    const b = Buffer.from(name, 'utf8');
    if (b.byteLength > 255) throw new CameraBatchError(`camera name "${name}" is longer than 255 bytes`);
    o = buf.writeUInt8(b.byteLength, o);
    o += b.copy(buf, o);
  }
  return o;
}

export function readCameraHeader(buf: Buffer, o: number, end: number): { layout: CameraLayout; o: number } {
  if (o + 4 > end) throw new CameraBatchError('camera header runs past the end');
  const mode = buf.readUInt8(o);
  const count = buf.readUInt8(o + 1);
  const featureDim = buf.readUInt16LE(o + 2);
  o += 4;
  if (mode === MODE_BYTE.features) {
    if (featureDim === 0) throw new CameraBatchError('camera features of width 0');
    return { layout: { kind: 'features', featureDim }, o };
  }
  if (mode !== MODE_BYTE.jpeg) throw new CameraBatchError(`camera mode ${mode} is unknown`);
  const cameras: string[] = [];
  for (let i = 0; i < count; i++) {
    if (o + 1 > end) throw new CameraBatchError('camera names run past the end');
    const len = buf.readUInt8(o);
    if (o + 1 + len > end) throw new CameraBatchError('camera names run past the end');
    cameras.push(buf.toString('utf8', o + 1, o + 1 + len));
    o += 1 + len;
  }
  if (cameras.length === 0) throw new CameraBatchError('a JPEG camera section names no camera');
  return { layout: { kind: 'jpeg', cameras }, o };
}

function writePayload(buf: Buffer, o: number, layout: CameraLayout, p: CameraPayload): number {
  if (layout.kind === 'features') {
    if (p.kind !== 'features') throw new CameraBatchError('a JPEG payload in a features batch');
    for (const v of p.features) o = buf.writeFloatLE(v, o);
    return o;
  }
  if (p.kind !== 'jpeg') throw new CameraBatchError('a features payload in a JPEG batch');
  for (const name of layout.cameras) {
    const bytes = p.jpeg[name];
    o = buf.writeUInt32LE(bytes.byteLength, o);
    buf.set(bytes, o);
    o += bytes.byteLength;
  }
  return o;
}

/** Writes record i's camera flags and payloads. */
export function writeRecordCamera(
  buf: Buffer,
  o: number,
  layout: CameraLayout,
  records: readonly CameraRecord[],
  i: number,
): number {
  const camera = records[i].camera;
  if (!camera) return buf.writeUInt8(0, o);
  const shared = sharesPrevious(records, i);
  const flags =
    (shared ? CameraFlag.obsIsPreviousNext : CameraFlag.obs) | (camera.next ? CameraFlag.next : 0);
  o = buf.writeUInt8(flags, o);
  if (!shared) o = writePayload(buf, o, layout, camera.obs);
  if (camera.next) o = writePayload(buf, o, layout, camera.next);
  return o;
}

function readPayload(
  buf: Buffer,
  o: number,
  end: number,
  layout: CameraLayout,
): { p: CameraPayload; o: number } {
  if (layout.kind === 'features') {
    const n = layout.featureDim;
    if (o + 4 * n > end) throw new CameraBatchError('camera features run past the end');
    const features = new Float32Array(n);
    for (let i = 0; i < n; i++, o += 4) features[i] = buf.readFloatLE(o);
    return { p: { kind: 'features', features }, o };
  }
  const jpeg: Record<string, Uint8Array> = {};
  for (const name of layout.cameras) {
    if (o + 4 > end) throw new CameraBatchError(`camera "${name}" frame runs past the end`);
    const len = buf.readUInt32LE(o);
    if (o + 4 + len > end) throw new CameraBatchError(`camera "${name}" frame runs past the end`);
    jpeg[name] = new Uint8Array(buf.subarray(o + 4, o + 4 + len));
    o += 4 + len;
  }
  return { p: { kind: 'jpeg', jpeg }, o };
}

/** Reads record i's camera part; `previousNext` is record i-1's next payload (null for none). */
export function readRecordCamera(
  buf: Buffer,
  o: number,
  end: number,
  layout: CameraLayout,
  previousNext: CameraPayload | null,
): { camera: TransitionCamera | undefined; o: number } {
  if (o + 1 > end) throw new CameraBatchError('camera flags run past the end');
  const flags = buf.readUInt8(o);
  o += 1;
  if (flags & ~(CameraFlag.obs | CameraFlag.obsIsPreviousNext | CameraFlag.next))
    throw new CameraBatchError(`camera flags ${flags} are unknown`);
  if (!(flags & (CameraFlag.obs | CameraFlag.obsIsPreviousNext))) {
    if (flags & CameraFlag.next)
      throw new CameraBatchError('a next camera payload without the observation one');
    return { camera: undefined, o };
  }
  let obs: CameraPayload;
  if (flags & CameraFlag.obsIsPreviousNext) {
    if (!previousNext)
      throw new CameraBatchError('a camera payload refers to a previous record that has none');
    obs = previousNext;
  } else ({ p: obs, o } = readPayload(buf, o, end, layout));
  let next: CameraPayload | null = null;
  if (flags & CameraFlag.next) ({ p: next, o } = readPayload(buf, o, end, layout));
  return { camera: { obs, next }, o };
}

/** The checked `--send-frames` value. */
export function checkSendFrames(mode: string | undefined, jpegQuality: number | undefined): SendFrames {
  const m = (mode ?? 'none') as SendFrames;
  if (!SEND_FRAMES_MODES.includes(m))
    throw new ResrtError(`--send-frames ${mode}`, `use one of: ${SEND_FRAMES_MODES.join(', ')}`);
  if (jpegQuality !== undefined && !(Number.isInteger(jpegQuality) && jpegQuality >= 1 && jpegQuality <= 100))
    throw new ResrtError(`--jpeg-quality ${jpegQuality}`, 'give a whole number from 1 to 100 (default 85)');
  return m;
}

/** Frames of every named camera, or the names that are missing. */
export function framesOf(
  frames: CameraFrames | undefined,
  names: readonly string[],
): { ok: true; frames: CameraFrames } | { ok: false; missing: string[] } {
  const missing = names.filter((n) => !frames?.[n]);
  return missing.length || !frames ? { ok: false, missing } : { ok: true, frames };
}
