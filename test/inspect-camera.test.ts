// `resrt inspect` on camera residuals through the CLI (bin/resrt.js): what the file is (kind,
// encoder mode, embedding width, state and action widths) and, with --base, whether it pairs with
// that base, failing the check (exit code 1, as --task does) when it does not.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportMlpToOnnx, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { Rng } from '../src/util/rng.js';
import { RESRT_CLI } from './fixtures/cli.js';
import { EMBEDDING, PUSH_CAM, writeCameraBase, writeCameraResidual } from './loop-camera-models.js';
import { tempDir } from './temp-dirs.js';

const run = promisify(execFile);

async function resrt(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [...RESRT_CLI, ...args], { maxBuffer: 1 << 24 });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

interface Report {
  kind: string;
  cameraResidual?: { encoder: string; embeddingDim: number };
  obsDim: number;
  actionDim: number;
  roles: { input: string; role: string }[];
  pairing?: { base: string; fits: boolean };
  fits: boolean;
  problems: { message: string; hint: string }[];
}

const dir = tempDir('resrt-inspect-camera-');
let basePath: string;
let statePath: string;
let residualPath: string;
let wrongWidthPath: string;

beforeAll(async () => {
  basePath = await writeCameraBase(dir);
  residualPath = writeCameraResidual(dir, 'residual.onnx', { version: 2, seed: 3 });
  wrongWidthPath = writeCameraResidual(dir, 'residual-e5.onnx', { version: 1, seed: 4, embeddingDim: 5 });
  // A state-only base of the same task: no embedding output.
  statePath = join(dir, 'state.onnx');
  writeFileSync(
    statePath,
    exportMlpToOnnx(
      randomMlpSpec({
        inputs: [{ name: 'obs', dim: PUSH_CAM.obsDim }],
        hidden: [8],
        actionDim: PUSH_CAM.actionDim,
        rng: new Rng(1),
      }),
    ),
  );
}, 60_000);

describe('resrt inspect on a camera residual', () => {
  it('reports a camera residual: encoder mode, embedding width, state and action widths', async () => {
    const json = await resrt('inspect', residualPath, '--json');
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as Report;
    expect(report.kind).toBe('residual');
    expect(report.cameraResidual).toEqual({ encoder: 'base-embedding', embeddingDim: EMBEDDING });
    expect([report.obsDim, report.actionDim]).toEqual([PUSH_CAM.obsDim, PUSH_CAM.actionDim]);
    expect(report.roles.map((r) => [r.input, r.role])).toEqual([
      ['base_embedding', 'base embedding'],
      ['obs', 'state'],
      ['base_action', 'base action'],
    ]);
    expect(report.fits).toBe(true);
    expect(report.pairing).toBeUndefined();
    const text = await resrt('inspect', residualPath, '--task', 'push-cam');
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/kind: camera residual {3}obs dim: 12 {3}action dim: 3 /);
    expect(text.stdout).toMatch(/encoder: base-embedding {3}embedding dim: 8/);
    expect(text.stdout).toMatch(/fits: yes/);
  }, 60_000);

  it('--base: a residual trained against that base pairs with it', async () => {
    const r = await resrt('inspect', residualPath, '--base', basePath, '--task', 'push-cam', '--json');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as Report;
    expect(report.pairing).toEqual({ base: basePath, fits: true });
    expect(report.fits).toBe(true);
    const text = await resrt('inspect', residualPath, '--base', basePath);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`pairs with ${basePath}: yes`);
  }, 60_000);

  it('--base: another embedding width, or a base without an embedding, fails the check with the fix', async () => {
    const wide = await resrt('inspect', wrongWidthPath, '--base', basePath);
    expect(wide.code).toBe(1);
    expect(wide.stdout).toContain(`pairs with ${basePath}: NO`);
    expect(wide.stdout).toMatch(
      /fits: NO\n {2}- .*residual-e5\.onnx reads a base embedding of 5 values, .*base\.onnx gives 8\n {4}fix: train the residual against this base: resrt train --base .*base\.onnx/,
    );
    const stateOnly = await resrt('inspect', residualPath, '--base', statePath, '--json');
    expect(stateOnly.code).toBe(1);
    const report = JSON.parse(stateOnly.stdout) as Report;
    expect(report.pairing).toEqual({ base: statePath, fits: false });
    expect(report.problems.map((p) => p.message).join('\n')).toMatch(
      /residual\.onnx reads the base's embedding, and .*state\.onnx has no embedding output/,
    );
  }, 60_000);
});
