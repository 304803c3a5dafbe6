/**
 * Learner throughput: TD3/REDQ updates per second with each profile's default networks on the
 * active backend, next to the ceiling the same backend's measured matmul rate allows for one
 * update's matmul FLOPs (measured in this run, so machine load affects both alike).
 *
 *   npx tsx bench/learner.ts [--obs 40] [--act 7] [--seconds 8] [--backend auto] [--json]
 */
import { Command } from 'commander';
import type * as tfjs from '@tensorflow/tfjs';
import { initTf, type BackendPreference, type Tf } from '../src/util/tf-backend.js';
import {
  criticInputDim,
  makeConfig,
  profileFor,
  type ProfileName,
  type ResidualConfig,
} from '../src/residual/config.js';
import { ResidualLearner } from '../src/residual/td3.js';
import { Rng } from '../src/util/rng.js';

interface Row {
  profile: ProfileName;
  heads: number;
  actor: string;
  critic: string;
  batch: number;
  updatesPerSec: number;
  msPerUpdate: number;
  gflopPerUpdate: number;
  achievedGflops: number;
  ceilingUpdatesPerSec: number;
  fractionOfCeiling: number;
}

/** Matmul multiply-adds of one forward pass per sample through widths w. */
function macs(widths: number[]): number {
  let m = 0;
  for (let i = 0; i + 1 < widths.length; i++) m += widths[i] * widths[i + 1];
  return m;
}

/**
 * Matmul FLOPs of one update as td3.ts runs it: target actor + target critic forward; critic
 * forward + backward (dX and dW: 3×); every policyDelay-th update the actor forward + backward
 * (3×) and the critic forward + input-only backward (2×).
 */
export function updateFlops(cfg: ResidualConfig, obsDim: number, actionDim: number): number {
  const D = cfg.useBase ? actionDim : 0;
  const fa = macs([obsDim + D, ...cfg.actorHidden, actionDim]);
  const fc = macs([criticInputDim(cfg, obsDim, actionDim), ...cfg.criticHidden, 1]) * cfg.numCritics;
  const B = cfg.batchSize;
  const perUpdate = B * (fa + fc) + 3 * B * fc + (3 * B * fa + 2 * B * fc) / cfg.policyDelay;
  return 2 * perUpdate;
}

/** Back-to-back 256³ products with fresh weights (as in training) for `ms`; GFLOP/s. */
function matmulWindow(tf: Tf, a: tfjs.Tensor, b: tfjs.Tensor, ms: number): number {
  const n = a.shape[0];
  const t = performance.now();
  let count = 0;
  while (count < 3 || performance.now() - t < ms) {
    tf.tidy(() => {
      tf.matMul(a, tf.add(b, 0)).dataSync();
    });
    count++;
  }
  return (count * 2 * n * n * n) / (performance.now() - t) / 1e6;
}

interface Measured {
  updatesPerSec: number;
  gflops: number;
  /** Median over rounds of (updates/s ÷ the ceiling measured right before). */
  fraction: number;
}

/**
 * Alternates a short matmul window and a one-second update window and pairs them: on a shared
 * machine both see about the same load, so their ratio is steadier than either number alone.
 */
function measure(tf: Tf, cfg: ResidualConfig, obsDim: number, actionDim: number, seconds: number): Measured {
  const learner = new ResidualLearner(tf, { ...cfg, criticWarmupSteps: 0 }, { obsDim, actionDim }, 1);
  const rng = new Rng(1);
  const r = (k: number): number[] => Array.from({ length: k }, () => Math.tanh(rng.normal()));
  for (let i = 0; i < 2000; i++) {
    learner.replay.online.add({
      obs: r(obsDim),
      baseAction: r(actionDim),
      action: r(actionDim),
      reward: rng.uniform() < 0.1 ? 1 : 0,
      nextObs: r(obsDim),
      nextBaseAction: r(actionDim),
      terminated: i % 100 === 99,
      truncated: false,
    });
  }
  const a = tf.randomNormal([256, 256]);
  const b = tf.randomNormal([256, 256]);
  matmulWindow(tf, a, b, 100);
  for (let i = 0; i < 4; i++) learner.update();
  const flops = updateFlops(cfg, obsDim, actionDim);
  const rounds: { ups: number; gflops: number; fraction: number }[] = [];
  const end = performance.now() + seconds * 1000;
  while (rounds.length < 2 || performance.now() < end) {
    const gflops = matmulWindow(tf, a, b, 300);
    const t = performance.now();
    let n = 0;
    while (n < 3 || performance.now() - t < 1000) {
      learner.update();
      n++;
    }
    const ups = (n * 1000) / (performance.now() - t);
    rounds.push({ ups, gflops, fraction: (ups * flops) / (gflops * 1e9) });
  }
  tf.dispose([a, b]);
  learner.dispose();
  const fractions = rounds.map((x) => x.fraction).sort((p, q) => p - q);
  const best = rounds.reduce((p, q) => (q.ups > p.ups ? q : p));
  return {
    updatesPerSec: best.ups,
    gflops: best.gflops,
    fraction: fractions[Math.floor(fractions.length / 2)],
  };
}

async function main(): Promise<void> {
  const program = new Command()
    .option('--obs <n>', 'observation dims', '40')
    .option('--act <n>', 'action dims', '7')
    .option('--seconds <s>', 'measuring time per row', '8')
    .option('--backend <b>', 'auto | wasm | cpu | tensorflow', 'auto')
    .option('--profiles <list>', 'comma-separated profiles', 'cpu,gpu')
    .option('--set <json>', 'config overrides applied to every profile, e.g. \'{"numCritics":2}\'', '{}')
    .option('--json', 'one JSON object on stdout')
    .parse();
  const o = program.opts<{
    obs: string;
    act: string;
    seconds: string;
    backend: string;
    profiles: string;
    set: string;
    json?: boolean;
  }>();
  const overrides = JSON.parse(o.set) as Partial<ResidualConfig>;
  const obsDim = Number(o.obs);
  const actionDim = Number(o.act);
  const seconds = Number(o.seconds);
  const handle = await initTf(o.backend as BackendPreference);
  const { tf } = handle;
  const rows: Row[] = [];
  let gflops = 0;
  for (const profile of o.profiles.split(',') as ProfileName[]) {
    const cfg = makeConfig(profile, overrides);
    const m = measure(tf, cfg, obsDim, actionDim, seconds);
    const ups = m.updatesPerSec;
    gflops = Math.max(gflops, m.gflops);
    const flops = updateFlops(cfg, obsDim, actionDim);
    const ceiling = (m.gflops * 1e9) / flops;
    rows.push({
      profile,
      heads: cfg.numCritics,
      actor: cfg.actorHidden.join('x'),
      critic: cfg.criticHidden.join('x'),
      batch: cfg.batchSize,
      updatesPerSec: ups,
      msPerUpdate: 1000 / ups,
      gflopPerUpdate: flops / 1e9,
      achievedGflops: (ups * flops) / 1e9,
      ceilingUpdatesPerSec: ceiling,
      fractionOfCeiling: m.fraction,
    });
  }
  const active = profileFor(handle);
  const result = {
    backend: handle.backend,
    description: handle.description,
    activeProfile: active.name,
    activeProfileReason: active.why,
    obsDim,
    actionDim,
    matmulGflops256: gflops,
    rows,
  };
  if (o.json) {
    process.stdout.write(JSON.stringify(result) + '\n');
    return;
  }
  console.log(
    `backend: ${handle.description}; best matmul 256³ (fresh weights): ${gflops.toFixed(1)} GFLOP/s`,
  );
  console.log(
    'of ceiling: median over rounds of updates/s ÷ the ceiling measured in the matmul window just before',
  );
  console.log(`active profile: ${active.name} (${active.why}); obs ${obsDim}, action ${actionDim}`);
  console.log(
    'profile  heads  actor    critic   batch  updates/s  ms/update  GFLOP/update  GFLOP/s  ceiling/s  of ceiling',
  );
  for (const r of rows) {
    console.log(
      [
        r.profile.padEnd(7),
        String(r.heads).padStart(5),
        r.actor.padStart(8),
        r.critic.padStart(8),
        String(r.batch).padStart(6),
        r.updatesPerSec.toFixed(1).padStart(10),
        r.msPerUpdate.toFixed(1).padStart(10),
        r.gflopPerUpdate.toFixed(3).padStart(13),
        r.achievedGflops.toFixed(1).padStart(8),
        r.ceilingUpdatesPerSec.toFixed(1).padStart(10),
        `${(r.fractionOfCeiling * 100).toFixed(0)}%`.padStart(11),
      ].join(' '),
    );
  }
}

await main();
