/**
 * Residuals that read images (issue 20, encoder modes `file` and `learned`): one ONNX file whose
 * encoder is inside it, with inputs by name —
 *   observation.images.<camera>  one per camera it reads, preprocessed as its `resrt.images` says
 *   obs          [batch, O]      the state vector
 *   base_action  [batch, A]      the base's action (normalized, as the robot takes it)
 * and output `residual` [batch, A]; metadata `resrt.residual_encoder` names the mode. The encoder
 * is frozen (`file`) or trained with the residual (`learned`): the runtime does not care, it feeds
 * the current observation's frames. `loadResidual` (camera-residual.ts) picks this loader for any
 * residual file with image inputs.
 */
import '../util/ort-telemetry.js';
import * as ort from 'onnxruntime-node';
import type { CameraFrames } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { decodeModelHeader, type OnnxModelHeader } from '../util/onnx-proto.js';
import type { ResidualContext, ResidualModel } from './compose.js';
import { analyzeImageInputs, frameTensors, imageConfigOf, raiseFor } from './image-feeds.js';
import { MetaKey } from './onnx-export.js';
import {
  checkResidualWidths,
  createSession,
  describeIo,
  readModelFile,
  type OnnxPolicyOptions,
} from './onnx-policy.js';
import type { ImagePreprocess } from './preprocess.js';

/**
 * True when a file is a residual that reads camera images itself: an image input (rank 4) in a
 * file that says it is a residual (resrt.kind, resrt.residual_encoder) or takes the base action.
 * A visuomotor base has image inputs too, and none of the rest.
 */
export function isImageResidualHeader(header: OnnxModelHeader): boolean {
  const inputs = header.graph.input;
  const meta = header.metadata;
  const residual =
    meta[MetaKey.kind] === 'residual' ||
    MetaKey.residualEncoder in meta ||
    inputs.some((i) => i.name === 'base_action');
  return residual && inputs.some((i) => (i.type?.tensorType?.shape?.dim?.length ?? 0) === 4);
}

export class ImageResidual implements ResidualModel {
  private constructor(
    readonly path: string,
    private readonly session: ort.InferenceSession,
    readonly imageInputs: readonly ImagePreprocess[],
    readonly obsDim: number,
    readonly actionDim: number,
    readonly version: number,
    /** resrt.residual_encoder: file or learned. */
    readonly encoder: string,
    readonly outputName: string,
  ) {}

  /** The cameras it reads. */
  get cameras(): string[] {
    return [...new Set(this.imageInputs.map((i) => i.camera))];
  }

  static async load(path: string, options: OnnxPolicyOptions = {}): Promise<ImageResidual> {
    const header = decodeModelHeader(readModelFile(path), path);
    const meta = header.metadata;
    const session = await createSession(path, options.intraOpThreads ?? 1);
    try {
      const io = describeIo(header, session);
      const config = imageConfigOf(path, meta, undefined, options.images);
      const { images, problems } = analyzeImageInputs(io.inputs, { cameras: options.cameras, config });
      if (problems.length > 0) raiseFor(path, problems[0]);
      const width = (name: string): number | null => {
        const d = io.inputs.find((i) => i.name === name)?.shape[1];
        return typeof d === 'number' && d > 0 ? d : null;
      };
      const O = width('obs');
      const A = width('base_action');
      const others = io.inputs.filter(
        (i) => i.name !== 'obs' && i.name !== 'base_action' && !images.some((s) => s.input === i.name),
      );
      if (O === null || A === null || others.length > 0 || images.length === 0) {
        raiseFor(path, {
          message: `a residual that reads images takes observation.images.<camera> inputs, obs [batch, O] and base_action [batch, A]; this graph's inputs are ${io.inputs.map((i) => `'${i.name}' [${i.shape.join(', ')}]`).join(', ')}`,
          hint: 'export it with `resrt train --encoder file --encoder-file ENCODER.onnx`, or load a state-only residual (inputs obs, base_action)',
        });
      }
      checkResidualWidths(path, O, A, options);
      const outputName = session.outputNames.includes('residual') ? 'residual' : session.outputNames[0];
      const v = Number(meta[MetaKey.version]);
      const model = new ImageResidual(
        path,
        session,
        images,
        O,
        A,
        Number.isInteger(v) && v >= 0 ? v : 0,
        meta[MetaKey.residualEncoder] ?? 'file',
        outputName,
      );
      // A probe on black images, so the first control tick pays for no lazy allocation.
      await model.run(new Float32Array(O), new Float32Array(A), frameTensors(images, null, 1));
      return model;
    } catch (err) {
      await session.release();
      throw err;
    }
  }

  /** r(images, obs, a_base) on this observation's frames (ComposedPolicy passes them). */
  async residual(
    obs: Float32Array,
    baseAction: Float32Array,
    context?: ResidualContext,
  ): Promise<Float32Array> {
    return this.run(obs, baseAction, this.imageFeeds(context?.frames));
  }

  private imageFeeds(frames: CameraFrames | undefined): Record<string, ort.Tensor> {
    if (!frames) {
      throw new ResrtError(
        `${this.path} reads camera ${this.cameras.join(', ')}, and no frames came with the observation`,
        "run it on the task or robot with those cameras (resrt eval / resrt run pass every observation's frames to the residual)",
      );
    }
    try {
      return frameTensors(this.imageInputs, [frames], 1);
    } catch (err) {
      if (!(err instanceof ResrtError)) throw err;
      throw new ResrtError(`${this.path}: ${err.message.split('\n')[0]}`, err.hint);
    }
  }

  private async run(
    obs: Float32Array,
    base: Float32Array,
    images: Record<string, ort.Tensor>,
  ): Promise<Float32Array> {
    if (obs.length !== this.obsDim || base.length !== this.actionDim) {
      throw new ResrtError(
        `${this.path}: got ${obs.length} state and ${base.length} base-action values, expected ${this.obsDim} and ${this.actionDim}`,
        'pass the observation and base action of the task the residual was trained on',
      );
    }
    let out: ort.InferenceSession.ReturnType;
    try {
      out = await this.session.run({
        ...images,
        obs: new ort.Tensor('float32', obs, [1, this.obsDim]),
        base_action: new ort.Tensor('float32', base, [1, this.actionDim]),
      });
    } catch (err) {
      throw new ResrtError(
        `onnxruntime failed to run the residual ${this.path}: ${(err as Error).message.split('\n')[0]}`,
        'run `resrt inspect` on the file to compare its inputs with the task',
      );
    }
    return Float32Array.from(out[this.outputName].data as Float32Array);
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
