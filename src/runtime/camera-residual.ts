/**
 * Residual actors that see the cameras (issue 20): one ONNX file whose inputs are the observation
 * parts the residual reads, by name —
 *   base_embedding [batch, E]  the frozen base's `embedding` output (encoder mode base-embedding)
 *   obs            [batch, O]  the state vector
 *   base_action    [batch, A]  the base's action (normalized, as the robot takes it)
 * and returns `residual` [batch, A]. Normalization of [embedding | state] is baked into the graph.
 * `loadResidual` picks this loader for such files, ImageResidual's (image-residual.ts) for
 * residuals that carry their own encoder (modes file, learned) and OnnxPolicy's for state-only
 * residuals, so `resrt eval --residual`, `resrt run` and the trainer load one residual file either way.
 */
import '../util/ort-telemetry.js';
import * as ort from 'onnxruntime-node';
import { ResrtError } from '../util/errors.js';
import { decodeModelHeader, type OnnxModelHeader } from '../util/onnx-proto.js';
import type { ResidualContext, ResidualModel } from './compose.js';
import { MetaKey } from './onnx-export.js';
import {
  checkResidualWidths,
  createSession,
  OnnxPolicy,
  readModelFile,
  type OnnxPolicyOptions,
} from './onnx-policy.js';
import { ImageResidual, isImageResidualHeader } from './image-residual.js';

/** Metadata key naming the encoder mode a camera residual was trained with. */
export const RESIDUAL_ENCODER_KEY = MetaKey.residualEncoder;
/** The graph input that carries the base's embedding. */
export const BASE_EMBEDDING_INPUT = 'base_embedding';

export class CameraResidual implements ResidualModel {
  private constructor(
    readonly path: string,
    private readonly session: ort.InferenceSession,
    readonly obsDim: number,
    readonly actionDim: number,
    readonly embeddingDim: number,
    readonly version: number,
    readonly encoder: string,
  ) {}

  /** The graph output that carries the residual ('residual' as exported, else the first). */
  get outputName(): string {
    const names = this.session.outputNames;
    return names.includes('residual') ? 'residual' : names[0];
  }

  static async load(path: string, options: OnnxPolicyOptions = {}): Promise<CameraResidual> {
    const bytes = readModelFile(path);
    const header = decodeModelHeader(bytes, path);
    const meta = header.metadata;
    const { embeddingDim: E, obsDim: O, actionDim: A } = cameraResidualWidths(header);
    const names = header.graph.input.map((i) => i.name).join(', ');
    if (E === null || O === null || A === null) {
      throw new ResrtError(
        `${path}: a camera residual takes base_embedding, obs and base_action [batch, width]; this graph's inputs are ${names}`,
        'export it with `resrt train --encoder base-embedding`, or load a state-only residual (inputs obs, base_action)',
      );
    }
    checkResidualWidths(path, O, A, options);
    const session = await createSession(path, options.intraOpThreads ?? 1);
    const v = Number(meta[MetaKey.version]);
    const model = new CameraResidual(
      path,
      session,
      O,
      A,
      E,
      Number.isInteger(v) && v >= 0 ? v : 0,
      cameraResidualWidths(header).encoder,
    );
    try {
      await model.run(new Float32Array(O), new Float32Array(A), new Float32Array(E));
    } catch (err) {
      await session.release();
      throw err;
    }
    return model;
  }

  /** r([embedding | state], a_base); the embedding comes from the base (ComposedPolicy passes it). */
  async residual(
    obs: Float32Array,
    baseAction: Float32Array,
    context?: ResidualContext,
  ): Promise<Float32Array> {
    const e = context?.baseEmbedding;
    if (!e) {
      throw new ResrtError(
        `${this.path} reads the base's embedding, and the base gave none`,
        'pair it with the visuomotor base it was trained on (a `resrt bc --cameras` export with an embedding output)',
      );
    }
    if (e.length !== this.embeddingDim) {
      throw new ResrtError(
        `${this.path} reads a base embedding of ${this.embeddingDim} values, the base gave ${e.length}`,
        'pair the residual with the base it was trained on',
      );
    }
    return this.run(obs, baseAction, e);
  }

  private async run(obs: Float32Array, base: Float32Array, embedding: Float32Array): Promise<Float32Array> {
    if (obs.length !== this.obsDim || base.length !== this.actionDim) {
      throw new ResrtError(
        `${this.path}: got ${obs.length} state and ${base.length} base-action values, expected ${this.obsDim} and ${this.actionDim}`,
        'pass the observation and base action of the task the residual was trained on',
      );
    }
    const out = await this.session.run({
      [BASE_EMBEDDING_INPUT]: new ort.Tensor('float32', embedding, [1, this.embeddingDim]),
      obs: new ort.Tensor('float32', obs, [1, this.obsDim]),
      base_action: new ort.Tensor('float32', base, [1, this.actionDim]),
    });
    const r = out[this.outputName];
    return Float32Array.from(r.data as Float32Array);
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

/** The widths a camera residual's inputs declare (null where not a fixed positive width), and its encoder mode. */
export function cameraResidualWidths(header: OnnxModelHeader): {
  embeddingDim: number | null;
  obsDim: number | null;
  actionDim: number | null;
  encoder: string;
} {
  const width = (name: string): number | null => {
    const input = header.graph.input.find((i) => i.name === name);
    const d = input?.type?.tensorType?.shape?.dim?.[1]?.dimValue;
    return typeof d === 'number' && d > 0 ? d : null;
  };
  return {
    embeddingDim: width(BASE_EMBEDDING_INPUT),
    obsDim: width('obs'),
    actionDim: width('base_action'),
    encoder: header.metadata[RESIDUAL_ENCODER_KEY] ?? 'base-embedding',
  };
}

/** True when the model is a camera residual that reads the base's embedding. */
export function isCameraResidualHeader(header: OnnxModelHeader): boolean {
  if (isImageResidualHeader(header)) return false;
  return (
    RESIDUAL_ENCODER_KEY in header.metadata || header.graph.input.some((i) => i.name === BASE_EMBEDDING_INPUT)
  );
}

/** Any residual file as the runtime runs it. */
export type LoadedResidual = OnnxPolicy | CameraResidual | ImageResidual;

/**
 * Loads a residual file: one that reads images (its encoder inside), one that reads the base's
 * embedding, or a state-only one through OnnxPolicy. `options.cameras` checks an image residual's
 * cameras against the task or robot.
 */
export async function loadResidual(path: string, options: OnnxPolicyOptions = {}): Promise<LoadedResidual> {
  const header = decodeModelHeader(readModelFile(path), path);
  if (isImageResidualHeader(header)) return ImageResidual.load(path, options);
  if (isCameraResidualHeader(header)) return CameraResidual.load(path, options);
  return OnnxPolicy.load(path, { ...options, residual: true });
}

/** What the pairing check reads of a base: its file, widths and embedding output. */
export interface PairingBase {
  readonly path: string;
  readonly obsDim: number;
  readonly actionDim: number;
  /** 0 when the base has no embedding output. */
  readonly embeddingDim: number;
  /** False for a visuomotor base without a state input: its obsDim then says nothing. */
  readonly readsState: boolean;
}

/** What the pairing check reads of a residual (CameraResidual or a state-only OnnxPolicy). */
export interface PairingResidual {
  readonly path: string;
  readonly obsDim: number;
  readonly actionDim: number;
}

/**
 * Whether a residual file can correct this base: the same state and action widths and, for a
 * camera residual, an embedding output of the width it was trained on. A residual trained against
 * another base would read a different embedding (or none), so it is refused before it runs, naming
 * both files. Used by `resrt eval`, `resrt run`, the loop's residual hot swap and `inspect --base`.
 */
export function checkResidualPairing(base: PairingBase, residual: PairingResidual): void {
  const retrain = `train the residual against this base: resrt train --base ${base.path} --task TASK (or pass the base the residual was trained with)`;
  if (residual instanceof CameraResidual) {
    if (base.embeddingDim === 0) {
      throw new ResrtError(
        `${residual.path} reads the base's embedding, and ${base.path} has no embedding output (the camera residual reads ${residual.embeddingDim} embedding values)`,
        `${retrain}; a visuomotor base exported by \`resrt bc --cameras\` has one`,
      );
    }
    if (base.embeddingDim !== residual.embeddingDim) {
      throw new ResrtError(
        `${residual.path} reads a base embedding of ${residual.embeddingDim} values, ${base.path} gives ${base.embeddingDim}`,
        retrain,
      );
    }
  }
  if (base.readsState && base.obsDim !== residual.obsDim) {
    throw new ResrtError(
      `${residual.path} reads ${residual.obsDim} state values, ${base.path} reads ${base.obsDim}`,
      retrain,
    );
  }
  if (base.actionDim !== residual.actionDim) {
    throw new ResrtError(
      `${residual.path} corrects ${residual.actionDim} action values, ${base.path} outputs ${base.actionDim}`,
      retrain,
    );
  }
}
