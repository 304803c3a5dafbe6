/** `resrt encoder train`: a state estimator from pixels, as a residual's `file` encoder (src/sim/state-encoder.ts). */
import type { Command } from 'commander';
import type { ConvEncoderPooling } from '../nn/index.js';
import { readDemos, type DemoSet } from '../sim/demos.js';
import { loadTask } from '../sim/registry.js';
import { writeStateEncoder } from './state-encoder-source.js';
import { defaultStateEncoderConfig, trainStateEncoder } from '../sim/state-encoder.js';
import { ResrtError } from '../util/errors.js';
import {
  checkOutputFile,
  formatTable,
  parseFloatArg,
  parseIntArg,
  positiveList,
  printJson,
  progressBar,
} from './common.js';

interface EncoderTrainOptions {
  demos: string;
  targets?: string;
  out: string;
  cameras: string;
  epochs: number;
  encoder: string;
  embedding: number;
  pooling: string;
  hidden: string;
  lr: number;
  batch: number;
  shift: number;
  seed: number;
  device: string;
  threads?: number;
  json?: boolean;
}

export function registerEncoderCommands(program: Command): void {
  const encoder = program.command('encoder').description('camera encoders for residuals (encoder mode file)');
  const d = defaultStateEncoderConfig;
  encoder
    .command('train')
    .description(
      "train an encoder that predicts recorded environment state (e.g. push-cam's goal) from the camera frames; use it with `resrt train --encoder file --encoder-file FILE`",
    )
    .requiredOption(
      '--demos <file>',
      'demonstrations with frames and environment state, from `resrt collect` on a simulated task',
    )
    .option(
      '--targets <names>',
      "environment state to predict, comma-separated (default: the task's cameraTargets, what its state lacks and its cameras show: push-cam's goal_x,goal_y,puck_to_goal_x,puck_to_goal_y)",
    )
    .requiredOption('--out <file.onnx>', 'where to write the encoder')
    .option('--cameras <names>', "cameras to read, comma-separated ('auto': every recorded camera)", 'auto')
    .option('--epochs <n>', 'passes over the data', parseIntArg('--epochs'), d.epochs)
    .option(
      '--encoder <channels>',
      'per camera: output channels of each 3x3 stride-2 convolution',
      d.encoderChannels.join(','),
    )
    .option('--embedding <n>', 'per camera: embedding width', parseIntArg('--embedding'), d.embeddingDim)
    .option('--pooling <kind>', 'per camera: spatial-softmax (keypoints) or flatten', d.encoderPooling)
    .option('--hidden <widths>', 'hidden widths of the head, comma-separated', d.hidden.join(','))
    .option('--lr <rate>', 'Adam learning rate', parseFloatArg('--lr', 1e-7, 1), d.learningRate)
    .option('--batch <n>', 'batch size', parseIntArg('--batch'), d.batchSize)
    .option(
      '--shift <pixels>',
      'random shift augmentation, pixels each way (0: off)',
      parseIntArg('--shift', 0),
      d.shiftPad,
    )
    .option('--seed <s>', 'seed', parseIntArg('--seed', 0), 0)
    .option('--device <name>', 'where training computes: auto | cpu | cuda', 'auto')
    .option(
      '--threads <n>',
      'onnxruntime intra-op threads on the CPU (default: RESRT_NN_THREADS, else every core)',
      parseIntArg('--threads'),
    )
    .option('--json', 'print one JSON object')
    .action(async (opts: EncoderTrainOptions) => {
      checkOutputFile(opts.out, '--out');
      const cameras = opts.cameras === 'auto' ? 'auto' : opts.cameras.split(',').map((c) => c.trim());
      const demos = readDemos(opts.demos);
      const targets = opts.targets?.split(',').map((t) => t.trim()) ?? (await taskTargets(demos));
      if (targets.some((t) => t === '')) {
        throw new ResrtError(
          `--targets has an empty name: "${opts.targets}"`,
          'e.g. --targets goal_x,goal_y',
        );
      }
      const log = (line: string): void => void process.stderr.write(`${line}\n`);
      const bar = opts.json ? null : progressBar('encoder', opts.epochs, 'loss {loss} val {val}');
      const result = await trainStateEncoder(
        demos,
        {
          targets,
          cameras,
          epochs: opts.epochs,
          encoderChannels: positiveList(opts.encoder, '--encoder', '16,32,32'),
          embeddingDim: opts.embedding,
          encoderPooling: opts.pooling as ConvEncoderPooling,
          hidden: positiveList(opts.hidden, '--hidden', '256,256'),
          learningRate: opts.lr,
          batchSize: opts.batch,
          shiftPad: opts.shift,
          seed: opts.seed,
          device: opts.device as 'auto',
          threads: opts.threads,
        },
        (p) =>
          bar?.update(p.epoch, {
            loss: p.trainLoss.toExponential(2),
            val: p.validationLoss.toExponential(2),
          }),
        log,
      );
      bar?.stop();
      const summary = writeStateEncoder(opts.out, demos, result);
      if (opts.json) return printJson(summary);
      const g = (v: number): string => v.toPrecision(3);
      console.log(
        formatTable(
          ['held out', 'rmse', 'median |error|', 'p90 |error|', 'spread (std)'],
          [
            ...result.errors.map((e) => [e.name, g(e.rmse), g(e.median), g(e.p90), g(e.std)]),
            ...(result.errors.length > 1
              ? [['all (Euclidean)', '-', g(result.jointMedian), g(result.jointP90), '-']]
              : []),
          ],
        ),
      );
      console.log(
        `wrote ${opts.out}: inputs ${result.cameras.map((c) => `observation.images.${c}`).join(', ')}; output features [${result.targets.length}] = ${result.targets.join(', ')} (z-scored); ` +
          `${result.samples} frames trained, ${result.validationSamples} held out, ${result.seconds.toFixed(0)} s; export checked to ${result.exportMaxAbsError.toExponential(1)}`,
      );
      console.log(`use it: resrt train --encoder file --encoder-file ${opts.out} …`);
    });
}

/** The task's `cameraTargets` (none for a task resrt does not know, or one without them). */
async function taskTargets(demos: DemoSet): Promise<string[]> {
  const known = await loadTask(demos.header.task).catch(() => null);
  return [...(known?.privilegedObservation?.cameraTargets ?? [])];
}
