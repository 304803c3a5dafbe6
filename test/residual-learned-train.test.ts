/**
 * Encoder mode `learned` through the real trainer on push-cam (real MuJoCo, its `top` camera at
 * 32×32, a small encoder): the run trains the encoder from replay's frames, checkpoints and exports
 * a residual ONNX that carries its encoder, which onnxruntime runs as the engine's forward and the
 * acting side's plain forward compute it; a run killed with SIGKILL and resumed writes the same
 * residual.onnx, byte for byte, as the uninterrupted run.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { framesToBatch, initEngine } from '../src/nn/index.js';
import { readCheckpoint } from '../src/residual/checkpoint.js';
import { makeConfig, type ResidualConfig } from '../src/residual/config.js';
import { LEARNED_FEATURES_INPUT, residualImageInput } from '../src/residual/learned-residual.js';
import { specFromJson } from '../src/residual/learner-worker.js';
import { ResidualActor } from '../src/residual/residual-actor.js';
import { ResidualLearner } from '../src/residual/td3.js';
import { trainResidual } from '../src/residual/trainer.js';
import type { PublishedEncoder } from '../src/residual/learned-residual.js';
import type { CameraFrames } from '../src/types.js';
import { decodeModel } from '../src/util/onnx-proto.js';
import { Rng } from '../src/util/rng.js';
import { framesRunOptions, killFramesRunAtCheckpoint } from './replay-frames-train-run.js';
import { tempDir } from './temp-dirs.js';

const dir = tempDir('resrt-learned-train-');
const steps = 210;
const learned: Partial<ResidualConfig> = {
  encoder: 'learned',
  encoderChannels: [8, 8],
  encoderFeatures: 8,
  // The residual rides on the (zero) base, so the export has its base_action input.
  useBase: true,
};
const S = 12;
const A = 3;
const side = 32;

describe("encoder 'learned' in the trainer (push-cam)", () => {
  it('trains, checkpoints and exports the encoder with the residual; onnxruntime runs it as the engine does', async () => {
    const out = join(dir, 'a');
    const logs: string[] = [];
    const r = await trainResidual({
      ...framesRunOptions(out, steps, () => {}, learned),
      log: (l) => logs.push(l),
    });
    expect(r.envSteps).toBe(steps);
    expect(r.updates).toBeGreaterThan(100);
    expect(logs.join('\n')).toMatch(/replay frames: top 32x32x3/);

    // The checkpoint holds the encoder, its target and its Adam moments; training moved them.
    const ck = readCheckpoint(out)!;
    const tensor = (name: string) => ck.learner.tensors.find((t) => t.name === name)!.data;
    for (const key of ['encoder', 'encoderTarget', 'encoderAdam/m', 'encoderAdam/v'])
      expect(tensor(`${key}/enc0/conv0/w`)).toHaveLength(8 * 3 * 9);
    const cfg = makeConfig('cpu', { ...framesRunOptions(out, steps).config, ...learned });
    const camera = { name: 'top', width: side, height: side, channels: 3 };
    const engine = await initEngine({ device: 'cpu', threads: 1 });
    const fresh = await ResidualLearner.create(
      engine,
      cfg,
      { obsDim: S, actionDim: A, frameCameras: [camera] },
      4,
    );
    const initial = fresh.params('encoder').slice();
    const learner = await ResidualLearner.create(
      engine,
      cfg,
      { obsDim: S, actionDim: A, frameCameras: [camera] },
      4,
    );
    learner.setState(ck.learner, out);
    expect(Math.max(...learner.params('encoder').map((v, i) => Math.abs(v - initial[i])))).toBeGreaterThan(
      1e-4,
    );
    expect(Math.max(...tensor('encoderAdam/v/enc0/trunk/w').map(Math.abs))).toBeGreaterThan(0);

    // The file: its inputs and metadata, and its residual on random frames against the engine's forward.
    const bytes = readFileSync(r.onnxPath);
    const session = await ort.InferenceSession.create(bytes);
    expect([...session.inputNames].sort()).toEqual(['base_action', 'obs', residualImageInput('top')].sort());
    expect(session.outputNames).toEqual(['residual']);
    const meta = metadataOf(bytes);
    expect(meta['resrt.residual_encoder']).toBe('learned');
    expect(JSON.parse(meta['resrt.images'])).toEqual({
      [residualImageInput('top')]: {
        camera: 'top',
        scale: 1 / 255,
        resize: 'crop-resize',
        layout: 'NCHW',
        channel_order: 'RGB',
      },
    });
    const rows = 3;
    const rng = new Rng(11);
    const frames = Uint8Array.from({ length: rows * side * side * 3 }, () => rng.int(256));
    const images = new Float32Array(rows * 3 * side * side);
    framesToBatch({ height: side, width: side, data: frames, count: rows }, [0, 1, 2], images);
    const obs = Float32Array.from({ length: rows * S }, () => rng.normal());
    const base = Float32Array.from({ length: rows * A }, () => rng.range(-0.5, 0.5));
    const got = await session.run({
      [residualImageInput('top')]: new ort.Tensor('float32', images, [rows, 3, side, side]),
      obs: new ort.Tensor('float32', obs, [rows, S]),
      base_action: new ort.Tensor('float32', base, [rows, A]),
    });
    await session.release();
    const fileResidual = got.residual.data as Float32Array;
    const engineResidual = await learner.act(obs, base, rows, [images]);
    expect(maxAbsDiff(fileResidual, engineResidual)).toBeLessThan(1e-4);
    expect(Math.max(...engineResidual.map(Math.abs))).toBeGreaterThan(1e-6);

    // The acting side (plain TypeScript, from the uint8 frames) computes the same residual.
    const saved = ck.trainer as { published: { spec: unknown; encoder: unknown } };
    const spec = specFromJson(saved.published.spec);
    expect(spec.inputs[0].name).toBe(LEARNED_FEATURES_INPUT);
    const encoder = specFromJson<PublishedEncoder>(saved.published.encoder);
    const actor = new ResidualActor(
      null,
      () => spec,
      A,
      null,
      () => encoder,
    );
    for (let k = 0; k < rows; k++) {
      const frame: CameraFrames = {
        top: {
          width: side,
          height: side,
          channels: 3,
          data: frames.subarray(k * side * side * 3, (k + 1) * side * side * 3),
          capturedAtMs: 0,
          seq: k,
        },
      };
      const res = actor.residual(
        obs.subarray(k * S, (k + 1) * S),
        base.subarray(k * A, (k + 1) * A),
        null,
        frame,
      );
      expect(maxAbsDiff(res, fileResidual.subarray(k * A, (k + 1) * A))).toBeLessThan(1e-4);
    }
    await fresh.dispose();
    await learner.dispose();
  }, 120_000);

  it('trains in the learner worker thread too (the encoder published across threads)', async () => {
    const out = join(dir, 'worker');
    const r = await trainResidual({ ...framesRunOptions(out, 90, () => {}, learned), worker: true });
    expect(r.updates).toBeGreaterThan(40);
    expect(metadataOf(readFileSync(r.onnxPath))['resrt.residual_encoder']).toBe('learned');
  }, 90_000);

  it('a run killed with SIGKILL and resumed writes the same residual.onnx as the uninterrupted one', async () => {
    const outA = join(dir, 'uninterrupted');
    const a = await trainResidual(framesRunOptions(outA, steps, () => {}, learned));
    const outB = join(dir, 'killed');
    // Past learningStarts (45): the third checkpoint holds a trained encoder and its Adam state.
    const killed = await killFramesRunAtCheckpoint(outB, 10 * steps, 3, learned);
    expect(killed.signal, killed.stderr).toBe('SIGKILL');
    const b = await trainResidual({ ...framesRunOptions(outB, steps, () => {}, learned), resume: true });
    expect(b.resumedFrom).toBeGreaterThanOrEqual(60);
    expect(b.resumedFrom).toBeLessThan(steps);
    expect(b.updates).toBe(a.updates);
    expect(readFileSync(join(outB, 'residual.onnx')).equals(readFileSync(join(outA, 'residual.onnx')))).toBe(
      true,
    );
  }, 150_000);
});

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

/** The file's metadata_props. */
function metadataOf(bytes: Uint8Array): Record<string, string> {
  return Object.fromEntries((decodeModel(bytes).metadataProps ?? []).map((p) => [p.key, p.value]));
}
