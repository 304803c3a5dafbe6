import { beforeAll, describe, expect, it } from 'vitest';
import { AdamClock, CompiledGraph, Graph, initEngine, op, type Engine } from '../src/nn/index.js';
import { makeConfig, profiles } from '../src/residual/config.js';
import { ResrtError } from '../src/util/errors.js';
import { learnedEncoderNet, nextImagesInput, obsImagesInput } from '../src/residual/learned-encoder.js';
import { network, type Network } from '../src/residual/networks.js';
import {
  actorLoss,
  batchInputs,
  buildUpdateGraph,
  criticLoss,
  encodedBatches,
  flatGradients,
  next,
  type Td3Dims,
  type Td3Nets,
} from '../src/residual/td3-graph.js';
import { Rng } from '../src/util/rng.js';
import * as ref from './nn-reference.js';
import { T } from './nn-reference.js';

/**
 * The learned encoder (ResFiT) in the TD3 update against a float64 reference written from the
 * formulas: the critic loss's gradient of the encoder's parameters (the encoder features in front
 * of the state, the TD target through the target encoder), the encoder's Adam step at the critic's
 * rate and its Polyak target inside one whole update, and the actor loss giving the encoder
 * exactly zero gradient although the encoder's features do change the actor loss.
 */

const O = 3;
const A = 2;
const B = 4;
const HEADS = 2;
const H = 8;
const W = 8;
const F = 3;
const cfg = makeConfig('cpu', {
  actorHidden: [5],
  criticHidden: [5],
  numCritics: HEADS,
  targetSubset: 2,
  batchSize: B,
  criticInput: 'residual',
  encoder: 'learned',
  encoderChannels: [2, 3],
  encoderFeatures: F,
  criticLr: 2e-3,
  actorLr: 3e-3,
  gradClip: 1.0,
});
const encoderNet = learnedEncoderNet(cfg, [{ name: 'top', width: W, height: H, channels: 3 }]);
const dims: Td3Dims = { obsDim: O, actionDim: A, baseDim: A };
const nets: Td3Nets = {
  encoder: encoderNet,
  actor: network('actor', { inDim: F + O + A, hidden: cfg.actorHidden, outDim: A, layerNorm: true }),
  critic: network('critic', {
    inDim: F + O + 2 * A,
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

const rng = new Rng(7);
const f32 = (n: number, f: () => number): Float32Array => Float32Array.from({ length: n }, f);
const randomParams = (layout: Network['layout']): Float32Array => {
  const flat = new Float32Array(layout.size);
  for (const e of layout.entries) {
    const v = layout.view(flat, e.name);
    const gamma = e.name.endsWith('gamma');
    for (let i = 0; i < v.length; i++) v[i] = gamma ? 1 + rng.normal(0, 0.2) : rng.normal(0, 0.5);
  }
  return flat;
};
const state = {
  actor: randomParams(nets.actor.layout),
  actorTarget: randomParams(nets.actor.layout),
  critic: randomParams(nets.critic.layout),
  criticTarget: randomParams(nets.critic.layout),
  encoder: randomParams(encoderNet.layout),
  encoderTarget: randomParams(encoderNet.layout),
};
const images = {
  obs: f32(B * 3 * H * W, () => rng.uniform()),
  next: f32(B * 3 * H * W, () => rng.uniform()),
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
  heads: BigInt64Array.from([1, 0], (h) => BigInt(h)),
  [obsImagesInput(0)]: images.obs,
  [nextImagesInput(0)]: images.next,
};
const heldBack = Float32Array.from([1, 0, 0, 1]);
const bcWeight = 0.4;

// -- float64 reference --------------------------------------------------------------------------------

const t = (shape: number[], v: ArrayLike<number>): T => T.of(shape, v);

/** The camera's conv encoder (enc0/…) on the batch's images. */
const encoderRef = (flat: Float64Array, images: Float32Array): T =>
  ref.convEncoder(t([B, 3, H, W], images), (name) => ref.paramOf(encoderNet.layout, flat, `enc0/${name}`), {
    channels: cfg.encoderChannels,
  });
const mlp = ref.mlp;

const scale = cfg.actionScale;
const residualRef = (actor: Float64Array, obs: T, base: T): T =>
  ref.mul(ref.tanh(mlp(nets.actor, actor, ref.concat([obs, base], 1))), ref.scalar(scale));
const criticInRef = (obs: T, base: T, act: T): T =>
  ref.concat([obs, base, ref.mul(ref.sub(act, base), ref.scalar(1 / scale))], 1);
const qRef = (critic: Float64Array, x: T): T => ref.reshape(mlp(nets.critic, critic, x), [HEADS, B]);
const f64 = (a: Float32Array): Float64Array => Float64Array.from(a);
const baseT = t([B, A], batch.base);

/** The TD target through the target encoder, target actor and target critic (both heads drawn). */
function targetRef(): Float64Array {
  const nextObs = ref.concat(
    [encoderRef(f64(state.encoderTarget), images.next), t([B, O], batch.nextObs)],
    1,
  );
  const nextBase = t([B, A], batch.nextBase);
  const res = ref.clip(
    ref.add(residualRef(f64(state.actorTarget), nextObs, nextBase), t([B, A], batch.noise)),
    -scale,
    scale,
  );
  const q = qRef(
    f64(state.criticTarget),
    criticInRef(nextObs, nextBase, ref.clip(ref.add(nextBase, res), -1, 1)),
  );
  return Float64Array.from(
    { length: B },
    (_, i) => batch.reward[i] + batch.discount[i] * Math.min(q.data[i], q.data[B + i]),
  );
}
const y = targetRef();

const obsWith = (encoder: Float64Array): T =>
  ref.concat([encoderRef(encoder, images.obs), t([B, O], batch.obs)], 1);

function criticLossRef(critic: Float64Array, encoder: Float64Array): number {
  const q = qRef(critic, criticInRef(obsWith(encoder), baseT, t([B, A], batch.action)));
  let loss = 0;
  for (let h = 0; h < HEADS; h++) for (let i = 0; i < B; i++) loss += (q.data[h * B + i] - y[i]) ** 2 / B;
  return loss;
}

function actorLossRef(
  actor: Float64Array,
  critic: Float64Array,
  encoder: Float64Array,
  qAbsMean: number,
): number {
  const obs = obsWith(encoder);
  const res = residualRef(actor, obs, baseT);
  const q = qRef(critic, criticInRef(obs, baseT, ref.clip(ref.add(baseT, res), -1, 1)));
  let bc = 0;
  for (let i = 0; i < B; i++) {
    let row = 0;
    for (let j = 0; j < A; j++)
      row += ((res.data[i * A + j] - (batch.action[i * A + j] - batch.base[i * A + j])) / scale) ** 2 / A;
    bc += (row * heldBack[i]) / B;
  }
  return -q.data.reduce((s, v) => s + v, 0) / q.size + bcWeight * qAbsMean * bc;
}

const gradOf = (f: (p: Float64Array) => number, at: Float32Array): Float64Array =>
  ref.numericGrad(([x]) => f(x.data), [T.of([at.length], at)], 0);

const TOL = 1e-4;

describe('learned encoder in the TD3 update (float64 reference, ≤ 1e-4 relative)', () => {
  it('the critic loss trains the encoder with the right gradient; the actor loss gives it exactly zero', async () => {
    const g = new Graph('learned_losses');
    const input = (name: keyof typeof state, layout: Network['layout']) =>
      layout.unpack(g.input(name, [layout.size]));
    const critic = input('critic', nets.critic.layout);
    const actor = input('actor', nets.actor.layout);
    const encoder = input('encoder', encoderNet.layout);
    const encoded = encodedBatches(g, encoderNet, batchInputs(g, dims, B, cfg), {
      encoder,
      encoderTarget: input('encoderTarget', encoderNet.layout),
    });
    const lq = criticLoss(
      nets,
      cfg,
      dims,
      {
        critic,
        actorTarget: input('actorTarget', nets.actor.layout),
        criticTarget: input('criticTarget', nets.critic.layout),
      },
      encoded.critic,
    );
    const lp = actorLoss(nets, cfg, dims, { actor, critic }, encoded.actor, {
      heldBack: g.input('heldBack', [B]),
      weight: g.input('bcWeight', []),
      qAbsMean: g.input('qAbsMean', []),
    });
    const [gradCritic, gradEncoder] = flatGradients(lq.loss, [
      { layout: nets.critic.layout, params: critic },
      { layout: encoderNet.layout, params: encoder },
    ]);
    const [gradActor, actorGradEncoder] = flatGradients(lp, [
      { layout: nets.actor.layout, params: actor },
      { layout: encoderNet.layout, params: encoder },
    ]);
    g.output('lossQ', lq.loss);
    g.output('gradCritic', gradCritic);
    g.output('gradEncoder', gradEncoder);
    g.output('lossPi', lp);
    g.output('gradActor', gradActor);
    g.output('actorGradEncoder', op.add(actorGradEncoder, 0));
    const c = await CompiledGraph.create(g, engine);
    const qAbs = 0.7;
    const out = await c.run({
      ...state,
      ...batch,
      heldBack,
      bcWeight: Float32Array.of(bcWeight),
      qAbsMean: Float32Array.of(qAbs),
    });
    await c.release();

    const critic64 = f64(state.critic);
    const encoder64 = f64(state.encoder);
    expect(out.lossQ[0]).toBeCloseTo(criticLossRef(critic64, encoder64), 4);
    const refEncoderGrad = gradOf((p) => criticLossRef(critic64, p), state.encoder);
    expect(Math.max(...refEncoderGrad.map(Math.abs))).toBeGreaterThan(1e-3);
    expect(ref.relError(out.gradEncoder, refEncoderGrad)).toBeLessThan(TOL);
    expect(
      ref.relError(
        out.gradCritic,
        gradOf((p) => criticLossRef(p, encoder64), state.critic),
      ),
    ).toBeLessThan(TOL);

    const piRef = (actor64: Float64Array, enc: Float64Array) => actorLossRef(actor64, critic64, enc, qAbs);
    expect(out.lossPi[0]).toBeCloseTo(piRef(f64(state.actor), encoder64), 4);
    expect(
      ref.relError(
        out.gradActor,
        gradOf((p) => piRef(p, encoder64), state.actor),
      ),
    ).toBeLessThan(TOL);
    // The features do move the actor loss, and still no gradient reaches the encoder from it.
    const attached = gradOf((p) => piRef(f64(state.actor), p), state.encoder);
    expect(Math.max(...attached.map(Math.abs))).toBeGreaterThan(1e-3);
    expect(Array.from(out.actorGradEncoder).every((v) => v === 0)).toBe(true);
  });

  it('one whole update: Adam on the encoder at the critic rate with the critic step, Polyak encoder target', async () => {
    const c = await CompiledGraph.create(buildUpdateGraph(nets, cfg, dims, true), engine);
    const moments = (n: number) => ({
      m: f32(n, () => rng.normal(0, 0.05)),
      v: f32(n, () => 0.001 + 0.01 * rng.uniform()),
    });
    const cm = moments(nets.critic.layout.size);
    const am = moments(nets.actor.layout.size);
    const em = moments(encoderNet.layout.size);
    const step = 5;
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
      'encoderAdam/m': em.m,
      'encoderAdam/v': em.v,
      ...batch,
      heldBack,
      bcWeight: Float32Array.of(bcWeight),
      'critic/stepSize': cs.stepSize,
      'critic/epsHat': cs.epsHat,
      'actor/stepSize': as.stepSize,
      'actor/epsHat': as.epsHat,
    });
    await c.release();

    // Adam (global-norm clipped on the encoder's own gradient), float64.
    const g = gradOf((p) => criticLossRef(f64(state.critic), p), state.encoder);
    const norm = Math.sqrt(g.reduce((s, x) => s + x * x, 0));
    const k = Math.min(1, cfg.gradClip / (norm + 1e-6));
    const p = new Float64Array(g.length);
    const m = new Float64Array(g.length);
    const v = new Float64Array(g.length);
    for (let i = 0; i < g.length; i++) {
      const gi = g[i] * k;
      m[i] = 0.9 * em.m[i] + 0.1 * gi;
      v[i] = 0.999 * em.v[i] + 0.001 * gi * gi;
      p[i] =
        state.encoder[i] -
        (cfg.criticLr * m[i]) / (1 - 0.9 ** step) / (Math.sqrt(v[i] / (1 - 0.999 ** step)) + 1e-8);
    }
    const delta = (a: ArrayLike<number>, b: ArrayLike<number>) => Float64Array.from(a, (x, i) => x - b[i]);
    expect(ref.relError(delta(out[next('encoder')], state.encoder), delta(p, state.encoder))).toBeLessThan(
      TOL,
    );
    expect(ref.relError(out[next('encoderAdam/m')], m)).toBeLessThan(TOL);
    expect(ref.relError(out[next('encoderAdam/v')], v)).toBeLessThan(TOL);
    const target = p.map((x, i) => state.encoderTarget[i] + cfg.tau * (x - state.encoderTarget[i]));
    expect(
      ref.relError(
        delta(out[next('encoderTarget')], state.encoderTarget),
        delta(target, state.encoderTarget),
      ),
    ).toBeLessThan(TOL);
  });
});

describe("encoder 'learned' config", () => {
  it('is the gpu profile default (the cpu one picks a frozen mode, auto) and switches replayFrames on', () => {
    expect(profiles.gpu.encoder).toBe('learned');
    expect(profiles.cpu.encoder).toBe('auto');
    expect(makeConfig('gpu').replayFrames).toBe(true);
    expect(makeConfig('cpu').replayFrames).toBe(false);
    expect(makeConfig('cpu', { encoder: 'learned' }).replayFrames).toBe(true);
    expect(makeConfig('gpu', { encoder: 'none' }).replayFrames).toBe(false);
  });

  it('refuses learned without frames in replay, bad encoder sizes and non-RGB cameras, naming the fix', () => {
    const err = (f: () => unknown): ResrtError => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(ResrtError);
        return e as ResrtError;
      }
      throw new Error('no error');
    };
    expect(err(() => makeConfig('cpu', { encoder: 'learned', replayFrames: false })).hint).toMatch(
      /set replayFrames true/,
    );
    const sizes = err(() => makeConfig('gpu', { encoderChannels: [], encoderFeatures: 0 }));
    expect(sizes.message).toMatch(/encoderChannels = \[\][\s\S]*encoderFeatures = 0/);
    const gray = err(() => learnedEncoderNet(cfg, [{ name: 'wrist', width: 8, height: 8, channels: 1 }]));
    expect(gray.message).toMatch(/wrist 8x8x1 is not 3-channel/);
    expect(gray.hint).toMatch(/--encoder none/);
  });
});
