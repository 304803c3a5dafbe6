/**
 * What the training benchmarks (bench/learn.ts, bench/safety.ts) share: the task, demonstrations and
 * environment factory they train on, a logger that keeps stdout clean for --json, and a fresh
 * folder per run (an old run folder would make the trainer refuse, or resume).
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { readDemos, type DemoSet } from '../src/sim/demos.js';
import { MujocoEnv } from '../src/sim/env.js';
import { loadTask, type AnyTask } from '../src/sim/registry.js';

export interface TrainingBench {
  task: AnyTask;
  demos: DemoSet | undefined;
  makeEnv: () => Promise<MujocoEnv>;
  say: (line: string) => void;
  /** A fresh, empty folder for one run under the output folder. */
  runDir: (label: string, seed: number) => string;
}

export async function prepareTrainingBench(o: {
  task: string;
  demos?: string;
  out: string;
  json?: boolean;
}): Promise<TrainingBench> {
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
      rmSync(dir, { recursive: true, force: true });
      return dir;
    },
  };
}
