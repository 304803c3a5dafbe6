/** `resrt tasks`, `resrt collect` and the simulator side of `resrt eval`. */
import { writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import type { Command } from 'commander';
import { checkPolicyActions, evaluatePolicy, type EvalResult } from '../runtime/evaluate.js';
import type { CameraFrame, Policy } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { collectDemos } from '../sim/collect.js';
import { MujocoEnv } from '../sim/env.js';
import {
  cleanExpert,
  type ExpertNoise,
  humanLikeExpert,
  ImperfectExpert,
  PrivilegedExpert,
  RandomPolicy,
} from '../sim/expert.js';
import { parseCameraStreams } from '../sim/camera/sim-cameras.js';
import { tileFrames, writeVideo } from '../sim/camera/video.js';
import type { RgbImage } from '../util/image-codec.js';
import { renderTrajectoriesSvg, type EpisodeTrace } from '../sim/plot.js';
import { builtInTasks, loadTask, type AnyTask } from '../sim/registry.js';
import {
  checkOutputFile,
  formatTable,
  parseFloatArg,
  parseIntArg,
  pct,
  printJson,
  progressBar,
} from './common.js';
import { loadComposedPolicy } from './policy-commands.js';

export function registerSimCommands(program: Command): void {
  program
    .command('tasks')
    .description('list the built-in simulated tasks')
    .option('--json', 'print one JSON object')
    .action(async (opts: { json?: boolean }) => {
      const rows = await Promise.all(
        Object.values(builtInTasks).map(async (task) => {
          const env = await MujocoEnv.create(task);
          const info = {
            name: task.name,
            description: task.description,
            obs_dim: env.observationSpace.dim,
            action_dim: env.actionSpace.dim,
            action_names: env.actionSpace.names,
            control_hz: Math.round(1 / env.controlDt),
            max_episode_steps: env.maxEpisodeSteps,
            has_expert: Boolean(task.expert),
          };
          env.close();
          return info;
        }),
      );
      if (opts.json) return printJson({ tasks: rows });
      console.log(
        formatTable(
          ['task', 'obs', 'actions', 'rate', 'steps', 'description'],
          rows.map((r) => [
            r.name,
            r.obs_dim,
            r.action_dim,
            `${r.control_hz} Hz`,
            r.max_episode_steps,
            r.description,
          ]),
        ),
      );
      console.log(
        '\nUser tasks: pass a path instead of a name, e.g. --task ./my-task.ts (see docs/tasks.md).',
      );
    });

  program
    .command('collect')
    .description("record scripted-expert demonstrations (or a policy's rollouts) to a JSON Lines file")
    .requiredOption('--task <name|path>', 'built-in task name or path to a task module')
    .requiredOption('--out <file>', 'output file (.jsonl)')
    .option(
      '--base <file.onnx>',
      "record this ONNX policy's rollouts instead of the expert's (e.g. failures for `resrt reward train`)",
    )
    .option('--residual <file.onnx>', 'with --base: add this ONNX residual')
    .option('--episodes <n>', 'number of episodes', parseIntArg('--episodes'), 100)
    .option('--seed <s>', 'first episode seed', parseIntArg('--seed', 0), 0)
    .option(
      '--jitter <std>',
      "per-step action noise, normalized units (default: the task's demo noise; with --base, 0)",
      parseFloatArg('--jitter', 0, 1, 0.02),
    )
    .option(
      '--bias <std>',
      "per-episode action bias, normalized units (default: the task's demo noise; with --base, 0)",
      parseFloatArg('--bias', 0, 1, 0.01),
    )
    .option(
      '--pause <p>',
      "probability per step of a pause (default: the task's demo noise; with --base, 0)",
      parseFloatArg('--pause', 0, 1, 0.02),
    )
    .option('--clean', 'no noise at all (overrides --jitter/--bias/--pause)')
    .option('--depth', "also record the task cameras' depth (millimetres, in the .frames sidecar)")
    .option(
      '--detector-cameras <streams>',
      'also record cameras at sizes of their own for `resrt reward train`, comma-separated [NAME=]CAMERA@WxH (top@168x168 records the stream top_168x168)',
    )
    .option('--overwrite', 'replace an existing output file')
    .action(async (opts: CollectCliOptions) => {
      checkOutputFile(opts.out, '--out');
      if (opts.residual && !opts.base)
        throw new ResrtError('--residual needs --base', 'pass the base policy the residual was trained on');
      const task = await loadTask(opts.task);
      if (opts.depth && !task.cameras?.names.length)
        throw new ResrtError(
          `--depth records the depth of the task's cameras, and task ${task.name} observes state only (no cameras)`,
          'drop --depth, or collect on a task with cameras, e.g. --task push-cam',
        );
      // A policy's rollouts are recorded as it acts unless noise is asked for.
      const noise = opts.clean
        ? cleanExpert
        : demoNoiseFor(opts.base ? { demoNoise: cleanExpert } : task, opts);
      const policy = opts.base
        ? {
            create: (env: MujocoEnv) => loadComposedPolicy(env, opts.base!, opts.residual),
            source: `policy ${basename(opts.base)}${opts.residual ? ` + residual ${basename(opts.residual)}` : ''}`,
          }
        : undefined;
      const bar = progressBar(`collect ${task.name}`, opts.episodes, 'success {success}');
      const summary = await collectDemos({
        task,
        episodes: opts.episodes,
        out: opts.out,
        seed: opts.seed,
        noise,
        policy,
        overwrite: opts.overwrite,
        cameras: {
          ...(opts.depth ? { depth: true } : {}),
          ...(opts.detectorCameras ? { extra: parseCameraStreams(opts.detectorCameras) } : {}),
        },
        onEpisode: (done, ok) => bar.update(done, { success: pct(ok / done) }),
      });
      bar.stop();
      console.log(
        `wrote ${summary.episodes} ${opts.base ? 'rollouts' : 'episodes'} (${summary.steps} steps, ${summary.successes} successful) of ${task.name} to ${opts.out}`,
      );
    });
}

/** The task's own human-like noise, with any flag given on the command line taking precedence. */
export function demoNoiseFor(
  task: Pick<AnyTask, 'demoNoise'>,
  flags: { jitter?: number; bias?: number; pause?: number },
): ExpertNoise {
  const base = task.demoNoise ?? humanLikeExpert;
  return {
    jitterStd: flags.jitter ?? base.jitterStd,
    biasStd: flags.bias ?? base.biasStd,
    pauseProbability: flags.pause ?? base.pauseProbability,
    maxPauseSteps: base.maxPauseSteps,
  };
}

interface CollectCliOptions {
  task: string;
  out: string;
  base?: string;
  residual?: string;
  episodes: number;
  seed: number;
  jitter?: number;
  bias?: number;
  pause?: number;
  clean?: boolean;
  depth?: boolean;
  detectorCameras?: string;
  overwrite?: boolean;
}

export interface SimEvalOptions {
  episodes: number;
  seed: number;
  plot?: string;
  plotEpisodes?: number;
  /** Write what each camera saw in the first `videoEpisodes` episodes (MP4/GIF or PNG frames). */
  video?: string;
  videoEpisodes?: number;
  label?: string;
  quiet?: boolean;
}

/** Evaluates a policy on a simulated task, optionally drawing the first episodes' trajectories. */
export async function evaluateOnTask(
  task: AnyTask,
  policyOrFactory: Policy | ((env: MujocoEnv) => Policy | Promise<Policy>),
  opts: SimEvalOptions,
): Promise<EvalResult> {
  const env = await MujocoEnv.create(task);
  const policy = typeof policyOrFactory === 'function' ? await policyOrFactory(env) : policyOrFactory;
  try {
    checkPolicyActions(policy, env, task.name);
  } catch (err) {
    env.close();
    throw err;
  }
  const plotCount = opts.plot ? (opts.plotEpisodes ?? 6) : 0;
  const traces: EpisodeTrace[] = [];
  const videoEpisodes = opts.video ? (opts.videoEpisodes ?? 3) : 0;
  const video: RgbImage[] = [];
  // A state-only task has no observation cameras: the video shows every camera of its scene.
  const videoCameras = env.cameras.length ? [] : env.simCameras.renderer.cameraNames;
  if (opts.video && env.cameras.length === 0 && videoCameras.length === 0) {
    env.close();
    throw new ResrtError(
      `task ${task.name} has no <camera> to record`,
      'add a <camera name="..." pos="..." xyaxes="..."/> to its MJCF',
    );
  }
  const bar = opts.quiet
    ? null
    : progressBar(`eval ${opts.label ?? ''} on ${task.name}`, opts.episodes, 'success {success}');
  let ok = 0;
  try {
    const result = await evaluatePolicy(env, policy, {
      episodes: opts.episodes,
      seed: opts.seed,
      onStep: (episode, _obs, frames) => {
        if (episode < videoEpisodes) {
          const shown: Record<string, CameraFrame> = { ...frames };
          for (const name of videoCameras) {
            const img = env.simCameras.renderer.render(name, { width: 128, height: 128 });
            shown[name] = { width: 128, height: 128, channels: 3, data: img.rgb, capturedAtMs: 0, seq: 0 };
          }
          video.push(tileFrames(shown));
        }
        if (episode >= plotCount || !task.trace) return;
        if (!traces[episode])
          traces[episode] = { traces: {}, markers: [], success: false, label: `episode ${episode}` };
        for (const [name, point] of Object.entries(task.trace(env.sim, env.taskState))) {
          (traces[episode].traces[name] ??= []).push(point);
        }
        traces[episode].markers = task.markers?.(env.sim, env.taskState) ?? [];
      },
      onEpisode: (rec, i) => {
        if (rec.success) ok++;
        if (traces[i]) traces[i].success = rec.success;
        bar?.update(i + 1, { success: pct(ok / (i + 1)) });
      },
    });
    if (opts.video) {
      const written = await writeVideo(opts.video, video, Math.round(1 / env.controlDt));
      if (!opts.quiet)
        console.log(
          written.kind === 'png'
            ? `camera frames written as ${written.frames} PNG files to ${written.path}${/\.(mp4|gif)$/i.test(opts.video) ? ' (ffmpeg is not installed: apt-get install ffmpeg for MP4/GIF)' : ''}`
            : `camera video (${written.frames} frames) written to ${written.path}`,
        );
    }
    if (opts.plot) {
      writeFileSync(
        opts.plot,
        renderTrajectoriesSvg(
          `${task.name}: ${opts.label ?? 'policy'}, first ${traces.length} episodes`,
          traces.filter(Boolean),
        ),
      );
    }
    return result;
  } finally {
    bar?.stop();
    env.close();
  }
}

/**
 * `--policy expert|random`. A task whose expert needs privileged state (push-cam) takes the
 * simulated environment it reads that state from; on a robot there is none.
 */
export async function builtInPolicy(
  kind: string,
  task: AnyTask,
  actionDim: number,
  seed: number,
  sim?: MujocoEnv,
): Promise<Policy> {
  if (kind === 'random') return new RandomPolicy(actionDim, seed);
  if (kind === 'expert') {
    if (!task.expert)
      throw new ResrtError(
        `task ${task.name} has no scripted expert`,
        'use --policy random or --base FILE.onnx',
      );
    const expert = new ImperfectExpert(task.expert(), actionDim, cleanExpert, seed);
    if (!task.privilegedObservation) return expert;
    if (!sim) {
      throw new ResrtError(
        `the expert of task ${task.name} acts on simulator state (${task.privilegedObservation.names.join(', ')}) that a robot does not report`,
        'evaluate the expert in simulation (without --robot), or evaluate a policy file with --base',
      );
    }
    return new PrivilegedExpert(expert, () => sim.expertObservation());
  }
  throw new ResrtError(
    `unknown --policy "${kind}"`,
    'use --policy expert, --policy random, or --base FILE.onnx',
  );
}

export function evalJson(task: string, policy: string, r: EvalResult, seed: number): Record<string, unknown> {
  return {
    task,
    policy,
    episodes: r.episodes,
    successes: r.successes,
    success_rate: r.successRate,
    ci95: [r.ci95.low, r.ci95.high],
    mean_steps: r.meanSteps,
    seed,
  };
}
