// A success detector's camera at a size of its own (`collect --detector-cameras top@168x168`):
// real MuJoCo renders the stream beside the policy's 84 x 84 camera, `collect` records it,
// `reward train` learns from it and records where it comes from, and `train` and `actor` with
// `--success-detector` render it again for the detector while the policy never sees it.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chooseBcCameras } from '../src/sim/bc-frames.js';
import { detectorStreams, parseCameraStreams } from '../src/sim/camera/sim-cameras.js';
import { loadEpisodeFrames, readDemos } from '../src/sim/demos.js';
import { MujocoEnv } from '../src/sim/env.js';
import { labelledEpisodes } from '../src/sim/reward-data.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import { simEnvFactory } from '../src/cli/train-commands.js';
import { runActor } from '../src/runtime/session/actor.js';
import { checkCameras, SuccessDetector, type SuccessJudge } from '../src/runtime/success-detector.js';
import { startEmbeddedBroker } from '../src/util/mqtt-broker.js';
import { connectRobot, robotEnv } from '../src/hw/connect.js';
import { loadRobotConfig } from '../src/hw/robot-config.js';
import { startVirtualRobot } from '../src/hw/virtual-robot.js';
import { CameraSender } from '../src/runtime/session/camera-sender.js';
import { decodeImage } from '../src/util/image-codec.js';
import type { CameraFrame } from '../src/types.js';
import { resrtInProcess } from './fixtures/cli-in-process.js';
import { visuomotorOnnx } from './fixtures/visuomotor-onnx.js';
import { tempDir } from './temp-dirs.js';

const stream168 = { name: 'top_168x168', camera: 'top', width: 168, height: 168 };

/** A 2x2 box average: the 168 x 168 frame seen at 84 x 84. */
function halve(f: CameraFrame): Uint8Array {
  const w = f.width / 2;
  const out = new Uint8Array(w * (f.height / 2) * 3);
  for (let y = 0; y < f.height / 2; y++)
    for (let x = 0; x < w; x++)
      for (let c = 0; c < 3; c++) {
        const at = (yy: number, xx: number): number => f.data[(yy * f.width + xx) * 3 + c];
        const sum = at(2 * y, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x) + at(2 * y + 1, 2 * x + 1);
        out[(y * w + x) * 3 + c] = Math.round(sum / 4);
      }
  return out;
}

describe('a detector camera of its own size', () => {
  it('renders the stream beside the observation cameras, the same view at twice the pixels', async () => {
    const plain = await MujocoEnv.create(pushCamTask);
    const env = await MujocoEnv.create(pushCamTask, { cameras: { extra: [stream168] } });
    try {
      expect(env.cameras).toEqual(plain.cameras);
      expect(env.auxCameras).toEqual([
        { name: 'top_168x168', width: 168, height: 168, channels: 3, depth: false, mjcfCamera: 'top' },
      ]);
      let a = plain.reset({ seed: 7 });
      let b = env.reset({ seed: 7 });
      for (let t = 0; t < 6; t++) {
        // The policy's frames are exactly those of an env without the stream.
        expect(Buffer.from(b.frames!.top.data).equals(Buffer.from(a.frames!.top.data))).toBe(true);
        const hi = b.frames!.top_168x168;
        expect([hi.width, hi.height, hi.data.length]).toEqual([168, 168, 168 * 168 * 3]);
        // Averaged down to 84 x 84 it is the policy's picture, up to edges that fall between pixels.
        const down = halve(hi);
        const lo = b.frames!.top.data;
        let diff = 0;
        for (let i = 0; i < lo.length; i++) diff += Math.abs(down[i] - lo[i]);
        expect(diff / lo.length).toBeLessThan(6);
        const action = [0.4, -0.3, 0.2];
        a = plain.step(action);
        b = env.step(action);
        expect(Array.from(b.obs)).toEqual(Array.from(a.obs));
      }
    } finally {
      plain.close();
      env.close();
    }
  });

  it('names the fix for a stream it cannot render or parse', async () => {
    expect(parseCameraStreams('top@168x168, hd=top@120x96')).toEqual([
      stream168,
      { name: 'hd', camera: 'top', width: 120, height: 96 },
    ]);
    expect(() => parseCameraStreams('top')).toThrow(
      /--detector-cameras "top" is not CAMERA@WIDTHxHEIGHT[\s\S]*fix: e\.g\. --detector-cameras top@168x168/,
    );
    expect(() => parseCameraStreams(' , ')).toThrow(/names no camera/);
    await expect(
      MujocoEnv.create(pushCamTask, { cameras: { extra: [{ ...stream168, name: 'top' }] } }),
    ).rejects.toThrow(
      /already has a camera stream named "top"[\s\S]*fix: give the stream a name of its own: NAME=top@168x168/,
    );
    await expect(
      MujocoEnv.create(pushCamTask, { cameras: { extra: [{ ...stream168, camera: 'wrist' }] } }),
    ).rejects.toThrow(/the scene has no camera named "wrist"/);
    await expect(
      MujocoEnv.create(pushCamTask, { cameras: { extra: [{ ...stream168, width: 4096 }] } }),
    ).rejects.toThrow(/camera image width 4096 for camera stream "top_168x168" of task push-cam is invalid/);
    // Only a detector's streams that the env does not already give are rendered.
    expect(
      detectorStreams(
        [
          { name: 'top', width: 84, height: 84 },
          { name: 'top_168x168', width: 168, height: 168, mjcfCamera: 'top' },
          { name: 'wrist', width: 84, height: 84 },
        ],
        ['top'],
      ),
    ).toEqual([stream168]);
  });

  it('is recorded by collect, learned by reward train, and rendered for train and actor --success-detector', async () => {
    const dir = tempDir('resrt-detector-stream-');
    const ok = join(dir, 'ok.jsonl');
    const bad = join(dir, 'bad.jsonl');
    const collect = (...args: string[]): Promise<string> =>
      resrtInProcess('collect', '--task', 'push-cam', '--detector-cameras', 'top@168x168', ...args);
    await collect('--episodes', '8', '--seed', '0', '--clean', '--out', ok);
    await collect('--episodes', '8', '--seed', '500', '--bias', '0.3', '--jitter', '0.1', '--out', bad);
    const demos = readDemos(ok);
    expect(demos.header.cameras).toEqual([
      { name: 'top', width: 84, height: 84, channels: 3, depth: false },
      { name: 'top_168x168', width: 168, height: 168, channels: 3, depth: false, mjcfCamera: 'top' },
    ]);
    const frames = loadEpisodeFrames(demos, demos.episodes[0]);
    expect(frames).toHaveLength(demos.episodes[0].obs.length);
    expect(frames.at(-1)!.top_168x168.data.length).toBe(168 * 168 * 3);
    // A policy learns from the observation camera; a detector from the stream recorded for it.
    expect(chooseBcCameras(demos, 'auto').map((c) => c.name)).toEqual(['top']);
    const data = labelledEpisodes([{ path: ok, demos }], 'auto');
    expect(data.cameras).toEqual([{ name: 'top_168x168', width: 168, height: 168, mjcfCamera: 'top' }]);

    const detectorPath = join(dir, 'detector.onnx');
    const small = ['--steps', '15', '--batch', '8', '--encoder', '4,4,4', '--val', '0.25', '--test', '0.25'];
    await resrtInProcess('reward', 'train', '--data', `${ok},${bad}`, ...small, '--out', detectorPath);
    const detector = await SuccessDetector.load(detectorPath);
    expect(detector.cameras).toEqual([{ name: 'top_168x168', width: 168, height: 168, mjcfCamera: 'top' }]);
    await detector.close();

    // reward eval: the file measured on labelled episodes, per file and in all.
    const evaluated = JSON.parse(
      await resrtInProcess('reward', 'eval', '--detector', detectorPath, '--data', `${ok},${bad}`, '--json'),
    ) as { by_file: { source: string; metrics: { episodes: number } }[]; all: { episodes: number } };
    expect(evaluated.by_file.map((f) => [f.source, f.metrics.episodes])).toEqual([
      [ok, 8],
      [bad, 8],
    ]);
    expect(evaluated.all.episodes).toBe(16);
    const plain = join(dir, 'plain.jsonl');
    await resrtInProcess('collect', '--task', 'push-cam', '--episodes', '1', '--clean', '--out', plain);
    await expect(
      resrtInProcess('reward', 'eval', '--detector', detectorPath, '--data', plain),
    ).rejects.toThrow(
      /reads camera "top_168x168" at 168x168, and .*plain\.jsonl does not record it[\s\S]*fix: collect the episodes with `resrt collect --detector-cameras top@168x168`/,
    );

    // push-cam's base reads the 84 x 84 top camera; the detector judges every step at 168 x 168.
    const basePath = join(dir, 'base.onnx');
    writeFileSync(basePath, visuomotorOnnx({ state: 12, image: 84, actions: 3, chunk: 1 }));
    const train = (out: string, detectorFile: string): Promise<string> =>
      resrtInProcess(
        'train',
        ...['--task', 'push-cam', '--base', basePath, '--success-detector', detectorFile],
        ...['--steps', '60', '--eval-every', '0', '--eval-episodes', '1', '--encoder', 'none'],
        ...['--no-worker', '--out', join(dir, out)],
      );
    const printed = await train('run', detectorPath);
    expect(printed).toMatch(/success detector: .* of \d+ training episodes/);
    const summary = JSON.parse(readFileSync(join(dir, 'run', 'summary.json'), 'utf8')) as {
      successDetector: { episodes: number } | null;
    };
    expect(summary.successDetector?.episodes).toBeGreaterThan(0);

    // An actor in a session: its env (as `resrt actor --task --success-detector` makes it) renders
    // the stream, the detector judges every step on it, and an episode ends where it fires.
    const broker = await startEmbeddedBroker();
    const real = await SuccessDetector.load(detectorPath);
    const env = await simEnvFactory(pushCamTask, real)();
    try {
      const judged: string[] = [];
      const firesEvery = 5;
      const judge: SuccessJudge & { path: string } = {
        path: detectorPath,
        cameras: real.cameras,
        threshold: real.threshold,
        judge: async (frames) => {
          const verdict = await real.judge(frames);
          judged.push(`${frames!.top_168x168.width}x${frames!.top_168x168.height}`);
          return { ...verdict, success: judged.length % firesEvery === 0 };
        },
      };
      const actor = await runActor({
        robotId: 'cam-1',
        brokerUrl: broker.url,
        session: 'detector-stream',
        stateDir: join(dir, 'actor'),
        base: basePath,
        env,
        successDetector: judge,
        episodes: 3,
        seed: 3,
      });
      const status = await actor.done;
      expect(status.episodes).toBe(3);
      expect(status.successes).toBe(3);
      expect(status.transitions).toBe(3 * firesEvery);
      expect(new Set(judged)).toEqual(new Set(['168x168']));
      // The dashboards show the detector's camera beside the policy's (and --send-frames jpeg sends it).
      expect(status.cameras).toEqual(['top', 'top_168x168']);
    } finally {
      await real.close();
      env.close();
      await broker.close();
    }

    // A detector that does not say which simulator camera its stream renders (one trained on a
    // robot's camera of that name) cannot be given it: the error names the cameras there are.
    const header = readFileSync(ok, 'utf8').split('\n');
    const unsourced = join(dir, 'unsourced.jsonl');
    writeFileSync(unsourced, [header[0].replace(',"mjcfCamera":"top"', ''), ...header.slice(1)].join('\n'));
    writeFileSync(`${unsourced}.frames`, readFileSync(`${ok}.frames`));
    writeFileSync(
      unsourced,
      readFileSync(unsourced, 'utf8').replace(
        '"framesFile":"ok.jsonl.frames"',
        '"framesFile":"unsourced.jsonl.frames"',
      ),
    );
    const robotDetector = join(dir, 'robot-detector.onnx');
    await resrtInProcess(
      'reward',
      'train',
      ...['--data', `${unsourced},${bad}`, '--cameras', 'top_168x168', ...small, '--out', robotDetector],
    );
    await expect(train('unsourced', robotDetector)).rejects.toThrow(
      /trained on camera "top_168x168", which is not here \(cameras here: "top"\)/,
    );
  }, 240_000);

  it('on a robot: a config camera marked detector comes with the frames and the JPEGs, not as a policy camera', async () => {
    const dir = tempDir('resrt-detector-robot-');
    const broker = await startEmbeddedBroker();
    const virtual = await startVirtualRobot(pushCamTask, {
      transport: { brokerUrl: broker.url },
      detectorCameras: [stream168],
    });
    const robot = await connectRobot(virtual.robotUrl, { actionNames: virtual.config.action.names });
    try {
      // The config the virtual robot writes, read back as a user's file is.
      const configPath = join(dir, 'robot.json');
      writeFileSync(configPath, JSON.stringify(virtual.config));
      const config = loadRobotConfig(configPath);
      expect(config.cameras).toEqual([
        { name: 'top', source: 'mqtt', width: 84, height: 84 },
        { name: 'top_168x168', source: 'mqtt', width: 168, height: 168, detector: true },
      ]);
      const env = robotEnv(robot, config, {
        virtualScene: { obsDim: virtual.plant.obsDim },
        // Rendering, JPEG and the broker share this process: a loaded host delays frames.
        cameraLimits: { maxAgeMs: 2000, maxFrozenMs: 5000 },
        closeRobot: false,
      });
      try {
        expect(env.cameras.map((c) => c.name)).toEqual(['top']);
        expect(env.auxCameras.map((c) => [c.name, c.width, c.height])).toEqual([['top_168x168', 168, 168]]);
        const detectorCamera = { name: 'top_168x168', width: 168, height: 168, mjcfCamera: 'top' };
        expect(() => checkCameras([detectorCamera], env.cameras, 'det.onnx')).toThrow(
          /which is not here[\s\S]*fix: on a robot, add camera "top_168x168" at 168x168 to its config \(with "detector": true/,
        );
        checkCameras([detectorCamera], [...env.cameras, ...env.auxCameras], 'det.onnx');
        const reset = await env.reset();
        expect(reset.frames!.top.width).toBe(84);
        expect(reset.frames!.top_168x168.width).toBe(168);
        // --send-frames jpeg: the labelled episodes carry the detector's camera for `reward train`.
        const base = { actionDim: 3, act: () => new Float32Array(3) };
        const sender = CameraSender.create('jpeg', base, env.cameras, 85, env.auxCameras);
        const payload = sender.capture(reset.frames);
        expect(payload?.kind).toBe('jpeg');
        const sent = payload?.kind === 'jpeg' ? payload.jpeg : {};
        expect(Object.keys(sent).sort()).toEqual(['top', 'top_168x168']);
        expect(decodeImage(sent.top_168x168, 'top_168x168')).toMatchObject({ width: 168, height: 168 });
      } finally {
        await env.close();
      }
    } finally {
      await robot.close();
      await virtual.close();
      await broker.close();
    }
  }, 60_000);
});
