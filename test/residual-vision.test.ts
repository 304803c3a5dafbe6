/**
 * Camera residuals (issue 20), encoder mode base-embedding: the residual reads the frozen visuomotor
 * base's `embedding` output beside the state. Through real MuJoCo cameras and real onnxruntime: a
 * small image-BC base trained here on push-cam demonstrations, the exported residual against the
 * learner's own forward pass, the composed policy on the task, and the bad inputs with their fixes.
 * The seeded run that beats its base is test/residual-camera-puck.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadComposedPolicy } from '../src/cli/policy-commands.js';
import { initEngine } from '../src/nn/index.js';
import { makeConfig } from '../src/residual/config.js';
import { exportResidualOnnx, residualPolicySpec } from '../src/residual/export.js';
import { ResidualLearner } from '../src/residual/td3.js';
import { ResidualActor, trainResidual, type TrainOptions } from '../src/residual/trainer.js';
import { CameraResidual, loadResidual } from '../src/runtime/camera-residual.js';
import { ComposedPolicy } from '../src/runtime/compose.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { saveBcPolicy, trainBc } from '../src/sim/bc.js';
import { collectDemos } from '../src/sim/collect.js';
import { loadEpisodeFrames, readDemos, type DemoSet } from '../src/sim/demos.js';
import { MujocoEnv } from '../src/sim/env.js';
import { cleanExpert } from '../src/sim/expert.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import { ResrtError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';
import { publishedSpec } from './fixtures/published-spec.js';

const dir = mkdtempSync(join(tmpdir(), 'resrt-vision-'));
// A narrower pose spread keeps the goal in view and lets a BC base trained in seconds succeed
// part of the time; the goal is still only in the image.
const randomization = { poseSpread: 0.3 };
const makeEnv = (): Promise<MujocoEnv> => MujocoEnv.create(pushCamTask, { randomization });
const cameras = { top: { width: 84, height: 84 } };
let demos: DemoSet;
let basePath: string;
let statePath: string;

const loadBase = (path = basePath): Promise<OnnxPolicy> =>
  OnnxPolicy.load(path, { expectObsDim: 12, expectActionDim: 3, cameras });

beforeAll(async () => {
  const demosPath = join(dir, 'push-cam.jsonl');
  await collectDemos({
    task: pushCamTask,
    episodes: 40,
    out: demosPath,
    seed: 3,
    noise: cleanExpert,
    randomization,
  });
  demos = readDemos(demosPath);
  const bc = {
    epochs: 20,
    batchSize: 64,
    hidden: [64, 64],
    encoderChannels: [8, 16, 16],
    embeddingDim: 16,
    learningRate: 3e-3,
    validationFraction: 0.1,
    device: 'cpu' as const,
    threads: 1,
  };
  basePath = join(dir, 'base.onnx');
  saveBcPolicy(await trainBc(demos, bc), basePath);
  // The same demonstrations without the camera: a state-only base, with no embedding output.
  statePath = join(dir, 'state.onnx');
  saveBcPolicy(await trainBc(demos, { ...bc, epochs: 1, cameras: 'none' }), statePath);
}, 240_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const quiet = (): void => {};

describe('camera residual, encoder base-embedding', () => {
  it("exports [base_embedding | obs | base_action] -> residual equal to the learner's forward (onnxruntime, 1e-4)", async () => {
    const E = 16;
    const O = 12;
    const A = 3;
    const engine = await initEngine({ device: 'cpu', threads: 1 });
    const cfg = makeConfig('cpu', {
      actorHidden: [32, 32],
      criticHidden: [32, 32],
      batchSize: 32,
      criticWarmupSteps: 0,
      policyDelay: 1,
      actorLr: 1e-2,
    });
    const learner = await ResidualLearner.create(engine, cfg, { obsDim: E + O, actionDim: A }, 5);
    const rng = new Rng(2);
    const row = (k: number, s = 1): number[] =>
      Array.from({ length: k }, () => Math.max(-1, Math.min(1, rng.normal(0, s))));
    for (let i = 0; i < 200; i++) {
      learner.replay.online.add({
        obs: row(E + O),
        baseAction: row(A, 0.5),
        action: row(A, 0.5),
        reward: rng.uniform() < 0.3 ? 1 : 0,
        nextObs: row(E + O),
        nextBaseAction: row(A, 0.5),
        terminated: i % 13 === 12,
        truncated: false,
      });
    }
    const stats = learner.computeObsNormalization();
    learner.setObsNormalization(stats.mean, stats.std);
    for (let i = 0; i < 30; i++) await learner.update();
    const spec = residualPolicySpec({
      layers: learner.actorLayers(),
      obsDim: E + O,
      featureDim: E,
      actionDim: A,
      actionScale: cfg.actionScale,
      useBase: true,
      obsMean: learner.obsMean,
      obsStd: learner.obsStd,
      version: learner.actorUpdates,
    });
    const path = join(dir, 'exported.onnx');
    exportResidualOnnx(spec, path);
    const model = await loadResidual(path, { expectObsDim: O, expectActionDim: A });
    expect(model).toBeInstanceOf(CameraResidual);
    const camera = model as CameraResidual;
    expect([camera.embeddingDim, camera.obsDim, camera.actionDim, camera.encoder]).toEqual([
      E,
      O,
      A,
      'base-embedding',
    ]);
    let maxErr = 0;
    let maxAbs = 0;
    for (let n = 0; n < 8; n++) {
      const e = Float32Array.from(row(E));
      const s = Float32Array.from(row(O));
      const b = Float32Array.from(row(A, 0.5));
      const want = await learner.act(Float32Array.from([...e, ...s]), b, 1);
      const got = await camera.residual(s, b, { baseEmbedding: e });
      for (let j = 0; j < A; j++) {
        maxErr = Math.max(maxErr, Math.abs(got[j] - want[j]));
        maxAbs = Math.max(maxAbs, Math.abs(want[j]));
      }
    }
    expect(maxAbs).toBeGreaterThan(1e-3); // the actor moved: the comparison is not of zeros
    expect(maxErr).toBeLessThanOrEqual(1e-4);
    await expect(camera.residual(new Float32Array(O), new Float32Array(A))).rejects.toThrow(
      /reads the base's embedding, and the base gave none/,
    );
    await camera.close();
    await learner.dispose();
  }, 60_000);

  it('trains on push-cam through real cameras (demos relabelled with their frames); the one exported file runs beside the base as the trainer ran it', async () => {
    const base = await loadBase();
    const out = join(dir, 'run');
    const r = await trainResidual({
      makeEnv,
      base,
      demos,
      demoFrames: (ep) => loadEpisodeFrames(demos, ep),
      steps: 400,
      outDir: out,
      seed: 1,
      profile: 'cpu',
      evalEpisodes: 3,
      worker: false,
      log: quiet,
      config: {
        actorHidden: [32, 32],
        criticHidden: [32, 32],
        batchSize: 32,
        learningStarts: 150,
        criticWarmupSteps: 20,
        policyDelay: 1,
        actorLr: 3e-3,
      },
    });
    expect(r.envSteps).toBe(400);
    expect(r.updates).toBe(20 + 250);
    // The trainer's final held-out evaluation loaded the written camera residual beside the base.
    expect(r.heldOut?.residual.episodes).toBe(3);

    // The exported file, loaded as `resrt eval --residual` loads it, beside the base.
    const spec = publishedSpec(out);
    expect(spec.inputs.map((i) => [i.name, i.dim])).toEqual([
      ['base_embedding', 16],
      ['obs', 12],
      ['base_action', 3],
    ]);
    const env = await makeEnv();
    const policy = (await loadComposedPolicy(env, basePath, r.onnxPath)) as ComposedPolicy;
    const trained = new ResidualActor(base, () => spec, 3, null);
    let { obs, frames } = env.reset({ seed: 7 });
    let maxErr = 0;
    let moved = 0;
    for (let t = 0; t < 5; t++) {
      const action = await policy.act(obs, frames);
      const step = policy.last!;
      // The trainer's forward on the same observation: its base action and embedding, its weights.
      await base.act(obs, frames);
      const features = Float32Array.from(base.lastEmbedding!);
      const want = trained.residual(obs, step.baseAction, features);
      for (let j = 0; j < 3; j++) {
        maxErr = Math.max(maxErr, Math.abs(step.residual[j] - want[j]));
        moved = Math.max(moved, Math.abs(want[j]));
      }
      ({ obs, frames } = env.step(action));
    }
    expect(moved).toBeGreaterThan(1e-4);
    expect(maxErr).toBeLessThanOrEqual(1e-4);
    env.close();
    await base.close();
  }, 240_000);
});

describe('camera residual: bad input names the fix', () => {
  const options = (over: Partial<TrainOptions>): TrainOptions => ({
    makeEnv,
    base: null as never,
    steps: 10,
    outDir: join(dir, `bad-${Math.random().toString(36).slice(2)}`),
    worker: false,
    log: quiet,
    evalEpisodes: 1,
    ...over,
  });

  it('a base without an embedding output in base-embedding mode', async () => {
    const base = await loadBase(statePath);
    const run = trainResidual(options({ base, config: { encoder: 'base-embedding' } }));
    await expect(run).rejects.toThrow(ResrtError);
    await expect(run).rejects.toThrow(/encoder base-embedding: the base policy has no embedding output/);
    await expect(run).rejects.toMatchObject({
      hint: expect.stringMatching(/resrt bc .*--cameras auto.*--encoder none/),
    });
    await base.close();
  });

  it('demonstrations without frames, and frames missing from some steps', async () => {
    const base = await loadBase();
    const noLoader = trainResidual(options({ base, demos }));
    await expect(noLoader).rejects.toThrow(/have no frames of camera top/);
    await expect(noLoader).rejects.toMatchObject({
      hint: expect.stringMatching(/resrt collect --task push-cam/),
    });
    const short = trainResidual(
      options({ base, demos, demoFrames: (ep) => loadEpisodeFrames(demos, ep).slice(1) }),
    );
    await expect(short).rejects.toThrow(
      /demonstration episode 0 of push-cam has \d+ frames of top for \d+ observations/,
    );
    await base.close();
  });

  it('a camera residual paired with a base that has no embedding', async () => {
    const env = await makeEnv();
    await expect(loadComposedPolicy(env, statePath, join(dir, 'exported.onnx'))).rejects.toThrow(
      /reads the base's embedding, and .*state\.onnx has no embedding output/,
    );
    env.close();
  });
});
