/** `resrt reward train` and `resrt reward eval`: a learned success detector from labelled camera frames, and its measure. */
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { readDemos } from '../sim/demos.js';
import { labelledEpisodes } from '../sim/reward-data.js';
import { trainSuccessDetector } from '../residual/reward-detector.js';
import type { DetectorMetrics } from '../residual/reward-detector-verdict.js';
import { evaluateDetector } from '../residual/reward-detector-eval.js';
import { SuccessDetector } from '../runtime/success-detector.js';
import { writeFileAtomic } from '../util/files.js';
import { formatTable, parseFloatArg, parseIntArg, pct, printJson } from './common.js';

interface RewardTrainOptions {
  data: string;
  cameras: string;
  out: string;
  steps: number;
  batch: number;
  lr: number;
  encoder: string;
  shift: number;
  val: number;
  test: number;
  seed: number;
  threads?: number;
  json?: boolean;
}

export function registerRewardCommands(program: Command): void {
  const reward = program.command('reward').description('learned success detectors (reward classifiers)');
  reward
    .command('train')
    .description(
      'train a success detector (conv encoder + head → P(success)) on episodes labelled success/failure; threshold chosen on a validation split',
    )
    .requiredOption(
      '--data <files>',
      'comma-separated demonstration files with frames (resrt collect), labelled by their success flags',
    )
    .option(
      '--cameras <names>',
      "cameras to read, comma-separated ('auto': the streams recorded for a detector with collect --detector-cameras, else every recorded camera)",
      'auto',
    )
    .option('--out <file.onnx>', 'the detector file', 'detector.onnx')
    .option('--steps <n>', 'gradient steps', parseIntArg('--steps'), 1500)
    .option('--batch <n>', 'images per step (half successes)', parseIntArg('--batch', 2), 64)
    .option('--lr <x>', 'Adam learning rate', parseFloatArg('--lr', 1e-7, 1), 1e-3)
    .option('--encoder <channels>', 'conv channels per camera, e.g. 16,32,32', '16,32,32')
    .option('--shift <px>', 'random shift augmentation in pixels (0 = off)', parseIntArg('--shift', 0), 4)
    .option(
      '--val <share>',
      'share of episodes for choosing the threshold',
      parseFloatArg('--val', 0.01, 0.8),
      0.2,
    )
    .option(
      '--test <share>',
      'share of episodes held out for the final measurement',
      parseFloatArg('--test', 0.01, 0.8),
      0.2,
    )
    .option('--seed <s>', 'seed', parseIntArg('--seed', 0), 0)
    .option('--threads <n>', 'onnxruntime intra-op threads', parseIntArg('--threads'))
    .option('--json', 'print one JSON object')
    .action(async (opts: RewardTrainOptions) => {
      const files = opts.data.split(',').filter(Boolean);
      const data = labelledEpisodes(
        files.map((path) => ({ path, demos: readDemos(path) })),
        opts.cameras === 'auto' ? 'auto' : opts.cameras.split(',').filter(Boolean),
      );
      const log = (line: string): void => void process.stderr.write(`${line}\n`);
      const result = await trainSuccessDetector(
        data,
        {
          steps: opts.steps,
          batchSize: opts.batch,
          learningRate: opts.lr,
          encoderChannels: opts.encoder.split(',').map(Number),
          shiftPad: opts.shift,
          validationFraction: opts.val,
          testFraction: opts.test,
          seed: opts.seed,
          threads: opts.threads,
        },
        log,
      );
      writeFileAtomic(opts.out, result.onnx);
      const summary = {
        detector: opts.out,
        task: data.task,
        cameras: data.cameras,
        threshold: result.threshold,
        split: result.split,
        train_frames: result.trainFrames,
        validation: result.validation,
        test: result.test,
        export_max_abs_error: result.exportMaxAbsError,
        backend: result.backend,
        seconds: result.seconds,
      };
      writeFileSync(`${opts.out}.train.json`, JSON.stringify(summary, null, 2));
      if (opts.json) return printJson(summary);
      console.log(
        metricsTable('split', [
          ['validation', result.validation],
          ['test', result.test],
        ]),
      );
      console.log(
        `wrote ${opts.out} (cameras ${data.cameras.map((c) => `${c.name} ${c.width}x${c.height}`).join(', ')}, threshold ${result.threshold.toFixed(3)}, export checked to ${result.exportMaxAbsError.toExponential(1)}) in ${result.seconds.toFixed(0)} s`,
      );
    });
  reward
    .command('eval')
    .description(
      "measure a success detector on labelled episodes it was not trained on: its episode verdicts at the file's threshold, as train and actor use it",
    )
    .requiredOption('--detector <file.onnx>', 'the detector (resrt reward train)')
    .requiredOption(
      '--data <files>',
      'comma-separated demonstration files with frames of its cameras (resrt collect, resrt import session --labelled-only)',
    )
    .option('--json', 'print one JSON object')
    .action(async (opts: { detector: string; data: string; json?: boolean }) => {
      const detector = await SuccessDetector.load(opts.detector);
      try {
        const names = detector.cameras.map((c) => c.name);
        const sources = opts.data
          .split(',')
          .filter(Boolean)
          .map((path) => {
            const demos = readDemos(path);
            // A camera the file lacks is named, with its fix, by evaluateDetector.
            const recorded = names.filter((n) => demos.header.cameras?.some((c) => c.name === n));
            const { cameras, episodes } = labelledEpisodes([{ path, demos }], recorded);
            return { name: path, cameras, episodes };
          });
        const result = await evaluateDetector(detector, sources);
        const summary = {
          detector: opts.detector,
          threshold: detector.threshold,
          cameras: detector.cameras,
          all: result.all,
          by_file: result.bySource,
          observations: result.observations,
          seconds: result.seconds,
        };
        if (opts.json) return printJson(summary);
        const rows: [string, DetectorMetrics][] = result.bySource.map((s) => [s.source, s.metrics]);
        if (rows.length > 1) rows.push(['all', result.all]);
        console.log(metricsTable('data', rows));
        console.log(
          `${opts.detector} (cameras ${detector.cameras.map((c) => `${c.name} ${c.width}x${c.height}`).join(', ')}, threshold ${detector.threshold.toFixed(3)}): ${result.observations} observations judged in ${result.seconds.toFixed(0)} s`,
        );
      } finally {
        await detector.close();
      }
    });
}

/** Episode verdicts as a table, one row per split or data file. */
function metricsTable(first: string, rows: readonly [string, DetectorMetrics][]): string {
  return formatTable(
    [first, 'episodes', 'accuracy', 'precision', 'recall', 'TP/FP/TN/FN', 'final frame acc.'],
    rows.map(([name, m]) => [
      name,
      m.episodes,
      pct(m.accuracy),
      Number.isNaN(m.precision) ? '-' : pct(m.precision),
      Number.isNaN(m.recall) ? '-' : pct(m.recall),
      `${m.truePositives}/${m.falsePositives}/${m.trueNegatives}/${m.falseNegatives}`,
      pct(m.finalFrameAccuracy),
    ]),
  );
}
