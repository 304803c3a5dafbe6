/**
 * Optimizer steps built into the training graph: Adam with global-norm gradient clipping on a
 * network's flat parameter vector, and Polyak averaging of target networks. The step-dependent
 * scalars (bias corrections) are graph inputs computed here in float64, so one graph serves every
 * step and the step count checkpoints as a plain number.
 */
import { grad } from './autodiff.js';
import type { Graph, Value } from './graph.js';
import { add, div, minimum, mul, reshape, sqrt, square, sub, sumSquares } from './ops.js';
import type { ParamLayout } from './params.js';

export interface AdamConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Global-norm clip of the gradient before the step; Infinity turns clipping off. */
  clipNorm: number;
}

export const adamDefaults = { beta1: 0.9, beta2: 0.999, eps: 1e-8 } as const;

/** The per-step scalars of one Adam step, as graph inputs (shape []). */
export interface AdamScalars {
  /** lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ) */
  stepSize: Value;
  /** ε · √(1 − β₂ᵗ): ε on the bias-corrected second moment, moved onto the raw one. */
  epsHat: Value;
}

export interface AdamResult {
  params: Value;
  m: Value;
  v: Value;
  /** ‖g‖ before clipping. */
  gradNorm: Value;
}

/**
 * One Adam step (Kingma & Ba) of a network's flat parameters p with gradient g and moments m, v:
 *   g ← g · min(1, clip / (‖g‖ + 1e-6));  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
 *   p ← p − stepSize · m / (√v + epsHat)
 */
export function adamStep(
  p: Value,
  g0: Value,
  m0: Value,
  v0: Value,
  cfg: Pick<AdamConfig, 'beta1' | 'beta2' | 'clipNorm'>,
  scalars: AdamScalars,
): AdamResult {
  const gradNorm = sqrt(sumSquares(g0));
  const g = Number.isFinite(cfg.clipNorm) ? mul(g0, minimum(1, div(cfg.clipNorm, add(gradNorm, 1e-6)))) : g0;
  const m = add(mul(m0, cfg.beta1), mul(g, 1 - cfg.beta1));
  const v = add(mul(v0, cfg.beta2), mul(square(g), 1 - cfg.beta2));
  const params = sub(p, mul(div(m, add(sqrt(v), scalars.epsHat)), scalars.stepSize));
  return { params, m, v, gradNorm };
}

/** target + τ·(online − target) */
export function polyak(target: Value, online: Value, tau: number): Value {
  return add(target, mul(sub(online, target), tau));
}

/** The step count of one Adam optimizer and the scalars its next step needs. */
export class AdamClock {
  step = 0;

  constructor(readonly cfg: AdamConfig) {}

  /** Scalars for step `step + 1` (call `commit()` once that step is kept). */
  nextScalars(): { stepSize: Float32Array; epsHat: Float32Array } {
    const t = this.step + 1;
    const c1 = 1 - this.cfg.beta1 ** t;
    const c2 = 1 - this.cfg.beta2 ** t;
    return {
      stepSize: Float32Array.of((this.cfg.lr * Math.sqrt(c2)) / c1),
      epsHat: Float32Array.of(this.cfg.eps * Math.sqrt(c2)),
    };
  }

  commit(): void {
    this.step++;
  }
}

/**
 * The tail of every one-run training graph: the loss's gradient with respect to each parameter of
 * `layout`, one Adam step on the flat `params` vector (inputs `m`, `v`, `stepSize`, `epsHat`), and
 * the outputs `next:params`, `next:m`, `next:v` and `loss` the callers' double buffers expect.
 */
export function addAdamUpdate(
  g: Graph,
  layout: ParamLayout,
  params: Value,
  unpacked: ReadonlyMap<string, Value>,
  loss: Value,
  cfg: Pick<AdamConfig, 'beta1' | 'beta2' | 'clipNorm'>,
): void {
  const names = layout.entries.map((e) => e.name);
  const grads = grad(
    loss,
    names.map((n) => unpacked.get(n) as Value),
  );
  const step = adamStep(
    params,
    layout.pack(new Map(names.map((n, i) => [n, grads[i]]))),
    g.input('m', [layout.size]),
    g.input('v', [layout.size]),
    cfg,
    { stepSize: g.input('stepSize', []), epsHat: g.input('epsHat', []) },
  );
  g.output('next:params', step.params);
  g.output('next:m', step.m);
  g.output('next:v', step.v);
  g.output('loss', reshape(loss, [1]));
}
