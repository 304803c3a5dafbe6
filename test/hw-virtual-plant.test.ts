// The virtual plant's own rules, on a fake clock: real-time stepping, brakes, self-resetting scenes.
import { describe, expect, it } from 'vitest';
import { VirtualPlant } from '../src/hw/virtual-plant.js';
import { builtInTasks } from '../src/sim/registry.js';

describe('VirtualPlant', () => {
  it('steps in real time under commands, brakes on hold, and resets a stalled or finished scene', async () => {
    let now = 0;
    const plant = await VirtualPlant.create(builtInTasks.reach, {
      now: () => now,
      resetDelayMs: 300,
      idleResetMs: 1000,
    });
    const obsDim = plant.obsDim;
    const step = (): number => plant.sample().sensors[obsDim + 2];
    // Braked before the first command: time passes, nothing moves.
    now += 200;
    expect(step()).toBe(0);
    plant.command(new Float32Array([0.2, 0.2]));
    now += 100; // 50 Hz: five control periods
    expect(step()).toBe(5);
    plant.hold();
    now += 500;
    expect(step()).toBe(5);
    // Stalled for longer than idleResetMs: a fresh scene (episode 1, step 0).
    now += 600;
    const s = plant.sample().sensors;
    expect(s[obsDim + 1]).toBe(1);
    expect(s[obsDim + 2]).toBe(0);
    // A finished episode (time limit) holds its outcome, then resets itself.
    plant.command(new Float32Array([0, 0]));
    for (let i = 0; i < 100; i++) {
      now += 20;
      plant.sample();
    }
    expect(plant.episode).toBeGreaterThanOrEqual(2);
    plant.close();
  });
});
