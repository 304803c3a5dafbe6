/**
 * A pixels BC policy as a LeRobot-style visuomotor ONNX file, and the check of any BC export
 * against the engine's own forward pass.
 *
 * The file is the network's inference graph (bc-network.ts) with the trained parameters as
 * initializers; its inputs are `observation.state` [batch, S] (normalized inside the graph) and
 * `observation.images.<camera>` [batch, 3, H, W] float in [0, 1]; its outputs `action` ([batch, A]
 * or [batch, H, A]) and `embedding` [batch, E], the concatenated camera features. The metadata
 * carries what the loader needs (docs/onnx-policies.md), so `resrt eval` and `resrt inspect` take
 * it without flags.
 */
import '../util/ort-telemetry.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import type { CameraFrame, CameraFrames, CameraSpec } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { encodeModel, graphChecksum } from '../util/onnx-proto.js';
import { framesToBatch, type FrameStore, type Graph } from '../nn/index.js';
import { IMAGES_META_KEY } from '../runtime/image-inputs.js';
import { batchFreeModel, MetaKey, RESRT_METADATA_FORMAT } from '../runtime/onnx-export.js';
import { createSession, OnnxPolicy } from '../runtime/onnx-policy.js';
import type { BcNetwork } from './bc-network.js';

export const STATE_INPUT = 'observation.state';
export const imageInputName = (camera: string): string => `observation.images.${camera}`;
export const ACTION_OUTPUT = 'action';
export const EMBEDDING_OUTPUT = 'embedding';

/** Writes the visuomotor ONNX of a trained pixels BC network. */
export function exportVisuomotorBc(
  net: BcNetwork,
  params: Float32Array,
  cameras: readonly CameraSpec[],
  chunk: { length: number; actionDim: number },
  metadata: Record<string, string>,
): Uint8Array {
  const graph = net.inferenceGraph(
    params,
    { state: STATE_INPUT, image: imageInputName, action: ACTION_OUTPUT, embedding: EMBEDDING_OUTPUT },
    chunk,
  );
  return encodeWithImages(graph, 'resrt_policy', cameras, {
    ...metadata,
    [MetaKey.format]: RESRT_METADATA_FORMAT,
    [MetaKey.kind]: 'base',
    [MetaKey.actionDim]: String(chunk.actionDim),
    [MetaKey.chunkLength]: String(chunk.length),
    [MetaKey.normalizationBaked]: 'baked',
    [MetaKey.embeddingOutput]: EMBEDDING_OUTPUT,
    [MetaKey.embeddingDim]: String(net.embeddingDim),
  });
}

/**
 * A graph with batch-free shapes, its camera inputs' preprocessing (uint8 RGB frames scaled to
 * [0, 1], NCHW) and `metadata` written into it, and the checksum of its graph.
 */
export function encodeWithImages(
  graph: Graph,
  name: string,
  cameras: readonly CameraSpec[],
  metadata: Record<string, string>,
): Uint8Array {
  const model = batchFreeModel(graph.encode());
  model.graph.name = name;
  const images = Object.fromEntries(
    cameras.map((c) => [
      imageInputName(c.name),
      { camera: c.name, scale: 1 / 255, resize: 'crop-resize', layout: 'NCHW', channel_order: 'RGB' },
    ]),
  );
  const meta: Record<string, string> = { ...metadata, [IMAGES_META_KEY]: JSON.stringify(images) };
  model.metadataProps = Object.entries(meta).map(([key, value]) => ({ key, value }));
  // The checksum hashes the graph field only, so adding it does not change what it hashes.
  const checksum = graphChecksum(encodeModel(model));
  if (!checksum) throw new Error('internal: encoded model has no graph');
  model.metadataProps.push({ key: MetaKey.checksum, value: checksum });
  return encodeModel(model);
}

/** Rows to run through the exported file: states, and one frame per row from each camera's store. */
export interface ExportProbe {
  rows: number;
  state: Float32Array;
  cameras: readonly CameraSpec[];
  stores: readonly FrameStore[];
}

export interface ExportCheck {
  /** Largest |file − engine| over the action outputs. */
  action: number;
  /** Largest |file − engine| over the embedding (0 without cameras). */
  embedding: number;
}

/**
 * Loads `bytes` the way `resrt eval` does (OnnxPolicy, frames preprocessed by the runtime from
 * the uint8 frames) and compares its actions, and with cameras the embedding output, with the
 * engine's forward pass on the same rows.
 */
export async function checkExport(
  bytes: Uint8Array,
  probe: ExportProbe,
  expected: { action: Float32Array; embedding: Float32Array },
  dims: { obsDim: number; actionDim: number },
): Promise<ExportCheck> {
  const dir = mkdtempSync(join(tmpdir(), 'resrt-bc-'));
  try {
    const path = join(dir, 'base.onnx');
    writeFileSync(path, bytes);
    const sizes = Object.fromEntries(
      probe.cameras.map((c) => [c.name, { width: c.width, height: c.height }]),
    );
    const policy = await OnnxPolicy.load(path, {
      expectObsDim: dims.obsDim,
      expectActionDim: dims.actionDim,
      warmupRuns: 0,
      ...(probe.cameras.length ? { cameras: sizes } : {}),
    });
    let action: Float32Array;
    try {
      const frames = probe.cameras.length ? probeFrames(probe) : undefined;
      action = (await policy.runBatch(probe.state, probe.rows, undefined, frames)).values;
    } finally {
      await policy.close();
    }
    const check: ExportCheck = { action: maxAbsDiff(action, expected.action), embedding: 0 };
    if (probe.cameras.length) {
      const got = await runEmbedding(path, probe);
      check.embedding = maxAbsDiff(got, expected.embedding);
    }
    return check;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function probeFrames(probe: Pick<ExportProbe, 'rows' | 'cameras' | 'stores'>): CameraFrames[] {
  return Array.from({ length: probe.rows }, (_, n) =>
    Object.fromEntries(
      probe.cameras.map((c, k): [string, CameraFrame] => {
        const size = c.height * c.width * 3;
        const data = probe.stores[k].data.subarray(n * size, (n + 1) * size);
        return [c.name, { width: c.width, height: c.height, channels: 3, data, capturedAtMs: 0, seq: n }];
      }),
    ),
  );
}

/** The embedding output, run directly (the policy loader fetches actions only). */
async function runEmbedding(path: string, probe: ExportProbe): Promise<Float32Array> {
  const session = await createSession(path, 1);
  try {
    const feeds: Record<string, ort.Tensor> = {
      [STATE_INPUT]: new ort.Tensor('float32', probe.state, [probe.rows, probe.state.length / probe.rows]),
    };
    const rows = Array.from({ length: probe.rows }, (_, n) => n);
    probe.cameras.forEach((c, k) => {
      const data = new Float32Array(probe.rows * 3 * c.height * c.width);
      framesToBatch(probe.stores[k], rows, data);
      feeds[imageInputName(c.name)] = new ort.Tensor('float32', data, [probe.rows, 3, c.height, c.width]);
    });
    const out = await session.run(feeds, [EMBEDDING_OUTPUT]);
    return out[EMBEDDING_OUTPUT].data as Float32Array;
  } finally {
    await session.release();
  }
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) {
    throw new ResrtError(
      `the exported ONNX gave ${a.length} values where the trained network gives ${b.length}`,
      'this is a bug in the BC exporter; please report it',
    );
  }
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return Number.isNaN(max) ? Infinity : max;
}
