import { beforeAll, describe, expect, it } from 'vitest';
import {
  AdamClock,
  adamStep,
  CompiledGraph,
  grad,
  Graph,
  initEngine,
  op,
  ParamLayout,
  polyak,
  type Engine,
  type Value,
} from '../src/nn/index.js';
import { spatialSoftmax } from '../src/nn/conv-encoder.js';
import { ResrtError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';
import * as ref from './nn-reference.js';
import { T } from './nn-reference.js';

let engine: Engine;
beforeAll(async () => {
  engine = await initEngine({ device: 'cpu', threads: 1 });
});

const TOL = 1e-4;

interface OpCase {
  name: string;
  shapes: number[][];
  /** Input values: normal (default), positive (0.5…2) or well separated per row (no near-ties). */
  dist?: 'normal' | 'positive';
  /** Moves values away from kinks (non-differentiable points), in place. */
  avoid?: (xs: Float32Array[]) => void;
  engine: (xs: Value[]) => Value;
  ref: (xs: T[]) => T;
}

const awayFrom =
  (points: number[], margin = 0.05) =>
  (x: Float32Array) => {
    for (let i = 0; i < x.length; i++)
      for (const p of points) if (Math.abs(x[i] - p) < margin) x[i] = p + (x[i] >= p ? 2 : -2) * margin;
  };

/** Shuffled, well-separated values (no near-ties for max/min). */
const distinct = (x: Float32Array, rng: Rng): void => {
  const order = [...x.keys()];
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  order.forEach((k, i) => (x[k] = (i - order.length / 2) * 0.1 + rng.uniform() * 0.01));
};

const cases: OpCase[] = [
  {
    name: 'add (broadcast)',
    shapes: [
      [2, 3, 4],
      [3, 1],
    ],
    engine: ([a, b]) => op.add(a, b),
    ref: ([a, b]) => ref.add(a, b),
  },
  {
    name: 'sub (broadcast)',
    shapes: [[4], [2, 3, 4]],
    engine: ([a, b]) => op.sub(a, b),
    ref: ([a, b]) => ref.sub(a, b),
  },
  {
    name: 'mul (broadcast)',
    shapes: [
      [2, 1, 4],
      [3, 1],
    ],
    engine: ([a, b]) => op.mul(a, b),
    ref: ([a, b]) => ref.mul(a, b),
  },
  {
    name: 'div (broadcast)',
    shapes: [[2, 3], [3]],
    avoid: ([, b]) => awayFrom([0], 0.5)(b),
    engine: ([a, b]) => op.div(a, b),
    ref: ([a, b]) => ref.div(a, b),
  },
  {
    name: 'minimum (broadcast)',
    shapes: [[3, 4], [4]],
    avoid: ([a, b]) => a.forEach((v, i) => (a[i] = Math.abs(v - b[i % 4]) < 0.1 ? b[i % 4] + 0.2 : v)),
    engine: ([a, b]) => op.minimum(a, b),
    ref: ([a, b]) => ref.minimum(a, b),
  },
  {
    name: 'maximum (broadcast)',
    shapes: [[4], [3, 4]],
    avoid: ([a, b]) => b.forEach((v, i) => (b[i] = Math.abs(v - a[i % 4]) < 0.1 ? a[i % 4] - 0.2 : v)),
    engine: ([a, b]) => op.maximum(a, b),
    ref: ([a, b]) => ref.maximum(a, b),
  },
  { name: 'neg', shapes: [[3, 4]], engine: ([a]) => op.neg(a), ref: ([a]) => ref.unary(a, (x) => -x) },
  {
    name: 'abs',
    shapes: [[3, 4]],
    avoid: ([a]) => awayFrom([0])(a),
    engine: ([a]) => op.abs(a),
    ref: ([a]) => ref.unary(a, Math.abs),
  },
  {
    name: 'relu',
    shapes: [[4, 5]],
    avoid: ([a]) => awayFrom([0])(a),
    engine: ([a]) => op.relu(a),
    ref: ([a]) => ref.relu(a),
  },
  { name: 'tanh', shapes: [[4, 5]], engine: ([a]) => op.tanh(a), ref: ([a]) => ref.tanh(a) },
  { name: 'exp', shapes: [[3, 4]], engine: ([a]) => op.exp(a), ref: ([a]) => ref.unary(a, Math.exp) },
  {
    name: 'log',
    shapes: [[3, 4]],
    dist: 'positive',
    engine: ([a]) => op.log(a),
    ref: ([a]) => ref.unary(a, Math.log),
  },
  {
    name: 'sqrt',
    shapes: [[3, 4]],
    dist: 'positive',
    engine: ([a]) => op.sqrt(a),
    ref: ([a]) => ref.unary(a, Math.sqrt),
  },
  {
    name: 'square',
    shapes: [[3, 4]],
    engine: ([a]) => op.square(a),
    ref: ([a]) => ref.unary(a, (x) => x * x),
  },
  {
    name: 'clip',
    shapes: [[5, 4]],
    avoid: ([a]) => awayFrom([-0.5, 0.5])(a),
    engine: ([a]) => op.clip(a, -0.5, 0.5),
    ref: ([a]) => ref.clip(a, -0.5, 0.5),
  },
  {
    name: 'sum over an axis',
    shapes: [[2, 3, 4]],
    engine: ([a]) => op.sum(a, [1]),
    ref: ([a]) => ref.reduce(a, [1], false, 'sum'),
  },
  {
    name: 'sum over two axes, keepdims',
    shapes: [[2, 3, 4]],
    engine: ([a]) => op.sum(a, [0, 2], true),
    ref: ([a]) => ref.reduce(a, [0, 2], true, 'sum'),
  },
  {
    name: 'mean over the last axis',
    shapes: [[3, 5]],
    engine: ([a]) => op.mean(a, [-1]),
    ref: ([a]) => ref.reduce(a, [1], false, 'mean'),
  },
  {
    name: 'mean of everything',
    shapes: [[3, 5]],
    engine: ([a]) => op.mean(a),
    ref: ([a]) => ref.reduce(a, undefined, false, 'mean'),
  },
  {
    name: 'max over an axis',
    shapes: [[3, 4, 2]],
    avoid: ([a]) => distinct(a, new Rng(5)),
    engine: ([a]) => op.max(a, [1]),
    ref: ([a]) => ref.reduce(a, [1], false, 'max'),
  },
  {
    name: 'min over the first axis, keepdims',
    shapes: [[4, 3]],
    avoid: ([a]) => distinct(a, new Rng(6)),
    engine: ([a]) => op.min(a, [0], true),
    ref: ([a]) => ref.reduce(a, [0], true, 'min'),
  },
  {
    name: 'reshape',
    shapes: [[2, 6]],
    engine: ([a]) => op.reshape(a, [3, -1]),
    ref: ([a]) => ref.reshape(a, [3, 4]),
  },
  {
    name: 'flatten',
    shapes: [[2, 3, 2, 2]],
    engine: ([a]) => op.flatten(a),
    ref: ([a]) => ref.reshape(a, [2, 12]),
  },
  {
    name: 'transpose',
    shapes: [[2, 3, 4]],
    engine: ([a]) => op.transpose(a, [2, 0, 1]),
    ref: ([a]) => ref.transpose(a, [2, 0, 1]),
  },
  {
    name: 'expand',
    shapes: [[3, 1]],
    engine: ([a]) => op.expand(a, [2, 3, 4]),
    ref: ([a]) => ref.expand(a, [2, 3, 4]),
  },
  {
    name: 'concat',
    shapes: [
      [2, 3],
      [2, 2],
      [2, 1],
    ],
    engine: (xs) => op.concat(xs, 1),
    ref: (xs) => ref.concat(xs, 1),
  },
  {
    name: 'slice',
    shapes: [[3, 6]],
    engine: ([a]) => op.slice(a, 1, 2, 5),
    ref: ([a]) => ref.slice(a, 1, 2, 5),
  },
  {
    name: 'pad',
    shapes: [[2, 3]],
    engine: ([a]) => op.pad(a, [1, 0, 0, 2]),
    ref: ([a]) => ref.pad(a, [1, 0, 0, 2]),
  },
  {
    name: 'gather (repeated indices accumulate)',
    shapes: [[3, 4]],
    engine: ([a]) => op.gather(a, a.graph.ints([2, 0, 2]), 0),
    ref: ([a]) => ref.gather(a, [2, 0, 2], 0),
  },
  {
    name: 'gather on axis 1',
    shapes: [[2, 4, 3]],
    engine: ([a]) => op.gather(a, a.graph.ints([3, 1]), 1),
    ref: ([a]) => ref.gather(a, [3, 1], 1),
  },
  ...([false, true] as const).flatMap((tA) =>
    ([false, true] as const).map((tB) => ({
      name: `matmul 2-D (Gemm) transA=${tA} transB=${tB}`,
      shapes: [tA ? [4, 3] : [3, 4], tB ? [5, 4] : [4, 5]],
      engine: ([a, b]: Value[]) => op.matmul(a, b, { transA: tA, transB: tB }),
      ref: ([a, b]: T[]) => ref.matmul(a, b, tA, tB),
    })),
  ),
  {
    name: 'matmul batched [H,B,in]·[H,in,out]',
    shapes: [
      [2, 3, 4],
      [2, 4, 5],
    ],
    engine: ([a, b]) => op.matmul(a, b),
    ref: ([a, b]) => ref.matmul(a, b),
  },
  {
    name: 'matmul shared input [B,in]·[H,in,out] (broadcast)',
    shapes: [
      [3, 4],
      [2, 4, 5],
    ],
    engine: ([a, b]) => op.matmul(a, b),
    ref: ([a, b]) => ref.matmul(a, b),
  },
  {
    name: 'matmul batched with transposes',
    shapes: [
      [2, 4, 3],
      [1, 5, 4],
    ],
    engine: ([a, b]) => op.matmul(a, b, { transA: true, transB: true }),
    ref: ([a, b]) => ref.matmul(a, b, true, true),
  },
  {
    name: 'layerNorm, one network (γ, β [D])',
    shapes: [[4, 6], [6], [6]],
    engine: ([x, g, b]) => op.layerNorm(x, g, b, 1e-5),
    ref: ([x, g, b]) => ref.layerNorm(x, g, b, 1e-5),
  },
  {
    name: 'layerNorm, ensemble (γ, β [H,1,D])',
    shapes: [
      [2, 5, 6],
      [2, 1, 6],
      [2, 1, 6],
    ],
    engine: ([x, g, b]) => op.layerNorm(x, g, b, 1e-5),
    ref: ([x, g, b]) => ref.layerNorm(x, g, b, 1e-5),
  },
  {
    name: 'conv2d stride 2, pad 1',
    shapes: [[2, 3, 7, 7], [4, 3, 3, 3], [4]],
    engine: ([x, w, b]) => op.conv2d(x, w, b, { stride: 2, pad: 1 }),
    ref: ([x, w, b]) => ref.conv2d(x, w, b, 2, 1),
  },
  {
    name: 'conv2d stride 2, no pad, size not a multiple of the stride',
    shapes: [
      [2, 2, 8, 8],
      [3, 2, 3, 3],
    ],
    engine: ([x, w]) => op.conv2d(x, w, null, { stride: 2 }),
    ref: ([x, w]) => ref.conv2d(x, w, null, 2, 0),
  },
  {
    name: 'conv2d stride 1 → flatten → linear (an encoder)',
    shapes: [[2, 1, 5, 5], [2, 1, 3, 3], [2], [18, 3]],
    engine: ([x, w, b, l]) => op.matmul(op.flatten(op.conv2d(x, w, b)), l),
    ref: ([x, w, b, l]) => ref.matmul(ref.reshape(ref.conv2d(x, w, b, 1, 0), [2, 18]), l),
  },
  {
    name: 'spatial softmax (keypoints: expected x, y of each map)',
    shapes: [[2, 3, 4, 5]],
    engine: ([x]) => spatialSoftmax(x),
    ref: ([x]) => ref.spatialSoftmax(x),
  },
  {
    name: 'a value used twice accumulates its gradient',
    shapes: [[3, 4]],
    engine: ([a]) => op.add(op.mul(a, a), op.tanh(a)),
    ref: ([a]) => ref.add(ref.mul(a, a), ref.tanh(a)),
  },
];

function randomInputs(c: OpCase, seed: number): Float32Array[] {
  const rng = new Rng(seed);
  const xs = c.shapes.map((s) =>
    Float32Array.from({ length: s.reduce((a, b) => a * b, 1) }, () =>
      c.dist === 'positive' ? 0.5 + 1.5 * rng.uniform() : rng.normal(),
    ),
  );
  c.avoid?.(xs);
  return xs;
}

describe('engine ops: values and gradients equal a float64 reference (≤ 1e-4 relative), through onnxruntime', () => {
  for (const [k, c] of cases.entries()) {
    it(c.name, async () => {
      const xs = randomInputs(c, 100 + k);
      const ts = xs.map((x, i) => T.of(c.shapes[i], x));
      const yRef = c.ref(ts);
      const rng = new Rng(200 + k);
      const r = Float32Array.from({ length: yRef.size }, () => rng.normal());

      const g = new Graph(`case_${k}`);
      const inputs = c.shapes.map((s, i) => g.input(`x${i}`, s));
      const y = c.engine(inputs);
      expect(y.shape).toEqual(yRef.shape);
      const loss = op.sum(op.mul(y, g.input('r', y.shape)));
      const grads = grad(loss, inputs);
      g.output('y', y);
      grads.forEach((gv, i) => g.output(`g${i}`, gv));
      const compiled = await CompiledGraph.create(g, engine);
      const feeds = Object.fromEntries([...xs.map((x, i) => [`x${i}`, x] as const), ['r', r] as const]);
      const out = await compiled.run(feeds);
      await compiled.release();

      expect(ref.relError(out.y, yRef.data)).toBeLessThan(TOL);
      const rT = T.of(yRef.shape, r);
      const lossRef = (inp: T[]): number => ref.mul(c.ref(inp), rT).data.reduce((a, b) => a + b, 0);
      ts.forEach((_, i) => {
        const want = ref.numericGrad(lossRef, ts, i);
        expect(want.some((v) => v !== 0)).toBe(true);
        expect(ref.relError(out[`g${i}`], want)).toBeLessThan(TOL);
      });
    });
  }
});

describe('optimizer steps', () => {
  const P = 50;
  const rng = new Rng(9);
  const vec = (f: () => number): Float32Array => Float32Array.from({ length: P }, f);
  const p = vec(() => rng.normal());
  const g0 = vec(() => rng.normal());
  const m = vec(() => rng.normal(0, 0.1));
  const v = vec(() => 0.01 + rng.uniform());
  const target = vec(() => rng.normal());

  /** Adam in float64, from the paper (bias-corrected moments), with global-norm clipping. */
  function adamRef(clip: number, lr: number, t: number): { p: number[]; m: number[]; v: number[] } {
    const norm = Math.sqrt(g0.reduce((s, x) => s + x * x, 0));
    const f = Number.isFinite(clip) ? Math.min(1, clip / (norm + 1e-6)) : 1;
    const out = { p: [] as number[], m: [] as number[], v: [] as number[] };
    for (let i = 0; i < P; i++) {
      const g = g0[i] * f;
      const mi = 0.9 * m[i] + 0.1 * g;
      const vi = 0.999 * v[i] + 0.001 * g * g;
      const mHat = mi / (1 - 0.9 ** t);
      const vHat = vi / (1 - 0.999 ** t);
      out.p.push(p[i] - (lr * mHat) / (Math.sqrt(vHat) + 1e-8));
      out.m.push(mi);
      out.v.push(vi);
    }
    return out;
  }

  for (const clip of [0.5, Infinity]) {
    it(`one Adam step (clip ${clip}) and a Polyak update equal the float64 reference`, async () => {
      const g = new Graph('adam');
      const inp = (n: string): Value => g.input(n, [P]);
      const step = adamStep(
        inp('p'),
        inp('g'),
        inp('m'),
        inp('v'),
        { beta1: 0.9, beta2: 0.999, clipNorm: clip },
        {
          stepSize: g.input('stepSize', []),
          epsHat: g.input('epsHat', []),
        },
      );
      g.output('p1', step.params);
      g.output('m1', step.m);
      g.output('v1', step.v);
      g.output('norm', op.reshape(step.gradNorm, [1]));
      g.output('t1', polyak(inp('t'), step.params, 0.005));
      const c = await CompiledGraph.create(g, engine);
      const clock = new AdamClock({ lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, clipNorm: clip });
      clock.step = 4;
      const s = clock.nextScalars();
      const into = { p1: new Float32Array(P) };
      const out = await c.run({ p, g: g0, m, v, t: target, stepSize: s.stepSize, epsHat: s.epsHat }, into);
      await c.release();
      expect(out.p1).toBe(into.p1); // written into the caller's buffer
      const want = adamRef(clip, 1e-2, 5);
      // The change p1 − p is what Adam computes; compare it, not p1 (dominated by p).
      expect(
        ref.relError(
          out.p1.map((x, i) => x - p[i]),
          want.p.map((x, i) => x - p[i]),
        ),
      ).toBeLessThan(TOL);
      expect(ref.relError(out.m1, want.m)).toBeLessThan(TOL);
      expect(ref.relError(out.v1, want.v)).toBeLessThan(TOL);
      expect(out.norm[0]).toBeCloseTo(Math.sqrt(g0.reduce((a, x) => a + x * x, 0)), 4);
      const polyakRef = want.p.map((x, i) => target[i] + 0.005 * (x - target[i]));
      expect(ref.relError(out.t1, polyakRef)).toBeLessThan(TOL);
    });
  }
});

describe('parameter layouts', () => {
  it('unpack/pack round-trip the flat vector and views alias it', async () => {
    const layout = new ParamLayout([
      { name: 'w', shape: [2, 3] },
      { name: 'b', shape: [3] },
    ]);
    const flat = Float32Array.from({ length: layout.size }, (_, i) => i);
    expect(Array.from(layout.view(flat, 'b'))).toEqual([6, 7, 8]);
    const g = new Graph('layout');
    const parts = layout.unpack(g.input('flat', [layout.size]));
    expect(parts.get('w')?.shape).toEqual([2, 3]);
    g.output('again', layout.pack(new Map([...parts].map(([n, v]) => [n, op.mul(v, 2)]))));
    const c = await CompiledGraph.create(g, engine);
    expect(Array.from((await c.run({ flat })).again)).toEqual(Array.from(flat, (x) => 2 * x));
    await c.release();
  });
});

describe('graph building errors', () => {
  it('names the shapes that do not fit', () => {
    const g = new Graph('bad');
    const a = g.input('a', [2, 3]);
    expect(() => op.add(a, g.input('b', [4]))).toThrow(/\[2,3\] and \[4\] do not broadcast/);
    expect(() => op.matmul(a, g.input('c', [4, 5]))).toThrow(/inner sizes differ/);
    expect(() => op.reshape(a, [4, 2])).toThrow(/cannot reshape/);
    expect(() => g.input('a', [1])).toThrow(/name 'a' is taken/);
  });

  it('refuses a second derivative through conv2d instead of returning zeros', () => {
    const g = new Graph('second');
    const x = g.input('x', [1, 1, 4, 4]);
    const w = g.input('w', [1, 1, 3, 3]);
    const [dx] = grad(op.sum(op.square(op.conv2d(x, w, null))), [x]);
    expect(() => grad(op.sum(dx), [w])).toThrow(/no gradient/);
  });
});

describe('execution provider', () => {
  it('asking for CUDA where it is not installed is a ResrtError that says how to install it', async () => {
    const { existsSync } = await import('node:fs');
    const { cudaProviderPath } = await import('../src/nn/index.js');
    if (existsSync(cudaProviderPath())) return; // a GPU machine: scripts/gpu-check.sh covers it
    const err = await initEngine({ device: 'cuda' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResrtError);
    expect((err as ResrtError).message).toMatch(/CUDA execution provider .* not installed/);
    expect((err as ResrtError).hint).toMatch(/scripts\/gpu-check\.sh/);
    // 'auto' falls back to the CPU and says why.
    const auto = await initEngine({ device: 'auto' });
    expect(auto.device).toBe('cpu');
    expect(auto.description).toMatch(/no CUDA provider installed/);
  });

  it('a spinning pool is its own engine and computes what a sleeping one does', async () => {
    const sleeping = await initEngine({ device: 'cpu', threads: 2 });
    const spinning = await initEngine({ device: 'cpu', threads: 2, spinning: true });
    expect(sleeping.spinning).toBe(false);
    expect(spinning.spinning).toBe(true);
    expect(spinning.description).toMatch(/2 intra-op threads \(spinning\)/);
    const g = new Graph('spin');
    const a = g.input('a', [64, 64]);
    g.output('y', op.relu(op.matmul(a, a)));
    const feed = { a: Float32Array.from({ length: 64 * 64 }, (_, i) => Math.sin(i)) };
    const outs = [];
    for (const e of [sleeping, spinning]) {
      const c = await CompiledGraph.create(g, e);
      outs.push(Array.from((await c.run(feed)).y));
      await c.release();
    }
    expect(outs[1]).toEqual(outs[0]);
  });

  it('rejects an unknown device and a bad thread count with the fix', () => {
    expect(() => initEngine({ device: 'tpu' as never })).toThrow(/use --device auto, cpu or cuda/);
    expect(() => initEngine({ device: 'cpu', threads: 0 })).toThrow(ResrtError);
  });
});
