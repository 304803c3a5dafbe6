/** `resrt inspect FILE.onnx` and `resrt infer FILE.onnx`: what a policy file is and whether it fits. */
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { CameraFrame, CameraFrames } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { decodeImage } from '../util/image-codec.js';
import {
  describeImageInput,
  IMAGES_META_KEY,
  isImageInput,
  mergeImageConfigs,
  parseImageConfig,
} from './image-inputs.js';
import { MetaKey } from './onnx-export.js';
import {
  analyzeInputs,
  analyzeLayout,
  type IoDescription,
  type IoValue,
  type NormalizationSource,
  parseNormalization,
} from './onnx-layout.js';
import { createSession, describeIo, OnnxPolicy, readModelFile, runRaw } from './onnx-policy.js';
import { decodeModelHeader, graphChecksum, type OnnxModelHeader } from '../util/onnx-proto.js';
import {
  BASE_EMBEDDING_INPUT,
  CameraResidual,
  cameraResidualWidths,
  checkResidualPairing,
  isCameraResidualHeader,
  loadResidual,
} from './camera-residual.js';
import { analyzeImageInputs } from './image-feeds.js';
import { ImageResidual, isImageResidualHeader } from './image-residual.js';
import { FrameEncoder } from './frame-encoder.js';

export interface InspectReport {
  path: string;
  sizeBytes: number;
  irVersion: number;
  opsets: { domain: string; version: number }[];
  producer: string;
  inputs: IoValue[];
  outputs: IoValue[];
  /** What feeds each graph input: state, base action, or a camera (and what that camera must give). */
  roles: { input: string; role: string; detail: string }[];
  /**
   * From resrt.kind, else guessed from the inputs (two vector inputs, one an action: residual);
   * 'encoder': a camera encoder for a residual's `--encoder file` (frames in, features out).
   */
  kind: 'base' | 'residual' | 'encoder';
  obsDim: number | null;
  actionDim: number | null;
  chunkLength: number | null;
  /** Batch axis is symbolic (any batch size runs). */
  dynamicBatch: boolean;
  normalization: NormalizationSource;
  checksum: 'ok' | 'mismatch' | 'absent';
  metadata: Record<string, string>;
  /** A camera residual (it reads the base's embedding beside the state); absent otherwise. */
  cameraResidual?: { encoder: string; embeddingDim: number | null };
  /** A residual that reads camera images through the encoder inside it; absent otherwise. */
  imageResidual?: { encoder: string; cameras: string[] };
  /** A camera encoder: its feature width and the cameras it reads; absent otherwise. */
  encoder?: { featureDim: number | null; cameras: string[] };
  /** With a base (`inspect RESIDUAL --base BASE`): whether the two files pair (checkResidualPairing). */
  pairing?: { base: string; fits: boolean };
  /** Whether the file loads and fits the task and base (when given); `problems` says why not. */
  fits: boolean;
  problems: { message: string; hint: string }[];
}

export interface InspectTask {
  obsDim: number;
  actionDim: number;
  cameras?: Record<string, { width: number; height: number }>;
}

/** What a file is and whether it fits; `options.base` checks a residual against that base. */
export async function inspectOnnx(
  path: string,
  task?: InspectTask,
  options: { base?: string } = {},
): Promise<InspectReport> {
  const report = await inspectFile(path, task);
  if (options.base === undefined) return report;
  const problem = await pairingProblem(options.base, path, report.kind, task);
  if (problem) report.problems.push(problem);
  report.pairing = { base: options.base, fits: problem === null };
  report.fits = report.problems.length === 0;
  return report;
}

/** A file whose graph no longer matches the checksum its export wrote starts the problem list. */
function checksumProblems(checksum: InspectReport['checksum']): InspectReport['problems'] {
  return checksum === 'mismatch'
    ? [
        {
          message: 'the graph does not match resrt.checksum (modified or truncated after export)',
          hint: 're-export or copy the file again',
        },
      ]
    : [];
}

/**
 * A camera encoder (resrt.kind=encoder, e.g. from `resrt encoder train`): it fits when it loads as
 * `--encoder file` loads it (FrameEncoder) against the task's cameras, or against the frame sizes
 * its own inputs declare.
 */
async function inspectEncoder(
  path: string,
  header: OnnxModelHeader,
  io: ReturnType<typeof describeIo>,
  checksum: InspectReport['checksum'],
  task: InspectTask | undefined,
): Promise<InspectReport> {
  const problems = checksumProblems(checksum);
  const declared = Object.fromEntries(
    io.inputs.filter(isImageInput).map((i) => {
      const [, a, b, c] = i.shape;
      const [height, width] = a === 3 ? [b, c] : [a, b];
      return [i.name.replace(/^observation\.images\./, ''), { height: Number(height), width: Number(width) }];
    }),
  );
  const cameras = task?.cameras ?? declared;
  let featureDim: number | null = null;
  let names: string[] = Object.keys(cameras);
  try {
    const encoder = await FrameEncoder.load(path, cameras);
    featureDim = encoder.featureDim;
    names = encoder.cameras;
    await encoder.close();
  } catch (err) {
    if (!(err instanceof ResrtError)) throw err;
    problems.push({ message: err.message.split('\n')[0], hint: err.hint ?? '' });
  }
  return {
    ...fileFacts(path, header, io),
    roles: io.inputs.map((i) => ({
      input: i.name,
      role: isImageInput(i) ? 'camera' : 'unmapped',
      detail: isImageInput(i) ? 'frames' : 'an encoder reads camera images only',
    })),
    kind: 'encoder',
    obsDim: null,
    actionDim: null,
    chunkLength: null,
    dynamicBatch: typeof io.inputs[0]?.shape[0] === 'string',
    normalization: 'none',
    checksum,
    metadata: header.metadata,
    encoder: { featureDim, cameras: names },
    fits: problems.length === 0,
    problems,
  };
}

/** Null when the residual file pairs with the base (both loaded as `resrt run` loads them), else why not. */
async function pairingProblem(
  basePath: string,
  residualPath: string,
  kind: InspectReport['kind'],
  task: InspectTask | undefined,
): Promise<InspectReport['problems'][number] | null> {
  if (kind !== 'residual') {
    return {
      message: `${residualPath} is a base policy; --base pairs a residual with its base`,
      hint: `inspect the residual file: resrt inspect RESIDUAL.onnx --base ${basePath}`,
    };
  }
  const expect = { expectObsDim: task?.obsDim, expectActionDim: task?.actionDim };
  let base: OnnxPolicy | null = null;
  let residual: Awaited<ReturnType<typeof loadResidual>> | null = null;
  try {
    base = await OnnxPolicy.load(basePath, { ...expect, cameras: task?.cameras, warmupRuns: 0 });
    residual = await loadResidual(residualPath, expect);
    checkResidualPairing(base, residual);
    return null;
  } catch (err) {
    if (!(err instanceof ResrtError)) throw err;
    return { message: err.message.split('\n')[0], hint: err.hint ?? '' };
  } finally {
    await residual?.close();
    await base?.close();
  }
}

async function inspectFile(path: string, task?: InspectTask): Promise<InspectReport> {
  const bytes = readModelFile(path);
  const header = decodeModelHeader(bytes, path);
  const meta = header.metadata;
  const expected = meta[MetaKey.checksum];
  const checksum: InspectReport['checksum'] = !expected
    ? 'absent'
    : graphChecksum(bytes) === expected
      ? 'ok'
      : 'mismatch';
  const session = await createSession(path, 1);
  try {
    const io = describeIo(header, session);
    const kind: InspectReport['kind'] =
      meta[MetaKey.kind] === 'residual' || meta[MetaKey.kind] === 'base'
        ? (meta[MetaKey.kind] as InspectReport['kind'])
        : io.inputs.length === 2 &&
            !io.inputs.some(isImageInput) &&
            io.inputs.some((i) => /act/i.test(i.name))
          ? 'residual'
          : 'base';
    if (meta[MetaKey.kind] === 'encoder') return await inspectEncoder(path, header, io, checksum, task);
    if (isImageResidualHeader(header)) {
      return await inspectImageResidual(path, header, io, checksum, task);
    }
    if (isCameraResidualHeader(header)) {
      return await inspectCameraResidual(path, header, io, checksum, task);
    }
    // The file's own layout first (what it is), then against the task (whether it fits): a file
    // that does not fit still shows its own dimensions and normalization.
    const imageConfig = imageConfigForInspect(path, meta);
    const own = { residual: kind === 'residual', images: { config: imageConfig } };
    const options = {
      residual: kind === 'residual',
      expectObsDim: task?.obsDim,
      expectActionDim: task?.actionDim,
      images: { cameras: task?.cameras, config: imageConfig },
    };
    const problems = checksumProblems(checksum);
    let probedDims: readonly number[] | undefined;
    // A symbolic image size is only known from the task's camera.
    let inputs = analyzeInputs(io, own);
    if (!inputs.plan && task) inputs = analyzeInputs(io, options);
    if (inputs.plan) {
      try {
        const plan = inputs.plan;
        probedDims = (
          await runRaw(session, plan, new Float32Array(plan.inputWidth * plan.probeBatch), plan.probeBatch)
        ).dims;
      } catch (err) {
        problems.push({
          message: (err as Error).message,
          hint: err instanceof ResrtError ? (err.hint ?? '') : '',
        });
      }
    }
    const ownAnalysis = analyzeLayout(io, own, probedDims);
    const taskAnalysis = task ? analyzeLayout(io, options, probedDims) : undefined;
    problems.push(...(taskAnalysis ?? ownAnalysis).problems);
    const analysis = { layout: taskAnalysis?.layout ?? ownAnalysis.layout };
    let normalization: NormalizationSource = 'none';
    if (analysis.layout) {
      const sidecarPath = existsSync(`${path}.json`) ? `${path}.json` : undefined;
      const norm = parseNormalization(meta, analysis.layout.obsDim, {
        sidecarPath,
        sidecarExplicit: false,
        readSidecar: (p) => readFileSync(p, 'utf8'),
      });
      normalization = norm.source;
      if (norm.problem) problems.push(norm.problem);
    }
    const firstInput = io.inputs[0]?.shape[0];
    const plan = inputs.plan;
    const roles = io.inputs.map((input) => {
      const image = plan?.images.find((i) => i.input === input.name);
      if (image)
        return { input: input.name, role: `camera ${image.camera}`, detail: describeImageInput(image) };
      const feed = plan?.feeds.find((f) => f.name === input.name);
      if (feed) {
        const role =
          feed.role === 'obs' ? 'state' : feed.role === 'base_action' ? 'base action' : 'state + base action';
        return { input: input.name, role, detail: `${feed.width} float32 values per sample` };
      }
      return { input: input.name, role: 'unmapped', detail: 'see the problems below' };
    });
    return {
      ...fileFacts(path, header, io),
      roles,
      kind,
      obsDim: analysis.layout?.obsDim ?? null,
      actionDim: analysis.layout?.actionDim ?? null,
      chunkLength: analysis.layout?.chunkLength ?? null,
      dynamicBatch: typeof firstInput === 'string',
      normalization,
      checksum,
      metadata: meta,
      fits: problems.length === 0,
      problems,
    };
  } finally {
    await session.release();
  }
}

function imageConfigForInspect(path: string, meta: Record<string, string>) {
  let fromMeta: unknown;
  try {
    fromMeta = IMAGES_META_KEY in meta ? JSON.parse(meta[IMAGES_META_KEY]) : undefined;
  } catch {
    fromMeta = { [IMAGES_META_KEY]: 'not JSON' };
  }
  let fromSidecar: unknown;
  if (existsSync(`${path}.json`)) {
    try {
      fromSidecar = (JSON.parse(readFileSync(`${path}.json`, 'utf8')) as { images?: unknown }).images;
    } catch {
      fromSidecar = undefined;
    }
  }
  return mergeImageConfigs(
    parseImageConfig(fromMeta, 'metadata').config,
    parseImageConfig(fromSidecar, 'sidecar').config,
  );
}

export function formatInspectReport(r: InspectReport): string {
  const shape = (v: IoValue): string => `  ${v.name.padEnd(16)} ${v.type.padEnd(8)} [${v.shape.join(', ')}]`;
  const lines = [
    `${r.path} (${(r.sizeBytes / 1024).toFixed(1)} KiB, IR ${r.irVersion}, opset ${r.opsets.map((o) => `${o.domain} ${o.version}`).join(', ')}${r.producer ? `, by ${r.producer}` : ''})`,
    r.encoder
      ? `kind: camera encoder (for a residual: --encoder file --encoder-file ${r.path})   features: ${r.encoder.featureDim ?? '?'} per observation   cameras: ${r.encoder.cameras.join(', ') || '?'}`
      : `kind: ${r.cameraResidual ? 'camera residual' : r.imageResidual ? 'residual that reads images' : r.kind}   obs dim: ${r.obsDim ?? '?'}   action dim: ${r.actionDim ?? '?'}   chunk length: ${r.chunkLength ?? '?'}   batch: ${r.dynamicBatch ? 'dynamic' : 'fixed'}`,
    `normalization: ${r.normalization}   checksum: ${r.checksum}`,
    ...(r.cameraResidual
      ? [
          `encoder: ${r.cameraResidual.encoder}   embedding dim: ${r.cameraResidual.embeddingDim ?? '?'} (pair it with a base whose embedding output is that wide)`,
        ]
      : []),
    ...(r.imageResidual
      ? [
          `encoder: ${r.imageResidual.encoder}, inside the file   cameras: ${r.imageResidual.cameras.join(', ') || '?'} (it reads their frames itself; any base with the same state and action widths)`,
        ]
      : []),
    'inputs:',
    ...r.inputs.map((v) => {
      const role = r.roles.find((x) => x.input === v.name);
      return `${shape(v)}  ${role ? `${role.role}: ${role.detail}` : ''}`.trimEnd();
    }),
    'outputs:',
    ...r.outputs.map(shape),
  ];
  const keys = Object.keys(r.metadata).sort();
  if (keys.length) {
    lines.push('metadata:');
    for (const k of keys) {
      const v = r.metadata[k];
      lines.push(`  ${k} = ${v.length > 100 ? `${v.slice(0, 97)}...` : v}`);
    }
  }
  if (r.pairing) lines.push(`pairs with ${r.pairing.base}: ${r.pairing.fits ? 'yes' : 'NO'}`);
  if (r.fits) lines.push('fits: yes');
  else {
    lines.push('fits: NO');
    for (const p of r.problems) lines.push(`  - ${p.message}${p.hint ? `\n    fix: ${p.hint}` : ''}`);
  }
  return lines.join('\n');
}

/** An image file as a camera frame (PNG or JPEG, decoded to RGB). */
export function frameFromImageFile(path: string): CameraFrame {
  if (!existsSync(path))
    throw new ResrtError(`image file ${path} does not exist`, 'check the path of --image');
  const img = decodeImage(readFileSync(path), path);
  return {
    width: img.width,
    height: img.height,
    channels: 3,
    data: img.data,
    capturedAtMs: performance.now(),
    seq: 0,
  };
}

/**
 * One forward pass: `obs` (for residual actors: obs followed by the base action) and, for
 * visuomotor bases, one image file per camera -> the chunk as H rows of A actions.
 */
export async function inferOnce(
  path: string,
  obs: number[],
  options: { residual?: boolean; sidecarPath?: string; images?: Record<string, string> } = {},
): Promise<number[][]> {
  const given = options.images ?? {};
  const frames: Record<string, CameraFrame> = {};
  for (const [camera, file] of Object.entries(given)) frames[camera] = frameFromImageFile(file);
  const cameras = Object.fromEntries(
    Object.entries(frames).map(([k, f]) => [k, { width: f.width, height: f.height }]),
  );
  const policy = await OnnxPolicy.load(path, {
    residual: options.residual,
    sidecarPath: options.sidecarPath,
    warmupRuns: 0,
    cameras: Object.keys(cameras).length ? cameras : undefined,
  });
  try {
    const { obsDim, actionDim, chunkLength, residual } = policy.layout;
    const readsState = residual || policy.layout.feeds.length > 0;
    const want = residual ? obsDim + actionDim : obsDim;
    if (readsState && obs.length !== want) {
      throw new ResrtError(
        `${path} takes ${want} values${residual ? ` (${obsDim} observation + ${actionDim} base action)` : ''}, got ${obs.length}`,
        `pass exactly ${want} comma-separated numbers`,
      );
    }
    const missing = policy.imageInputs.filter((i) => !frames[i.camera]).map((i) => i.camera);
    if (missing.length) {
      throw new ResrtError(
        `${path} reads camera${missing.length > 1 ? 's' : ''} ${missing.map((m) => `"${m}"`).join(', ')} and no image was given for it`,
        `pass ${missing.map((m) => `--image ${m}=FILE.png`).join(' ')} (PNG or JPEG)`,
      );
    }
    const x = Float32Array.from(obs);
    const camFrames: CameraFrames | undefined = policy.imageInputs.length ? frames : undefined;
    const flat = residual
      ? await policy.residual(x.subarray(0, obsDim), x.subarray(obsDim))
      : await policy.runChunk(x, camFrames);
    const rows: number[][] = [];
    for (let h = 0; h < chunkLength; h++)
      rows.push(Array.from(flat.subarray(h * actionDim, (h + 1) * actionDim)));
    return rows;
  } finally {
    await policy.close();
  }
}

/** What every report says of the file itself, whatever kind of model it holds. */
function fileFacts(path: string, header: OnnxModelHeader, io: IoDescription) {
  return {
    path,
    sizeBytes: statSync(path).size,
    irVersion: header.irVersion,
    opsets: header.opsetImport.map((o) => ({ domain: o.domain || 'ai.onnx', version: o.version })),
    producer: [header.producerName, header.producerVersion].filter(Boolean).join(' '),
    inputs: io.inputs,
    outputs: io.outputs,
  };
}

/**
 * A residual that reads images (modes file, learned): its image inputs as the task's cameras feed
 * them, obs and base_action by name. It fits when ImageResidual loads it against the task.
 */
async function inspectImageResidual(
  path: string,
  header: OnnxModelHeader,
  io: ReturnType<typeof describeIo>,
  checksum: InspectReport['checksum'],
  task: InspectTask | undefined,
): Promise<InspectReport> {
  const problems = checksumProblems(checksum);
  let loaded: ImageResidual | null = null;
  try {
    loaded = await ImageResidual.load(path, {
      expectObsDim: task?.obsDim,
      expectActionDim: task?.actionDim,
      cameras: task?.cameras,
    });
  } catch (err) {
    if (!(err instanceof ResrtError)) throw err;
    problems.push({ message: err.message.split('\n')[0], hint: err.hint ?? '' });
  } finally {
    await loaded?.close();
  }
  const { images } = analyzeImageInputs(io.inputs, {
    cameras: task?.cameras,
    config: imageConfigForInspect(path, header.metadata),
  });
  const width = (name: string): number | null => {
    const d = io.inputs.find((i) => i.name === name)?.shape[1];
    return typeof d === 'number' ? d : null;
  };
  const roles = io.inputs.map((input) => {
    const image = images.find((i) => i.input === input.name);
    if (image)
      return { input: input.name, role: `camera ${image.camera}`, detail: describeImageInput(image) };
    if (input.name === 'obs')
      return { input: input.name, role: 'state', detail: `${width('obs') ?? '?'} float32 values per sample` };
    if (input.name === 'base_action')
      return {
        input: input.name,
        role: 'base action',
        detail: `${width('base_action') ?? '?'} float32 values per sample`,
      };
    return { input: input.name, role: 'unmapped', detail: 'see the problems below' };
  });
  return {
    ...fileFacts(path, header, io),
    roles,
    kind: 'residual',
    imageResidual: {
      encoder: header.metadata[MetaKey.residualEncoder] ?? '?',
      cameras: [...new Set(images.map((i) => i.camera))],
    },
    obsDim: width('obs'),
    actionDim: width('base_action'),
    chunkLength: 1,
    dynamicBatch: typeof io.inputs.find((i) => i.name === 'obs')?.shape[0] === 'string',
    // The residual's normalization is baked into the graph by the exporter.
    normalization: header.metadata[MetaKey.normalizationBaked] === 'baked' ? 'baked' : 'none',
    checksum,
    metadata: header.metadata,
    fits: problems.length === 0,
    problems,
  };
}

/**
 * A camera residual: inputs base_embedding, obs, base_action by name (not the state-only layout
 * analysis, which takes at most two vector inputs). It fits when CameraResidual loads it against
 * the task's widths.
 */
async function inspectCameraResidual(
  path: string,
  header: OnnxModelHeader,
  io: ReturnType<typeof describeIo>,
  checksum: InspectReport['checksum'],
  task: InspectTask | undefined,
): Promise<InspectReport> {
  const widths = cameraResidualWidths(header);
  const problems = checksumProblems(checksum);
  try {
    const loaded = await CameraResidual.load(path, {
      expectObsDim: task?.obsDim,
      expectActionDim: task?.actionDim,
    });
    await loaded.close();
  } catch (err) {
    if (!(err instanceof ResrtError)) throw err;
    problems.push({ message: err.message.split('\n')[0], hint: err.hint ?? '' });
  }
  let normalization: NormalizationSource = 'none';
  if (widths.obsDim !== null) {
    const norm = parseNormalization(header.metadata, widths.obsDim, {
      sidecarPath: undefined,
      sidecarExplicit: false,
      readSidecar: (p) => readFileSync(p, 'utf8'),
    });
    normalization = norm.source;
    if (norm.problem) problems.push(norm.problem);
  }
  const roleOf = (name: string): { role: string; detail: string } => {
    if (name === BASE_EMBEDDING_INPUT)
      return {
        role: 'base embedding',
        detail: `${widths.embeddingDim ?? '?'} float32 values per sample: the visuomotor base's embedding output (encoder ${widths.encoder})`,
      };
    if (name === 'obs') return { role: 'state', detail: `${widths.obsDim ?? '?'} float32 values per sample` };
    if (name === 'base_action')
      return { role: 'base action', detail: `${widths.actionDim ?? '?'} float32 values per sample` };
    return { role: 'unmapped', detail: 'see the problems below' };
  };
  return {
    ...fileFacts(path, header, io),
    roles: io.inputs.map((i) => ({ input: i.name, ...roleOf(i.name) })),
    kind: 'residual',
    cameraResidual: { encoder: widths.encoder, embeddingDim: widths.embeddingDim },
    obsDim: widths.obsDim,
    actionDim: widths.actionDim,
    chunkLength: 1,
    dynamicBatch: typeof io.inputs[0]?.shape[0] === 'string',
    normalization,
    checksum,
    metadata: header.metadata,
    fits: problems.length === 0,
    problems,
  };
}
