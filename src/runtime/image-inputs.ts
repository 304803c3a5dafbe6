/**
 * Which graph inputs of a visuomotor policy are images, which camera feeds each, and how its
 * frames are preprocessed. LeRobot names are the default mapping (`observation.images.<camera>`,
 * `observation.image` for the one camera, `observation.state`); `resrt.images` metadata, the
 * sidecar's "images" object and load options override it per input (later wins).
 */
import { z } from 'zod';
import type { Dim, IoValue, Problem } from './onnx-layout.js';
import type { ImagePreprocess } from './preprocess.js';

/** Metadata key: JSON {"<input>": ImageInputConfig as snake_case JSON}. */
export const IMAGES_META_KEY = 'resrt.images';

export interface ImageInputConfig {
  camera?: string;
  scale?: number;
  mean?: [number, number, number];
  std?: [number, number, number];
  channelOrder?: 'RGB' | 'BGR';
  resize?: ImagePreprocess['resize'];
  layout?: ImagePreprocess['layout'];
}

const triple = z.tuple([z.number(), z.number(), z.number()]);
const configSchema = z
  .object({
    camera: z.string().min(1).optional(),
    scale: z.number().positive().optional(),
    mean: triple.optional(),
    std: triple.refine((s) => s.every((v) => v > 0), 'std must be positive').optional(),
    channel_order: z.enum(['RGB', 'BGR']).optional(),
    resize: z.enum(['crop-resize', 'stretch', 'none']).optional(),
    layout: z.enum(['NCHW', 'NHWC']).optional(),
  })
  .strict();
const mapSchema = z.record(z.string(), configSchema);

/** Parses `resrt.images` (or a sidecar's "images"); `where` names the source in the problem. */
export function parseImageConfig(
  raw: unknown,
  where: string,
): { config: Record<string, ImageInputConfig>; problem?: Problem } {
  if (raw === undefined) return { config: {} };
  const parsed = mapSchema.safeParse(raw);
  if (!parsed.success) {
    return {
      config: {},
      problem: {
        message: `${where}: image preprocessing is invalid: ${z.prettifyError(parsed.error).split('\n').join(' ')}`,
        hint: 'write {"<input name>": {"camera": "top", "scale": 0.00392156862745098, "mean": [r, g, b], "std": [r, g, b], "channel_order": "RGB", "resize": "crop-resize"}}',
      },
    };
  }
  const config: Record<string, ImageInputConfig> = {};
  for (const [input, c] of Object.entries(parsed.data)) {
    config[input] = {
      camera: c.camera,
      scale: c.scale,
      mean: c.mean,
      std: c.std,
      channelOrder: c.channel_order,
      resize: c.resize,
      layout: c.layout,
    };
  }
  return { config };
}

export function mergeImageConfigs(
  ...configs: (Record<string, ImageInputConfig> | undefined)[]
): Record<string, ImageInputConfig> {
  const out: Record<string, ImageInputConfig> = {};
  for (const c of configs) {
    if (!c) continue;
    for (const [input, v] of Object.entries(c)) {
      const defined = Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined));
      out[input] = { ...out[input], ...defined };
    }
  }
  return out;
}

export const isImageInput = (v: IoValue): boolean => v.shape.length === 4;

/** The camera LeRobot's naming gives an input, or null. */
export function defaultCamera(name: string, cameras: readonly string[] | undefined): string | null {
  const m = /^observation\.images?\.(.+)$/.exec(name);
  if (m) return m[1];
  if (name === 'observation.image' || name === 'image' || name === 'images') {
    if (cameras && cameras.length === 1) return cameras[0];
    return cameras === undefined ? 'image' : null;
  }
  if (cameras?.includes(name)) return name;
  return null;
}

export interface ImageAnalysisOptions {
  /** Cameras the task or robot provides (name -> size); undefined when unknown (inspect alone). */
  cameras?: Record<string, { width: number; height: number }>;
  config: Record<string, ImageInputConfig>;
}

/** Works out one image input's preprocessing, or the problem that stops it. */
export function analyzeImageInput(
  input: IoValue,
  options: ImageAnalysisOptions,
): { spec?: ImagePreprocess; problem?: Problem } {
  const cfg = options.config[input.name] ?? {};
  const names = options.cameras ? Object.keys(options.cameras) : undefined;
  const camera = cfg.camera ?? defaultCamera(input.name, names);
  const shapeText = `[${input.shape.join(', ')}]`;
  if (!camera) {
    return {
      problem: {
        message: `image input '${input.name}' ${shapeText} maps to no camera${names ? ` (cameras: ${names.join(', ') || 'none'})` : ''}`,
        hint: `name it observation.images.<camera> at export, or map it: {"${input.name}": {"camera": "<name>"}} in ${IMAGES_META_KEY} metadata or the sidecar's "images"`,
      },
    };
  }
  if (names && !names.includes(camera)) {
    return {
      problem: {
        message: `image input '${input.name}' needs camera "${camera}", which the task/robot does not have (cameras: ${names.join(', ') || 'none'})`,
        hint: `add a camera named "${camera}", or map '${input.name}' to one of the cameras in ${IMAGES_META_KEY} or the sidecar's "images"`,
      },
    };
  }
  if (input.type !== 'float32' && input.type !== 'uint8') {
    return {
      problem: {
        message: `image input '${input.name}' is ${input.type}; resrt feeds float32 or uint8 images`,
        hint: 'take float32 (or uint8) images in the exported module',
      },
    };
  }
  const [, d1, d2, d3] = input.shape;
  const layout = cfg.layout ?? (d1 === 3 ? 'NCHW' : d3 === 3 ? 'NHWC' : null);
  const channels: Dim | undefined = layout === 'NCHW' ? d1 : layout === 'NHWC' ? d3 : undefined;
  if (!layout || channels !== 3) {
    return {
      problem: {
        message: `image input '${input.name}' ${shapeText} has no 3-channel axis (NCHW [B, 3, H, W] or NHWC [B, H, W, 3]); cameras give RGB`,
        hint: 'export the model for RGB images, or convert grey/RGBA inside the exported module',
      },
    };
  }
  let h: Dim = layout === 'NCHW' ? d2 : d1;
  let w: Dim = layout === 'NCHW' ? d3 : d2;
  const cam = options.cameras?.[camera];
  if (typeof h !== 'number' || typeof w !== 'number') {
    if (!cam) {
      return {
        problem: {
          message: `image input '${input.name}' ${shapeText} has a symbolic height/width and no camera size is known`,
          hint: 'export with a fixed image size (e.g. 84x84), or load the policy against the task/robot whose camera feeds it',
        },
      };
    }
    h = cam.height;
    w = cam.width;
  }
  const isFloat = input.type === 'float32';
  return {
    spec: {
      input: input.name,
      camera,
      layout,
      dtype: isFloat ? 'float32' : 'uint8',
      height: h,
      width: w,
      channelOrder: cfg.channelOrder ?? 'RGB',
      scale: isFloat ? (cfg.scale ?? 1 / 255) : 1,
      mean: cfg.mean ?? [0, 0, 0],
      std: cfg.std ?? [1, 1, 1],
      resize: cfg.resize ?? 'crop-resize',
    },
  };
}

/** What `inspect` says a camera must provide for an input. */
export function describeImageInput(p: ImagePreprocess): string {
  const norm =
    p.dtype === 'uint8'
      ? 'uint8 0-255'
      : `float32 x${p.scale === 1 / 255 ? '/255' : ` * ${p.scale}`}` +
        (p.mean.some((m) => m !== 0) || p.std.some((s) => s !== 1)
          ? `, (x - [${p.mean.join(', ')}]) / [${p.std.join(', ')}]`
          : '');
  const resize =
    p.resize === 'none'
      ? `exactly ${p.width}x${p.height}`
      : p.resize === 'stretch'
        ? `any size, resized to ${p.width}x${p.height}`
        : `any size, centre-cropped to ${p.width}:${p.height} and resized to ${p.width}x${p.height}`;
  return `camera "${p.camera}": ${p.channelOrder} frames (${resize}) -> ${p.layout} ${norm}`;
}
