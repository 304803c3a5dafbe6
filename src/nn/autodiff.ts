/**
 * Reverse-mode autodiff over a graph's tape. `grad(loss, wrt)` appends the backward pass to the
 * same graph and returns ∂loss/∂w for each w. Only ops on a path from some w to the loss get a
 * backward, and each op is asked only for the input gradients on such a path: differentiating an
 * actor's loss through a critic computes the critic's input gradients, never its weight gradients.
 */
import type { Value } from './graph.js';
import { add } from './ops.js';

export function grad(loss: Value, wrt: readonly Value[]): Value[] {
  const g = loss.graph;
  if (loss.size !== 1) throw new Error(`grad: the loss ${loss} must hold one element`);
  if (loss.dtype !== 'float32') throw new Error(`grad: the loss ${loss} must be float32`);
  for (const w of wrt) if (w.graph !== g) throw new Error(`grad: ${w} belongs to another graph`);

  // Values that depend on some w (tape order is topological).
  const dependent = new Set<number>(wrt.map((w) => w.id));
  const end = g.tape.length;
  for (let i = 0; i < end; i++) {
    const e = g.tape[i];
    if (e.inputs.some((v) => dependent.has(v.id))) dependent.add(e.output.id);
  }

  const grads = new Map<number, Value>();
  if (dependent.has(loss.id)) grads.set(loss.id, g.constant([1], loss.shape));
  for (let i = end - 1; i >= 0; i--) {
    const e = g.tape[i];
    const gy = grads.get(e.output.id);
    if (!gy) continue;
    const need = e.inputs.map((v) => v.dtype === 'float32' && dependent.has(v.id));
    if (!need.some(Boolean)) continue;
    const gx = e.backward(gy, need);
    e.inputs.forEach((v, j) => {
      const d = gx[j];
      if (!need[j] || !d) return;
      const prev = grads.get(v.id);
      grads.set(v.id, prev ? add(prev, d) : d);
    });
  }
  return wrt.map((w) => grads.get(w.id) ?? g.constant(new Float32Array(w.size), w.shape));
}
