/**
 * The safety configuration: a JSON file validated with zod at load, so a typo stops the run before
 * anything moves. Errors name the field path and the fix.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { configProblems } from '../util/config-check.js';
import { ResrtError } from '../util/errors.js';
import { f32Down, f32Up } from './f32.js';

const finite = z.number().refine(Number.isFinite, { message: 'must be a finite number' });
const positive = finite.refine((v) => v > 0, { message: 'must be > 0' });
/** A scalar applies to every dimension; an array gives one value per dimension. */
const perDim = z.union([finite, z.array(finite).min(1)]);
const perDimPositive = z.union([positive, z.array(positive).min(1)]);
const index = z.number().int().min(0);

const workspaceSchema = z.strictObject({
  /** Action dimensions that hold a Cartesian target (e.g. [0, 1, 2] for x, y, z). */
  dims: z.array(index).min(1),
  /** absolute: target = center + scale·a; delta: target = obs[obsIndices] + scale·a. */
  mode: z.enum(['absolute', 'delta']),
  /** Workspace units (e.g. metres) per unit of normalized action, one per workspace dim. */
  scale: perDimPositive,
  center: perDim.optional(),
  obsIndices: z.array(index).min(1).optional(),
  low: perDim,
  high: perDim,
});

const scheduleSchema = z.strictObject({
  kind: z.enum(['constant', 'linear', 'exponential']).default('linear'),
  /** Probability the mask applies once the schedule has run its course. */
  floor: finite.refine((v) => v >= 0 && v <= 1, { message: 'must be in [0, 1]' }).default(0),
  /** Episodes or steps (see unit) over which the probability decays from 1 to floor. */
  horizon: positive.default(100),
  unit: z.enum(['episode', 'step']).default('episode'),
});

const baseMaskSchema = z.strictObject({
  /** Half-width b of [a_base − b, a_base + b], normalized units. */
  bound: perDimPositive,
  schedule: scheduleSchema.default({ kind: 'constant', floor: 1, horizon: 1, unit: 'episode' }),
  /** Draw whether the mask applies once per episode (coherent motion) or every tick. */
  resample: z.enum(['episode', 'step']).default('episode'),
  seed: z.number().int().default(0),
});

const rateSchema = z.strictObject({
  /** Max |a_t − a_{t−1}| per tick, normalized units. */
  maxDelta: perDimPositive,
  /** Max |Δa_t − Δa_{t−1}| per tick²; enables braking before limits. */
  maxAccel: perDimPositive.optional(),
  brakeBeforeLimits: z.boolean().default(true),
});

const safeActionSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('hold') }),
  z.strictObject({ kind: z.literal('zero') }),
  z.strictObject({ kind: z.literal('pose'), name: z.string().min(1) }),
]);

const safetySchema = z.strictObject({
  version: z.literal(1).default(1),
  actionDim: z.number().int().min(1).max(4096),
  box: z.strictObject({ low: perDim, high: perDim }).default({ low: -1, high: 1 }),
  workspace: workspaceSchema.optional(),
  rate: rateSchema.optional(),
  baseMask: baseMaskSchema.optional(),
  safeAction: safeActionSchema.default({ kind: 'hold' }),
  poses: z.record(z.string(), z.array(finite)).default({}),
  guards: z
    .strictObject({
      /** When set, observations of another length are a shape error. */
      obsDim: z.number().int().min(1).optional(),
      /** Reject observations holding NaN/Inf anywhere (not only at the indices the masks read). */
      checkObsFinite: z.boolean().default(true),
    })
    .default({ checkObsFinite: true }),
  watchdog: z
    .strictObject({
      obsDeadlineMs: positive.default(100),
      /** Consecutive missed ticks before a latched fault (libfranka stops after 20 lost packets). */
      maxConsecutiveMisses: z.number().int().min(1).default(20),
    })
    .default({ obsDeadlineMs: 100, maxConsecutiveMisses: 20 }),
  estop: z
    .strictObject({
      /** A reset's heartbeat must be at most this old. */
      resetWindowMs: positive.default(2000),
      /** ...and at most this far in the future (clock skew between the sender and us). */
      maxClockSkewMs: finite.refine((v) => v >= 0, { message: 'must be >= 0' }).default(50),
    })
    .default({ resetWindowMs: 2000, maxClockSkewMs: 50 }),
  teleop: z
    .strictObject({
      /** Teleoperation is active while its command norm exceeds this (SpaceMouse dead zone). */
      threshold: finite.refine((v) => v >= 0, { message: 'must be >= 0' }).default(0.05),
      norm: z.enum(['linf', 'l2']).default('linf'),
      /** A teleop command older than this is dropped (the device went quiet). */
      timeoutMs: positive.default(200),
    })
    .default({ threshold: 0.05, norm: 'linf', timeoutMs: 200 }),
});

export type SafetyConfigInput = z.input<typeof safetySchema>;
export type SafetyConfig = z.output<typeof safetySchema>;
export type MaskSchedule = z.output<typeof scheduleSchema>;

/** Per-dimension numbers expanded and checked against each other (the shape the hot path reads). */
export interface ResolvedSafetyConfig {
  readonly source: SafetyConfig;
  readonly dim: number;
  readonly boxLow: Float64Array;
  readonly boxHigh: Float64Array;
  readonly workspace: null | {
    readonly mode: 'absolute' | 'delta';
    /** Per action dim: index into the workspace arrays, or −1 when the dim is not Cartesian. */
    readonly slot: Int32Array;
    readonly dims: Int32Array;
    readonly scale: Float64Array;
    readonly center: Float64Array;
    readonly obsIndices: Int32Array;
    readonly low: Float64Array;
    readonly high: Float64Array;
  };
  readonly rate: null | {
    readonly maxDelta: Float64Array;
    readonly maxAccel: Float64Array | null;
    readonly brake: boolean;
  };
  readonly baseMask: null | {
    readonly bound: Float64Array;
    readonly schedule: MaskSchedule;
    readonly resample: 'episode' | 'step';
    readonly seed: number;
  };
  /** The pose the safe action names, clamped into the box; null for hold/zero. */
  readonly safePose: Float64Array | null;
  /** Highest observation index the masks read, or −1. */
  readonly maxObsIndex: number;
}

function issueHint(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return `give ${issue.expected === 'array' ? 'an array' : `a ${issue.expected}`} here`;
    case 'invalid_value':
      return `use one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_union':
      return 'give a number (applies to every dimension) or an array of numbers, one per dimension';
    case 'too_small':
      return `use a value >= ${String(issue.minimum)}`;
    case 'too_big':
      return `use a value <= ${String(issue.maximum)}`;
    default:
      return 'see docs/safety.md for the field';
  }
}

function fail(field: string, problem: string, fix: string): never {
  throw new ResrtError(`safety config: ${field}: ${problem}`, fix);
}

function expand(value: number | number[], n: number, field: string): Float64Array {
  if (typeof value === 'number') return new Float64Array(n).fill(value);
  if (value.length !== n) {
    fail(field, `has ${value.length} entries, expected ${n}`, `give ${n} values or a single number for all`);
  }
  return Float64Array.from(value);
}

/**
 * Validates a parsed JSON object and returns the typed config. Throws ResrtError naming every bad
 * field (an unknown key beside the known one it most likely meant) and how to fix each.
 */
export function parseSafetyConfig(obj: unknown, source = 'safety config'): SafetyConfig {
  const parsed = safetySchema.safeParse(obj, { reportInput: true });
  if (!parsed.success) {
    const problems = configProblems(safetySchema, parsed.error.issues, (issue) => ({
      problem: issue.input === undefined ? 'is missing' : issue.message,
      fix: issueHint(issue),
    }));
    if (problems.length === 1) {
      const [p] = problems;
      throw new ResrtError(`${source}: ${p.path}: ${p.problem}`, p.fix);
    }
    throw new ResrtError(
      `${source} has ${problems.length} problems:\n${problems.map((p) => `  - ${p.path}: ${p.problem}; fix: ${p.fix}`).join('\n')}`,
      'correct each field listed above (docs/safety.md describes them all)',
    );
  }
  resolveSafetyConfig(parsed.data);
  return parsed.data;
}

/** Reads and validates a safety configuration JSON file. */
export function loadSafetyConfig(path: string): SafetyConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ResrtError(`safety config: cannot read ${path}: ${(err as Error).message}`, 'check the path');
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new ResrtError(
      `safety config: ${path} is not valid JSON: ${(err as Error).message}`,
      'fix the JSON syntax',
    );
  }
  return parseSafetyConfig(obj, `safety config ${path}`);
}

/**
 * A permissive starting point: the normalized box, a watchdog, hold-last-command as the safe action.
 * No rate limits, workspace or base mask: those depend on the robot and are opt-in.
 */
export function defaultSafetyConfig(actionDim: number): SafetyConfig {
  if (!Number.isInteger(actionDim) || actionDim < 1) {
    throw new ResrtError(
      `defaultSafetyConfig: actionDim ${actionDim} is not a positive integer`,
      'pass the action dimension of the robot or task',
    );
  }
  return parseSafetyConfig({ actionDim });
}

/** Cross-field checks and per-dimension expansion. Throws ResrtError on inconsistencies. */
export function resolveSafetyConfig(cfg: SafetyConfig): ResolvedSafetyConfig {
  const n = cfg.actionDim;
  const boxLow = expand(cfg.box.low, n, 'box.low');
  const boxHigh = expand(cfg.box.high, n, 'box.high');
  for (let i = 0; i < n; i++) {
    // Float32 outputs must land inside the configured box, so round the box inwards once here.
    if (!(boxLow[i] <= boxHigh[i])) {
      fail(
        `box.low[${i}]`,
        `${boxLow[i]} is above box.high[${i}] = ${boxHigh[i]}`,
        'make low <= high in every dimension',
      );
    }
    const lo = f32Up(boxLow[i]);
    const hi = f32Down(boxHigh[i]);
    // A box narrower than one float32 step (a locked dimension at a non-float32 value) snaps to
    // the nearest float32 instead.
    boxLow[i] = lo <= hi ? lo : Math.fround(boxLow[i]);
    boxHigh[i] = lo <= hi ? hi : Math.fround(boxLow[i]);
  }

  let workspace: ResolvedSafetyConfig['workspace'] = null;
  let maxObsIndex = -1;
  if (cfg.workspace) {
    const w = cfg.workspace;
    const m = w.dims.length;
    const slot = new Int32Array(n).fill(-1);
    w.dims.forEach((d, k) => {
      if (d >= n)
        fail(
          `workspace.dims[${k}]`,
          `action index ${d} is out of range for actionDim ${n}`,
          `use indices in [0, ${n - 1}]`,
        );
      if (slot[d] !== -1)
        fail(`workspace.dims[${k}]`, `action index ${d} appears twice`, 'list each Cartesian dimension once');
      slot[d] = k;
    });
    const low = expand(w.low, m, 'workspace.low');
    const high = expand(w.high, m, 'workspace.high');
    for (let k = 0; k < m; k++) {
      if (!(low[k] <= high[k])) {
        fail(
          `workspace.low[${k}]`,
          `${low[k]} is above workspace.high[${k}] = ${high[k]}`,
          'make low <= high on every axis',
        );
      }
    }
    let obsIndices = new Int32Array(0);
    if (w.mode === 'delta') {
      if (!w.obsIndices) {
        fail(
          'workspace.obsIndices',
          'is required in delta mode',
          'give the observation indices that hold the current Cartesian position, one per workspace dim',
        );
      }
      if (w.obsIndices.length !== m) {
        fail(
          'workspace.obsIndices',
          `has ${w.obsIndices.length} entries, expected ${m}`,
          'give one observation index per workspace dim',
        );
      }
      obsIndices = Int32Array.from(w.obsIndices);
      maxObsIndex = Math.max(...w.obsIndices);
    } else if (w.obsIndices) {
      fail('workspace.obsIndices', 'is only used in delta mode', 'remove it, or set mode to "delta"');
    }
    workspace = {
      mode: w.mode,
      slot,
      dims: Int32Array.from(w.dims),
      scale: expand(w.scale, m, 'workspace.scale'),
      center: w.center === undefined ? new Float64Array(m) : expand(w.center, m, 'workspace.center'),
      obsIndices,
      low,
      high,
    };
    if (w.mode === 'delta' && w.center !== undefined) {
      fail('workspace.center', 'is only used in absolute mode', 'remove it, or set mode to "absolute"');
    }
  }
  if (cfg.guards.obsDim !== undefined && maxObsIndex >= cfg.guards.obsDim) {
    fail(
      'workspace.obsIndices',
      `index ${maxObsIndex} is outside guards.obsDim = ${cfg.guards.obsDim}`,
      'use indices below obsDim',
    );
  }

  let rate: ResolvedSafetyConfig['rate'] = null;
  if (cfg.rate) {
    rate = {
      maxDelta: expand(cfg.rate.maxDelta, n, 'rate.maxDelta'),
      maxAccel: cfg.rate.maxAccel === undefined ? null : expand(cfg.rate.maxAccel, n, 'rate.maxAccel'),
      brake: cfg.rate.brakeBeforeLimits && cfg.rate.maxAccel !== undefined,
    };
  }

  let baseMask: ResolvedSafetyConfig['baseMask'] = null;
  if (cfg.baseMask) {
    const s = cfg.baseMask.schedule;
    if (s.kind === 'exponential' && s.floor <= 0) {
      fail(
        'baseMask.schedule.floor',
        'must be > 0 for an exponential decay (it never reaches 0)',
        'use a small positive floor such as 0.05, or kind "linear"',
      );
    }
    baseMask = {
      bound: expand(cfg.baseMask.bound, n, 'baseMask.bound'),
      schedule: s,
      resample: cfg.baseMask.resample,
      seed: cfg.baseMask.seed,
    };
  }

  let safePose: Float64Array | null = null;
  for (const [name, pose] of Object.entries(cfg.poses)) {
    if (pose.length !== n)
      fail(`poses.${name}`, `has ${pose.length} entries, expected ${n}`, `give ${n} normalized values`);
  }
  if (cfg.safeAction.kind === 'pose') {
    const pose = cfg.poses[cfg.safeAction.name];
    if (!pose) {
      const known = Object.keys(cfg.poses);
      fail(
        'safeAction.name',
        `names pose "${cfg.safeAction.name}", which is not in poses`,
        known.length ? `use one of ${known.join(', ')}` : 'add it under "poses"',
      );
    }
    safePose = Float64Array.from(pose, (v, i) => Math.min(boxHigh[i], Math.max(boxLow[i], v)));
  }

  return { source: cfg, dim: n, boxLow, boxHigh, workspace, rate, baseMask, safePose, maxObsIndex };
}
