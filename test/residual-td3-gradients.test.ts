import { beforeAll, describe, expect, it } from 'vitest';
import { AdamClock, CompiledGraph, Graph, initEngine, type Engine } from '../src/nn/index.js';
import { makeConfig } from '../src/residual/config.js';
import { network, type Network } from '../src/residual/networks.js';
import {
  actorLoss,
  batchInputs,
  buildUpdateGraph,
  criticLoss,
  flatGradient,
  next,
  STATS,
  type Td3Dims,
  type Td3Nets,
} from '../src/residual/td3-graph.js';
import { Rng } from '../src/util/rng.js';
import * as ref from './nn-reference.js';
import { T } from './nn-reference.js';

/**
 * The TD3 losses, their gradients and one whole update (critic Adam step, actor Adam step on the
 * updated critic, Polyak targets) against a float64 reference written from the formulas in
 * td3-graph.ts, on a fixed batch, through the graphs the learner runs.
 */

const O = 3;
const A = 2;
const B = 6;
const HEADS = 3;
const DRAWN = [1, 0];
const cfg = makeConfig('cpu', {
  actorHidden: [5, 4],
  criticHidden: [5, 4],
  numCritics: HEADS,
  targetSubset: 2,
  batchSize: B,
  criticInput: 'residual',
  actorLr: 3e-3,
  criticLr: 2e-3,
  gradClip: 1.0,
});
const dims: Td3Dims = { obsDim: O, actionDim: A, baseDim: A };
const nets: Td3Nets = {
  actor: network('actor', { inDim: O + A, hidden: cfg.actorHidden, outDim: A, layerNorm: true }),
  critic: network('critic', {
    inDim: O + 2 * A,
    hidden: cfg.criticHidden,
    outDim: 1,
    layerNorm: true,
    heads: HEADS,
  }),
};

let engine: Engine;
beforeAll(async () => {
  engine = await initEngine({ device: 'cpu', threads: 1 });
});

// -- a fixed batch and parameters (float32 values, shared by both sides) -----------------------------

const rng = new Rng(42);
const f32 = (n: number, f: () => number): Float32Array => Float32Array.from({ length: n }, f);
/** Random parameters: every tensor nonzero (the actor's zero-initialised output layer too). */
const params = (net: Network): Float32Array => {
  const flat = new Float32Array(net.layout.size);
  for (const e of net.layout.entries) {
    const v = net.layout.view(flat, e.name);
    const gamma = e.name.endsWith('gamma');
    for (let i = 0; i < v.length; i++) v[i] = gamma ? 1 + rng.normal(0, 0.2) : rng.normal(0, 0.5);
  }
  return flat;
};
const state = {
  actor: params(nets.actor),
  actorTarget: params(nets.actor),
  critic: params(nets.critic),
  criticTarget: params(nets.critic),
};
const batch = {
  obs: f32(B * O, () => rng.normal()),
  base: f32(B * A, () => rng.range(-0.5, 0.5)),
  action: f32(B * A, () => rng.range(-0.6, 0.6)),
  reward: f32(B, () => (rng.uniform() < 0.3 ? 1 : 0)),
  discount: f32(B, () => (rng.uniform() < 0.2 ? 0 : 0.99 ** 3)),
  nextObs: f32(B * O, () => rng.normal()),
  nextBase: f32(B * A, () => rng.range(-0.5, 0.5)),
  noise: f32(B * A, () => Math.max(-0.1, Math.min(0.1, rng.normal(0, 0.05)))),
  heads: BigInt64Array.from(DRAWN, (h) => BigInt(h)),
};
const heldBack = Float32Array.from([1, 0, 0, 1, 1, 0]);
const bcWeight = 0.4;

// -- float64 reference --------------------------------------------------------------------------------

const mlp = ref.mlp;

const t = (shape: number[], v: ArrayLike<number>): T => T.of(shape, v);
const scale = cfg.actionScale;
const residualRef = (actor: Float64Array, obs: T, base: T): T =>
  ref.mul(ref.tanh(mlp(nets.actor, actor, ref.concat([obs, base], 1))), ref.scalar(scale));
const criticInRef = (obs: T, base: T, act: T): T =>
  ref.concat([obs, base, ref.mul(ref.sub(act, base), ref.scalar(1 / scale))], 1);
const qRef = (critic: Float64Array, x: T): T => ref.reshape(mlp(nets.critic, critic, x), [HEADS, B]);

const obsT = t([B, O], batch.obs);
const baseT = t([B, A], batch.base);

function targetRef(actorTarget: Float64Array, criticTarget: Float64Array, drawn = DRAWN): Float64Array {
  const nextObs = t([B, O], batch.nextObs);
  const nextBase = t([B, A], batch.nextBase);
  const res = ref.clip(
    ref.add(residualRef(actorTarget, nextObs, nextBase), t([B, A], batch.noise)),
    -scale,
    scale,
  );
  const act = ref.clip(ref.add(nextBase, res), -1, 1);
  const q = qRef(criticTarget, criticInRef(nextObs, nextBase, act));
  return Float64Array.from({ length: B }, (_, i) => {
    const qMin = Math.min(...drawn.map((h) => q.data[h * B + i]));
    return batch.reward[i] + batch.discount[i] * qMin;
  });
}
const y = targetRef(Float64Array.from(state.actorTarget), Float64Array.from(state.criticTarget));

function criticLossRef(critic: Float64Array): number {
  const q = qRef(critic, criticInRef(obsT, baseT, t([B, A], batch.action)));
  let loss = 0;
  for (let h = 0; h < HEADS; h++) for (let i = 0; i < B; i++) loss += (q.data[h * B + i] - y[i]) ** 2 / B;
  return loss;
}

function qAbsMeanRef(critic: Float64Array): number {
  const q = qRef(critic, criticInRef(obsT, baseT, t([B, A], batch.action)));
  return q.data.reduce((s, v) => s + Math.abs(v), 0) / q.size;
}

function actorLossRef(actor: Float64Array, critic: Float64Array, qAbsMean: number): number {
  const res = residualRef(actor, obsT, baseT);
  const act = ref.clip(ref.add(baseT, res), -1, 1);
  const q = qRef(critic, criticInRef(obsT, baseT, act));
  const objective = -q.data.reduce((s, v) => s + v, 0) / q.size;
  let bc = 0;
  for (let i = 0; i < B; i++) {
    let row = 0;
    for (let j = 0; j < A; j++) {
      const executed = batch.action[i * A + j] - batch.base[i * A + j];
      row += ((res.data[i * A + j] - executed) / scale) ** 2 / A;
    }
    bc += (row * heldBack[i]) / B;
  }
  return objective + bcWeight * qAbsMean * bc;
}

function gradOf(f: (p: Float64Array) => number, at: Float32Array): Float64Array {
  const p = T.of([at.length], at);
  return ref.numericGrad(([x]) => f(x.data), [p], 0);
}

/** Adam step in float64 with global-norm clipping (docs: src/nn/optim.ts), then Polyak. */
function adamRef(
  p: Float32Array,
  g: Float64Array,
  m: Float32Array,
  v: Float32Array,
  lr: number,
  step: number,
) {
  const norm = Math.sqrt(g.reduce((s, x) => s + x * x, 0));
  const f = Math.min(1, cfg.gradClip / (norm + 1e-6));
  const out = {
    p: new Float64Array(p.length),
    m: new Float64Array(p.length),
    v: new Float64Array(p.length),
    norm,
  };
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * f;
    out.m[i] = 0.9 * m[i] + 0.1 * gi;
    out.v[i] = 0.999 * v[i] + 0.001 * gi * gi;
    const mHat = out.m[i] / (1 - 0.9 ** step);
    const vHat = out.v[i] / (1 - 0.999 ** step);
    out.p[i] = p[i] - (lr * mHat) / (Math.sqrt(vHat) + 1e-8);
  }
  return out;
}

const TOL = 1e-4;

describe('TD3 losses and their gradients equal the float64 reference (≤ 1e-4 relative)', () => {
  it('critic loss (REDQ target over the drawn heads) and actor loss (with the TD3+BC term)', async () => {
    const g = new Graph('losses');
    const flat = (name: string, net: Network) => g.input(name, [net.layout.size]);
    const critic = nets.critic.layout.unpack(flat('critic', nets.critic));
    const actor = nets.actor.layout.unpack(flat('actor', nets.actor));
    const b = batchInputs(g, dims, B, cfg);
    const lq = criticLoss(
      nets,
      cfg,
      dims,
      {
        critic,
        actorTarget: nets.actor.layout.unpack(flat('actorTarget', nets.actor)),
        criticTarget: nets.critic.layout.unpack(flat('criticTarget', nets.critic)),
      },
      b,
    );
    const lp = actorLoss(nets, cfg, dims, { actor, critic }, b, {
      heldBack: g.input('heldBack', [B]),
      weight: g.input('bcWeight', []),
      qAbsMean: g.input('qAbsMean', []),
    });
    g.output('lossQ', lq.loss);
    g.output('gradQ', flatGradient(lq.loss, nets.critic, critic));
    g.output('lossPi', lp);
    g.output('gradPi', flatGradient(lp, nets.actor, actor));
    const c = await CompiledGraph.create(g, engine);
    const qAbs = qAbsMeanRef(Float64Array.from(state.critic));
    const out = await c.run({
      ...state,
      ...batch,
      heldBack,
      bcWeight: Float32Array.of(bcWeight),
      qAbsMean: Float32Array.of(qAbs),
    });
    await c.release();

    expect(out.lossQ[0]).toBeCloseTo(criticLossRef(Float64Array.from(state.critic)), 4);
    const gq = gradOf(criticLossRef, state.critic);
    expect(ref.relError(out.gradQ, gq)).toBeLessThan(TOL);

    const piRef = (p: Float64Array): number =>
      actorLossRef(p, Float64Array.from(state.critic), Math.fround(qAbs));
    expect(out.lossPi[0]).toBeCloseTo(piRef(Float64Array.from(state.actor)), 4);
    const gp = gradOf(piRef, state.actor);
    expect(ref.relError(out.gradPi, gp)).toBeLessThan(TOL);
    // The fixture exercises what it should: the BC term moves the gradient, the norm clips.
    const noBc = gradOf((p) => actorLossRef(p, Float64Array.from(state.critic), 0), state.actor);
    expect(ref.relError(noBc, gp)).toBeGreaterThan(0.01);
    expect(Math.hypot(...gq)).toBeGreaterThan(cfg.gradClip);
    // The min over the drawn pair differs from the min over all heads somewhere (else REDQ is moot).
    const yAll = targetRef(
      Float64Array.from(state.actorTarget),
      Float64Array.from(state.criticTarget),
      [0, 1, 2],
    );
    expect(ref.relError(yAll, y)).toBeGreaterThan(0.01);
  });

  it('one whole critic + actor update equals the float64 reference: Adam on the critic, Adam on the actor through the updated critic, Polyak targets', async () => {
    const c = await CompiledGraph.create(buildUpdateGraph(nets, cfg, dims, true), engine);
    const moments = (n: number) => ({
      m: f32(n, () => rng.normal(0, 0.05)),
      v: f32(n, () => 0.001 + 0.01 * rng.uniform()),
    });
    const cm = moments(nets.critic.layout.size);
    const am = moments(nets.actor.layout.size);
    const step = 7;
    const clock = (lr: number) => {
      const k = new AdamClock({ lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, clipNorm: cfg.gradClip });
      k.step = step - 1;
      return k.nextScalars();
    };
    const cs = clock(cfg.criticLr);
    const as = clock(cfg.actorLr);
    const out = await c.run({
      ...state,
      'criticAdam/m': cm.m,
      'criticAdam/v': cm.v,
      'actorAdam/m': am.m,
      'actorAdam/v': am.v,
      ...batch,
      heldBack,
      bcWeight: Float32Array.of(bcWeight),
      'critic/stepSize': cs.stepSize,
      'critic/epsHat': cs.epsHat,
      'actor/stepSize': as.stepSize,
      'actor/epsHat': as.epsHat,
    });
    await c.release();

    const critic64 = Float64Array.from(state.critic);
    const qAbs = qAbsMeanRef(critic64);
    const cr = adamRef(state.critic, gradOf(criticLossRef, state.critic), cm.m, cm.v, cfg.criticLr, step);
    const delta = (a: ArrayLike<number>, b: ArrayLike<number>) => Float64Array.from(a, (x, i) => x - b[i]);
    expect(ref.relError(delta(out[next('critic')], state.critic), delta(cr.p, state.critic))).toBeLessThan(
      TOL,
    );
    expect(ref.relError(out[next('criticAdam/m')], cr.m)).toBeLessThan(TOL);
    expect(ref.relError(out[next('criticAdam/v')], cr.v)).toBeLessThan(TOL);
    const criticTarget = cr.p.map((x, i) => state.criticTarget[i] + cfg.tau * (x - state.criticTarget[i]));
    expect(
      ref.relError(
        delta(out[next('criticTarget')], state.criticTarget),
        delta(criticTarget, state.criticTarget),
      ),
    ).toBeLessThan(TOL);

    // The actor step differentiates through the critic as just updated.
    const piRef = (p: Float64Array): number => actorLossRef(p, cr.p, Math.fround(qAbs));
    const ar = adamRef(state.actor, gradOf(piRef, state.actor), am.m, am.v, cfg.actorLr, step);
    expect(ref.relError(delta(out[next('actor')], state.actor), delta(ar.p, state.actor))).toBeLessThan(TOL);
    expect(ref.relError(out[next('actorAdam/m')], ar.m)).toBeLessThan(TOL);
    expect(ref.relError(out[next('actorAdam/v')], ar.v)).toBeLessThan(TOL);
    const actorTarget = ar.p.map((x, i) => state.actorTarget[i] + cfg.tau * (x - state.actorTarget[i]));
    expect(
      ref.relError(delta(out[next('actorTarget')], state.actorTarget), delta(actorTarget, state.actorTarget)),
    ).toBeLessThan(TOL);

    const stats = Object.fromEntries(STATS.map((k, i) => [k, out.stats[i]]));
    expect(stats.criticLoss).toBeCloseTo(criticLossRef(critic64), 4);
    expect(stats.qAbsMean).toBeCloseTo(qAbs, 5);
    expect(stats.criticGradNorm / cr.norm).toBeCloseTo(1, 4);
    expect(stats.actorLoss).toBeCloseTo(piRef(Float64Array.from(state.actor)), 4);
  });
});
