/** `resrt bc`, `inspect`, `infer` and `run`: making, checking and running ONNX policies. */
import type { Command } from 'commander';
import { ComposedPolicy } from '../runtime/compose.js';
import { ControlLoop, formatLatencyTable, passThroughSafety } from '../runtime/loop.js';
import { formatInspectReport, inferOnce, inspectOnnx } from '../runtime/onnx-inspect.js';
import { OnnxPolicy } from '../runtime/onnx-policy.js';
import { envSource } from '../runtime/sources.js';
import { defaultBcConfig, saveBcPolicy, trainBc } from '../sim/bc.js';
import { readDemos } from '../sim/demos.js';
import { MujocoEnv } from '../sim/env.js';
import { loadTask, type AnyTask } from '../sim/registry.js';
import type { Policy } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { parseFloatArg, parseIntArg, printJson, progressBar } from './common.js';

export function registerPolicyCommands(program: Command): void {
  program
    .command('bc')
    .description('train a behavior-cloned base policy on demonstrations and export it to ONNX')
    .requiredOption('--demos <file>', 'demonstrations from `resrt collect`')
    .requiredOption('--out <file.onnx>', 'where to write the policy')
    .option('--epochs <n>', 'passes over the data', parseIntArg('--epochs'), defaultBcConfig.epochs)
    .option('--hidden <widths>', 'hidden layer widths, comma-separated', defaultBcConfig.hidden.join(','))
    .option('--no-layer-norm', 'no LayerNorm after hidden layers')
    .option(
      '--chunk <H>',
      'predict H future actions per observation (ACT-style chunks)',
      parseIntArg('--chunk'),
      1,
    )
    .option('--lr <rate>', 'Adam learning rate', parseFloatArg('--lr', 1e-7, 1), defaultBcConfig.learningRate)
    .option('--batch <n>', 'batch size', parseIntArg('--batch'), defaultBcConfig.batchSize)
    .option('--all-episodes', 'train on failed episodes too (default: successful only)')
    .option('--seed <s>', 'seed', parseIntArg('--seed', 0), 0)
    .option('--backend <name>', 'auto | wasm | cpu | tensorflow', 'auto')
    .action(async (opts: BcCliOptions) => {
      const hidden = opts.hidden.split(',').map((w) => Number(w));
      if (hidden.some((w) => !Number.isInteger(w) || w <= 0)) {
        throw new ResrtError(
          `--hidden must be comma-separated positive integers, got "${opts.hidden}"`,
          'e.g. --hidden 256,256',
        );
      }
      const demos = readDemos(opts.demos);
      const bar = progressBar('bc', opts.epochs, 'loss {loss} val {val}');
      const result = await trainBc(
        demos,
        {
          epochs: opts.epochs,
          hidden,
          layerNorm: opts.layerNorm,
          chunkLength: opts.chunk,
          learningRate: opts.lr,
          batchSize: opts.batch,
          successfulOnly: !opts.allEpisodes,
          seed: opts.seed,
          backend: opts.backend as 'auto',
        },
        (p) =>
          bar.update(p.epoch, { loss: p.trainLoss.toExponential(2), val: p.validationLoss.toExponential(2) }),
        (line) => console.log(line),
      );
      bar.stop();
      saveBcPolicy(result, opts.out);
      console.log(
        `trained on ${result.samples} steps from ${result.episodesUsed} episodes in ${result.seconds.toFixed(1)} s ` +
          `(train loss ${result.trainLoss.toExponential(2)}, validation ${result.validationLoss.toExponential(2)})`,
      );
      console.log(
        `wrote ${opts.out}; onnxruntime matches tfjs to ${result.exportMaxAbsError.toExponential(1)} (limit 1e-5)`,
      );
    });

  program
    .command('inspect')
    .description('inputs, outputs, chunk length and metadata of an ONNX policy, and whether it fits a task')
    .argument('<file.onnx>')
    .option('--task <name|path>', 'check the file against this task')
    .option('--json', 'print one JSON object')
    .action(async (file: string, opts: { task?: string; json?: boolean }) => {
      const dims = opts.task ? await taskDims(await loadTask(opts.task)) : undefined;
      const report = await inspectOnnx(file, dims);
      if (opts.json) return printJson(report);
      console.log(formatInspectReport(report));
    });

  program
    .command('infer')
    .description('one forward pass of an ONNX policy, to check it before deploying')
    .argument('<file.onnx>')
    .requiredOption(
      '--obs <json>',
      'observation as a JSON array (for a residual: observation then base action)',
    )
    .option('--residual', 'the file is a residual actor')
    .option('--json', 'print one JSON object')
    .action(async (file: string, opts: { obs: string; residual?: boolean; json?: boolean }) => {
      let obs: unknown;
      try {
        obs = JSON.parse(opts.obs);
      } catch {
        throw new ResrtError(
          `--obs is not valid JSON: ${opts.obs}`,
          "quote the array for the shell, e.g. --obs '[0.1, 0.2]'",
        );
      }
      if (!Array.isArray(obs) || obs.some((v) => typeof v !== 'number' || !Number.isFinite(v))) {
        throw new ResrtError('--obs must be a JSON array of finite numbers', "e.g. --obs '[0.1, -0.2, 0.3]'");
      }
      const actions = await inferOnce(file, obs as number[], { residual: opts.residual });
      if (opts.json) return printJson({ file, actions });
      actions.forEach((row, i) =>
        console.log(`${actions.length > 1 ? `t+${i}: ` : ''}[${row.map((v) => v.toFixed(5)).join(', ')}]`),
      );
    });

  program
    .command('run')
    .description(
      'run base (+ residual) against the simulator in real time at a fixed rate; prints the latency table',
    )
    .requiredOption('--task <name|path>', 'built-in task name or path to a task module')
    .requiredOption('--base <file.onnx>', 'base policy')
    .option('--residual <file.onnx>', 'residual actor')
    .option('--scale <s>', 'residual scale', parseFloatArg('--scale', 0, 10), 1)
    .option('--rate <hz>', 'control rate', parseFloatArg('--rate', 1, 10000), 0)
    .option('--duration <s>', 'seconds to run', parseFloatArg('--duration', 0.1, 86400), 10)
    .option('--seed <s>', 'first episode seed', parseIntArg('--seed', 0), 0)
    .option('--json', 'print one JSON object')
    .action(async (opts: RunCliOptions) => {
      const task = await loadTask(opts.task);
      const env = await MujocoEnv.create(task);
      const policy = await loadComposedPolicy(env, opts.base, opts.residual, opts.scale);
      const rateHz = opts.rate || Math.round(1 / env.controlDt);
      const source = envSource(env, { seed: opts.seed });
      let successes = 0;
      let episodes = 0;
      source.transitions$.subscribe((t) => {
        if (t.terminated || t.truncated) {
          episodes++;
          if (t.reward > 0) successes++;
        }
      });
      const loop = new ControlLoop({
        source,
        policy,
        safety: passThroughSafety(env.actionSpace.dim),
        rateHz,
      });
      if (!opts.json)
        console.log(
          `running ${task.name} at ${rateHz} Hz for ${opts.duration} s (simulated time runs at wall-clock speed)`,
        );
      const stats = await loop.runFor(opts.duration * 1000);
      env.close();
      if (opts.json) return printJson({ task: task.name, episodes, successes, stats });
      console.log(formatLatencyTable(stats));
      console.log(`episodes finished: ${episodes}, successful: ${successes}`);
    });
}

interface BcCliOptions {
  demos: string;
  out: string;
  epochs: number;
  hidden: string;
  layerNorm: boolean;
  chunk: number;
  lr: number;
  batch: number;
  allEpisodes?: boolean;
  seed: number;
  backend: string;
}

interface RunCliOptions {
  task: string;
  base: string;
  residual?: string;
  scale: number;
  rate: number;
  duration: number;
  seed: number;
  json?: boolean;
}

export async function taskDims(task: AnyTask): Promise<{ obsDim: number; actionDim: number }> {
  const env = await MujocoEnv.create(task);
  const dims = { obsDim: env.observationSpace.dim, actionDim: env.actionSpace.dim };
  env.close();
  return dims;
}

/** Base ONNX (+ residual ONNX) checked against the environment's dimensions, as one policy. */
export async function loadComposedPolicy(
  env: { observationSpace: { dim: number }; actionSpace: { dim: number } },
  basePath: string,
  residualPath?: string,
  scale = 1,
): Promise<Policy> {
  const expect = { expectObsDim: env.observationSpace.dim, expectActionDim: env.actionSpace.dim };
  const base = await OnnxPolicy.load(basePath, expect);
  const residual = residualPath ? await OnnxPolicy.load(residualPath, { ...expect, residual: true }) : null;
  return new ComposedPolicy({ base, residual, scale });
}
