/**
 * Learner throughput: TD3/REDQ updates per second on the training engine (src/nn, onnxruntime-node),
 * for the cpu and gpu profile shapes and for the shapes JAX was measured on, next to the ceiling the
 * same engine's measured matmul rate allows for one update's matmul FLOPs (measured in this run,
 * interleaved with the updates, so machine load affects both alike), and next to the JAX figures.
 *
 *   npx tsx bench/learner.ts [--obs 40] [--act 7] [--seconds 8] [--device cpu] [--threads 1,2]
 *                            [--spinning off,on] [--rows cpu,gpu,jax-2x256,jax-2x128,jax-10x256]
 *                            [--ort-profile DIR] [--json]
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { CompiledGraph, Graph, initEngine, op, type DevicePreference, type Engine } from '../src/nn/index.js';
import { criticInputDim, makeConfig, profileFor, type ResidualConfig } from '../src/residual/config.js';
import { ResidualLearner } from '../src/residual/td3.js';
import { Rng } from '../src/util/rng.js';

/** JAX on the CPU, same update (actor + critic ensemble with LayerNorm, obs 20, action 4, batch 256). */
const JAX_SOURCE = 'issue 22: measured by the issue author with JAX on a 2-core machine of this kind';

interface Shape {
  name: string;
  obsDim: number;
  actionDim: number;
  cfg: ResidualConfig;
  /** JAX updates/s for this shape, where it was measured. */
  jax: number | null;
}

function shapes(obsDim: number, actionDim: number): Record<string, Shape> {
  const jaxShape = (name: string, heads: number, width: number, jax: number): Shape => ({
    name,
    obsDim: 20,
    actionDim: 4,
    cfg: makeConfig('cpu', {
      numCritics: heads,
      targetSubset: 2,
      actorHidden: [width, width],
      criticHidden: [width, width],
      batchSize: 256,
    }),
    jax,
  });
  return {
    cpu: { name: 'cpu profile', obsDim, actionDim, cfg: makeConfig('cpu'), jax: null },
    gpu: { name: 'gpu profile', obsDim, actionDim, cfg: makeConfig('gpu'), jax: null },
    'jax-2x256': jaxShape('JAX shape, 2 critics 2×256', 2, 256, 113),
    'jax-2x128': jaxShape('JAX shape, 2 critics 2×128', 2, 128, 211),
    'jax-10x256': jaxShape('JAX shape, 10 critics 2×256', 10, 256, 28),
  };
}

/** Matmul multiply-adds of one forward pass per sample through widths w. */
function macs(widths: number[]): number {
  let m = 0;
  for (let i = 0; i + 1 < widths.length; i++) m += widths[i] * widths[i + 1];
  return m;
}

/**
 * Matmul FLOPs of one update: target actor + target critic forward; critic forward + backward (dX
 * and dW: 3×); every policyDelay-th update the actor forward + backward (3×) and the critic forward
 * + input-only backward (2×). Elementwise work (LayerNorm, Adam) is not counted.
 */
export function updateFlops(cfg: ResidualConfig, obsDim: number, actionDim: number): number {
  const D = cfg.useBase ? actionDim : 0;
  const fa = macs([obsDim + D, ...cfg.actorHidden, actionDim]);
  const fc = macs([criticInputDim(cfg, obsDim, actionDim), ...cfg.criticHidden, 1]) * cfg.numCritics;
  const B = cfg.batchSize;
  const perUpdate = B * (fa + fc) + 3 * B * fc + (3 * B * fa + 2 * B * fc) / cfg.policyDelay;
  return 2 * perUpdate;
}

const GEMM_N = 256;
const GEMM_CHAIN = 8;

/** A graph of GEMM_CHAIN dependent 256³ products: one run measures the engine's matmul rate. */
async function gemmCeiling(
  engine: Engine,
): Promise<{ run: (ms: number) => Promise<number>; release: () => Promise<void> }> {
  const g = new Graph('gemm_ceiling');
  const a = g.input('a', [GEMM_N, GEMM_N]);
  const b = g.input('b', [GEMM_N, GEMM_N]);
  let y = a;
  for (let i = 0; i < GEMM_CHAIN; i++) y = op.matmul(y, b);
  g.output('y', y);
  const c = await CompiledGraph.create(g, engine);
  const rng = new Rng(3);
  // Entries N(0, 1/N): the chain neither overflows nor underflows into denormals.
  const feed = (): Float32Array =>
    Float32Array.from({ length: GEMM_N * GEMM_N }, () => rng.normal(0, 1 / Math.sqrt(GEMM_N)));
  const feeds = { a: feed(), b: feed() };
  const out = { y: new Float32Array(GEMM_N * GEMM_N) };
  return {
    async run(ms: number): Promise<number> {
      const t = performance.now();
      let n = 0;
      while (n < 3 || performance.now() - t < ms) {
        await c.run(feeds, out);
        n++;
      }
      return (n * GEMM_CHAIN * 2 * GEMM_N ** 3) / (performance.now() - t) / 1e6;
    },
    release: () => c.release(),
  };
}

interface Measured {
  updatesPerSec: number;
  /** Process CPU time (all threads) per update, median over rounds: less sensitive to other processes than wall time. */
  cpuMsPerUpdate: number;
  gemmGflops: number;
  /** Median over rounds of (updates/s ÷ the ceiling measured right before). */
  fraction: number;
}

/**
 * Alternates a short matmul window and a one-second update window and pairs them: on a shared
 * machine both see about the same load, so their ratio is steadier than either number alone.
 */
async function measure(engine: Engine, shape: Shape, seconds: number): Promise<Measured> {
  const { cfg, obsDim, actionDim } = shape;
  const learner = await ResidualLearner.create(
    engine,
    { ...cfg, criticWarmupSteps: 0 },
    { obsDim, actionDim },
    1,
  );
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
  const gemm = await gemmCeiling(engine);
  await gemm.run(100);
  for (let i = 0; i < 4; i++) await learner.update();
  const flops = updateFlops(cfg, obsDim, actionDim);
  const rounds: { ups: number; gflops: number; fraction: number; cpuMs: number }[] = [];
  const end = performance.now() + seconds * 1000;
  while (rounds.length < 2 || performance.now() < end) {
    const gflops = await gemm.run(300);
    const t = performance.now();
    const cpu0 = process.cpuUsage();
    let n = 0;
    // An even count keeps critic-only and critic+actor updates in their 1:1 proportion.
    while (n < 4 || n % 2 === 1 || performance.now() - t < 1000) {
      await learner.update();
      n++;
    }
    const ups = (n * 1000) / (performance.now() - t);
    const cpu = process.cpuUsage(cpu0);
    rounds.push({
      ups,
      gflops,
      fraction: (ups * flops) / (gflops * 1e9),
      cpuMs: (cpu.user + cpu.system) / 1000 / n,
    });
  }
  await gemm.release();
  await learner.dispose();
  const fractions = rounds.map((x) => x.fraction).sort((p, q) => p - q);
  const best = rounds.reduce((p, q) => (q.ups > p.ups ? q : p));
  const cpuMs = rounds.map((x) => x.cpuMs).sort((p, q) => p - q);
  return {
    updatesPerSec: best.ups,
    cpuMsPerUpdate: cpuMs[Math.floor(cpuMs.length / 2)],
    gemmGflops: best.gflops,
    fraction: fractions[Math.floor(fractions.length / 2)],
  };
}

interface Row {
  shape: string;
  obsDim: number;
  actionDim: number;
  heads: number;
  actor: string;
  critic: string;
  batch: number;
  threads: number;
  /** Idle intra-op threads spin-wait (onnxruntime's default) instead of sleeping. */
  spinning: boolean;
  updatesPerSec: number;
  msPerUpdate: number;
  cpuMsPerUpdate: number;
  gflopPerUpdate: number;
  achievedGflops: number;
  gemmGflops: number;
  ceilingUpdatesPerSec: number;
  fractionOfCeiling: number;
  jaxUpdatesPerSec: number | null;
  ofJax: number | null;
}

/** Kernel time per op type over every profile file in `dir` (onnxruntime's enableProfiling JSON). */
function summarizeProfiles(dir: string): { op: string; ms: number; share: number }[] {
  const byOp = new Map<string, number>();
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.json'))) {
    const events = JSON.parse(readFileSync(join(dir, f), 'utf8')) as {
      cat?: string;
      name: string;
      dur: number;
      args?: { op_name?: string };
    }[];
    for (const e of events)
      if (e.cat === 'Node' && e.name.endsWith('_kernel_time') && e.args?.op_name)
        byOp.set(e.args.op_name, (byOp.get(e.args.op_name) ?? 0) + e.dur / 1000);
  }
  const total = [...byOp.values()].reduce((a, b) => a + b, 0);
  return [...byOp].map(([o, ms]) => ({ op: o, ms, share: ms / total })).sort((a, b) => b.ms - a.ms);
}

async function main(): Promise<void> {
  const program = new Command()
    .option('--obs <n>', 'observation dims of the profile rows', '40')
    .option('--act <n>', 'action dims of the profile rows', '7')
    .option('--seconds <s>', 'measuring time per row', '8')
    .option('--device <d>', 'auto | cpu | cuda', 'cpu')
    .option('--threads <list>', 'comma-separated intra-op thread counts (default: the engine default)')
    .option(
      '--spinning <list>',
      'idle pool threads: off (sleep, the engine default), on (spin), or off,on',
      'off',
    )
    .option(
      '--rows <list>',
      'cpu, gpu, jax-2x256, jax-2x128, jax-10x256',
      'cpu,gpu,jax-2x256,jax-2x128,jax-10x256',
    )
    .option(
      '--ort-profile <dir>',
      "write onnxruntime's per-node profiles there and print kernel time per op type",
    )
    .option('--json', 'one JSON object on stdout')
    .parse();
  const o = program.opts<{
    obs: string;
    act: string;
    seconds: string;
    device: string;
    threads?: string;
    spinning: string;
    rows: string;
    ortProfile?: string;
    json?: boolean;
  }>();
  if (o.ortProfile) {
    mkdirSync(o.ortProfile, { recursive: true });
    process.env.RESRT_NN_PROFILE = o.ortProfile;
  }
  const all = shapes(Number(o.obs), Number(o.act));
  const chosen = o.rows.split(',').map((k) => {
    const s = all[k];
    if (!s) throw new Error(`unknown row '${k}' (have ${Object.keys(all).join(', ')})`);
    return s;
  });
  const threadCounts = o.threads ? o.threads.split(',').map(Number) : [undefined];
  const spinModes = o.spinning.split(',').map((m) => {
    if (m !== 'off' && m !== 'on') throw new Error(`--spinning takes off, on or off,on (got '${m}')`);
    return m === 'on';
  });
  const rows: Row[] = [];
  let description = '';
  let active = { name: '', why: '' };
  const engines = threadCounts.flatMap((threads) => spinModes.map((spinning) => ({ threads, spinning })));
  for (const { threads, spinning } of engines) {
    const engine = await initEngine({ device: o.device as DevicePreference, threads, spinning });
    description = engine.description.replace(/, \d+ intra-op threads?( \(spinning\))?/, '');
    active = profileFor(engine);
    for (const shape of chosen) {
      const m = await measure(engine, shape, Number(o.seconds));
      const flops = updateFlops(shape.cfg, shape.obsDim, shape.actionDim);
      rows.push({
        shape: shape.name,
        obsDim: shape.obsDim,
        actionDim: shape.actionDim,
        heads: shape.cfg.numCritics,
        actor: shape.cfg.actorHidden.join('x'),
        critic: shape.cfg.criticHidden.join('x'),
        batch: shape.cfg.batchSize,
        threads: engine.threads,
        spinning: engine.spinning ?? false,
        updatesPerSec: m.updatesPerSec,
        msPerUpdate: 1000 / m.updatesPerSec,
        cpuMsPerUpdate: m.cpuMsPerUpdate,
        gflopPerUpdate: flops / 1e9,
        achievedGflops: (m.updatesPerSec * flops) / 1e9,
        gemmGflops: m.gemmGflops,
        ceilingUpdatesPerSec: (m.gemmGflops * 1e9) / flops,
        fractionOfCeiling: m.fraction,
        jaxUpdatesPerSec: shape.jax,
        ofJax: shape.jax ? m.updatesPerSec / shape.jax : null,
      });
    }
  }
  const profile = o.ortProfile ? summarizeProfiles(o.ortProfile) : null;
  const result = {
    engine: description,
    device: o.device,
    activeProfile: active.name,
    jaxSource: JAX_SOURCE,
    gemm: `${GEMM_CHAIN} chained ${GEMM_N}³ MatMuls per run on the same engine`,
    rows,
    ...(profile ? { ortProfile: profile } : {}),
  };
  if (o.json) {
    process.stdout.write(JSON.stringify(result) + '\n');
    return;
  }
  console.log(`engine: ${description}; GEMM ceiling: ${result.gemm}`);
  console.log(
    'of ceiling: median over rounds of updates/s ÷ the ceiling measured in the GEMM window just before',
  );
  console.log(`JAX: ${JAX_SOURCE}`);
  console.log(
    'shape                          obs act heads actor   critic  batch thr spin  updates/s ms/update cpu ms/upd GFLOP/upd GEMM GFLOP/s ceiling/s of ceiling   JAX/s  ×JAX',
  );
  for (const r of rows) {
    console.log(
      [
        r.shape.padEnd(30),
        String(r.obsDim).padStart(3),
        String(r.actionDim).padStart(3),
        String(r.heads).padStart(5),
        r.actor.padStart(7),
        r.critic.padStart(7),
        String(r.batch).padStart(6),
        String(r.threads).padStart(3),
        (r.spinning ? 'on' : 'off').padStart(4),
        r.updatesPerSec.toFixed(1).padStart(10),
        r.msPerUpdate.toFixed(2).padStart(9),
        r.cpuMsPerUpdate.toFixed(2).padStart(10),
        r.gflopPerUpdate.toFixed(3).padStart(9),
        r.gemmGflops.toFixed(1).padStart(12),
        r.ceilingUpdatesPerSec.toFixed(1).padStart(9),
        `${(r.fractionOfCeiling * 100).toFixed(0)}%`.padStart(10),
        (r.jaxUpdatesPerSec?.toString() ?? '–').padStart(7),
        (r.ofJax?.toFixed(2) ?? '–').padStart(5),
      ].join(' '),
    );
  }
  if (profile) {
    console.log(`\nonnxruntime kernel time per op type (all sessions, ${o.ortProfile}):`);
    for (const p of profile.slice(0, 15))
      console.log(
        `  ${p.op.padEnd(22)} ${p.ms.toFixed(0).padStart(8)} ms ${(p.share * 100).toFixed(1).padStart(6)}%`,
      );
  }
}

await main();
