/**
 * Encoder mode `file` (issue 20): a frozen user encoder ONNX turns each observation's frames into
 * features the residual reads beside the state, and the exported residual carries the encoder, so
 * the runtime loads one file that reads images. Through the CLI in-process, real MuJoCo push-cam
 * cameras and real onnxruntime: a seeded run with demonstrations that checkpoints, resumes and
 * exports; the export against encoder-then-residual as two sessions; eval and inspect on the one
 * file; and every bad input with its fix.
 */
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadComposedPolicy } from '../src/cli/policy-commands.js';
import { cameraFeatures } from '../src/residual/camera-features.js';
import { readCheckpoint } from '../src/residual/checkpoint.js';
import { makeConfig } from '../src/residual/config.js';
import { exportResidualOnnx } from '../src/residual/export.js';
import { specFromJson } from '../src/residual/learner-worker.js';
import { CameraResidual, loadResidual } from '../src/runtime/camera-residual.js';
import type { ComposedPolicy } from '../src/runtime/compose.js';
import { FrameEncoder } from '../src/runtime/frame-encoder.js';
import { ImageResidual } from '../src/runtime/image-residual.js';
import { collectDemos } from '../src/sim/collect.js';
import { MujocoEnv } from '../src/sim/env.js';
import { cleanExpert } from '../src/sim/expert.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import type { CameraFrame, CameraFrames } from '../src/types.js';
import { decodeModelHeader } from '../src/util/onnx-proto.js';
import { Rng } from '../src/util/rng.js';
import { encoderOnnx } from './fixtures/encoder-onnx.js';
import { PUSH_CAM, writeCameraBase } from './loop-camera-models.js';
import { tempDir } from './temp-dirs.js';
import { resrtInProcess } from './fixtures/cli-in-process.js';

const dir = tempDir('resrt-encoder-file-');
const cameras = { top: { width: 84, height: 84 } };
const FEATURES = 8;
let basePath: string;
let encoderPath: string;
let demosPath: string;
const runDir = join(dir, 'run');

/** Writes an encoder file and returns its path. */
function writeEncoder(name: string, options: Partial<Parameters<typeof encoderOnnx>[0]> = {}): string {
  const path = join(dir, name);
  writeFileSync(path, encoderOnnx({ cameras: ['top'], image: 32, features: FEATURES, ...options }));
  return path;
}

const resrt = resrtInProcess;

const trainArgs = (steps: number, encoder: string, ...extra: string[]): string[] => [
  'train',
  '--task',
  'push-cam',
  '--base',
  basePath,
  '--demos',
  demosPath,
  '--steps',
  String(steps),
  '--out',
  runDir,
  '--seed',
  '1',
  '--profile',
  'cpu',
  '--eval-every',
  '0',
  '--eval-episodes',
  '1',
  '--checkpoint-every',
  '150',
  '--no-worker',
  '--encoder',
  'file',
  '--encoder-file',
  encoder,
  ...['actorHidden=[32,32]', 'criticHidden=[32,32]', 'batchSize=32', 'learningStarts=100']
    .concat(['criticWarmupSteps=20', 'policyDelay=1', 'actorLr=3e-3'])
    .flatMap((kv) => ['--set', kv]),
  ...extra,
];

function randomFrame(rng: Rng): CameraFrame {
  const data = new Uint8Array(84 * 84 * 3);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(rng.uniform() * 256);
  return { width: 84, height: 84, channels: 3, data, capturedAtMs: 0, seq: 0 };
}

beforeAll(async () => {
  basePath = await writeCameraBase(dir);
  encoderPath = writeEncoder('encoder.onnx');
  demosPath = join(dir, 'push-cam.jsonl');
  await collectDemos({ task: pushCamTask, episodes: 2, out: demosPath, seed: 3, noise: cleanExpert });
}, 60_000);

describe('encoder mode file', () => {
  it('resrt train --encoder file runs on push-cam with demonstrations, checkpoints and resumes; the one exported residual equals encoder-then-residual', async () => {
    const first = await resrt(...trainArgs(300, encoderPath));
    expect(first).toMatch(
      /camera features: encoder file from .*encoder\.onnx \(cameras top\), 8 values per observation/,
    );
    expect(readCheckpoint(runDir)?.meta.encoderChecksum).toMatch(/^sha256:[0-9a-f]{64}$/);
    const resumed = await resrt(...trainArgs(400, encoderPath, '--resume'));
    expect(resumed).toMatch(/resumed from .* at 300 env steps/);
    const ck = readCheckpoint(runDir)!;
    const saved = ck.trainer as { trainer: { envSteps: number }; published: { spec: unknown } };
    expect(saved.trainer.envSteps).toBe(400);

    const onnxPath = join(runDir, 'residual.onnx');
    const header = decodeModelHeader(readFileSync(onnxPath), onnxPath);
    expect(header.graph.input.map((i) => i.name)).toEqual(['observation.images.top', 'obs', 'base_action']);
    expect(header.metadata['resrt.residual_encoder']).toBe('file');
    // The encoder's own preprocessing (ImageNet statistics from its resrt.images) travels with it.
    expect(JSON.parse(header.metadata['resrt.images'])['observation.images.top']).toMatchObject({
      camera: 'top',
      mean: [0.485, 0.456, 0.406],
    });

    const image = await loadResidual(onnxPath, {
      expectObsDim: PUSH_CAM.obsDim,
      expectActionDim: 3,
      cameras,
    });
    expect(image).toBeInstanceOf(ImageResidual);
    expect((image as ImageResidual).encoder).toBe('file');
    // Two sessions: the encoder file, then the residual MLP the learner published (reading features).
    const spec = specFromJson(saved.published.spec);
    const mlpPath = join(dir, 'mlp.onnx');
    exportResidualOnnx(spec, mlpPath);
    const mlp = (await loadResidual(mlpPath)) as CameraResidual;
    expect(mlp).toBeInstanceOf(CameraResidual);
    const encoder = await FrameEncoder.load(encoderPath, cameras);
    const rng = new Rng(4);
    let maxErr = 0;
    let maxAbs = 0;
    for (let n = 0; n < 6; n++) {
      const frames: CameraFrames = { top: randomFrame(rng) };
      const obs = Float32Array.from({ length: PUSH_CAM.obsDim }, () => rng.normal(0, 0.3));
      const base = Float32Array.from({ length: 3 }, () => rng.uniform() * 2 - 1);
      const features = await encoder.encode(frames);
      const want = await mlp.residual(obs, base, { baseEmbedding: features });
      const got = await image.residual(obs, base, { frames });
      for (let j = 0; j < 3; j++) {
        maxErr = Math.max(maxErr, Math.abs(got[j] - want[j]));
        maxAbs = Math.max(maxAbs, Math.abs(want[j]));
      }
    }
    expect(maxAbs).toBeGreaterThan(1e-4); // a residual that acts: not a comparison of zeros
    expect(maxErr).toBeLessThanOrEqual(1e-5);
    await expect(image.residual(new Float32Array(12), new Float32Array(3))).rejects.toThrow(
      /reads camera top, and no frames came with the observation/,
    );
    await Promise.all([image.close(), mlp.close(), encoder.close()]);
  }, 120_000);

  it("resrt eval --residual runs the one file beside the base, feeding it each observation's frames; inspect reports it", async () => {
    const onnxPath = join(runDir, 'residual.onnx');
    const evaluated = await resrt(
      'eval',
      '--task',
      'push-cam',
      '--base',
      basePath,
      '--residual',
      onnxPath,
      '--episodes',
      '1',
    );
    expect(evaluated).toMatch(/success/i);

    const env = await MujocoEnv.create(pushCamTask);
    const policy = (await loadComposedPolicy(env, basePath, onnxPath)) as ComposedPolicy;
    const alone = await loadResidual(onnxPath, { cameras });
    const first = await env.reset({ seed: 5 });
    await policy.act(first.obs, first.frames);
    const step = policy.last!;
    // The residual ComposedPolicy applied is the one file's output on this observation's frames.
    expect(step.residual).toEqual(await alone.residual(first.obs, step.baseAction, { frames: first.frames }));
    expect(Math.max(...step.residual.map(Math.abs))).toBeGreaterThan(0);
    await alone.close();
    await env.close();

    const inspected = await resrt('inspect', onnxPath, '--task', 'push-cam');
    expect(inspected).toMatch(/kind: residual that reads images/);
    expect(inspected).toMatch(/encoder: file, inside the file {3}cameras: top/);
    expect(inspected).toMatch(
      /observation\.images\.top .* camera top: camera "top": RGB frames .* \(x - \[0\.485, 0\.456, 0\.406\]\)/,
    );
    expect(inspected).toMatch(/fits: yes/);
  }, 60_000);

  it('a resume with another encoder graph is refused', async () => {
    const copy = join(dir, 'run-copy-encoder.onnx');
    copyFileSync(encoderPath, copy);
    writeFileSync(encoderPath, encoderOnnx({ cameras: ['top'], image: 32, features: FEATURES, seed: 99 }));
    try {
      await expect(resrt(...trainArgs(450, encoderPath, '--resume'))).rejects.toThrow(
        /written with encoderChecksum = "sha256:[0-9a-f]+", this run has "sha256:[0-9a-f]+"/,
      );
    } finally {
      copyFileSync(copy, encoderPath);
    }
  }, 60_000);

  it('bad input: each error names the cause and the fix', async () => {
    const fails = async (p: Promise<unknown>, cause: RegExp, fix: RegExp): Promise<void> => {
      const err = (await p.then(
        () => null,
        (e: unknown) => e,
      )) as Error | null;
      expect(err, `expected a rejection matching ${cause}`).toBeInstanceOf(Error);
      expect(err?.message).toMatch(cause);
      expect(err?.message).toMatch(fix);
    };
    const load = (path: string, cams: Record<string, { width: number; height: number }> = cameras) =>
      FrameEncoder.load(path, cams);
    await fails(
      load(join(dir, 'missing.onnx')),
      /encoder file .*missing\.onnx does not exist/,
      /--encoder-file PATH/,
    );
    // Input names that map to no camera, and a camera the task lacks: both name cameras and inputs.
    await fails(
      load(writeEncoder('renamed.onnx', { inputNames: ['pixels'] })),
      /cameras \(top\); inputs found: 'pixels' \[batch, 3, 32, 32\]/,
      /observation\.images\.top/,
    );
    await fails(
      load(writeEncoder('wrist.onnx', { cameras: ['wrist'] })),
      /cameras \(top\); inputs found: 'observation\.images\.wrist'.*needs camera "wrist"/,
      /observation\.images\.top/,
    );
    await fails(
      load(writeEncoder('rank3.onnx', { bad: { rank3: true } })),
      /'features' is float32 \[batch, 1, 8\]/,
      /\[batch, E\]/,
    );
    await fails(
      load(writeEncoder('int.onnx', { bad: { int: true } })),
      /'features' is int64 \[batch, 8\]/,
      /float32/,
    );
    await fails(
      load(writeEncoder('symbolic.onnx', { bad: { symbolicWidth: true } })),
      /'features' \[batch, \w+\] does not say its width/,
      /fixed feature width/,
    );
    await fails(
      load(writeEncoder('two.onnx', { bad: { twoOutputs: true } })),
      /2 outputs \(pooled, logits\) and none is named 'features'/,
      /name the feature output 'features'/,
    );
    await fails(
      load(writeEncoder('old.onnx', { opset: 13 })),
      /opset 13; the residual .* needs opset 17/,
      /opset_version=17/,
    );
    // A camera missing from an observation's frames.
    const encoder = await load(encoderPath);
    await fails(
      encoder.encode({}),
      /encoder .*encoder\.onnx: .* needs camera "top" and no frame from it was given/,
      /frames\["top"\]/,
    );
    await encoder.close();
    // A from-scratch run has no base for the residual file to correct.
    await fails(
      cameraFeatures(
        makeConfig('cpu', { encoder: 'file', encoderFile: encoderPath, useBase: false }),
        { id: 'push-cam', cameras: [{ name: 'top', width: 84, height: 84, channels: 3, depth: false }] },
        null,
      ),
      /encoder file corrects a base, and this run has no base/,
      /train with a base \(--base, useBase true\)/,
    );
    // Config and flags.
    expect(() => makeConfig('cpu', { encoder: 'file' })).toThrow(
      /--encoder file --encoder-file ENCODER\.onnx/,
    );
    expect(() => makeConfig('cpu', { encoderFile: encoderPath })).toThrow(
      /pass --encoder file, or drop --encoder-file/,
    );
    await fails(
      resrt(
        'train',
        '--task',
        'push-cam',
        '--base',
        basePath,
        '--encoder-file',
        encoderPath,
        '--out',
        join(dir, 'x'),
      ),
      /--encoder-file .* is read only with --encoder file/,
      /pass --encoder file --encoder-file/,
    );
    await fails(
      resrt('train', '--task', 'push-cam', '--base', basePath, '--encoder', 'file', '--out', join(dir, 'x')),
      /--encoder file needs the encoder ONNX/,
      /--encoder-file ENCODER\.onnx/,
    );
    expect(existsSync(join(dir, 'x'))).toBe(false);
  }, 60_000);
});
