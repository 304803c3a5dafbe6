/**
 * bench/camera-base: what a visuomotor base gives a camera residual to work with. For each base,
 * on the same held-out episodes of a camera task:
 *  - its success, and how its failures fail: the closest the puck came to the goal and where it
 *    ended (a base that pushes past the goal fails differently from one that never touches the puck);
 *  - how precisely its `embedding` output (with the state, as the residual reads them in
 *    `base-embedding` mode) tells privileged quantities the image shows but the state does not
 *    (push-cam: the goal): a ridge regression from [embedding | state] to them, fitted on three
 *    quarters of the episodes the base itself drove, scored on the rest.
 * A residual cannot correct the base more precisely than its inputs locate the goal; the success
 * radius of push-cam is 2 cm.
 *
 *   npx tsx bench/camera-base.ts --base a.onnx[,b.onnx] [--task push-cam] [--episodes 200]
 *     [--probe-episodes 80] [--targets goal_x,goal_y] [--distance puck_to_goal_x,puck_to_goal_y] [--json]
 */
import { Command } from 'commander';
import { formatTable, parseIntArg } from '../src/cli/common.js';
import { cameraSizes } from '../src/cli/policy-commands.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { MujocoEnv } from '../src/sim/env.js';
import { loadTask } from '../src/sim/registry.js';
import { ResrtError } from '../src/util/errors.js';

interface Flags {
  base: string;
  task: string;
  episodes: number;
  probeEpisodes: number;
  targets: string;
  distance: string;
  json?: boolean;
}

interface Row {
  base: string;
  success: number;
  episodes: number;
  /** Over failed episodes: median closest approach and median final distance (cm). */
  failClosestCm: number | null;
  failFinalCm: number | null;
  /** Failed episodes whose closest approach was within twice the success distance, then moved away. */
  failPassedNear: number;
  probeRows: number;
  probeTrainRmseCm: number;
  probeTestRmseCm: number;
  probeTestMedianCm: number;
  probeTestP90Cm: number;
}

const median = (xs: number[]): number | null => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
};

/** Solves (XᵀX + λ·n·I) W = XᵀY by Gaussian elimination with partial pivoting (float64). */
function ridge(x: number[][], y: number[][], lambda: number): number[][] {
  const d = x[0].length;
  const k = y[0].length;
  const a = Array.from({ length: d }, () => new Float64Array(d + k));
  x.forEach((row, n) => {
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < d; j++) a[i][j] += row[i] * row[j];
      for (let j = 0; j < k; j++) a[i][d + j] += row[i] * y[n][j];
    }
  });
  for (let i = 0; i < d; i++) a[i][i] += lambda * x.length;
  for (let c = 0; c < d; c++) {
    let p = c;
    for (let r = c + 1; r < d; r++) if (Math.abs(a[r][c]) > Math.abs(a[p][c])) p = r;
    [a[c], a[p]] = [a[p], a[c]];
    for (let r = 0; r < d; r++) {
      if (r === c) continue;
      const f = a[r][c] / a[c][c];
      for (let j = c; j < d + k; j++) a[r][j] -= f * a[c][j];
    }
  }
  return Array.from({ length: d }, (_, i) => Array.from({ length: k }, (_, j) => a[i][d + j] / a[i][i]));
}

function errorsCm(x: number[][], y: number[][], w: number[][]): number[] {
  return x.map((row, n) => {
    let sq = 0;
    for (let j = 0; j < y[n].length; j++) {
      let v = 0;
      for (let i = 0; i < row.length; i++) v += row[i] * w[i][j];
      sq += (v - y[n][j]) ** 2;
    }
    return Math.sqrt(sq) * 100;
  });
}

const rms = (xs: number[]): number => Math.sqrt(xs.reduce((s, v) => s + v * v, 0) / xs.length);

async function measure(path: string, o: Flags, env: MujocoEnv): Promise<Row> {
  const base = await OnnxPolicy.load(path, {
    expectObsDim: env.observationSpace.dim,
    expectActionDim: env.actionSpace.dim,
    cameras: cameraSizes(env),
  });
  if (base.embeddingDim <= 0) {
    throw new ResrtError(
      `${path} has no embedding output`,
      'export the base with `resrt bc --demos DEMOS --cameras auto`, which writes one',
    );
  }
  const names = env.task.privilegedObservation?.names ?? env.task.observationNames;
  const index = (list: string): number[] =>
    list.split(',').map((name) => {
      const i = names.indexOf(name);
      if (i < 0)
        throw new ResrtError(
          `${env.task.name} has no privileged observation '${name}'`,
          `choose from: ${names.join(', ')}`,
        );
      return i;
    });
  const targets = index(o.targets);
  const distance = index(o.distance);
  const distanceOf = (p: Float32Array): number => Math.hypot(...distance.map((i) => p[i]));

  // Closed loop on held-out seeds (those `resrt eval` uses by default are 0…; these are apart).
  let successes = 0;
  const closest: number[] = [];
  const final: number[] = [];
  let passedNear = 0;
  const x: number[][] = [];
  const y: number[][] = [];
  const episodeOf: number[] = [];
  const episodes = Math.max(o.episodes, o.probeEpisodes);
  for (let e = 0; e < episodes; e++) {
    let { obs, frames } = await env.reset({ seed: 2_000_000_000 + e });
    base.reset?.();
    let near = Infinity;
    for (;;) {
      const action = await base.act(obs, frames);
      if (e < o.probeEpisodes) {
        const p = env.expertObservation();
        x.push([...base.lastEmbedding!, ...obs, 1]);
        y.push(targets.map((i) => p[i]));
        episodeOf.push(e);
      }
      const step = await env.step(action);
      obs = step.obs;
      frames = step.frames;
      const d = distanceOf(env.expertObservation());
      near = Math.min(near, d);
      if (step.terminated || step.truncated) {
        if (e < o.episodes) {
          if (step.info.success) successes++;
          else {
            closest.push(near * 100);
            final.push(d * 100);
            if (near < 0.04 && d > near + 0.02) passedNear++;
          }
        }
        break;
      }
    }
  }
  await base.close();
  const train = x.map((_, n) => n).filter((n) => episodeOf[n] % 4 !== 0);
  const test = x.map((_, n) => n).filter((n) => episodeOf[n] % 4 === 0);
  const w = ridge(
    train.map((n) => x[n]),
    train.map((n) => y[n]),
    1e-3,
  );
  const trainErr = errorsCm(
    train.map((n) => x[n]),
    train.map((n) => y[n]),
    w,
  );
  const testErr = errorsCm(
    test.map((n) => x[n]),
    test.map((n) => y[n]),
    w,
  ).sort((a, b) => a - b);
  return {
    base: path,
    success: successes / o.episodes,
    episodes: o.episodes,
    failClosestCm: median(closest),
    failFinalCm: median(final),
    failPassedNear: passedNear,
    probeRows: x.length,
    probeTrainRmseCm: rms(trainErr),
    probeTestRmseCm: rms(testErr),
    probeTestMedianCm: testErr[Math.floor((testErr.length - 1) / 2)],
    probeTestP90Cm: testErr[Math.floor(0.9 * (testErr.length - 1))],
  };
}

async function main(): Promise<void> {
  const o = new Command()
    .requiredOption('--base <files>', 'visuomotor bases with an embedding output, comma-separated')
    .option('--task <name>', 'a task with cameras and a privileged observation', 'push-cam')
    .option('--episodes <n>', 'closed-loop episodes per base', parseIntArg('--episodes'), 200)
    .option(
      '--probe-episodes <n>',
      'episodes whose steps feed the probe',
      parseIntArg('--probe-episodes'),
      80,
    )
    .option('--targets <names>', 'privileged observations the probe predicts', 'goal_x,goal_y')
    .option(
      '--distance <names>',
      'privileged observations whose norm is the distance to success',
      'puck_to_goal_x,puck_to_goal_y',
    )
    .option('--json', 'one JSON object')
    .parse()
    .opts<Flags>();
  const task = await loadTask(o.task);
  const env = await MujocoEnv.create(task);
  if (!env.cameras?.length)
    throw new ResrtError(`${o.task} has no cameras`, 'use a camera task, e.g. --task push-cam');
  const rows: Row[] = [];
  for (const path of o.base.split(',')) rows.push(await measure(path, o, env));
  env.close();
  if (o.json) {
    console.log(JSON.stringify({ bench: 'camera-base', task: o.task, targets: o.targets, rows }));
    return;
  }
  const cm = (v: number | null): string => (v === null ? '-' : v.toFixed(2));
  console.log(`bench/camera-base: ${o.task}, probe targets ${o.targets} (cm), distance ${o.distance}`);
  console.log(
    formatTable(
      [
        'base',
        'success',
        'fail: closest cm',
        'fail: final cm',
        'passed near',
        'probe rows',
        'probe train rmse',
        'probe test rmse',
        'test median',
        'test p90',
      ],
      rows.map((r) => [
        r.base,
        `${(100 * r.success).toFixed(1)}% of ${r.episodes}`,
        cm(r.failClosestCm),
        cm(r.failFinalCm),
        String(r.failPassedNear),
        String(r.probeRows),
        cm(r.probeTrainRmseCm),
        cm(r.probeTestRmseCm),
        cm(r.probeTestMedianCm),
        cm(r.probeTestP90Cm),
      ]),
    ),
  );
}

await main();
