/** The conservative-mixing flags shared by `resrt train` and `resrt actor` (docs/safety.md). */
import type { Command } from 'commander';
import { validateMixingSpec, type MixingBaseline, type MixingSpec } from '../residual/mixing-run.js';
import { ResrtError } from '../util/errors.js';
import { parseFloatArg, parseIntArg } from './common.js';

export interface MixingFlags {
  mixing?: string;
  alpha: number;
  delta: number;
  mixBound: string;
  mixWindow: number;
  mixProbes?: number;
  baseline?: string;
}

/** Adds --mixing and its settings; `baselineDefault` says what a missing --baseline means. */
export function addMixingFlags(cmd: Command, baselineDefault: string): Command {
  return cmd
    .option('--mixing <mode>', 'conservative exploration: eps | step | scale (docs/safety.md)')
    .option(
      '--alpha <a>',
      'with --mixing: allowed relative loss per episode, (1 − α)·V_base',
      parseFloatArg('--alpha', 0, 1),
      0.1,
    )
    .option(
      '--delta <d>',
      'with --mixing: failure probability of the confidence bound',
      parseFloatArg('--delta', 0, 1),
      0.05,
    )
    .option('--mix-bound <kind>', 'with --mixing: hoeffding | wilson | bernstein', 'hoeffding')
    .option(
      '--mix-window <n>',
      'with --mixing: exploring episodes the bound looks back on',
      parseIntArg('--mix-window'),
      500,
    )
    .option(
      '--mix-probes <f>',
      'with --mixing step|scale: fraction of the allowed share spent on whole exploring episodes (default 0.5)',
      parseFloatArg('--mix-probes', 0, 1, 0.5),
    )
    .option(
      '--baseline <v>',
      `with --mixing: the base's success rate (0.5) or counts (45/100); default: ${baselineDefault}`,
    );
}

/** The spec the flags describe, or undefined without --mixing; bad values fail here with the fix. */
export function mixingSpecFromFlags(opts: MixingFlags): MixingSpec | undefined {
  if (!opts.mixing) return undefined;
  let baseline: MixingBaseline = 'initial-eval';
  if (opts.baseline !== undefined) {
    const counts = /^(\d+)\/(\d+)$/.exec(opts.baseline);
    const value = Number(opts.baseline);
    if (counts) baseline = { successes: Number(counts[1]), trials: Number(counts[2]) };
    else if (Number.isFinite(value)) baseline = { value };
    else
      throw new ResrtError(
        `--baseline ${opts.baseline} is neither a rate nor counts`,
        'e.g. --baseline 0.5 or --baseline 45/100',
      );
  }
  const spec = {
    mode: opts.mixing,
    alpha: opts.alpha,
    delta: opts.delta,
    bound: opts.mixBound,
    window: opts.mixWindow,
    ...(opts.mixProbes !== undefined ? { probeFraction: opts.mixProbes } : {}),
    baseline,
  } as MixingSpec;
  validateMixingSpec(spec);
  return spec;
}
