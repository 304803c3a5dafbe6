// A residual trained on the virtual SO-101-like arm over its Feetech bus (a real pseudo-terminal,
// emulated STS3215 servos, MuJoCo behind them) lifts the base it corrects. The environment is the
// one `resrt train --robot feetech:<pty> --virtual` builds; the arm runs in lockstep (one physics
// step per goal sync write), so a loaded machine meets the same arm as a quiet one.
//
// The base: the task's scripted expert as if it had been tuned on an arm whose shoulder_pan was
// homed 0.014 rad off: its goals land a few millimetres beside the cube, and most grasps miss.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openRobotEnv } from '../src/cli/robot-commands.js';
import { startVirtualServoArm } from '../src/hw/servo/virtual/virtual-arm.js';
import { trainResidual } from '../src/residual/trainer.js';
import { so101PickPlaceTask } from '../src/sim/tasks/so101/task.js';
import type { Env, Policy } from '../src/types.js';

const dir = mkdtempSync(join(tmpdir(), 'resrt-servo-residual-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Normalized shoulder_pan offset (range 2 = 4 rad): 0.007 is 0.014 rad, ~2.4 mm at the cube. */
const PAN_OFFSET = 0.007;

class MisHomedExpert implements Policy {
  readonly actionDim = 6;
  private readonly expert = so101PickPlaceTask.expert!();
  reset(): void {
    this.expert.reset();
  }
  act(obs: Float32Array): Float32Array {
    const a = this.expert.act(obs);
    a[0] = Math.max(-1, Math.min(1, a[0] + PAN_OFFSET));
    return a;
  }
}

describe('residual RL on the virtual servo arm', () => {
  it('a residual trained over the Feetech bus lifts its mis-homed base', async () => {
    const arm = await startVirtualServoArm({ protocol: 'feetech', lockstep: true, timeScale: 8, seed: 21 });
    let env: Env | null = null;
    try {
      env = await openRobotEnv(arm.robotUrl, arm.writeConfig(dir), true);
      const shared = env;
      const r = await trainResidual({
        // One arm: training and evaluation take turns on it, as `resrt train --robot` does.
        makeEnv: () => shared,
        base: new MisHomedExpert(),
        steps: 3000,
        outDir: join(dir, 'run'),
        seed: 2,
        profile: 'cpu',
        config: {
          actorHidden: [64, 64],
          criticHidden: [64, 64],
          numCritics: 2,
          batchSize: 128,
          utd: 1,
          // The base is millimetres from working: a small residual, explored gently.
          actionScale: 0.02,
          explorationStd: 0.004,
          warmupNoise: 0.5,
          learningStarts: 800,
          criticWarmupSteps: 200,
          actorLr: 1e-5,
          criticLr: 3e-4,
        },
        evalEvery: 0,
        evalEpisodes: 16,
        worker: true,
        log: () => {},
      });
      const base = r.curve[0].successRate;
      const final = r.curve[r.curve.length - 1].successRate;
      expect(r.envSteps).toBe(3000);
      expect(base, `base success ${base}`).toBeLessThan(0.5);
      expect(final - base, `success ${base} → ${final}`).toBeGreaterThanOrEqual(0.3);
      // Every step went over the bus: the arm took one physics step per environment step.
      const counters = arm.bus.counters();
      expect(counters.instructions).toBeGreaterThan(3 * r.envSteps);
    } finally {
      await env?.close();
      await arm.close();
    }
  }, 300_000);
});
