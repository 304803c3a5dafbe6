/**
 * What cameras cost a session: one actor on real MuJoCo push-cam (its 84×84 top camera rendered
 * every step) with a visuomotor ONNX base (conv encoder, 8-wide embedding; test/fixtures) streams
 * to a learner in its own process (embedded broker, write-ahead log, training), once per
 * `--send-frames` mode. Bytes per transition are what went over MQTT in transition batches (each
 * seq counted once, resends left out; envelope and batch headers included), divided by the
 * transitions; transitions/s counts what the learner acknowledged. The actor steps as fast as the
 * simulator renders, so transitions/s is this machine's ceiling with rendering, not a robot's rate.
 *
 * usage: npx tsx bench/session-cameras.ts [--json] [--seconds S] [--jpeg-quality Q]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import mqtt from 'mqtt';
import { formatTable } from '../src/cli/common.js';
import { startLearnerChild } from './learner-child.js';
import { runActor } from '../src/runtime/session/actor.js';
import { decodeEnvelope } from '../src/runtime/session/codec.js';
import { sessionTopics } from '../src/runtime/session/protocol.js';
import type { SendFrames } from '../src/runtime/session/camera-batch.js';
import { MujocoEnv } from '../src/sim/env.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import { smallLearner } from '../test/session-fixtures.js';
import { visuomotorOnnx } from '../test/fixtures/visuomotor-onnx.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const json = process.argv.includes('--json');
const seconds = Number(arg('--seconds') ?? 20);
const quality = Number(arg('--jpeg-quality') ?? 85);
if (!(seconds > 0) || !(Number.isInteger(quality) && quality >= 1 && quality <= 100)) {
  console.error('usage: npx tsx bench/session-cameras.ts [--json] [--seconds S>0] [--jpeg-quality 1-100]');
  process.exit(2);
}

interface Row {
  mode: SendFrames;
  bytesPerTransition: number;
  ackedPerSec: number;
  transitions: number;
  actorLoopP50Ms: number;
}

async function measure(mode: SendFrames): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'resrt-bench-camsession-'));
  try {
    const basePath = join(dir, 'base.onnx');
    writeFileSync(basePath, visuomotorOnnx({ state: 12, image: 84, actions: 3, chunk: 1, embedding: 8 }));
    const learner = await startLearnerChild(
      {
        outDir: join(dir, 'learner'),
        brokerPort: 0,
        base: basePath,
        profile: 'cpu',
        config: smallLearner,
        publishEvery: 50,
        checkpointEverySec: 3600,
      },
      'ignore',
    );
    const seen = new Set<number>();
    let bytes = 0;
    let sent = 0;
    const watcher = await mqtt.connectAsync(learner.brokerUrl);
    watcher.on('message', (_t, payload) => {
      const { batch } = decodeEnvelope(new Uint8Array(payload));
      if (seen.has(batch.firstSeq)) return;
      seen.add(batch.firstSeq);
      bytes += payload.byteLength;
      sent += batch.transitions.length;
    });
    await watcher.subscribeAsync(sessionTopics('default').transitionsWildcard, { qos: 1 });
    const env = await MujocoEnv.create(pushCamTask, { seed: 1 });
    const actor = await runActor({
      robotId: 'cam',
      brokerUrl: learner.brokerUrl,
      stateDir: join(dir, 'actor'),
      base: basePath,
      env,
      sendFrames: mode,
      jpegQuality: quality,
    });
    // Warm-up, then a measured window on what the learner acknowledged.
    await new Promise((r) => setTimeout(r, 3000));
    const a0 = actor.status().ackedSeq;
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const a1 = actor.status().ackedSeq;
    const t1 = performance.now();
    const status = await actor.stop();
    if (status.cameraStepsMissing)
      throw new Error(`${status.cameraStepsMissing} steps went without camera data`);
    await new Promise((r) => setTimeout(r, 300));
    await watcher.endAsync();
    await learner.stop();
    env.close();
    return {
      mode,
      bytesPerTransition: bytes / Math.max(1, sent),
      ackedPerSec: ((a1 - a0) * 1000) / (t1 - t0),
      transitions: status.ackedSeq + 1,
      actorLoopP50Ms: status.latencyMs.p50,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const rows: Row[] = [];
for (const mode of ['none', 'features', 'jpeg'] as const) rows.push(await measure(mode));
if (json) console.log(JSON.stringify({ bench: 'session-cameras', seconds, jpegQuality: quality, rows }));
else {
  console.log(
    `push-cam (84x84 top camera), 12 state + 3 actions, 8-wide embedding; ${seconds} s per mode, JPEG quality ${quality}`,
  );
  console.log(
    formatTable(
      ['--send-frames', 'bytes/transition', 'acked transitions/s', 'transitions', 'actor loop p50 ms'],
      rows.map((r) => [
        r.mode,
        r.bytesPerTransition.toFixed(0),
        r.ackedPerSec.toFixed(0),
        String(r.transitions),
        r.actorLoopP50Ms.toFixed(2),
      ]),
    ),
  );
}
process.exit(0);
