/**
 * The cpu profile's encoder 'auto' and encoder 'state' (issue 20): on a simulated camera task whose
 * demonstrations recorded what its state lacks and its cameras show (push-cam's goal and the
 * puck's offset to it), `resrt train` trains a state encoder from them into the run folder and
 * learns on its features as encoder 'file'; the
 * exported residual carries it; a resumed run reuses it. Without such demonstrations 'auto' falls
 * back to the base's embedding and says why, and 'state' refuses, naming the fix. Through the CLI
 * in-process: real MuJoCo push-cam frames, real onnxruntime.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readCheckpoint } from '../src/residual/checkpoint.js';
import { makeConfig, profiles } from '../src/residual/config.js';
import { settleEncoder, type StateEncoderSource } from '../src/residual/encoder-choice.js';
import { collectDemos } from '../src/sim/collect.js';
import { readDemos } from '../src/sim/demos.js';
import { cleanExpert } from '../src/sim/expert.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import { pushTask } from '../src/sim/tasks/push.js';
import { stateEncoderSource } from '../src/cli/state-encoder-source.js';
import { decodeModelHeader } from '../src/util/onnx-proto.js';
import { ResrtError } from '../src/util/errors.js';
import { writeCameraBase } from './loop-camera-models.js';
import { tempDir } from './temp-dirs.js';
import { resrtInProcess as resrt } from './fixtures/cli-in-process.js';

const dir = tempDir('resrt-encoder-auto-');
let basePath: string;
let demosPath: string;

const trainArgs = (out: string, steps: number, ...extra: string[]): string[] => [
  ...['train', '--task', 'push-cam', '--base', basePath, '--steps', String(steps), '--out', out],
  ...['--seed', '1', '--profile', 'cpu', '--eval-every', '0', '--eval-episodes', '1'],
  ...['--checkpoint-every', '150', '--no-worker'],
  ...['actorHidden=[32,32]', 'criticHidden=[32,32]', 'batchSize=32', 'learningStarts=100']
    .concat(['criticWarmupSteps=20', 'policyDelay=1'])
    .flatMap((kv) => ['--set', kv]),
  ...extra,
];

beforeAll(async () => {
  basePath = await writeCameraBase(dir);
  demosPath = join(dir, 'push-cam.jsonl');
  await collectDemos({ task: pushCamTask, episodes: 3, out: demosPath, seed: 5, noise: cleanExpert });
}, 60_000);

describe("encoder 'auto' (the cpu profile's default)", () => {
  it('is the cpu default; the gpu profile keeps learned', () => {
    expect(profiles.cpu.encoder).toBe('auto');
    expect(profiles.gpu.encoder).toBe('learned');
    expect(() => makeConfig('cpu', { encoder: 'state', encoderFile: 'x.onnx' })).toThrow(
      /the encoder file is read only in encoder mode file/,
    );
  });

  it('trains a state encoder from push-cam demonstrations into the run folder, learns on it as file, exports it inside the residual and reuses it on --resume', async () => {
    const run = join(dir, 'auto-run');
    const first = await resrt(...trainArgs(run, 300, '--demos', demosPath));
    expect(first).toMatch(
      /state encoder: training one from the demonstrations' frames to goal_x, goal_y, puck_to_goal_x, puck_to_goal_y/,
    );
    expect(first).toMatch(
      /encoder auto → file .*state-encoder\.onnx \(a state encoder trained from the demonstrations\)/,
    );
    expect(first).toMatch(
      /camera features: encoder file from .*state-encoder\.onnx \(cameras top\), 4 values per observation/,
    );
    const encoderPath = join(run, 'state-encoder.onnx');
    const summary = JSON.parse(readFileSync(`${encoderPath}.train.json`, 'utf8')) as {
      targets: string[];
      task: string;
    };
    expect(summary).toMatchObject({
      targets: ['goal_x', 'goal_y', 'puck_to_goal_x', 'puck_to_goal_y'],
      task: 'push-cam',
    });
    const ck = readCheckpoint(run)!;
    expect(ck.meta.config).toMatchObject({ encoder: 'file', encoderFile: encoderPath });
    expect(ck.meta.encoderChecksum).toMatch(/^sha256:[0-9a-f]{64}$/);

    const onnxPath = join(run, 'residual.onnx');
    const header = decodeModelHeader(readFileSync(onnxPath), onnxPath);
    expect(header.graph.input.map((i) => i.name)).toEqual(['observation.images.top', 'obs', 'base_action']);
    expect(header.metadata['resrt.residual_encoder']).toBe('file');

    // A resumed run finds the encoder it trained (not a second one, which would change what the
    // checkpointed features mean) and continues.
    const trainedAt = statSync(encoderPath).mtimeMs;
    const resumed = await resrt(...trainArgs(run, 400, '--demos', demosPath, '--resume'));
    expect(resumed).toMatch(
      /state encoder: .*state-encoder\.onnx, trained by this run before it was resumed/,
    );
    expect(resumed).toMatch(/resumed from .* at 300 env steps/);
    expect(statSync(encoderPath).mtimeMs).toBe(trainedAt);

    // eval loads the one file with the base and runs it on fresh episodes.
    const evaluated = await resrt(
      ...['eval', '--task', 'push-cam', '--base', basePath, '--residual', onnxPath, '--episodes', '1'],
    );
    expect(evaluated).toMatch(/push-cam {2}base\+residual {2}1 /);
  }, 300_000);

  it("falls back to the base's embedding without demonstrations, saying why, and keeps it on --resume", async () => {
    const out = await resrt(...trainArgs(join(dir, 'no-demos-run'), 120));
    expect(out).toMatch(
      /encoder auto → base-embedding: no state encoder, since no demonstrations were given \(--demos\)/,
    );
    expect(out).toMatch(/camera features: encoder base-embedding/);
    expect(existsSync(join(dir, 'no-demos-run', 'state-encoder.onnx'))).toBe(false);
    // Resumed with demonstrations that could train one, it keeps the features it learned on.
    const resumed = await resrt(
      ...trainArgs(join(dir, 'no-demos-run'), 200, '--demos', demosPath, '--resume'),
    );
    expect(resumed).toMatch(/encoder auto → base-embedding, as this run settled before it was resumed/);
    expect(resumed).toMatch(/resumed from .* at 120 env steps/);
    expect(existsSync(join(dir, 'no-demos-run', 'state-encoder.onnx'))).toBe(false);
  }, 120_000);
});

describe('resrt encoder train', () => {
  it("predicts the task's cameraTargets when --targets is not given", async () => {
    const out = join(dir, 'goal.onnx');
    const printed = await resrt(
      ...['encoder', 'train', '--demos', demosPath, '--out', out, '--epochs', '1', '--threads', '1'],
    );
    expect(printed).toMatch(/output features \[4\] = goal_x, goal_y, puck_to_goal_x, puck_to_goal_y/);
    expect(existsSync(out)).toBe(true);
  }, 120_000);
});

describe("encoder 'state'", () => {
  it('refuses a run whose demonstrations cannot train one, naming the fix', async () => {
    const out = join(dir, 'state-run');
    const err = await resrt(...trainArgs(out, 120, '--encoder', 'state')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResrtError);
    expect((err as ResrtError).message).toMatch(
      /encoder state trains an encoder from demonstrations .* no demonstrations were given/,
    );
    expect((err as ResrtError).hint).toMatch(
      /resrt collect --task push-cam --episodes 400 --out demos\.jsonl/,
    );
    expect(existsSync(out)).toBe(false);
  });

  it('names why a source cannot train one: a robot, a task without camera targets, demonstrations without state', () => {
    const demos = readDemos(demosPath);
    expect(stateEncoderSource(null, demos, { seed: 0 }).unavailable).toMatch(
      /a robot records no simulator state/,
    );
    expect(stateEncoderSource(pushTask, demos, { seed: 0 }).unavailable).toMatch(
      /task push names no cameraTargets/,
    );
    const stateless = {
      ...demos,
      header: { ...demos.header, environmentStateNames: undefined },
    } as typeof demos;
    expect(stateEncoderSource(pushCamTask, stateless, { seed: 0 }).unavailable).toMatch(
      /record no goal_x, goal_y, puck_to_goal_x, puck_to_goal_y .*collect them again/,
    );
    expect(stateEncoderSource(pushCamTask, demos, { seed: 0 }).unavailable).toBeNull();
  });

  it('leaves a state-only task and the explicit modes alone', async () => {
    const never: StateEncoderSource = {
      unavailable: null,
      prepare: () => Promise.reject(new Error('must not train')),
    };
    const run = { outDir: dir, settledBefore: null };
    const cfg = makeConfig('cpu');
    await expect(settleEncoder(cfg, { id: 'push', cameras: [] }, never, run, () => {})).resolves.toBe(cfg);
    const cams = {
      id: 'push-cam',
      cameras: pushCamTask.cameras!.names.map((name) => ({
        name,
        width: 84,
        height: 84,
        channels: 3,
        depth: false,
      })),
    };
    const embedding = makeConfig('cpu', { encoder: 'base-embedding' });
    await expect(settleEncoder(embedding, cams, never, run, () => {})).resolves.toBe(embedding);
  });
});
