/**
 * A float64 reference for the training engine's ops, written independently in plain TypeScript
 * (loops over indices, no autodiff): the tests compare the engine's onnxruntime values against
 * these forward passes, and its gradients against central differences of them.
 */

export class T {
  constructor(
    readonly shape: number[],
    readonly data: Float64Array,
  ) {
    if (data.length !== shape.reduce((a, b) => a * b, 1))
      throw new Error(`T: ${data.length} values for [${shape}]`);
  }

  static of(shape: number[], values: ArrayLike<number>): T {
    return new T([...shape], Float64Array.from(values));
  }

  get size(): number {
    return this.data.length;
  }
}

function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let k = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = k;
    k *= shape[i];
  }
  return s;
}

/** Calls f(multiIndex, flatIndex) for every element of `shape` in row-major order. */
function forEachIndex(shape: readonly number[], f: (idx: number[], flat: number) => void): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const idx = new Array<number>(shape.length).fill(0);
  for (let flat = 0; flat < n; flat++) {
    f(idx, flat);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

/** Flat index into `t` for an index of the (broadcast) output shape `out`. */
function broadcastIndex(t: T, out: readonly number[], idx: readonly number[]): number {
  const st = strides(t.shape);
  const lead = out.length - t.shape.length;
  let k = 0;
  for (let d = 0; d < t.shape.length; d++) if (t.shape[d] !== 1) k += idx[d + lead] * st[d];
  return k;
}

function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  return Array.from({ length: n }, (_, i) => {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`no broadcast [${a}] [${b}]`);
    return Math.max(x, y);
  });
}

export function binary(a: T, b: T, f: (x: number, y: number) => number): T {
  const shape = broadcastShape(a.shape, b.shape);
  const out = new Float64Array(shape.reduce((p, q) => p * q, 1));
  forEachIndex(shape, (idx, flat) => {
    out[flat] = f(a.data[broadcastIndex(a, shape, idx)], b.data[broadcastIndex(b, shape, idx)]);
  });
  return new T(shape, out);
}

export const add = (a: T, b: T): T => binary(a, b, (x, y) => x + y);
export const sub = (a: T, b: T): T => binary(a, b, (x, y) => x - y);
export const mul = (a: T, b: T): T => binary(a, b, (x, y) => x * y);
export const div = (a: T, b: T): T => binary(a, b, (x, y) => x / y);
export const minimum = (a: T, b: T): T => binary(a, b, Math.min);
export const maximum = (a: T, b: T): T => binary(a, b, Math.max);

export function unary(a: T, f: (x: number) => number): T {
  return new T([...a.shape], a.data.map(f));
}

export const scalar = (x: number): T => T.of([], [x]);
export const relu = (a: T): T => unary(a, (x) => Math.max(0, x));
export const tanh = (a: T): T => unary(a, Math.tanh);
export const clip = (a: T, lo: number, hi: number): T => unary(a, (x) => Math.min(hi, Math.max(lo, x)));

export function reduce(
  a: T,
  axes: number[] | undefined,
  keepdims: boolean,
  kind: 'sum' | 'mean' | 'max' | 'min',
): T {
  const ax = (axes ?? a.shape.map((_, i) => i)).map((x) => (x < 0 ? x + a.shape.length : x));
  const kept = a.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const out = new Float64Array(kept.reduce((p, q) => p * q, 1)).fill(
    kind === 'max' ? -Infinity : kind === 'min' ? Infinity : 0,
  );
  const ks = strides(kept);
  forEachIndex(a.shape, (idx, flat) => {
    let k = 0;
    idx.forEach((v, d) => (k += ax.includes(d) ? 0 : v * ks[d]));
    const x = a.data[flat];
    if (kind === 'max') out[k] = Math.max(out[k], x);
    else if (kind === 'min') out[k] = Math.min(out[k], x);
    else out[k] += x;
  });
  if (kind === 'mean') {
    const n = ax.reduce((p, d) => p * a.shape[d], 1);
    for (let i = 0; i < out.length; i++) out[i] /= n;
  }
  return new T(keepdims ? kept : a.shape.filter((_, i) => !ax.includes(i)), out);
}

export function reshape(a: T, shape: number[]): T {
  return new T(shape, a.data);
}

export function transpose(a: T, perm: number[]): T {
  const shape = perm.map((p) => a.shape[p]);
  const st = strides(a.shape);
  const out = new Float64Array(a.size);
  forEachIndex(shape, (idx, flat) => {
    let k = 0;
    idx.forEach((v, d) => (k += v * st[perm[d]]));
    out[flat] = a.data[k];
  });
  return new T(shape, out);
}

export function expand(a: T, shape: number[]): T {
  const out = new Float64Array(shape.reduce((p, q) => p * q, 1));
  forEachIndex(shape, (idx, flat) => (out[flat] = a.data[broadcastIndex(a, shape, idx)]));
  return new T(shape, out);
}

export function concat(ts: T[], axis: number): T {
  const shape = [...ts[0].shape];
  shape[axis] = ts.reduce((s, t) => s + t.shape[axis], 0);
  const out = new Float64Array(shape.reduce((p, q) => p * q, 1));
  forEachIndex(shape, (idx, flat) => {
    let i = idx[axis];
    let part = 0;
    while (i >= ts[part].shape[axis]) i -= ts[part++].shape[axis];
    const src = [...idx];
    src[axis] = i;
    const st = strides(ts[part].shape);
    out[flat] = ts[part].data[src.reduce((k, v, d) => k + v * st[d], 0)];
  });
  return new T(shape, out);
}

export function slice(a: T, axis: number, start: number, end: number): T {
  const shape = [...a.shape];
  shape[axis] = end - start;
  const st = strides(a.shape);
  const out = new Float64Array(shape.reduce((p, q) => p * q, 1));
  forEachIndex(shape, (idx, flat) => {
    out[flat] = a.data[idx.reduce((k, v, d) => k + (d === axis ? v + start : v) * st[d], 0)];
  });
  return new T(shape, out);
}

export function pad(a: T, pads: number[]): T {
  const r = a.shape.length;
  const shape = a.shape.map((d, i) => d + pads[i] + pads[r + i]);
  const st = strides(a.shape);
  const out = new Float64Array(shape.reduce((p, q) => p * q, 1));
  forEachIndex(shape, (idx, flat) => {
    const src = idx.map((v, d) => v - pads[d]);
    if (src.every((v, d) => v >= 0 && v < a.shape[d]))
      out[flat] = a.data[src.reduce((k, v, d) => k + v * st[d], 0)];
  });
  return new T(shape, out);
}

export function gather(a: T, indices: number[], axis: number): T {
  const shape = [...a.shape];
  shape[axis] = indices.length;
  const st = strides(a.shape);
  const out = new Float64Array(shape.reduce((p, q) => p * q, 1));
  forEachIndex(shape, (idx, flat) => {
    out[flat] = a.data[idx.reduce((k, v, d) => k + (d === axis ? indices[v] : v) * st[d], 0)];
  });
  return new T(shape, out);
}

/** op(a)·op(b) with numpy batch broadcasting. */
export function matmul(a: T, b: T, transA = false, transB = false): T {
  const A = transA ? transpose(a, swapLast(a.shape.length)) : a;
  const B = transB ? transpose(b, swapLast(b.shape.length)) : b;
  const [m, k] = A.shape.slice(-2);
  const n = B.shape[B.shape.length - 1];
  const batch = broadcastShape(A.shape.slice(0, -2), B.shape.slice(0, -2));
  const shape = [...batch, m, n];
  const out = new Float64Array(shape.reduce((p, q) => p * q, 1));
  const aBatch = new T(
    [...A.shape.slice(0, -2)],
    new Float64Array(A.shape.slice(0, -2).reduce((p, q) => p * q, 1)),
  );
  const bBatch = new T(
    [...B.shape.slice(0, -2)],
    new Float64Array(B.shape.slice(0, -2).reduce((p, q) => p * q, 1)),
  );
  forEachIndex(batch, (idx, flat) => {
    const ia = broadcastIndex(aBatch, batch, idx) * m * k;
    const ib = broadcastIndex(bBatch, batch, idx) * k * n;
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) s += A.data[ia + i * k + p] * B.data[ib + p * n + j];
        out[flat * m * n + i * n + j] = s;
      }
  });
  return new T(shape, out);
}

function swapLast(rank: number): number[] {
  const p = [...Array(rank).keys()];
  [p[rank - 2], p[rank - 1]] = [p[rank - 1], p[rank - 2]];
  return p;
}

/** LayerNorm over the last axis: (x − mean)/√(var + ε)·γ + β, biased variance. */
export function layerNorm(x: T, gamma: T, beta: T, eps: number): T {
  const d = x.shape[x.shape.length - 1];
  const u = new Float64Array(x.size);
  for (let r = 0; r < x.size / d; r++) {
    let mean = 0;
    for (let j = 0; j < d; j++) mean += x.data[r * d + j] / d;
    let v = 0;
    for (let j = 0; j < d; j++) v += (x.data[r * d + j] - mean) ** 2 / d;
    for (let j = 0; j < d; j++) u[r * d + j] = (x.data[r * d + j] - mean) / Math.sqrt(v + eps);
  }
  return add(mul(new T([...x.shape], u), gamma), beta);
}

/** NCHW convolution with square stride and zero padding. */
export function conv2d(x: T, w: T, b: T | null, stride: number, p: number): T {
  const [n, c, h, wd] = x.shape;
  const [o, , kh, kw] = w.shape;
  const oh = Math.floor((h + 2 * p - kh) / stride) + 1;
  const ow = Math.floor((wd + 2 * p - kw) / stride) + 1;
  const out = new Float64Array(n * o * oh * ow);
  for (let ni = 0; ni < n; ni++)
    for (let oi = 0; oi < o; oi++)
      for (let i = 0; i < oh; i++)
        for (let j = 0; j < ow; j++) {
          let s = b ? b.data[oi] : 0;
          for (let ci = 0; ci < c; ci++)
            for (let a = 0; a < kh; a++)
              for (let e = 0; e < kw; e++) {
                const y = i * stride + a - p;
                const z = j * stride + e - p;
                if (y < 0 || y >= h || z < 0 || z >= wd) continue;
                s += x.data[((ni * c + ci) * h + y) * wd + z] * w.data[((oi * c + ci) * kh + a) * kw + e];
              }
          out[((ni * o + oi) * oh + i) * ow + j] = s;
        }
  return new T([n, o, oh, ow], out);
}

/**
 * ∂f/∂x for every element of `inputs[which]` by central differences in float64 (step 1e-6 relative
 * to the element, at least 1e-6).
 */
/** maps [B, K, h, w] → [B, 2K]: per map a softmax over its cells, then the expected x (all K), then y; cell centres in [−1, 1]. */
export function spatialSoftmax(maps: T): T {
  const [b, k, h, w] = maps.shape;
  const out = new Float64Array(b * 2 * k);
  for (let n = 0; n < b; n++) {
    for (let c = 0; c < k; c++) {
      const base = (n * k + c) * h * w;
      let peak = -Infinity;
      for (let i = 0; i < h * w; i++) peak = Math.max(peak, maps.data[base + i]);
      let total = 0;
      let ex = 0;
      let ey = 0;
      for (let r = 0; r < h; r++) {
        for (let col = 0; col < w; col++) {
          const e = Math.exp(maps.data[base + r * w + col] - peak);
          total += e;
          ex += e * (w > 1 ? (2 * col) / (w - 1) - 1 : 0);
          ey += e * (h > 1 ? (2 * r) / (h - 1) - 1 : 0);
        }
      }
      out[n * 2 * k + c] = ex / total;
      out[n * 2 * k + k + c] = ey / total;
    }
  }
  return new T([b, 2 * k], out);
}

export function numericGrad(f: (inputs: T[]) => number, inputs: T[], which: number): Float64Array {
  const x = inputs[which];
  const g = new Float64Array(x.size);
  for (let i = 0; i < x.size; i++) {
    const v = x.data[i];
    const h = 1e-6 * Math.max(1, Math.abs(v));
    x.data[i] = v + h;
    const up = f(inputs);
    x.data[i] = v - h;
    const down = f(inputs);
    x.data[i] = v;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

/** max |a − b| / max |b| (∞-norm relative error; 0 when both are 0). */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`relError: lengths ${a.length} and ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return den === 0 ? num : num / den;
}

/** A flat parameter vector's layout, as the engine's ParamLayout gives it. */
export interface FlatLayout {
  entry(name: string): { shape: readonly number[]; offset: number; size: number };
}

/** The tensor `name` of a flat parameter vector. */
export function paramOf(layout: FlatLayout, flat: Float64Array, name: string): T {
  const e = layout.entry(name);
  return T.of([...e.shape], flat.subarray(e.offset, e.offset + e.size));
}

/** The learner's MLP: [linear → LayerNorm → ReLU] per hidden layer, then linear (`l<i>/w, b, gamma, beta`). */
export function mlp(
  net: { layout: FlatLayout; spec: { hidden: readonly number[] } },
  flat: Float64Array,
  x: T,
): T {
  const p = (name: string): T => paramOf(net.layout, flat, name);
  const layers = net.spec.hidden.length + 1;
  let h = x;
  for (let l = 0; l < layers; l++) {
    h = add(matmul(h, p(`l${l}/w`)), p(`l${l}/b`));
    if (l + 1 < layers) h = relu(layerNorm(h, p(`l${l}/gamma`), p(`l${l}/beta`), 1e-5));
  }
  return h;
}

/**
 * The conv encoder: (x − 0.5) → [conv 3×3 stride 2 pad 1 → ReLU] per channel count → flatten, or
 * keypoints (1×1 conv, spatial softmax) → linear → LayerNorm → tanh; `p` names its parameters.
 */
export function convEncoder(
  x: T,
  p: (name: string) => T,
  spec: { channels: readonly number[]; pooling?: string },
): T {
  let h = sub(x, scalar(0.5));
  spec.channels.forEach((_, i) => {
    h = relu(conv2d(h, p(`conv${i}/w`), p(`conv${i}/b`), 2, 1));
  });
  const n = h.shape[0];
  const pooled =
    spec.pooling === 'spatial-softmax'
      ? spatialSoftmax(conv2d(h, p('keypoints/w'), null, 1, 0))
      : reshape(h, [n, h.size / n]);
  const z = add(matmul(pooled, p('trunk/w')), p('trunk/b'));
  return tanh(layerNorm(z, p('trunk/gamma'), p('trunk/beta'), 1e-5));
}
