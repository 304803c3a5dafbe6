/** Behaviour of the safety layer on worked examples: config errors, braking, workspace, teleop, events. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { SafetyContext, SafetyEvent } from '../src/types.js';
import {
  SafetyLayer,
  defaultSafetyConfig,
  loadSafetyConfig,
  maskProbability,
  parseSafetyConfig,
  type SafetyConfigInput,
} from '../src/safety/index.js';
import { tempDir } from './temp-dirs.js';

const ctx = (over: Partial<SafetyContext> = {}): SafetyContext => ({
  obs: null,
  baseAction: null,
  nowMs: 0,
  obsAgeMs: 0,
  ...over,
});
const f32 = (...v: number[]) => Float32Array.from(v);

describe('safety config', () => {
  it('defaults: normalized box, watchdog, hold', () => {
    const cfg = defaultSafetyConfig(3);
    expect(cfg.actionDim).toBe(3);
    expect(cfg.box).toEqual({ low: -1, high: 1 });
    expect(cfg.safeAction).toEqual({ kind: 'hold' });
    expect(cfg.watchdog.maxConsecutiveMisses).toBe(20);
    expect(() => defaultSafetyConfig(0)).toThrow(/positive integer/);
  });

  const bad: [string, SafetyConfigInput | Record<string, unknown>, RegExp][] = [
    [
      'wrong length',
      { actionDim: 2, box: { low: [0, 0, 0], high: 1 } },
      /box\.low: has 3 entries, expected 2[\s\S]*fix: give 2 values/,
    ],
    ['negative rate', { actionDim: 2, rate: { maxDelta: -1 } }, /rate\.maxDelta[\s\S]*fix:/],
    [
      'unknown key',
      { actionDim: 2, rate: { maxDelta: 0.1, maxJerk: 1 } },
      /rate\.maxJerk: unknown key[\s\S]*fix: remove it; the keys allowed here are "maxDelta", "maxAccel"/,
    ],
    [
      'low above high',
      { actionDim: 1, box: { low: 0.5, high: 0.2 } },
      /box\.low\[0\]: 0\.5 is above[\s\S]*fix: make low <= high/,
    ],
    [
      'unknown pose',
      { actionDim: 1, safeAction: { kind: 'pose', name: 'home' } },
      /safeAction\.name[\s\S]*fix: add it under "poses"/,
    ],
    [
      'delta without obs',
      { actionDim: 3, workspace: { dims: [0, 1, 2], mode: 'delta', scale: 0.05, low: -1, high: 1 } },
      /workspace\.obsIndices: is required in delta mode/,
    ],
    [
      'workspace dim out of range',
      { actionDim: 2, workspace: { dims: [0, 5], mode: 'absolute', scale: 1, low: -1, high: 1 } },
      /workspace\.dims\[1\]: action index 5 is out of range/,
    ],
    [
      'exponential to zero',
      { actionDim: 1, baseMask: { bound: 0.2, schedule: { kind: 'exponential', floor: 0 } } },
      /baseMask\.schedule\.floor[\s\S]*fix: use a small positive floor/,
    ],
    ['bad enum', { actionDim: 1, teleop: { norm: 'l1' } }, /teleop\.norm[\s\S]*fix: use one of "linf", "l2"/],
    ['not a number', { actionDim: 'seven' }, /actionDim[\s\S]*fix: give a number/],
  ];
  for (const [name, obj, re] of bad) {
    it(`names the field and the fix: ${name}`, () => {
      expect(() => parseSafetyConfig(obj)).toThrow(re);
    });
  }

  it('loads a JSON file; bad JSON and missing files are ResrtErrors', () => {
    const dir = tempDir('resrt-safety-');
    const good = join(dir, 'safety.json');
    writeFileSync(good, JSON.stringify({ actionDim: 2, rate: { maxDelta: [0.1, 0.2] } }));
    expect(loadSafetyConfig(good).rate?.maxDelta).toEqual([0.1, 0.2]);
    const broken = join(dir, 'broken.json');
    writeFileSync(broken, '{ "actionDim": 2, }');
    expect(() => loadSafetyConfig(broken)).toThrow(/not valid JSON[\s\S]*fix: fix the JSON syntax/);
    expect(() => loadSafetyConfig(join(dir, 'missing.json'))).toThrow(/cannot read/);
  });
});

describe('masks', () => {
  it('ramps at the acceleration limit, cruises at the velocity limit and brakes to stop at the box edge', () => {
    const layer = new SafetyLayer(
      parseSafetyConfig({
        actionDim: 1,
        box: { low: -1, high: 0.75 },
        rate: { maxDelta: 0.1, maxAccel: 0.01 },
      }),
    );
    layer.prime([-1]);
    const xs: number[] = [-1];
    for (let t = 0; t < 200; t++) xs.push(layer.filter(f32(1), ctx()).action[0]);
    const v = xs.slice(1).map((x, i) => x - xs[i]);
    expect(Math.max(...xs)).toBeLessThanOrEqual(0.75);
    expect(xs[xs.length - 1]).toBeCloseTo(0.75, 5);
    expect(v[0]).toBeCloseTo(0.01, 6);
    expect(Math.max(...v)).toBeLessThanOrEqual(0.1 + 1e-7);
    expect(Math.max(...v)).toBeGreaterThan(0.099);
    for (let i = 1; i < v.length; i++) expect(Math.abs(v[i] - v[i - 1])).toBeLessThanOrEqual(0.01 + 1e-6);
    // Ends at rest, having slowed down before reaching the edge rather than stopping dead on it.
    expect(Math.abs(v[v.length - 1])).toBeLessThan(1e-6);
    const arrival = xs.findIndex((x) => x > 0.74);
    expect(v[arrival - 1]).toBeLessThan(0.05);
  });

  it('workspace in delta mode: the Cartesian target obs + scale·a stays inside the box', () => {
    const layer = new SafetyLayer(
      parseSafetyConfig({
        actionDim: 4,
        guards: { obsDim: 6 },
        workspace: {
          dims: [0, 1, 2],
          mode: 'delta',
          scale: 0.05,
          obsIndices: [0, 1, 2],
          low: [-0.5, -0.5, 0.02],
          high: [0.5, 0.5, 0.6],
        },
      }),
    );
    const obs = f32(0.49, 0, 0.03, 0, 0, 0);
    const d = layer.filter(f32(1, 1, -1, 1), ctx({ obs }));
    // x: 0.49 + 0.05·a ≤ 0.5 → a ≤ 0.2; z: 0.03 + 0.05·a ≥ 0.02 → a ≥ −0.2; gripper untouched.
    expect(d.action[0]).toBeCloseTo(0.2, 5);
    expect(d.action[1]).toBe(1);
    expect(d.action[2]).toBeCloseTo(-0.2, 5);
    expect(d.action[3]).toBe(1);
    expect(d.events.map((e) => e.kind)).toEqual(['clip-workspace']);
  });

  it('base-relative mask keeps the action within ±b of the base action; hard box wins where they conflict', () => {
    const layer = new SafetyLayer(
      parseSafetyConfig({ actionDim: 2, box: { low: -0.5, high: 0.5 }, baseMask: { bound: 0.1 } }),
    );
    const d = layer.filter(f32(-1, 0.3), ctx({ baseAction: f32(0.2, 0.9) }));
    expect(d.baseMasked).toBe(true);
    expect(d.action[0]).toBeCloseTo(0.1, 6);
    expect(d.action[1]).toBe(0.5);
    // Events name every mask whose interval excluded the proposal.
    expect(d.events.map((e) => e.kind)).toEqual(['clip-base', 'clip-box']);
    // Missing base action while the mask is in force is a guard miss.
    const m = layer.filter(f32(0, 0), ctx());
    expect(m.overridden).toBe(true);
    expect(m.events.map((e) => e.kind)).toContain('guard-base');
  });

  it('ε-masking: probability decays linearly or geometrically to the floor; draws are seeded', () => {
    expect(maskProbability({ kind: 'linear', floor: 0.2, horizon: 10, unit: 'episode' }, 0)).toBe(1);
    expect(maskProbability({ kind: 'linear', floor: 0.2, horizon: 10, unit: 'episode' }, 5)).toBeCloseTo(
      0.6,
      12,
    );
    expect(maskProbability({ kind: 'linear', floor: 0.2, horizon: 10, unit: 'episode' }, 50)).toBeCloseTo(
      0.2,
      12,
    );
    expect(maskProbability({ kind: 'exponential', floor: 0.01, horizon: 10, unit: 'step' }, 5)).toBeCloseTo(
      0.1,
      12,
    );
    expect(maskProbability({ kind: 'exponential', floor: 0.01, horizon: 10, unit: 'step' }, 20)).toBeCloseTo(
      0.01,
      12,
    );
    expect(maskProbability({ kind: 'constant', floor: 0.3, horizon: 1, unit: 'step' }, 7)).toBe(0.3);

    const cfg = parseSafetyConfig({
      actionDim: 1,
      baseMask: { bound: 0.1, schedule: { kind: 'linear', floor: 0, horizon: 200 }, seed: 9 },
    });
    const run = () => {
      const layer = new SafetyLayer(cfg);
      const masked: boolean[] = [];
      for (let e = 0; e < 400; e++) {
        masked.push(layer.state.baseMaskActive);
        layer.beginEpisode();
      }
      return masked;
    };
    const a = run();
    expect(run()).toEqual(a);
    const share = (from: number, to: number) => a.slice(from, to).filter(Boolean).length / (to - from);
    expect(share(0, 50)).toBeGreaterThan(0.7);
    expect(share(200, 400)).toBe(0);
  });

  it('relevant set from a user function clamps; a broken one is a guard miss', () => {
    const cfg = parseSafetyConfig({ actionDim: 2, guards: { obsDim: 2 } });
    const layer = new SafetyLayer(cfg, {
      relevantSet: (obs, low, high) => {
        low[0] = obs[0] - 0.1;
        high[0] = obs[0] + 0.1;
        if (obs[1] > 0) low[1] = NaN;
      },
    });
    const d = layer.filter(f32(1, -1), ctx({ obs: f32(0.2, 0) }));
    expect(d.action[0]).toBeCloseTo(0.3, 6);
    expect(d.action[1]).toBe(-1);
    expect(d.events.map((e) => e.kind)).toEqual(['clip-relevant']);
    const m = layer.filter(f32(1, -1), ctx({ obs: f32(0.2, 1) }));
    expect(m.overridden).toBe(true);
    expect(m.events.map((e) => e.kind)).toEqual(['guard-relevant']);
  });
});

describe('guards, latches and interventions', () => {
  it('safe action: hold keeps the last command, zero and named poses are clamped into the box', () => {
    const hold = new SafetyLayer(parseSafetyConfig({ actionDim: 2 }));
    hold.filter(f32(0.3, -0.2), ctx());
    expect(Array.from(hold.safeAction())).toEqual([Math.fround(0.3), Math.fround(-0.2)]);
    const d = hold.filter(f32(NaN, 0), ctx());
    expect(d.overridden).toBe(true);
    expect(Array.from(d.action)).toEqual([Math.fround(0.3), Math.fround(-0.2)]);
    const zero = new SafetyLayer(
      parseSafetyConfig({ actionDim: 1, box: { low: 0.2, high: 1 }, safeAction: { kind: 'zero' } }),
    );
    expect(zero.safeAction()[0]).toBeCloseTo(0.2, 6);
    const pose = new SafetyLayer(
      parseSafetyConfig({
        actionDim: 2,
        poses: { home: [0.5, 3] },
        safeAction: { kind: 'pose', name: 'home' },
      }),
    );
    expect(Array.from(pose.safeAction())).toEqual([0.5, 1]);
  });

  it('watchdog: a stale observation or no output sends the safe action; K in a row latch a fault', () => {
    let now = 0;
    const layer = new SafetyLayer(
      parseSafetyConfig({ actionDim: 1, watchdog: { obsDeadlineMs: 10, maxConsecutiveMisses: 3 } }),
      { clock: () => now },
    );
    expect(layer.filter(f32(0.5), ctx({ obsAgeMs: 11 })).events.map((e) => e.kind)).toEqual([
      'watchdog-stale-obs',
    ]);
    expect(layer.filter(null, ctx()).events.map((e) => e.kind)).toEqual(['watchdog-no-output']);
    expect(layer.filter(f32(0.5), ctx()).overridden).toBe(false);
    expect(layer.state.consecutiveMisses).toBe(0);
    for (let k = 0; k < 2; k++) layer.filter(null, ctx());
    const d = layer.filter(null, ctx());
    expect(d.latched).toBe(true);
    expect(d.events.map((e) => e.kind)).toEqual(['watchdog-no-output', 'watchdog-fault', 'fault-active']);
    expect(layer.state.faulted).toBe(true);
    now = 100;
    expect(layer.reset(now - 5000)).toMatchObject({ ok: false });
    expect(layer.reset(now + 1000)).toMatchObject({ ok: false, reason: expect.stringMatching(/future/) });
    expect(layer.reset(now)).toEqual({ ok: true });
    expect(layer.filter(f32(0.5), ctx()).latched).toBe(false);
  });

  it('e-stop from any source latches on the next tick, bypasses rate limits, and reports its sources', () => {
    let now = 1000;
    const layer = new SafetyLayer(
      parseSafetyConfig({ actionDim: 1, rate: { maxDelta: 0.01 }, safeAction: { kind: 'zero' } }),
      { clock: () => now },
    );
    layer.prime([0.8]);
    const seen: SafetyEvent[] = [];
    const sub = layer.events$.subscribe((e) => seen.push(e));
    layer.estop('mqtt', 'broker says stop');
    layer.estop('dashboard');
    const d = layer.filter(f32(0.8), ctx({ nowMs: now }));
    // Zero at once, not 0.79: under a latch the safe action bypasses the rate limiter.
    expect(d.action[0]).toBe(0);
    expect(d.latched).toBe(true);
    expect(layer.state.estopSources).toEqual(['mqtt', 'dashboard']);
    expect(seen.map((e) => e.kind)).toEqual(['estop', 'estop', 'estop-active']);
    expect(seen[0].detail).toBe('mqtt: broker says stop');
    expect(() => layer.estop('')).toThrow(/non-empty/);
    now = 1500;
    expect(layer.reset(999).ok).toBe(false); // predates the latch
    expect(layer.reset(1400).ok).toBe(true);
    // After a reset the rate limiter restarts from the safe action at rest.
    expect(layer.filter(f32(0.8), ctx({ nowMs: now })).action[0]).toBeCloseTo(0.01, 6);
    expect(layer.counters()).toMatchObject({
      estop: 2,
      'estop-active': 1,
      reset: 1,
      'reset-refused': 1,
      'clip-velocity': 1,
    });
    sub.unsubscribe();
  });

  it('a reset without a latch leaves the rate limiter alone; a latch ends an intervention', () => {
    const now = 0;
    const layer = new SafetyLayer(
      parseSafetyConfig({ actionDim: 1, rate: { maxDelta: 0.1, maxAccel: 0.01 } }),
      {
        clock: () => now,
      },
    );
    layer.prime([-0.5], [0.05]);
    expect(layer.reset(now)).toEqual({ ok: true });
    // Still moving at 0.05 per tick: stopping dead would break the acceleration limit.
    expect(layer.filter(f32(-0.5), ctx()).action[0]).toBeCloseTo(-0.5 + 0.04, 6);
    layer.setTeleop([0.9], now);
    expect(layer.filter(null, ctx()).intervention).toBe(true);
    layer.estop('cli-key');
    const d = layer.filter(null, ctx());
    expect(d.intervention).toBe(false);
    expect(d.events.map((e) => e.kind)).toEqual(['intervention-end', 'estop-active']);
    expect(layer.state.intervention).toBe(false);
  });

  it('teleop above the threshold replaces the policy, goes through the masks but not the base mask, and marks the tick', () => {
    let now = 0;
    const layer = new SafetyLayer(
      parseSafetyConfig({
        actionDim: 2,
        box: { low: -0.6, high: 0.6 },
        baseMask: { bound: 0.05 },
        teleop: { threshold: 0.1, timeoutMs: 50 },
      }),
      { clock: () => now },
    );
    const base = f32(0, 0);
    layer.setTeleop([0.05, 0], now); // inside the dead zone: ignored
    let d = layer.filter(f32(0.5, 0.5), ctx({ baseAction: base }));
    expect(d.intervention).toBe(false);
    // Float32 rounding is directed: the largest float32 not above 0.05.
    expect(Array.from(d.action)).toEqual([0.04999999701976776, 0.04999999701976776]);
    layer.setTeleop([0.9, -0.3], now);
    d = layer.filter(null, ctx({ baseAction: base }));
    expect(d.intervention).toBe(true);
    expect(d.baseMasked).toBe(false);
    expect(d.overridden).toBe(false);
    // The box edge 0.6 is rounded inwards to a float32 once, at config load.
    expect(Array.from(d.action)).toEqual([0.5999999642372131, Math.fround(-0.3)]);
    expect(d.events.map((e) => e.kind)).toEqual(['intervention-start', 'clip-box']);
    now = 100; // the device went quiet
    d = layer.filter(f32(0.5, 0.5), ctx({ baseAction: base, nowMs: now }));
    expect(d.intervention).toBe(false);
    expect(d.events.map((e) => e.kind)).toEqual(['teleop-stale', 'intervention-end', 'clip-base']);
    layer.setTeleop([NaN, 0], now);
    d = layer.filter(f32(0.5, 0.5), ctx({ baseAction: base, nowMs: now }));
    expect(d.overridden).toBe(true);
    expect(d.events.map((e) => e.kind)).toContain('guard-teleop');
    expect(() => layer.setTeleop([1, 2, 3])).toThrow(/expected 2/);
  });

  it('a clean tick carries no events and an unusable observation is a guard miss', () => {
    const layer = new SafetyLayer(parseSafetyConfig({ actionDim: 2, guards: { obsDim: 3 } }));
    const d = layer.filter(f32(0.1, 0.2), ctx({ obs: f32(0, 0, 0) }));
    expect(d.events).toHaveLength(0);
    expect(layer.filter(f32(0.1, 0.2), ctx({ obs: f32(0, NaN, 0) })).events.map((e) => e.kind)).toEqual([
      'guard-obs',
    ]);
    expect(layer.filter(f32(0.1, 0.2), ctx({ obs: f32(0, 0) })).events.map((e) => e.kind)).toEqual([
      'guard-obs',
    ]);
    expect(layer.filter(f32(0.1, 0.2, 0.3), ctx({ obs: f32(0, 0, 0) })).events[0].detail).toMatch(
      /3 entries, expected 2/,
    );
  });
});
