/**
 * Checkpoints of a residual run: networks, optimizer moments, RNG states and both replays, plus
 * the trainer's own counters. Crash-safe: each generation is written into its own folder
 * (outDir/ckpt/<generation>/, every file atomically), and only then does the manifest
 * outDir/checkpoint.json (written atomically, with a SHA-256 per file) switch to it; older
 * generations are removed afterwards. A crash at any point leaves the previous checkpoint intact.
 *
 * Replay camera frames (replay-frames.ts) are too large to rewrite at every checkpoint: each chunk
 * of each camera is a file outDir/frames/<sha256>.bin named by its content, written only when no
 * file of that name exists (a full chunk never changes, so it is written once), listed in the
 * manifest with its SHA-256 and verified at load. Frame files no manifest names are removed only
 * after the manifest has switched, so a crash leaves at most unused files behind.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ResrtError } from '../util/errors.js';
import { writeFileAtomic } from '../util/files.js';
import { ReplayBuffer, concatBytes } from './replay.js';
import { ReplayFrames } from './replay-frames.js';
import type { LearnerState } from './td3.js';

export const CHECKPOINT_FORMAT = 'resrt-residual-checkpoint';
export const MANIFEST = 'checkpoint.json';
const FRAMES_DIR = 'frames';

export interface CheckpointContents {
  learner: LearnerState;
  online: ReplayBuffer;
  demos: ReplayBuffer | null;
  /** Trainer-side state (counters, RNG, curves), JSON-serializable. */
  trainer: unknown;
  /** Config and dimensions the run was started with (checked on resume). */
  meta: Record<string, unknown>;
}

interface Manifest {
  format: typeof CHECKPOINT_FORMAT;
  version: 1;
  generation: number;
  createdAt: string;
  meta: Record<string, unknown>;
  files: Record<string, { path: string; sha256: string; bytes: number }>;
}

const sha256 = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

/** [u32 header length][JSON header][float32 data...] */
export function encodeLearnerState(state: LearnerState): Uint8Array {
  let offset = 0;
  const tensors = state.tensors.map((t) => {
    const entry = { name: t.name, shape: t.shape, offset, length: t.data.length };
    offset += t.data.length;
    return entry;
  });
  const header = Buffer.from(JSON.stringify({ ...state, tensors }));
  const len = new Uint8Array(new Uint32Array([header.byteLength]).buffer);
  const parts: Uint8Array[] = [len, header];
  // Float32 data starts 4-byte aligned.
  const pad = (4 - ((4 + header.byteLength) % 4)) % 4;
  parts.push(new Uint8Array(pad));
  for (const t of state.tensors)
    parts.push(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  return concatBytes(parts);
}

export function decodeLearnerState(bytes: Uint8Array, source: string): LearnerState {
  const corrupt = (what: string): never => {
    throw new ResrtError(`checkpoint ${source} is corrupt (${what})`, 'delete the checkpoint to start over');
  };
  if (bytes.byteLength < 4) corrupt('too short');
  const len = new Uint32Array(bytes.slice(0, 4).buffer)[0];
  if (4 + len > bytes.byteLength) corrupt('header runs past the end');
  let header: Omit<LearnerState, 'tensors'> & {
    tensors: { name: string; shape: number[]; offset: number; length: number }[];
  };
  try {
    header = JSON.parse(Buffer.from(bytes.subarray(4, 4 + len)).toString('utf8'));
  } catch {
    return corrupt('header is not JSON');
  }
  const start = 4 + len + ((4 - ((4 + len) % 4)) % 4);
  const data = new Float32Array(bytes.slice(start).buffer);
  const tensors = header.tensors.map((t) => {
    if (t.offset + t.length > data.length) corrupt(`tensor ${t.name} runs past the end`);
    return { name: t.name, shape: t.shape, data: data.slice(t.offset, t.offset + t.length) };
  });
  return { ...header, tensors };
}

export function writeCheckpoint(
  outDir: string,
  c: CheckpointContents,
): { generation: number; bytes: number } {
  const previous = readManifest(outDir);
  const generation = (previous?.generation ?? 0) + 1;
  const rel = join('ckpt', String(generation));
  const dir = join(outDir, rel);
  mkdirSync(dir, { recursive: true });
  const blobs: Record<string, Uint8Array> = {
    learner: encodeLearnerState(c.learner),
    online: c.online.serialize(),
    trainer: Buffer.from(JSON.stringify(c.trainer)),
  };
  if (c.demos) blobs.demos = c.demos.serialize();
  const files: Manifest['files'] = {};
  let bytes = 0;
  for (const [key, replay] of [
    ['online', c.online],
    ['demos', c.demos],
  ] as const) {
    const index = replay?.serializeFrameIndex();
    if (!replay?.frames || !index) continue;
    blobs[`${key}-frames`] = index;
    bytes += writeFrameChunks(outDir, key, replay.frames, files);
  }
  for (const [key, blob] of Object.entries(blobs)) {
    const path = join(rel, `${key}.bin`);
    writeFileAtomic(join(outDir, path), blob);
    files[key] = { path, sha256: sha256(blob), bytes: blob.byteLength };
    bytes += blob.byteLength;
  }
  const manifest: Manifest = {
    format: CHECKPOINT_FORMAT,
    version: 1,
    generation,
    createdAt: new Date().toISOString(),
    meta: c.meta,
    files,
  };
  writeFileAtomic(join(outDir, MANIFEST), JSON.stringify(manifest, null, 2));
  // Only now is the new generation the checkpoint; older ones can go.
  for (const name of readdirSync(join(outDir, 'ckpt'))) {
    if (name !== String(generation)) rmSync(join(outDir, 'ckpt', name), { recursive: true, force: true });
  }
  removeUnlistedFrames(outDir, files);
  return { generation, bytes };
}

const frameFileKey = (replay: string, chunk: number, camera: number): string =>
  `${replay}-frames/${chunk}/${camera}`;

/** Writes the chunk files no earlier checkpoint wrote; returns the bytes written. */
function writeFrameChunks(
  outDir: string,
  replay: string,
  frames: ReplayFrames,
  files: Manifest['files'],
): number {
  mkdirSync(join(outDir, FRAMES_DIR), { recursive: true });
  let written = 0;
  for (const f of frames.chunkFiles()) {
    const path = join(FRAMES_DIR, `${f.sha256}.bin`);
    const abs = join(outDir, path);
    // Named by content and written atomically: a file of this name already holds these bytes.
    if (!existsSync(abs) || statSync(abs).size !== f.bytes.byteLength) {
      writeFileAtomic(abs, f.bytes);
      written += f.bytes.byteLength;
    }
    files[frameFileKey(replay, f.chunk, f.camera)] = { path, sha256: f.sha256, bytes: f.bytes.byteLength };
  }
  return written;
}

/** Removes frame files (and torn temporaries) the manifest just written does not list. */
function removeUnlistedFrames(outDir: string, files: Manifest['files']): void {
  const dir = join(outDir, FRAMES_DIR);
  if (!existsSync(dir)) return;
  const listed = new Set(Object.values(files).map((f) => f.path));
  for (const name of readdirSync(dir)) {
    if (!listed.has(join(FRAMES_DIR, name))) rmSync(join(dir, name), { force: true });
  }
}

function readManifest(outDir: string): Manifest | null {
  const path = join(outDir, MANIFEST);
  if (!existsSync(path)) return null;
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(path, 'utf8')) as Manifest;
  } catch {
    throw new ResrtError(
      `${path} is not valid JSON`,
      'the checkpoint manifest is damaged; delete outDir (or restore it) to start over',
    );
  }
  if (m.format !== CHECKPOINT_FORMAT || m.version !== 1 || !Number.isInteger(m.generation) || !m.files) {
    throw new ResrtError(
      `${path} is not a resrt residual checkpoint (format ${String(m.format)} version ${String(m.version)})`,
      'point --out at the folder a `resrt train` run wrote, or at a new folder',
    );
  }
  return m;
}

export function hasCheckpoint(outDir: string): boolean {
  return existsSync(join(outDir, MANIFEST));
}

/** The newest checkpoint's meta (task, config, …) without reading its files; null when outDir has none. */
export function checkpointMeta(outDir: string): Record<string, unknown> | null {
  return readManifest(outDir)?.meta ?? null;
}

/** Reads and verifies the newest checkpoint; null when outDir has none. */
export function readCheckpoint(outDir: string): CheckpointContents | null {
  const m = readManifest(outDir);
  if (!m) return null;
  const blob = (key: string): Uint8Array | null => {
    const f = m.files[key];
    if (!f) return null;
    const path = join(outDir, f.path);
    if (!existsSync(path)) {
      throw new ResrtError(
        `checkpoint file ${path} is missing`,
        'restore the whole outDir, or delete it to start over',
      );
    }
    // A plain Uint8Array over the bytes read (no copy: frame chunks are kept as loaded; a Buffer's
    // slice() would be a view, which the decoders' slice().buffer must not get).
    const read = readFileSync(path);
    const b = new Uint8Array(read.buffer, read.byteOffset, read.byteLength);
    if (b.byteLength !== f.bytes || sha256(b) !== f.sha256) {
      throw new ResrtError(
        `checkpoint file ${path} is corrupt (checksum mismatch)`,
        'restore the outDir from a backup, or delete it to start over',
      );
    }
    return b;
  };
  const learnerBytes = blob('learner');
  const onlineBytes = blob('online');
  const trainerBytes = blob('trainer');
  if (!learnerBytes || !onlineBytes || !trainerBytes) {
    throw new ResrtError(
      `checkpoint in ${outDir} lists no learner/online/trainer file`,
      'delete it to start over',
    );
  }
  const demoBytes = blob('demos');
  let trainer: unknown;
  try {
    trainer = JSON.parse(Buffer.from(trainerBytes).toString('utf8'));
  } catch {
    throw new ResrtError(
      `checkpoint trainer state in ${outDir} is not JSON`,
      'delete the checkpoint to start over',
    );
  }
  const replay = (key: 'online' | 'demos', bytes: Uint8Array): ReplayBuffer => {
    const source = `${outDir} (${key === 'online' ? 'online' : 'demo'} replay)`;
    const buf = ReplayBuffer.deserialize(bytes, source);
    const index = blob(`${key}-frames`);
    if (!index) return buf;
    const chunk = (c: number, camera: number): Uint8Array => {
      const b = blob(frameFileKey(key, c, camera));
      if (!b) {
        throw new ResrtError(
          `checkpoint in ${outDir} lists no file for frames chunk ${c} of camera ${camera} (${key} replay)`,
          'restore the whole outDir, or delete it to start over',
        );
      }
      return b;
    };
    buf.frames = ReplayFrames.deserialize(index, chunk, buf.capacity, source);
    return buf;
  };
  return {
    learner: decodeLearnerState(learnerBytes, outDir),
    online: replay('online', onlineBytes),
    demos: demoBytes ? replay('demos', demoBytes) : null,
    trainer,
    meta: m.meta,
  };
}
