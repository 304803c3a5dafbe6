/**
 * Action masks. Every mask is a per-dimension interval computed from state alone (never from the
 * action), and the layer's projection clamps the action into those intervals one after the other,
 * lowest priority first (equivalently: into the top-down composition, see projectAction):
 *
 *   base-relative → relevant set → acceleration → velocity & braking → workspace → hard box
 *
 * A later clamp wins over an earlier one when their intervals do not meet. A chain of clamps into
 * fixed intervals is itself a clamp into one interval [L, H] (clamp∘clamp is a clamp), so the
 * projection is idempotent by construction, and the float32 rounding at the end is directed to stay
 * inside [L, H]. Functions here write into caller-provided arrays so the hot path allocates nothing.
 */
import type { ResolvedSafetyConfig } from './config.js';
import { nextFloat32 } from './f32.js';

/** Which masks changed the action on a tick (bit flags). */
export const MaskBit = {
  base: 1,
  relevant: 2,
  accel: 4,
  velocity: 8,
  workspace: 16,
  box: 32,
  /** A higher-priority constraint (workspace or box) pushed the action outside the rate limits. */
  rateConflict: 64,
} as const;

/** What the projection reads besides the action: all of it fixed for the tick. */
export interface MaskInputs {
  /** The last safe action, from which the rate limiter moves. */
  prev: Float64Array;
  /** prev minus the safe action before it: the per-tick velocity. */
  vel: Float64Array;
  /** Centre of the base-relative mask on this tick, or null when the mask does not apply. */
  base: ArrayLike<number> | null;
  /** State-dependent relevant set for this tick (per dim), or null. */
  relLow: Float64Array | null;
  relHigh: Float64Array | null;
  /** Workspace bounds in action units (±∞ on non-Cartesian dims), or null without a workspace. */
  wsLow: Float64Array | null;
  wsHigh: Float64Array | null;
}

/**
 * Workspace box → per-action-dim interval. absolute: target = center + scale·a; delta:
 * target = obs[obsIndex] + scale·a. Returns false (bounds untouched) when delta mode needs an
 * observation value that is missing or not finite.
 */
export function workspaceBounds(
  ws: NonNullable<ResolvedSafetyConfig['workspace']>,
  obs: ArrayLike<number> | null,
  low: Float64Array,
  high: Float64Array,
): boolean {
  const m = ws.dims.length;
  if (ws.mode === 'delta') {
    if (obs === null) return false;
    for (let k = 0; k < m; k++) {
      const j = ws.obsIndices[k];
      if (j >= obs.length || !Number.isFinite(obs[j])) return false;
    }
  }
  low.fill(-Infinity);
  high.fill(Infinity);
  for (let k = 0; k < m; k++) {
    const origin = ws.mode === 'delta' ? (obs as ArrayLike<number>)[ws.obsIndices[k]] : ws.center[k];
    const d = ws.dims[k];
    low[d] = (ws.low[k] - origin) / ws.scale[k];
    high[d] = (ws.high[k] - origin) / ws.scale[k];
  }
  return true;
}

/**
 * Largest per-tick velocity toward a limit d away such that braking at `accel` per tick² from the
 * next tick on stops before it: x + x²/(2·accel) ≤ d. The discrete stopping distance
 * Σ_k max(0, x − k·accel) never exceeds x²/(2·accel), so the bound holds tick by tick.
 * Written as 2d/(1 + √(1 + 2d/accel)) to avoid cancellation when accel·d is tiny.
 */
export function brakingVelocity(d: number, accel: number): number {
  if (!(d > 0)) return 0;
  return (2 * d) / (1 + Math.sqrt(1 + (2 * d) / accel));
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** Scratch for one projection: the composed interval of every priority level, per call. */
export interface ProjectionScratch {
  /** The final composed interval [L, H] per dim, after the last projection. */
  lo: Float64Array;
  hi: Float64Array;
  levelLo: Float64Array;
  levelHi: Float64Array;
}

export function makeProjectionScratch(dim: number): ProjectionScratch {
  return {
    lo: new Float64Array(dim),
    hi: new Float64Array(dim),
    levelLo: new Float64Array(LEVELS),
    levelHi: new Float64Array(LEVELS),
  };
}

/** Priority levels, highest first: box, workspace, velocity & braking, acceleration, relevant, base. */
const LEVELS = 6;

/** A float32 inside [lo, hi] next to c (c itself inside), or NaN when none exists. */
function roundInto(c: number, lo: number, hi: number): number {
  const r = Math.fround(c);
  if (r >= lo && r <= hi) return r;
  const d = nextFloat32(r, r > hi ? -1 : 1);
  return d >= lo && d <= hi ? d : NaN;
}

/**
 * Projects `action` into the masks' intervals, writing a float32 result to `out`. Returns the
 * MaskBit flags of masks whose interval excluded the proposal, plus rateConflict when the output
 * breaks a rate limit because the workspace or box overrode it. NaN entries are replaced by the
 * previous safe action (the guards normally catch them first). Pure: reads cfg and inputs, writes
 * only out and scratch.
 *
 * The levels are composed top-down: T0 = box, T_{k+1} = I_{k+1} clamped into T_k. Then
 * clamp(x, T5) equals clamping x through the masks from lowest to highest priority, and T5 ⊂ … ⊂ T0.
 * Rounding to float32 picks the deepest level that holds a float32 next to the result, so a
 * collapse of the lower levels to a point between two floats never costs a higher level.
 */
export function projectAction(
  action: ArrayLike<number>,
  inputs: MaskInputs,
  cfg: ResolvedSafetyConfig,
  scratch: ProjectionScratch,
  out: Float32Array,
): number {
  const n = cfg.dim;
  const { prev, vel, base, relLow, relHigh, wsLow, wsHigh } = inputs;
  const rate = cfg.rate;
  const maxAccel = rate ? rate.maxAccel : null;
  const brake = rate !== null && rate.brake && maxAccel !== null;
  const baseBound = base !== null && cfg.baseMask ? cfg.baseMask.bound : null;
  const TLo = scratch.levelLo;
  const THi = scratch.levelHi;
  let bits = 0;
  for (let i = 0; i < n; i++) {
    let x = action[i];
    if (x !== x) x = prev[i];
    const p = prev[i];

    // T0: the hard box (float32 ends, config.ts).
    let lo = cfg.boxLow[i];
    let hi = cfg.boxHigh[i];
    if (x < lo || x > hi) bits |= MaskBit.box;
    TLo[0] = lo;
    THi[0] = hi;

    // T1: workspace within the box. It is also the envelope the rate limiter brakes before.
    if (wsLow !== null && wsHigh !== null) {
      const l = wsLow[i];
      const h = wsHigh[i];
      if (x < l || x > h) bits |= MaskBit.workspace;
      const nlo = clamp(l, lo, hi);
      hi = clamp(h, lo, hi);
      lo = nlo;
    }
    TLo[1] = lo;
    THi[1] = hi;

    // T2: velocity, and braking before the envelope.
    let velLo = -Infinity;
    let velHi = Infinity;
    if (rate !== null) {
      velLo = p - rate.maxDelta[i];
      velHi = p + rate.maxDelta[i];
      if (brake) {
        const a = (maxAccel as Float64Array)[i];
        const up = p + brakingVelocity(THi[1] - p, a);
        const down = p - brakingVelocity(p - TLo[1], a);
        if (up < velHi) velHi = up;
        if (down > velLo) velLo = down;
      }
      if (x < velLo || x > velHi) bits |= MaskBit.velocity;
      const nlo = clamp(velLo, lo, hi);
      hi = clamp(velHi, lo, hi);
      lo = nlo;
    }
    TLo[2] = lo;
    THi[2] = hi;

    // T3: acceleration.
    let accLo = -Infinity;
    let accHi = Infinity;
    if (maxAccel !== null) {
      accLo = p + vel[i] - maxAccel[i];
      accHi = p + vel[i] + maxAccel[i];
      if (x < accLo || x > accHi) bits |= MaskBit.accel;
      const nlo = clamp(accLo, lo, hi);
      hi = clamp(accHi, lo, hi);
      lo = nlo;
    }
    TLo[3] = lo;
    THi[3] = hi;

    // T4: the state-dependent relevant set.
    if (relLow !== null && relHigh !== null) {
      const l = relLow[i];
      const h = relHigh[i];
      if (x < l || x > h) bits |= MaskBit.relevant;
      const nlo = clamp(l, lo, hi);
      hi = clamp(h, lo, hi);
      lo = nlo;
    }
    TLo[4] = lo;
    THi[4] = hi;

    // T5: the base-relative mask.
    if (baseBound !== null) {
      const l = (base as ArrayLike<number>)[i] - baseBound[i];
      const h = (base as ArrayLike<number>)[i] + baseBound[i];
      if (x < l || x > h) bits |= MaskBit.base;
      const nlo = clamp(l, lo, hi);
      hi = clamp(h, lo, hi);
      lo = nlo;
    }
    TLo[5] = lo;
    THi[5] = hi;

    const c = clamp(x, lo, hi);
    let r = NaN;
    for (let k = LEVELS - 1; k >= 0 && r !== r; k--) r = roundInto(c, TLo[k], THi[k]);
    out[i] = r;
    if (r < velLo || r > velHi || r < accLo || r > accHi) bits |= MaskBit.rateConflict;
    scratch.lo[i] = lo;
    scratch.hi[i] = hi;
  }
  return bits;
}
