/**
 * bench/bc-pixels: what BC from pixels costs on this machine. On one set of push-cam
 * demonstrations it trains, in the same run, the pixels BC (one 84x84 camera through the conv
 * encoder, random shift) at each thread count asked for, and the state-only BC on the same
 * demonstrations as the reference: time to read the frames into memory, seconds per epoch (epoch 1,
 * which builds the graphs, apart from the median of the others), samples per second, and the
 * pixels/state ratio of seconds per epoch.
 *
 *   npx tsx bench/bc-pixels.ts --demos push-cam.jsonl [--epochs 3] [--threads 1,2] [--encoder 16,32,32,32] [--json]
 *   npx tsx bench/bc-pixels.ts --episodes 100 ...   (collects them first, into a temporary directory)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatTable } from '../src/cli/common.js';
import { convEncoderMacs } from '../src/nn/index.js';
import { defaultBcConfig, trainBc, type BcConfig } from '../src/sim/bc.js';
import { collectDemos } from '../src/sim/collect.js';
import { readDemos } from '../src/sim/demos.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';

const args = process.argv.slice(2);
const value = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const list = (name: string, fallback: string): number[] => {
  const text = value(name) ?? fallback;
  const out = text.split(',').map(Number);
  if (out.some((n) => !Number.isInteger(n) || n <= 0)) {
    console.error(`${name} must be comma-separated positive integers, got "${text}"`);
    process.exit(2);
  }
  return out;
};
const json = args.includes('--json');
const epochs = list('--epochs', '3')[0];
const threadCounts = list('--threads', [...new Set([1, availableParallelism()])].join(','));
const encoderChannels = list('--encoder', defaultBcConfig.encoderChannels.join(','));
const episodes = list('--episodes', '100')[0];

let demosPath = value('--demos');
const tmp = demosPath ? null : mkdtempSync(join(tmpdir(), 'resrt-bench-bc-'));
if (!demosPath) {
  demosPath = join(tmp!, 'push-cam.jsonl');
  await collectDemos({ task: pushCamTask, episodes, out: demosPath, noise: pushCamTask.demoNoise! });
}
const demos = readDemos(demosPath);

interface Row {
  model: string;
  threads: number;
  samples: number;
  load_s: number;
  first_epoch_s: number;
  epoch_s: number;
  samples_per_s: number;
  total_s: number;
  final_train_loss: number;
}

async function measure(model: string, overrides: Partial<BcConfig>, threads: number): Promise<Row> {
  const at: number[] = [];
  const r = await trainBc(demos, { ...overrides, epochs, threads, device: 'cpu' }, (p) => at.push(p.seconds));
  const per = at.map((t, i) => t - (i === 0 ? 0 : at[i - 1]));
  const rest = per.slice(1).sort((a, b) => a - b);
  const epochS = rest.length ? rest[Math.floor(rest.length / 2)] : per[0];
  // An epoch trains full batches only.
  const batch = Math.min(defaultBcConfig.batchSize, r.samples);
  const trained = Math.floor(r.samples / batch) * batch;
  return {
    model,
    threads,
    samples: r.samples,
    load_s: Number(r.loadSeconds.toFixed(2)),
    first_epoch_s: Number(per[0].toFixed(2)),
    epoch_s: Number(epochS.toFixed(2)),
    samples_per_s: Math.round(trained / epochS),
    total_s: Number(r.seconds.toFixed(1)),
    final_train_loss: Number(r.trainLoss.toPrecision(3)),
  };
}

const camera = demos.header.cameras?.[0];
if (!camera) {
  console.error(
    `${demosPath} has no camera frames; collect push-cam demonstrations (resrt collect --task push-cam)`,
  );
  process.exit(2);
}
const macs = convEncoderMacs({
  height: camera.height,
  width: camera.width,
  channels: encoderChannels,
  features: defaultBcConfig.embeddingDim,
});
const rows: Row[] = [];
for (const threads of threadCounts) {
  rows.push(await measure('pixels', { cameras: [camera.name], encoderChannels }, threads));
  rows.push(await measure('state only', { cameras: 'none' }, threads));
}
if (tmp) rmSync(tmp, { recursive: true, force: true });
const ratio = (threads: number): number => {
  const p = rows.find((r) => r.model === 'pixels' && r.threads === threads)!;
  const s = rows.find((r) => r.model === 'state only' && r.threads === threads)!;
  return Number((p.epoch_s / s.epoch_s).toFixed(1));
};

const summary = {
  bench: 'bc-pixels',
  demos: demosPath,
  episodes: demos.episodes.length,
  camera: `${camera.name} ${camera.width}x${camera.height}`,
  encoder: encoderChannels,
  encoder_macs_per_image: macs,
  epochs,
  batch: defaultBcConfig.batchSize,
  node: process.version,
  rows,
  pixels_over_state_epoch: Object.fromEntries(threadCounts.map((t) => [t, ratio(t)])),
};
if (json) console.log(JSON.stringify(summary));
else {
  console.log(
    `bench/bc-pixels: ${demos.episodes.length} episodes of ${demos.header.task}, camera ${summary.camera}, ` +
      `encoder ${encoderChannels.join('-')} (${(macs / 1e6).toFixed(1)} M multiply-adds per image), batch ${summary.batch}, ${epochs} epochs`,
  );
  console.log(
    formatTable(
      [
        'model',
        'threads',
        'samples',
        'load s',
        'epoch 1 s',
        'epoch s (median)',
        'samples/s',
        'total s',
        'train loss',
      ],
      rows.map((r) => [
        r.model,
        r.threads,
        r.samples,
        r.load_s,
        r.first_epoch_s,
        r.epoch_s,
        r.samples_per_s,
        r.total_s,
        r.final_train_loss,
      ]),
    ),
  );
  for (const t of threadCounts) console.log(`pixels / state seconds per epoch, ${t} thread(s): ${ratio(t)}x`);
}
