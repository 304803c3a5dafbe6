import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { trainResidual } from '../src/residual/trainer.js';
import { KeptResidual } from '../src/residual/kept-residual.js';
import { ResrtError } from '../src/util/errors.js';
import { BiasedBase, PointMassEnv, pointMassLearner } from './residual-pointmass.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'resrt-keep-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const keptFiles = (d: string): string[] => readdirSync(d).filter((f) => /^residual-best-\d+\.onnx$/.test(f));

describe('keep best', () => {
  it('writes the residual of the best periodic evaluation as residual.onnx, and reports it held out', async () => {
    const out = join(dir, 'run');
    const r = await trainResidual({
      makeEnv: () => new PointMassEnv(),
      base: new BiasedBase(),
      steps: 1800,
      outDir: out,
      seed: 1,
      profile: 'cpu',
      config: pointMassLearner,
      evalEvery: 150,
      evalEpisodes: 20,
      keep: 'best',
      worker: false,
      threads: 1,
      log: () => {},
    });
    const rates = r.curve.map((p) => p.successRate);
    const best = Math.max(...rates);
    // The later evaluation wins a tie: it is the one trained longer.
    const bestAt = r.curve.filter((p) => p.successRate === best).at(-1)!.envSteps;
    expect(r.kept).toEqual({ envSteps: bestAt, successRate: best, evalEpisodes: 20 });
    // This seeded in-process run peaks before its end, so the kept residual is not the last one.
    expect(bestAt).toBeLessThan(r.envSteps);
    expect(rates.at(-1)!).toBeLessThan(best);
    expect(keptFiles(out)).toEqual([`residual-best-${bestAt}.onnx`]);
    expect(readFileSync(r.onnxPath).equals(readFileSync(join(out, keptFiles(out)[0])))).toBe(true);
    expect(JSON.parse(readFileSync(join(out, 'residual-best.json'), 'utf8'))).toMatchObject({
      envSteps: bestAt,
      successRate: best,
    });
    // The run reports that file on held-out seeds.
    expect(r.heldOut?.residual.successRate).toBeGreaterThan(r.heldOut!.base!.successRate);
  }, 150_000);

  it('refuses keep best without periodic evaluations, naming the flag', async () => {
    const err = await trainResidual({
      makeEnv: () => new PointMassEnv(),
      base: new BiasedBase(),
      steps: 100,
      outDir: join(dir, 'no-evals'),
      keep: 'best',
      worker: false,
      log: () => {},
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResrtError);
    expect((err as ResrtError).message).toMatch(/evalEvery is 0/);
    expect((err as ResrtError).hint).toMatch(/--eval-every/);
    expect(existsSync(join(dir, 'no-evals'))).toBe(false);
  });
});

describe('KeptResidual on disk', () => {
  const write =
    (bytes: string) =>
    (path: string): boolean => {
      writeFileSync(path, bytes);
      return true;
    };
  let n = 0;
  const fresh = (): string => {
    const d = join(dir, `kept-${n++}`);
    mkdirSync(d);
    return d;
  };

  it('keeps an evaluation at least as good as the kept one, and deletes the file it replaces', () => {
    const d = fresh();
    const k = KeptResidual.open(d, false);
    expect(k.offer({ envSteps: 100, successRate: 0.5, evalEpisodes: 10 }, write('a'))).toBe(true);
    expect(k.offer({ envSteps: 200, successRate: 0.4, evalEpisodes: 10 }, write('b'))).toBe(false);
    expect(k.offer({ envSteps: 300, successRate: 0.5, evalEpisodes: 10 }, write('c'))).toBe(true);
    expect(k.kept).toEqual({ envSteps: 300, successRate: 0.5, evalEpisodes: 10 });
    expect(keptFiles(d)).toEqual(['residual-best-300.onnx']);
    expect(k.copyTo(join(d, 'residual.onnx'))).toBe(true);
    expect(readFileSync(join(d, 'residual.onnx'), 'utf8')).toBe('c');
    // Nothing published yet: nothing kept.
    const empty = KeptResidual.open(fresh(), false);
    expect(empty.offer({ envSteps: 0, successRate: 1, evalEpisodes: 10 }, () => false)).toBe(false);
    expect(empty.kept).toBeNull();
    expect(empty.copyTo(join(d, 'other.onnx'))).toBe(false);
  });

  it('a resumed run keeps what its record names; a kill -9 mid-write leaves nothing else behind', () => {
    const d = fresh();
    const k = KeptResidual.open(d, false);
    k.offer({ envSteps: 100, successRate: 0.5, evalEpisodes: 10 }, write('a'));
    // Killed after writing a better file, before its record: the record still names the old one.
    writeFileSync(join(d, 'residual-best-200.onnx'), 'b');
    const resumed = KeptResidual.open(d, true);
    expect(resumed.kept).toEqual({ envSteps: 100, successRate: 0.5, evalEpisodes: 10 });
    expect(keptFiles(d)).toEqual(['residual-best-100.onnx']);
    // Killed after the record, before the old file went: the record's file is kept, the old one goes.
    writeFileSync(join(d, 'residual-best-300.onnx'), 'c');
    writeFileSync(
      join(d, 'residual-best.json'),
      JSON.stringify({ envSteps: 300, successRate: 0.7, evalEpisodes: 10, file: 'residual-best-300.onnx' }),
    );
    expect(KeptResidual.open(d, true).kept?.envSteps).toBe(300);
    expect(keptFiles(d)).toEqual(['residual-best-300.onnx']);
    // A new run in the folder (no resume) starts with nothing kept.
    expect(KeptResidual.open(d, false).kept).toBeNull();
    expect(keptFiles(d)).toEqual([]);
    expect(existsSync(join(d, 'residual-best.json'))).toBe(false);
  });
});
