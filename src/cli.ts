/** The `resrt` command line. Each command lives beside its peers in src/cli/. */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { registerSimCommands, evaluateOnTask, builtInPolicy, evalJson } from './cli/sim-commands.js';
import { loadComposedPolicy, registerPolicyCommands } from './cli/policy-commands.js';
import { registerTrainCommands } from './cli/train-commands.js';
import { openRobotEnv, registerRobotCommands } from './cli/robot-commands.js';
import { registerSessionCommands } from './cli/session-commands.js';
import { registerRewardCommands } from './cli/reward-commands.js';
import { registerEncoderCommands } from './cli/encoder-commands.js';
import { registerServoCommands } from './cli/servo-commands.js';
import { registerDatasetCommands } from './cli/dataset-commands.js';
import { evaluatePolicy } from './runtime/evaluate.js';
import type { AnyTask } from './sim/registry.js';
import { checkOutputFile, formatTable, parseIntArg, pct, printJson } from './cli/common.js';
import { loadTask } from './sim/registry.js';
import { MujocoEnv } from './sim/env.js';
import { ResrtError } from './util/errors.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('resrt')
    .description(
      'Residual-RL runtime for real robots: a frozen ONNX base policy, a learned residual, a safety layer, hardware bridges',
    )
    .version(packageVersion(), '-V, --version', 'print the resrt version')
    .showHelpAfterError()
    .exitOverride();

  registerSimCommands(program);
  registerPolicyCommands(program);
  registerRewardCommands(program);
  registerEncoderCommands(program);

  program
    .command('eval')
    .description('success rate of a policy on a simulated task, with a 95% confidence interval')
    .requiredOption('--task <name|path>', 'built-in task name or path to a task module')
    .option('--policy <kind>', 'expert | random (ignored with --base)', 'expert')
    .option('--base <file.onnx>', 'evaluate this ONNX base policy')
    .option('--residual <file.onnx>', 'with --base: add this ONNX residual')
    .option(
      '--robot <url>',
      'evaluate on a robot (serial:/dev/ttyUSB0, mqtt://host:port/robot-id) instead of the simulator',
    )
    .option('--robot-config <file>', 'with --robot: the robot config file')
    .option('--virtual', 'with --robot: a resrt virtual robot (it resets its own scene)')
    .option('--episodes <n>', 'number of episodes', parseIntArg('--episodes'), 100)
    .option('--seed <s>', 'first episode seed', parseIntArg('--seed', 0), 1_000_000)
    .option('--plot <file.svg>', 'draw the first episodes top-down')
    .option(
      '--video <file>',
      'write what each camera saw: FILE.mp4 or FILE.gif (through ffmpeg), or a directory of PNG frames',
    )
    .option('--video-episodes <n>', 'episodes in the video', parseIntArg('--video-episodes'), 3)
    .option('--json', 'print one JSON object')
    .action(async (opts: EvalCliOptions) => {
      if (opts.residual && !opts.base) {
        throw new ResrtError('--residual needs --base', 'pass the base policy the residual was trained on');
      }
      if (opts.plot) checkOutputFile(opts.plot, '--plot');
      // A video file is written after the last episode: its folder must exist before the first.
      // (A directory of PNG frames is created with its parents.)
      if (opts.video && /\.(mp4|gif)$/i.test(opts.video)) checkOutputFile(opts.video, '--video');
      if (opts.robot && (opts.video || opts.plot))
        throw new ResrtError(
          `${opts.video ? '--video' : '--plot'} draws the simulator's cameras and bodies; a robot has neither here`,
          `drop ${opts.video ? '--video' : '--plot'} with --robot, or evaluate in simulation (leave --robot out)`,
        );
      const task = await loadTask(opts.task);
      if (opts.robot) return evalOnRobot(task, opts);
      const policy = opts.base
        ? (env: MujocoEnv) => loadComposedPolicy(env, opts.base!, opts.residual)
        : (env: MujocoEnv) => builtInPolicy(opts.policy, task, env.actionSpace.dim, opts.seed, env);
      const label = opts.base ? (opts.residual ? 'base+residual' : 'base') : opts.policy;
      const r = await evaluateOnTask(task, policy, { ...opts, label, quiet: opts.json });
      if (opts.json) return printJson(evalJson(task.name, label, r, opts.seed));
      const ci = `${pct(r.ci95.low)}–${pct(r.ci95.high)}`;
      console.log(
        formatTable(
          ['task', 'policy', 'episodes', 'success', '95% CI', 'mean steps'],
          [[task.name, label, r.episodes, pct(r.successRate), ci, r.meanSteps.toFixed(1)]],
        ),
      );
      if (opts.plot) console.log(`trajectories drawn to ${opts.plot}`);
    });

  registerTrainCommands(program);
  registerRobotCommands(program);
  registerSessionCommands(program);
  registerServoCommands(program);
  registerDatasetCommands(program);

  return program;
}

/** The version in package.json, one folder above both src/cli.ts and dist/cli.js. */
function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

async function evalOnRobot(task: AnyTask, opts: EvalCliOptions): Promise<void> {
  if (!opts.robotConfig)
    throw new ResrtError(
      '--robot needs --robot-config FILE',
      'write one (see docs/mqtt-topics.md) or use the file `resrt virtual-robot` wrote',
    );
  const env = await openRobotEnv(opts.robot!, opts.robotConfig, Boolean(opts.virtual));
  try {
    const policy = opts.base
      ? await loadComposedPolicy(env, opts.base, opts.residual)
      : await builtInPolicy(opts.policy, task, env.actionSpace.dim, opts.seed);
    const label = opts.base ? (opts.residual ? 'base+residual' : 'base') : opts.policy;
    const r = await evaluatePolicy(env, policy, { episodes: opts.episodes, seed: opts.seed });
    if (opts.json) return printJson({ ...evalJson(task.name, label, r, opts.seed), robot: opts.robot });
    console.log(
      formatTable(
        ['robot', 'policy', 'episodes', 'success', '95% CI'],
        [[opts.robot!, label, r.episodes, pct(r.successRate), `${pct(r.ci95.low)}–${pct(r.ci95.high)}`]],
      ),
    );
  } finally {
    await env.close();
  }
}

interface EvalCliOptions {
  robot?: string;
  robotConfig?: string;
  virtual?: boolean;
  task: string;
  policy: string;
  base?: string;
  residual?: string;
  episodes: number;
  seed: number;
  plot?: string;
  video?: string;
  videoEpisodes: number;
  json?: boolean;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed its message; help and version exit cleanly.
      process.exitCode = err.exitCode;
      return;
    }
    if (err instanceof ResrtError) {
      process.stderr.write(`resrt: ${err.message}\n`);
      process.exitCode = 1;
      return;
    }
    // Anything else has no cause resrt knows of: say so, and how to see where it came from.
    const e = err instanceof Error ? err : new Error(String(err));
    process.stderr.write(
      process.env.RESRT_DEBUG === '1'
        ? `resrt: ${e.stack ?? e.message}\n`
        : `resrt: ${e.message}\n  fix: no known cause; rerun with RESRT_DEBUG=1 to see where it happened, and report it as a resrt bug unless the cause is on your side (a file, a permission)\n`,
    );
    process.exitCode = 1;
  }
}
