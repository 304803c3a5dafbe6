/**
 * The residual TD3 update as engine graphs: one graph per update kind (critic step; critic step
 * then actor step), each a single onnxruntime run that reads the parameters, Adam moments and
 * target networks and returns their updated values. Read top to bottom, this is the algorithm:
 *
 *   y      = R_n + γ^n · min_{i∈M} Q̄_i(s', clip(a_base' + clip(π̄(s', a_base') + ε, ±scale), ±1))
 *   L_Q    = Σ_i mean_B (Q_i(s, a) − y)²                  (M: the heads drawn for this update)
 *   L_π    = −mean_B mean_i Q_i(s, clip(a_base + π(s, a_base), ±1))       (with the updated critic)
 *            + w·mean|Q|·(1/B)·Σ_held-back mean_A ((π − (a − a_base))/scale)²   (TD3+BC, mixing only)
 *   Adam with global-norm clipping on each network, then Polyak targets θ̄ ← θ̄ + τ(θ − θ̄).
 *
 * Q_i(s, a) reads [s | a], or by default [s | a_base | (a − a_base)/actionScale] (criticInput).
 *
 * With a learned encoder (ResFiT) s is [φ(images) | state]: the critics read φ of the online
 * encoder, which their loss trains (Adam at the critic's rate, clipped on its own); the actor reads
 * stopgrad(φ), so its loss moves no encoder weight; the TD target reads φ̄ of the target encoder,
 * Polyak-averaged like the critics.
 */
import {
  adamStep,
  grad,
  Graph,
  mlpApply,
  op,
  polyak,
  type AdamScalars,
  type ParamLayout,
  type Value,
} from '../nn/index.js';
import { criticSplitsResidual, type ResidualConfig } from './config.js';
import type { Network } from './networks.js';
import {
  encodeCameras,
  imageInputs,
  nextImagesInput,
  obsImagesInput,
  type LearnedEncoderNet,
} from './learned-encoder.js';

/** The flat vectors a learner keeps; each is one graph input `<key>` and one output `next:<key>`. */
export const STATE_KEYS = [
  'actor',
  'actorTarget',
  'critic',
  'criticTarget',
  'actorAdam/m',
  'actorAdam/v',
  'criticAdam/m',
  'criticAdam/v',
  'encoder',
  'encoderTarget',
  'encoderAdam/m',
  'encoderAdam/v',
] as const;
export type StateKey = (typeof STATE_KEYS)[number];

/** The state vectors of these networks (the encoder's only with a learned encoder). */
export function stateKeysOf(nets: Td3Nets): StateKey[] {
  return STATE_KEYS.filter((k) => nets.encoder || !k.startsWith('encoder'));
}

/** The parameter layout a state vector is laid out in. */
export function layoutOf(nets: Td3Nets, key: StateKey): ParamLayout {
  if (key.startsWith('actor')) return nets.actor.layout;
  if (key.startsWith('critic')) return nets.critic.layout;
  if (!nets.encoder) throw new Error(`internal: ${key} without a learned encoder`);
  return nets.encoder.layout;
}

export const next = (key: StateKey): string => `next:${key}`;

/** Order of the `stats` output. */
export const STATS = ['criticLoss', 'qMean', 'qAbsMean', 'criticGradNorm', 'actorLoss'] as const;

export interface Td3Nets {
  actor: Network;
  critic: Network;
  /** The per-camera conv encoders of encoder mode 'learned'; absent otherwise. */
  encoder?: LearnedEncoderNet;
}

export interface Td3Dims {
  obsDim: number;
  actionDim: number;
  /** Width of the base-action input to the actor (0 when learning from scratch). */
  baseDim: number;
}

type Tensors = ReadonlyMap<string, Value>;

/** π(s, a_base) = tanh(MLP([s | a_base])) · actionScale. */
function residualOf(
  nets: Td3Nets,
  actor: Tensors,
  obs: Value,
  base: Value,
  cfg: ResidualConfig,
  baseDim: number,
): Value {
  const x = baseDim ? op.concat([obs, base], 1) : obs;
  return op.mul(op.tanh(mlpApply(actor, x, nets.actor.spec, nets.actor.prefix)), cfg.actionScale);
}

/** The critics' input: [s | a], or [s | a_base | (a − a_base)/actionScale]. */
function criticInput(cfg: ResidualConfig, obs: Value, base: Value, action: Value): Value {
  if (!criticSplitsResidual(cfg)) return op.concat([obs, action], 1);
  return op.concat([obs, base, op.mul(op.sub(action, base), 1 / cfg.actionScale)], 1);
}

/** Q of every head: [heads, B]. */
function qValues(nets: Td3Nets, critic: Tensors, x: Value): Value {
  return op.reshape(mlpApply(critic, x, nets.critic.spec, nets.critic.prefix), [
    nets.critic.spec.heads ?? 1,
    x.shape[0],
  ]);
}

/** What the TD target reads of a batch. */
export interface TargetBatch {
  reward: Value;
  discount: Value;
  nextObs: Value;
  nextBase: Value;
  /** Target-policy smoothing noise, already clipped. */
  noise: Value;
  /** The REDQ subset (int64). */
  heads: Value;
}

export interface Batch extends TargetBatch {
  obs: Value;
  base: Value;
  action: Value;
}

function targetInputs(
  g: Graph,
  dims: Td3Dims,
  rows: number,
  cfg: ResidualConfig,
  nextObs: Value = g.input('nextObs', [rows, dims.obsDim]),
): TargetBatch {
  const { actionDim: A } = dims;
  return {
    reward: g.input('reward', [rows]),
    discount: g.input('discount', [rows]),
    nextObs,
    nextBase: g.input('nextBase', [rows, A]),
    noise: g.input('noise', [rows, A]),
    heads: g.input('heads', [cfg.targetSubset], 'int64'),
  };
}

/** y = R + discount · min over the drawn heads of Q̄(s', ā'), from the target networks. */
function tdTarget(
  nets: Td3Nets,
  cfg: ResidualConfig,
  dims: Td3Dims,
  actorTarget: Tensors,
  criticTarget: Tensors,
  b: TargetBatch,
): Value {
  const nextRes = op.clip(
    op.add(residualOf(nets, actorTarget, b.nextObs, b.nextBase, cfg, dims.baseDim), b.noise),
    -cfg.actionScale,
    cfg.actionScale,
  );
  const nextAct = op.clip(op.add(b.nextBase, nextRes), -1, 1);
  const qNext = qValues(nets, criticTarget, criticInput(cfg, b.nextObs, b.nextBase, nextAct));
  const qMin = op.min(op.gather(qNext, b.heads, 0), [0]);
  return op.add(b.reward, op.mul(b.discount, qMin));
}

function adamScalars(g: Graph, net: 'actor' | 'critic'): AdamScalars {
  return { stepSize: g.input(`${net}/stepSize`, []), epsHat: g.input(`${net}/epsHat`, []) };
}

/** ∂loss/∂(each tensor of `params`), packed as one flat vector in the layout's order. */
export function flatGradient(loss: Value, net: Network, params: Tensors): Value {
  return flatGradients(loss, [{ layout: net.layout, params }])[0];
}

/** One backward pass for several parameter vectors: ∂loss/∂ each, packed flat in its layout. */
export function flatGradients(
  loss: Value,
  parts: readonly { layout: ParamLayout; params: Tensors }[],
): Value[] {
  const names = parts.map((p) => p.layout.entries.map((e) => e.name));
  const gs = grad(
    loss,
    parts.flatMap((p, i) => names[i].map((n) => p.params.get(n) as Value)),
  );
  let at = 0;
  return parts.map((p, i) => p.layout.pack(new Map(names[i].map((n) => [n, gs[at++]]))));
}

/**
 * The batch with the learned features in front of the state: [φ | s] for the critic step,
 * [stopgrad φ | s] for the actor step, [φ̄ | s'] (target encoder) for the TD target. Inputs
 * `encoder`, `encoderTarget` and the images of obs and next obs (`images/<k>`, `nextImages/<k>`).
 */
export function encodedBatches(
  g: Graph,
  encoder: LearnedEncoderNet,
  b: Batch,
  p: { encoder: Tensors; encoderTarget: Tensors },
): { critic: Batch; actor: Batch } {
  const rows = b.obs.shape[0];
  const features = encodeCameras(
    encoder,
    p.encoder,
    imageInputs(g, encoder, rows, (_, k) => obsImagesInput(k)),
  );
  const nextFeatures = encodeCameras(
    encoder,
    p.encoderTarget,
    imageInputs(g, encoder, rows, (_, k) => nextImagesInput(k)),
  );
  const nextObs = op.concat([nextFeatures, b.nextObs], 1);
  return {
    critic: { ...b, obs: op.concat([features, b.obs], 1), nextObs },
    actor: { ...b, obs: op.concat([op.stopGradient(features), b.obs], 1), nextObs },
  };
}

/** The batch as graph inputs `obs`, `base`, `action`, `reward`, `discount`, `nextObs`, `nextBase`, `noise`, `heads`. */
export function batchInputs(g: Graph, dims: Td3Dims, rows: number, cfg: ResidualConfig): Batch {
  return {
    obs: g.input('obs', [rows, dims.obsDim]),
    base: g.input('base', [rows, dims.actionDim]),
    action: g.input('action', [rows, dims.actionDim]),
    ...targetInputs(g, dims, rows, cfg),
  };
}

/** L_Q = Σ_i mean_B (Q_i(s, a) − y)², with Q of every head [heads, B] for the statistics. */
export function criticLoss(
  nets: Td3Nets,
  cfg: ResidualConfig,
  dims: Td3Dims,
  p: { critic: Tensors; actorTarget: Tensors; criticTarget: Tensors },
  b: Batch,
): { loss: Value; q: Value } {
  // The TD target depends on no trained tensor, so no gradient flows into it.
  const y = tdTarget(nets, cfg, dims, p.actorTarget, p.criticTarget, b);
  const q = qValues(nets, p.critic, criticInput(cfg, b.obs, b.base, b.action));
  return { loss: op.sum(op.mean(op.square(op.sub(q, y)), [1])), q };
}

/**
 * L_π = −mean Q(s, clip(a_base + π)) over heads and batch, plus the TD3+BC term on held-back rows:
 * squared distance to the executed residual in units of actionScale, weighted by `bcWeight` · mean |Q|
 * of the critic step (so the two terms keep their ratio as Q grows).
 */
export function actorLoss(
  nets: Td3Nets,
  cfg: ResidualConfig,
  dims: Td3Dims,
  p: { actor: Tensors; critic: Tensors },
  b: Batch,
  bc: { heldBack: Value; weight: Value; qAbsMean: Value },
): Value {
  const residual = residualOf(nets, p.actor, b.obs, b.base, cfg, dims.baseDim);
  const act = op.clip(op.add(b.base, residual), -1, 1);
  const objective = op.neg(op.mean(qValues(nets, p.critic, criticInput(cfg, b.obs, b.base, act))));
  const gap = op.div(op.sub(residual, op.sub(b.action, b.base)), cfg.actionScale);
  const rows = b.obs.shape[0];
  const term = op.div(op.sum(op.mul(op.mean(op.square(gap), [1]), bc.heldBack)), rows);
  return op.add(objective, op.mul(op.mul(bc.weight, op.stopGradient(bc.qAbsMean)), term));
}

/**
 * One update: the critic step and, with `withActor`, the actor step on the updated critic, then the
 * Polyak targets. Inputs: the state vectors, the batch, the Adam scalars, and for the actor the
 * held-back mask and the TD3+BC weight (0 when the batch holds no held-back rows).
 */
export function buildUpdateGraph(
  nets: Td3Nets,
  cfg: ResidualConfig,
  dims: Td3Dims,
  withActor: boolean,
): Graph {
  const B = cfg.batchSize;
  const g = new Graph(withActor ? 'td3_critic_actor_update' : 'td3_critic_update');
  const flat = (key: StateKey): Value => g.input(key, [layoutOf(nets, key).size]);
  const critic = flat('critic');
  const criticTarget = flat('criticTarget');
  const actorTarget = flat('actorTarget');
  const criticP = nets.critic.layout.unpack(critic);
  const batch = batchInputs(g, dims, B, cfg);
  const adam = { beta1: 0.9, beta2: 0.999, clipNorm: cfg.gradClip };
  const criticScalars = adamScalars(g, 'critic');

  // 0. The learned encoder's features in front of the state (the batch unchanged without one).
  const encoder = nets.encoder ? flat('encoder') : null;
  const encoderTarget = nets.encoder ? flat('encoderTarget') : null;
  const encoderP = encoder && nets.encoder ? nets.encoder.layout.unpack(encoder) : null;
  const encoded =
    nets.encoder && encoderP && encoderTarget
      ? encodedBatches(g, nets.encoder, batch, {
          encoder: encoderP,
          encoderTarget: nets.encoder.layout.unpack(encoderTarget),
        })
      : { critic: batch, actor: batch };

  // 1–2. TD target from the target networks, critic step on the executed actions.
  const { loss: lossQ, q } = criticLoss(
    nets,
    cfg,
    dims,
    {
      critic: criticP,
      actorTarget: nets.actor.layout.unpack(actorTarget),
      criticTarget: nets.critic.layout.unpack(criticTarget),
    },
    encoded.critic,
  );
  const [criticGrad, encoderGrad] = flatGradients(lossQ, [
    { layout: nets.critic.layout, params: criticP },
    ...(nets.encoder && encoderP ? [{ layout: nets.encoder.layout, params: encoderP }] : []),
  ]);
  const c = adamStep(critic, criticGrad, flat('criticAdam/m'), flat('criticAdam/v'), adam, criticScalars);
  g.output(next('critic'), c.params);
  g.output(next('criticAdam/m'), c.m);
  g.output(next('criticAdam/v'), c.v);
  g.output(next('criticTarget'), polyak(criticTarget, c.params, cfg.tau));
  // The encoder steps with the critic (same rate and step count, so the same Adam scalars).
  if (encoder && encoderTarget) {
    const e = adamStep(
      encoder,
      encoderGrad,
      flat('encoderAdam/m'),
      flat('encoderAdam/v'),
      adam,
      criticScalars,
    );
    g.output(next('encoder'), e.params);
    g.output(next('encoderAdam/m'), e.m);
    g.output(next('encoderAdam/v'), e.v);
    g.output(next('encoderTarget'), polyak(encoderTarget, e.params, cfg.tau));
  }
  const qAbsMean = op.mean(op.abs(q));
  const stats: Value[] = [lossQ, op.mean(q), qAbsMean, c.gradNorm];

  // 3. Actor step on the ensemble mean of the updated critic, then its target.
  if (withActor) {
    const actor = flat('actor');
    const actorP = nets.actor.layout.unpack(actor);
    const lossPi = actorLoss(
      nets,
      cfg,
      dims,
      { actor: actorP, critic: nets.critic.layout.unpack(c.params) },
      encoded.actor,
      { heldBack: g.input('heldBack', [B]), weight: g.input('bcWeight', []), qAbsMean },
    );
    const a = adamStep(
      actor,
      flatGradient(lossPi, nets.actor, actorP),
      flat('actorAdam/m'),
      flat('actorAdam/v'),
      adam,
      adamScalars(g, 'actor'),
    );
    g.output(next('actor'), a.params);
    g.output(next('actorAdam/m'), a.m);
    g.output(next('actorAdam/v'), a.v);
    g.output(next('actorTarget'), polyak(actorTarget, a.params, cfg.tau));
    stats.push(lossPi);
  } else {
    stats.push(g.scalar(0));
  }
  g.output(
    'stats',
    op.concat(
      stats.map((s) => op.reshape(s, [1])),
      0,
    ),
  );
  return g;
}

/**
 * The residual for `rows` (normalized observation, base action) rows: input `actor`, `obs`,
 * `base`, and with a learned encoder `encoder` and the images `images/<k>`.
 */
export function buildActGraph(nets: Td3Nets, cfg: ResidualConfig, dims: Td3Dims, rows: number): Graph {
  const g = new Graph(`td3_act_${rows}`);
  const actor = nets.actor.layout.unpack(g.input('actor', [nets.actor.layout.size]));
  let obs = g.input('obs', [rows, dims.obsDim]);
  if (nets.encoder) {
    const encoder = nets.encoder.layout.unpack(g.input('encoder', [nets.encoder.layout.size]));
    const images = imageInputs(g, nets.encoder, rows, (_, k) => obsImagesInput(k));
    obs = op.concat([encodeCameras(nets.encoder, encoder, images), obs], 1);
  }
  const base = g.input('base', [rows, dims.actionDim]);
  g.output('residual', residualOf(nets, actor, obs, base, cfg, dims.baseDim));
  return g;
}

/** The TD target alone, for tests and diagnostics: inputs `actorTarget.*`, `criticTarget.*` and the batch. */
export function buildTargetGraph(nets: Td3Nets, cfg: ResidualConfig, dims: Td3Dims, rows: number): Graph {
  const g = new Graph(`td3_target_${rows}`);
  const actorTarget = nets.actor.layout.unpack(g.input('actorTarget', [nets.actor.layout.size]));
  const criticTarget = nets.critic.layout.unpack(g.input('criticTarget', [nets.critic.layout.size]));
  let nextObs = g.input('nextObs', [rows, dims.obsDim]);
  if (nets.encoder) {
    const target = nets.encoder.layout.unpack(g.input('encoderTarget', [nets.encoder.layout.size]));
    const images = imageInputs(g, nets.encoder, rows, (_, k) => nextImagesInput(k));
    nextObs = op.concat([encodeCameras(nets.encoder, target, images), nextObs], 1);
  }
  const b = targetInputs(g, dims, rows, cfg, nextObs);
  g.output('y', tdTarget(nets, cfg, dims, actorTarget, criticTarget, b));
  return g;
}
