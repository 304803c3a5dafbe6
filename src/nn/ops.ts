/**
 * The engine's op set: each function emits ONNX nodes for the forward value and records on the
 * tape how to map the output's gradient back to its inputs (built from these same ops). Shapes are
 * static and broadcasting follows numpy; the gradient of a broadcast operand is summed over the axes
 * it was broadcast along (`sumTo`).
 *
 * Not differentiable (no tape entry): comparisons, casts, `sign`, `stopGradient`, `sumSquares`.
 */
import { attr } from '../util/onnx-proto.js';
import { sameShape, sizeOf, type Graph, type Value } from './graph.js';

// -- shape helpers ------------------------------------------------------------------------------

export function broadcastShapes(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1)
      throw new Error(`shapes [${a.join(',')}] and [${b.join(',')}] do not broadcast`);
    out.push(da === 1 ? db : da);
  }
  return out;
}

function normAxes(axes: readonly number[] | undefined, rank: number): number[] {
  const all = axes ?? [...Array(rank).keys()];
  const out = all.map((a) => (a < 0 ? a + rank : a));
  for (const a of out) if (a < 0 || a >= rank) throw new Error(`axis ${a} out of range for rank ${rank}`);
  return [...new Set(out)].sort((x, y) => x - y);
}

function reducedShape(shape: readonly number[], axes: readonly number[], keepdims: boolean): number[] {
  const out: number[] = [];
  shape.forEach((d, i) => {
    if (!axes.includes(i)) out.push(d);
    else if (keepdims) out.push(1);
  });
  return out;
}

function graphOf(...vs: Value[]): Graph {
  const g = vs[0].graph;
  for (const v of vs) if (v.graph !== g) throw new Error(`values ${vs.map(String).join(', ')} mix graphs`);
  return g;
}

function requireFloat(op: string, ...vs: Value[]): void {
  for (const v of vs) if (v.dtype !== 'float32') throw new Error(`${op}: ${v} is ${v.dtype}, not float32`);
}

/** Sums a broadcast result's gradient back to the operand's shape. */
export function sumTo(gy: Value, shape: readonly number[]): Value {
  if (sameShape(gy.shape, shape)) return gy;
  const lead = gy.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < gy.rank; i++)
    if (i < lead || (shape[i - lead] === 1 && gy.shape[i] !== 1)) axes.push(i);
  const summed = axes.length ? sum(gy, axes, true) : gy;
  return sameShape(summed.shape, shape) ? summed : reshape(summed, shape);
}

// -- elementwise binary ---------------------------------------------------------------------------

type Operand = Value | number;

function lift(g: Graph, x: Operand): Value {
  return typeof x === 'number' ? g.scalar(x) : x;
}

function binary(
  opType: string,
  a0: Operand,
  b0: Operand,
  backward: (gy: Value, a: Value, b: Value, y: Value, need: readonly boolean[]) => (Value | null)[],
): Value {
  const g = typeof a0 === 'number' ? (b0 as Value).graph : a0.graph;
  const a = lift(g, a0);
  const b = lift(g, b0);
  graphOf(a, b);
  requireFloat(opType, a, b);
  const y = g.emit1(opType, [a, b], { shape: broadcastShapes(a.shape, b.shape) });
  return g.record({
    op: opType,
    inputs: [a, b],
    output: y,
    backward: (gy, need) => backward(gy, a, b, y, need),
  });
}

export function add(a: Operand, b: Operand): Value {
  return binary('Add', a, b, (gy, x, y, _o, need) => [
    need[0] ? sumTo(gy, x.shape) : null,
    need[1] ? sumTo(gy, y.shape) : null,
  ]);
}

export function sub(a: Operand, b: Operand): Value {
  return binary('Sub', a, b, (gy, x, y, _o, need) => [
    need[0] ? sumTo(gy, x.shape) : null,
    need[1] ? sumTo(neg(gy), y.shape) : null,
  ]);
}

export function mul(a: Operand, b: Operand): Value {
  return binary('Mul', a, b, (gy, x, y, _o, need) => [
    need[0] ? sumTo(mul(gy, y), x.shape) : null,
    need[1] ? sumTo(mul(gy, x), y.shape) : null,
  ]);
}

export function div(a: Operand, b: Operand): Value {
  return binary('Div', a, b, (gy, x, y, out, need) => [
    need[0] ? sumTo(div(gy, y), x.shape) : null,
    // d(x/y)/dy = −(x/y)/y
    need[1] ? sumTo(neg(div(mul(gy, out), y)), y.shape) : null,
  ]);
}

/** Elementwise minimum; the gradient goes to the smaller operand (to `a` on ties). */
export function minimum(a: Operand, b: Operand): Value {
  return binary('Min', a, b, (gy, x, y, _o, need) => {
    const aWins = cast(lessOrEqual(x, y));
    return [
      need[0] ? sumTo(mul(gy, aWins), x.shape) : null,
      need[1] ? sumTo(mul(gy, sub(1, aWins)), y.shape) : null,
    ];
  });
}

/** Elementwise maximum; the gradient goes to the larger operand (to `a` on ties). */
export function maximum(a: Operand, b: Operand): Value {
  return binary('Max', a, b, (gy, x, y, _o, need) => {
    const aWins = cast(greaterOrEqual(x, y));
    return [
      need[0] ? sumTo(mul(gy, aWins), x.shape) : null,
      need[1] ? sumTo(mul(gy, sub(1, aWins)), y.shape) : null,
    ];
  });
}

// -- elementwise unary ----------------------------------------------------------------------------

function unary(opType: string, x: Value, backward: (gy: Value, x: Value, y: Value) => Value): Value {
  requireFloat(opType, x);
  const g = x.graph;
  const y = g.emit1(opType, [x], { shape: x.shape });
  return g.record({ op: opType, inputs: [x], output: y, backward: (gy) => [backward(gy, x, y)] });
}

export const neg = (x: Value): Value => unary('Neg', x, (gy) => neg(gy));
export const abs = (x: Value): Value => unary('Abs', x, (gy, xi) => mul(gy, sign(xi)));
/**
 * ReLU; the backward masks with a comparison and a cast (onnxruntime's Sign is ~2.5× slower than
 * Greater + Cast on [2,256,256], and Where slower still).
 */
export const relu = (x: Value): Value =>
  unary('Relu', x, (gy, _x, y) => mul(gy, cast(greater(y, y.graph.scalar(0)))));
export const tanh = (x: Value): Value => unary('Tanh', x, (gy, _x, y) => mul(gy, sub(1, mul(y, y))));
export const exp = (x: Value): Value => unary('Exp', x, (gy, _x, y) => mul(gy, y));
export const log = (x: Value): Value => unary('Log', x, (gy, xi) => div(gy, xi));
export const sqrt = (x: Value): Value => unary('Sqrt', x, (gy, _x, y) => div(mul(gy, 0.5), y));

export function square(x: Value): Value {
  requireFloat('Square', x);
  const g = x.graph;
  const y = g.emit1('Mul', [x, x], { shape: x.shape });
  return g.record({ op: 'Square', inputs: [x], output: y, backward: (gy) => [mul(gy, mul(x, 2))] });
}

/** Clip to [lo, hi]; the gradient passes where lo ≤ x ≤ hi (inclusive, as TensorFlow's). */
export function clip(x: Value, lo: number, hi: number): Value {
  requireFloat('Clip', x);
  const g = x.graph;
  const y = g.emit1('Clip', [x, g.scalar(lo), g.scalar(hi)], { shape: x.shape });
  return g.record({
    op: 'Clip',
    inputs: [x],
    output: y,
    backward: (gy) => {
      const inside = g.emit1('And', [greaterOrEqual(x, g.scalar(lo)), lessOrEqual(x, g.scalar(hi))], {
        shape: x.shape,
        dtype: 'bool',
      });
      return [mul(gy, cast(inside))];
    },
  });
}

// -- not differentiable ---------------------------------------------------------------------------

function compare(opType: string, a: Value, b: Value): Value {
  return graphOf(a, b).emit1(opType, [a, b], { shape: broadcastShapes(a.shape, b.shape), dtype: 'bool' });
}
export const lessOrEqual = (a: Value, b: Value): Value => compare('LessOrEqual', a, b);
export const greaterOrEqual = (a: Value, b: Value): Value => compare('GreaterOrEqual', a, b);
export const equal = (a: Value, b: Value): Value => compare('Equal', a, b);
export const greater = (a: Value, b: Value): Value => compare('Greater', a, b);

/** bool → float32 (1/0). */
export function cast(x: Value): Value {
  return x.graph.emit1('Cast', [x], { shape: x.shape }, [attr.int('to', 1)]);
}

export function sign(x: Value): Value {
  return x.graph.emit1('Sign', [x], { shape: x.shape });
}

/** The value itself, with no gradient flowing back through it. */
export function stopGradient(x: Value): Value {
  return x.graph.emit1('Identity', [x], { shape: x.shape, dtype: x.dtype });
}

/** Σ x² over all elements, as a scalar (no gradient: used for norms of gradients). */
export function sumSquares(x: Value): Value {
  return x.graph.emit1('ReduceSumSquare', [x], { shape: [] }, [attr.int('keepdims', 0)]);
}

// -- reductions -----------------------------------------------------------------------------------

/** Broadcasts a reduced gradient (keepdims layout) back to `shape`. */
function expandTo(gy: Value, keptShape: readonly number[], shape: readonly number[]): Value {
  const kept = sameShape(gy.shape, keptShape) ? gy : reshape(gy, keptShape);
  return expand(kept, shape);
}

export function sum(x: Value, axes?: readonly number[], keepdims = false): Value {
  requireFloat('ReduceSum', x);
  const g = x.graph;
  const ax = normAxes(axes, x.rank);
  const kept = reducedShape(x.shape, ax, true);
  const y = g.emit1('ReduceSum', [x, g.ints(ax)], { shape: reducedShape(x.shape, ax, keepdims) }, [
    attr.int('keepdims', keepdims ? 1 : 0),
  ]);
  return g.record({
    op: 'ReduceSum',
    inputs: [x],
    output: y,
    backward: (gy) => [expandTo(gy, kept, x.shape)],
  });
}

export function mean(x: Value, axes?: readonly number[], keepdims = false): Value {
  requireFloat('ReduceMean', x);
  const g = x.graph;
  const ax = normAxes(axes, x.rank);
  const kept = reducedShape(x.shape, ax, true);
  const count = ax.reduce((n, a) => n * x.shape[a], 1);
  const y = g.emit1('ReduceMean', [x], { shape: reducedShape(x.shape, ax, keepdims) }, [
    attr.ints('axes', ax),
    attr.int('keepdims', keepdims ? 1 : 0),
  ]);
  return g.record({
    op: 'ReduceMean',
    inputs: [x],
    output: y,
    backward: (gy) => [expandTo(mul(gy, 1 / count), kept, x.shape)],
  });
}

function extremum(
  opType: 'ReduceMax' | 'ReduceMin',
  x: Value,
  axes?: readonly number[],
  keepdims = false,
): Value {
  requireFloat(opType, x);
  const g = x.graph;
  const ax = normAxes(axes, x.rank);
  const kept = reducedShape(x.shape, ax, true);
  const y = g.emit1(opType, [x], { shape: reducedShape(x.shape, ax, keepdims) }, [
    attr.ints('axes', ax),
    attr.int('keepdims', keepdims ? 1 : 0),
  ]);
  return g.record({
    op: opType,
    inputs: [x],
    output: y,
    // The gradient goes to the extreme element(s), shared equally between ties.
    backward: (gy) => {
      const yk = sameShape(y.shape, kept) ? y : reshape(stopGradient(y), kept);
      const mask = cast(equal(x, yk));
      const count = sum(mask, ax, true);
      const gk = sameShape(gy.shape, kept) ? gy : reshape(gy, kept);
      return [mul(mask, div(gk, count))];
    },
  });
}

export const max = (x: Value, axes?: readonly number[], keepdims = false): Value =>
  extremum('ReduceMax', x, axes, keepdims);
export const min = (x: Value, axes?: readonly number[], keepdims = false): Value =>
  extremum('ReduceMin', x, axes, keepdims);

// -- shape ops ------------------------------------------------------------------------------------

export function reshape(x: Value, shape0: readonly number[]): Value {
  const g = x.graph;
  const known = shape0.filter((d) => d !== -1);
  const shape = shape0.map((d) => (d === -1 ? x.size / sizeOf(known) : d));
  if (sizeOf(shape) !== x.size || shape.some((d) => !Number.isInteger(d) || d < 0))
    throw new Error(`cannot reshape ${x} to [${shape0.join(',')}]`);
  const y = g.emit1('Reshape', [x, g.ints(shape)], { shape, dtype: x.dtype });
  if (x.dtype !== 'float32') return y;
  return g.record({ op: 'Reshape', inputs: [x], output: y, backward: (gy) => [reshape(gy, x.shape)] });
}

/** [d0, d1, ...] → [d0, d1·d2·...] (keeps the batch axis). */
export function flatten(x: Value): Value {
  return reshape(x, [x.shape[0], x.size / x.shape[0]]);
}

export function transpose(x: Value, perm: readonly number[]): Value {
  const g = x.graph;
  if (perm.length !== x.rank || [...perm].sort().some((p, i) => p !== i))
    throw new Error(`bad permutation [${perm.join(',')}] for ${x}`);
  const y = g.emit1('Transpose', [x], { shape: perm.map((p) => x.shape[p]), dtype: x.dtype }, [
    attr.ints('perm', perm),
  ]);
  const inverse = perm.map((_, i) => perm.indexOf(i));
  return g.record({ op: 'Transpose', inputs: [x], output: y, backward: (gy) => [transpose(gy, inverse)] });
}

/** Swaps the last two axes. */
export function transposeLast(x: Value): Value {
  const perm = [...Array(x.rank).keys()];
  [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1], perm[x.rank - 2]];
  return transpose(x, perm);
}

/** Broadcasts x to `shape` (numpy rules). */
export function expand(x: Value, shape: readonly number[]): Value {
  const g = x.graph;
  if (sameShape(x.shape, shape)) return x;
  const out = broadcastShapes(x.shape, shape);
  if (!sameShape(out, shape)) throw new Error(`cannot expand ${x} to [${shape.join(',')}]`);
  const y = g.emit1('Expand', [x, g.ints(shape)], { shape });
  return g.record({ op: 'Expand', inputs: [x], output: y, backward: (gy) => [sumTo(gy, x.shape)] });
}

export function concat(xs: readonly Value[], axis0: number): Value {
  const g = graphOf(...xs);
  const rank = xs[0].rank;
  const axis = axis0 < 0 ? axis0 + rank : axis0;
  for (const x of xs) {
    requireFloat('Concat', x);
    if (x.rank !== rank || x.shape.some((d, i) => i !== axis && d !== xs[0].shape[i]))
      throw new Error(`concat on axis ${axis}: ${xs.map(String).join(', ')} do not fit`);
  }
  const shape = [...xs[0].shape];
  shape[axis] = xs.reduce((s, x) => s + x.shape[axis], 0);
  if (xs.length === 1) return xs[0];
  const y = g.emit1('Concat', xs, { shape }, [attr.int('axis', axis)]);
  return g.record({
    op: 'Concat',
    inputs: xs,
    output: y,
    backward: (gy, need) => {
      let start = 0;
      return xs.map((x, i) => {
        const s = start;
        start += x.shape[axis];
        return need[i] ? slice(gy, axis, s, s + x.shape[axis]) : null;
      });
    },
  });
}

/** x[..., start:end, ...] along one axis. */
export function slice(x: Value, axis0: number, start: number, end: number): Value {
  const g = x.graph;
  const axis = axis0 < 0 ? axis0 + x.rank : axis0;
  if (!(start >= 0 && end <= x.shape[axis] && start < end))
    throw new Error(`slice ${start}:${end} out of range for axis ${axis} of ${x}`);
  const shape = [...x.shape];
  shape[axis] = end - start;
  const y = g.emit1('Slice', [x, g.ints([start]), g.ints([end]), g.ints([axis])], { shape, dtype: x.dtype });
  if (x.dtype !== 'float32') return y;
  return g.record({
    op: 'Slice',
    inputs: [x],
    output: y,
    backward: (gy) => {
      const pads = new Array(2 * x.rank).fill(0);
      pads[axis] = start;
      pads[x.rank + axis] = x.shape[axis] - end;
      return [pad(gy, pads)];
    },
  });
}

/** Zero padding: pads = [begin_0, …, begin_{r−1}, end_0, …, end_{r−1}]. */
export function pad(x: Value, pads: readonly number[]): Value {
  const g = x.graph;
  const shape = x.shape.map((d, i) => d + pads[i] + pads[x.rank + i]);
  const y = g.emit1('Pad', [x, g.ints(pads)], { shape }, [attr.string('mode', 'constant')]);
  return g.record({
    op: 'Pad',
    inputs: [x],
    output: y,
    backward: (gy) => {
      let r = gy;
      x.shape.forEach((d, i) => {
        if (pads[i] !== 0 || pads[x.rank + i] !== 0) r = slice(r, i, pads[i], pads[i] + d);
      });
      return [r];
    },
  });
}

/**
 * x gathered along `axis` at 1-D int64 `indices` (a graph input or constant). The gradient
 * scatter-adds back, so repeated indices accumulate.
 */
export function gather(x: Value, indices: Value, axis0: number): Value {
  const g = graphOf(x, indices);
  if (indices.dtype !== 'int64' || indices.rank !== 1)
    throw new Error(`gather: indices ${indices} must be 1-D int64`);
  const axis = axis0 < 0 ? axis0 + x.rank : axis0;
  const shape = [...x.shape];
  shape[axis] = indices.shape[0];
  const y = g.emit1('Gather', [x, indices], { shape }, [attr.int('axis', axis)]);
  return g.record({
    op: 'Gather',
    inputs: [x, indices],
    output: y,
    backward: (gy) => {
      // Move `axis` first, scatter-add rows into zeros, move it back.
      const perm = [axis, ...[...Array(x.rank).keys()].filter((i) => i !== axis)];
      const inverse = perm.map((_, i) => perm.indexOf(i));
      const gt = axis === 0 ? gy : transpose(gy, perm);
      const xtShape = perm.map((p) => x.shape[p]);
      const zeros = g.constant(new Float32Array(sizeOf(xtShape)), xtShape);
      const idx = g.emit1('Unsqueeze', [indices, g.ints([1])], {
        shape: [indices.shape[0], 1],
        dtype: 'int64',
      });
      const scattered = g.emit1('ScatterND', [zeros, idx, gt], { shape: xtShape }, [
        attr.string('reduction', 'add'),
      ]);
      return [axis === 0 ? scattered : transpose(scattered, inverse), null];
    },
  });
}

// -- products -------------------------------------------------------------------------------------

export interface MatMulFlags {
  transA?: boolean;
  transB?: boolean;
}

/**
 * op(a)·op(b) with op = transpose of the last two axes where flagged. 2-D products are one Gemm
 * (its transpose flags cost nothing); batched ones ([H,B,in]·[H,in,out], or a shared [B,in] times
 * [H,in,out]) are one MatMul with numpy batch broadcasting, flagged operands transposed first
 * (onnxruntime fuses such a Transpose into its MatMul kernel). Gradients of broadcast batch axes are
 * summed back.
 */
export function matmul(a: Value, b: Value, flags: MatMulFlags = {}): Value {
  const g = graphOf(a, b);
  requireFloat('MatMul', a, b);
  if (a.rank < 2 || b.rank < 2) throw new Error(`matmul needs rank ≥ 2 operands, got ${a} and ${b}`);
  const { transA = false, transB = false } = flags;
  const [m, ka] = transA ? [a.shape[a.rank - 1], a.shape[a.rank - 2]] : a.shape.slice(-2);
  const [kb, n] = transB ? [b.shape[b.rank - 1], b.shape[b.rank - 2]] : b.shape.slice(-2);
  if (ka !== kb)
    throw new Error(`matmul: inner sizes differ: ${a}${transA ? 'ᵀ' : ''} · ${b}${transB ? 'ᵀ' : ''}`);
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const shape = [...batch, m, n];
  let y: Value;
  if (a.rank === 2 && b.rank === 2) {
    y = g.emit1('Gemm', [a, b], { shape }, [
      attr.int('transA', transA ? 1 : 0),
      attr.int('transB', transB ? 1 : 0),
    ]);
  } else {
    const swap = (x: Value): Value => {
      const perm = [...Array(x.rank).keys()];
      [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1], perm[x.rank - 2]];
      return g.emit1('Transpose', [x], { shape: perm.map((p) => x.shape[p]) }, [attr.ints('perm', perm)]);
    };
    y = g.emit1('MatMul', [transA ? swap(a) : a, transB ? swap(b) : b], { shape });
  }
  return g.record({
    op: 'MatMul',
    inputs: [a, b],
    output: y,
    backward: (gy, need) => {
      let da: Value | null = null;
      let db: Value | null = null;
      if (need[0]) {
        if (!transA) da = matmul(gy, b, { transB: !transB });
        else da = matmul(b, gy, { transA: transB, transB: true });
      }
      if (need[1]) {
        if (!transB) db = matmul(a, gy, { transA: !transA });
        else db = matmul(gy, a, { transA: true, transB: transA });
      }
      return [da && sumTo(da, a.shape), db && sumTo(db, b.shape)];
    },
  });
}

// -- composites -----------------------------------------------------------------------------------

/**
 * LayerNorm over the last axis, y = û·γ + β with û = (x − mean)·rstd, as one tape entry: the
 * forward is ONNX LayerNormalization (which also returns mean and 1/σ), the backward the closed form
 * dx = rstd·(dû − mean(dû) − û·mean(dû·û)), dû = dy·γ. γ and β broadcast against x (e.g. [D] for
 * one network, [H,1,D] for an ensemble of H heads).
 */
export function layerNorm(x: Value, gamma: Value, beta: Value, epsilon: number): Value {
  const g = graphOf(x, gamma, beta);
  requireFloat('LayerNorm', x, gamma, beta);
  const d = x.shape[x.rank - 1];
  const stats = [...x.shape.slice(0, -1), 1];
  // The zero bias is explicit: onnxruntime 1.30 crashes (SIGSEGV) optimizing a LayerNormalization
  // whose optional bias is omitted, at the 'extended' level and above.
  const [u, , rstd] = g.emit(
    'LayerNormalization',
    [x, g.constant(new Float32Array(d).fill(1), [d]), g.constant(new Float32Array(d), [d])],
    [{ shape: x.shape }, { shape: stats }, { shape: stats }],
    [attr.int('axis', -1), attr.float('epsilon', epsilon)],
  );
  const scaled = g.emit1('Mul', [u, gamma], { shape: broadcastShapes(x.shape, gamma.shape) });
  const y = g.emit1('Add', [scaled, beta], { shape: broadcastShapes(scaled.shape, beta.shape) });
  if (!sameShape(y.shape, x.shape))
    throw new Error(`layerNorm: γ ${gamma} / β ${beta} broadcast ${x} to ${y}`);
  return g.record({
    op: 'LayerNorm',
    inputs: [x, gamma, beta],
    output: y,
    backward: (gy, need) => {
      const last = [x.rank - 1];
      let dx: Value | null = null;
      if (need[0]) {
        const du = mul(gy, gamma);
        const centred = sub(du, mean(du, last, true));
        dx = mul(rstd, sub(centred, mul(u, mean(mul(du, u), last, true))));
      }
      return [dx, need[1] ? sumTo(mul(gy, u), gamma.shape) : null, need[2] ? sumTo(gy, beta.shape) : null];
    },
  });
}

export interface Conv2dOptions {
  stride?: number;
  /** Zero padding on every side. */
  pad?: number;
}

/**
 * 2-D convolution, NCHW: x [N,C,H,W], w [O,C,k,k], b [O] or null → [N,O,H',W'] with
 * H' = ⌊(H + 2·pad − k)/stride⌋ + 1. Backward: dx is the transposed convolution of dy with w (with
 * the output padding that restores H×W), dw a convolution of x (batch and channels swapped) with dy
 * dilated by the stride, db the sum of dy over N, H', W'.
 */
export function conv2d(x: Value, w: Value, b: Value | null, opts: Conv2dOptions = {}): Value {
  const g = graphOf(x, w, ...(b ? [b] : []));
  requireFloat('Conv', x, w, ...(b ? [b] : []));
  const stride = opts.stride ?? 1;
  const p = opts.pad ?? 0;
  if (x.rank !== 4 || w.rank !== 4) throw new Error(`conv2d needs NCHW x and OCkk w, got ${x} and ${w}`);
  const [n, c, h, wd] = x.shape;
  const [o, cw, kh, kw] = w.shape;
  if (c !== cw) throw new Error(`conv2d: ${x} has ${c} channels, ${w} expects ${cw}`);
  if (b && (b.rank !== 1 || b.shape[0] !== o)) throw new Error(`conv2d: bias ${b} must be [${o}]`);
  const oh = Math.floor((h + 2 * p - kh) / stride) + 1;
  const ow = Math.floor((wd + 2 * p - kw) / stride) + 1;
  if (oh < 1 || ow < 1) throw new Error(`conv2d: kernel ${kh}×${kw} does not fit ${h}×${wd} with pad ${p}`);
  const convAttrs = [attr.ints('strides', [stride, stride]), attr.ints('pads', [p, p, p, p])];
  const y = g.emit1('Conv', b ? [x, w, b] : [x, w], { shape: [n, o, oh, ow] }, [
    ...convAttrs,
    attr.ints('kernel_shape', [kh, kw]),
  ]);
  return g.record({
    op: 'Conv',
    inputs: b ? [x, w, b] : [x, w],
    output: y,
    backward: (gy, need) => conv2dBackward(gy, x, w, { stride, p, oh, ow }, need),
  });
}

function conv2dBackward(
  gy: Value,
  x: Value,
  w: Value,
  s: { stride: number; p: number; oh: number; ow: number },
  need: readonly boolean[],
): (Value | null)[] {
  const g = gy.graph;
  const { stride, p, oh, ow } = s;
  const [n, c, h, wd] = x.shape;
  const [o, , kh, kw] = w.shape;
  let dx: Value | null = null;
  let dw: Value | null = null;
  if (need[0]) {
    // ConvTranspose's output is stride·(oh−1) + k − 2p + output_padding: pad up to H×W exactly.
    const outPad = [h - (stride * (oh - 1) + kh - 2 * p), wd - (stride * (ow - 1) + kw - 2 * p)];
    dx = g.emit1('ConvTranspose', [gy, w], { shape: [n, c, h, wd] }, [
      attr.ints('strides', [stride, stride]),
      attr.ints('pads', [p, p, p, p]),
      attr.ints('output_padding', outPad),
      attr.ints('kernel_shape', [kh, kw]),
    ]);
    dx = recordOpaque('ConvInputGrad', [gy, w], dx);
  }
  if (need[1]) {
    // dw[o,c,a,b] = Σ_{n,i,j} dy[n,o,i,j]·x_pad[n,c,i·s+a,j·s+b]: a convolution over the batch
    // axis of xᵀ [C,N,H,W] with kernels dyᵀ [O,N,oh,ow] dilated by the stride → [C,O,k',k'].
    const xt = transpose(x, [1, 0, 2, 3]);
    const gt = transpose(gy, [1, 0, 2, 3]);
    const fullH = h + 2 * p - stride * (oh - 1);
    const fullW = wd + 2 * p - stride * (ow - 1);
    const full = g.emit1('Conv', [xt, gt], { shape: [c, o, fullH, fullW] }, [
      attr.ints('dilations', [stride, stride]),
      attr.ints('pads', [p, p, p, p]),
      attr.ints('kernel_shape', [oh, ow]),
    ]);
    let k = recordOpaque('ConvWeightGrad', [xt, gt], full);
    if (fullH !== kh) k = slice(k, 2, 0, kh);
    if (fullW !== kw) k = slice(k, 3, 0, kw);
    dw = transpose(k, [1, 0, 2, 3]);
  }
  const db = need[2] ? sum(gy, [0, 2, 3]) : null;
  return [dx, dw, db];
}

/**
 * A tape entry for a gradient node of conv2d, so that differentiating through it (a second
 * derivative) fails loudly instead of silently treating it as a constant.
 */
function recordOpaque(op: string, inputs: Value[], output: Value): Value {
  return output.graph.record({
    op,
    inputs,
    output,
    backward: () => {
      throw new Error(`${op} has no gradient (second derivatives of conv2d are not supported)`);
    },
  });
}
