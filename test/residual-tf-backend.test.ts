import { describe, expect, it } from 'vitest';
import { initTf } from '../src/util/tf-backend.js';

/** Plain-JS reference for C = op(A)·op(B) on 2-D row-major arrays. */
function matmulRef(a: number[][], b: number[][], ta: boolean, tb: boolean): number[][] {
  const A = ta ? a[0].map((_, j) => a.map((r) => r[j])) : a;
  const B = tb ? b[0].map((_, j) => b.map((r) => r[j])) : b;
  return A.map((row) => B[0].map((_, j) => row.reduce((s, v, k) => s + v * B[k][j], 0)));
}

describe('tf-backend', () => {
  it('selects a backend and says which', async () => {
    const { tf, backend, description } = await initTf();
    expect(['tensorflow', 'wasm', 'cpu']).toContain(backend);
    expect(tf.getBackend()).toBe(backend);
    expect(description.length).toBeGreaterThan(0);
  });

  it('matMul values and gradients match a hand computation for every transpose flag', async () => {
    const { tf } = await initTf();
    // L = sum(R ⊙ op(A)op(B)): dL/dop(A) = R·op(B)ᵀ, dL/dop(B) = op(A)ᵀ·R.
    const a0 = [
      [1, 2, -1],
      [0.5, -3, 2],
    ];
    const b0 = [
      [2, -1, 0.5, 1],
      [1, 0, -2, 3],
      [-1, 4, 1, 0],
    ];
    const r = [
      [1, -2, 0.5, 3],
      [2, 1, -1, 0.25],
    ];
    for (const [ta, tb] of [
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ] as const) {
      const aIn = ta ? a0[0].map((_, j) => a0.map((row) => row[j])) : a0;
      const bIn = tb ? b0[0].map((_, j) => b0.map((row) => row[j])) : b0;
      const A = tf.tensor2d(aIn);
      const B = tf.tensor2d(bIn);
      const R = tf.tensor2d(r);
      const out = tf.matMul(A, B, ta, tb);
      expect(out.arraySync()).toEqual(
        matmulRef(aIn, bIn, ta, tb).map((row) => row.map((v) => expect.closeTo(v, 5))),
      );
      const [gA, gB] = tf.grads(
        (x: import('@tensorflow/tfjs').Tensor, y: import('@tensorflow/tfjs').Tensor) =>
          tf.sum(tf.mul(R, tf.matMul(x, y, ta, tb))),
      )([A, B]);
      const dOpA = matmulRef(r, b0, false, true); // [2,3]
      const dOpB = matmulRef(a0, r, true, false); // [3,4]
      const wantA = ta ? dOpA[0].map((_, j) => dOpA.map((row) => row[j])) : dOpA;
      const wantB = tb ? dOpB[0].map((_, j) => dOpB.map((row) => row[j])) : dOpB;
      expect(gA.arraySync()).toEqual(wantA.map((row) => row.map((v) => expect.closeTo(v, 4))));
      expect(gB.arraySync()).toEqual(wantB.map((row) => row.map((v) => expect.closeTo(v, 4))));
      tf.dispose([A, B, R, out, gA, gB]);
    }
  });

  it('batched matMul gradients match per-slice gradients', async () => {
    const { tf } = await initTf();
    const a = tf.randomNormal([3, 4, 5], 0, 1, 'float32', 1);
    const b = tf.randomNormal([3, 5, 2], 0, 1, 'float32', 2);
    const [ga, gb] = tf.grads((x: import('@tensorflow/tfjs').Tensor, y: import('@tensorflow/tfjs').Tensor) =>
      tf.sum(tf.square(tf.matMul(x, y))),
    )([a, b]);
    for (let h = 0; h < 3; h++) {
      const ah = a.slice([h, 0, 0], [1, 4, 5]).reshape([4, 5]).arraySync() as number[][];
      const bh = b.slice([h, 0, 0], [1, 5, 2]).reshape([5, 2]).arraySync() as number[][];
      const c = matmulRef(ah, bh, false, false).map((row) => row.map((v) => 2 * v));
      const wantA = matmulRef(c, bh, false, true);
      const wantB = matmulRef(ah, c, true, false);
      const gotA = ga.slice([h, 0, 0], [1, 4, 5]).reshape([4, 5]).arraySync() as number[][];
      const gotB = gb.slice([h, 0, 0], [1, 5, 2]).reshape([5, 2]).arraySync() as number[][];
      expect(gotA).toEqual(wantA.map((row) => row.map((v) => expect.closeTo(v, 3))));
      expect(gotB).toEqual(wantB.map((row) => row.map((v) => expect.closeTo(v, 3))));
    }
  });

  it('sums the gradient over broadcast batch dimensions ([B,k]·[H,k,n])', async () => {
    const { tf } = await initTf();
    const x = tf.randomNormal([4, 3], 0, 1, 'float32', 7);
    const w = tf.randomNormal([2, 3, 5], 0, 1, 'float32', 8);
    const [gx, gw] = tf.grads((a: import('@tensorflow/tfjs').Tensor, b: import('@tensorflow/tfjs').Tensor) =>
      tf.sum(tf.matMul(a, b)),
    )([x, w]);
    expect(gx.shape).toEqual([4, 3]);
    expect(gw.shape).toEqual([2, 3, 5]);
    // d/dx Σ x·W_h = Σ_h W_h·1 (row sums of each head's W, added over heads).
    const wv = w.arraySync() as number[][][];
    const want = [0, 1, 2].map((k) => wv.reduce((s, head) => s + head[k].reduce((a, b) => a + b, 0), 0));
    for (const row of gx.arraySync() as number[][]) row.forEach((v, k) => expect(v).toBeCloseTo(want[k], 4));
  });
});
