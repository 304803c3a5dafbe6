/** What a residual run reports at its end: its evaluations by name and summary.json. */
import { join } from 'node:path';
import { writeFileAtomic } from '../util/files.js';
import type { ProfileName, ResidualConfig } from './config.js';
import type { CurvePoint } from './curves.js';
import { recordOf, recordOfCurvePoint, type EvaluationRecord, type HeldOutResult } from './held-out.js';
import type { MixingEpisode, MixingState } from './mixing-run.js';
import type { TrainEpisode } from './trainer-types.js';

/**
 * With a success detector as the success source: how often it and the task called the training
 * episodes successful. A learner can find what a detector calls success without doing the task
 * (docs/success-detector.md); where the task can judge too (simulation), this shows it.
 */
export interface DetectorAgreement {
  /** Training episodes the task judged as well. */
  episodes: number;
  /** Share of them the detector called successful. */
  detectorSuccess: number;
  /** Share of them the task called successful. */
  taskSuccess: number;
  /** Share on which the two agree. */
  agreement: number;
}

/** The detector's verdicts against the task's over the training episodes; null without a detector. */
export function detectorAgreement(episodes: readonly TrainEpisode[]): DetectorAgreement | null {
  const judged = episodes.filter((e) => e.trueSuccess !== undefined);
  if (judged.length === 0) return null;
  const share = (f: (e: TrainEpisode) => boolean): number => judged.filter(f).length / judged.length;
  return {
    episodes: judged.length,
    detectorSuccess: share((e) => e.success),
    taskSuccess: share((e) => e.trueSuccess === true),
    agreement: share((e) => e.success === e.trueSuccess),
  };
}

/** The run's evaluations by name, each saying what it measured and on which episodes. */
export function runEvaluations(
  curve: readonly CurvePoint[],
  periodicSeed: number,
  heldOut: HeldOutResult | null,
  envSteps: number,
): Record<string, EvaluationRecord> {
  const out: Record<string, EvaluationRecord> = {};
  const periodic = 'on the seeds every evaluation during training uses (curves.csv)';
  if (curve.length > 0)
    out.initial = recordOfCurvePoint(
      `the base alone (the residual starts at zero), evaluated during training at step 0 ${periodic}`,
      periodicSeed,
      curve[0],
    );
  if (curve.length > 1)
    out.lastInTraining = recordOfCurvePoint(
      `base + the learner's latest residual, evaluated during training at its last point ${periodic}`,
      periodicSeed,
      curve[curve.length - 1],
    );
  if (heldOut?.base)
    out.heldOutBase = recordOf(
      'the base alone on held-out seeds, as `resrt eval --base BASE.onnx --seed firstSeed --episodes episodes` runs it',
      envSteps,
      heldOut.firstSeed,
      heldOut.base,
    );
  if (heldOut)
    out.heldOutResidual = recordOf(
      'base + residual.onnx as written, on held-out seeds, as `resrt eval --base BASE.onnx --residual residual.onnx --seed firstSeed --episodes episodes` runs it',
      envSteps,
      heldOut.firstSeed,
      heldOut.residual,
    );
  return out;
}

/** The mixing part of summary.json: the plan and how the shares turned out. */
function mixingSummary(m: MixingState): Record<string, unknown> {
  const n = m.records.length;
  const mean = (f: (r: MixingEpisode) => number): number | null =>
    n ? m.records.reduce((a, r) => a + f(r), 0) / n : null;
  return {
    spec: m.spec,
    episodes: n,
    meanShare: mean((r) => r.share),
    meanRealizedShare: mean((r) => r.realizedShare),
    trainSuccess: mean((r) => (r.success ? 1 : 0)),
    lastShare: n ? m.records[n - 1].share : null,
  };
}

/** summary.json: what the run reports, each success rate naming the evaluation it comes from. */
export function writeRunSummary(
  outDir: string,
  run: {
    task: string;
    profile: ProfileName;
    profileReason: string;
    backend: string;
    envSteps: number;
    updates: number;
    evaluations: Record<string, EvaluationRecord>;
    wallSeconds: number;
    config: ResidualConfig;
    mixing?: MixingState;
    successDetector?: DetectorAgreement | null;
  },
): void {
  const evaluations = run.evaluations;
  const baseFrom = evaluations.heldOutBase ? 'heldOutBase' : evaluations.initial ? 'initial' : null;
  const finalFrom = evaluations.heldOutResidual
    ? 'heldOutResidual'
    : evaluations.lastInTraining
      ? 'lastInTraining'
      : null;
  writeFileAtomic(
    join(outDir, 'summary.json'),
    JSON.stringify(
      {
        task: run.task,
        profile: run.profile,
        profileReason: run.profileReason,
        backend: run.backend,
        envSteps: run.envSteps,
        updates: run.updates,
        baseSuccess: baseFrom ? evaluations[baseFrom].successRate : null,
        baseSuccessFrom: baseFrom && `evaluations.${baseFrom}`,
        finalSuccess: finalFrom ? evaluations[finalFrom].successRate : null,
        finalSuccessFrom: finalFrom && `evaluations.${finalFrom}`,
        evaluations,
        wallSeconds: run.wallSeconds,
        config: run.config,
        ...(run.mixing ? { mixing: mixingSummary(run.mixing) } : {}),
        ...(run.successDetector ? { successDetector: run.successDetector } : {}),
      },
      null,
      2,
    ),
  );
}
