/**
 * What the `learned` encoder mode costs the learner: updates per second of the cpu profile's
 * update on push-cam's shape (state 12, action 3, one 84×84 RGB camera) with the learned
 * conv encoder (frames from replay, random shift, encoder forward and backward in the critic step)
 * against `base-embedding` (the base's 64 features cached in front of the state), one onnxruntime
 * thread, at each batch size: wall-clock updates/s and process CPU time per update (less
 * sensitive to other processes on a shared machine). Replay holds random frames and states; the work does not depend on
 * their values.
 *
 *   npx tsx bench/learned-encoder.ts [--obs 12] [--act 4] [--batches 256,64] [--seconds 10] [--threads 1] [--device cpu]
 */
import { Command } from 'commander';
import { initEngine, type DevicePreference, type Engine } from '../src/nn/index.js';
import { makeConfig, type EncoderMode } from '../src/residual/config.js';
import { FramePacker, type FrameCamera } from '../src/residual/replay-frames.js';
import { packSteps, type StepRecord } from '../src/residual/replay.js';
import { ResidualLearner } from '../src/residual/td3.js';
import type { CameraFrames } from '../src/types.js';
import { Rng } from '../src/util/rng.js';

const CAMERA: FrameCamera = { name: 'top', width: 84, height: 84, channels: 3 };
/** The width of a `resrt bc --cameras` base's embedding (src/sim/bc.ts embeddingDim). */
const BASE_EMBEDDING = 64;

async function updatesPerSec(
  engine: Engine,
  mode: EncoderMode,
  batchSize: number,
  dims: { obs: number; act: number },
  seconds: number,
): Promise<{ ups: number; cpuMs: number }> {
  const cfg = makeConfig('cpu', { encoder: mode, batchSize, criticWarmupSteps: 0 });
  const learned = mode === 'learned';
  const obsDim = learned ? dims.obs : BASE_EMBEDDING + dims.obs;
  const learner = await ResidualLearner.create(
    engine,
    cfg,
    { obsDim, actionDim: dims.act, ...(learned ? { frameCameras: [CAMERA] } : {}) },
    1,
  );
  const rng = new Rng(1);
  const r = (k: number): Float32Array => Float32Array.from({ length: k }, () => Math.tanh(rng.normal()));
  const frame = (): CameraFrames => ({
    top: {
      width: 84,
      height: 84,
      channels: 3,
      data: Uint8Array.from({ length: 84 * 84 * 3 }, () => rng.int(256)),
      capturedAtMs: 0,
      seq: 0,
    },
  });
  const packer = learned ? new FramePacker([CAMERA]) : undefined;
  let frames = frame();
  const steps: StepRecord[] = [];
  for (let i = 0; i < 2000; i++) {
    const nextFrames = frame();
    steps.push({
      obs: r(obsDim),
      baseAction: r(dims.act),
      action: r(dims.act),
      reward: rng.uniform() < 0.1 ? 1 : 0,
      nextObs: r(obsDim),
      nextBaseAction: r(dims.act),
      terminated: false,
      truncated: i % 100 === 99,
      ...(learned ? { frames, nextFrames } : {}),
    });
    frames = i % 100 === 99 ? frame() : nextFrames;
  }
  learner.replay.online.addBatch(packSteps(steps, obsDim, dims.act, packer));
  for (let i = 0; i < 4; i++) await learner.update();
  const t = performance.now();
  const cpu0 = process.cpuUsage();
  let n = 0;
  // An even count keeps critic-only and critic+actor updates in their 1:1 proportion.
  while (n < 4 || n % 2 === 1 || performance.now() - t < seconds * 1000) {
    await learner.update();
    n++;
  }
  const ups = (n * 1000) / (performance.now() - t);
  const cpu = process.cpuUsage(cpu0);
  await learner.dispose();
  return { ups, cpuMs: (cpu.user + cpu.system) / 1000 / n };
}

const program = new Command()
  .option('--obs <n>', 'state width', '12')
  .option('--act <n>', 'action width', '3')
  .option('--batches <list>', 'batch sizes', '256,64')
  .option('--seconds <s>', 'seconds per measurement', '10')
  .option('--threads <n>', 'onnxruntime intra-op threads', '1')
  .option('--device <d>', 'auto | cpu | cuda', 'cpu')
  .parse();
const o = program.opts<{
  obs: string;
  act: string;
  batches: string;
  seconds: string;
  threads: string;
  device: string;
}>();
const engine = await initEngine({ device: o.device as DevicePreference, threads: Number(o.threads) });
console.log(`engine: ${engine.description}`);
for (const batch of o.batches.split(',').map(Number)) {
  const dims = { obs: Number(o.obs), act: Number(o.act) };
  const frozen = await updatesPerSec(engine, 'base-embedding', batch, dims, Number(o.seconds));
  const learned = await updatesPerSec(engine, 'learned', batch, dims, Number(o.seconds));
  console.log(
    `batch ${batch}: base-embedding ${frozen.ups.toFixed(2)} updates/s (${frozen.cpuMs.toFixed(1)} CPU-ms/update), ` +
      `learned ${learned.ups.toFixed(2)} updates/s (${learned.cpuMs.toFixed(1)} CPU-ms/update); ` +
      `learned/base-embedding: ${(frozen.ups / learned.ups).toFixed(1)}x wall, ${(learned.cpuMs / frozen.cpuMs).toFixed(1)}x CPU time`,
  );
}
