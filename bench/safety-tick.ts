/**
 * Cost of one SafetyLayer.filter() call, the per-tick price of the safety layer in the control loop.
 *
 * Scenarios (7-dim action, 32-dim observation):
 *  - box:   hard box only (the default config)
 *  - full:  box, Cartesian workspace (delta mode), velocity + acceleration limits with braking,
 *           ε-masked base-relative mask, a relevant-set function; proposals that keep the masks busy
 *  - guard: every proposal holds a NaN, so the guard path sends the safe action through the rate
 *           limiter (the watchdog's latch is set out of reach)
 *
 * usage: npx tsx bench/safety-tick.ts [--json] [--ticks N]
 */
import { SafetyLayer, parseSafetyConfig, type SafetyConfigInput } from '../src/safety/index.js';
import type { SafetyContext } from '../src/types.js';
import { Rng } from '../src/util/rng.js';
import { percentiles } from '../src/util/stats.js';

const DIM = 7;
const OBS = 32;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const json = process.argv.includes('--json');
const ticks = Number(arg('--ticks') ?? 200_000);
if (!Number.isInteger(ticks) || ticks < 1000) {
  process.stderr.write('safety-tick bench: --ticks must be an integer >= 1000\n');
  process.exit(2);
}

interface Scenario {
  name: string;
  config: SafetyConfigInput;
  relevant: boolean;
  nan: boolean;
}

const full: SafetyConfigInput = {
  actionDim: DIM,
  box: { low: -0.9, high: 0.9 },
  guards: { obsDim: OBS },
  workspace: {
    dims: [0, 1, 2],
    mode: 'delta',
    scale: 0.05,
    obsIndices: [0, 1, 2],
    low: [-0.5, -0.5, 0.02],
    high: [0.5, 0.5, 0.6],
  },
  rate: { maxDelta: 0.05, maxAccel: 0.005 },
  baseMask: {
    bound: 0.3,
    schedule: { kind: 'linear', floor: 0.2, horizon: 1000, unit: 'step' },
    resample: 'step',
    seed: 1,
  },
  watchdog: { obsDeadlineMs: 1e9, maxConsecutiveMisses: 1e9 },
};

const scenarios: Scenario[] = [
  { name: 'box', config: { actionDim: DIM }, relevant: false, nan: false },
  { name: 'full', config: full, relevant: true, nan: false },
  { name: 'guard', config: { ...full, baseMask: undefined }, relevant: false, nan: true },
];

interface Row {
  name: string;
  ticks: number;
  meanUs: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
  eventsPerTick: number;
}

function run(s: Scenario): Row {
  const rng = new Rng(42);
  const layer = new SafetyLayer(parseSafetyConfig(s.config), {
    relevantSet: s.relevant
      ? (obs, low, high) => {
          for (let i = 3; i < DIM; i++) {
            low[i] = obs[i] - 0.5;
            high[i] = obs[i] + 0.5;
          }
        }
      : undefined,
  });
  // A pool of inputs prepared up front so the timed loop measures filter() alone.
  const pool = 256;
  const proposals = Array.from({ length: pool }, () =>
    Float32Array.from({ length: DIM }, () => rng.range(-1.2, 1.2)),
  );
  if (s.nan) for (const p of proposals) p[rng.int(DIM)] = NaN;
  const obs = Array.from({ length: pool }, () =>
    Float32Array.from({ length: OBS }, () => rng.range(-0.4, 0.4)),
  );
  const base = Array.from({ length: pool }, () =>
    Float32Array.from({ length: DIM }, () => rng.range(-0.5, 0.5)),
  );
  const ctx: SafetyContext = { obs: null, baseAction: null, nowMs: 0, obsAgeMs: 1 };
  let events = 0;
  const tick = (k: number): void => {
    const j = k % pool;
    ctx.obs = obs[j];
    ctx.baseAction = base[j];
    ctx.nowMs = k;
    events += layer.filter(proposals[j], ctx).events.length;
  };
  for (let k = 0; k < 20_000; k++) tick(k); // warm up the JIT
  events = 0;
  const samples = new Float64Array(ticks);
  for (let k = 0; k < ticks; k++) {
    const t0 = performance.now();
    tick(k);
    samples[k] = performance.now() - t0;
  }
  const p = percentiles(samples);
  const us = (ms: number) => Math.round(ms * 1e3 * 1000) / 1000;
  return {
    name: s.name,
    ticks,
    meanUs: us(p.mean),
    p50Us: us(p.p50),
    p90Us: us(p.p90),
    p99Us: us(p.p99),
    maxUs: us(p.max),
    eventsPerTick: events / ticks,
  };
}

const rows = scenarios.map(run);
if (json) {
  process.stdout.write(
    JSON.stringify({
      bench: 'safety-tick',
      actionDim: DIM,
      obsDim: OBS,
      node: process.version,
      note: 'per-call wall time including one performance.now() pair (~0.05-0.1 µs)',
      scenarios: rows,
    }) + '\n',
  );
} else {
  console.log(`SafetyLayer.filter() cost, ${DIM}-dim action, ${ticks} ticks per scenario (µs per call)`);
  console.log(
    ['scenario', 'mean', 'p50', 'p90', 'p99', 'max', 'events/tick'].map((h) => h.padStart(13)).join(''),
  );
  for (const r of rows) {
    console.log(
      [
        r.name,
        r.meanUs.toFixed(3),
        r.p50Us.toFixed(3),
        r.p90Us.toFixed(3),
        r.p99Us.toFixed(3),
        r.maxUs.toFixed(1),
        r.eventsPerTick.toFixed(2),
      ]
        .map((c) => c.padStart(13))
        .join(''),
    );
  }
}
