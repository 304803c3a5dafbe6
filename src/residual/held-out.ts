/**
 * The evaluation a residual run reports: the ONNX file it wrote, composed with the base exactly as
 * `resrt eval --base BASE --residual residual.onnx` composes them, on episodes that no evaluation
 * during training (and no training episode) used. Its numbers can therefore be reproduced from the
 * files alone, and the run's curve cannot have been chosen on them.
 */
import { ComposedPolicy } from '../runtime/compose.js';
import { evaluatePolicy, type EvalResult } from '../runtime/evaluate.js';
import { loadResidual } from '../runtime/camera-residual.js';
import { OnnxPolicy } from '../runtime/onnx-policy.js';
import type { Env, Policy } from '../types.js';
import type { CurvePoint } from './curves.js';

/** Seeds of the periodic evaluations during training: episode i of each uses seed + i. */
export function periodicEvalSeed(runSeed: number): number {
  return 1_000_000 + runSeed * 10_000;
}

/** Seed of training episode `episode` (the environment reset of the acting thread). */
export function trainingEpisodeSeed(runSeed: number, episode: number): number {
  return runSeed * 1_000_003 + episode;
}

/**
 * First seed of the held-out evaluation: fixed per run seed (so two runs with the same seed are
 * judged on the same episodes), far above the periodic evaluations; should a very long run's
 * training episodes or evaluations reach it, it moves past every seed they used.
 */
export function heldOutSeed(
  runSeed: number,
  episodes: number,
  used: { periodicEpisodes: number; trainingEpisodes: number },
): number {
  const ranges: [number, number][] = [
    [periodicEvalSeed(runSeed), periodicEvalSeed(runSeed) + used.periodicEpisodes],
    [trainingEpisodeSeed(runSeed, 0), trainingEpisodeSeed(runSeed, used.trainingEpisodes)],
  ];
  const preferred = 2_000_000_000 + (runSeed % 20_000) * 100_000;
  const overlaps = (first: number): boolean => ranges.some(([a, b]) => first < b && a < first + episodes);
  return overlaps(preferred) ? Math.max(...ranges.map(([, b]) => b)) : preferred;
}

/** One evaluation as summary.json records it: which policy, on which episodes, with what result. */
export interface EvaluationRecord {
  /** What was evaluated and how, in words (and the command that reproduces it, where one does). */
  what: string;
  envSteps: number;
  firstSeed: number;
  episodes: number;
  successes: number;
  successRate: number;
  ci95: [number, number];
  /** Mean episode length (not kept for evaluations during training, which store only rates). */
  meanSteps: number | null;
}

export function recordOf(what: string, envSteps: number, firstSeed: number, r: EvalResult): EvaluationRecord {
  return {
    what,
    envSteps,
    firstSeed,
    episodes: r.episodes,
    successes: r.successes,
    successRate: r.successRate,
    ci95: [r.ci95.low, r.ci95.high],
    meanSteps: r.meanSteps,
  };
}

export function recordOfCurvePoint(what: string, firstSeed: number, p: CurvePoint): EvaluationRecord {
  return {
    what,
    envSteps: p.envSteps,
    firstSeed,
    episodes: p.evalEpisodes,
    successes: Math.round(p.successRate * p.evalEpisodes),
    successRate: p.successRate,
    ci95: [p.ciLow, p.ciHigh],
    meanSteps: null,
  };
}

export interface HeldOutResult {
  firstSeed: number;
  episodes: number;
  /** The base alone (null when not evaluated: a robot's time, or a run without a base). */
  base: EvalResult | null;
  /** Base + the written residual ONNX (for a run without a base: the written policy alone). */
  residual: EvalResult;
}

export interface HeldOutOptions {
  env: Env;
  /** The frozen base; null for a from-scratch run, whose file is a whole policy. */
  base: Policy | null;
  onnxPath: string;
  firstSeed: number;
  episodes: number;
  evaluateBase: boolean;
  onEpisode?: (done: number, total: number) => void;
}

export async function evaluateHeldOut(o: HeldOutOptions): Promise<HeldOutResult> {
  const dims = { expectObsDim: o.env.observationSpace.dim, expectActionDim: o.env.actionSpace.dim };
  const total = (o.evaluateBase && o.base ? 2 : 1) * o.episodes;
  let done = 0;
  const run = (policy: Policy): Promise<EvalResult> =>
    evaluatePolicy(o.env, policy, {
      episodes: o.episodes,
      seed: o.firstSeed,
      onEpisode: () => o.onEpisode?.(++done, total),
    });
  // A residual file may read the base's camera embedding or the frames themselves; loadResidual picks.
  const cameras = Object.fromEntries(
    (o.env.cameras ?? []).map((c) => [c.name, { width: c.width, height: c.height }]),
  );
  const written = o.base
    ? await loadResidual(o.onnxPath, { ...dims, cameras })
    : await OnnxPolicy.load(o.onnxPath, dims);
  try {
    const base = o.evaluateBase && o.base ? await run(new ComposedPolicy({ base: o.base })) : null;
    const residual = await run(
      o.base ? new ComposedPolicy({ base: o.base, residual: written }) : (written as OnnxPolicy),
    );
    return { firstSeed: o.firstSeed, episodes: o.episodes, base, residual };
  } finally {
    await written.close();
  }
}
