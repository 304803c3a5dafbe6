/**
 * Action masks. Every mask is a per-dimension interval computed from state alone (never from the
 * action), and the layer's projection clamps the action into those intervals one after the other,
 * lowest priority first:
 *
 *   base-relative → relevant set → acceleration → velocity & braking → workspace → hard box
 *
 * A later clamp wins over an earlier one when their intervals do not meet. A chain of clamps into
 * fixed intervals is itself a clamp into one interval [L, H] (clamp∘clamp is a clamp), so the
 * projection is idempotent by construction, and the float32 rounding at the end is directed to stay
 * inside [L, H]. Functions here write into caller-provided arrays so the hot path allocates nothing.
 */
import type { ResolvedSafetyConfig } from './config.js';
import { f32Within } from './f32.js';

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

/** Scratch for one projection: the composed interval per dim, to check and round against. */
export interface ProjectionScratch {
  lo: Float64Array;
  hi: Float64Array;
}

export function makeProjectionScratch(dim: number): ProjectionScratch {
  return { lo: new Float64Array(dim), hi: new Float64Array(dim) };
}

/**
 * Projects `action` into the masks' intervals, writing a float32 result to `out`. Returns the
 * MaskBit flags of masks that changed the action. NaN entries are replaced by the previous safe
 * action before projecting (the guards normally catch them first). Pure: reads cfg and inputs,
 * writes only out and scratch.
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
  const baseBound = cfg.baseMask ? cfg.baseMask.bound : null;
  let bits = 0;
  for (let i = 0; i < n; i++) {
    let c = action[i];
    if (c !== c) c = prev[i];
    let L = -Infinity;
    let H = Infinity;
    let l: number;
    let h: number;
    let nc: number;

    if (base !== null && baseBound !== null) {
      l = base[i] - baseBound[i];
      h = base[i] + baseBound[i];
      nc = clamp(c, l, h);
      if (nc !== c) bits |= MaskBit.base;
      c = nc;
      L = clamp(L, l, h);
      H = clamp(H, l, h);
    }

    if (relLow !== null && relHigh !== null) {
      l = relLow[i];
      h = relHigh[i];
      nc = clamp(c, l, h);
      if (nc !== c) bits |= MaskBit.relevant;
      c = nc;
      L = clamp(L, l, h);
      H = clamp(H, l, h);
    }

    const p = prev[i];
    let accLo = -Infinity;
    let accHi = Infinity;
    let velLo = -Infinity;
    let velHi = Infinity;
    if (rate !== null) {
      if (maxAccel !== null) {
        accLo = p + vel[i] - maxAccel[i];
        accHi = p + vel[i] + maxAccel[i];
        nc = clamp(c, accLo, accHi);
        if (nc !== c) bits |= MaskBit.accel;
        c = nc;
        L = clamp(L, accLo, accHi);
        H = clamp(H, accLo, accHi);
      }
      velLo = p - rate.maxDelta[i];
      velHi = p + rate.maxDelta[i];
      if (rate.brake && maxAccel !== null) {
        // Brake before the envelope the higher-priority masks enforce: workspace within the box.
        const bl = cfg.boxLow[i];
        const bh = cfg.boxHigh[i];
        const envLo = wsLow !== null ? clamp(wsLow[i], bl, bh) : bl;
        const envHi = wsHigh !== null ? clamp(wsHigh[i], bl, bh) : bh;
        const up = p + brakingVelocity(envHi - p, maxAccel[i]);
        const down = p - brakingVelocity(p - envLo, maxAccel[i]);
        if (up < velHi) velHi = up;
        if (down > velLo) velLo = down;
      }
      nc = clamp(c, velLo, velHi);
      if (nc !== c) bits |= MaskBit.velocity;
      c = nc;
      L = clamp(L, velLo, velHi);
      H = clamp(H, velLo, velHi);
    }

    if (wsLow !== null && wsHigh !== null) {
      l = wsLow[i];
      h = wsHigh[i];
      nc = clamp(c, l, h);
      if (nc !== c) bits |= MaskBit.workspace;
      c = nc;
      L = clamp(L, l, h);
      H = clamp(H, l, h);
    }

    l = cfg.boxLow[i];
    h = cfg.boxHigh[i];
    nc = clamp(c, l, h);
    if (nc !== c) bits |= MaskBit.box;
    c = nc;
    L = clamp(L, l, h);
    H = clamp(H, l, h);

    const r = f32Within(c, L, H);
    if (r < velLo || r > velHi || r < accLo || r > accHi) bits |= MaskBit.rateConflict;
    out[i] = r;
    scratch.lo[i] = L;
    scratch.hi[i] = H;
  }
  return bits;
}
