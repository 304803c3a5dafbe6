import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { trainResidualPpo } from '../src/residual/ppo.js';
import { trainRlpdScratch } from '../src/residual/rlpd.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { BiasedBase, PointMassEnv } from './residual-pointmass.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'resrt-baselines-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('baselines', () => {
  it('residual PPO starts at the base and improves on it (seeded)', async () => {
    const r = await trainResidualPpo({
      makeEnv: () => new PointMassEnv(),
      base: new BiasedBase(),
      steps: 4096,
      outDir: join(dir, 'ppo'),
      seed: 1,
      config: { hidden: [64, 64], numEnvs: 8, rolloutSteps: 64 },
      evalEpisodes: 100,
    });
    const base = r.curve[0].successRate;
    const final = r.curve[r.curve.length - 1].successRate;
    expect(base).toBeLessThan(0.5);
    expect(final - base).toBeGreaterThanOrEqual(0.2);
    const onnx = await OnnxPolicy.load(r.onnxPath, { residual: true });
    const res = await onnx.residual(Float32Array.from([0, 0, 0.3, 0.3]), Float32Array.from([0.5, 0.5]));
    expect(res.every((v) => Math.abs(v) <= 0.1 + 1e-6)).toBe(true);
  }, 60_000);

  it('RLPD from scratch ignores the base and exports a full policy', async () => {
    const r = await trainRlpdScratch({
      makeEnv: () => new PointMassEnv(),
      base: new BiasedBase(),
      steps: 300,
      outDir: join(dir, 'rlpd'),
      seed: 1,
      worker: false,
      profile: 'cpu',
      config: {
        actorHidden: [32, 32],
        criticHidden: [32, 32],
        numCritics: 2,
        batchSize: 64,
        learningStarts: 200,
        criticWarmupSteps: 10,
      },
      evalEpisodes: 10,
    });
    expect(r.config.useBase).toBe(false);
    expect(r.config.actionScale).toBe(1);
    // The actor starts at zero and the base is not added: the first evaluation moves nowhere.
    expect(r.curve[0].successRate).toBe(0);
    const policy = await OnnxPolicy.load(r.onnxPath);
    const a = await policy.act(Float32Array.from([0, 0, 0.3, 0.3]));
    expect(a).toHaveLength(2);
    expect(Array.from(a).every((v) => Math.abs(v) <= 1)).toBe(true);
  }, 60_000);
});
