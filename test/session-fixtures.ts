// Shared pieces of the session tests: deliberately weak ONNX bases (reach, the puck, the camera
// puck), small learner settings for two shared cores, and polling helpers.
import { writeFileSync } from 'node:fs';
import { exportMlpToOnnx, MetaKey } from '../src/runtime/onnx-export.js';
import type { ResidualConfig } from '../src/residual/config.js';
import { puckBase } from './fixtures/puck-task.js';
import { visuomotorOnnx } from './fixtures/visuomotor-onnx.js';

/** A linear base `action = obs · weight + bias` (weight row-major [obs, action]) as an ONNX file. */
function writeLinearBase(path: string, obsDim: number, weight: Float32Array, bias: number[]): void {
  const A = bias.length;
  const bytes = exportMlpToOnnx({
    inputs: [{ name: 'obs', dim: obsDim }],
    layers: [{ inDim: obsDim, outDim: A, weight, bias: Float32Array.from(bias), activation: 'linear' }],
    output: { name: 'action', actionDim: A, chunkLength: 1 },
    metadata: { [MetaKey.kind]: 'base', [MetaKey.obsDim]: String(obsDim) },
  });
  writeFileSync(path, bytes);
}

/**
 * A linear base for reach (obs: shoulder, elbow, velocities, tip, target, dx, dy): it holds the
 * current joints plus a small constant bias, so it seldom reaches the target on its own.
 */
export function writeWeakReachBase(path: string): void {
  const O = 10;
  const A = 2;
  const weight = new Float32Array(O * A);
  weight[0 * A + 0] = 1 / 3.0; // shoulder target follows the shoulder angle
  weight[1 * A + 1] = 1 / 2.8; // elbow target follows the elbow angle
  weight[8 * A + 0] = 1.5; // a weak pull along dx/dy: the "BC policy" that almost gets there
  weight[9 * A + 1] = 1.5;
  writeLinearBase(path, O, weight, [0.04, -0.03]);
}

/** The puck fixture's biased proportional controller as weights [obs 4, action 2] and a bias. */
function biasedPuckWeights(): { weight: Float32Array; bias: number[] } {
  const { gain, biasX } = puckBase;
  const A = 2;
  const weight = new Float32Array(4 * A);
  weight[0 * A + 0] = -gain; // vx = K·(goal_x − x) + bias
  weight[2 * A + 0] = gain;
  weight[1 * A + 1] = -gain; // vy = K·(goal_y − y)
  weight[3 * A + 1] = gain;
  return { weight, bias: [biasX, 0] };
}

/** The puck fixture's biased proportional base (test/fixtures/puck-task.ts) as a linear ONNX policy. */
export function writeBiasedPuckBase(path: string): void {
  const { weight, bias } = biasedPuckWeights();
  writeLinearBase(path, 4, weight, bias);
}

/** Width of the camera puck base's embedding. */
export const PUCK_CAM_EMBEDDING = 8;

/**
 * The same biased controller as a visuomotor base for puckCamTask: `observation.state` and the
 * 32×32 `observation.images.top` in, `action` = tanh(K·(goal − position) + bias) (the state alone:
 * the image's rows of the head are zero) and `embedding`, a seeded random conv encoding of the
 * frame, out. The bias is the base's flaw the residual must learn to cancel; the embedding is what
 * a camera residual reads beside the state.
 */
export function writeBiasedPuckCamBase(path: string): void {
  const { weight: state, bias } = biasedPuckWeights();
  const image = 32;
  const side = Math.floor((image - 3) / 2) + 1;
  const weight = new Float32Array((4 + side * side * 4) * 2);
  weight.set(state);
  writeFileSync(
    path,
    visuomotorOnnx({
      state: 4,
      image,
      actions: 2,
      chunk: 1,
      embedding: PUCK_CAM_EMBEDDING,
      head: { weight, bias: Float32Array.from(bias) },
    }),
  );
}

/** Learner settings a 2-core machine trains at a few dozen updates per second. */
export const smallLearner: Partial<ResidualConfig> = {
  actorHidden: [32, 32],
  criticHidden: [32, 32],
  numCritics: 2,
  targetSubset: 2,
  batchSize: 64,
  utd: 1,
  learningStarts: 200,
  criticWarmupSteps: 20,
  bufferSize: 20_000,
  policyDelay: 2,
};

/**
 * The learner on the puck fixtures: four heads and a slow actor, so the residual climbs steadily
 * instead of overshooting (offline, seed 0: 29% → 100% by 2k env steps; actor lr 1e-4 swung 41–86%).
 */
export const puckLearner: Partial<ResidualConfig> = {
  ...smallLearner,
  numCritics: 4,
  learningStarts: 500,
  criticWarmupSteps: 200,
  actorLr: 3e-5,
};

export async function waitFor(
  what: string,
  cond: () => boolean,
  timeoutMs: number,
  everyMs = 50,
): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * test/residual-pointmass.ts's BiasedBase as an exact ONNX network: clip(5·(goal − pos) + bias)
 * per axis, with the clip written as relu(u + 1) − relu(u − 1) − 1.
 */
export function writeBiasedPointMassBase(path: string, bias = 0.12): void {
  const O = 4;
  const w1 = new Float32Array(O * 4);
  const b1 = new Float32Array(4);
  for (let d = 0; d < 2; d++) {
    for (const [k, shift] of [
      [2 * d, 1],
      [2 * d + 1, -1],
    ]) {
      w1[(2 + d) * 4 + k] = 5; // goal
      w1[d * 4 + k] = -5; // position
      b1[k] = (d === 0 ? bias : 0) + shift;
    }
  }
  const w2 = Float32Array.from([1, 0, -1, 0, 0, 1, 0, -1]);
  const bytes = exportMlpToOnnx({
    inputs: [{ name: 'obs', dim: O }],
    layers: [
      { inDim: O, outDim: 4, weight: w1, bias: b1, activation: 'relu' },
      { inDim: 4, outDim: 2, weight: w2, bias: Float32Array.from([-1, -1]), activation: 'linear' },
    ],
    output: { name: 'action', actionDim: 2, chunkLength: 1 },
    metadata: { [MetaKey.kind]: 'base', [MetaKey.obsDim]: String(O) },
  });
  writeFileSync(path, bytes);
}
