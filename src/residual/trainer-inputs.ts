/** A residual run's inputs: the env, base and demonstrations checked against each other, and demonstrations as learner steps. */
import type { CameraFrames, Env, Policy } from '../types.js';
import type { DemoEpisode, DemoSet } from '../sim/demos.js';
import { ResrtError } from '../util/errors.js';
import type { StepRecord } from './replay.js';
import { withFeatures, type CameraFeatures } from './camera-features.js';

/** Checks that the env, base and demos agree, with the fix in every message. */
export function checkDims(env: Env, base: Policy | null, demos: DemoSet | undefined): void {
  const O = env.observationSpace.dim;
  const A = env.actionSpace.dim;
  if (base && base.actionDim !== A) {
    throw new ResrtError(
      `the base policy outputs ${base.actionDim} action dims but the environment ${env.id} takes ${A}`,
      `use a base policy trained for ${env.id} (resrt inspect BASE.onnx shows its dims)`,
    );
  }
  if (demos) {
    const h = demos.header;
    if (h.obsDim !== O || h.actionDim !== A) {
      throw new ResrtError(
        `the demonstrations have obs/action dims ${h.obsDim}/${h.actionDim} (task ${h.task}) but the environment ${env.id} has ${O}/${A}`,
        `collect demonstrations on ${env.id} with \`resrt collect\`, or pass the matching --demos file`,
      );
    }
  }
}

/**
 * Demonstrations as learner steps, relabelled with the base: each step's base action is the base's
 * own action on that demo observation (its residual target is demo − base, clipped to the residual
 * range); the executed action stays the demo's, since the demo's next observation followed from it.
 */
export async function relabelDemos(
  demos: DemoSet,
  base: Policy | null,
  actionDim: number,
  camera: {
    frames?: (episode: DemoEpisode) => CameraFrames[];
    features?: CameraFeatures | null;
    /** The cameras the base or residual reads (frames must come with every demo observation). */
    cameras?: readonly string[];
  } = {},
): Promise<StepRecord[]> {
  const steps: StepRecord[] = [];
  const zero = new Float32Array(actionDim);
  const features = camera.features ?? null;
  const cameras = camera.cameras ?? [];
  const noFeatures = features ? new Float32Array(features.dim) : null;
  for (const [index, ep] of demos.episodes.entries()) {
    base?.reset?.(ep.seed);
    const T = ep.actions.length;
    const frames = cameras.length ? demoFramesOf(demos, ep, index, camera.frames, cameras) : undefined;
    let baseHere = base ? Float32Array.from(await base.act(ep.obs[0], frames?.[0])) : zero;
    let featHere = features ? await features.read(frames?.[0]) : null;
    for (let t = 0; t < T; t++) {
      const last = t === T - 1;
      const terminated = last && ep.terminated;
      const nextBase =
        base && !terminated ? Float32Array.from(await base.act(ep.obs[t + 1], frames?.[t + 1])) : zero;
      // No base query after termination: its features are never bootstrapped from (discount 0).
      const nextFeat = features ? (terminated ? noFeatures : await features.read(frames?.[t + 1])) : null;
      steps.push({
        ...(frames ? { frames: frames[t], nextFrames: frames[t + 1] } : {}),
        obs: withFeatures(featHere, ep.obs[t]),
        baseAction: baseHere,
        action: ep.actions[t],
        reward: ep.rewards[t],
        nextObs: withFeatures(nextFeat, ep.obs[t + 1]),
        nextBaseAction: nextBase,
        terminated,
        // An episode that ended neither way (a cut recording) is still a boundary for n-step sums.
        truncated: last && !terminated,
      });
      baseHere = nextBase;
      featHere = nextFeat;
    }
  }
  return steps;
}

/** An episode's frames, checked: one per observation, with every camera the run reads. */
function demoFramesOf(
  demos: DemoSet,
  ep: DemoEpisode,
  index: number,
  load: ((episode: DemoEpisode) => CameraFrames[]) | undefined,
  cameras: readonly string[],
): CameraFrames[] {
  const task = demos.header.task;
  const recorded = (demos.header.cameras ?? []).map((c) => c.name);
  const missing = cameras.filter((c) => !recorded.includes(c));
  if (!load || missing.length) {
    throw new ResrtError(
      `the demonstrations of ${task} have no frames of camera ${missing.length ? missing.join(', ') : cameras.join(', ')} (they record: ${recorded.join(', ') || 'none'}), and the base or residual reads it`,
      `collect them with the camera: \`resrt collect --task ${task} --out DEMOS.jsonl\` writes DEMOS.jsonl.frames beside them; or train without --demos`,
    );
  }
  const frames = load(ep);
  if (frames.length !== ep.obs.length || frames.some((f) => cameras.some((c) => !f[c]))) {
    throw new ResrtError(
      `demonstration episode ${index} of ${task} has ${frames.length} frames of ${cameras.join(', ')} for ${ep.obs.length} observations`,
      'frames are missing from some of its steps: collect the demonstrations again with `resrt collect`',
    );
  }
  return frames;
}

/** A visuomotor ONNX base (it reads camera frames). */
export function hasImageInputs(base: Policy): boolean {
  const images = (base as { imageInputs?: readonly unknown[] }).imageInputs;
  return Array.isArray(images) && images.length > 0;
}
