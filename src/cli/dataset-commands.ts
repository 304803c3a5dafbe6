/**
 * `resrt import lerobot|robomimic|session` and `resrt export lerobot`: demonstrations in and out of the
 * formats robot-learning people already have (src/sim/datasets).
 */
import { existsSync, renameSync, rmSync } from 'node:fs';
import { basename } from 'node:path';
import type { Command } from 'commander';
import { checkDatasetFitsTask } from '../sim/datasets/check.js';
import { readLeRobotDataset, writeLeRobotDataset } from '../sim/datasets/lerobot.js';
import { readRobomimic } from '../sim/datasets/robomimic.js';
import { DemoWriter, readDemos, type DemoEpisode, type DemoSet } from '../sim/demos.js';
import { MujocoEnv } from '../sim/env.js';
import { loadTask } from '../sim/registry.js';
import type { CameraFrames, CameraSpec } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { parseFloatArg } from './common.js';
import { readSessionEpisodes } from './session-episodes.js';

export function registerDatasetCommands(program: Command): void {
  const imp = program
    .command('import')
    .description('import demonstrations recorded elsewhere into a resrt demo file');
  imp
    .command('lerobot <dir>')
    .description(
      'a local LeRobotDataset v3 folder (observation.state, action, next.reward, next.done, camera videos through ffmpeg) → demos .jsonl (+ .frames)',
    )
    .requiredOption('--out <file>', 'demo file to write (.jsonl; camera frames go to <file>.frames)')
    .option('--task <name|path>', 'check the dataset against this task (dimensions and names)')
    .option('--no-videos', 'leave the camera videos out (state-based policies)')
    .option('--overwrite', 'replace an existing output file')
    .action(async (dir: string, opts: ImportCliOptions & { videos: boolean }) => {
      const r = await readLeRobotDataset(dir, { videos: opts.videos });
      for (const s of r.skippedFeatures) console.log(`skipped feature ${s.name} (${s.dtype}): ${s.why}`);
      const cams = r.cameras.map((c) => `${c.name} ${c.width}x${c.height}`).join(', ');
      await finishImport(
        r.set,
        opts,
        `LeRobotDataset ${r.info.codebase_version}, ${r.info.fps} fps, task "${r.tasks[0] ?? '?'}"${cams ? `, cameras ${cams}` : ''}`,
        r.cameras.length > 0 ? { cameras: r.cameras, load: (ep) => r.loadFrames(ep) } : undefined,
      );
    });
  imp
    .command('robomimic <file>')
    .description('a robomimic HDF5 file (data/demo_N/obs, actions, rewards, dones) → demos .jsonl')
    .requiredOption('--out <file>', 'demo file to write (.jsonl)')
    .option(
      '--obs-keys <keys>',
      'comma-separated low-dimensional observation keys, in order (default: all, sorted)',
    )
    .option(
      '--fps <hz>',
      'control rate the demonstrations were recorded at',
      parseFloatArg('--fps', 0.1, 1000),
      20,
    )
    .option('--task <name|path>', 'check the dataset against this task (dimensions and names)')
    .option('--overwrite', 'replace an existing output file')
    .action(async (file: string, opts: ImportCliOptions & { obsKeys?: string; fps: number }) => {
      const r = await readRobomimic(file, {
        obsKeys: opts.obsKeys
          ?.split(',')
          .map((k) => k.trim())
          .filter(Boolean),
        controlDt: 1 / opts.fps,
      });
      for (const s of r.skippedKeys) console.log(`skipped observation ${s.name}: ${s.why}`);
      await finishImport(
        r.set,
        opts,
        `robomimic${r.envName ? ` ${r.envName}` : ''}, observation keys ${r.obsKeys.join(', ')}`,
      );
    });

  imp
    .command('session <dir>')
    .description(
      "a stopped learner's session folder (its write-ahead log) → demos .jsonl (+ .frames where the actors sent --send-frames jpeg): e.g. episodes a person labelled, for `resrt reward train`",
    )
    .requiredOption('--out <file>', 'demo file to write (.jsonl; camera frames go to <file>.frames)')
    .option('--labelled-only', 'only the episodes whose outcome a person labelled (dashboard, key, MQTT)')
    .option('--fps <hz>', "the robots' control rate", parseFloatArg('--fps', 0.1, 1000), 25)
    .option(
      '--task <name|path>',
      'check the episodes against this task and name them after it (reward train pools files of one task)',
    )
    .option('--overwrite', 'replace an existing output file')
    .action(async (dir: string, opts: ImportCliOptions & { labelledOnly?: boolean; fps: number }) => {
      const r = readSessionEpisodes(dir, opts.fps, { labelledOnly: opts.labelledOnly });
      if (r.withoutFrames > 0)
        console.log(
          `left out: ${r.withoutFrames} episodes without frames of every observation (their actor ran with --send-frames features or none, or without its cameras)`,
        );
      if (opts.labelledOnly) console.log(`left out: ${r.unlabelled} episodes no person labelled`);
      if (r.set.episodes.length === 0)
        throw new ResrtError(
          `${dir} has no ${opts.labelledOnly ? 'labelled ' : ''}finished episodes${r.frames || r.withoutFrames ? ' with frames' : ''} to import`,
          opts.labelledOnly
            ? "label episodes while the actor runs (the dashboard's success/failure buttons, the terminal keys, or MQTT), or import without --labelled-only"
            : 'run the actors until episodes end (resrt actor), then stop the learner and import again',
        );
      await finishImport(
        r.set,
        opts,
        `session ${dir}${r.frames ? `, cameras ${r.frames.cameras.map((c) => `${c.name} ${c.width}x${c.height}`).join(', ')}` : ''}`,
        r.frames ?? undefined,
      );
    });

  const exp = program
    .command('export')
    .description('export demonstrations or session episodes for other tools');
  exp
    .command('lerobot')
    .description(
      'episodes as a LeRobotDataset v3 folder (data/, meta/info.json, stats.json, tasks.parquet, episodes/)',
    )
    .requiredOption('--out <dir>', 'new dataset folder')
    .option('--demos <file>', 'a resrt demo file (resrt collect, resrt import)')
    .option('--session <dir>', "a learner's session folder (its write-ahead log; stop the learner first)")
    .option('--fps <hz>', "with --session: the robot's control rate", parseFloatArg('--fps', 0.1, 1000), 25)
    .option('--task-text <words>', 'the task in words, for meta/tasks.parquet (default: the task name)')
    .option('--robot-type <name>', 'info.json robot_type, e.g. so101')
    .action(async (opts: ExportCliOptions) => {
      if (Boolean(opts.demos) === Boolean(opts.session)) {
        throw new ResrtError('export lerobot needs one source', 'pass --demos FILE or --session DIR');
      }
      const set = opts.demos
        ? readDemos(opts.demos)
        : readSessionEpisodes(opts.session!, opts.fps, { frames: false }).set;
      if (set.episodes.length === 0)
        throw new ResrtError('there are no finished episodes to export', 'record some first');
      const { info, encoders, skipped } = await writeLeRobotDataset(opts.out, set, {
        task: opts.taskText,
        robotType: opts.robotType ?? null,
      });
      for (const [key, encoder] of Object.entries(encoders)) console.log(`video ${key}: ${encoder}`);
      for (const what of skipped) console.log(`left out: ${what}`);
      console.log(
        `wrote ${info.total_episodes} episodes (${info.total_frames} frames, ${info.fps} fps) as LeRobotDataset ${info.codebase_version} to ${opts.out}`,
      );
    });
}

interface ImportCliOptions {
  out: string;
  task?: string;
  overwrite?: boolean;
}

interface ExportCliOptions {
  out: string;
  demos?: string;
  session?: string;
  fps: number;
  taskText?: string;
  robotType?: string;
}

interface ImportedFrames {
  cameras: CameraSpec[];
  load: (ep: DemoEpisode) => CameraFrames[] | Promise<CameraFrames[]>;
}

async function finishImport(
  set: DemoSet,
  opts: ImportCliOptions,
  what: string,
  frames?: ImportedFrames,
): Promise<void> {
  const framesOut = `${opts.out}.frames`;
  for (const path of frames ? [opts.out, framesOut] : [opts.out]) {
    if (existsSync(path) && !opts.overwrite) {
      throw new ResrtError(`${path} already exists`, 'choose another --out, or pass --overwrite');
    }
  }
  const h = set.header;
  if (opts.task) {
    const task = await loadTask(opts.task);
    const env = await MujocoEnv.create(task);
    const obsNames = [...env.observationSpace.names];
    const actionNames = [...env.actionSpace.names];
    const taskCameras = [...(env.cameras ?? [])];
    env.close();
    const renamed = checkDatasetFitsTask(h, { name: task.name, obsNames, actionNames });
    if (renamed.length > 0) {
      console.log(
        `note: ${renamed.length} action names differ from task ${task.name}'s (${renamed.join(', ')}); the dataset's names are kept`,
      );
    }
    for (const c of taskCameras) {
      const d = frames?.cameras.find((x) => x.name === c.name);
      if (!d)
        console.log(
          `note: task ${task.name} renders camera ${c.name}; the dataset has no camera by that name`,
        );
      else if (d.width !== c.width || d.height !== c.height)
        console.log(
          `note: camera ${c.name} is ${d.width}x${d.height} in the dataset, ${c.width}x${c.height} in task ${task.name} (image policies resize their inputs)`,
        );
    }
    h.task = task.name;
  }
  const writer = DemoWriter.create(
    `${opts.out}.partial`,
    {
      task: h.task,
      obsDim: h.obsDim,
      actionDim: h.actionDim,
      obsNames: h.obsNames,
      actionNames: h.actionNames,
      controlDt: h.controlDt,
      source: h.source,
      ...(h.environmentStateNames ? { environmentStateNames: h.environmentStateNames } : {}),
      ...(frames ? { cameras: frames.cameras, framesFile: basename(framesOut) } : {}),
    },
    { framesPath: `${framesOut}.partial` },
  );
  let steps = 0;
  let successes = 0;
  try {
    for (const ep of set.episodes) {
      // One episode's frames in memory at a time.
      writer.append(frames ? { ...ep, frames: await frames.load(ep) } : ep);
      steps += ep.actions.length;
      if (ep.success) successes++;
    }
  } finally {
    writer.close();
  }
  if (frames) {
    if (existsSync(framesOut)) rmSync(framesOut);
    renameSync(`${framesOut}.partial`, framesOut);
  }
  if (existsSync(opts.out)) rmSync(opts.out);
  renameSync(`${opts.out}.partial`, opts.out);
  console.log(
    `imported ${set.episodes.length} episodes (${steps} steps, ${successes} successful) from ${what} to ${opts.out}${frames ? ` (camera frames in ${framesOut})` : ''}`,
  );
}
