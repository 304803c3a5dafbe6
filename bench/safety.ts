/**
 * Conservative exploration during residual training: per mixing mode (none, EpsMix, StepMix, residual
 * scale λ) and seed, a `trainResidual` run with the same budget, reporting the final success (eval,
 * 95% CI), the env steps to reach 90%/95% of the unconstrained final, and the violation fraction:
 * the share of training episodes whose windowed success (the last W training episodes) is below
 * (1 − α) × baseline. The baseline is the base alone evaluated once on --baseline-episodes episodes
 * (default 1000: with 100 its uncertainty, ±0.1, is twice the loss α·V the constraint allows), and
 * the mixers get the same count as their estimated baseline. The aim (issue): violations ≤ δ with a
 * final success within 2 points of unconstrained training.
 *
 *   npx tsx bench/safety.ts --task push --base runs/push-bc.onnx --demos runs/push-demos.jsonl \
 *     [--steps 20000] [--seeds 0,1,2] [--alpha 0.1] [--delta 0.05] [--window 50] [--bound hoeffding] \
 *     [--mix-window 200] [--probe-fraction 0.5] [--modes none,eps,step,scale] [--eval-every 5000] [--eval-episodes 100] \
 *     [--baseline-episodes 1000] [--learning-starts N] [--profile auto] [--out bench-out/safety] \
 *     [--checkpoint-every 5000] [--resume] [--json]
 *
 * Windowed success is noisy: even a policy exactly at the baseline has windows below (1 − α)·baseline
 * with probability P(Bin(W, V) < (1 − α)·V·W), the floor the report prints next to the fractions. So
 * the aim is judged on the significant violations: windows whose count is below the threshold at
 * level δ (an exact binomial test), which a run that always meets the constraint shows < δ of.
 */
import { Command } from 'commander';
import { join } from 'node:path';
import {
  parseSeeds,
  prepareTrainingBench,
  runBench,
  trainingBenchOptions,
  type TrainingBenchFlags,
} from './training-runs.js';
import { parseFloatArg, parseIntArg } from '../src/cli/common.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { checkDims, trainResidual } from '../src/residual/trainer.js';
import {
  MIXING_MODES,
  validateMixingSpec,
  windowedViolations,
  type MixingMode,
  type MixingSpec,
} from '../src/residual/mixing-run.js';
import type { ProfileName, ResidualConfig } from '../src/residual/config.js';
import { BOUND_KINDS, type BoundKind } from '../src/safety/bounds.js';
import { binomialBelow, wilsonInterval, type Interval } from '../src/util/stats.js';
import { evaluatePolicy } from '../src/runtime/evaluate.js';
import { writeFileAtomic } from '../src/util/files.js';
import { ResrtError } from '../src/util/errors.js';

type Mode = 'none' | MixingMode;
const ALL_MODES: readonly Mode[] = ['none', ...MIXING_MODES];

interface RunRow {
  mode: Mode;
  seed: number;
  baseSuccess: number;
  baseEpisodes: number;
  finalSuccess: number;
  finalSuccesses: number;
  finalEpisodes: number;
  envSteps: number;
  trainEpisodes: number;
  trainSuccess: number;
  /** Mean exploring share actually run per training episode (1 for unconstrained training). */
  exploreShare: number;
  windows: number;
  violations: number;
  significantViolations: number;
  stepsTo90: number | null;
  stepsTo95: number | null;
  wallSeconds: number;
  /** The learner's held-back TD3+BC weight in this run (ResidualConfig.heldBackBc). */
  heldBackBc: number;
  curve: { envSteps: number; successRate: number }[];
}

interface ModeRow {
  mode: Mode;
  seeds: number;
  finalSuccess: number;
  finalCi95: Interval;
  /** Final success minus the unconstrained final (null without a 'none' run). */
  vsUnconstrained: number | null;
  /** Mean over seeds of the steps to 90%/95% of the unconstrained final; null unless every seed got there. */
  stepsTo90: number | null;
  stepsTo95: number | null;
  reached90: number;
  reached95: number;
  windows: number;
  violations: number;
  violationFraction: number | null;
  significantViolations: number;
  significantFraction: number | null;
  exploreShare: number;
  trainSuccess: number;
  /** significant violations ≤ δ and final within 0.02 of unconstrained. */
  meetsAim: boolean | null;
  wallSeconds: number;
}

async function main(): Promise<void> {
  const program = trainingBenchOptions(new Command(), { steps: 20000, out: 'bench-out/safety' })
    .option('--alpha <a>', 'allowed relative loss α', '0.1')
    .option('--delta <d>', 'failure probability δ', '0.05')
    .option('--window <w>', 'training episodes per window of the violation measure', '50')
    .option('--bound <kind>', BOUND_KINDS.join(' | '), 'hoeffding')
    .option('--mix-window <n>', "exploring episodes the mixer's bound looks back on", '200')
    .option('--probe-fraction <f>', 'step and scale: share of s* spent on whole exploring episodes', '0.5')
    .option('--modes <list>', 'comma-separated subset of none,eps,step,scale', ALL_MODES.join(','))
    .option('--baseline-episodes <n>', 'episodes of the base alone that set the baseline', '1000')
    .option('--learning-starts <n>', "override the profile's learningStarts (small smoke runs)")
    .option('--held-back-bc <w>', "override the learner's heldBackBc (0 turns the term off)")
    .parse();
  const o = program.opts<
    TrainingBenchFlags & {
      alpha: string;
      delta: string;
      window: string;
      bound: string;
      mixWindow: string;
      probeFraction: string;
      modes: string;
      baselineEpisodes: string;
      learningStarts?: string;
      heldBackBc?: string;
    }
  >();
  const modes = o.modes.split(',') as Mode[];
  for (const m of modes) {
    if (!ALL_MODES.includes(m))
      throw new ResrtError(`unknown mode '${m}'`, `use a comma-separated subset of ${ALL_MODES.join(',')}`);
  }
  const seeds = parseSeeds(o.seeds);
  const steps = parseIntArg('--steps')(o.steps);
  const window = parseIntArg('--window')(o.window);
  const evalEpisodes = parseIntArg('--eval-episodes')(o.evalEpisodes);
  const evalEvery = parseIntArg('--eval-every', 0)(o.evalEvery);
  const checkpointEvery = parseIntArg('--checkpoint-every', 0)(o.checkpointEvery);
  const alpha = Number(o.alpha);
  const delta = Number(o.delta);
  const bound = o.bound as BoundKind;
  const mixWindow = parseIntArg('--mix-window')(o.mixWindow);
  const probeFraction = parseFloatArg('--probe-fraction', 0, 1)(o.probeFraction);
  const baselineEpisodes = parseIntArg('--baseline-episodes')(o.baselineEpisodes);
  const specFor = (mode: MixingMode, baseline: MixingSpec['baseline']): MixingSpec => ({
    mode,
    alpha,
    delta,
    bound,
    window: mixWindow,
    ...(mode === 'eps' ? {} : { probeFraction }),
    baseline,
  });
  // Bad α/δ/bound fail here, before hours of training.
  validateMixingSpec(specFor('eps', 'initial-eval'));
  const config: Partial<ResidualConfig> = {};
  if (o.learningStarts !== undefined)
    config.learningStarts = parseIntArg('--learning-starts')(o.learningStarts);
  if (o.heldBackBc !== undefined) config.heldBackBc = parseFloatArg('--held-back-bc', 0, 100)(o.heldBackBc);

  const { task, demos, makeEnv, say, runDir } = await prepareTrainingBench(o);

  // The baseline: the base alone on its own episodes (seeds apart from the runs' evaluations).
  say(`${task.name}: evaluating the base alone on ${baselineEpisodes} episodes for the baseline`);
  const baselineEnv = await makeEnv();
  const basePolicy = await OnnxPolicy.load(o.base);
  checkDims(baselineEnv, basePolicy, demos);
  const baseEval = await evaluatePolicy(baselineEnv, basePolicy, {
    episodes: baselineEpisodes,
    seed: 1_000_000,
  });
  const baseline = baseEval.successRate;
  const threshold = (1 - alpha) * baseline;
  const mixingBaseline = { successes: baseEval.successes, trials: baseEval.episodes };

  const runs: RunRow[] = [];
  for (const mode of modes) {
    for (const seed of seeds) {
      const outDir = runDir(mode, seed);
      say(`${task.name} ${mode} seed ${seed} → ${outDir}`);
      const r = await trainResidual({
        makeEnv,
        base: await OnnxPolicy.load(o.base),
        demos,
        steps,
        outDir,
        seed,
        evalEvery,
        evalEpisodes,
        profile: o.profile as ProfileName | 'auto',
        config,
        taskName: task.name,
        log: say,
        resume: !!o.resume,
        checkpointEvery,
        ...(mode === 'none' ? {} : { mixing: specFor(mode, mixingBaseline) }),
      });
      // The run's own step-0 evaluation (kept in its curve, so a resumed run has it too).
      const runBase = r.curve[0];
      const finalEval = r.finalEval;
      const last = r.curve[r.curve.length - 1];
      if (!runBase || !last) throw new Error(`run ${outDir} returned no step-0 or final evaluation`);
      const outcomes = r.trainEpisodes.map((e) => e.success);
      const v = windowedViolations(outcomes, window, threshold, delta);
      const shares = r.mixing ? r.mixing.map((x) => x.realizedShare) : outcomes.map(() => 1);
      runs.push({
        mode,
        seed,
        baseSuccess: runBase.successRate,
        baseEpisodes: runBase.evalEpisodes,
        finalSuccess: last.successRate,
        finalSuccesses: finalEval ? finalEval.successes : Math.round(last.successRate * last.evalEpisodes),
        finalEpisodes: finalEval ? finalEval.episodes : last.evalEpisodes,
        envSteps: r.envSteps,
        trainEpisodes: outcomes.length,
        trainSuccess: outcomes.length ? outcomes.filter(Boolean).length / outcomes.length : NaN,
        exploreShare: shares.length ? shares.reduce((a, b) => a + b, 0) / shares.length : NaN,
        windows: v.windows,
        violations: v.violations,
        significantViolations: v.significant,
        stepsTo90: null,
        stepsTo95: null,
        wallSeconds: r.wallSeconds,
        heldBackBc: r.config.heldBackBc,
        curve: r.curve.map((p) => ({ envSteps: p.envSteps, successRate: p.successRate })),
      });
    }
  }

  const pooledFinal = (rows: RunRow[]): number =>
    rows.reduce((a, r) => a + r.finalSuccesses, 0) / rows.reduce((a, r) => a + r.finalEpisodes, 0);
  const noneRuns = runs.filter((r) => r.mode === 'none');
  const unconstrainedFinal = noneRuns.length ? pooledFinal(noneRuns) : null;
  for (const r of runs) {
    if (unconstrainedFinal === null) continue;
    r.stepsTo90 = r.curve.find((p) => p.successRate >= 0.9 * unconstrainedFinal)?.envSteps ?? null;
    r.stepsTo95 = r.curve.find((p) => p.successRate >= 0.95 * unconstrainedFinal)?.envSteps ?? null;
  }
  const meanIfAll = (xs: (number | null)[]): number | null =>
    xs.every((x) => x !== null) ? (xs as number[]).reduce((a, b) => a + b, 0) / xs.length : null;
  const table: ModeRow[] = modes.map((mode) => {
    const rows = runs.filter((r) => r.mode === mode);
    const successes = rows.reduce((a, r) => a + r.finalSuccesses, 0);
    const episodes = rows.reduce((a, r) => a + r.finalEpisodes, 0);
    const final = successes / episodes;
    const windows = rows.reduce((a, r) => a + r.windows, 0);
    const violations = rows.reduce((a, r) => a + r.violations, 0);
    const violationFraction = windows ? violations / windows : null;
    const significantViolations = rows.reduce((a, r) => a + r.significantViolations, 0);
    const significantFraction = windows ? significantViolations / windows : null;
    const vsUnconstrained = unconstrainedFinal === null ? null : final - unconstrainedFinal;
    return {
      mode,
      seeds: rows.length,
      finalSuccess: final,
      finalCi95: wilsonInterval(successes, episodes),
      vsUnconstrained,
      stepsTo90: meanIfAll(rows.map((r) => r.stepsTo90)),
      stepsTo95: meanIfAll(rows.map((r) => r.stepsTo95)),
      reached90: rows.filter((r) => r.stepsTo90 !== null).length,
      reached95: rows.filter((r) => r.stepsTo95 !== null).length,
      windows,
      violations,
      violationFraction,
      significantViolations,
      significantFraction,
      exploreShare: rows.reduce((a, r) => a + r.exploreShare, 0) / rows.length,
      trainSuccess:
        rows.reduce((a, r) => a + r.trainSuccess * r.trainEpisodes, 0) /
        rows.reduce((a, r) => a + r.trainEpisodes, 0),
      meetsAim:
        mode === 'none' || significantFraction === null || vsUnconstrained === null
          ? null
          : // Finals are ratios of counts: 285/300 − 291/300 is −0.0200…02 in floating point, yet
            // exactly the 2 points the aim allows.
            significantFraction <= delta && vsUnconstrained >= -0.02 - 1e-9,
      wallSeconds: rows.reduce((a, r) => a + r.wallSeconds, 0),
    };
  });
  // How often a policy exactly at the baseline has a window below the threshold.
  const noiseFloor = binomialBelow(window, baseline, (1 - alpha) * baseline * window - 1e-9);

  const result = {
    task: task.name,
    steps,
    seeds,
    alpha,
    delta,
    window,
    bound,
    mixWindow,
    probeFraction,
    heldBackBc: [...new Set(runs.map((r) => r.heldBackBc))],
    evalEvery,
    evalEpisodes,
    baseline,
    baselineEpisodes,
    threshold,
    noiseFloor,
    unconstrainedFinal,
    unconstrainedViolationFraction: table.find((t) => t.mode === 'none')?.violationFraction ?? null,
    unconstrainedSignificantFraction: table.find((t) => t.mode === 'none')?.significantFraction ?? null,
    modes: table,
    runs,
  };
  writeFileAtomic(join(o.out, `${task.name}-safety.json`), JSON.stringify(result, null, 2));
  if (o.json) {
    process.stdout.write(JSON.stringify(result) + '\n');
    return;
  }
  const pct = (v: number | null): string =>
    v === null || Number.isNaN(v) ? '—' : `${(v * 100).toFixed(1)}%`;
  const st = (v: number | null, reached: number, n: number): string =>
    v !== null ? v.toFixed(0) : reached ? `${reached}/${n} seeds` : 'never';
  console.log(
    `${task.name}: ${steps} env steps × seeds ${seeds.join(',')}; α = ${alpha}, δ = ${delta}, window ${window}, ` +
      `bound ${bound}, probes ${probeFraction} of s* (step, scale), held-back BC ${result.heldBackBc.join('/')}; baseline (base alone, ${baselineEpisodes} episodes) ${pct(baseline)}, threshold (1 − α)·baseline = ${pct(threshold)}`,
  );
  console.log(
    'mode    final   95% CI          vs none   steps→90%    steps→95%    below threshold  significant  explore  train   aim',
  );
  for (const t of table) {
    console.log(
      [
        t.mode.padEnd(6),
        pct(t.finalSuccess).padStart(6),
        `[${pct(t.finalCi95.low)}, ${pct(t.finalCi95.high)}]`.padEnd(15),
        (t.vsUnconstrained === null
          ? '—'
          : `${t.vsUnconstrained >= 0 ? '+' : ''}${(t.vsUnconstrained * 100).toFixed(1)}`
        ).padStart(7),
        st(t.stepsTo90, t.reached90, t.seeds).padStart(11),
        st(t.stepsTo95, t.reached95, t.seeds).padStart(12),
        `${pct(t.violationFraction)} (${t.violations}/${t.windows})`.padStart(18),
        `${pct(t.significantFraction)} (${t.significantViolations})`.padStart(12),
        pct(t.exploreShare).padStart(7),
        pct(t.trainSuccess).padStart(6),
        (t.meetsAim === null ? '—' : t.meetsAim ? 'yes' : 'no').padStart(4),
      ].join(' '),
    );
  }
  console.log(
    `windows below the threshold: a policy exactly at the baseline would show ${pct(noiseFloor)} ` +
      `(binomial noise of a ${window}-episode window); significant: below the threshold at level δ = ${delta}, ` +
      `which a run always meeting the constraint shows in < δ of its windows`,
  );
  console.log(`runs and ${task.name}-safety.json: ${o.out}`);
}

runBench(main);
