/** `resrt train` and `resrt demo`: the residual learner from the command line. */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { OnnxPolicy } from '../runtime/onnx-policy.js';
import { type DetectorCamera, SuccessDetector } from '../runtime/success-detector.js';
import { ENCODER_MODES, type ProfileName, type ResidualConfig } from '../residual/config.js';
import type { MixingSpec } from '../residual/mixing-run.js';
import type { CameraSpec, Env } from '../types.js';
import { hasCheckpoint } from '../residual/checkpoint.js';
import { detectorAgreement, type DetectorAgreement } from '../residual/trainer-report.js';
import { trainResidual, type TrainProgress, type TrainResult } from '../residual/trainer.js';
import { saveBcPolicy, trainBc } from '../sim/bc.js';
import { collectDemos } from '../sim/collect.js';
import { loadEpisodeFrames, readDemos } from '../sim/demos.js';
import { detectorStreams } from '../sim/camera/sim-cameras.js';
import { MujocoEnv } from '../sim/env.js';
import { loadTask, type AnyTask } from '../sim/registry.js';
import { ResrtError } from '../util/errors.js';
import {
  checkProfile,
  encoderFlag,
  formatTable,
  inOutputFolder,
  parseIntArg,
  parseKeep,
  parseOverrides,
  pct,
  progressBar,
  type Progress,
} from './common.js';
import { cameraSizes } from './policy-commands.js';
import { addMixingFlags, mixingSpecFromFlags, type MixingFlags } from './mixing-flags.js';
import { openRobotEnv } from './robot-commands.js';
import { demoNoiseFor } from './sim-commands.js';
import { stateEncoderSource } from './state-encoder-source.js';

export function registerTrainCommands(program: Command): void {
  const train = program
    .command('train')
    .description(
      'learn a residual on top of a frozen ONNX base policy (TD3 with a critic ensemble, sparse reward)',
    )
    .option('--task <name|path>', 'built-in task name or path to a task module')
    .option('--robot <url>', 'train on a robot instead (serial:/dev/ttyUSB0, mqtt://host:port/robot-id)')
    .option('--robot-config <file>', 'with --robot: the robot config file')
    .option('--virtual', 'with --robot: a resrt virtual robot (it resets its own scene)')
    .requiredOption('--base <file.onnx>', 'the frozen base policy')
    .option('--demos <file>', 'demonstrations for the offline buffer (sampled 50/50 with online data)')
    .option('--steps <n>', 'environment steps', parseIntArg('--steps'), 50_000)
    .option('--out <dir>', 'run folder: checkpoints, curves, residual.onnx', 'runs/residual')
    .option('--resume', 'continue the run in --out from its last checkpoint')
    .option('--profile <name>', 'auto | cpu | gpu (auto: gpu when the learner runs on CUDA)', 'auto')
    .option('--seed <s>', 'seed', parseIntArg('--seed', 0), 0)
    .option('--eval-every <n>', 'evaluate every n environment steps', parseIntArg('--eval-every', 0), 5000)
    .option('--eval-episodes <n>', 'episodes per evaluation', parseIntArg('--eval-episodes'), 100)
    .option(
      '--keep <which>',
      'residual.onnx holds: final (the last weights) | best (those of the best --eval-every evaluation, the final one included)',
      'final',
    )
    .option(
      '--checkpoint-every <n>',
      'checkpoint every n environment steps',
      parseIntArg('--checkpoint-every', 0),
      5000,
    )
    .option('--no-worker', 'run the learner in this thread (deterministic, one core)')
    .option(
      '--success-detector <file.onnx>',
      "a learned success detector (resrt reward train) as the training episodes' success source",
    )
    .option(
      '--encoder <mode>',
      `what the residual sees of the cameras on a task with cameras: ${ENCODER_MODES.join(' | ')} (default: the profile's: cpu auto, gpu learned)`,
    )
    .option(
      '--encoder-file <file.onnx>',
      'with --encoder file: a frozen encoder ONNX, one observation.images.<camera> input per camera -> features [batch, E]',
    )
    .option('--set <key=value...>', 'override a config value, e.g. --set actorLr=3e-4 --set numCritics=2');
  addMixingFlags(train, "the trainer's step-0 evaluation of the base");
  train.action(async (opts: TrainCliOptions) => {
    checkProfile(opts.profile);
    const keep = parseKeep(opts.keep);
    if (opts.resume && !hasCheckpoint(opts.out))
      throw new ResrtError(
        `nothing to resume: ${opts.out} holds no residual run (no checkpoint.json)`,
        'drop --resume to start a new run there, or pass the --out folder of the run to continue',
      );
    const target = opts.robot ? await robotTarget(opts) : await simTarget(await loadTaskOrFail(opts.task));
    const result = await runResidualTraining(target, {
      base: opts.base,
      demos: opts.demos,
      steps: opts.steps,
      outDir: opts.out,
      resume: opts.resume,
      profile: opts.profile as ProfileName | 'auto',
      seed: opts.seed,
      evalEvery: opts.evalEvery,
      evalEpisodes: opts.evalEpisodes,
      keep,
      checkpointEvery: opts.checkpointEvery,
      worker: opts.worker,
      config: { ...parseOverrides(opts.set ?? []), ...encoderFlag(opts.encoder, opts.encoderFile) },
      mixing: mixingSpecFromFlags(opts),
      successDetector: opts.successDetector,
    });
    printTrainSummary(
      target.name,
      result,
      opts.robot ? null : `resrt eval --task ${opts.task} --base ${opts.base} --residual ${result.onnxPath}`,
      opts.robot
        ? null
        : `resrt collect --task ${opts.task} --base ${opts.base} --residual ${result.onnxPath} --out rollouts.jsonl`,
    );
  });

  program
    .command('demo')
    .description(
      'the main job on the built-in simulator: collect demos → BC base → residual RL → before/after table',
    )
    .option('--task <name>', 'task', 'push')
    .option('--out <dir>', 'working folder', 'runs/demo')
    .option('--demo-episodes <n>', 'expert demonstrations to collect', parseIntArg('--demo-episodes'), 400)
    .option('--bc-epochs <n>', 'BC epochs', parseIntArg('--bc-epochs'), 40)
    .option(
      '--steps <n>',
      'residual RL environment steps (30k: 95% on push in about 5 minutes on 2 cores, BENCHMARKS.md)',
      parseIntArg('--steps'),
      30_000,
    )
    .option(
      '--eval-episodes <n>',
      'episodes for the before/after evaluation',
      parseIntArg('--eval-episodes'),
      200,
    )
    .option('--seed <s>', 'seed', parseIntArg('--seed', 0), 0)
    .action(async (opts: DemoCliOptions) => {
      // A demo that fails leaves no half-made folder it created.
      await inOutputFolder(opts.out, () => runDemo(opts));
    });
}

interface TrainCliOptions extends MixingFlags {
  task?: string;
  robot?: string;
  robotConfig?: string;
  virtual?: boolean;
  base: string;
  demos?: string;
  steps: number;
  out: string;
  resume?: boolean;
  profile: string;
  seed: number;
  evalEvery: number;
  evalEpisodes: number;
  keep: string;
  checkpointEvery: number;
  worker: boolean;
  encoder?: string;
  encoderFile?: string;
  set?: string[];
  successDetector?: string;
}

interface DemoCliOptions {
  task: string;
  out: string;
  demoEpisodes: number;
  bcEpochs: number;
  steps: number;
  evalEpisodes: number;
  seed: number;
}

export interface ResidualTrainingOptions {
  base: string;
  demos?: string;
  steps: number;
  outDir: string;
  resume?: boolean;
  profile?: ProfileName | 'auto';
  seed?: number;
  evalEvery?: number;
  evalEpisodes?: number;
  keep?: 'final' | 'best';
  checkpointEvery?: number;
  worker?: boolean;
  config?: Partial<ResidualConfig>;
  mixing?: MixingSpec;
  quiet?: boolean;
  /** A success detector file as the training episodes' success source. */
  successDetector?: string;
  /** Episodes of the held-out evaluation that ends the run (default: evalEpisodes). */
  heldOutEpisodes?: number;
}

/** Where a residual trains: a simulated task, or a robot behind its HardwareEnv. */
export interface TrainTarget {
  name: string;
  obsDim: number;
  actionDim: number;
  /** The cameras whose frames come with every observation (visuomotor bases read them). */
  cameras?: readonly CameraSpec[];
  makeEnv: () => Env | Promise<Env>;
  /** A robot's time is dear: its held-out evaluation skips the base (the step-0 one stands in). */
  robot: boolean;
  /** The simulated task (null on a robot): what its state lacks and its cameras show trains encoder 'state'. */
  task: AnyTask | null;
}

async function loadTaskOrFail(task: string | undefined): Promise<AnyTask> {
  if (!task) throw new ResrtError('train needs --task (simulator) or --robot (hardware)', 'e.g. --task push');
  return loadTask(task);
}

export async function simTarget(task: AnyTask): Promise<TrainTarget> {
  const probe = await MujocoEnv.create(task);
  const target = {
    name: task.name,
    obsDim: probe.observationSpace.dim,
    actionDim: probe.actionSpace.dim,
    cameras: probe.cameras,
  };
  probe.close();
  return { ...target, makeEnv: simEnvFactory(task), robot: false, task };
}

/**
 * Environments of a simulated task. With a success detector trained on a camera stream of its own
 * size (`collect --detector-cameras`), that stream is rendered beside the task's cameras.
 */
export function simEnvFactory(
  task: AnyTask,
  detector?: { cameras: readonly DetectorCamera[] },
): () => Promise<MujocoEnv> {
  const extra = detector ? detectorStreams(detector.cameras, task.cameras?.names ?? []) : [];
  return () => MujocoEnv.create(task, extra.length ? { cameras: { extra } } : {});
}

/**
 * A robot is one physical thing: training and evaluation share its single environment (the trainer
 * uses them one after the other), and closing it twice is harmless.
 */
async function robotTarget(opts: TrainCliOptions): Promise<TrainTarget> {
  if (!opts.robotConfig)
    throw new ResrtError('--robot needs --robot-config FILE', 'use the robot config written for this robot');
  const env = await openRobotEnv(opts.robot!, opts.robotConfig, Boolean(opts.virtual));
  let closed = false;
  const shared: Env = {
    id: env.id,
    observationSpace: env.observationSpace,
    actionSpace: env.actionSpace,
    controlDt: env.controlDt,
    maxEpisodeSteps: env.maxEpisodeSteps,
    cameras: env.cameras,
    auxCameras: env.auxCameras,
    reset: (o) => env.reset(o),
    step: (a) => env.step(a),
    close: async () => {
      if (!closed) await env.close();
      closed = true;
    },
  };
  return {
    name: env.id,
    obsDim: env.observationSpace.dim,
    actionDim: env.actionSpace.dim,
    cameras: env.cameras,
    makeEnv: () => shared,
    robot: true,
    task: null,
  };
}

export async function runResidualTraining(
  target: TrainTarget,
  o: ResidualTrainingOptions,
): Promise<TrainResult> {
  const dims = { expectObsDim: target.obsDim, expectActionDim: target.actionDim };
  const base = await OnnxPolicy.load(o.base, { ...dims, cameras: cameraSizes(target) });
  const demos = o.demos ? readDemos(o.demos) : undefined;
  const detector = o.successDetector ? await SuccessDetector.load(o.successDetector) : undefined;
  const makeEnv = detector && target.task ? simEnvFactory(target.task, detector) : target.makeEnv;
  let bar: Progress | null = null;
  let lastPhase: TrainProgress['phase'] | null = null;
  const log = o.quiet ? (): void => {} : (line: string): void => console.log(line);
  try {
    // A run that fails before its first checkpoint leaves nothing worth keeping: no half-made folder.
    return await inOutputFolder(
      o.outDir,
      () =>
        trainResidual({
          makeEnv,
          base,
          demos,
          demoFrames: demos?.framesPath ? (ep) => loadEpisodeFrames(demos, ep) : undefined,
          steps: o.steps,
          outDir: o.outDir,
          resume: o.resume,
          seed: o.seed,
          profile: o.profile,
          config: o.config,
          mixing: o.mixing,
          evalEvery: o.evalEvery,
          evalEpisodes: o.evalEpisodes,
          keep: o.keep,
          heldOut: { episodes: o.heldOutEpisodes, base: !target.robot },
          checkpointEvery: o.checkpointEvery,
          worker: o.worker,
          taskName: target.name,
          successDetector: detector,
          stateEncoder: stateEncoderSource(target.task, demos, { seed: o.seed ?? 0 }),
          log,
          onProgress: (p: TrainProgress) => {
            bar ??= progressBar(
              'train',
              o.steps,
              '{phase} eval {evalSuccess} train {trainSuccess} Q {q} {ups} upd/s',
            );
            // An evaluation just ended: without a terminal that is a line of its own.
            const evaluated = lastPhase === 'evaluating' && p.phase !== 'evaluating';
            lastPhase = p.phase;
            bar.update(
              p.envSteps,
              {
                phase: p.phase,
                evalSuccess: p.evalSuccessRate === null ? '-' : pct(p.evalSuccessRate),
                trainSuccess: p.trainSuccessRate === null ? '-' : pct(p.trainSuccessRate),
                q: p.qMean === null ? '-' : p.qMean.toFixed(3),
                ups: p.updatesPerSec.toFixed(1),
              },
              evaluated,
            );
          },
        }),
      hasCheckpoint,
    );
  } finally {
    (bar as Progress | null)?.stop();
    await base.close();
    await detector?.close();
  }
}

/** `collectRollouts`: the command that records this residual's rollouts (in simulation; null on a robot). */
function printTrainSummary(
  task: string,
  r: TrainResult,
  reproduce: string | null,
  collectRollouts: string | null,
): void {
  console.log(`\nresidual on ${task}: profile ${r.profile} (${r.profileReason}), engine ${r.backend}`);
  const h = r.heldOut;
  const seeds = (first: number, n: number): string => `${n} (seeds ${first}…${first + n - 1})`;
  const rows: (string | number)[][] = [];
  if (h?.base)
    rows.push([
      'base alone',
      `${seeds(h.firstSeed, h.episodes)} held out`,
      pct(h.base.successRate),
      ci(h.base.ci95),
    ]);
  else if (r.baseEval) {
    const p = r.curve[0];
    rows.push([
      'base alone (step 0, during training)',
      String(p.evalEpisodes),
      pct(r.baseEval.successRate),
      ci(r.baseEval.ci95),
    ]);
  }
  if (h)
    rows.push([
      `base + ${r.onnxPath}`,
      `${seeds(h.firstSeed, h.episodes)} held out`,
      pct(h.residual.successRate),
      ci(h.residual.ci95),
    ]);
  console.log(formatTable(['policy', 'episodes', 'success', '95% CI'], rows));
  if (r.curve.length > 1) {
    const first = r.curve[0];
    const last = r.curve[r.curve.length - 1];
    console.log(
      `during training (curves.csv, the same ${last.evalEpisodes} evaluation episodes each time): ` +
        `${pct(first.successRate)} at step ${first.envSteps} → ${pct(last.successRate)} at step ${last.envSteps}`,
    );
  }
  if (r.kept)
    console.log(
      `${r.onnxPath} is the residual of the best evaluation (--keep best): ${pct(r.kept.successRate)} of ` +
        `${r.kept.evalEpisodes} at step ${r.kept.envSteps}`,
    );
  for (const line of detectorAgreementLines(detectorAgreement(r.trainEpisodes), collectRollouts))
    console.log(line);
  if (h && reproduce) console.log(`reproduce: ${reproduce} --seed ${h.firstSeed} --episodes ${h.episodes}`);
  console.log(
    `${r.envSteps} env steps, ${r.updates} updates, ${r.wallSeconds.toFixed(0)} s; residual written to ${r.onnxPath}`,
  );
}

/** How far (a share of episodes) the detector's success may run ahead of the task's before a warning. */
const DETECTOR_WARN_MARGIN = 0.2;

/**
 * What `train --success-detector` prints about its detector: how often it and the task called the
 * training episodes successful, and a warning (with what to do) when the detector runs more than
 * 20 points ahead. No lines without a detector.
 */
export function detectorAgreementLines(
  agreement: DetectorAgreement | null,
  collectRollouts: string | null,
): string[] {
  if (!agreement) return [];
  const lines = [
    `success detector: ${pct(agreement.detectorSuccess)} of ${agreement.episodes} training episodes ` +
      `called successful, by the task ${pct(agreement.taskSuccess)} (they agree on ${pct(agreement.agreement)})`,
  ];
  if (agreement.detectorSuccess - agreement.taskSuccess > DETECTOR_WARN_MARGIN)
    lines.push(
      'warning: the detector calls far more episodes successful than the task: the learner may have found ' +
        'what the detector rewards without doing the task; judge this residual by the held-out table ' +
        "above (the task's success), not by the detector, and train the detector again with this residual's " +
        (collectRollouts
          ? `rollouts among its data (\`${collectRollouts}\`; docs/success-detector.md)`
          : 'episodes, labelled by a person, among its data (docs/success-detector.md)'),
    );
  return lines;
}

function ci(i: { low: number; high: number }): string {
  return `${pct(i.low)}–${pct(i.high)}`;
}

/**
 * The demo's periodic evaluations, among which it keeps the best residual: one evaluation's success
 * wanders by a few points from one stretch of updates to the next (BENCHMARKS.md, "The demo").
 */
const DEMO_EVAL = { every: 2500, episodes: 50 };

async function runDemo(opts: DemoCliOptions): Promise<void> {
  const task = await loadTask(opts.task);
  const started = performance.now();
  mkdirSync(opts.out, { recursive: true });
  const demosPath = join(opts.out, `${task.name}-demos.jsonl`);
  const basePath = join(opts.out, `${task.name}-base.onnx`);
  const runDir = join(opts.out, `${task.name}-residual`);
  // The demo always starts from scratch so that its numbers mean what they say.
  for (const p of [demosPath, basePath]) if (existsSync(p)) rmSync(p);
  rmSync(runDir, { recursive: true, force: true });

  console.log(`resrt demo on ${task.name}: ${task.description}\n`);
  console.log(`1/4 collecting ${opts.demoEpisodes} scripted-expert demonstrations with human-like noise`);
  const bar = progressBar('collect', opts.demoEpisodes);
  const collected = await collectDemos({
    task,
    episodes: opts.demoEpisodes,
    out: demosPath,
    seed: opts.seed,
    noise: demoNoiseFor(task, {}),
    onEpisode: (n) => bar.update(n),
  });
  bar.stop();
  console.log(
    `    ${collected.successes}/${collected.episodes} demonstrations succeeded (${collected.steps} steps)`,
  );

  console.log(
    `2/4 behavior cloning a 2x256 MLP base policy (${opts.bcEpochs} epochs) and exporting it to ONNX`,
  );
  const bcBar = progressBar('bc', opts.bcEpochs, 'loss {loss}');
  const bc = await trainBc(readDemos(demosPath), { epochs: opts.bcEpochs, seed: opts.seed }, (p) =>
    bcBar.update(p.epoch, { loss: p.trainLoss.toExponential(2) }),
  );
  bcBar.stop();
  saveBcPolicy(bc, basePath);
  console.log(
    `    ${basePath} (${bc.backend}; onnxruntime matches the trained network to ${bc.exportMaxAbsError.toExponential(1)})`,
  );

  console.log(
    `3/4 residual RL on top of the frozen base: ${opts.steps} environment steps, sparse binary reward; ` +
      `it keeps the residual of its best evaluation (${DEMO_EVAL.episodes} episodes every ${DEMO_EVAL.every} steps)`,
  );
  console.log(
    `4/4 then base and base + the kept residual.onnx on the same ${opts.evalEpisodes} held-out episodes (seeds no evaluation used)`,
  );
  const result = await runResidualTraining(await simTarget(task), {
    base: basePath,
    demos: demosPath,
    steps: opts.steps,
    outDir: runDir,
    seed: opts.seed,
    evalEvery: DEMO_EVAL.every,
    evalEpisodes: DEMO_EVAL.episodes,
    keep: 'best',
    heldOutEpisodes: opts.evalEpisodes,
    checkpointEvery: 5000,
  });
  const held = result.heldOut;
  const before = held?.base;
  // A simulated run always ends with both held-out evaluations; anything else is a bug.
  if (!held || !before) throw new Error('the residual run returned no held-out evaluation of the base');
  const { residual: after, firstSeed } = held;
  const minutes = (performance.now() - started) / 60_000;
  console.log(
    `\nresrt demo: ${task.name}, ${opts.evalEpisodes} held-out evaluation episodes each (seeds ${firstSeed}…${firstSeed + opts.evalEpisodes - 1})`,
  );
  console.log(
    formatTable(
      ['policy', 'success', '95% CI', 'mean steps'],
      [
        ['BC base (frozen ONNX)', pct(before.successRate), ci(before.ci95), before.meanSteps.toFixed(1)],
        ['base + residual', pct(after.successRate), ci(after.ci95), after.meanSteps.toFixed(1)],
      ],
    ),
  );
  console.log(
    `\nresidual: ${result.envSteps} env steps, ${result.updates} updates, profile ${result.profile}, engine ${result.backend}; ` +
      `whole demo ${minutes.toFixed(1)} min. Files in ${opts.out}/`,
  );
}
