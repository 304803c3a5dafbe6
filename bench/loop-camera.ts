/**
 * bench/loop --camera: the control loop with one 84x84 camera (push-cam, rendered by MuJoCo ray
 * casting in the loop thread) at 30 Hz, an image-BC base (resrt bc's pixels architecture: conv
 * encoder 16-32-32-32 -> 64, MLP 2x256 with LayerNorm, exported as resrt bc exports it; seeded
 * initial weights, so its cost is a trained one's) and a 2x256 residual on the state (or, with
 * `--residual camera`, a camera residual reading the base's embedding beside the state), beside
 * raw inference of the same models on a rendered frame in a tight loop in the same run: as two
 * session calls and as the one fused call the loop runs.
 *
 * Stages measured on their own beside the loop: JPEG decode of the frame (what an MQTT camera
 * costs per frame), preprocessing (crop/resize/scale into the base's NCHW float input), the base
 * session and the residual. In the loop, preprocessing is part of the policy stage, and rendering
 * and physics are the actuate stage (the simulator steps there).
 *
 *   npx tsx bench/loop.ts --camera [--json] [--duration S] [--raw S] [--hz HZ] [--priority normal]
 *                                  [--residual state|camera]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatTable } from '../src/cli/common.js';
import { taskSourceSpec } from '../src/cli/loop-sources.js';
import { initEngine } from '../src/nn/index.js';
import { BASE_EMBEDDING_INPUT, loadResidual, RESIDUAL_ENCODER_KEY } from '../src/runtime/camera-residual.js';
import { ComposedPolicy } from '../src/runtime/compose.js';
import { loadLoopPolicy } from '../src/runtime/fused-policy.js';
import { WorkerControlLoop } from '../src/runtime/loop-host.js';
import { formatLatencyTable, type LoopStats } from '../src/runtime/loop.js';
import { exportMlpToOnnx, MetaKey, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { imageSize, preprocessFrame } from '../src/runtime/preprocess.js';
import { nowMs } from '../src/runtime/scheduler.js';
import type { LoopPriority } from '../src/runtime/thread-priority.js';
import { defaultBcConfig } from '../src/sim/bc.js';
import { exportVisuomotorBc } from '../src/sim/bc-export.js';
import { BcNetwork } from '../src/sim/bc-network.js';
import { MujocoEnv } from '../src/sim/env.js';
import { loadTask } from '../src/sim/registry.js';
import { decodeImage, encodeRgbJpeg } from '../src/util/image-codec.js';
import { Rng } from '../src/util/rng.js';
import { LatencyHistogram, type Percentiles } from '../src/util/stats.js';

const TASK = 'push-cam';

export async function runCameraBench(args: string[]): Promise<void> {
  const option = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const positive = (name: string, fallback: number): number => {
    const v = Number(option(name) ?? fallback);
    if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} needs a positive number`);
    return v;
  };
  const json = args.includes('--json');
  const durationS = positive('--duration', 30);
  const rawSeconds = positive('--raw', Math.min(10, durationS));
  const hz = positive('--hz', 30);
  const priority = (option('--priority') ?? 'realtime') as LoopPriority;
  const residualKind = option('--residual') ?? 'state';
  if (residualKind !== 'state' && residualKind !== 'camera')
    throw new Error('--residual is state (a residual on the state) or camera (reads the base embedding too)');
  const log = (msg: string): void => {
    if (!json) console.error(msg);
  };

  const dir = mkdtempSync(join(tmpdir(), 'resrt-bench-loop-camera-'));
  try {
    const task = await loadTask(TASK);
    const env = await MujocoEnv.create(task);
    const obsDim = env.observationSpace.dim;
    const actionDim = env.actionSpace.dim;
    const camera = env.cameras[0];
    if (!camera) throw new Error(`${TASK} has no camera`);
    const { obs, frames } = env.reset({ seed: 1 });
    if (!frames?.[camera.name]) throw new Error(`${TASK} reset gave no frame of camera ${camera.name}`);
    env.close();

    // The image-BC base: resrt bc's pixels network and export, at its default sizes.
    log(
      `writing an image-BC base (${defaultBcConfig.encoderChannels.join('-')} -> ${defaultBcConfig.embeddingDim}, 2x256) and a residual...`,
    );
    const rng = new Rng(1);
    const engine = await initEngine({ device: 'cpu', threads: 1 });
    const net = new BcNetwork(
      engine,
      {
        stateDim: obsDim,
        cameras: [
          {
            name: camera.name,
            encoder: {
              channels: defaultBcConfig.encoderChannels,
              features: defaultBcConfig.embeddingDim,
              height: camera.height,
              width: camera.width,
            },
          },
        ],
        hidden: defaultBcConfig.hidden,
        layerNorm: defaultBcConfig.layerNorm,
        outDim: actionDim,
      },
      new Float32Array(obsDim),
      new Float32Array(obsDim).fill(1),
    );
    const basePath = join(dir, 'base.onnx');
    try {
      writeFileSync(
        basePath,
        exportVisuomotorBc(
          net,
          net.init(rng),
          [camera],
          { length: 1, actionDim },
          {
            [MetaKey.obsDim]: String(obsDim),
            [MetaKey.actionDim]: String(actionDim),
          },
        ),
      );
    } finally {
      await net.release();
    }
    const residualPath = join(dir, 'residual.onnx');
    const embeddingDim = defaultBcConfig.embeddingDim;
    const cameraResidual = residualKind === 'camera';
    writeFileSync(
      residualPath,
      exportMlpToOnnx(
        randomMlpSpec({
          inputs: [
            ...(cameraResidual ? [{ name: BASE_EMBEDDING_INPUT, dim: embeddingDim }] : []),
            { name: 'obs', dim: obsDim },
            { name: 'base_action', dim: actionDim },
          ],
          hidden: [256, 256],
          actionDim,
          tanhScale: 0.1,
          rng,
          metadata: {
            [MetaKey.kind]: 'residual',
            ...(cameraResidual
              ? { [RESIDUAL_ENCODER_KEY]: 'base-embedding', [MetaKey.embeddingDim]: String(embeddingDim) }
              : {}),
          },
        }),
      ),
    );

    // Raw inference and its stages, on the frame push-cam rendered at reset.
    log(`raw inference and stages, ${rawSeconds} s...`);
    const cameras = { [camera.name]: { width: camera.width, height: camera.height } };
    const base = await OnnxPolicy.load(basePath, { cameras });
    const residual = await loadResidual(residualPath);
    const composed = new ComposedPolicy({ base, residual, scale: 1 });
    const fused = await loadLoopPolicy(basePath, residualPath, { cameras });
    if (fused.fusion !== 'fused') throw new Error(`base and residual do not fuse: ${fused.fusion}`);
    const frame = frames[camera.name];
    const jpeg = encodeRgbJpeg({ width: frame.width, height: frame.height, data: frame.data });
    const pre = base.imageInputs[0];
    const preOut = new Float32Array(imageSize(pre));
    const baseAction = await base.runChunk(obs, frames);
    const stages = {
      'decode (JPEG q85)': () => void decodeImage(jpeg, 'bench frame'),
      preprocess: () => preprocessFrame(frame, pre, preOut, 0),
      'base (incl. preprocess)': () => base.runChunk(obs, frames),
      residual: () => residual.residual(obs, baseAction, { baseEmbedding: base.lastEmbedding }),
      'base + residual (raw)': () => composed.act(obs, frames),
      'fused base + residual (raw)': () => fused.policy.act(obs, frames),
    } as const;
    type Stage = keyof typeof stages;
    const names = Object.keys(stages) as Stage[];
    const hist = Object.fromEntries(names.map((k) => [k, new LatencyHistogram()])) as Record<
      Stage,
      LatencyHistogram
    >;
    for (const k of names) for (let i = 0; i < 20; i++) await stages[k]();
    const end = nowMs() + rawSeconds * 1000;
    // Interleaved in 250 ms blocks, so a load change on the machine affects every stage alike.
    for (let block = 0; nowMs() < end; block++) {
      const k = names[block % names.length];
      const blockEnd = nowMs() + 250;
      while (nowMs() < blockEnd) {
        const t0 = nowMs();
        await stages[k]();
        hist[k].record(nowMs() - t0);
      }
    }
    const raw = Object.fromEntries(names.map((k) => [k, hist[k].summary()])) as Record<Stage, Percentiles>;
    await base.close();
    await residual.close();
    await fused.close();

    log(`loop at ${hz} Hz on ${TASK} in its own thread, ${durationS} s...`);
    const loop = await WorkerControlLoop.create({
      policy: { base: basePath, residual: residualPath },
      source: taskSourceSpec({ task: TASK, seed: 1 }),
      safety: 'default',
      rateHz: hz,
      priority,
    });
    const stats: LoopStats = await loop.runFor(durationS * 1000);
    const rawP99 = raw['base + residual (raw)'].p99;
    const result = {
      bench: 'loop --camera',
      task: TASK,
      camera: `${camera.name} ${camera.width}x${camera.height} RGB`,
      rate_hz: hz,
      duration_s: durationS,
      raw_seconds: rawSeconds,
      base: `image BC: conv ${defaultBcConfig.encoderChannels.join('-')} -> ${defaultBcConfig.embeddingDim}, MLP 2x256 LayerNorm -> ${actionDim}`,
      residual: cameraResidual
        ? `camera residual: MLP ${embeddingDim}+${obsDim}+${actionDim}-256-256-${actionDim}`
        : `MLP ${obsDim}+${actionDim}-256-256-${actionDim}`,
      fusion: loop.fusion,
      priority: loop.priority.applied === 'realtime' ? loop.priority.detail : 'normal',
      raw_stages_ms: raw,
      loop: {
        e2e_p50_ms: stats.latency.endToEnd.p50,
        e2e_p99_ms: stats.latency.endToEnd.p99,
        ratio_p99: stats.latency.endToEnd.p99 / rawP99,
        achieved_hz: stats.achievedHz,
        deadline_misses: stats.deadlineMisses,
        stages_ms: stats.latency,
      },
    };
    if (json) {
      console.log(JSON.stringify(result));
      return;
    }
    const f = (v: number): string => v.toFixed(3);
    console.log(
      `control loop with a camera: ${TASK}, ${result.camera}, ${hz} Hz for ${durationS} s; base ${result.base}; residual ${result.residual}`,
    );
    console.log(`raw stages (${rawSeconds} s, interleaved), ms:`);
    console.log(
      formatTable(
        ['stage', 'p50', 'p99', 'max'],
        names.map((k) => [k, f(raw[k].p50), f(raw[k].p99), f(raw[k].max)]),
      ),
    );
    console.log(`loop (${result.priority}; base and residual: ${loop.fusion}), per stage:`);
    console.log(formatLatencyTable(stats));
    console.log(
      `e2e p50 ${f(stats.latency.endToEnd.p50)} ms, p99 ${f(stats.latency.endToEnd.p99)} ms; ` +
        `raw base + residual p99 ${f(rawP99)} ms; ratio p99 ${result.loop.ratio_p99.toFixed(2)}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
