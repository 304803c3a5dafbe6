// One writer per run folder: a live holder (another process) is named with its pid and a true fix;
// a holder killed with -9 leaves a lock the next run takes over; the trainer and the learner service
// both take the folder before writing into it.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { lockRunFolder, RUN_LOCK_FILE } from '../src/util/run-lock.js';
import { trainResidual } from '../src/residual/trainer.js';
import { runLearnerService } from '../src/residual/service/learner-service.js';
import { BiasedBase, PointMassEnv, pointMassLearner } from './residual-pointmass.js';

const dirs: string[] = [];
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'resrt-run-lock-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A second process that takes the folder and keeps it until killed. */
async function holdInChild(dir: string): Promise<ReturnType<typeof spawn>> {
  const module = new URL('../src/util/run-lock.ts', import.meta.url).href;
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      `const { lockRunFolder } = await import(${JSON.stringify(module)});
       lockRunFolder(${JSON.stringify(dir)}, 'training run');
       process.stdout.write('held\\n');
       setInterval(() => {}, 1000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('held') && resolve());
    child.on('exit', (code) => reject(new Error(`lock holder exited with ${code}`)));
  });
  return child;
}

describe('run folder lock', () => {
  it('names a live holder in another process, and takes over the lock of one killed with -9', async () => {
    const dir = tempDir();
    const child = await holdInChild(dir);
    try {
      expect(() => lockRunFolder(dir, 'training run')).toThrow(
        new RegExp(
          `in use by another resrt training run \\(pid ${child.pid} on [^,]+, since [^)]+\\)[\\s\\S]*fix: .*kill ${child.pid}`,
        ),
      );
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    // The killed holder's file is still there; the next run takes it over.
    expect(existsSync(join(dir, RUN_LOCK_FILE))).toBe(true);
    const lock = lockRunFolder(dir, 'training run');
    expect(JSON.parse(readFileSync(join(dir, RUN_LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    lock.release();
    expect(existsSync(join(dir, RUN_LOCK_FILE))).toBe(false);
    // A lock file cut short by a crash while it was written is no holder either.
    writeFileSync(join(dir, RUN_LOCK_FILE), '{"pid": 12');
    lockRunFolder(dir, 'learner').release();
  }, 60_000);

  it('a training run into a folder another run holds stops before writing, and the folder frees after a run', async () => {
    const dir = tempDir();
    const out = join(dir, 'run');
    const opts = {
      makeEnv: () => new PointMassEnv(),
      base: new BiasedBase(),
      outDir: out,
      seed: 3,
      profile: 'cpu' as const,
      config: { ...pointMassLearner, learningStarts: 50, criticWarmupSteps: 5 },
      evalEpisodes: 5,
      worker: false,
      log: () => {},
    };
    await trainResidual({ ...opts, steps: 100 });
    expect(existsSync(join(out, RUN_LOCK_FILE))).toBe(false);
    const other = lockRunFolder(out, 'learner');
    try {
      await expect(trainResidual({ ...opts, steps: 200, resume: true })).rejects.toThrow(
        /in use by another resrt learner \(this process[\s\S]*another --out folder/,
      );
    } finally {
      other.release();
    }
    const resumed = await trainResidual({ ...opts, steps: 200, resume: true });
    expect(resumed.resumedFrom).toBe(100);
  }, 120_000);

  it('a second learner service on one session folder is refused while the first runs', async () => {
    const out = join(tempDir(), 'session');
    const first = await runLearnerService({ outDir: out, obsDim: 4, actionDim: 2, brokerPort: 0 });
    try {
      await expect(
        runLearnerService({ outDir: out, obsDim: 4, actionDim: 2, brokerPort: 0 }),
      ).rejects.toThrow(/in use by another resrt learner/);
    } finally {
      await first.close();
    }
    expect(existsSync(join(out, RUN_LOCK_FILE))).toBe(false);
  }, 60_000);
});
