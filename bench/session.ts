/**
 * Session throughput over loopback MQTT: 1, 2 and 4 actors stream transitions to one learner
 * (embedded broker, write-ahead log with an fsync per batch, exactly-once ingest) while it trains.
 * The actors drive a synthetic environment that answers at once (reach's widths: 10 obs, 2 actions,
 * 60-step episodes) through the full actor loop: ONNX base, residual, safety layer, spool with an
 * fsync per batch. So the numbers are the session plumbing's ceiling, not a robot's rate.
 * The learner (with its embedded broker) runs in a process of its own, as `resrt learner` would;
 * the actors share this one. On a shared 2-core box they still compete for the same cores, and
 * the numbers are noisy. transitions/s counts what the learner acknowledged (durably logged);
 * updates/s comes from the learner's status messages.
 *
 * usage: npx tsx bench/session.ts [--json] [--seconds S] [--actors 1,2,4] [--batch N]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { formatTable } from '../src/cli/common.js';
import { startLearnerChild } from './learner-child.js';
import type { BoxSpace, Env, ResetResult, StepResult } from '../src/types.js';
import mqtt from 'mqtt';
import { learnerStatusSchema, parseJson, sessionTopics } from '../src/runtime/session/protocol.js';
import { runActor } from '../src/runtime/session/actor.js';
import { Rng } from '../src/util/rng.js';
import { smallLearner, writeWeakReachBase } from '../test/session-fixtures.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const json = process.argv.includes('--json');
const seconds = Number(arg('--seconds') ?? 8);
const fleet = (arg('--actors') ?? '1,2,4').split(',').map(Number);
const batchSize = Number(arg('--batch') ?? 32);
if (!(seconds > 0) || fleet.some((n) => !Number.isInteger(n) || n < 1) || !(batchSize >= 1)) {
  console.error('usage: npx tsx bench/session.ts [--json] [--seconds S>0] [--actors 1,2,4] [--batch N>=1]');
  process.exit(2);
}

const box = (dim: number): BoxSpace => ({
  dim,
  low: Array(dim).fill(-1),
  high: Array(dim).fill(1),
  names: Array.from({ length: dim }, (_, i) => `x${i}`),
});

/** Random observations, a success now and then: only the shapes matter here. */
class SyntheticEnv implements Env {
  readonly id = 'synthetic-reach';
  readonly observationSpace = box(10);
  readonly actionSpace = box(2);
  readonly controlDt = 0.02;
  readonly maxEpisodeSteps = 60;
  private t = 0;
  private readonly rng: Rng;
  constructor(seed: number) {
    this.rng = new Rng(seed);
  }
  private obs(): Float32Array {
    return Float32Array.from({ length: 10 }, () => this.rng.range(-0.2, 0.2));
  }
  reset(): ResetResult {
    this.t = 0;
    return { obs: this.obs(), info: { success: false } };
  }
  step(): StepResult {
    this.t++;
    const success = this.rng.uniform() < 0.01;
    return {
      obs: this.obs(),
      reward: success ? 1 : 0,
      terminated: success,
      truncated: !success && this.t >= 60,
      info: { success },
    };
  }
  close(): void {}
}

interface Row {
  actors: number;
  transitionsPerSec: number;
  perActorPerSec: number;
  updatesPerSec: number;
  actorLoopP50Ms: number;
  actorLoopP99Ms: number;
  unackedAtEnd: number;
}

async function measure(n: number): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'resrt-bench-session-'));
  const basePath = join(dir, 'base.onnx');
  writeWeakReachBase(basePath);
  const learner = await startLearnerChild({
    outDir: join(dir, 'learner'),
    brokerPort: 0,
    base: basePath,
    profile: 'cpu',
    config: smallLearner,
    publishEvery: 50,
    checkpointEverySec: 3600,
  });
  let updates = 0;
  const watcher = await mqtt.connectAsync(learner.brokerUrl);
  watcher.on('message', (_t, payload) => {
    const s = parseJson(learnerStatusSchema, payload);
    if (s) updates = s.updates;
  });
  await watcher.subscribeAsync(sessionTopics('default').learnerStatus);
  const actors: Awaited<ReturnType<typeof runActor>>[] = [];
  for (let k = 0; k < n; k++) {
    actors.push(
      await runActor({
        robotId: `bench-${k}`,
        brokerUrl: learner.brokerUrl,
        stateDir: join(dir, `actor-${k}`),
        base: basePath,
        env: new SyntheticEnv(k),
        batchSize,
        seed: k,
      }),
    );
  }
  const acked = (): number => actors.reduce((sum, a) => sum + a.status().ackedSeq + 1, 0);
  // Warm-up: past learningStarts, so the learner trains while it ingests.
  const warmUntil = performance.now() + 30_000;
  while (acked() < (smallLearner.learningStarts ?? 0) + 300 && performance.now() < warmUntil)
    await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 1500));
  const a0 = acked();
  const u0 = updates;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const a1 = acked();
  const u1 = updates;
  const dt = (performance.now() - t0) / 1000;
  const statuses = actors.map((a) => a.status());
  for (const a of actors) await a.stop();
  await watcher.endAsync();
  await learner.stop();
  rmSync(dir, { recursive: true, force: true });
  const tps = (a1 - a0) / dt;
  return {
    actors: n,
    transitionsPerSec: tps,
    perActorPerSec: tps / n,
    updatesPerSec: (u1 - u0) / dt,
    actorLoopP50Ms: Math.max(...statuses.map((s) => s.latencyMs.p50)),
    actorLoopP99Ms: Math.max(...statuses.map((s) => s.latencyMs.p99)),
    unackedAtEnd: statuses.reduce((sum, s) => sum + s.pendingTransitions, 0),
  };
}

const rows: Row[] = [];
for (const n of fleet) rows.push(await measure(n));
if (json) {
  console.log(
    JSON.stringify({ bench: 'session', seconds, batchSize, transport: 'embedded aedes, loopback', rows }),
  );
} else {
  console.log(
    `session: actors → embedded broker → learner (WAL fsync per batch, training), ${seconds} s per row, batches of ${batchSize}`,
  );
  console.log(
    formatTable(
      [
        'actors',
        'transitions/s',
        'per actor/s',
        'learner updates/s',
        'actor loop p50 ms',
        'p99 ms',
        'unacked at end',
      ],
      rows.map((r) => [
        String(r.actors),
        r.transitionsPerSec.toFixed(0),
        r.perActorPerSec.toFixed(0),
        r.updatesPerSec.toFixed(1),
        r.actorLoopP50Ms.toFixed(3),
        r.actorLoopP99Ms.toFixed(3),
        String(r.unackedAtEnd),
      ]),
    ),
  );
  console.log(
    'learner + embedded broker in one process, the actors in another; on a shared machine they compete for cores',
  );
}
