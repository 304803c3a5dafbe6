/**
 * The state encoder (src/sim/state-encoder.ts) on real push-cam demonstrations (real MuJoCo, real
 * frames): collect records the simulator's privileged state per observation; an encoder trained
 * on it predicts the goal (which only the camera shows) far better than its spread; the exported
 * file, loaded as a residual's `file` encoder (FrameEncoder, real onnxruntime), gives the goal of
 * fresh episodes it never saw; and the bad inputs.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FrameEncoder } from '../src/runtime/frame-encoder.js';
import { formatInspectReport, inspectOnnx } from '../src/runtime/onnx-inspect.js';
import { collectDemos } from '../src/sim/collect.js';
import { DemoWriter, readDemos, type DemoSet } from '../src/sim/demos.js';
import { MujocoEnv } from '../src/sim/env.js';
import { StateEncoderMeta, trainStateEncoder, type StateEncoderResult } from '../src/sim/state-encoder.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import { pushTask } from '../src/sim/tasks/push.js';
import { decodeModelHeader } from '../src/util/onnx-proto.js';
import { ResrtError } from '../src/util/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'resrt-state-encoder-'));
let demos: DemoSet;
let trained: StateEncoderResult;
const GOAL = ['goal_x', 'goal_y'];

beforeAll(async () => {
  const out = join(dir, 'push-cam.jsonl');
  await collectDemos({
    task: pushCamTask,
    episodes: 60,
    out,
    seed: 21,
    noise: { jitterStd: 0.03, biasStd: 0.01, pauseProbability: 0.02, maxPauseSteps: 5 },
  });
  demos = readDemos(out);
  trained = await trainStateEncoder(demos, {
    targets: GOAL,
    epochs: 20,
    encoderChannels: [16, 32, 32],
    hidden: [64],
    device: 'cpu',
    threads: 1,
  });
}, 240_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('environment state in demonstrations', () => {
  it("records the task's privileged state at every observation, as the simulator had it", async () => {
    expect(demos.header.environmentStateNames).toEqual(pushTask.observationNames);
    const env = await MujocoEnv.create(pushCamTask);
    try {
      for (const ep of demos.episodes.slice(0, 3)) {
        const rows = ep.environmentState!;
        expect(rows).toHaveLength(ep.obs.length);
        // The goal is fixed for an episode, and is the one the episode's seed puts on the table.
        const gx = pushTask.observationNames.indexOf('goal_x');
        expect(new Set(rows.map((r) => r[gx])).size).toBe(1);
        env.reset({ seed: ep.seed });
        expect(Array.from(rows[0])).toEqual(Array.from(env.expertObservation()));
      }
    } finally {
      env.close();
    }
  });

  it('refuses an episode without it when the header names it', () => {
    const writer = DemoWriter.create(join(dir, 'bad.jsonl'), {
      task: 'push-cam',
      obsDim: 1,
      actionDim: 1,
      obsNames: ['a'],
      actionNames: ['u'],
      controlDt: 0.04,
      source: 'test',
      environmentStateNames: ['goal_x'],
    });
    try {
      const row = Float32Array.of(0);
      expect(() =>
        writer.append({
          seed: 0,
          success: true,
          terminated: true,
          truncated: false,
          obs: [row, row],
          actions: [row],
          rewards: [1],
        }),
      ).toThrow(/0 environment states for 2 observations/);
    } finally {
      writer.close();
    }
  });
});

describe('state encoder', () => {
  it("learns the goal from the frames alone: held-out error far below the goal's spread", () => {
    expect(trained.targets).toEqual(GOAL);
    expect(trained.cameras).toEqual(['top']);
    expect(trained.validationSamples).toBeGreaterThan(0);
    console.log(
      `state encoder: ${trained.samples} frames, held out ${trained.errors.map((e) => `${e.name} rmse ${e.rmse.toFixed(4)} (spread ${e.std.toFixed(4)})`).join(', ')}`,
    );
    for (const e of trained.errors) {
      // Predicting the mean would score about e.std; the frames show where the goal is.
      expect(e.rmse).toBeLessThan(0.5 * e.std);
    }
    expect(trained.exportMaxAbsError).toBeLessThanOrEqual(1e-4);
  });

  it("loads as a residual's file encoder and gives the goal of fresh episodes", async () => {
    const path = join(dir, 'loc.onnx');
    writeFileSync(path, trained.onnx);
    const meta = decodeModelHeader(trained.onnx, path).metadata;
    expect(JSON.parse(meta[StateEncoderMeta.targets])).toEqual(GOAL);
    const mean = JSON.parse(meta[StateEncoderMeta.mean]) as number[];
    const std = JSON.parse(meta[StateEncoderMeta.std]) as number[];
    // `resrt inspect` says what it is and that it loads against push-cam's camera.
    const report = await inspectOnnx(path, {
      obsDim: 12,
      actionDim: 3,
      cameras: { top: { width: 84, height: 84 } },
    });
    expect(report).toMatchObject({
      kind: 'encoder',
      fits: true,
      encoder: { featureDim: 2, cameras: ['top'] },
    });
    expect(formatInspectReport(report)).toMatch(
      /kind: camera encoder \(for a residual: --encoder file --encoder-file /,
    );
    const env = await MujocoEnv.create(pushCamTask);
    const encoder = await FrameEncoder.load(path, { top: { width: 84, height: 84 } });
    try {
      expect(encoder.featureDim).toBe(2);
      const gx = pushTask.observationNames.indexOf('goal_x');
      let errors = 0;
      let spread = 0;
      const episodes = 10;
      for (let s = 0; s < episodes; s++) {
        const { frames } = env.reset({ seed: 90_000 + s });
        const truth = env.expertObservation().subarray(gx, gx + 2);
        const z = await encoder.encode(frames);
        const goal = [z[0] * std[0] + mean[0], z[1] * std[1] + mean[1]];
        errors += Math.hypot(goal[0] - truth[0], goal[1] - truth[1]) / episodes;
        spread += Math.hypot(mean[0] - truth[0], mean[1] - truth[1]) / episodes;
      }
      console.log(
        `state encoder: fresh episodes, goal error ${errors.toFixed(4)} m against ${spread.toFixed(4)} m from the mean goal`,
      );
      expect(errors).toBeLessThan(0.5 * spread);
    } finally {
      await encoder.close();
      env.close();
    }
  });

  it('names the recorded state when a target is not in it, and asks for targets', async () => {
    await expect(trainStateEncoder(demos, { targets: ['goal_z'], epochs: 1 })).rejects.toThrow(
      /"goal_z" is not in the recorded environment state/,
    );
    const err = await trainStateEncoder(demos, { targets: [], epochs: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResrtError);
    expect((err as ResrtError).hint).toMatch(/--targets .*goal_x,goal_y/);
  });
});
