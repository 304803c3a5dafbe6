/**
 * bench/loop: the live control loop at 1 kHz with a 2x256 ONNX base and a 2x256 ONNX residual
 * (random weights, exported by resrt, loaded through onnxruntime), next to raw onnxruntime
 * inference of the same two models in a tight loop, without and with a CPU-bound process beside
 * it. The overhead ratio is the loop's end-to-end p99 over raw inference p99.
 *
 *   npx tsx bench/loop.ts [--json] [--duration S] [--hz HZ] [--safety] [--no-load]
 *
 * Aim: end-to-end p99 <= 1.5x raw p99 and zero deadline misses at 1 kHz on 2 idle cores.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { formatTable } from '../src/cli/common.js';
import { ComposedPolicy } from '../src/runtime/compose.js';
import { ControlLoop, passThroughSafety, type LoopStats } from '../src/runtime/loop.js';
import { exportMlpToOnnx, MetaKey, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { nowMs } from '../src/runtime/scheduler.js';
import { envSource } from '../src/runtime/sources.js';
import { defaultSafetyConfig, SafetyLayer } from '../src/safety/index.js';
import type { BoxSpace, Env, SafetyHook, StepResult } from '../src/types.js';
import { LatencyHistogram, type Percentiles } from '../src/util/stats.js';
import { Rng } from '../src/util/rng.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: number): number => {
  const i = args.indexOf(name);
  const v = i >= 0 ? Number(args[i + 1]) : fallback;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} needs a positive number`);
  return v;
};
const json = args.includes('--json');
const durationS = flag('--duration', 30);
const hz = flag('--hz', 1000);
const useSafety = args.includes('--safety');
const withLoad = !args.includes('--no-load');
const OBS_DIM = 32;
const ACTION_DIM = 7;
const log = (msg: string): void => {
  if (!json) console.error(msg);
};

/** A trivial env: the bench measures the runtime, not physics. */
class BenchEnv implements Env {
  readonly id = 'bench';
  readonly observationSpace: BoxSpace = {
    dim: OBS_DIM,
    low: Array(OBS_DIM).fill(-5),
    high: Array(OBS_DIM).fill(5),
    names: [],
  };
  readonly actionSpace: BoxSpace = {
    dim: ACTION_DIM,
    low: Array(ACTION_DIM).fill(-1),
    high: Array(ACTION_DIM).fill(1),
    names: [],
  };
  readonly controlDt = 1 / hz;
  readonly maxEpisodeSteps = 1000;
  private readonly obs = new Float32Array(OBS_DIM);
  private t = 0;
  reset(): { obs: Float32Array; info: { success: boolean } } {
    this.t = 0;
    this.obs.fill(0.1);
    return { obs: this.obs, info: { success: false } };
  }
  step(action: ArrayLike<number>): StepResult {
    this.t++;
    for (let i = 0; i < OBS_DIM; i++) this.obs[i] = 0.99 * this.obs[i] + 0.01 * action[i % ACTION_DIM];
    return { obs: this.obs, reward: 0, terminated: false, truncated: false, info: { success: false } };
  }
  close(): void {}
}

const rng = new Rng(1);
const dir = mkdtempSync(join(tmpdir(), 'resrt-bench-loop-'));
const basePath = join(dir, 'base.onnx');
const residualPath = join(dir, 'residual.onnx');
writeFileSync(
  basePath,
  exportMlpToOnnx(
    randomMlpSpec({
      inputs: [{ name: 'obs', dim: OBS_DIM }],
      hidden: [256, 256],
      actionDim: ACTION_DIM,
      rng,
      metadata: { [MetaKey.kind]: 'base' },
    }),
  ),
);
writeFileSync(
  residualPath,
  exportMlpToOnnx(
    randomMlpSpec({
      inputs: [
        { name: 'obs', dim: OBS_DIM },
        { name: 'base_action', dim: ACTION_DIM },
      ],
      hidden: [256, 256],
      actionDim: ACTION_DIM,
      tanhScale: 0.1,
      rng,
      metadata: { [MetaKey.kind]: 'residual' },
    }),
  ),
);

/** Raw onnxruntime: both models back to back, same session options as OnnxPolicy, no loop. */
async function rawInference(seconds: number): Promise<Percentiles> {
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: ['cpu'],
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  };
  const base = await ort.InferenceSession.create(basePath, options);
  const residual = await ort.InferenceSession.create(residualPath, options);
  const hist = new LatencyHistogram();
  const obs = new ort.Tensor('float32', new Float32Array(OBS_DIM).fill(0.1), [1, OBS_DIM]);
  const end = nowMs() + seconds * 1000;
  for (let i = 0; nowMs() < end; i++) {
    const t0 = nowMs();
    const a = (await base.run({ obs })).action as ort.Tensor;
    await residual.run({ obs, base_action: a });
    if (i >= 100) hist.record(nowMs() - t0); // skip warm-up
  }
  await base.release();
  await residual.release();
  return hist.summary();
}

async function controlLoop(seconds: number): Promise<LoopStats> {
  const base = await OnnxPolicy.load(basePath, { expectObsDim: OBS_DIM, expectActionDim: ACTION_DIM });
  const residual = await OnnxPolicy.load(residualPath, {
    residual: true,
    expectObsDim: OBS_DIM,
    expectActionDim: ACTION_DIM,
  });
  const policy = new ComposedPolicy({ base, residual, scale: 1 });
  let safety: SafetyHook = passThroughSafety(ACTION_DIM);
  if (useSafety) safety = new SafetyLayer(defaultSafetyConfig(ACTION_DIM), { clock: nowMs });
  const loop = new ControlLoop({ source: envSource(new BenchEnv()), policy, safety, rateHz: hz });
  const stats = await loop.runFor(seconds * 1000);
  await base.close();
  await residual.close();
  return stats;
}

function busyChild(): ChildProcess {
  return spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
}

interface Phase {
  load: 'none' | 'busy-loop child';
  raw: Percentiles;
  loop: LoopStats;
}

const phases: Phase[] = [];
const rawSeconds = Math.min(10, durationS);
try {
  for (const load of withLoad ? (['none', 'busy-loop child'] as const) : (['none'] as const)) {
    const child = load === 'none' ? null : busyChild();
    try {
      log(`[${load}] raw onnxruntime inference, ${rawSeconds} s...`);
      const raw = await rawInference(rawSeconds);
      log(`[${load}] control loop at ${hz} Hz, ${durationS} s...`);
      const loop = await controlLoop(durationS);
      phases.push({ load, raw, loop });
    } finally {
      child?.kill('SIGKILL');
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const summary = phases.map((p) => ({
  load: p.load,
  raw_inference_p50_ms: p.raw.p50,
  raw_inference_p99_ms: p.raw.p99,
  end_to_end_p50_ms: p.loop.latency.endToEnd.p50,
  end_to_end_p99_ms: p.loop.latency.endToEnd.p99,
  policy_p99_ms: p.loop.latency.policy.p99,
  safety_p99_ms: p.loop.latency.safety.p99,
  jitter_p99_ms: p.loop.latency.jitter.p99,
  overhead_ratio_p99: p.loop.latency.endToEnd.p99 / p.raw.p99,
  achieved_hz: p.loop.achievedHz,
  ticks: p.loop.ticks,
  deadline_misses: p.loop.deadlineMisses,
  overruns: p.loop.overruns,
  skipped_ticks: p.loop.skippedTicks,
}));

if (json) {
  console.log(
    JSON.stringify({
      bench: 'loop',
      rate_hz: hz,
      duration_s: durationS,
      raw_seconds: rawSeconds,
      safety: useSafety ? 'SafetyLayer(defaultSafetyConfig)' : 'identity',
      models: {
        base: `MLP ${OBS_DIM}-256-256-${ACTION_DIM}`,
        residual: `MLP ${OBS_DIM}+${ACTION_DIM}-256-256-${ACTION_DIM}`,
      },
      phases: summary,
    }),
  );
} else {
  const f = (v: number): string => v.toFixed(3);
  console.log(
    `control loop at ${hz} Hz for ${durationS} s, base + residual 2x256 MLPs through onnxruntime, safety: ${useSafety ? 'SafetyLayer' : 'identity'}`,
  );
  console.log(
    formatTable(
      [
        'load',
        'raw p50',
        'raw p99',
        'e2e p50',
        'e2e p99',
        'ratio p99',
        'jitter p99',
        'Hz',
        'misses',
        'overruns',
        'skipped',
      ],
      summary.map((s) => [
        s.load,
        f(s.raw_inference_p50_ms),
        f(s.raw_inference_p99_ms),
        f(s.end_to_end_p50_ms),
        f(s.end_to_end_p99_ms),
        s.overhead_ratio_p99.toFixed(2),
        f(s.jitter_p99_ms),
        s.achieved_hz.toFixed(1),
        s.deadline_misses,
        s.overruns,
        s.skipped_ticks,
      ]),
    ),
  );
  console.log('(latencies in ms; aim: e2e p99 <= 1.5x raw p99 and zero misses unloaded)');
}
