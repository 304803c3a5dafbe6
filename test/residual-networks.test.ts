import { beforeAll, describe, expect, it } from 'vitest';
import type * as tfjs from '@tensorflow/tfjs';
import { initTf, type Tf } from '../src/util/tf-backend.js';
import { denseLayer, LAYER_NORM_EPS } from '../src/residual/networks.js';

let tf: Tf;
beforeAll(async () => {
  ({ tf } = await initTf());
});

/** The same layer written with tfjs's generic ops and gradients, as the reference. */
function reference(
  x: tfjs.Tensor,
  w: tfjs.Tensor,
  b: tfjs.Tensor,
  g: tfjs.Tensor | null,
  be: tfjs.Tensor | null,
  relu: boolean,
) {
  let y = tf.add(tf.matMul(x, w), b);
  if (g && be) {
    const { mean, variance } = tf.moments(y, -1, true);
    y = tf.add(tf.mul(tf.div(tf.sub(y, mean), tf.sqrt(tf.add(variance, LAYER_NORM_EPS))), g), be);
  }
  return relu ? tf.relu(y) : y;
}

describe('denseLayer (hand-written gradient)', () => {
  const cases = [
    { name: 'plain, LayerNorm + ReLU', x: [6, 5], w: [5, 4], b: [4], ln: true, relu: true },
    { name: 'plain, linear output', x: [6, 5], w: [5, 1], b: [1], ln: false, relu: false },
    { name: 'ensemble, shared input', x: [6, 5], w: [3, 5, 4], b: [3, 1, 4], ln: true, relu: true },
    { name: 'ensemble, per-head input', x: [3, 6, 5], w: [3, 5, 4], b: [3, 1, 4], ln: true, relu: true },
    { name: 'ensemble output head', x: [3, 6, 4], w: [3, 4, 1], b: [3, 1, 1], ln: false, relu: false },
  ];
  for (const c of cases) {
    it(`matches autodiff values and gradients: ${c.name}`, () => {
      tf.tidy(() => {
        let seed = 10;
        const rnd = (shape: number[]) => tf.randomNormal(shape, 0, 1, 'float32', seed++);
        const x = rnd(c.x);
        const w = rnd(c.w);
        const b = rnd(c.b);
        const g = c.ln ? tf.add(rnd(c.b), 1) : null;
        const be = c.ln ? rnd(c.b) : null;
        const up = rnd([...(c.w.length === 3 ? [c.w[0]] : []), c.x[c.x.length - 2], c.w[c.w.length - 1]]);
        const inputs = g && be ? [x, w, b, g, be] : [x, w, b];
        const loss =
          (fn: (...t: tfjs.Tensor[]) => tfjs.Tensor) =>
          (...t: tfjs.Tensor[]) =>
            tf.sum(tf.mul(fn(...t), up));
        const mine = (...t: tfjs.Tensor[]) =>
          denseLayer(tf, t[0], t[1], t[2], t[3] && t[4] ? { gamma: t[3], beta: t[4] } : null, c.relu);
        const ref = (...t: tfjs.Tensor[]) => reference(t[0], t[1], t[2], t[3] ?? null, t[4] ?? null, c.relu);
        const v1 = mine(...inputs).dataSync();
        const v2 = ref(...inputs).dataSync();
        v1.forEach((v, i) => expect(v).toBeCloseTo(v2[i], 4));
        const g1 = tf.grads(loss(mine))(inputs);
        const g2 = tf.grads(loss(ref))(inputs);
        g1.forEach((t, k) => {
          expect(t.shape).toEqual(inputs[k].shape);
          const a = t.dataSync();
          const r = g2[k].dataSync();
          a.forEach((v, i) => expect(v).toBeCloseTo(r[i], 3));
        });
      });
    });
  }
});
