/**
 * Camera frames of demonstrations: a binary sidecar beside the JSON Lines file, never JSON arrays
 * of pixels. Each frame of each camera is one record (little-endian):
 *
 *   u32 magic "RSFR" (0x52534652)   u16 camera index (header.cameras order)   u16 flags (bit 0: depth)
 *   u32 seq                         f64 capturedAtMs
 *   u32 rgb bytes                   u32 depth bytes (0 without depth)
 *   PNG, 8-bit RGB                  PNG, 16-bit grey: depth in millimetres (0 = no return)
 *
 * Every frame is a standalone PNG, so any tool can look at it. An episode's records are contiguous
 * ((T + 1) steps x cameras, step-major) and its JSONL line gives their byte range, so a reader
 * streams one episode at a time. Records are written and fsynced before the line that points at
 * them: a crash leaves at most unreferenced bytes at the end of the sidecar.
 */
import { closeSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs';
import { decode as decodePng, encode as encodePng } from 'fast-png';
import type { CameraFrame, CameraFrames, CameraSpec } from '../types.js';
import { ResrtError } from '../util/errors.js';

const MAGIC = 0x52534652;
const RECORD_HEADER = 28;
const FLAG_DEPTH = 1;

/** Where an episode's frames live in the sidecar. */
export interface FrameRange {
  offset: number;
  bytes: number;
}

export class FrameSidecarWriter {
  private readonly fd: number;
  private position = 0;

  constructor(
    readonly path: string,
    private readonly cameras: readonly CameraSpec[],
  ) {
    this.fd = openSync(path, 'w');
  }

  /** Appends one episode's frames (one CameraFrames per observation) and fsyncs. */
  appendEpisode(steps: readonly CameraFrames[]): FrameRange {
    const start = this.position;
    const chunks: Uint8Array[] = [];
    steps.forEach((frames, t) => {
      this.cameras.forEach((spec, k) => {
        const frame = frames[spec.name];
        if (!frame) {
          throw new ResrtError(
            `demonstration step ${t} has no frame from camera "${spec.name}"`,
            'record every camera at every observation (the environment renders them all)',
          );
        }
        chunks.push(encodeRecord(frame, spec, k));
      });
    });
    for (const chunk of chunks) {
      let off = 0;
      while (off < chunk.length) off += writeSync(this.fd, chunk, off, chunk.length - off);
      this.position += chunk.length;
    }
    fsyncSync(this.fd);
    return { offset: start, bytes: this.position - start };
  }

  close(): void {
    closeSync(this.fd);
  }
}

function encodeRecord(frame: CameraFrame, spec: CameraSpec, index: number): Uint8Array {
  if (frame.width !== spec.width || frame.height !== spec.height || frame.channels !== 3) {
    throw new ResrtError(
      `camera "${spec.name}" gave a ${frame.width}x${frame.height}x${frame.channels} frame, the demonstrations record ${spec.width}x${spec.height}x3`,
      'keep every camera at one size for the whole file',
    );
  }
  const rgb = encodePng({
    width: frame.width,
    height: frame.height,
    data: frame.data,
    channels: 3,
    depth: 8,
  });
  let depth: Uint8Array = new Uint8Array(0);
  if (spec.depth) {
    if (!frame.depth) {
      throw new ResrtError(
        `camera "${spec.name}" frame ${frame.seq} has no depth`,
        'render depth for this camera',
      );
    }
    const mm = new Uint16Array(frame.depth.length);
    for (let i = 0; i < mm.length; i++)
      mm[i] = Math.min(65535, Math.max(0, Math.round(frame.depth[i] * 1000)));
    depth = encodePng({ width: frame.width, height: frame.height, data: mm, channels: 1, depth: 16 });
  }
  const out = new Uint8Array(RECORD_HEADER + rgb.length + depth.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint16(4, index, true);
  view.setUint16(6, spec.depth ? FLAG_DEPTH : 0, true);
  view.setUint32(8, frame.seq >>> 0, true);
  view.setFloat64(12, frame.capturedAtMs, true);
  view.setUint32(20, rgb.length, true);
  view.setUint32(24, depth.length, true);
  out.set(rgb, RECORD_HEADER);
  out.set(depth, RECORD_HEADER + rgb.length);
  return out;
}

/**
 * Reads one episode's frames back: one CameraFrames per observation. `steps` is the episode's
 * observation count (T + 1); anything that does not add up is reported as corruption.
 */
export function readEpisodeFrames(
  path: string,
  cameras: readonly CameraSpec[],
  range: FrameRange,
  steps: number,
): CameraFrames[] {
  const bytes = new Uint8Array(range.bytes);
  const fd = openSync(path, 'r');
  try {
    let off = 0;
    while (off < bytes.length) {
      const n = readSync(fd, bytes, off, bytes.length - off, range.offset + off);
      if (n === 0) break;
      off += n;
    }
    if (off !== bytes.length) {
      throw corrupt(
        path,
        `the episode's frames end at byte ${range.offset + off}, expected ${range.offset + range.bytes}`,
      );
    }
  } finally {
    closeSync(fd);
  }
  const view = new DataView(bytes.buffer);
  const out: CameraFrames[] = [];
  let pos = 0;
  for (let t = 0; t < steps; t++) {
    const frames: Record<string, CameraFrame> = {};
    for (let k = 0; k < cameras.length; k++) {
      if (pos + RECORD_HEADER > bytes.length) throw corrupt(path, `frame ${t} of camera ${k} is missing`);
      if (view.getUint32(pos, true) !== MAGIC)
        throw corrupt(path, `no frame record at byte ${range.offset + pos}`);
      const index = view.getUint16(pos + 4, true);
      if (index !== k) throw corrupt(path, `frame ${t}: camera index ${index}, expected ${k}`);
      const hasDepth = (view.getUint16(pos + 6, true) & FLAG_DEPTH) !== 0;
      const seq = view.getUint32(pos + 8, true);
      const capturedAtMs = view.getFloat64(pos + 12, true);
      const rgbBytes = view.getUint32(pos + 20, true);
      const depthBytes = view.getUint32(pos + 24, true);
      const start = pos + RECORD_HEADER;
      if (start + rgbBytes + depthBytes > bytes.length)
        throw corrupt(path, `frame ${t} runs past its episode`);
      const spec = cameras[k];
      const rgb = decodePng(bytes.subarray(start, start + rgbBytes));
      if (rgb.width !== spec.width || rgb.height !== spec.height || rgb.channels !== 3 || rgb.depth !== 8) {
        throw corrupt(
          path,
          `frame ${t} of camera "${spec.name}" is ${rgb.width}x${rgb.height}x${rgb.channels}`,
        );
      }
      const frame: CameraFrame = {
        width: spec.width,
        height: spec.height,
        channels: 3,
        data: new Uint8Array(rgb.data.buffer, rgb.data.byteOffset, rgb.data.byteLength),
        capturedAtMs,
        seq,
      };
      if (hasDepth) {
        const d = decodePng(bytes.subarray(start + rgbBytes, start + rgbBytes + depthBytes));
        const mm = d.data as Uint16Array;
        const depth = new Float32Array(mm.length);
        for (let i = 0; i < mm.length; i++) depth[i] = mm[i] / 1000;
        frame.depth = depth;
      }
      frames[spec.name] = frame;
      pos = start + rgbBytes + depthBytes;
    }
    out.push(frames);
  }
  if (pos !== bytes.length)
    throw corrupt(path, `the episode has ${bytes.length - pos} bytes after its last frame`);
  return out;
}

function corrupt(path: string, what: string): ResrtError {
  return new ResrtError(
    `${path}: ${what}`,
    'the frames file is corrupt; collect the demonstrations again with `resrt collect`',
  );
}
