/**
 * Property-based tests of the safety layer: whatever goes in, what comes out is finite, inside the
 * box and the workspace, inside the rate limits, idempotent, and the latches behave.
 * ~110k generated cases in total (see NUM_RUNS).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { SafetyContext } from '../src/types.js';
import { f32Up } from '../src/safety/f32.js';
import {
  SafetyLayer,
  makeProjectionScratch,
  parseSafetyConfig,
  projectAction,
  resolveSafetyConfig,
  type RelevantSetFn,
  type SafetyConfig,
  type SafetyConfigInput,
} from '../src/safety/index.js';

const OBS_DIM = 8;

/**
 * Plain assertions: vitest's expect() costs microseconds per call, which over ~110k cases with
 * dozens of checks each would dominate the file's run time.
 */
function ok(cond: boolean, what: string): void {
  if (!cond) throw new Error(what);
}
function le(a: number, b: number, what: string): void {
  if (!(a <= b)) throw new Error(`${what}: expected ${a} <= ${b}`);
}
function same(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  let eq = a.length === b.length;
  for (let i = 0; eq && i < a.length; i++) eq = Object.is(a[i], b[i]);
  if (!eq)
    throw new Error(`${what}: [${Array.from(a).join(', ')}] differs from [${Array.from(b).join(', ')}]`);
}
const TOL = 1e-12;

// ---------------------------------------------------------------------------------------------
// Arbitraries

const unit = (min: number, max: number) => fc.double({ min, max, noNaN: true, noDefaultInfinity: true });
/** Anything a broken policy can emit: ordinary values, edges, NaN, ±Inf, 1e300, denormals. */
const wild = fc.oneof(
  { weight: 4, arbitrary: unit(-1.5, 1.5) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(NaN, Infinity, -Infinity, 1e300, -1e300, 3.4e38, -0, 5e-324, 1, -1),
  },
  { weight: 2, arbitrary: fc.double() },
);

interface Scenario {
  input: SafetyConfigInput;
  relevant: 'none' | 'band' | 'broken';
}

function configArb(opts: { staticWorkspace: boolean }): fc.Arbitrary<Scenario> {
  return fc.integer({ min: 1, max: 5 }).chain((dim) => {
    const perDim = <T>(a: fc.Arbitrary<T>) => fc.array(a, { minLength: dim, maxLength: dim });
    const m = Math.min(dim, 3);
    return fc
      .record({
        box: perDim(fc.tuple(unit(-1, 1), unit(-1, 1))),
        rate: fc.option(
          fc.record({
            maxDelta: unit(0.001, 0.5),
            maxAccel: fc.option(unit(0.0005, 0.2), { nil: undefined }),
            brakeBeforeLimits: fc.boolean(),
          }),
          { nil: undefined },
        ),
        workspace: fc.option(
          fc.record({
            mode: opts.staticWorkspace
              ? fc.constant('absolute' as const)
              : fc.constantFrom('absolute' as const, 'delta' as const),
            scale: fc.array(unit(0.05, 2), { minLength: m, maxLength: m }),
            center: fc.array(unit(-0.5, 0.5), { minLength: m, maxLength: m }),
            bounds: fc.array(fc.tuple(unit(-1.5, 1.5), unit(-1.5, 1.5)), { minLength: m, maxLength: m }),
          }),
          { nil: undefined },
        ),
        baseBound: fc.option(unit(0.01, 1), { nil: undefined }),
        scheduleFloor: unit(0, 1),
        safe: fc.constantFrom('hold', 'zero', 'pose'),
        pose: perDim(unit(-1.5, 1.5)),
        maxMisses: fc.integer({ min: 1, max: 30 }),
        relevant: fc.constantFrom('none' as const, 'band' as const, 'broken' as const),
        seed: fc.integer({ min: 0, max: 1000 }),
      })
      .map((r): Scenario => {
        const input: SafetyConfigInput = {
          actionDim: dim,
          box: { low: r.box.map(([a, b]) => Math.min(a, b)), high: r.box.map(([a, b]) => Math.max(a, b)) },
          guards: { obsDim: OBS_DIM },
          watchdog: { obsDeadlineMs: 50, maxConsecutiveMisses: r.maxMisses },
          poses: { home: r.pose },
          safeAction: r.safe === 'pose' ? { kind: 'pose', name: 'home' } : { kind: r.safe },
        };
        if (r.rate) input.rate = r.rate;
        if (r.workspace) {
          const w = r.workspace;
          const dims = Array.from({ length: m }, (_, k) => k);
          input.workspace = {
            dims,
            mode: w.mode,
            scale: w.scale,
            low: w.bounds.map(([a, b]) => Math.min(a, b)),
            high: w.bounds.map(([a, b]) => Math.max(a, b)),
            ...(w.mode === 'absolute' ? { center: w.center } : { obsIndices: dims.map((k) => k + 3) }),
          };
        }
        if (r.baseBound !== undefined) {
          input.baseMask = {
            bound: r.baseBound,
            schedule: { kind: 'linear', floor: r.scheduleFloor, horizon: 5, unit: 'step' },
            resample: 'step',
            seed: r.seed,
          };
        }
        return { input, relevant: r.relevant };
      });
  });
}

const relevantBand: RelevantSetFn = (obs, low, high) => {
  for (let i = 0; i < low.length; i++) {
    low[i] = obs[i % obs.length] - 0.4;
    high[i] = obs[i % obs.length] + 0.4;
  }
};
const relevantBroken: RelevantSetFn = (obs, low, high) => {
  relevantBand(obs, low, high);
  if (obs[0] > 0.5) low[0] = NaN;
  if (obs[1] > 0.8) throw new Error('model not loaded');
};

function makeLayer(s: Scenario, cfg: SafetyConfig): SafetyLayer {
  const relevantSet =
    s.relevant === 'band' ? relevantBand : s.relevant === 'broken' ? relevantBroken : undefined;
  return new SafetyLayer(cfg, { relevantSet, clock: () => 0 });
}

/** Proposals: usually the right length, sometimes not, sometimes null; float32 or float64 storage. */
function proposalArb(dim: number): fc.Arbitrary<Float32Array | null> {
  return fc.oneof(
    {
      weight: 6,
      arbitrary: fc
        .tuple(fc.array(wild, { minLength: dim, maxLength: dim }), fc.boolean())
        .map(([v, f64]) => (f64 ? (Float64Array.from(v) as unknown as Float32Array) : Float32Array.from(v))),
    },
    { weight: 1, arbitrary: fc.array(wild, { minLength: 0, maxLength: 8 }).map((v) => Float32Array.from(v)) },
    { weight: 1, arbitrary: fc.constant(null) },
  );
}

function obsArb(): fc.Arbitrary<Float32Array | null> {
  return fc.oneof(
    {
      weight: 8,
      arbitrary: fc
        .array(unit(-1, 1), { minLength: OBS_DIM, maxLength: OBS_DIM })
        .map((v) => Float32Array.from(v)),
    },
    {
      weight: 1,
      arbitrary: fc.array(wild, { minLength: 0, maxLength: OBS_DIM + 2 }).map((v) => Float32Array.from(v)),
    },
    { weight: 1, arbitrary: fc.constant(null) },
  );
}

function ctxArb(dim: number): fc.Arbitrary<SafetyContext> {
  return fc
    .record({
      obs: obsArb(),
      base: fc.oneof(
        {
          weight: 6,
          arbitrary: fc
            .array(unit(-1, 1), { minLength: dim, maxLength: dim })
            .map((v) => Float32Array.from(v)),
        },
        {
          weight: 1,
          arbitrary: fc.array(wild, { minLength: 0, maxLength: 6 }).map((v) => Float32Array.from(v)),
        },
        { weight: 1, arbitrary: fc.constant(null) },
      ),
      age: fc.oneof(
        { weight: 8, arbitrary: unit(0, 49) },
        { weight: 1, arbitrary: fc.constantFrom(NaN, Infinity, 51, 1e9) },
      ),
    })
    .map((r) => ({ obs: r.obs, baseAction: r.base, nowMs: 0, obsAgeMs: r.age }));
}

/** Two vectors as (elementwise min, elementwise max): a valid interval per dim. */
function sortedPair(
  a: fc.Arbitrary<Float64Array>,
  b: fc.Arbitrary<Float64Array>,
): fc.Arbitrary<[Float64Array, Float64Array]> {
  return fc
    .tuple(a, b)
    .map(([x, y]) => [x.map((v, i) => Math.min(v, y[i])), x.map((v, i) => Math.max(v, y[i]))]);
}

// ---------------------------------------------------------------------------------------------
// Reference constraints, computed independently of the layer's code

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

const resolvedCache = new WeakMap<SafetyConfig, ReturnType<typeof resolveSafetyConfig>>();
function resolved(cfg: SafetyConfig): ReturnType<typeof resolveSafetyConfig> {
  let r = resolvedCache.get(cfg);
  if (!r) resolvedCache.set(cfg, (r = resolveSafetyConfig(cfg)));
  return r;
}

function obsUsable(obs: Float32Array | null): obs is Float32Array {
  return obs !== null && obs.length === OBS_DIM && obs.every(Number.isFinite);
}

/** The position envelope on dim i: the workspace (if known on this tick) within the box. */
function envelope(cfg: SafetyConfig, obs: Float32Array | null, i: number): [number, number] | null {
  const r = resolved(cfg);
  const bl = r.boxLow[i];
  const bh = r.boxHigh[i];
  const ws = cfg.workspace;
  if (!ws || !ws.dims.includes(i)) return [bl, bh];
  const k = ws.dims.indexOf(i);
  let origin: number;
  if (ws.mode === 'absolute') origin = (ws.center as number[])[k];
  else if (obsUsable(obs)) origin = obs[(ws.obsIndices as number[])[k]];
  else return null;
  const scale = (ws.scale as number[])[k];
  const lo = ((ws.low as number[])[k] - origin) / scale;
  const hi = ((ws.high as number[])[k] - origin) / scale;
  return [clamp(lo, bl, bh), clamp(hi, bl, bh)];
}

const asNum = (v: number | number[], i: number): number => (typeof v === 'number' ? v : v[i]);

/**
 * v inside [lo, hi]; when no float32 lies in [lo, hi] (a point between two floats), the nearest
 * float32 is the best a Float32Array can hold, so one float32 step of slack is allowed.
 */
function expectWithin(v: number, lo: number, hi: number): void {
  const slack = f32Up(lo) > hi ? Math.max(Math.abs(lo), Math.abs(hi)) * 2 ** -23 + 2e-45 : 0;
  le(lo - slack - TOL, v, 'below the envelope');
  le(v, hi + slack + TOL, 'above the envelope');
}

function checkBox(cfg: SafetyConfig, out: Float32Array): void {
  const r = resolved(cfg);
  ok(out.length === cfg.actionDim, 'output length');
  for (let i = 0; i < out.length; i++) {
    ok(Number.isFinite(out[i]), 'finite output');
    le(r.boxLow[i], out[i], 'box low');
    le(out[i], r.boxHigh[i], 'box high');
  }
}

/** Velocity, acceleration and braking of `out` from (prev, vel) on every dim. */
function checkRate(
  cfg: SafetyConfig,
  env: ([number, number] | null)[],
  prev: ArrayLike<number>,
  vel: ArrayLike<number>,
  out: Float32Array,
): void {
  const rate = cfg.rate;
  if (!rate) return;
  for (let i = 0; i < out.length; i++) {
    const v = out[i] - prev[i];
    const vmax = asNum(rate.maxDelta, i);
    le(Math.abs(v), vmax + TOL, 'velocity');
    if (rate.maxAccel === undefined) continue;
    const a = asNum(rate.maxAccel, i);
    le(Math.abs(v - vel[i]), a + 1e-9, 'acceleration');
    const e = env[i];
    if (rate.brakeBeforeLimits && e !== null) {
      // Braking at `a` from the next tick must stop inside the envelope.
      if (v > 0) le(out[i] + (v * v) / (2 * a), e[1] + 1e-9, 'braking distance (up)');
      if (v < 0) le(e[0] - 1e-9, out[i] - (v * v) / (2 * a), 'braking distance (down)');
    }
  }
}

const NUM_RUNS = { single: 40_000, sequence: 4_000, projection: 50_000, estop: 8_000, watchdog: 8_000 };

describe('safety layer properties', () => {
  it('one tick from any previous state: finite, in the box and workspace, velocity-limited, idempotent', () => {
    const arb = configArb({ staticWorkspace: false }).chain((s) => {
      const dim = s.input.actionDim;
      return fc.record({
        s: fc.constant(s),
        prev: fc.array(unit(-1, 1), { minLength: dim, maxLength: dim }),
        vel: fc.array(unit(-0.6, 0.6), { minLength: dim, maxLength: dim }),
        proposal: proposalArb(dim),
        ctx: ctxArb(dim),
      });
    });
    fc.assert(
      fc.property(arb, ({ s, prev, vel, proposal, ctx }) => {
        const cfg = parseSafetyConfig(s.input);
        const r = resolved(cfg);
        const prevIn = prev.map((v, i) => Math.fround(clamp(v, r.boxLow[i], r.boxHigh[i])));
        const a = makeLayer(s, cfg);
        a.prime(prevIn, vel);
        const d = a.filter(proposal, ctx);
        checkBox(cfg, d.action);
        if (d.latched) {
          same(d.action, a.safeAction(), 'latched output is the safe action');
          return;
        }
        const env = prevIn.map((_, i) => envelope(cfg, ctx.obs, i));
        for (let i = 0; i < cfg.actionDim; i++) {
          const e = env[i];
          if (e !== null) expectWithin(d.action[i], e[0], e[1]);
          // The velocity limit holds whenever the previous action is inside the envelope.
          if (cfg.rate && e !== null && prevIn[i] >= e[0] && prevIn[i] <= e[1]) {
            le(
              Math.abs(d.action[i] - prevIn[i]),
              asNum(cfg.rate.maxDelta, i) + TOL,
              'velocity from inside the envelope',
            );
          }
        }
        const conflict = d.events.some((e) => e.kind === 'rate-conflict');
        if (!conflict) checkRate(cfg, env, prevIn, vel, d.action);

        // Idempotence: the same layer state, fed its own output, returns it unchanged.
        if (!d.overridden) {
          const b = makeLayer(s, cfg);
          b.prime(prevIn, vel);
          const again = b.filter(d.action, ctx);
          ok(!again.overridden, 'own output accepted');
          same(again.action, d.action, 'idempotent');
        }
      }),
      { numRuns: NUM_RUNS.single, seed: 1 },
    );
  });

  it('sequences from rest: every tick inside the box and all rate limits, brakes before limits, no conflicts', () => {
    const arb = configArb({ staticWorkspace: true }).chain((s) => {
      const dim = s.input.actionDim;
      return fc.record({
        s: fc.constant(s),
        obs: fc
          .array(unit(-1, 1), { minLength: OBS_DIM, maxLength: OBS_DIM })
          .map((v) => Float32Array.from(v)),
        steps: fc.array(
          fc.record({
            p: proposalArb(dim),
            age: fc.oneof({ weight: 9, arbitrary: unit(0, 49) }, { weight: 1, arbitrary: fc.constant(99) }),
          }),
          { minLength: 1, maxLength: 60 },
        ),
      });
    });
    fc.assert(
      fc.property(arb, ({ s, obs, steps }) => {
        const cfg = parseSafetyConfig(s.input);
        const layer = makeLayer(s, cfg);
        const dim = cfg.actionDim;
        const strict = !cfg.rate || cfg.rate.maxAccel === undefined || cfg.rate.brakeBeforeLimits;
        const env = Array.from({ length: dim }, (_, i) => envelope(cfg, obs, i));
        // Start at rest inside the envelope (as prime() after connecting to a robot at rest would).
        let prev = Float64Array.from(env, (e) =>
          Math.fround(((e as [number, number])[0] + (e as [number, number])[1]) / 2),
        );
        // A degenerate envelope with no float32 inside cannot hold a float32 action exactly.
        fc.pre(
          prev.every((v, i) => v >= (env[i] as [number, number])[0] && v <= (env[i] as [number, number])[1]),
        );
        layer.prime(prev);
        let vel = new Float64Array(dim);
        for (const step of steps) {
          const base = Float32Array.from(prev);
          const d = layer.filter(step.p, { obs, baseAction: base, nowMs: 0, obsAgeMs: step.age });
          checkBox(cfg, d.action);
          if (d.latched) {
            same(d.action, layer.safeAction(), 'latched output is the safe action');
            vel = new Float64Array(dim);
          } else {
            // Without braking an actuator can reach a limit at speed, and then only the limit holds.
            if (strict)
              ok(
                !d.events.some((e) => e.kind === 'rate-conflict'),
                'no rate conflict from a consistent state',
              );
            for (let i = 0; i < dim; i++) {
              const e = env[i] as [number, number];
              expectWithin(d.action[i], e[0], e[1]);
            }
            if (strict) checkRate(cfg, env, prev, vel, d.action);
            else if (cfg.rate)
              for (let i = 0; i < dim; i++)
                le(Math.abs(d.action[i] - prev[i]), asNum(cfg.rate.maxDelta, i) + TOL, 'velocity');
            vel = Float64Array.from(d.action, (v, i) => v - prev[i]);
          }
          prev = Float64Array.from(d.action);
        }
      }),
      { numRuns: NUM_RUNS.sequence, seed: 2 },
    );
  });

  it('the projection alone is idempotent and inside the box for arbitrary (even inconsistent) state', () => {
    const arb = configArb({ staticWorkspace: false }).chain((s) => {
      const dim = s.input.actionDim;
      const vec = (a: fc.Arbitrary<number>) =>
        fc.array(a, { minLength: dim, maxLength: dim }).map((v) => Float64Array.from(v));
      return fc.record({
        s: fc.constant(s),
        x: vec(wild),
        prev: vec(unit(-3, 3)),
        vel: vec(unit(-3, 3)),
        base: fc.option(vec(unit(-2, 2)), { nil: null }),
        rel: fc.option(sortedPair(vec(unit(-2, 2)), vec(unit(-2, 2))), { nil: null }),
        ws: fc.option(sortedPair(vec(unit(-3, 3)), vec(unit(-3, 3))), { nil: null }),
      });
    });
    fc.assert(
      fc.property(arb, ({ s, x, prev, vel, base, rel, ws }) => {
        const cfg = resolveSafetyConfig(parseSafetyConfig(s.input));
        const inputs = {
          prev,
          vel,
          base,
          relLow: rel ? rel[0] : null,
          relHigh: rel ? rel[1] : null,
          wsLow: ws ? ws[0] : null,
          wsHigh: ws ? ws[1] : null,
        };
        const scratch = makeProjectionScratch(cfg.dim);
        const once = new Float32Array(cfg.dim);
        const twice = new Float32Array(cfg.dim);
        projectAction(x, inputs, cfg, scratch, once);
        projectAction(once, inputs, cfg, scratch, twice);
        same(twice, once, 'projection idempotent');
        for (let i = 0; i < cfg.dim; i++) {
          ok(Number.isFinite(once[i]), 'finite');
          le(cfg.boxLow[i], once[i], 'box low');
          le(once[i], cfg.boxHigh[i], 'box high');
        }
      }),
      { numRuns: NUM_RUNS.projection, seed: 3 },
    );
  });

  it('e-stop wins on the next tick every time; stays latched; stale, future or pre-latch heartbeats are refused', () => {
    const arb = configArb({ staticWorkspace: false }).chain((s) => {
      const dim = s.input.actionDim;
      return fc.record({
        s: fc.constant(s),
        before: fc.array(fc.tuple(proposalArb(dim), ctxArb(dim)), { minLength: 0, maxLength: 10 }),
        after: fc.array(fc.tuple(proposalArb(dim), ctxArb(dim)), { minLength: 1, maxLength: 10 }),
        source: fc.constantFrom('cli-key', 'mqtt', 'dashboard', 'hardware'),
        badHeartbeat: fc.oneof(
          fc.integer({ min: 2_001, max: 1e7 }).map((age) => ({ age })),
          fc.integer({ min: 51, max: 1e6 }).map((ahead) => ({ age: -ahead })),
          fc.constant({ age: NaN }),
          fc.constant({ preLatch: true as const }),
        ),
        goodAge: fc.integer({ min: 0, max: 2_000 }),
        teleop: fc.option(fc.array(unit(-1, 1), { minLength: dim, maxLength: dim }), { nil: null }),
      });
    });
    fc.assert(
      fc.property(arb, ({ s, before, after, source, badHeartbeat, goodAge, teleop }) => {
        const cfg = parseSafetyConfig(s.input);
        let now = 10_000;
        const relevantSet =
          s.relevant === 'band' ? relevantBand : s.relevant === 'broken' ? relevantBroken : undefined;
        const layer = new SafetyLayer(cfg, { relevantSet, clock: () => now });
        for (const [p, ctx] of before) layer.filter(p, { ...ctx, nowMs: now++ });
        const expected = Array.from(layer.safeAction());
        if (teleop) layer.setTeleop(teleop, now);
        const latchTime = now;
        layer.estop(source);
        now += 1;
        // Latched until a valid reset, whatever arrives.
        for (const [p, ctx] of after) {
          const d = layer.filter(p, { ...ctx, nowMs: now++ });
          ok(d.latched, 'latched');
          ok(d.overridden, 'overridden');
          ok(!d.intervention, 'no intervention under a latch');
          same(d.action, expected, 'e-stop output is the safe action');
          checkBox(cfg, d.action);
        }
        const hb = 'preLatch' in badHeartbeat ? latchTime - 1 : now - badHeartbeat.age;
        const refused = layer.reset(hb);
        ok(!refused.ok, 'bad heartbeat refused');
        ok(layer.state.estopped, 'still e-stopped');
        ok(
          layer.filter(null, { obs: null, baseAction: null, nowMs: now, obsAgeMs: 0 }).latched,
          'latched after refusal',
        );
        // A fresh heartbeat after the latch clears it.
        const hbGood = Math.max(latchTime, now - goodAge);
        ok(layer.reset(hbGood).ok, 'fresh heartbeat accepted');
        ok(!layer.state.estopped, 'e-stop cleared');
        ok(!layer.state.faulted, 'fault cleared');
        ok(layer.state.estopSources.length === 0, 'sources cleared');
      }),
      { numRuns: NUM_RUNS.estop, seed: 4 },
    );
  });

  it('K consecutive misses latch a fault that good ticks do not clear; only a valid reset does', () => {
    const arb = configArb({ staticWorkspace: true }).chain((s) => {
      const dim = s.input.actionDim;
      return fc.record({
        s: fc.constant(s),
        missKind: fc.constantFrom('null', 'stale', 'nan', 'shape'),
        goodTicks: fc.integer({ min: 1, max: 20 }),
        good: fc.array(unit(-1, 1), { minLength: dim, maxLength: dim }).map((v) => Float32Array.from(v)),
        staleBy: fc.integer({ min: 2_001, max: 1e6 }),
      });
    });
    fc.assert(
      fc.property(arb, ({ s, missKind, goodTicks, good, staleBy }) => {
        const cfg = { ...parseSafetyConfig(s.input), baseMask: undefined };
        let now = 5_000;
        const layer = new SafetyLayer(cfg, { clock: () => now });
        const obs = new Float32Array(OBS_DIM);
        const K = cfg.watchdog.maxConsecutiveMisses;
        const dim = cfg.actionDim;
        const miss = (): Float32Array | null =>
          missKind === 'null'
            ? null
            : missKind === 'nan'
              ? new Float32Array(dim).fill(NaN)
              : missKind === 'shape'
                ? new Float32Array(dim + 1)
                : good;
        const age = missKind === 'stale' ? 1e6 : 1;
        for (let k = 1; k <= K; k++) {
          const d = layer.filter(miss(), { obs, baseAction: null, nowMs: now++, obsAgeMs: age });
          ok(d.overridden, 'overridden');
          ok(d.latched === (k === K), 'latches on the K-th miss');
          ok(layer.state.consecutiveMisses === k, 'miss count');
        }
        ok(layer.state.faulted, 'faulted');
        const safe = Array.from(layer.safeAction());
        for (let k = 0; k < goodTicks; k++) {
          const d = layer.filter(good, { obs, baseAction: null, nowMs: now++, obsAgeMs: 1 });
          ok(d.latched, 'latched');
          same(d.action, safe, 'fault output is the safe action');
        }
        ok(!layer.reset(now - staleBy).ok, 'stale reset refused');
        ok(layer.state.faulted, 'faulted');
        ok(layer.reset(now).ok, 'fresh reset accepted');
        const d = layer.filter(good, { obs, baseAction: null, nowMs: now, obsAgeMs: 1 });
        ok(!d.latched, 'unlatched after reset');
        ok(!d.overridden, 'proposal used after reset');
      }),
      { numRuns: NUM_RUNS.watchdog, seed: 5 },
    );
  });

  it('generates at least 100k cases in total', () => {
    expect(Object.values(NUM_RUNS).reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(100_000);
  });
});
