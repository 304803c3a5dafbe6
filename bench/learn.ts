/**
 * Sample efficiency of the residual learner against its baselines on a simulated task: per method
 * and seed, the base's success, the success curve against environment steps, the steps to reach
 * 90% and 95%, and wall-clock — residual TD3 (ResFiT), residual PPO (ResiP) and RLPD from scratch
 * at the same environment-step budget.
 *
 *   npx tsx bench/learn.ts --task push --base runs/push-bc.onnx --demos runs/push-demos.jsonl \
 *     [--steps 50000] [--seeds 0,1,2] [--methods residual,ppo,rlpd] [--eval-every 5000] \
 *     [--eval-episodes 100] [--profile auto] [--device auto] [--threads N] [--out bench-out/learn]
 *     [--checkpoint-every 5000] [--resume] [--json]
 *
 * On a camera task (push-cam), `--encoder base-embedding|file|learned` (and `--encoder-file` with
 * `file`) picks what the off-policy methods see of the cameras, as `resrt train --encoder` does;
 * `--keep best` writes (and evaluates held out) the best evaluation's residual, as `resrt train --keep`.
 */
import { Command } from 'commander';
import { basename, join } from 'node:path';
import {
  parseSeeds,
  prepareTrainingBench,
  runBench,
  trainingBenchOptions,
  type TrainingBenchFlags,
} from './training-runs.js';
import { encoderFlag, parseIntArg, parseKeep, parseOverrides } from '../src/cli/common.js';
import { stateEncoderSource } from '../src/cli/state-encoder-source.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { trainResidual, type TrainOptions } from '../src/residual/trainer.js';
import { trainResidualPpo } from '../src/residual/ppo.js';
import { trainRlpdScratch } from '../src/residual/rlpd.js';
import { successSvg, type CurvePoint } from '../src/residual/curves.js';
import type { ProfileName } from '../src/residual/config.js';
import type { DevicePreference } from '../src/nn/index.js';
import { writeFileAtomic } from '../src/util/files.js';
import { loadEpisodeFrames } from '../src/sim/demos.js';
import { ResrtError } from '../src/util/errors.js';

type Method = 'residual' | 'ppo' | 'rlpd';

interface RunRow {
  task: string;
  method: Method;
  seed: number;
  baseSuccess: number;
  finalSuccess: number;
  bestSuccess: number;
  stepsTo90: number | null;
  stepsTo95: number | null;
  envSteps: number;
  wallSeconds: number;
  /** Learner updates done, and the engine that ran them. */
  updates: number;
  engine: string;
  /** Process CPU time (every thread) ÷ wall time over the run: how many cores it kept busy. */
  coresBusy: number;
  curve: { envSteps: number; successRate: number; ciLow: number; ciHigh: number }[];
  /** The written file on episodes no evaluation during training saw (null for PPO, which keeps none). */
  heldOut: { episodes: number; base: number | null; policy: number } | null;
  /** With --keep best: the env steps of the evaluation whose residual was written. */
  keptAt: number | null;
  /** What the residual saw of the cameras, as the run settled it (e.g. auto → file state-encoder.onnx). */
  encoder: string | null;
}

function stepsTo(curve: readonly CurvePoint[], threshold: number): number | null {
  return curve.find((p) => p.successRate >= threshold)?.envSteps ?? null;
}

function cpuSecondsSince(start: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(start);
  return (u.user + u.system) / 1e6;
}

async function main(): Promise<void> {
  const program = trainingBenchOptions(new Command(), { steps: 50000, out: 'bench-out/learn' })
    .option('--methods <list>', 'residual,ppo,rlpd', 'residual,ppo,rlpd')
    .option(
      '--encoder <mode>',
      "camera tasks: auto | state | base-embedding | file | learned | none (default: the profile's)",
    )
    .option('--encoder-file <file.onnx>', 'with --encoder file: the frozen encoder ONNX')
    .option('--set <key=value...>', 'override a residual config value, as resrt train --set')
    .option(
      '--keep <which>',
      "off-policy runs: the written residual (held out) is the final one | the best evaluation's, as resrt train --keep",
      'final',
    )
    .parse();
  const o = program.opts<
    TrainingBenchFlags & {
      methods: string;
      encoder?: string;
      encoderFile?: string;
      keep: string;
      set?: string[];
    }
  >();
  const keep = parseKeep(o.keep);
  const config = { ...parseOverrides(o.set ?? []), ...encoderFlag(o.encoder, o.encoderFile) };
  const methods = o.methods.split(',') as Method[];
  for (const m of methods) {
    if (!['residual', 'ppo', 'rlpd'].includes(m))
      throw new ResrtError(`unknown method '${m}'`, 'use a comma-separated subset of residual,ppo,rlpd');
  }
  const seeds = parseSeeds(o.seeds);
  const steps = parseIntArg('--steps')(o.steps);
  const evalEvery = parseIntArg('--eval-every', 0)(o.evalEvery);
  const evalEpisodes = parseIntArg('--eval-episodes')(o.evalEpisodes);
  const checkpointEvery = parseIntArg('--checkpoint-every', 0)(o.checkpointEvery);
  const threads = o.threads === undefined ? undefined : parseIntArg('--threads')(o.threads);
  const device = o.device as DevicePreference;
  if (o.resume && methods.includes('ppo'))
    throw new ResrtError(
      '--resume cannot continue residual PPO runs (they keep no checkpoint)',
      'resume with --methods residual,rlpd, and run ppo without --resume',
    );
  const { task, demos, makeEnv, say, runDir } = await prepareTrainingBench(o);

  const rows: RunRow[] = [];
  for (const method of methods) {
    for (const seed of seeds) {
      const outDir = runDir(method, seed);
      const base = await OnnxPolicy.load(o.base);
      say(`${task.name} ${method} seed ${seed} → ${outDir}`);
      let curve: CurvePoint[];
      let wallSeconds: number;
      let envSteps: number;
      let updates: number;
      let engine: string;
      let heldOut: RunRow['heldOut'] = null;
      let keptAt: number | null = null;
      let encoder: string | null = null;
      const cpu0 = process.cpuUsage();
      const wall0 = performance.now();
      if (method === 'ppo') {
        const r = await trainResidualPpo({
          makeEnv,
          base,
          makeBase: () => OnnxPolicy.load(o.base),
          steps,
          outDir,
          seed,
          evalEvery,
          evalEpisodes,
          taskName: task.name,
          log: say,
          device,
        });
        ({ curve, wallSeconds, envSteps, updates, backend: engine } = r);
      } else {
        const opts: TrainOptions = {
          makeEnv,
          base,
          demos,
          // Camera tasks (push-cam): the demonstrations' frames, for the visuomotor base and its embedding.
          demoFrames: demos?.framesPath ? (ep) => loadEpisodeFrames(demos, ep) : undefined,
          steps,
          outDir,
          seed,
          evalEvery,
          evalEpisodes,
          profile: o.profile as ProfileName | 'auto',
          taskName: task.name,
          log: say,
          resume: !!o.resume,
          checkpointEvery,
          device,
          threads,
          config,
          keep,
          stateEncoder: stateEncoderSource(task, demos, { seed, device, threads }),
        };
        const r = method === 'rlpd' ? await trainRlpdScratch(opts) : await trainResidual(opts);
        ({ curve, wallSeconds, envSteps, updates, backend: engine } = r);
        if (r.heldOut)
          heldOut = {
            episodes: r.heldOut.episodes,
            base: r.heldOut.base?.successRate ?? null,
            policy: r.heldOut.residual.successRate,
          };
        keptAt = r.kept?.envSteps ?? null;
        if (task.cameras)
          encoder = r.config.encoderFile
            ? `${r.config.encoder} ${basename(r.config.encoderFile)}`
            : r.config.encoder;
      }
      rows.push({
        task: task.name,
        method,
        seed,
        baseSuccess: curve[0]?.successRate ?? NaN,
        finalSuccess: curve[curve.length - 1]?.successRate ?? NaN,
        bestSuccess: Math.max(...curve.map((p) => p.successRate)),
        stepsTo90: stepsTo(curve, 0.9),
        stepsTo95: stepsTo(curve, 0.95),
        envSteps,
        wallSeconds,
        updates,
        engine,
        coresBusy: cpuSecondsSince(cpu0) / ((performance.now() - wall0) / 1000),
        curve: curve.map((p) => ({
          envSteps: p.envSteps,
          successRate: p.successRate,
          ciLow: p.ciLow,
          ciHigh: p.ciHigh,
        })),
        heldOut,
        keptAt,
        encoder,
      });
    }
  }
  const svg = successSvg(
    rows.map((r) => ({ label: `${r.method} seed ${r.seed}`, points: r.curve })),
    `${task.name}: success vs environment steps`,
  );
  writeFileAtomic(join(o.out, `${task.name}-learning.svg`), svg);
  const result = {
    task: task.name,
    steps,
    seeds,
    methods,
    evalEvery,
    evalEpisodes,
    encoder: o.encoder ?? null,
    encoderFile: o.encoderFile ?? null,
    keep,
    rows,
  };
  writeFileAtomic(join(o.out, `${task.name}-learning.json`), JSON.stringify(result, null, 2));
  if (o.json) {
    process.stdout.write(JSON.stringify(result) + '\n');
    return;
  }
  const pct = (v: number | null): string =>
    v === null || Number.isNaN(v) ? '—' : `${(v * 100).toFixed(0)}%`;
  const st = (v: number | null): string => (v === null ? 'never' : String(v));
  console.log(`engine: ${rows[0]?.engine ?? '—'}`);
  console.log(
    'task        method    seed  base   final  best   steps→90%  steps→95%  held out (base → policy)  wall s  env steps/s  updates/s  cores busy  encoder',
  );
  for (const r of rows) {
    console.log(
      [
        r.task.padEnd(11),
        r.method.padEnd(9),
        String(r.seed).padStart(4),
        pct(r.baseSuccess).padStart(5),
        pct(r.finalSuccess).padStart(6),
        pct(r.bestSuccess).padStart(5),
        st(r.stepsTo90).padStart(10),
        st(r.stepsTo95).padStart(10),
        (r.heldOut
          ? `${pct(r.heldOut.base)} → ${pct(r.heldOut.policy)} of ${r.heldOut.episodes}` +
            (r.keptAt === null ? '' : ` (kept ${r.keptAt})`)
          : '—'
        ).padStart(25),
        r.wallSeconds.toFixed(0).padStart(7),
        (r.envSteps / r.wallSeconds).toFixed(1).padStart(12),
        (r.updates / r.wallSeconds).toFixed(1).padStart(10),
        r.coresBusy.toFixed(2).padStart(11),
        ` ${r.encoder ?? '—'}`,
      ].join(' '),
    );
  }
  console.log(`plot: ${join(o.out, `${task.name}-learning.svg`)}`);
}

runBench(main);
