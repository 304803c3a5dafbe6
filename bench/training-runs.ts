/**
 * What the training benchmarks (bench/learn.ts, bench/safety.ts) share: their common flags, the
 * task, demonstrations and environment factory they train on, a logger that keeps stdout clean for
 * --json, and one folder per run — fresh, or kept with --resume so that a long benchmark stopped
 * by a crash (or asked for more steps) continues from each run's last checkpoint.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { readDemos, type DemoSet } from '../src/sim/demos.js';
import { MujocoEnv } from '../src/sim/env.js';
import { loadTask, type AnyTask } from '../src/sim/registry.js';
import { ResrtError } from '../src/util/errors.js';

/** The flags both training benchmarks take, as commander parses them. */
export interface TrainingBenchFlags {
  task: string;
  base: string;
  demos?: string;
  steps: string;
  seeds: string;
  evalEvery: string;
  evalEpisodes: string;
  profile: string;
  device: string;
  threads?: string;
  out: string;
  checkpointEvery: string;
  resume?: boolean;
  json?: boolean;
}

/** Declares the shared flags on `program`; each benchmark adds its own and picks its defaults. */
export function trainingBenchOptions(program: Command, defaults: { steps: number; out: string }): Command {
  return program
    .requiredOption('--task <name>', 'built-in task or task module path')
    .requiredOption('--base <onnx>', 'base policy (ONNX)')
    .option('--demos <jsonl>', 'demonstrations for the off-policy learner')
    .option('--steps <n>', 'environment steps per run', String(defaults.steps))
    .option('--seeds <list>', 'comma-separated seeds', '0,1,2')
    .option('--eval-every <n>', 'env steps between evaluations (0: start and end only)', '5000')
    .option('--eval-episodes <n>', 'episodes per evaluation (≥ 100 for a 95% CI worth reading)', '100')
    .option('--profile <p>', 'auto | cpu | gpu', 'auto')
    .option('--device <d>', 'where the learner computes: auto | cpu | cuda', 'auto')
    .option('--threads <n>', "the learner's onnxruntime intra-op threads (default: every core)")
    .option('--out <dir>', 'where runs, curves and plots go', defaults.out)
    .option(
      '--checkpoint-every <n>',
      'checkpoint each off-policy run every n env steps, so a crash loses at most that much (0: at the end only)',
      '5000',
    )
    .option(
      '--resume',
      'continue the runs already in --out from their last checkpoints (e.g. with a larger --steps) instead of replacing them',
    )
    .option('--json', 'one JSON object on stdout');
}

export function parseSeeds(s: string): number[] {
  // A list: "0" is seed 0, "0,1,2" three seeds.
  const seeds = s.split(',').map(Number);
  if (seeds.some((x) => !Number.isInteger(x) || x < 0)) {
    throw new ResrtError(`--seeds ${s} is not a list of seeds`, 'use e.g. --seeds 0 or --seeds 0,1,2');
  }
  return seeds;
}

export interface TrainingBench {
  task: AnyTask;
  demos: DemoSet | undefined;
  makeEnv: () => Promise<MujocoEnv>;
  say: (line: string) => void;
  /** The folder of one run under --out: emptied first, unless --resume keeps it to continue. */
  runDir: (label: string, seed: number) => string;
}

export async function prepareTrainingBench(o: TrainingBenchFlags): Promise<TrainingBench> {
  const task = await loadTask(o.task);
  const demos = o.demos ? readDemos(o.demos) : undefined;
  mkdirSync(o.out, { recursive: true });
  return {
    task,
    demos,
    makeEnv: () => MujocoEnv.create(task),
    say: (line) => {
      if (!o.json) console.error(line);
    },
    runDir: (label, seed) => {
      const dir = join(o.out, `${task.name}-${label}-seed${seed}`);
      if (!o.resume) rmSync(dir, { recursive: true, force: true });
      return dir;
    },
  };
}

/** Runs a benchmark's main: a ResrtError (bad flags, bad files) prints its message and fix, no stack. */
export function runBench(main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    if (err instanceof ResrtError) {
      console.error(`error: ${err.message}`);
      process.exitCode = 1;
      return;
    }
    console.error(err);
    process.exitCode = 1;
  });
}
