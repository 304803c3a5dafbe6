/**
 * BC from pixels: the conv encoder's gradients against a float64 reference, random shift against
 * a hand computation, the visuomotor export against the engine's forward (real onnxruntime), a
 * tiny BC run on real push-cam demonstrations (real MuJoCo, real frames) that loads and runs
 * through the runtime, and the bad inputs.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CompiledGraph,
  convEncoderApply,
  convEncoderParamSpecs,
  framesToBatch,
  grad,
  Graph,
  initEngine,
  op,
  randomShifts,
  type ConvEncoderSpec,
  type Engine,
  type FrameStore,
} from '../src/nn/index.js';
import { evaluatePolicy } from '../src/runtime/evaluate.js';
import { inspectOnnx } from '../src/runtime/onnx-inspect.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { checkExport, exportVisuomotorBc } from '../src/sim/bc-export.js';
import { BcNetwork } from '../src/sim/bc-network.js';
import { spatialSoftmax } from '../src/nn/conv-encoder.js';
import { saveBcPolicy, trainBc, type BcProgress } from '../src/sim/bc.js';
import { collectDemos } from '../src/sim/collect.js';
import { readDemos, type DemoSet } from '../src/sim/demos.js';
import { MujocoEnv } from '../src/sim/env.js';
import { cleanExpert } from '../src/sim/expert.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import { pushTask } from '../src/sim/tasks/push.js';
import { ResrtError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';
import * as ref from './nn-reference.js';
import { T } from './nn-reference.js';
import { resrtInProcess } from './fixtures/cli-in-process.js';

let engine: Engine;
const dir = mkdtempSync(join(tmpdir(), 'resrt-bc-pixels-'));
let camDemos: DemoSet;
let stateDemos: DemoSet;

beforeAll(async () => {
  engine = await initEngine({ device: 'cpu', threads: 1 });
  const cam = join(dir, 'push-cam.jsonl');
  await collectDemos({ task: pushCamTask, episodes: 5, out: cam, seed: 3, noise: cleanExpert });
  camDemos = readDemos(cam);
  const state = join(dir, 'push.jsonl');
  await collectDemos({ task: pushTask, episodes: 3, out: state, seed: 3, noise: cleanExpert });
  stateDemos = readDemos(state);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('conv encoder', () => {
  const poolings: { pooling: ConvEncoderSpec['pooling']; names: string[]; trunkIn: number }[] = [
    // 9x7 -> 5x4 -> 3x2: flattened, the trunk reads 4 * 3 * 2 values; as keypoints, an x and y per map.
    { pooling: undefined, names: [], trunkIn: 24 },
    { pooling: 'spatial-softmax', names: ['keypoints/w'], trunkIn: 8 },
  ];
  for (const { pooling, names, trunkIn } of poolings) {
    it(`values and gradients (image and every parameter) equal a float64 reference, pooling ${pooling ?? 'flatten'}`, async () => {
      const spec: ConvEncoderSpec = { height: 9, width: 7, channels: [3, 4], features: 5, pooling };
      const specs = convEncoderParamSpecs(spec, '');
      expect(specs.map((s) => s.name)).toEqual([
        'conv0/w',
        'conv0/b',
        'conv1/w',
        'conv1/b',
        ...names,
        'trunk/w',
        'trunk/b',
        'trunk/gamma',
        'trunk/beta',
      ]);
      expect(specs.find((s) => s.name === 'trunk/w')?.shape).toEqual([trunkIn, 5]);
      const rng = new Rng(4);
      const shapes = [[2, 3, 9, 7], ...specs.map((s) => [...s.shape])];
      const gammaAt = 1 + specs.findIndex((s) => s.name === 'trunk/gamma');
      const values = shapes.map((s, i) =>
        Float32Array.from({ length: s.reduce((a, b) => a * b, 1) }, () =>
          i === 0 ? rng.uniform() : rng.normal(i === gammaAt ? 1 : 0, 0.5),
        ),
      );
      const g = new Graph('encoder_check');
      const inputs = shapes.map((s, i) => g.input(i === 0 ? 'image' : specs[i - 1].name, s));
      const params = new Map(specs.map((s, i) => [s.name, inputs[i + 1]]));
      const y = convEncoderApply(params, inputs[0], spec, '');
      expect(y.shape).toEqual([2, 5]);
      const r = Float32Array.from({ length: 10 }, () => rng.normal());
      const grads = grad(op.sum(op.mul(y, g.input('r', [2, 5]))), inputs);
      g.output('y', y);
      grads.forEach((gv, i) => g.output(`g${i}`, gv));
      const compiled = await CompiledGraph.create(g, engine);
      const feeds = Object.fromEntries([
        ...inputs.map((v, i) => [v.name, values[i]] as const),
        ['r', r] as const,
      ]);
      const out = await compiled.run(feeds);
      await compiled.release();

      const ts = shapes.map((s, i) => T.of(s, values[i]));
      const forward = (xs: T[]): T =>
        ref.convEncoder(xs[0], (name) => xs[1 + specs.findIndex((s) => s.name === name)], spec);
      expect(ref.relError(out.y, forward(ts).data)).toBeLessThan(1e-4);
      const rT = T.of([2, 5], r);
      const loss = (xs: T[]): number => ref.mul(forward(xs), rT).data.reduce((a, b) => a + b, 0);
      ts.forEach((_, i) => {
        const want = ref.numericGrad(loss, ts, i);
        expect(want.some((v) => v !== 0)).toBe(true);
        expect(ref.relError(out[`g${i}`], want), `gradient of ${inputs[i].name}`).toBeLessThan(1e-4);
      });
    });
  }

  it('spatial softmax puts a keypoint where its map peaks', async () => {
    // One 3x5 map, sharply peaked at row 2, column 1: x = 2*1/4 - 1 = -0.5, y = 2*2/2 - 1 = 1.
    const g = new Graph('peak');
    const maps = g.input('maps', [1, 1, 3, 5]);
    g.output('xy', spatialSoftmax(maps));
    const compiled = await CompiledGraph.create(g, engine);
    const data = new Float32Array(15).fill(-20);
    data[2 * 5 + 1] = 20;
    const out = await compiled.run({ maps: data });
    await compiled.release();
    expect(out.xy[0]).toBeCloseTo(-0.5, 5);
    expect(out.xy[1]).toBeCloseTo(1, 5);
  });
});

describe('random shift augmentation', () => {
  // Two 3x4 RGB frames with distinct bytes: frame f, row y, column x, channel c = 100f + 10y + 3x + c.
  const H = 3;
  const W = 4;
  const data = new Uint8Array(2 * H * W * 3);
  for (let f = 0; f < 2; f++)
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++)
        for (let c = 0; c < 3; c++) data[((f * H + y) * W + x) * 3 + c] = 100 * f + 10 * y + 3 * x + c;
  const store: FrameStore = { height: H, width: W, data, count: 2 };

  /** Pad by `pad` with the edge pixels, crop H x W at (pad + dy, pad + dx), as DrQ defines it. */
  function padThenCrop(f: number, dx: number, dy: number, pad: number): number[] {
    const ph = H + 2 * pad;
    const pw = W + 2 * pad;
    const padded: number[][][] = [];
    for (let y = 0; y < ph; y++) {
      padded.push([]);
      for (let x = 0; x < pw; x++) {
        const sy = y < pad ? 0 : y >= pad + H ? H - 1 : y - pad;
        const sx = x < pad ? 0 : x >= pad + W ? W - 1 : x - pad;
        padded[y].push([0, 1, 2].map((c) => data[((f * H + sy) * W + sx) * 3 + c]));
      }
    }
    const out: number[] = [];
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) out.push(padded[pad + dy + y][pad + dx + x][c] / 255);
    return out;
  }

  it('equals padding with replicated edges and cropping, per image, in NCHW floats', () => {
    const out = new Float32Array(3 * 3 * H * W);
    // Rows: frame 1 shifted right 2 / up 1, frame 0 unshifted, frame 1 shifted the most left/down.
    framesToBatch(store, [1, 0, 1], out, Int32Array.from([2, -1, 0, 0, -4, 4]));
    expect(Array.from(out.subarray(0, 36))).toEqual(padThenCrop(1, 2, -1, 4).map(Math.fround));
    expect(Array.from(out.subarray(36, 72))).toEqual(padThenCrop(0, 0, 0, 4).map(Math.fround));
    expect(Array.from(out.subarray(72))).toEqual(padThenCrop(1, -4, 4, 4).map(Math.fround));
    // By hand: frame 1 shifted by (2, -1): out[c=0, y=0, x=0] reads source (y 0, x 2) -> 100 + 0 + 6.
    expect(out[0]).toBeCloseTo(106 / 255, 7);
    // ... and out[c=2, y=2, x=3] reads (y 1, x 3 clamped) -> 100 + 10 + 9 + 2.
    expect(out[2 * 12 + 2 * 4 + 3]).toBeCloseTo(121 / 255, 7);
    // Unshifted: the frame itself, channel planes in order.
    expect(out[36 + 12 + 1 * 4 + 2]).toBeCloseTo((10 + 6 + 1) / 255, 7);
  });

  it('draws shifts uniformly in [-pad, pad] and none with pad 0', () => {
    const shifts = randomShifts(new Rng(1), 4000, 4);
    const counts = new Map<number, number>();
    for (const s of shifts) counts.set(s, (counts.get(s) ?? 0) + 1);
    expect([...counts.keys()].sort((a, b) => a - b)).toEqual([-4, -3, -2, -1, 0, 1, 2, 3, 4]);
    for (const n of counts.values()) expect(n).toBeGreaterThan(8000 / 9 / 2);
    expect(Array.from(randomShifts(new Rng(1), 3, 0))).toEqual([0, 0, 0, 0, 0, 0]);
  });
});

describe('visuomotor export', () => {
  it('matches the engine forward at other batch sizes, actions as chunks and the embedding (flattened and keypoint pooling)', async () => {
    const cameras = [
      { name: 'top', width: 20, height: 16, channels: 3, depth: false },
      { name: 'wrist', width: 12, height: 12, channels: 3, depth: false },
    ];
    const encoder = { channels: [4, 6], features: 7 };
    const net = new BcNetwork(
      engine,
      {
        stateDim: 5,
        // The wrist camera's keypoints check that spatial-softmax pooling exports batch-free too.
        cameras: cameras.map((c) => ({
          name: c.name,
          encoder: {
            ...encoder,
            height: c.height,
            width: c.width,
            pooling: c.name === 'wrist' ? ('spatial-softmax' as const) : ('flatten' as const),
          },
        })),
        hidden: [16],
        layerNorm: true,
        outDim: 2 * 3,
      },
      Float32Array.from([0.1, -0.2, 0, 0.3, 1]),
      Float32Array.from([1, 2, 0.5, 1, 3]),
    );
    const rng = new Rng(8);
    const params = net.init(rng);
    // Larger head weights than init gives, so the actions are not all near zero.
    for (let i = 0; i < params.length; i++) params[i] += rng.normal(0, 0.1);
    const bytes = exportVisuomotorBc(
      net,
      params,
      cameras,
      { length: 2, actionDim: 3 },
      {
        'resrt.obs_dim': '5',
      },
    );
    const rows = 3;
    const state = Float32Array.from({ length: rows * 5 }, () => rng.normal());
    const stores = cameras.map((c): FrameStore => ({
      height: c.height,
      width: c.width,
      count: rows,
      data: Uint8Array.from({ length: rows * c.height * c.width * 3 }, () => rng.int(256)),
    }));
    const images = stores.map((s) => {
      const out = new Float32Array(rows * 3 * s.height * s.width);
      framesToBatch(s, [0, 1, 2], out);
      return out;
    });
    const expected = await net.predict(params, { state, images }, rows);
    await net.release();
    expect(expected.embedding).toHaveLength(rows * 14);
    const check = await checkExport(bytes, { rows, state, cameras, stores }, expected, {
      obsDim: 5,
      actionDim: 3,
    });
    expect(check.action).toBeLessThan(1e-4);
    expect(check.embedding).toBeLessThan(1e-4);
    expect(check.embedding).toBeGreaterThanOrEqual(0);
    // A wrong expectation is caught, not averaged away.
    const off = {
      action: expected.action.map((v, i) => (i === 4 ? v + 0.01 : v)),
      embedding: expected.embedding,
    };
    expect(
      (await checkExport(bytes, { rows, state, cameras, stores }, off, { obsDim: 5, actionDim: 3 })).action,
    ).toBeGreaterThan(0.009);

    const path = join(dir, 'two-cameras.onnx');
    writeFileSync(path, bytes);
    const report = await inspectOnnx(path, {
      obsDim: 5,
      actionDim: 3,
      cameras: { top: { width: 20, height: 16 }, wrist: { width: 12, height: 12 } },
    });
    expect(report.problems).toEqual([]);
    expect(report.dynamicBatch).toBe(true);
    expect(report.chunkLength).toBe(2);
    expect(report.roles.map((r) => r.role)).toEqual(['state', 'camera top', 'camera wrist']);
    expect(report.outputs.map((o) => [o.name, o.shape])).toEqual([
      ['action', ['batch', 2, 3]],
      ['embedding', ['batch', 14]],
    ]);
    expect(report.metadata['resrt.embedding_output']).toBe('embedding');
    expect(report.metadata['resrt.embedding_dim']).toBe('14');
    expect(report.checksum).toBe('ok');
  });
});

describe('BC from pixels on push-cam demonstrations', () => {
  const tiny = {
    epochs: 12,
    batchSize: 32,
    hidden: [32, 32],
    encoderChannels: [4, 8],
    embeddingDim: 16,
    learningRate: 3e-3,
    validationFraction: 0.2,
    device: 'cpu' as const,
    threads: 1,
  };

  it('lowers its loss, exports observation.state + observation.images.top, and runs in the sim through the runtime', async () => {
    const progress: BcProgress[] = [];
    const result = await trainBc(camDemos, tiny, (p) => progress.push(p));
    expect(result.cameras).toEqual(['top']);
    expect(result.embeddingDim).toBe(16);
    expect(progress).toHaveLength(12);
    expect(progress[11].trainLoss).toBeLessThan(progress[0].trainLoss * 0.7);
    expect(result.exportMaxAbsError).toBeLessThanOrEqual(1e-4);
    expect(result.exportTolerance).toBe(1e-4);

    const path = join(dir, 'pixels.onnx');
    saveBcPolicy(result, path);
    const env = await MujocoEnv.create(pushCamTask);
    const policy = await OnnxPolicy.load(path, {
      expectObsDim: env.observationSpace.dim,
      expectActionDim: env.actionSpace.dim,
      cameras: { top: { width: 84, height: 84 } },
    });
    expect(policy.imageInputs.map((i) => [i.input, i.camera, i.layout, i.scale])).toEqual([
      ['observation.images.top', 'top', 'NCHW', 1 / 255],
    ]);
    expect(policy.layout.feeds.map((f) => [f.name, f.width])).toEqual([['observation.state', 12]]);
    expect(policy.metadata['resrt.task']).toBe('push-cam');
    const evalResult = await evaluatePolicy(env, policy, { episodes: 1, seed: 1_000_000 });
    expect(evalResult.records).toHaveLength(1);
    expect(evalResult.records[0].steps).toBeGreaterThan(0);
    // A camera policy cannot act without its camera: the runtime names the fix.
    await expect(policy.runChunk(new Float32Array(12))).rejects.toThrow(/needs camera "top"/);
    await policy.close();
    env.close();
  });

  it('with cameras none (or on state-only demonstrations) trains the state MLP as before', async () => {
    const none = await trainBc(camDemos, { ...tiny, epochs: 2, cameras: 'none' });
    expect(none.cameras).toEqual([]);
    expect(none.exportTolerance).toBe(1e-5);
    const state = await trainBc(stateDemos, { ...tiny, epochs: 2 });
    expect(state.cameras).toEqual([]);
    const path = join(dir, 'state.onnx');
    saveBcPolicy(state, path);
    const policy = await OnnxPolicy.load(path, { expectObsDim: 16, expectActionDim: 3 });
    expect(policy.layout.feeds.map((f) => f.name)).toEqual(['obs']);
    await policy.close();
  });

  it('names the fix for demonstrations without frames and for a camera the demonstrations lack', async () => {
    const noFrames = trainBc(stateDemos, { ...tiny, cameras: ['top'] });
    await expect(noFrames).rejects.toThrow(ResrtError);
    await expect(noFrames).rejects.toThrow(/demonstrations of push have none/);
    await expect(noFrames).rejects.toMatchObject({
      hint: expect.stringMatching(/resrt collect --task push-cam/),
    });
    const wrong = trainBc(camDemos, { ...tiny, cameras: ['wrist'] });
    await expect(wrong).rejects.toThrow(/camera "wrist" is not in the demonstrations \(they record: top\)/);
    await expect(wrong).rejects.toMatchObject({ hint: expect.stringMatching(/--cameras top/) });
  });
});

describe('resrt bc from pixels (CLI)', () => {
  /** `resrt bc` on the push-cam demonstrations, in-process; returns what it printed. */
  async function bc(out: string, ...args: string[]): Promise<string> {
    const demos = join(dir, 'push-cam.jsonl');
    const printed = [await resrtInProcess('bc', '--demos', demos, '--out', out, ...args)];
    if (existsSync(out)) printed.push(await resrtInProcess('inspect', out, '--task', 'push-cam'));
    return printed.join('\n');
  }

  it('trains on push-cam demonstrations and the file inspects against push-cam without flags', async () => {
    const text = await bc(
      join(dir, 'cli.onnx'),
      ...['--epochs', '1', '--hidden', '16', '--encoder', '4', '--embedding', '8', '--threads', '1'],
    );
    expect(text).toMatch(
      /inputs observation\.state, observation\.images\.top; outputs action, embedding \[8\]/,
    );
    expect(text).toMatch(/limit 1e-4/);
    expect(text).toMatch(/observation\.images\.top float32 +\[batch, 3, 84, 84\] +camera top/);
    expect(text).toMatch(/fits: yes/);
  });

  it('refuses bad encoder and camera flags with the fix', async () => {
    const out = join(dir, 'refused.onnx');
    await expect(bc(out, '--encoder', '16,0')).rejects.toThrow(
      /--encoder must be comma-separated positive integers/,
    );
    await expect(bc(out, '--cameras', 'top,,wrist')).rejects.toThrow(/--cameras has an empty name/);
    expect(existsSync(out)).toBe(false);
  });
});
