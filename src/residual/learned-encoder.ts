/**
 * The `learned` encoder mode (ResFiT/DrQ): one conv encoder per camera (src/nn/conv-encoder.ts),
 * its parameters one flat vector beside the actor's and the critics', trained by the critic loss
 * alone. Frames come from replay as uint8 [B, H, W, C] (replay-frames.ts) and become float
 * [B, 3, H, W] in [0, 1] with a random shift of up to 4 pixels (DrQ) when a batch is drawn; the
 * features of all cameras, concatenated, stand in front of the state in every network's input.
 */
import {
  convEncoderApply,
  convEncoderParamSpecs,
  framesToBatch,
  initConvEncoder,
  op,
  ParamLayout,
  randomShifts,
  type ConvEncoderSpec,
  type Graph,
  type Value,
} from '../nn/index.js';
import { ResrtError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import type { ResidualConfig } from './config.js';
import { describeCameras, type FrameCamera, type SampledFrames } from './replay-frames.js';

/** DrQ's random shift: images padded by 4 pixels (edge repeat) and cropped back at random. */
export const SHIFT_PAD = 4;

export interface LearnedCamera {
  name: string;
  encoder: ConvEncoderSpec;
}

/** The encoders of every camera as one parameter layout (`enc<k>/…`). */
export interface LearnedEncoderNet {
  cameras: LearnedCamera[];
  layout: ParamLayout;
  /** Features of all cameras together (cameras × encoderFeatures). */
  features: number;
}

const prefix = (k: number): string => `enc${k}/`;

/** The network for these cameras, or a ResrtError naming the fix when a camera is not RGB. */
export function learnedEncoderNet(cfg: ResidualConfig, cameras: readonly FrameCamera[]): LearnedEncoderNet {
  if (cameras.length === 0) {
    throw new ResrtError(
      'encoder learned needs camera frames, and this run keeps none',
      'train on a task or robot with cameras (e.g. --task push-cam), or pass --encoder none',
    );
  }
  const notRgb = cameras.filter((c) => c.channels !== 3);
  if (notRgb.length) {
    throw new ResrtError(
      `encoder learned reads RGB frames, and ${describeCameras(notRgb)} ${notRgb.length > 1 ? 'are' : 'is'} not 3-channel`,
      'configure the cameras as RGB (3 channels), or pass --encoder none',
    );
  }
  const list = cameras.map((c) => ({
    name: c.name,
    encoder: {
      height: c.height,
      width: c.width,
      channels: cfg.encoderChannels,
      features: cfg.encoderFeatures,
    },
  }));
  return {
    cameras: list,
    layout: new ParamLayout(list.flatMap((c, k) => convEncoderParamSpecs(c.encoder, prefix(k)))),
    features: list.length * cfg.encoderFeatures,
  };
}

/** Initial parameters from `seed` (He-normal convolutions, see initConvEncoder). */
export function initLearnedEncoder(net: LearnedEncoderNet, seed: number): Float32Array {
  const flat = new Float32Array(net.layout.size);
  const rng = new Rng(seed);
  net.cameras.forEach((c, k) => initConvEncoder(net.layout, flat, c.encoder, prefix(k), rng));
  return flat;
}

/** Images, one [B, 3, H, W] value per camera → features [B, cameras × F]. */
export function encodeCameras(
  net: LearnedEncoderNet,
  params: ReadonlyMap<string, Value>,
  images: readonly Value[],
): Value {
  const features = net.cameras.map((c, k) => convEncoderApply(params, images[k], c.encoder, prefix(k)));
  return features.length === 1 ? features[0] : op.concat(features, 1);
}

/** One graph input [rows, 3, H, W] per camera, named `name(camera, k)`. */
export function imageInputs(
  g: Graph,
  net: LearnedEncoderNet,
  rows: number,
  name: (camera: string, k: number) => string,
): Value[] {
  return net.cameras.map((c, k) => g.input(name(c.name, k), [rows, 3, c.encoder.height, c.encoder.width]));
}

/** The update graph's image inputs: the batch's obs frames and its n-step next-obs frames. */
export const obsImagesInput = (k: number): string => `images/${k}`;
export const nextImagesInput = (k: number): string => `nextImages/${k}`;

/**
 * The float image batches of one update, reused from update to update: obs and next-obs frames of
 * each camera with independent random shifts (DrQ augments the target's input too).
 */
export class ShiftedImages {
  readonly obs: Float32Array[];
  readonly next: Float32Array[];
  private readonly rows: Int32Array;
  private readonly shifts: Int32Array;

  constructor(
    readonly net: LearnedEncoderNet,
    readonly batchSize: number,
  ) {
    const size = (c: LearnedCamera): number => batchSize * 3 * c.encoder.height * c.encoder.width;
    this.obs = net.cameras.map((c) => new Float32Array(size(c)));
    this.next = net.cameras.map((c) => new Float32Array(size(c)));
    this.rows = Int32Array.from({ length: batchSize }, (_, i) => i);
    this.shifts = new Int32Array(2 * batchSize);
  }

  /** Fills obs then next images of every camera, drawing shifts from `rng` in that order. */
  fill(frames: SampledFrames, rng: Rng): void {
    this.net.cameras.forEach((c, k) => {
      const store = (data: Uint8Array) => ({
        height: c.encoder.height,
        width: c.encoder.width,
        data,
        count: this.batchSize,
      });
      framesToBatch(
        store(frames.obs[k]),
        this.rows,
        this.obs[k],
        randomShifts(rng, this.batchSize, SHIFT_PAD, this.shifts),
      );
      framesToBatch(
        store(frames.next[k]),
        this.rows,
        this.next[k],
        randomShifts(rng, this.batchSize, SHIFT_PAD, this.shifts),
      );
    });
  }

  feeds(): Record<string, Float32Array> {
    const out: Record<string, Float32Array> = {};
    this.obs.forEach((img, k) => (out[obsImagesInput(k)] = img));
    this.next.forEach((img, k) => (out[nextImagesInput(k)] = img));
    return out;
  }
}
