// `resrt learner --encoder`, through the CLI's own entry point in its own process, with a real
// onnxruntime visuomotor base that has an embedding output: by default the learner reads the base's
// embedding ([features | state], "camera session"), and --encoder none makes it learn on the state
// alone, as `resrt train --encoder none` does.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from './temp-dirs.js';
import { RESRT_CLI } from './fixtures/cli.js';
import { visuomotorOnnx } from './fixtures/visuomotor-onnx.js';

const dir = tempDir('resrt-learner-encoder-');
const basePath = join(dir, 'base.onnx');
writeFileSync(basePath, visuomotorOnnx({ state: 12, image: 84, actions: 3, chunk: 1, embedding: 8 }));

/** Starts `resrt learner`, waits until it serves, stops it with SIGINT; its whole stdout. */
async function learnerOutput(out: string, ...args: string[]): Promise<string> {
  const child = spawn(
    process.execPath,
    [...RESRT_CLI, 'learner', '--out', join(dir, out), '--base', basePath, '--broker-port', '0', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const end = performance.now() + 45_000;
  while (!stdout.includes('Ctrl-C checkpoints and stops.')) {
    if (child.exitCode !== null || performance.now() > end) {
      child.kill('SIGKILL');
      throw new Error(`the learner did not start:\n${stdout}\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGINT');
  expect(await exited).toBe(0);
  return stdout;
}

describe('resrt learner --encoder', () => {
  it('reads the camera base embedding by default and the state alone with --encoder none', async () => {
    expect(await learnerOutput('default')).toMatch(/learner: camera session, 8 base-embedding features/);
    const stateOnly = await learnerOutput('none', '--encoder', 'none');
    expect(stateOnly).toMatch(/learner: .*profile/);
    expect(stateOnly).not.toMatch(/camera session/);
  }, 120_000);
});
