/**
 * PNG and JPEG to and from RGB camera frames (pure TypeScript decoders: fast-png, jpeg-js), for
 * image files given to `resrt infer`, JPEG frames over MQTT and PNG frames written by `--video`.
 */
import { decode as decodePng, encode as encodePng, hasPngSignature } from 'fast-png';
import jpeg from 'jpeg-js';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { runInThisContext } from 'node:vm';
import { ResrtError } from './errors.js';

export interface RgbImage {
  width: number;
  height: number;
  /** height x width x 3, row-major. */
  data: Uint8Array;
}

const isJpeg = (b: Uint8Array): boolean => b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;

/** Decodes a PNG or JPEG to 8-bit RGB; `source` names the file or topic in errors. */
export function decodeImage(bytes: Uint8Array, source: string): RgbImage {
  if (hasPngSignature(bytes)) return pngToRgb(bytes, source);
  if (isJpeg(bytes)) {
    let img: { width: number; height: number; data: Uint8Array };
    try {
      img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 256 });
    } catch (err) {
      throw new ResrtError(
        `${source} is a corrupt JPEG: ${(err as Error).message}`,
        'send or save the image again; check the camera encoder',
      );
    }
    if (img.data.length !== img.width * img.height * 3) {
      throw new ResrtError(
        `${source} decoded to ${img.data.length} bytes for ${img.width}x${img.height} RGB`,
        'save it as an RGB JPEG',
      );
    }
    return { width: img.width, height: img.height, data: img.data };
  }
  throw new ResrtError(`${source} is neither PNG nor JPEG`, 'give a .png or .jpg image');
}

function pngToRgb(bytes: Uint8Array, source: string): RgbImage {
  let png: ReturnType<typeof decodePng>;
  try {
    png = decodePng(bytes);
  } catch (err) {
    throw new ResrtError(`${source} is a corrupt PNG: ${(err as Error).message}`, 'save the image again');
  }
  const { width, height, channels } = png;
  if (png.palette) {
    throw new ResrtError(
      `${source} is a palette PNG`,
      'save it as RGB (e.g. `ffmpeg -i in.png -pix_fmt rgb24 out.png`)',
    );
  }
  const out = new Uint8Array(width * height * 3);
  const src = png.data;
  const shift = png.depth === 16 ? 8 : 0;
  for (let p = 0; p < width * height; p++) {
    for (let k = 0; k < 3; k++) {
      // Grey (1, 2 channels) repeats its one value; RGBA drops alpha.
      const c = channels >= 3 ? k : 0;
      out[3 * p + k] = src[p * channels + c] >> shift;
    }
  }
  return { width, height, data: out };
}

export function encodeRgbPng(img: RgbImage): Uint8Array {
  return encodePng({ width: img.width, height: img.height, data: img.data, channels: 3, depth: 8 });
}

interface JpegEncoder {
  encode(image: { width: number; height: number; data: Uint8Array }, quality: number): Uint8Array;
}
type JpegEncoderClass = new (quality: number) => JpegEncoder;
let encoderClass: JpegEncoderClass | null = null;
const encoders = new Map<number, JpegEncoder>();

/**
 * jpeg-js's `encode` builds a new encoder per image, whose Huffman and category tables (2 × 65535
 * entries) cost ~75 ms against ~1 ms for the encoding itself at 84×84 (measured on the loaded
 * 2-core dev machine). The package exports only `encode`, so its encoder file is evaluated once
 * here to reach the JPEGEncoder constructor, and one encoder per quality is kept.
 */
function cachedEncoder(quality: number): JpegEncoder {
  let encoder = encoders.get(quality);
  if (encoder) return encoder;
  if (!encoderClass) {
    const path = createRequire(import.meta.url).resolve('jpeg-js/lib/encoder.js');
    const factory = runInThisContext(
      `(function (module) {${readFileSync(path, 'utf8')}\nreturn JPEGEncoder;\n})`,
      {
        filename: path,
      },
    ) as (module: object) => JpegEncoderClass;
    encoderClass = factory({});
  }
  encoder = new encoderClass(quality);
  encoders.set(quality, encoder);
  return encoder;
}

export function encodeRgbJpeg(img: RgbImage, quality = 85): Uint8Array {
  if (!(Number.isInteger(quality) && quality >= 1 && quality <= 100))
    throw new ResrtError(`JPEG quality ${quality}`, 'give a whole number from 1 to 100');
  const rgba = new Uint8Array(img.width * img.height * 4);
  for (let p = 0; p < img.width * img.height; p++) {
    rgba[4 * p] = img.data[3 * p];
    rgba[4 * p + 1] = img.data[3 * p + 1];
    rgba[4 * p + 2] = img.data[3 * p + 2];
    rgba[4 * p + 3] = 255;
  }
  const bytes = cachedEncoder(quality).encode({ width: img.width, height: img.height, data: rgba }, quality);
  // A copy: small Buffers share Node's allocation pool.
  return new Uint8Array(bytes);
}
