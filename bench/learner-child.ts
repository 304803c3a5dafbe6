/**
 * The session benches' learner: the learner service in a child process (as `resrt learner` runs
 * it), so the actors under test do not share its event loop or its core.
 */
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { LearnerServiceOptions } from '../src/residual/service/service-options.js';

const repo = resolve(import.meta.dirname, '..');

export interface LearnerChild {
  brokerUrl: string;
  stop(): Promise<void>;
}

/** Starts the learner and resolves once it says READY with its broker's URL. */
export async function startLearnerChild(
  options: LearnerServiceOptions,
  stderr: 'inherit' | 'ignore' = 'inherit',
): Promise<LearnerChild> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(repo, 'src/residual/service/child.ts'), JSON.stringify(options)],
    { cwd: repo, stdio: ['ignore', 'pipe', stderr] },
  );
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const brokerUrl = await new Promise<string>((resolveUrl, reject) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      if (l.startsWith('READY ')) resolveUrl((JSON.parse(l.slice(6)) as { brokerUrl: string }).brokerUrl);
    });
    void exited.then(() => reject(new Error('the learner exited before it was ready')));
  });
  return {
    brokerUrl,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
