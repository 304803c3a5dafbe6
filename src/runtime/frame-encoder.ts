/**
 * A frozen image encoder given as an ONNX file (encoder mode `file`, docs/learner.md "Encoder
 * modes"): e.g. a pretrained ResNet or DINO exported with one image input per camera, named
 * `observation.images.<camera>` (or mapped in `resrt.images` metadata, with the same
 * preprocessing settings as a visuomotor base), and one float output [batch, E] (`features`, or the
 * only output). One session call per observation turns its frames into E features.
 */
import { existsSync } from 'node:fs';
import type * as ort from 'onnxruntime-node';
import type { CameraFrames } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { decodeModelHeader, graphChecksum } from '../util/onnx-proto.js';
import { encoderGraphProblem } from './fused-graph.js';
import { analyzeImageInputs, frameTensors, imageConfigOf } from './image-feeds.js';
import { isImageInput } from './image-inputs.js';
import { createSession, describeIo, readModelFile } from './onnx-policy.js';
import type { ImagePreprocess } from './preprocess.js';

/** The output an encoder with several outputs must name its features. */
export const FEATURES_OUTPUT = 'features';

const CONTRACT =
  'an encoder ONNX takes one image input per camera, named observation.images.<camera> ([batch, 3, H, W] or [batch, H, W, 3], float32 or uint8), and outputs float32 features [batch, E]';

export class FrameEncoder {
  /** resrt.residual_encoder of a residual that carries it. */
  readonly mode = 'file';

  private constructor(
    readonly path: string,
    /** The file as read: the exported residual carries this graph. */
    readonly bytes: Uint8Array,
    private readonly session: ort.InferenceSession,
    readonly images: readonly ImagePreprocess[],
    readonly outputName: string,
    readonly featureDim: number,
    /** SHA-256 of the graph: a resumed run must encode with the same one. */
    readonly checksum: string,
  ) {}

  /**
   * Loads and checks an encoder against the cameras of the task or robot (name -> frame size).
   * Every problem is a ResrtError naming the file and the fix.
   */
  static async load(
    path: string,
    cameras: Record<string, { width: number; height: number }>,
    options: { intraOpThreads?: number } = {},
  ): Promise<FrameEncoder> {
    if (!existsSync(path)) {
      throw new ResrtError(
        `encoder file ${path} does not exist`,
        `pass --encoder-file PATH to an existing encoder ONNX (${CONTRACT}), or choose another --encoder mode`,
      );
    }
    const bytes = readModelFile(path);
    const header = decodeModelHeader(bytes, path);
    const carried = encoderGraphProblem(bytes);
    if (carried) {
      throw new ResrtError(
        `${path}: the residual must carry this encoder inside its own file, and ${carried}`,
        'export the encoder with standard operators at opset 17 or later (torch.onnx.export(..., opset_version=17)) and its weights inside the file',
      );
    }
    const session = await createSession(path, options.intraOpThreads ?? 1);
    try {
      const io = describeIo(header, session);
      const names = Object.keys(cameras);
      const found = io.inputs.map((i) => `'${i.name}' [${i.shape.join(', ')}]`).join(', ');
      const expected = names.map((c) => `observation.images.${c}`).join(', ');
      const inputsHint = `name the encoder's inputs ${expected || 'observation.images.<camera>'} (one per camera), or map each input to a camera in its resrt.images metadata: {"<input>": {"camera": "<name>"}}`;
      const vectors = io.inputs.filter((i) => !isImageInput(i));
      if (vectors.length > 0 || io.inputs.length === 0) {
        throw new ResrtError(
          `${path}: the encoder's inputs must all be camera images; the task/robot's cameras are ${names.join(', ') || 'none'}, the inputs found ${found || 'none'}`,
          inputsHint,
        );
      }
      const config = imageConfigOf(path, header.metadata, undefined, undefined);
      const { images, problems } = analyzeImageInputs(io.inputs, { cameras, config });
      if (problems.length > 0) {
        throw new ResrtError(
          `${path}: the encoder's inputs do not match the task/robot's cameras (${names.join(', ') || 'none'}); inputs found: ${found}. ${problems[0].message}`,
          inputsHint,
        );
      }
      const output =
        io.outputs.length === 1 ? io.outputs[0] : io.outputs.find((o) => o.name === FEATURES_OUTPUT);
      if (!output) {
        throw new ResrtError(
          `${path}: the encoder has ${io.outputs.length} outputs (${io.outputs.map((o) => o.name).join(', ')}) and none is named '${FEATURES_OUTPUT}'`,
          `name the feature output '${FEATURES_OUTPUT}', or export the encoder with that one output`,
        );
      }
      const shape = `[${output.shape.join(', ')}]`;
      if (output.type !== 'float32' || output.shape.length !== 2) {
        throw new ResrtError(
          `${path}: the encoder's output '${output.name}' is ${output.type} ${shape}; ${CONTRACT}`,
          'pool or flatten the features to [batch, E] and cast them to float32 inside the exported module (e.g. torch.flatten(x, 1).float())',
        );
      }
      const E = output.shape[1];
      if (typeof E !== 'number') {
        throw new ResrtError(
          `${path}: the encoder's output '${output.name}' ${shape} does not say its width E`,
          'export the encoder with a fixed feature width (only the batch axis dynamic): the residual reads exactly E features',
        );
      }
      const checksum = graphChecksum(bytes);
      if (!checksum) throw new ResrtError(`${path}: the file has no graph`, 're-export the encoder');
      const encoder = new FrameEncoder(path, bytes, session, images, output.name, E, checksum);
      // A probe on black images: the width the graph declares is the width it gives.
      const probe = await encoder.run(frameTensors(images, null, 1));
      if (probe.length !== E) {
        throw new ResrtError(
          `${path}: the encoder's output '${output.name}' declares ${E} features and gave ${probe.length} for one image`,
          'export the encoder so that its output is [batch, E] as declared',
        );
      }
      return encoder;
    } catch (err) {
      await session.release();
      throw err;
    }
  }

  /** The cameras the encoder reads. */
  get cameras(): string[] {
    return [...new Set(this.images.map((i) => i.camera))];
  }

  /** The E features of one observation's frames (one session call). */
  async encode(frames: CameraFrames | undefined): Promise<Float32Array> {
    let feeds: Record<string, ort.Tensor>;
    try {
      feeds = frameTensors(this.images, [frames], 1);
    } catch (err) {
      if (!(err instanceof ResrtError)) throw err;
      throw new ResrtError(`encoder ${this.path}: ${err.message.split('\n')[0]}`, err.hint);
    }
    return Float32Array.from(await this.run(feeds));
  }

  private async run(feeds: Record<string, ort.Tensor>): Promise<Float32Array> {
    let out: ort.InferenceSession.ReturnType;
    try {
      out = await this.session.run(feeds, [this.outputName]);
    } catch (err) {
      throw new ResrtError(
        `onnxruntime failed to run the encoder ${this.path}: ${(err as Error).message.split('\n')[0]}`,
        'run `resrt inspect` on the file to compare its input shapes with the cameras',
      );
    }
    return out[this.outputName].data as Float32Array;
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
