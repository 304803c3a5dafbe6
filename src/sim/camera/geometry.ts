/**
 * Exact ray intersections with MuJoCo's primitive geom shapes, in the geom's own frame (MuJoCo's
 * conventions: capsules and cylinders along local z with size = [radius, half-length]; boxes and
 * ellipsoids with half-sizes). Planes, most of a tabletop image, are intersected inline by the
 * renderer. Directions need not be unit length: t is in units of the direction, so a
 * camera ray whose forward component is 1 returns z-depth directly.
 *
 * Each function returns the nearest t > tMin, or Infinity, and writes the outward local normal of
 * that hit into `n` (unnormalized for ellipsoids; the caller normalizes after rotating it).
 */

export const GeomType = {
  plane: 0,
  hfield: 1,
  sphere: 2,
  capsule: 3,
  ellipsoid: 4,
  cylinder: 5,
  box: 6,
  mesh: 7,
  sdf: 8,
} as const;

export const geomTypeName = (t: number): string =>
  Object.entries(GeomType).find(([, v]) => v === t)?.[0] ?? `type ${t}`;

/** Smallest root of a t^2 + 2 b t + c = 0 above tMin, or Infinity. */
function nearestRoot(a: number, b: number, c: number, tMin: number): number {
  const disc = b * b - a * c;
  if (disc < 0 || a === 0) return Infinity;
  const s = Math.sqrt(disc);
  const t0 = (-b - s) / a;
  if (t0 > tMin) return t0;
  const t1 = (-b + s) / a;
  return t1 > tMin ? t1 : Infinity;
}

export function hitSphere(
  ox: number,
  oy: number,
  oz: number,
  dx: number,
  dy: number,
  dz: number,
  r: number,
  tMin: number,
  n: Float64Array,
): number {
  const t = nearestRoot(
    dx * dx + dy * dy + dz * dz,
    ox * dx + oy * dy + oz * dz,
    ox * ox + oy * oy + oz * oz - r * r,
    tMin,
  );
  if (t === Infinity) return t;
  n[0] = ox + t * dx;
  n[1] = oy + t * dy;
  n[2] = oz + t * dz;
  return t;
}

export function hitEllipsoid(
  ox: number,
  oy: number,
  oz: number,
  dx: number,
  dy: number,
  dz: number,
  a: number,
  b: number,
  c: number,
  tMin: number,
  n: Float64Array,
): number {
  // Scaled to the unit sphere, where t is unchanged.
  const t = hitSphere(ox / a, oy / b, oz / c, dx / a, dy / b, dz / c, 1, tMin, n);
  if (t === Infinity) return t;
  n[0] /= a;
  n[1] /= b;
  n[2] /= c;
  return t;
}

/**
 * The curved side of a cylinder of radius r along z, limited to |z| <= h. With `farToo`, a near
 * crossing outside the limits falls through to the far one (a finite cylinder's inner wall); a
 * capsule takes only the near one (beyond the limits its end spheres are nearer).
 */
function hitSide(
  ox: number,
  oy: number,
  oz: number,
  dx: number,
  dy: number,
  dz: number,
  r: number,
  h: number,
  tMin: number,
  farToo: boolean,
  n: Float64Array,
): number {
  const a = dx * dx + dy * dy;
  if (a === 0) return Infinity;
  const b = ox * dx + oy * dy;
  const disc = b * b - a * (ox * ox + oy * oy - r * r);
  if (disc < 0) return Infinity;
  const s = Math.sqrt(disc);
  let t = (-b - s) / a;
  if (farToo && !(t > tMin && Math.abs(oz + t * dz) <= h)) t = (-b + s) / a;
  if (!(t > tMin && Math.abs(oz + t * dz) <= h)) return Infinity;
  n[0] = ox + t * dx;
  n[1] = oy + t * dy;
  n[2] = 0;
  return t;
}

/** Finite cylinder along z: the side (|z| <= h) and both caps. */
export function hitCylinder(
  ox: number,
  oy: number,
  oz: number,
  dx: number,
  dy: number,
  dz: number,
  r: number,
  h: number,
  tMin: number,
  n: Float64Array,
): number {
  let best = hitSide(ox, oy, oz, dx, dy, dz, r, h, tMin, true, n);
  if (dz !== 0) {
    // The cap facing the ray is the only one it can enter through.
    const side = dz < 0 ? 1 : -1;
    const t = (side * h - oz) / dz;
    if (t > tMin && t < best) {
      const x = ox + t * dx;
      const y = oy + t * dy;
      if (x * x + y * y <= r * r) {
        best = t;
        n[0] = 0;
        n[1] = 0;
        n[2] = side;
      }
    }
  }
  return best;
}

/** Capsule along z: a cylinder side of half-length h capped by two spheres of radius r. */
export function hitCapsule(
  ox: number,
  oy: number,
  oz: number,
  dx: number,
  dy: number,
  dz: number,
  r: number,
  h: number,
  tMin: number,
  n: Float64Array,
): number {
  const side = hitSide(ox, oy, oz, dx, dy, dz, r, h, tMin, false, n);
  if (side !== Infinity) return side;
  let best = Infinity;
  let nx = 0;
  let ny = 0;
  let nz = 0;
  for (let end = 1; end >= -1; end -= 2) {
    const qz = oz - end * h;
    const t = nearestRoot(
      dx * dx + dy * dy + dz * dz,
      ox * dx + oy * dy + qz * dz,
      ox * ox + oy * oy + qz * qz - r * r,
      tMin,
    );
    if (t < best) {
      best = t;
      nx = ox + t * dx;
      ny = oy + t * dy;
      nz = qz + t * dz;
    }
  }
  if (best !== Infinity) {
    n[0] = nx;
    n[1] = ny;
    n[2] = nz;
  }
  return best;
}

/** One slab of a box: narrows [near, far]; returns false when the ray misses. */
function slab(o: number, d: number, half: number, k: number, st: Float64Array): boolean {
  if (d === 0) return Math.abs(o) <= half;
  let t0 = (-half - o) / d;
  let t1 = (half - o) / d;
  let enter = -1;
  if (t0 > t1) {
    const tmp = t0;
    t0 = t1;
    t1 = tmp;
    enter = 1;
  }
  if (t0 > st[0]) {
    st[0] = t0;
    st[2] = k;
    st[3] = enter;
  }
  if (t1 < st[1]) st[1] = t1;
  return st[0] <= st[1];
}

const slabState = new Float64Array(4);

/** Axis-aligned box with half-sizes (sx, sy, sz), by slabs. */
export function hitBox(
  ox: number,
  oy: number,
  oz: number,
  dx: number,
  dy: number,
  dz: number,
  sx: number,
  sy: number,
  sz: number,
  tMin: number,
  n: Float64Array,
): number {
  const st = slabState;
  st[0] = -Infinity;
  st[1] = Infinity;
  st[2] = -1;
  st[3] = 0;
  if (!slab(ox, dx, sx, 0, st) || !slab(oy, dy, sy, 1, st) || !slab(oz, dz, sz, 2, st)) return Infinity;
  const tNear = st[0];
  // Rays starting inside the box (tNear <= tMin) see nothing of it, as with one-sided faces.
  if (!(tNear > tMin) || st[2] < 0) return Infinity;
  const axis = st[2];
  n[0] = axis === 0 ? st[3] : 0;
  n[1] = axis === 1 ? st[3] : 0;
  n[2] = axis === 2 ? st[3] : 0;
  return tNear;
}

/** Möller–Trumbore; the normal is the face's (v1 - v0) x (v2 - v0), flipped to face the ray. */
export function hitTriangle(
  ox: number,
  oy: number,
  oz: number,
  dx: number,
  dy: number,
  dz: number,
  v: Float32Array,
  i0: number,
  i1: number,
  i2: number,
  tMin: number,
  n: Float64Array,
): number {
  const ax = v[3 * i0];
  const ay = v[3 * i0 + 1];
  const az = v[3 * i0 + 2];
  const e1x = v[3 * i1] - ax;
  const e1y = v[3 * i1 + 1] - ay;
  const e1z = v[3 * i1 + 2] - az;
  const e2x = v[3 * i2] - ax;
  const e2y = v[3 * i2 + 1] - ay;
  const e2z = v[3 * i2 + 2] - az;
  const px = dy * e2z - dz * e2y;
  const py = dz * e2x - dx * e2z;
  const pz = dx * e2y - dy * e2x;
  const det = e1x * px + e1y * py + e1z * pz;
  if (det === 0) return Infinity;
  const inv = 1 / det;
  const tx = ox - ax;
  const ty = oy - ay;
  const tz = oz - az;
  const u = (tx * px + ty * py + tz * pz) * inv;
  if (u < 0 || u > 1) return Infinity;
  const qx = ty * e1z - tz * e1y;
  const qy = tz * e1x - tx * e1z;
  const qz = tx * e1y - ty * e1x;
  const w = (dx * qx + dy * qy + dz * qz) * inv;
  if (w < 0 || u + w > 1) return Infinity;
  const t = (e2x * qx + e2y * qy + e2z * qz) * inv;
  if (!(t > tMin)) return Infinity;
  let nx = e1y * e2z - e1z * e2y;
  let ny = e1z * e2x - e1x * e2z;
  let nz = e1x * e2y - e1y * e2x;
  if (nx * dx + ny * dy + nz * dz > 0) {
    nx = -nx;
    ny = -ny;
    nz = -nz;
  }
  n[0] = nx;
  n[1] = ny;
  n[2] = nz;
  return t;
}
