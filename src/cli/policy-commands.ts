/** `resrt bc`, `inspect`, `infer` and `run`: making, checking and running ONNX policies. */
import type { Command } from 'commander';
import { ComposedPolicy } from '../runtime/compose.js';
import { connectRobot } from '../hw/connect.js';
import { loadRobotConfig, observationLength, observeState, parseRobotUrl } from '../hw/robot-config.js';
import { formatLatencyTable } from '../runtime/loop.js';
import { WorkerControlLoop } from '../runtime/loop-host.js';
import type { LoopPriority } from '../runtime/thread-priority.js';
import type { PlainData, SourceSpec } from '../runtime/loop-plan.js';
import { SharedRobotBridge } from '../runtime/shared-robot.js';
import { loadSafetyConfig } from '../safety/index.js';
import { formatInspectReport, inferOnce, inspectOnnx } from '../runtime/onnx-inspect.js';
import { OnnxPolicy } from '../runtime/onnx-policy.js';
import { checkResidualPairing, loadResidual } from '../runtime/camera-residual.js';
import { defaultBcConfig, saveBcPolicy, trainBc } from '../sim/bc.js';
import type { ConvEncoderPooling } from '../nn/index.js';
import { readDemos } from '../sim/demos.js';
import { MujocoEnv } from '../sim/env.js';
import { loadTask, type AnyTask } from '../sim/registry.js';
import type { CameraSpec, Policy } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { checkOutputFile, parseFloatArg, parseIntArg, positiveList, printJson, progressBar } from './common.js';
import { robotLinkSpec, taskSourceSpec } from './loop-sources.js';

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
    .option(
      '--device <name>',
      'where training computes: auto | cpu | cuda (auto: CUDA when its provider is installed)',
      'auto',
    )
    .option(
      '--threads <n>',
      'onnxruntime intra-op threads on the CPU (default: RESRT_NN_THREADS, else every core)',
      parseIntArg('--threads'),
    )
    .option(
      '--cameras <names>',
      'cameras the policy reads, comma-separated: auto (every camera the demonstrations recorded), none (the state only), or names',
      'auto',
    )
    .option(
      '--encoder <channels>',
      'per camera: output channels of each 3x3 stride-2 convolution, comma-separated',
      defaultBcConfig.encoderChannels.join(','),
    )
    .option(
      '--embedding <n>',
      'per camera: embedding width',
      parseIntArg('--embedding'),
      defaultBcConfig.embeddingDim,
    )
    .option(
      '--pooling <kind>',
      'per camera: how the last feature map reaches the embedding: flatten (every cell) or spatial-softmax (an expected x, y per keypoint map; precise positions)',
      defaultBcConfig.encoderPooling,
    )
    .option(
      '--shift <pixels>',
      'random shift augmentation of camera images, pixels each way (0: off)',
      parseIntArg('--shift', 0),
      defaultBcConfig.shiftPad,
    )
    .action(async (opts: BcCliOptions) => {
      checkOutputFile(opts.out, '--out');
      const hidden = positiveList(opts.hidden, '--hidden', '256,256');
      const encoderChannels = positiveList(opts.encoder, '--encoder', '16,32,32,32');
      const cameras =
        opts.cameras === 'auto' || opts.cameras === 'none'
          ? opts.cameras
          : opts.cameras.split(',').map((c) => c.trim());
      if (typeof cameras !== 'string' && cameras.some((c) => c === '')) {
        throw new ResrtError(
          `--cameras has an empty name: "${opts.cameras}"`,
          'e.g. --cameras top or --cameras top,wrist',
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
          device: opts.device as 'auto',
          threads: opts.threads,
          cameras,
          encoderChannels,
          embeddingDim: opts.embedding,
          encoderPooling: opts.pooling as ConvEncoderPooling,
          shiftPad: opts.shift,
        },
        (p) =>
          bar.update(p.epoch, { loss: p.trainLoss.toExponential(2), val: p.validationLoss.toExponential(2) }),
        (line) => console.log(line),
      );
      bar.stop();
      saveBcPolicy(result, opts.out);
      console.log(
        `trained on ${result.samples} steps from ${result.episodesUsed} episodes in ${result.seconds.toFixed(1)} s ` +
          `(train loss ${result.trainLoss.toExponential(2)}, validation ${result.validationLoss.toExponential(2)})` +
          (result.cameras.length
            ? `; cameras ${result.cameras.join(', ')} (frames read in ${result.loadSeconds.toFixed(1)} s)`
            : ''),
      );
      console.log(
        `wrote ${opts.out}; onnxruntime matches the trained network to ${result.exportMaxAbsError.toExponential(1)} (limit ${result.exportTolerance.toExponential(0)})`,
      );
      if (result.cameras.length)
        console.log(
          `inputs observation.state, ${result.cameras.map((c) => `observation.images.${c}`).join(', ')}; outputs action, embedding [${result.embeddingDim}]`,
        );
    });

  program
    .command('inspect')
    .description('inputs, outputs, chunk length and metadata of an ONNX policy, and whether it fits a task')
    .argument('<file.onnx>')
    .option('--task <name|path>', 'check the file against this task')
    .option(
      '--base <file.onnx>',
      'for a residual: check that it pairs with this base (embedding, state and action widths)',
    )
    .option('--json', 'print one JSON object')
    .action(async (file: string, opts: { task?: string; base?: string; json?: boolean }) => {
      const dims = opts.task ? await taskDims(await loadTask(opts.task)) : undefined;
      const report = await inspectOnnx(file, dims, { base: opts.base });
      // A file that does not fit (or fails its own checks) is a failed check for scripts and CI.
      if (!report.fits) process.exitCode = 1;
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
    .option(
      '--image <camera=file>',
      'a PNG or JPEG for a camera input, e.g. --image top=frame.png (repeat per camera)',
      (v: string, all: string[]) => [...all, v],
      [] as string[],
    )
    .option('--json', 'print one JSON object')
    .action(
      async (file: string, opts: { obs: string; residual?: boolean; image: string[]; json?: boolean }) => {
        const obs = parseObservation(opts.obs);
        const images: Record<string, string> = {};
        for (const item of opts.image) {
          const eq = item.indexOf('=');
          if (eq <= 0 || eq === item.length - 1) {
            throw new ResrtError(`--image ${item} is not camera=file`, 'e.g. --image top=frame.png');
          }
          images[item.slice(0, eq)] = item.slice(eq + 1);
        }
        const actions = await inferOnce(file, obs, { residual: opts.residual, images });
        if (opts.json) return printJson({ file, actions });
        actions.forEach((row, i) =>
          console.log(`${actions.length > 1 ? `t+${i}: ` : ''}[${row.map((v) => v.toFixed(5)).join(', ')}]`),
        );
      },
    );

  program
    .command('run')
    .description(
      'run base (+ residual) through the safety layer at a fixed rate, on the simulator or a robot; prints the latency table',
    )
    .requiredOption('--base <file.onnx>', 'base policy')
    .option('--task <name|path>', 'simulated task (or, with --robot, nothing)')
    .option(
      '--robot <url>',
      'a robot instead of the simulator: serial:/dev/ttyUSB0 or mqtt://host:port/robot-id',
    )
    .option('--robot-config <file>', 'with --robot: the robot config file')
    .option('--residual <file.onnx>', 'residual actor')
    .option('--scale <s>', 'residual scale', parseFloatArg('--scale', 0, 10), 1)
    .option(
      '--safety <file.json>',
      'safety config (default: the normalized box and hold-last as the safe action)',
    )
    .option(
      '--rate <hz>',
      'control rate (default: the task or robot rate)',
      parseFloatArg(
        '--rate',
        1,
        10000,
        "leave --rate out to run at the task's or robot's own rate, or e.g. --rate 25",
      ),
    )
    .option('--duration <s>', 'seconds to run', parseFloatArg('--duration', 0.1, 86400), 10)
    .option('--seed <s>', 'first episode seed', parseIntArg('--seed', 0), 0)
    .option(
      '--priority <realtime|normal>',
      "the loop thread's scheduling: realtime (SCHED_FIFO where allowed; says why not otherwise) or normal",
      parsePriority,
      'realtime',
    )
    .option('--json', 'print one JSON object')
    .action(async (opts: RunCliOptions) => {
      const setup = opts.robot ? await robotLoopSetup(opts) : await simLoopSetup(opts);
      const rateHz = opts.rate ?? setup.rateHz;
      // The loop runs in its own thread: the policy sessions, the safety layer and the simulator
      // or robot link are built there (src/runtime/loop-host.ts).
      const loop = await WorkerControlLoop.create(
        {
          policy: { base: opts.base, residual: opts.residual, scale: opts.scale },
          source: setup.source,
          safety: opts.safety ? loadSafetyConfig(opts.safety) : 'default',
          rateHz,
          priority: opts.priority,
        },
        { bridge: setup.bridge },
      ).catch(async (err: unknown) => {
        await setup.close();
        throw err;
      });
      let episodes = 0;
      let successes = 0;
      loop.transitions$.subscribe((t) => {
        if (t.terminated || t.truncated) {
          episodes++;
          if (t.reward > 0) successes++;
        }
      });
      if (!opts.json) {
        console.log(`running ${setup.label} at ${rateHz} Hz for ${opts.duration} s`);
        if (loop.fusion !== 'fused' && opts.residual)
          console.log(`base and residual run as two onnxruntime calls: ${loop.fusion}`);
        if (opts.priority === 'realtime' && loop.priority.applied !== 'realtime')
          console.log(`the loop thread runs at normal priority: ${loop.priority.detail}`);
      }
      const stats = await loop.runFor(opts.duration * 1000);
      await setup.close();
      // On hardware, episodes and success are what a person or a session decides (resrt actor).
      const counted = setup.countsEpisodes ? { episodes, successes } : { episodes: 0, successes: 0 };
      if (opts.json)
        return printJson({
          target: setup.label,
          ...counted,
          fusion: loop.fusion,
          priority: loop.priority,
          stats,
        });
      console.log(formatLatencyTable(stats));
      console.log(`episodes finished: ${counted.episodes}, successful: ${counted.successes}`);
    });
}

/** --obs: a JSON array of finite numbers, with the reason when it is not one. */
function parseObservation(text: string): number[] {
  const example = "e.g. --obs '[0.1, -0.2, 0.3]' (single quotes keep the shell from splitting it)";
  if (/\b(NaN|-?Infinity)\b/.test(text))
    throw new ResrtError(
      `--obs holds NaN or Infinity: ${text}`,
      `give finite numbers only (NaN and Infinity are not JSON, and a policy needs finite observations), ${example}`,
    );
  let obs: unknown;
  try {
    obs = JSON.parse(text);
  } catch (err) {
    throw new ResrtError(
      `--obs is not JSON: ${(err as Error).message}`,
      `write a JSON array of numbers, ${example}`,
    );
  }
  if (!Array.isArray(obs) || obs.some((v) => typeof v !== 'number' || !Number.isFinite(v))) {
    throw new ResrtError(`--obs must be a JSON array of finite numbers, got ${text}`, example);
  }
  return obs as number[];
}

interface LoopSetup {
  label: string;
  source: SourceSpec;
  rateHz: number;
  countsEpisodes: boolean;
  /** A robot kept on this thread (servo bus), seen by the loop thread through shared memory. */
  bridge?: SharedRobotBridge;
  close(): Promise<void>;
}

async function simLoopSetup(opts: RunCliOptions): Promise<LoopSetup> {
  if (!opts.task)
    throw new ResrtError(
      'run needs --task (simulator) or --robot (hardware)',
      'e.g. --task push, or --robot mqtt://host/robot-1 --robot-config robot.json',
    );
  const task = await loadTask(opts.task);
  // The task's own rate; the loop thread builds its own copy of the simulator.
  const probe = await MujocoEnv.create(task);
  const rateHz = Math.round(1 / probe.controlDt);
  probe.close();
  return {
    label: `${task.name} (simulated in real time)`,
    source: taskSourceSpec({ task: opts.task, seed: opts.seed }),
    rateHz,
    countsEpisodes: true,
    close: async () => {},
  };
}

async function robotLoopSetup(opts: RunCliOptions): Promise<LoopSetup> {
  if (!opts.robotConfig)
    throw new ResrtError(
      '--robot needs --robot-config FILE',
      'write a robot config (see docs/mqtt-topics.md) or use the one `resrt virtual-robot` wrote',
    );
  const config = loadRobotConfig(opts.robotConfig);
  const label = `robot ${config.name} at ${opts.robot}`;
  if (parseRobotUrl(opts.robot!).kind !== 'servo') {
    // The MQTT or serial link opens in the loop thread (a serial one over a non-blocking fd the
    // loop polls each tick): states and commands never cross this one.
    return {
      label,
      source: robotLinkSpec({ url: opts.robot!, config: structuredClone(config) as PlainData }),
      rateHz: config.rateHz,
      countsEpisodes: false,
      close: async () => {},
    };
  }
  // A servo bus runs over serialport, which cannot run in a worker thread: the port stays here,
  // behind shared memory.
  const robot = await connectRobot(opts.robot!, { config });
  const obsDim = observationLength(config, robot.capabilities);
  const bridge = new SharedRobotBridge(robot, {
    toObs: (s) => observeState(config, s, obsDim),
    obsDim,
    validForMs: config.commandValidMs,
  });
  return {
    label,
    source: bridge.sourceSpec,
    rateHz: config.rateHz,
    countsEpisodes: false,
    bridge,
    close: () => robot.close(),
  };
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
  device: string;
  threads?: number;
  cameras: string;
  encoder: string;
  embedding: number;
  pooling: string;
  shift: number;
}

interface RunCliOptions {
  task?: string;
  robot?: string;
  robotConfig?: string;
  safety?: string;
  base: string;
  residual?: string;
  scale: number;
  rate?: number;
  duration: number;
  seed: number;
  priority: LoopPriority;
  json?: boolean;
}

function parsePriority(value: string): LoopPriority {
  if (value === 'realtime' || value === 'normal') return value;
  throw new ResrtError(
    `--priority: '${value}' is not a scheduling`,
    'use --priority realtime or --priority normal',
  );
}

export async function taskDims(task: AnyTask): Promise<{
  obsDim: number;
  actionDim: number;
  cameras: Record<string, { width: number; height: number }>;
}> {
  const env = await MujocoEnv.create(task);
  const dims = {
    obsDim: env.observationSpace.dim,
    actionDim: env.actionSpace.dim,
    cameras: cameraSizes(env),
  };
  env.close();
  return dims;
}

/** The environment's cameras as the ONNX loader checks image inputs against them. */
export function cameraSizes(env: {
  cameras?: readonly CameraSpec[];
}): Record<string, { width: number; height: number }> {
  return Object.fromEntries((env.cameras ?? []).map((c) => [c.name, { width: c.width, height: c.height }]));
}

/** Base ONNX (+ residual ONNX) checked against the environment's dimensions, as one policy. */
export async function loadComposedPolicy(
  env: { observationSpace: { dim: number }; actionSpace: { dim: number }; cameras?: readonly CameraSpec[] },
  basePath: string,
  residualPath?: string,
  scale = 1,
): Promise<Policy> {
  const expect = { expectObsDim: env.observationSpace.dim, expectActionDim: env.actionSpace.dim };
  const base = await OnnxPolicy.load(basePath, { ...expect, cameras: cameraSizes(env) });
  const residual = residualPath
    ? await loadResidual(residualPath, { ...expect, cameras: cameraSizes(env) })
    : null;
  if (residual) {
    try {
      checkResidualPairing(base, residual);
    } catch (err) {
      await residual.close();
      await base.close();
      throw err;
    }
  }
  return new ComposedPolicy({ base, residual, scale });
}
