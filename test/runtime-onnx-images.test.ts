/**
 * Visuomotor (multi-input) ONNX policies through real onnxruntime: a torch-style graph written with
 * the project's ONNX writer (observation.state [B, S] + observation.images.top [B, 3, H, W] -> an
 * action chunk), preprocessing against hand computations, inspect's roles, infer with image files,
 * and every bad input named with its fix.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type VisuomotorModelOptions, visuomotorOnnx } from './fixtures/visuomotor-onnx.js';
import { inferOnce, inspectOnnx } from '../src/runtime/onnx-inspect.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { type ImagePreprocess, preprocessFrame } from '../src/runtime/preprocess.js';
import type { CameraFrame } from '../src/types.js';
import { encodeRgbJpeg, encodeRgbPng } from '../src/util/image-codec.js';
import { Rng } from '../src/util/rng.js';

const S = 6;
const IMG = 16;
const A = 3;
const H = 4;
const visuomotorModel = (
  options: Omit<VisuomotorModelOptions, 'state' | 'image' | 'actions' | 'chunk'> = {},
) => visuomotorOnnx({ state: S, image: IMG, actions: A, chunk: H, ...options });

function frame(width: number, height: number, seed: number): CameraFrame {
  const rng = new Rng(seed);
  return {
    width,
    height,
    channels: 3,
    data: Uint8Array.from({ length: width * height * 3 }, () => rng.int(256)),
    capturedAtMs: 0,
    seq: 0,
  };
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'resrt-onnx-images-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const write = (name: string, bytes: Uint8Array): string => {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
};

describe('image preprocessing', () => {
  const spec = (over: Partial<ImagePreprocess>): ImagePreprocess => ({
    input: 'img',
    camera: 'top',
    layout: 'NCHW',
    dtype: 'float32',
    height: 2,
    width: 2,
    channelOrder: 'RGB',
    scale: 1,
    mean: [0, 0, 0],
    std: [1, 1, 1],
    resize: 'crop-resize',
    ...over,
  });
  // 4 wide x 2 high; pixel (x, y) has R = 10 x + y, G = 100 + R, B = 200 + R.
  const wide: CameraFrame = {
    width: 4,
    height: 2,
    channels: 3,
    data: Uint8Array.from({ length: 24 }, (_, i) => {
      const p = Math.floor(i / 3);
      const r = 10 * (p % 4) + Math.floor(p / 4);
      return [r, 100 + r, 200 + r][i % 3];
    }),
    capturedAtMs: 0,
    seq: 0,
  };

  it('centre-crops a 4x2 frame to 2x2 (columns 1 and 2), in NCHW and NHWC, RGB and BGR', () => {
    const out = new Float32Array(12);
    preprocessFrame(wide, spec({}), out, 0);
    // Plane R: rows y = 0, 1; columns x = 1, 2 -> 10, 20 / 11, 21.
    expect(Array.from(out)).toEqual([10, 20, 11, 21, 110, 120, 111, 121, 210, 220, 211, 221]);
    preprocessFrame(wide, spec({ layout: 'NHWC', channelOrder: 'BGR' }), out, 0);
    expect(Array.from(out)).toEqual([210, 110, 10, 220, 120, 20, 211, 111, 11, 221, 121, 21]);
  });

  it('resizes bilinearly with half-pixel centres and normalizes per channel', () => {
    const two: CameraFrame = { ...wide, width: 2, height: 1, data: Uint8Array.from([0, 0, 0, 200, 100, 40]) };
    const out = new Float32Array(4 * 1 * 3);
    preprocessFrame(
      two,
      spec({ width: 4, height: 1, resize: 'stretch', scale: 1 / 255, mean: [0.5, 0, 0], std: [0.25, 1, 2] }),
      out,
      0,
    );
    // Source x for output x: (x + 0.5) * 0.5 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
    const weights = [0, 0.25, 0.75, 1];
    const expected = [
      ...weights.map((w) => ((200 * w) / 255 - 0.5) / 0.25),
      ...weights.map((w) => (100 * w) / 255),
      ...weights.map((w) => (40 * w) / 255 / 2),
    ];
    expected.forEach((v, i) => expect(out[i]).toBeCloseTo(v, 5));
  });

  it('uint8 inputs take rounded raw values; refusals name the camera and the fix', () => {
    const out = new Uint8Array(12);
    preprocessFrame(wide, spec({ dtype: 'uint8' }), out, 0);
    expect(Array.from(out.subarray(0, 4))).toEqual([10, 20, 11, 21]);
    expect(() => preprocessFrame(wide, spec({ resize: 'none' }), out, 0)).toThrow(
      /camera "top" gives 4x2 frames; input 'img' takes 2x2 and resizing is off[\s\S]*fix: set the camera to 2x2/,
    );
    const grey = { ...wide, channels: 1, data: new Uint8Array(8) };
    expect(() => preprocessFrame(grey, spec({}), out, 0)).toThrow(/1 channels[\s\S]*takes RGB/);
  });
});

describe('multi-input ONNX policies', () => {
  it('matches onnxruntime called directly on the same preprocessed tensors', async () => {
    const path = write('act.onnx', visuomotorModel());
    const policy = await OnnxPolicy.load(path, {
      expectObsDim: S,
      expectActionDim: A,
      cameras: { top: { width: 24, height: 16 } },
    });
    expect(policy.chunkLength).toBe(H);
    expect(policy.imageInputs.map((i) => [i.input, i.camera, i.layout, i.height, i.width])).toEqual([
      ['observation.images.top', 'top', 'NCHW', IMG, IMG],
    ]);
    const session = await ort.InferenceSession.create(path);
    for (const seed of [1, 2]) {
      const state = Float32Array.from({ length: S }, (_, i) => Math.sin(seed + i));
      const f = frame(24, 16, seed);
      const chunk = await policy.runChunk(state, { top: f });
      // By hand: centre crop 24x16 -> 16x16 (columns 4..19), same size so no interpolation, / 255.
      const img = new Float32Array(3 * IMG * IMG);
      for (let c = 0; c < 3; c++)
        for (let y = 0; y < IMG; y++)
          for (let x = 0; x < IMG; x++)
            img[c * IMG * IMG + y * IMG + x] = f.data[3 * (y * 24 + x + 4) + c] / 255;
      const direct = await session.run({
        'observation.state': new ort.Tensor('float32', state, [1, S]),
        'observation.images.top': new ort.Tensor('float32', img, [1, 3, IMG, IMG]),
      });
      const want = direct.action.data as Float32Array;
      expect(chunk.length).toBe(H * A);
      chunk.forEach((v, i) => expect(v).toBeCloseTo(want[i], 5));
      // Policy.act executes the chunk open loop: its first action is the chunk's first row.
      policy.reset();
      const a0 = await policy.act(state, { top: f });
      expect(Array.from(a0)).toEqual(Array.from(chunk.subarray(0, A)));
    }
    await session.release();
    await policy.close();
  });

  it('reads NHWC inputs, a camera mapping and normalization from metadata', async () => {
    const path = write(
      'nhwc.onnx',
      visuomotorModel({
        imageName: 'pixels',
        layout: 'NHWC',
        meta: {
          'resrt.images': JSON.stringify({
            pixels: { camera: 'wrist', mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
          }),
        },
      }),
    );
    const policy = await OnnxPolicy.load(path, { cameras: { wrist: { width: IMG, height: IMG } } });
    const [spec] = policy.imageInputs;
    expect([spec.camera, spec.layout, spec.mean, spec.std]).toEqual([
      'wrist',
      'NHWC',
      [0.5, 0.5, 0.5],
      [0.5, 0.5, 0.5],
    ]);
    const f = frame(IMG, IMG, 3);
    const state = new Float32Array(S).fill(0.1);
    const chunk = await policy.runChunk(state, { wrist: f });
    const session = await ort.InferenceSession.create(path);
    const img = Float32Array.from(f.data, (v) => (v / 255 - 0.5) / 0.5);
    const direct = await session.run({
      'observation.state': new ort.Tensor('float32', state, [1, S]),
      pixels: new ort.Tensor('float32', img, [1, IMG, IMG, 3]),
    });
    const want = direct.action.data as Float32Array;
    chunk.forEach((v, i) => expect(v).toBeCloseTo(want[i], 5));
    await session.release();
    await policy.close();
  });

  it('inspect lists each input with its role and what the camera must give; infer takes image files', async () => {
    const path = write('roles.onnx', visuomotorModel());
    const report = await inspectOnnx(path);
    expect(report.kind).toBe('base');
    expect(report.fits).toBe(true);
    expect(report.roles).toEqual([
      { input: 'observation.state', role: 'state', detail: '6 float32 values per sample' },
      {
        input: 'observation.images.top',
        role: 'camera top',
        detail:
          'camera "top": RGB frames (any size, centre-cropped to 16:16 and resized to 16x16) -> NCHW float32 x/255',
      },
    ]);
    const f = frame(IMG, IMG, 9);
    const png = write('top.png', encodeRgbPng(f));
    const state = Array.from({ length: S }, (_, i) => i / 10);
    const rows = await inferOnce(path, state, { images: { top: png } });
    const policy = await OnnxPolicy.load(path, { cameras: { top: { width: IMG, height: IMG } } });
    const chunk = await policy.runChunk(Float32Array.from(state), { top: f });
    expect(rows.flat().map((v) => Math.fround(v))).toEqual(Array.from(chunk));
    await policy.close();
    // A JPEG decodes too (lossy, so only the shape is checked).
    const jpg = write('top.jpg', encodeRgbJpeg(f, 90));
    expect((await inferOnce(path, state, { images: { top: jpg } })).length).toBe(H);
  });

  it('names every bad input and its fix', async () => {
    const path = write('bad.onnx', visuomotorModel());
    // A missing camera at load (the task has none of that name) and at run time.
    await expect(OnnxPolicy.load(path, { cameras: { front: { width: 16, height: 16 } } })).rejects.toThrow(
      /needs camera "top", which the task\/robot does not have \(cameras: front\)[\s\S]*fix: add a camera named "top"/,
    );
    const policy = await OnnxPolicy.load(path, { cameras: { top: { width: 16, height: 16 } } });
    await expect(policy.runChunk(new Float32Array(S), {})).rejects.toThrow(
      /input 'observation.images.top' needs camera "top" and no frame from it was given/,
    );
    await expect(policy.runChunk(new Float32Array(S))).rejects.toThrow(/no frame from it was given/);
    const rgba = { ...frame(16, 16, 1), channels: 4, data: new Uint8Array(16 * 16 * 4) };
    await expect(policy.runChunk(new Float32Array(S), { top: rgba })).rejects.toThrow(/4 channels[\s\S]*RGB/);
    await policy.close();
    // A wrong resolution when resizing is off.
    const strict = await OnnxPolicy.load(path, { images: { 'observation.images.top': { resize: 'none' } } });
    await expect(strict.runChunk(new Float32Array(S), { top: frame(20, 20, 1) })).rejects.toThrow(
      /gives 20x20 frames; input 'observation.images.top' takes 16x16 and resizing is off/,
    );
    await strict.close();
    // A model input that no observation part maps to.
    const unmapped = write('unmapped.onnx', visuomotorModel({ imageName: 'pixels' }));
    await expect(OnnxPolicy.load(unmapped, { cameras: { top: { width: 16, height: 16 } } })).rejects.toThrow(
      /image input 'pixels' \[batch, 3, 16, 16\] maps to no camera \(cameras: top\)[\s\S]*observation.images.<camera>/,
    );
    const report = await inspectOnnx(unmapped, {
      obsDim: S,
      actionDim: A,
      cameras: { top: { width: 16, height: 16 } },
    });
    expect(report.fits).toBe(false);
    expect(report.roles[1]).toEqual({ input: 'pixels', role: 'unmapped', detail: 'see the problems below' });
    // Bad image files for infer.
    const corrupt = write('corrupt.jpg', Uint8Array.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]));
    await expect(inferOnce(path, new Array(S).fill(0), { images: { top: corrupt } })).rejects.toThrow(
      /corrupt JPEG/,
    );
    const text = write('notes.txt', new TextEncoder().encode('hello'));
    await expect(inferOnce(path, new Array(S).fill(0), { images: { top: text } })).rejects.toThrow(
      /neither PNG nor JPEG/,
    );
    await expect(inferOnce(path, new Array(S).fill(0))).rejects.toThrow(
      /reads camera "top"[\s\S]*--image top=FILE.png/,
    );
    // Bad preprocessing metadata.
    const badMeta = write(
      'badmeta.onnx',
      visuomotorModel({ meta: { 'resrt.images': '{"observation.images.top": {"std": [0, 1, 1]}}' } }),
    );
    await expect(OnnxPolicy.load(badMeta)).rejects.toThrow(/image preprocessing is invalid/);
  });
});
