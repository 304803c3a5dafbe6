/**
 * Float32 rounding that respects bounds. Outputs are Float32Array; rounding a float64 value that
 * sits exactly on a bound can step one float32 ulp outside it, so every rounding here is directed.
 */

const f32Buf = new Float32Array(1);
const u32Buf = new Uint32Array(f32Buf.buffer);
const MIN_SUBNORMAL = 1.401298464324817e-45;

/** The adjacent float32 of a finite float32 value, towards +∞ (dir = 1) or −∞ (dir = −1). */
export function nextFloat32(v: number, dir: 1 | -1): number {
  if (v === 0) return dir > 0 ? MIN_SUBNORMAL : -MIN_SUBNORMAL;
  f32Buf[0] = v;
  // For IEEE floats the bit pattern, read as an integer, grows with the magnitude.
  u32Buf[0] = v > 0 === dir > 0 ? u32Buf[0] + 1 : u32Buf[0] - 1;
  return f32Buf[0];
}

/** Largest float32 ≤ v. */
export function f32Down(v: number): number {
  const r = Math.fround(v);
  return r <= v ? r : nextFloat32(r, -1);
}

/** Smallest float32 ≥ v. */
export function f32Up(v: number): number {
  const r = Math.fround(v);
  return r >= v ? r : nextFloat32(r, 1);
}

/**
 * Rounds c (already inside [lo, hi]) to a float32 that is still inside [lo, hi]; when no float32
 * lies in the interval (a degenerate point between two floats), the nearest float32.
 */
export function f32Within(c: number, lo: number, hi: number): number {
  const r = Math.fround(c);
  if (r > hi) {
    const d = nextFloat32(r, -1);
    return d >= lo ? d : r;
  }
  if (r < lo) {
    const u = nextFloat32(r, 1);
    return u <= hi ? u : r;
  }
  return r;
}
