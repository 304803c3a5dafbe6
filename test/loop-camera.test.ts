// `resrt run`'s loop thread with a visuomotor base and a camera residual (issue 20, item 3): real
// MuJoCo push-cam rendering its "top" camera in the loop thread, real onnxruntime. The two models
// run as one fused session call whose actions equal the two-call ComposedPolicy's on the same
// observations and frames; a new residual version swaps in mid-run; a residual trained against
// another base is refused with the fix.
import { beforeAll, describe, expect, it } from 'vitest';
import { taskSourceSpec } from '../src/cli/loop-sources.js';
import { CameraResidual } from '../src/runtime/camera-residual.js';
import { ComposedPolicy } from '../src/runtime/compose.js';
import { WorkerControlLoop } from '../src/runtime/loop-host.js';
import type { LoopPlan } from '../src/runtime/loop-plan.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import type { Transition } from '../src/types.js';
import { EMBEDDING, PUSH_CAM, writeCameraBase, writeCameraResidual } from './loop-camera-models.js';
import { waitFor } from './session-fixtures.js';
import { tempDir } from './temp-dirs.js';

const dir = tempDir('resrt-loop-camera-');
const cameras = { top: { width: PUSH_CAM.cameraSize, height: PUSH_CAM.cameraSize } };
let basePath: string;
let v1Path: string;
let v3Path: string;
let wrongWidthPath: string;

beforeAll(async () => {
  basePath = await writeCameraBase(dir);
  v1Path = writeCameraResidual(dir, 'residual-v1.onnx', { version: 1, seed: 2 });
  v3Path = writeCameraResidual(dir, 'residual-v3.onnx', { version: 3, seed: 9 });
  // Trained against a base whose embedding is 5 wide.
  wrongWidthPath = writeCameraResidual(dir, 'residual-e5.onnx', { version: 1, seed: 4, embeddingDim: 5 });
}, 60_000);

const plan = (residual: string): LoopPlan => ({
  policy: { base: basePath, residual },
  source: taskSourceSpec({ task: 'push-cam', seed: 2 }),
  safety: null,
  rateHz: 25,
});

/** The two-call composition of the base and one residual file, as `resrt eval` runs it. */
async function twoCalls(residualPath: string): Promise<{ policy: ComposedPolicy; close(): Promise<void> }> {
  const base = await OnnxPolicy.load(basePath, { cameras });
  const residual = await CameraResidual.load(residualPath);
  return {
    policy: new ComposedPolicy({ base, residual }),
    close: async () => {
      await base.close();
      await residual.close();
    },
  };
}

describe('loop thread: visuomotor base + camera residual', () => {
  it('runs both in one session call, equal to the two calls, and swaps residual versions mid-run', async () => {
    const loop = await WorkerControlLoop.create(plan(v1Path));
    expect(loop.fusion).toBe('fused');
    expect(loop.sessionMode).not.toBe('two-call');
    const transitions: Transition[] = [];
    const problems: string[] = [];
    loop.transitions$.subscribe((t) => transitions.push(t));
    loop.events$.subscribe((e) => {
      if (e.kind === 'policy_error' || e.kind === 'invalid_action') problems.push(`${e.kind}: ${e.detail}`);
    });
    const policySteps = (version: number): Transition[] =>
      transitions.filter((t) => t.safetyEvents === 0 && t.policyVersion === version);
    await loop.start();
    try {
      await waitFor('steps of residual version 1', () => policySteps(1).length >= 5, 30_000);
      // A mispaired file is refused on this thread; the loop keeps running version 1.
      await expect(loop.setResidual(wrongWidthPath)).rejects.toThrow(
        /residual-e5\.onnx reads a base embedding of 5 values, .*base\.onnx gives 8/,
      );
      expect(await loop.setResidual(v3Path)).toBe(3);
      await waitFor('steps of residual version 3', () => policySteps(3).length >= 5, 30_000);
    } finally {
      await loop.stop();
    }
    expect(problems).toEqual([]);
    for (const [version, path] of [
      [1, v1Path],
      [3, v3Path],
    ] as const) {
      const reference = await twoCalls(path);
      for (const t of policySteps(version).slice(0, 5)) {
        // The frames the loop thread rendered and fed the fused model, fed to the two sessions.
        expect(t.frames?.top?.width).toBe(PUSH_CAM.cameraSize);
        const action = await reference.policy.act(t.obs, t.frames);
        const last = reference.policy.last!;
        expect(Array.from(t.baseAction)).toEqual(Array.from(last.baseAction));
        expect(Array.from(t.residual)).toEqual(Array.from(last.residual));
        expect(Array.from(t.action)).toEqual(Array.from(action));
      }
      await reference.close();
    }
    // The swap took effect: version 3's steps are not what version 1 would have done.
    const v1 = await twoCalls(v1Path);
    const after = policySteps(3)[0];
    await v1.policy.act(after.obs, after.frames);
    expect(Array.from(after.residual)).not.toEqual(Array.from(v1.policy.last!.residual));
    await v1.close();
  }, 120_000);

  it('two calls (fusion off): the loop thread loads the new camera residual itself, checked here first', async () => {
    const loop = await WorkerControlLoop.create({
      ...plan(v1Path),
      policy: { ...plan(v1Path).policy, fuse: false },
    });
    expect(loop.fusion).toBe('fusion turned off');
    expect(loop.sessionMode).toBe('two-call');
    const transitions: Transition[] = [];
    loop.transitions$.subscribe((t) => transitions.push(t));
    const steps = (version: number): Transition[] =>
      transitions.filter((t) => t.safetyEvents === 0 && t.policyVersion === version);
    await loop.start();
    try {
      await waitFor('steps of residual version 1', () => steps(1).length >= 2, 30_000);
      await expect(loop.setResidual(wrongWidthPath)).rejects.toThrow(/reads a base embedding of 5 values/);
      expect(await loop.setResidual(v3Path)).toBe(3);
      await waitFor('steps of residual version 3', () => steps(3).length >= 2, 30_000);
    } finally {
      await loop.stop();
    }
    const reference = await twoCalls(v3Path);
    const t = steps(3)[0];
    expect(Array.from(t.action)).toEqual(Array.from(await reference.policy.act(t.obs, t.frames)));
    await reference.close();
  }, 120_000);

  it('refuses to start with a camera residual trained against another base, naming both files and the fix', async () => {
    const refused = WorkerControlLoop.create(plan(wrongWidthPath));
    await expect(refused).rejects.toThrow(
      new RegExp(`residual-e5\\.onnx reads a base embedding of 5 values, .*base\\.onnx gives ${EMBEDDING}`),
    );
    await refused.catch((err: { hint?: string }) => {
      expect(err.hint).toMatch(/resrt train --base .*base\.onnx/);
    });
  }, 60_000);
});
