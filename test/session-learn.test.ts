// Learning through the whole session machinery: an actor on a simulated point mass (real time,
// 100 Hz) with a biased scripted base wrapped as ONNX streams over MQTT to the learner service,
// which trains and publishes residual versions; the newest published residual, evaluated without
// exploration noise, must beat the base alone.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { runLearnerService } from '../src/residual/service/learner-service.js';
import { runActor } from '../src/runtime/session/actor.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { ComposedPolicy } from '../src/runtime/compose.js';
import { evaluatePolicy } from '../src/runtime/evaluate.js';
import { BiasedBase, PointMassEnv, pointMassLearner } from './residual-pointmass.js';
import { waitFor, writeBiasedPointMassBase } from './session-fixtures.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

describe('session learning', () => {
  it('a residual trained from streamed transitions beats the biased ONNX base', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'resrt-learn-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const basePath = join(dir, 'base.onnx');
    writeBiasedPointMassBase(basePath);
    const base = await OnnxPolicy.load(basePath);
    cleanups.push(() => base.close());
    // The ONNX base is the scripted one, exactly.
    const scripted = new BiasedBase();
    for (const obs of [
      [0, 0, 0.5, -0.3],
      [0.1, 0.2, 0.11, 0.2],
      [0.4, -0.4, -0.7, 0.8],
    ]) {
      const o = Float32Array.from(obs);
      const a = await base.act(o);
      const b = scripted.act(o);
      for (let i = 0; i < 2; i++) expect(a[i]).toBeCloseTo(b[i], 5);
    }

    const learner = await runLearnerService({
      outDir: join(dir, 'learner'),
      brokerPort: 0,
      base: basePath,
      profile: 'cpu',
      seed: 1,
      config: pointMassLearner,
      publishEvery: 25,
    });
    cleanups.push(() => learner.close());
    const actor = await runActor({
      robotId: 'pm',
      brokerUrl: learner.brokerUrl,
      stateDir: join(dir, 'pm'),
      base: basePath,
      env: new PointMassEnv(),
      rateHz: 100,
      seed: 3,
    });
    cleanups.push(async () => void (await actor.stop()));
    await waitFor('2000 learner updates', () => learner.snapshot().updates >= 2000, 100_000, 200);
    const status = await actor.stop();
    const snap = learner.snapshot();
    await learner.close();
    expect(status.residualVersion).toBeGreaterThan(1);
    expect(snap.version).toBeGreaterThan(10);

    const residual = await OnnxPolicy.load(join(dir, 'learner', 'residual.onnx'), { residual: true });
    cleanups.push(() => residual.close());
    const env = new PointMassEnv();
    const before = await evaluatePolicy(env, new ComposedPolicy({ base }), { episodes: 100, seed: 5000 });
    const after = await evaluatePolicy(env, new ComposedPolicy({ base, residual }), {
      episodes: 100,
      seed: 5000,
    });
    console.log(
      `session learning: base ${before.successRate.toFixed(2)} → base + residual v${snap.version} ${after.successRate.toFixed(2)} after ${snap.updates} updates on ${snap.logged} streamed transitions`,
    );
    expect(before.successRate).toBeLessThan(0.5);
    expect(after.successRate - before.successRate).toBeGreaterThanOrEqual(0.2);
  }, 150_000);
});
