// The live loop against real MuJoCo physics: ONNX base (+ zero residual) → SafetyLayer → env, at
// the task's own control rate, as `resrt run --task` does.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { taskSourceSpec } from '../src/cli/loop-sources.js';
import { ComposedPolicy } from '../src/runtime/compose.js';
import { WorkerControlLoop } from '../src/runtime/loop-host.js';
import { ControlLoop } from '../src/runtime/loop.js';
import { exportMlpToOnnx, MetaKey, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { envSource } from '../src/runtime/sources.js';
import { defaultSafetyConfig, SafetyLayer } from '../src/safety/index.js';
import { MujocoEnv } from '../src/sim/env.js';
import { builtInTasks } from '../src/sim/registry.js';
import type { CameraFrames, Transition } from '../src/types.js';
import { Rng } from '../src/util/rng.js';
import { visuomotorOnnx } from './fixtures/visuomotor-onnx.js';
import { tempDir } from './temp-dirs.js';

describe('control loop on the MuJoCo simulator', () => {
  it('keeps the task rate, steps physics once per tick, and resets episodes', async () => {
    const env = await MujocoEnv.create(builtInTasks.reach, { maxEpisodeSteps: 20 });
    const dir = tempDir('resrt-loop-');
    const spec = randomMlpSpec({
      inputs: [{ name: 'obs', dim: 10 }],
      hidden: [32, 32],
      actionDim: 2,
      rng: new Rng(3),
    });
    writeFileSync(join(dir, 'base.onnx'), exportMlpToOnnx(spec));
    const base = await OnnxPolicy.load(join(dir, 'base.onnx'), { expectObsDim: 10, expectActionDim: 2 });
    const policy = new ComposedPolicy({ base });
    const safety = new SafetyLayer(defaultSafetyConfig(2));
    const source = envSource(env, { seed: 1 });
    const transitions: Transition[] = [];
    source.transitions$.subscribe((t) => transitions.push(t));
    const rateHz = Math.round(1 / env.controlDt);
    expect(rateHz).toBe(50);
    const loop = new ControlLoop({
      source,
      policy,
      safety,
      rateHz,
      onEpisodeStart: () => safety.beginEpisode(),
    });
    const stats = await loop.runFor(1500);
    // Real time: about 75 ticks in 1.5 s; a loaded 2-core CI box may skip some, never add any.
    expect(stats.achievedHz).toBeLessThanOrEqual(rateHz * 1.02);
    expect(stats.achievedHz).toBeGreaterThan(rateHz * 0.5);
    // At most one physics step per tick, and one for every tick that actuated the policy's action.
    expect(transitions.length).toBeLessThanOrEqual(stats.ticks);
    expect(transitions.length).toBeGreaterThanOrEqual(stats.ticks - stats.safeActions - stats.overruns);
    // 20-step episodes at 50 Hz: several ended and reset within 1.5 s.
    expect(transitions.filter((t) => t.truncated || t.terminated).length).toBeGreaterThanOrEqual(2);
    for (const t of transitions) {
      for (const v of t.action) expect(Math.abs(v)).toBeLessThanOrEqual(1);
      expect(t.residual.every((v) => v === 0)).toBe(true);
    }
    await base.close();
    env.close();
    rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  it('runs in its own thread with the simulator built there: same rate, one physics step per tick', async () => {
    const dir = tempDir('resrt-loop-');
    const rng = new Rng(4);
    const basePath = join(dir, 'base.onnx');
    const residualPath = join(dir, 'residual.onnx');
    writeFileSync(
      basePath,
      exportMlpToOnnx(
        randomMlpSpec({ inputs: [{ name: 'obs', dim: 10 }], hidden: [32, 32], actionDim: 2, rng }),
      ),
    );
    const residual = randomMlpSpec({
      inputs: [
        { name: 'obs', dim: 10 },
        { name: 'base_action', dim: 2 },
      ],
      hidden: [32],
      actionDim: 2,
      tanhScale: 0.2,
      rng,
    });
    residual.metadata[MetaKey.kind] = 'residual';
    writeFileSync(residualPath, exportMlpToOnnx(residual));
    const loop = await WorkerControlLoop.create({
      policy: { base: basePath, residual: residualPath, scale: 0.5 },
      source: taskSourceSpec({ task: 'reach', seed: 1, maxEpisodeSteps: 20 }),
      safety: 'default',
      rateHz: 50,
    });
    expect(loop.fusion).toBe('fused');
    expect(loop.kind).toBe('env:reach');
    const transitions: Transition[] = [];
    loop.transitions$.subscribe((t) => transitions.push(t));
    const stats = await loop.runFor(1500);
    expect(stats.achievedHz).toBeLessThanOrEqual(50 * 1.02);
    expect(stats.achievedHz).toBeGreaterThan(50 * 0.5);
    expect(transitions.length).toBeLessThanOrEqual(stats.ticks);
    expect(transitions.length).toBeGreaterThanOrEqual(stats.ticks - stats.safeActions - stats.overruns);
    expect(transitions.filter((t) => t.truncated || t.terminated).length).toBeGreaterThanOrEqual(2);
    const policySteps = transitions.filter((t) => t.safetyEvents === 0);
    expect(policySteps.length).toBeGreaterThan(0);
    for (const t of transitions) for (const v of t.action) expect(Math.abs(v)).toBeLessThanOrEqual(1);
    // The residual ran in the same session call as the base: recorded, and non-zero.
    expect(policySteps.every((t) => t.residual.some((v) => v !== 0))).toBe(true);
    rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  it("carries each observation's camera frames through the loop thread to a visuomotor base", async () => {
    const dir = tempDir('resrt-loop-');
    const basePath = join(dir, 'base.onnx');
    const residualPath = join(dir, 'residual.onnx');
    // push-cam: 12 state values and the 84 x 84 "top" camera, which alone shows the goal.
    writeFileSync(basePath, visuomotorOnnx({ state: 12, image: 84, actions: 3, chunk: 1 }));
    const residual = randomMlpSpec({
      inputs: [
        { name: 'obs', dim: 12 },
        { name: 'base_action', dim: 3 },
      ],
      hidden: [16],
      actionDim: 3,
      tanhScale: 0.2,
      rng: new Rng(6),
    });
    residual.metadata[MetaKey.kind] = 'residual';
    writeFileSync(residualPath, exportMlpToOnnx(residual));
    const startedAt = performance.now();
    const loop = await WorkerControlLoop.create({
      policy: { base: basePath, residual: residualPath },
      source: taskSourceSpec({ task: 'push-cam', seed: 2 }),
      safety: null,
      rateHz: 25,
    });
    // One session call: the frames are preprocessed into the fused model's image input, and the
    // state-only residual reads the state beside them.
    expect(loop.fusion).toBe('fused');
    const transitions: Transition[] = [];
    const problems: string[] = [];
    loop.transitions$.subscribe((t) => transitions.push(t));
    loop.events$.subscribe((e) => {
      if (e.kind === 'policy_error' || e.kind === 'invalid_action') problems.push(`${e.kind}: ${e.detail}`);
    });
    await loop.runFor(2000);
    const stoppedAt = performance.now();
    expect(problems).toEqual([]);
    const policySteps = transitions.filter((t) => t.safetyEvents === 0);
    expect(policySteps.length).toBeGreaterThanOrEqual(5);
    for (const t of transitions) {
      for (const frames of [t.frames, t.nextFrames]) {
        expect(frames?.top?.width).toBe(84);
        expect(frames?.top?.data.length).toBe(84 * 84 * 3);
        // Capture times arrive on this thread's clock.
        expect(frames!.top.capturedAtMs).toBeGreaterThanOrEqual(startedAt);
        expect(frames!.top.capturedAtMs).toBeLessThanOrEqual(stoppedAt);
      }
    }
    // Each step's base action is the base run on that step's state and frames, to the last bit.
    const base = await OnnxPolicy.load(basePath, { cameras: { top: { width: 84, height: 84 } } });
    for (const t of policySteps.slice(0, 5)) {
      const expected = await base.runChunk(t.obs, t.frames);
      expect(Array.from(t.baseAction)).toEqual(Array.from(expected));
      expect(t.residual.some((v) => v !== 0)).toBe(true);
    }
    // ...and the image matters: a black frame gives another action.
    const first = policySteps[0];
    const black: CameraFrames = {
      top: { ...first.frames!.top, data: new Uint8Array(first.frames!.top.data.length) },
    };
    expect(Array.from(await base.runChunk(first.obs, black))).not.toEqual(Array.from(first.baseAction));
    await base.close();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);
});
