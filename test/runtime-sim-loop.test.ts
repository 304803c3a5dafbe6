// The live loop against real MuJoCo physics: ONNX base (+ zero residual) → SafetyLayer → env, at
// the task's own control rate, as `resrt run --task` does.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ComposedPolicy } from '../src/runtime/compose.js';
import { ControlLoop } from '../src/runtime/loop.js';
import { exportMlpToOnnx, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { envSource } from '../src/runtime/sources.js';
import { defaultSafetyConfig, SafetyLayer } from '../src/safety/index.js';
import { MujocoEnv } from '../src/sim/env.js';
import { builtInTasks } from '../src/sim/registry.js';
import type { Transition } from '../src/types.js';
import { Rng } from '../src/util/rng.js';
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
  }, 30_000);
});
