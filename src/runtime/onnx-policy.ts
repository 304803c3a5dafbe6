/**
 * Any ONNX policy file behind the Policy seam, through onnxruntime-node on the CPU: resrt exports
 * and torch.onnx.export files alike. The I/O layout is worked out from the graph, the resrt
 * metadata and one probe run, and checked against the task before the first control tick.
 */
import '../util/ort-telemetry.js';
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import type { CameraFrames, MaybePromise, Policy } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { ChunkExecutor, type ChunkExecutorOptions, type ChunkPolicy } from './chunk.js';
import type { EmbeddingSource, ResidualModel } from './compose.js';
import {
  analyzeInputs,
  analyzeLayout,
  parseNormalization,
  type FeedPlan,
  type IoDescription,
  type OnnxLayout,
} from './onnx-layout.js';
import { decodeModelHeader, graphChecksum, type OnnxModelHeader } from '../util/onnx-proto.js';
import { MetaKey } from './onnx-export.js';
import type { ImageInputConfig } from './image-inputs.js';
import { frameTensors, imageConfigOf, imageTensor, raiseFor } from './image-feeds.js';
import { type ImagePreprocess, imageSize } from './preprocess.js';

export interface OnnxPolicyOptions {
  /** The task's observation width; a mismatch is an error naming both numbers. */
  expectObsDim?: number;
  /** The robot's action width. */
  expectActionDim?: number;
  /** Load a residual actor: inputs (obs, base_action) or one concatenated [obs, base_action]. */
  residual?: boolean;
  /** JSON with obs_mean/obs_std; default `<file>.json` when it exists and the file has none. */
  sidecarPath?: string;
  /** Fail unless observation normalization is baked in, in metadata, or in a sidecar. */
  requireNormalization?: boolean;
  /** Default 1: a control loop wants one predictable core, not a thread pool's wake-ups. */
  intraOpThreads?: number;
  /** Runs at load so the first tick does not pay for lazy allocation. Default 5. */
  warmupRuns?: number;
  /** How act() executes a chunked model (H > 1). Default open loop over the whole chunk. */
  chunk?: ChunkExecutorOptions;
  /** The cameras of the task or robot (name -> image size): image inputs are checked against them. */
  cameras?: Record<string, { width: number; height: number }>;
  /** Per image input: camera and preprocessing, over the file's metadata and sidecar. */
  images?: Record<string, ImageInputConfig>;
}

export interface OnnxRunResult {
  /** [batch, H * A] row-major. */
  values: Float32Array;
  batch: number;
  /** False for rows containing NaN/Inf: the caller substitutes the safe action. */
  valid: boolean[];
  /** [batch, embeddingDim] when the file names an embedding output (resrt.embedding_output). */
  embedding?: Float32Array;
}

export function readModelFile(path: string): Uint8Array {
  if (!existsSync(path))
    throw new ResrtError(
      `policy file ${path} does not exist`,
      'check the path (relative paths resolve from the current directory)',
    );
  if (statSync(path).isDirectory())
    throw new ResrtError(`${path} is a directory, not an ONNX file`, 'pass the .onnx file inside it');
  return readFileSync(path);
}

function allFinite(values: Float32Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (!Number.isFinite(values[i])) return false;
  return true;
}

export function describeIo(header: OnnxModelHeader, session: ort.InferenceSession): IoDescription {
  const convert = (m: ort.InferenceSession.ValueMetadata): IoDescription['inputs'][number] =>
    m.isTensor
      ? {
          name: m.name,
          type: m.type,
          shape: m.shape.map((d) =>
            typeof d === 'number' && d > 0 ? d : typeof d === 'string' && d ? d : '?',
          ),
        }
      : { name: m.name, type: 'non-tensor', shape: [] };
  return {
    inputs: session.inputMetadata.map(convert),
    outputs: session.outputMetadata.map(convert),
    metadata: header.metadata,
  };
}

export async function createSession(path: string, threads: number): Promise<ort.InferenceSession> {
  try {
    // From the path, not the bytes: onnxruntime then resolves external-data weight files
    // (torch.onnx.export of large models) relative to the model.
    return await ort.InferenceSession.create(path, {
      executionProviders: ['cpu'],
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      logSeverityLevel: 3,
    });
  } catch (err) {
    throw new ResrtError(
      `onnxruntime cannot load ${path}: ${(err as Error).message.split('\n')[0]}`,
      'export with only standard ONNX operators (torch.onnx.export(..., opset_version=17)); custom ops are not supported',
    );
  }
}

/** An ONNX base policy (Policy + ChunkPolicy) or residual actor (ResidualModel). */
export class OnnxPolicy implements Policy, ChunkPolicy, ResidualModel, EmbeddingSource {
  readonly actionDim: number;
  readonly obsDim: number;
  readonly chunkLength: number;
  readonly version: number;
  /** The output named by resrt.embedding_output (a visuomotor base's camera features), if any. */
  readonly embeddingOutput: string | null;
  /** Its width (0 without one). */
  readonly embeddingDim: number;
  private readonly executor: ChunkExecutor | null;
  private lastValid = true;
  private embedding: Float32Array | null = null;

  private constructor(
    readonly path: string,
    private readonly session: ort.InferenceSession,
    readonly layout: OnnxLayout,
    readonly metadata: Readonly<Record<string, string>>,
    /** Observation statistics applied in JS before the graph (metadata or sidecar); null when baked or none. */
    readonly normalization: { mean: Float32Array; std: Float32Array } | null,
    chunk: ChunkExecutorOptions | undefined,
  ) {
    this.actionDim = layout.actionDim;
    this.obsDim = layout.obsDim;
    this.chunkLength = layout.chunkLength;
    const v = Number(metadata[MetaKey.version]);
    this.version = Number.isInteger(v) && v >= 0 ? v : 0;
    this.executor =
      layout.chunkLength > 1 ? new ChunkExecutor(layout.actionDim, layout.chunkLength, chunk) : null;
    const e = embedding(metadata, session);
    this.embeddingOutput = layout.residual ? null : e.output;
    this.embeddingDim = layout.residual ? 0 : e.dim;
  }

  /**
   * The embedding of the most recent single-observation base query (runChunk/act), [embeddingDim];
   * null before the first query or without an embedding output. A chunked base refreshes it only
   * when it queries a new chunk.
   */
  get lastEmbedding(): Float32Array | null {
    return this.embedding;
  }

  static async load(path: string, options: OnnxPolicyOptions = {}): Promise<OnnxPolicy> {
    const bytes = readModelFile(path);
    const header = decodeModelHeader(bytes, path);
    const expected = header.metadata[MetaKey.checksum];
    if (expected && expected.startsWith('sha256:') && graphChecksum(bytes) !== expected) {
      throw new ResrtError(
        `${path}: the graph does not match its resrt.checksum (the file was modified or truncated after export)`,
        're-export the policy, or copy the file again and compare sizes',
      );
    }
    const session = await createSession(path, options.intraOpThreads ?? 1);
    try {
      const io = describeIo(header, session);
      const sidecarFile = options.sidecarPath ?? (existsSync(`${path}.json`) ? `${path}.json` : undefined);
      const layoutOptions = {
        residual: options.residual ?? false,
        expectObsDim: options.expectObsDim,
        expectActionDim: options.expectActionDim,
        images: {
          cameras: options.cameras,
          config: imageConfigOf(path, header.metadata, sidecarFile, options.images),
        },
      };
      const inputs = analyzeInputs(io, layoutOptions);
      if (!inputs.plan) raiseFor(path, inputs.problems[0]);
      // Probe: output dims that the graph leaves symbolic are settled by running it once.
      const { plan } = inputs;
      const probe = await runRaw(
        session,
        plan,
        new Float32Array(plan.inputWidth * plan.probeBatch),
        plan.probeBatch,
      );
      const settled = analyzeLayout(io, layoutOptions, probe.dims);
      if (!settled.layout) raiseFor(path, settled.problems[0]);
      const layout = settled.layout;
      const norm = parseNormalization(header.metadata, layout.obsDim, {
        sidecarPath: sidecarFile,
        sidecarExplicit: options.sidecarPath !== undefined,
        readSidecar: (p) => {
          if (!existsSync(p))
            throw new ResrtError(
              `normalization sidecar ${p} does not exist`,
              'pass the JSON written next to the model at export (obs_mean, obs_std)',
            );
          return readFileSync(p, 'utf8');
        },
      });
      if (norm.problem) raiseFor(path, norm.problem);
      if (options.requireNormalization && norm.source === 'none') {
        raiseFor(path, {
          message: `${path} carries no observation normalization (no baked Sub/Div, no resrt.obs_mean/resrt.obs_std metadata, no sidecar ${path}.json)`,
          hint: `write {"obs_mean": [...], "obs_std": [...]} to ${path}.json or pass --sidecar FILE; or bake normalization in at export`,
        });
      }
      const policy = new OnnxPolicy(path, session, layout, header.metadata, norm.values, options.chunk);
      const warm = options.warmupRuns ?? 5;
      const zeros = new Float32Array(layout.obsDim);
      const zeroAction = new Float32Array(layout.actionDim);
      for (let i = 0; i < warm; i++) {
        if (layout.residual) await policy.residual(zeros, zeroAction);
        else await policy.runBatch(zeros, 1, undefined, undefined, true);
      }
      return policy;
    } catch (err) {
      await session.release();
      throw err;
    }
  }

  /** Whether the most recent single-observation run produced only finite values. */
  get lastRunValid(): boolean {
    return this.lastValid;
  }

  reset(): void {
    this.executor?.reset();
  }

  /** The image inputs and the cameras feeding them; empty for state-only policies. */
  get imageInputs(): readonly ImagePreprocess[] {
    return this.layout.images;
  }

  /** False for a visuomotor base without a state input (it ignores the state vector). */
  get readsState(): boolean {
    return this.layout.residual || this.layout.feeds.length > 0;
  }

  /**
   * One observation (and, for visuomotor bases, its camera frames) -> the flat [H * A] chunk
   * (H = 1 for plain policies). NaN rows come back as is.
   */
  async runChunk(obs: Float32Array, frames?: CameraFrames): Promise<Float32Array> {
    if (this.layout.residual) {
      throw new ResrtError(
        `${this.path} is a residual actor; it needs the base action too`,
        'call residual(obs, baseAction) or wrap it in ComposedPolicy',
      );
    }
    const result = await this.runBatch(obs, 1, undefined, frames ? [frames] : undefined);
    this.lastValid = result.valid[0];
    this.embedding = result.embedding ?? null;
    return result.values;
  }

  /**
   * Observations [batch, obsDim] row-major (and, for residual actors, base actions
   * [batch, actionDim]; for visuomotor bases, one CameraFrames per row) -> [batch, H * A].
   * `blankImages` feeds black images instead of frames (warm-up only).
   */
  async runBatch(
    obs: Float32Array,
    batch: number,
    baseActions?: Float32Array,
    frames?: readonly CameraFrames[],
    blankImages = false,
  ): Promise<OnnxRunResult> {
    const { obsDim, actionDim, residual, inputWidth } = this.layout;
    if (this.readsState && obs.length !== batch * obsDim) {
      throw new ResrtError(
        `${this.path}: got ${obs.length} observation values for batch ${batch} x obs dim ${obsDim}`,
        'pass the observation vector the policy was trained on',
      );
    }
    if (this.layout.fixedBatch !== null && batch !== this.layout.fixedBatch) {
      throw new ResrtError(
        `${this.path} was exported with a fixed batch of ${this.layout.fixedBatch}; batch ${batch} cannot run`,
        "re-export with dynamic_axes={'<input>': {0: 'batch'}, '<output>': {0: 'batch'}}",
      );
    }
    if (residual && (!baseActions || baseActions.length !== batch * actionDim)) {
      throw new ResrtError(`${this.path}: a residual actor needs ${batch} x ${actionDim} base action values`);
    }
    // One flat buffer [obs | base] per row; runRaw slices it per graph input.
    const flat = new Float32Array(batch * inputWidth);
    for (let n = 0; n < batch; n++) {
      for (let j = 0; j < obsDim; j++) {
        const x = obs[n * obsDim + j];
        flat[n * inputWidth + j] = this.normalization
          ? (x - this.normalization.mean[j]) / this.normalization.std[j]
          : x;
      }
      if (residual && baseActions)
        flat.set(baseActions.subarray(n * actionDim, (n + 1) * actionDim), n * inputWidth + obsDim);
    }
    const images = this.imageTensors(batch, frames, blankImages);
    const extra = this.embeddingOutput ? [this.embeddingOutput] : [];
    const out = await runRaw(this.session, this.layout, flat, batch, images, extra);
    const width = this.chunkLength * actionDim;
    if (out.values.length !== batch * width) {
      throw new ResrtError(
        `${this.path}: output has ${out.values.length} values, expected ${batch} x ${width}`,
        'the model output shape depends on the input in a way resrt does not support',
      );
    }
    const valid: boolean[] = [];
    for (let n = 0; n < batch; n++) valid.push(allFinite(out.values, n * width, (n + 1) * width));
    const emb = this.embeddingOutput ? out.extra[this.embeddingOutput] : undefined;
    if (emb && emb.length !== batch * this.embeddingDim) {
      throw new ResrtError(
        `${this.path}: embedding output '${this.embeddingOutput}' has ${emb.length / batch} values per row, its metadata ${MetaKey.embeddingDim} says ${this.embeddingDim}`,
        're-export the base so that resrt.embedding_dim matches the embedding output',
      );
    }
    return { values: out.values, batch, valid, ...(emb ? { embedding: emb } : {}) };
  }

  private imageTensors(
    batch: number,
    frames: readonly CameraFrames[] | undefined,
    blank: boolean,
  ): Record<string, ort.Tensor> | undefined {
    const specs = this.layout.images;
    if (specs.length === 0 || blank) return undefined;
    // Without frames, frameTensors names the first camera missing, with the fix.
    return frameTensors(specs, frames ?? [], batch);
  }

  /**
   * Policy.act: the action for this control step. Chunked models go through the chunk executor
   * (re-querying only when the executor needs a new chunk). A NaN output yields a NaN action
   * (not an exception), which the control loop replaces with the safe action.
   */
  act(obs: Float32Array, frames?: CameraFrames): MaybePromise<Float32Array> {
    if (this.executor) return this.executor.act(obs, (o) => this.runChunk(o, frames));
    return this.runChunk(obs, frames);
  }

  /** ResidualModel: r(obs, a_base) for residual actors. */
  async residual(obs: Float32Array, baseAction: Float32Array): Promise<Float32Array> {
    if (!this.layout.residual) {
      throw new ResrtError(
        `${this.path} is a base policy, not a residual actor`,
        'load it with { residual: true } only if it takes (obs, base_action)',
      );
    }
    const result = await this.runBatch(obs, 1, baseAction);
    this.lastValid = result.valid[0];
    return result.values;
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

/** The embedding output named in the metadata, checked against the graph's outputs. */
function embedding(
  meta: Readonly<Record<string, string>>,
  session: ort.InferenceSession,
): { output: string | null; dim: number } {
  const name = meta[MetaKey.embeddingOutput];
  if (!name) return { output: null, dim: 0 };
  const dim = Number(meta[MetaKey.embeddingDim]);
  if (!session.outputNames.includes(name) || !Number.isInteger(dim) || dim <= 0) {
    throw new ResrtError(
      `metadata ${MetaKey.embeddingOutput}=${name} / ${MetaKey.embeddingDim}=${meta[MetaKey.embeddingDim]} does not name an output of the graph (outputs: ${session.outputNames.join(', ')}) with a positive width`,
      're-export the base with `resrt bc --cameras ...`, or remove the two metadata entries',
    );
  }
  return { output: name, dim };
}

/**
 * Feeds a flat [batch, inputWidth] buffer to the graph's vector inputs as the layout says, and
 * image tensors to its image inputs (black images when none are given: the load-time probe).
 */
export async function runRaw(
  session: ort.InferenceSession,
  layout: FeedPlan,
  flat: Float32Array,
  batch: number,
  images?: Record<string, ort.Tensor>,
  extraOutputs: readonly string[] = [],
): Promise<{ values: Float32Array; dims: readonly number[]; extra: Record<string, Float32Array> }> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const spec of layout.images) {
    const size = imageSize(spec);
    feeds[spec.input] =
      images?.[spec.input] ??
      imageTensor(
        spec,
        batch,
        spec.dtype === 'float32' ? new Float32Array(batch * size) : new Uint8Array(batch * size),
      );
  }
  if (layout.feeds.length === 0) {
    // A visuomotor base without a state input.
  } else if (layout.feeds.length === 1) {
    feeds[layout.feeds[0].name] = new ort.Tensor('float32', flat, [batch, layout.inputWidth]);
  } else {
    for (const feed of layout.feeds) {
      const part = new Float32Array(batch * feed.width);
      for (let n = 0; n < batch; n++) {
        part.set(
          flat.subarray(
            n * layout.inputWidth + feed.offset,
            n * layout.inputWidth + feed.offset + feed.width,
          ),
          n * feed.width,
        );
      }
      feeds[feed.name] = new ort.Tensor('float32', part, [batch, feed.width]);
    }
  }
  let out: ort.InferenceSession.ReturnType;
  try {
    out = await session.run(feeds, [layout.outputName, ...extraOutputs]);
  } catch (err) {
    throw new ResrtError(
      `onnxruntime failed to run the policy: ${(err as Error).message.split('\n')[0]}`,
      'run `resrt inspect` on the file to compare its input shapes with the task',
    );
  }
  const tensor = out[layout.outputName];
  if (tensor.type !== 'float32') {
    throw new ResrtError(
      `policy output '${layout.outputName}' is ${tensor.type}, not float32`,
      'cast the output to float32 before export',
    );
  }
  const extra: Record<string, Float32Array> = {};
  for (const name of extraOutputs) extra[name] = out[name].data as Float32Array;
  return { values: tensor.data as Float32Array, dims: tensor.dims, extra };
}

/** A residual file's state and action widths against the task's or robot's, with the fix. */
export function checkResidualWidths(
  path: string,
  obsDim: number,
  actionDim: number,
  options: OnnxPolicyOptions,
): void {
  if (options.expectObsDim !== undefined && obsDim !== options.expectObsDim) {
    throw new ResrtError(
      `${path} reads ${obsDim} state values, the task or robot gives ${options.expectObsDim}`,
      'use the residual trained for this task (resrt inspect FILE shows its inputs)',
    );
  }
  if (options.expectActionDim !== undefined && actionDim !== options.expectActionDim) {
    throw new ResrtError(
      `${path} corrects ${actionDim} action values, the task or robot takes ${options.expectActionDim}`,
      'use the residual trained for this task and base',
    );
  }
}
