/**
 * Cameras on robots: the ffmpeg source on generated video (real ffmpeg), JPEG frames over MQTT on
 * the embedded broker from the virtual robot's simulated camera, frames in HardwareEnv
 * observations with their skew, and the faults: stale, frozen, future-dated, corrupt, wrong size.
 */
import { spawnSync } from 'node:child_process';
import mqtt from 'mqtt';
import { BehaviorSubject, filter } from 'rxjs';
import { afterEach, describe, expect, it } from 'vitest';
import { FfmpegCamera } from '../src/hw/camera/ffmpeg-camera.js';
import { FrameMonitor } from '../src/hw/camera/frame-monitor.js';
import { encodeCameraFrame, MqttCamera } from '../src/hw/camera/mqtt-camera.js';
import { connectRobot, robotEnv } from '../src/hw/connect.js';
import { startEmbeddedBroker } from '../src/util/mqtt-broker.js';
import { cameraTopic } from '../src/hw/mqtt/topics.js';
import { MqttRobot } from '../src/hw/mqtt/mqtt-robot.js';
import { startVirtualRobot } from '../src/hw/virtual-robot.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import { builtInTasks } from '../src/sim/registry.js';
import type { CameraFrame, CameraSource } from '../src/types.js';
import type { HardwareStepInfo } from '../src/hw/hardware-env.js';
import { encodeRgbJpeg } from '../src/util/image-codec.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openRobotEnv } from '../src/cli/robot-commands.js';
import { loadComposedPolicy } from '../src/cli/policy-commands.js';
import { evaluatePolicy } from '../src/runtime/evaluate.js';
import type { CameraFrames, Policy } from '../src/types.js';
import { visuomotorOnnx } from './fixtures/visuomotor-onnx.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

const hasFfmpeg = spawnSync('ffmpeg', ['-version'], { stdio: 'ignore' }).status === 0;
const needsFfmpeg = it.skipIf(!hasFfmpeg && !process.env.CI);

const frameAt = (seq: number, capturedAtMs: number, fill = seq): CameraFrame => ({
  width: 4,
  height: 4,
  channels: 3,
  data: new Uint8Array(48).fill(fill),
  capturedAtMs,
  seq,
});

async function until<T>(get: () => T | null | undefined | false, timeoutMs = 10_000): Promise<T> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v) return v;
    if (performance.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('frame monitor', () => {
  it('tells fresh, stale, frozen, future-dated and missing frames apart, and measures skew', () => {
    const m = new FrameMonitor('top', { maxAgeMs: 100, maxFrozenMs: 300, maxFutureMs: 10 });
    expect(m.check(null, 0).fault).toBe('missing');
    const fresh = m.check(frameAt(1, 1000), 1030, 1010);
    expect(fresh.fault).toBeUndefined();
    expect([fresh.ageMs, fresh.skewMs]).toEqual([30, -10]);
    expect(m.check(frameAt(1, 1000), 1150).fault).toBe('stale');
    expect(m.check(frameAt(2, 1200), 1180).fault).toBe('future');
    // New frames, same picture: frozen once the content has not changed for 300 ms.
    const frozen = new FrameMonitor('top', { maxAgeMs: 100, maxFrozenMs: 300, maxFutureMs: 10 });
    for (let k = 0; k < 5; k++) expect(frozen.check(frameAt(k, 60 * k, 7), 60 * k + 5).fault).toBeUndefined();
    const h = frozen.check(frameAt(5, 500, 7), 505);
    expect(h.fault).toBe('frozen');
    expect(h.detail).toMatch(/same image for 505 ms/);
    expect(frozen.check(frameAt(6, 600, 8), 605).fault).toBeUndefined();
  });
});

describe('ffmpeg camera', () => {
  needsFfmpeg('streams a generated test video at the requested size, latest frame first', async () => {
    const cam = await FfmpegCamera.start({
      name: 'front',
      input: 'lavfi:testsrc=size=320x240:rate=30',
      width: 64,
      height: 48,
    });
    cleanups.push(() => cam.close());
    const first = cam.latest()!;
    expect([first.width, first.height, first.channels, first.data.length]).toEqual([64, 48, 3, 64 * 48 * 3]);
    const later = await until(() => {
      const f = cam.latest();
      return f && f.seq >= first.seq + 5 ? f : null;
    });
    expect(later.capturedAtMs).toBeGreaterThan(first.capturedAtMs);
    // testsrc moves: a live camera's content changes.
    expect(Buffer.compare(Buffer.from(later.data), Buffer.from(first.data))).not.toBe(0);
    const monitor = new FrameMonitor('front');
    expect(monitor.check(later, performance.now()).fault).toBeUndefined();
  });

  needsFfmpeg('a still picture is a frozen camera', async () => {
    const cam = await FfmpegCamera.start({
      name: 'still',
      input: 'lavfi:color=c=red:size=32x32:rate=30',
      width: 16,
      height: 16,
    });
    cleanups.push(() => cam.close());
    const monitor = new FrameMonitor('still', { maxAgeMs: 1000, maxFrozenMs: 300, maxFutureMs: 20 });
    const sub = cam.frame$.subscribe((f) => monitor.observe(f));
    cleanups.push(() => sub.unsubscribe());
    const [r, g, b] = cam.latest()!.data;
    expect(r).toBeGreaterThan(240);
    expect(g + b).toBeLessThan(10);
    const h = await until(() => {
      const r = monitor.check(cam.latest(), performance.now());
      return r.fault === 'frozen' ? r : null;
    });
    expect(h.detail).toMatch(/camera "still" has shown the same image/);
  });

  needsFfmpeg('an input ffmpeg cannot open fails with its reason and a fix', async () => {
    await expect(
      FfmpegCamera.start({ name: 'gone', input: '/nonexistent/camera.mp4', width: 16, height: 16 }),
    ).rejects.toThrow(
      /camera gone \(\/nonexistent\/camera.mp4\) delivered no frame: ffmpeg exited[\s\S]*No such file[\s\S]*fix:/,
    );
  });
});

describe('MQTT camera', () => {
  it('the virtual robot publishes its simulated camera; HardwareEnv observes it with state', async () => {
    const broker = await startEmbeddedBroker({ port: 0 });
    cleanups.push(() => broker.close());
    const virtual = await startVirtualRobot(pushCamTask, { transport: { brokerUrl: broker.url } });
    cleanups.push(() => virtual.close());
    const camera = await MqttCamera.connect(virtual.robotUrl, 'top', { width: 84, height: 84 });
    const robot = await connectRobot(virtual.robotUrl, { actionNames: virtual.config.action.names });
    cleanups.push(() => robot.close());
    const env = robotEnv(robot, virtual.config, {
      virtualScene: { obsDim: virtual.plant.obsDim },
      cameras: [camera],
      // Rendering, JPEG and the broker share this one process: a loaded host delays frames by
      // hundreds of ms. The age limit itself is the next test's subject.
      cameraLimits: { maxAgeMs: 2000, maxFrozenMs: 5000 },
      closeRobot: false,
    });
    cleanups.push(() => env.close());
    expect(env.cameras).toEqual([{ name: 'top', width: 84, height: 84, channels: 3, depth: false }]);
    const reset = await env.reset();
    const top = reset.frames!.top;
    expect([top.width, top.height, top.data.length]).toEqual([84, 84, 84 * 84 * 3]);
    // The red goal patch survives JPEG.
    let red = 0;
    for (let p = 0; p < 84 * 84; p++) if (top.data[3 * p] > 150 && top.data[3 * p + 1] < 80) red++;
    expect(red).toBeGreaterThan(5);
    const step = await env.step([0, 0, 0]);
    const info = step.info as HardwareStepInfo;
    expect(info.fault).toBeUndefined();
    expect(step.frames!.top).toBeDefined();
    const [health] = info.cameras!;
    expect(health.camera).toBe('top');
    expect(Number.isFinite(health.skewMs)).toBe(true);
    expect(health.ageMs).toBeGreaterThanOrEqual(-20);
    expect(health.ageMs).toBeLessThan(2000);
    expect(camera.counters().received).toBeGreaterThan(0);

    // Bad frames on the topic are dropped, counted and named; none replaces the latest frame.
    const pub = await mqtt.connectAsync(broker.url);
    cleanups.push(() => pub.endAsync());
    const topic = cameraTopic(virtual.robotUrl.split('/').pop()!, 'top');
    const bad = (width: number, jpeg: Uint8Array) =>
      Buffer.from(encodeCameraFrame({ width, height: 84, seq: 1e6, capturedAtUnixMs: Date.now(), jpeg }));
    await pub.publishAsync(topic, bad(84, Uint8Array.from([0xff, 0xd8, 0xff, 0xdb, 0, 1, 2])));
    await until(() => camera.counters().corrupt === 1);
    expect(camera.lastProblem).toMatch(/camera "top" frame 1000000 is a corrupt JPEG/);
    const small = encodeRgbJpeg({ width: 42, height: 84, data: new Uint8Array(42 * 84 * 3) });
    await pub.publishAsync(topic, bad(42, small));
    await until(() => camera.counters().wrongSize === 1);
    expect(camera.lastProblem).toMatch(/sent a 42x84 frame; it is configured for 84x84/);
    await pub.publishAsync(topic, Buffer.from('not a frame'));
    await until(() => camera.counters().malformed === 1);
    expect(camera.latest()!.seq).not.toBe(1e6);
  }, 60_000);

  it('a camera that stops or is dated in the future ends the step with the safe action', async () => {
    const broker = await startEmbeddedBroker({ port: 0 });
    cleanups.push(() => broker.close());
    const virtual = await startVirtualRobot(pushCamTask, { transport: { brokerUrl: broker.url } });
    cleanups.push(() => virtual.close());
    // The link's state timeout well past a loaded host's stalls: this test is about the camera's limits.
    const robot = await MqttRobot.connect(virtual.robotUrl, { stateTimeoutMs: 3000 });
    cleanups.push(() => robot.close());
    // A camera under the test's control.
    const frames = new BehaviorSubject<CameraFrame | null>(null);
    const source: CameraSource = {
      spec: { name: 'wrist', width: 4, height: 4, channels: 3, depth: false },
      frame$: frames.pipe(filter((f): f is CameraFrame => f !== null)),
      latest: () => frames.value,
      close: async () => {},
    };
    let seq = 0;
    const timer = setInterval(() => frames.next(frameAt(seq++, performance.now(), seq % 200)), 10);
    cleanups.push(() => clearInterval(timer));
    const env = robotEnv(robot, virtual.config, {
      virtualScene: { obsDim: virtual.plant.obsDim },
      cameras: [source],
      cameraLimits: { maxAgeMs: 150, maxFutureMs: 20 },
      // The robot's own freshness limit well past the camera's, as the link's: a loaded host's stall must not end the step first.
      stateGraceMs: 3000,
      closeRobot: false,
    });
    cleanups.push(() => env.close());
    await env.reset();
    expect((await env.step([0, 0, 0])).info.fault).toBeUndefined();
    clearInterval(timer);
    // Keep stepping (a live control loop) until the last frame is too old.
    const stoppedAt = performance.now();
    let stale = await env.step([0.5, 0.5, 0.5]);
    while (!stale.truncated && performance.now() - stoppedAt < 5000) stale = await env.step([0.5, 0.5, 0.5]);
    const info = stale.info as HardwareStepInfo;
    expect(stale.truncated).toBe(true);
    expect(info.fault).toMatch(/camera "wrist" frame \d+ is \d+ ms old \(limit 150 ms\)/);
    expect(Array.from(info.action)).toEqual(virtual.config.action.safe);
    // The step returns the last good observation with its frames, so a visuomotor policy can act on it.
    expect(stale.frames?.wrist).toBeDefined();
    // Future-dated frames stop the next reset with the reason.
    frames.next(frameAt(seq++, performance.now() + 5000));
    const shortReset = robotEnv(robot, virtual.config, {
      virtualScene: { obsDim: virtual.plant.obsDim },
      cameras: [source],
      cameraLimits: { maxFutureMs: 20 },
      resetTimeoutMs: 300,
      closeRobot: false,
      closeCameras: false,
    });
    cleanups.push(() => shortReset.close());
    await expect(shortReset.reset()).rejects.toThrow(
      /dated \d+\.\d ms in the future[\s\S]*fix: check the camera/,
    );
  }, 60_000);
});

describe("a robot config's cameras in robotEnv", () => {
  // That they open and deliver frames: openRobotEnv's end-to-end test below goes through robotEnv.
  needsFfmpeg(
    'one that cannot open fails the reset with its cause',
    async () => {
      const broker = await startEmbeddedBroker({ port: 0 });
      cleanups.push(() => broker.close());
      const virtual = await startVirtualRobot(builtInTasks.reach, { transport: { brokerUrl: broker.url } });
      cleanups.push(() => virtual.close());
      const robot = await connectRobot(virtual.robotUrl, { actionNames: virtual.config.action.names });
      cleanups.push(() => robot.close());
      const side = { name: 'side', source: '/nonexistent/camera.mp4', width: 16, height: 16 };
      const env = robotEnv(
        robot,
        { ...virtual.config, cameras: [side] },
        { virtualScene: { obsDim: virtual.plant.obsDim }, closeRobot: false },
      );
      cleanups.push(() => env.close());
      // The spec is the config's at once: a policy can be checked against it before any frame.
      expect(env.cameras).toEqual([{ name: 'side', width: 16, height: 16, channels: 3, depth: false }]);
      await expect(env.reset()).rejects.toThrow(
        /camera side \(\/nonexistent\/camera.mp4\) delivered no frame: ffmpeg exited[\s\S]*No such file[\s\S]*fix:/,
      );
    },
    60_000,
  );
});

describe('a visuomotor base on a robot', () => {
  it('reads the robot config cameras and runs an image policy over MQTT end to end', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'resrt-robot-camera-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const broker = await startEmbeddedBroker({ port: 0 });
    cleanups.push(() => broker.close());
    const virtual = await startVirtualRobot(pushCamTask, { transport: { brokerUrl: broker.url } });
    cleanups.push(() => virtual.close());
    // The config the virtual robot writes lists its camera; a short episode keeps the test quick.
    expect(virtual.config.cameras).toEqual([{ name: 'top', source: 'mqtt', width: 84, height: 84 }]);
    const configPath = join(dir, 'robot.json');
    writeFileSync(
      configPath,
      JSON.stringify({ ...virtual.config, episode: { ...virtual.config.episode, maxSteps: 8 } }),
    );
    const env = await openRobotEnv(virtual.robotUrl, configPath, true);
    cleanups.push(() => env.close());
    const basePath = join(dir, 'base.onnx');
    writeFileSync(basePath, visuomotorOnnx({ state: 12, image: 84, actions: 3, chunk: 1 }));
    const base = await loadComposedPolicy(env, basePath);
    const seen: (CameraFrames | undefined)[] = [];
    const spy: Policy = {
      actionDim: base.actionDim,
      reset: (seed) => base.reset?.(seed),
      act: (obs, frames) => {
        seen.push(frames);
        return base.act(obs, frames);
      },
    };
    const r = await evaluatePolicy(env, spy, { episodes: 1 });
    expect(r.episodes).toBe(1);
    expect(seen.length).toBeGreaterThanOrEqual(1);
    for (const frames of seen) expect(frames?.top?.width).toBe(84);
  }, 60_000);
});
