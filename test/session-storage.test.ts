// The session's durable pieces on their own: the binary batch codec, the framed record log (torn
// tails cut, mid-file corruption reported), the actor's spool (acks, segment deletion, restart),
// the learner's exactly-once sequencer, the residual message check and the dashboard's token rule.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import {
  decodeBatch,
  decodeEnvelope,
  encodeBatch,
  encodeEnvelope,
  type SessionTransition,
} from '../src/runtime/session/codec.js';
import { RecordLog } from '../src/runtime/session/record-log.js';
import { Spool } from '../src/runtime/session/spool.js';
import { decodePolicyMessage, encodePolicyMessage, sessionTopics } from '../src/runtime/session/protocol.js';
import { runLearnerService } from '../src/residual/service/learner-service.js';
import {
  EpisodeAssembler,
  Sequencer,
  episodeRewards,
  interventionDemos,
} from '../src/residual/service/ingest.js';
import { TransitionWal } from '../src/residual/service/wal.js';
import { startDashboard } from '../src/runtime/dashboard/server.js';
import { ResrtError } from '../src/util/errors.js';
import { ResidualStore } from '../src/runtime/session/residual-store.js';
import { exportResidualOnnx, residualPolicySpec } from '../src/residual/export.js';
import { randomMlpSpec } from '../src/runtime/onnx-export.js';
import { Rng } from '../src/util/rng.js';
import { PassThrough } from 'node:stream';
import { attachTerminalKeys } from '../src/runtime/session/keys.js';
import { runActor } from '../src/runtime/session/actor.js';
import type { ActorHandle } from '../src/runtime/session/actor-handle.js';
import type { Env } from '../src/types.js';
import { PointMassEnv } from './residual-pointmass.js';
import { smallLearner, waitFor, writeBiasedPointMassBase } from './session-fixtures.js';
import { makeMixer, mixingEpisode, type MixingEpisode, type MixingSpec } from '../src/residual/mixing-run.js';
import { MixingLog } from '../src/runtime/session/mixing-log.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'resrt-session-storage-'));
  writeBiasedPointMassBase(join(dir, 'pm-base.onnx'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function transition(robotId: string, seq: number, episode = 0, end = false): SessionTransition {
  const f = (n: number, v: number): Float32Array => Float32Array.from({ length: n }, (_, i) => v + i / 8);
  return {
    robotId,
    seq,
    episode,
    step: seq % 1000,
    obs: f(3, seq),
    baseAction: f(2, 0.5),
    residual: f(2, -0.01),
    action: f(2, 0.25),
    reward: end ? 1 : 0,
    nextObs: f(3, seq + 1),
    nextBaseAction: f(2, 0.125),
    terminated: end,
    truncated: false,
    intervention: seq % 3 === 0,
    safetyEvents: seq % 2,
    policyVersion: 7,
    success: end,
    labelled: end,
  };
}

const batchOf = (robotId: string, first: number, n: number) => ({
  robotId,
  obsDim: 3,
  actionDim: 2,
  firstSeq: first,
  transitions: Array.from({ length: n }, (_, i) => transition(robotId, first + i)),
});

describe('batch codec', () => {
  it('round-trips every field bit for bit and rejects a flipped bit', () => {
    const b = batchOf('arm-1', 1_000_000_000_123, 5);
    b.transitions[4] = { ...transition('arm-1', 1_000_000_000_127, 2, true) };
    // Mixed episodes: the held-back bit and the planned share (stored to 1/255).
    b.transitions[1] = { ...b.transitions[1], heldBack: true, mixingShare: 51 / 255 };
    b.transitions[2] = { ...b.transitions[2], mixingShare: 1 };
    const bytes = encodeBatch(b);
    const back = decodeBatch(bytes);
    expect(back.robotId).toBe('arm-1');
    expect(back.transitions).toEqual(b.transitions);
    const bad = Uint8Array.from(bytes);
    bad[40] ^= 1;
    expect(() => decodeBatch(bad)).toThrow(/CRC-32/);
    expect(() => encodeBatch({ ...b, firstSeq: 5 })).toThrow(/breaks the run/);
    const badShare = { ...b, transitions: b.transitions.map((t) => ({ ...t, mixingShare: 1.5 })) };
    expect(() => encodeBatch(badShare)).toThrow(/mixingShare 1.5/);
  });
});

describe('record log', () => {
  it('cuts a torn tail, keeps every whole record, and refuses corruption in an older segment', () => {
    const d = join(dir, 'log');
    const { log } = RecordLog.open(d, { prefix: 'wal', segmentBytes: 200 });
    for (let i = 0; i < 10; i++) log.append(1, new Uint8Array(40).fill(i));
    log.sync();
    log.close();
    const segs = readdirSync(d).sort();
    expect(segs.length).toBeGreaterThan(1);
    const newest = join(d, segs[segs.length - 1]);
    const size = statSync(newest).size;
    // A crash in the middle of an append: half a record at the end.
    appendFileSync(newest, Buffer.from([0x52, 0x4c, 0x52, 0x31, 40, 0, 0, 0, 1, 2]));
    const seen: number[] = [];
    const r = RecordLog.open(d, { prefix: 'wal' }, (rec) => seen.push(rec.payload[0]));
    expect(r.report.tornBytes).toBe(10);
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(statSync(newest).size).toBe(size);
    r.log.close();
    // A damaged byte in an older segment is not a torn write.
    const oldest = join(d, segs[0]);
    const buf = Buffer.alloc(statSync(oldest).size);
    writeFileSync(oldest, buf);
    expect(() => RecordLog.open(d, { prefix: 'wal' })).toThrow(ResrtError);
  });
});

describe('spool', () => {
  it('keeps unacknowledged batches across a restart, deletes acknowledged segments, continues numbering', () => {
    const d = join(dir, 'spool');
    const s = Spool.open(d, 16 << 10);
    expect(s.nextSeq).toBe(0);
    for (let k = 0; k < 200; k++) s.append(batchOf('r', k * 10, 10));
    expect(s.pendingTransitions).toBe(2000);
    const batchBytes = encodeBatch(batchOf('r', 0, 10)).byteLength;
    expect(s.pendingBytes).toBe(200 * batchBytes);
    const before = readdirSync(d).length;
    expect(before).toBeGreaterThan(2);
    s.ack(1499);
    expect(s.pendingTransitions).toBe(500);
    expect(s.pendingBytes).toBe(50 * batchBytes);
    expect(readdirSync(d).length).toBeLessThan(before);
    s.append(batchOf('r', 2000, 10));
    s.close();
    // kill -9 right in an append: a torn record at the end of the newest segment.
    const segs = readdirSync(d).sort();
    const newest = join(d, segs[segs.length - 1]);
    truncateSync(newest, statSync(newest).size - 7);
    const again = Spool.open(d, 16 << 10);
    expect(again.tornBytes).toBeGreaterThan(0);
    expect(again.ackedSeq).toBe(1499);
    const unacked = again.unacked();
    expect(unacked[0].firstSeq).toBe(1500);
    // The torn batch (2000..2009) was never published (append fsyncs before publishing): its
    // numbers are reused, and nobody has seen them.
    expect(unacked[unacked.length - 1].lastSeq).toBe(1999);
    expect(again.nextSeq).toBe(2000);
    expect(again.pendingBytes).toBe(50 * batchBytes);
    again.close();
  });
  it('takes an acknowledgement it cannot record on a full disk, and still frees what it covers', () => {
    const d = join(dir, 'spool-full-ack');
    const s = Spool.open(d, 4096);
    let k = 0;
    while (s.pendingBytes < 4096) s.append(batchOf('r', 10 * k++, 10));
    // The next record starts segment 2: the always-full device.
    symlinkSync('/dev/full', join(d, 'spool-00000002.log'));
    expect(() => s.ack(10 * k - 1)).not.toThrow();
    expect(s.pendingTransitions).toBe(0);
    expect(s.pendingBytes).toBe(0);
    s.close();
  });
});

describe('sequencer and episodes', () => {
  it('accepts each (robot, seq) once and in order, whatever the arrival order', () => {
    const q = new Sequencer();
    const t = (seq: number) => transition('a', seq);
    expect(q.accept('a', [t(0), t(1)]).map((x) => x.seq)).toEqual([0, 1]);
    expect(q.accept('a', [t(4), t(5)])).toEqual([]);
    expect(q.accept('a', [t(1), t(2)]).map((x) => x.seq)).toEqual([2]);
    expect(q.accept('a', [t(3), t(4)]).map((x) => x.seq)).toEqual([3, 4, 5]);
    expect(q.accept('b', [transition('b', 0)]).map((x) => x.seq)).toEqual([0]);
    expect(q.watermark('a')).toBe(5);
    expect(q.duplicates).toBe(2);
    q.restore('c', 41);
    expect(q.accept('c', [transition('c', 41), transition('c', 42)]).map((x) => x.seq)).toEqual([42]);
  });

  it('starts an unknown robot after what it says was acknowledged, and skips a gap no one can fill', () => {
    const q = new Sequencer();
    const t = (seq: number) => transition('z', seq);
    expect(q.adopt('z', 4999)).toBe(0);
    expect(q.accept('z', [t(5000), t(5001)]).map((x) => x.seq)).toEqual([5000, 5001]);
    expect(q.adopt('z', 100)).toBe(0); // a late envelope: nothing changes
    expect(q.accept('z', [t(5005)])).toEqual([]);
    expect(q.adopt('z', 5003)).toBe(2);
    expect(q.accept('z', [t(5004)]).map((x) => x.seq)).toEqual([5004, 5005]);
    const env = decodeEnvelope(encodeEnvelope(41, encodeBatch(batchOf('z', 42, 2))));
    expect(env.ackedSeq).toBe(41);
    expect(env.batch.transitions.map((x) => x.seq)).toEqual([42, 43]);
  });

  it('hands over whole episodes per robot, and cuts one an actor restart abandoned', () => {
    const asm = new EpisodeAssembler();
    expect(asm.add(transition('a', 0, 0))).toEqual([]);
    expect(asm.add(transition('b', 0, 0))).toEqual([]);
    const done = asm.add(transition('a', 1, 0, true));
    expect(done.map((ep) => ep.map((x) => x.seq))).toEqual([[0, 1]]);
    const cut = asm.add(transition('b', 1, 5));
    expect(cut).toHaveLength(1);
    expect(cut[0][0].truncated).toBe(true);
    expect(asm.waiting).toBe(1);
  });

  it('replays a write-ahead log after a torn write', () => {
    const d = join(dir, 'wal');
    const wal = TransitionWal.open(d, { transitions: () => {}, episode: () => {} });
    wal.appendTransitions(batchOf('r', 0, 8));
    wal.appendEpisode({
      robotId: 'r',
      episode: 0,
      lastSeq: 7,
      steps: 8,
      ret: 1,
      success: true,
      labelled: false,
      interventions: 0,
      safetyEvents: 0,
      policyVersion: 1,
    });
    wal.appendTransitions(batchOf('r', 8, 8));
    wal.close();
    const seg = join(d, readdirSync(d)[0]);
    truncateSync(seg, statSync(seg).size - 3);
    const seqs: number[] = [];
    let episodes = 0;
    const again = TransitionWal.open(d, {
      transitions: (b) => seqs.push(...b.transitions.map((t) => t.seq)),
      episode: () => episodes++,
    });
    expect(seqs).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(episodes).toBe(1);
    expect(again.report.tornBytes).toBeGreaterThan(0);
    again.close();
  });
});

describe("actor's mixing log", () => {
  it('cuts a line torn by a crash, keeps the whole ones, and refuses a corrupt one', () => {
    const d = join(dir, 'mixlog');
    mkdirSync(d, { recursive: true });
    const spec: MixingSpec = { mode: 'scale', alpha: 0.1, delta: 0.05, baseline: { value: 0.5 } };
    const mixer = makeMixer(spec, { horizon: 10, seed: 0, initialEval: null });
    const log = MixingLog.open(d, spec);
    for (let k = 0; k < 3; k++) {
      const plan = mixer.beginEpisode();
      log.append(mixingEpisode(spec, plan, k === 1, 10 * (k + 1), 10));
      mixer.endEpisode(k === 1, plan);
    }
    log.close();
    const path = join(d, 'mixing.jsonl');
    appendFileSync(path, '{"episode":3,"envSt');
    const again = MixingLog.open(d, spec);
    expect(again.tornBytes).toBe(19);
    expect(again.records.map((r) => [r.episode, r.success])).toEqual([
      [0, false],
      [1, true],
      [2, false],
    ]);
    again.close();
    expect(readFileSync(path, 'utf8').endsWith('\n')).toBe(true);
    const lines = readFileSync(path, 'utf8').split('\n');
    lines[2] = '{not json';
    writeFileSync(path, lines.join('\n'));
    expect(() => MixingLog.open(d, spec)).toThrow(/line 3 is not JSON[\s\S]*fix:/);
  });
});

describe('interventions', () => {
  it('RLIF: −1 on the step a person takes over, 0 elsewhere; HIL-SERL: intervention steps as 1-step demos', () => {
    const flags = [false, true, true, false, true, false];
    const ep = flags.map((f, i) => ({ ...transition('r', i), intervention: f, reward: i === 5 ? 1 : 0.5 }));
    expect(Array.from(episodeRewards(ep, 'task'))).toEqual([0.5, 0.5, 0.5, 0.5, 0.5, 1]);
    expect(Array.from(episodeRewards(ep, 'rlif'))).toEqual([0, -1, 0, 0, -1, 0]);
    const demos = interventionDemos(ep, episodeRewards(ep, 'rlif'));
    expect(demos.map((d) => d.seq)).toEqual([1, 2, 4]);
    expect(demos.map((d) => d.reward)).toEqual([-1, 0, -1]);
    expect(demos.every((d) => d.truncated)).toBe(true);
  });
});

describe('residual message', () => {
  it('verifies the sha256 and the length before anyone loads it', () => {
    const onnx = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
    const header = {
      lineage: 'abc',
      version: 3,
      obsDim: 4,
      actionDim: 2,
      actionScale: 0.1,
      updates: 10,
      createdAt: 'now',
    };
    const msg = encodePolicyMessage(header, onnx);
    const { header: h, onnx: back } = decodePolicyMessage(msg);
    expect(h.version).toBe(3);
    expect(Array.from(back)).toEqual(Array.from(onnx));
    const flipped = Uint8Array.from(msg);
    flipped[flipped.length - 1] ^= 0xff;
    expect(() => decodePolicyMessage(flipped)).toThrow(/sha256 mismatch/);
    expect(() => decodePolicyMessage(msg.subarray(0, msg.length - 1))).toThrow(/ONNX bytes/);
  });
});

/** A small random residual for a 4-obs, 2-action task (the point mass), and its verified message. */
const residualOnnx = (seed: number): Uint8Array =>
  exportResidualOnnx(
    residualPolicySpec({
      layers: randomMlpSpec({
        inputs: [{ name: 'x', dim: 6 }],
        hidden: [8],
        actionDim: 2,
        rng: new Rng(seed),
      }).layers,
      obsDim: 4,
      actionDim: 2,
      actionScale: 0.1,
      useBase: true,
      obsMean: null,
      obsStd: null,
      version: seed,
    }),
  );
const message = (lineage: string, version: number, onnx = residualOnnx(version)) =>
  encodePolicyMessage(
    { lineage, version, obsDim: 4, actionDim: 2, actionScale: 0.1, updates: 0, createdAt: 'now' },
    onnx,
  );

describe('residual store (actor side)', () => {
  it('takes only verified, newer residuals of its lineage, and keeps the last good one across restarts', async () => {
    const d = join(dir, 'store');
    mkdirSync(d, { recursive: true });
    const store = new ResidualStore(d, 4, 2);
    const good = message('L1', 2);
    const corrupt = Uint8Array.from(good);
    corrupt[corrupt.length - 5] ^= 0x40;
    store.offer(corrupt);
    await store.settled();
    expect(store.rejected).toBe(1);
    expect(store.take()).toBeNull();
    store.offer(good);
    await store.settled();
    const first = store.take();
    expect(first?.header.version).toBe(2);
    store.offer(good); // the retained copy again
    store.offer(message('L1', 1));
    await store.settled();
    expect(store.take()).toBeNull();
    // Wrong dims: rejected with the reason.
    store.offer(
      encodePolicyMessage(
        { lineage: 'L1', version: 9, obsDim: 5, actionDim: 2, actionScale: 0.1, updates: 0, createdAt: 'x' },
        residualOnnx(9),
      ),
    );
    await store.settled();
    expect(store.lastError).toMatch(/obs\/action 5\/2/);
    // A new learner folder numbers from 1 again: its residual is taken.
    store.offer(message('L2', 1));
    await store.settled();
    const second = store.take();
    expect(second?.header.lineage).toBe('L2');
    await first?.policy.close();
    await second?.policy.close();
    await store.close();
    const again = new ResidualStore(d, 4, 2);
    const last = await again.loadLastGood();
    expect(last?.header).toMatchObject({ lineage: 'L2', version: 1 });
    const r = await last!.policy.residual(new Float32Array(4), new Float32Array(2));
    expect(r.every((v) => Math.abs(v) <= 0.1 + 1e-6)).toBe(true);
    await last!.policy.close();
  });
});

describe('dashboard access', () => {
  const noop = { title: 't', snapshot: () => ({}), command: () => true, teleop: () => true };
  it('refuses to listen beyond loopback without a token, and checks the token when it has one', async () => {
    await expect(startDashboard({ ...noop, host: '0.0.0.0', port: 0 })).rejects.toThrow(/without a token/);
    const d = await startDashboard({ ...noop, port: 0, token: 'secret-token-123' });
    try {
      const base = `http://127.0.0.1:${d.port}`;
      expect((await fetch(`${base}/api/snapshot`)).status).toBe(401);
      expect((await fetch(`${base}/api/snapshot?token=secret-token-123`)).status).toBe(200);
      const post = (headers: Record<string, string>) =>
        fetch(`${base}/api/control?token=secret-token-123`, {
          method: 'POST',
          headers,
          body: '{"cmd":"pause"}',
        });
      expect((await post({})).status).toBe(403);
      expect((await post({ 'x-resrt': '1' })).status).toBe(200);
    } finally {
      await d.close();
    }
  });
});

describe('actor without a learner', () => {
  it('acts and spools everything while no broker is reachable; the spool holds it after stop', async () => {
    const d = join(dir, 'lonely');
    const basePath = join(dir, 'pm-base.onnx');
    const actor = await runActor({
      robotId: 'alone',
      brokerUrl: 'mqtt://127.0.0.1:1',
      stateDir: d,
      base: basePath,
      env: new PointMassEnv(),
      rateHz: 200,
    });
    await new Promise((r) => setTimeout(r, 1000));
    const s = await actor.stop();
    expect(s.transitions).toBeGreaterThan(50);
    expect(s.brokerConnected).toBe(false);
    expect(s.pendingTransitions).toBe(s.transitions);
    const spool = Spool.open(d);
    expect(spool.pendingTransitions).toBe(s.transitions);
    expect(spool.nextSeq).toBe(s.transitions);
    spool.close();
  }, 20_000);

  it('stops starting episodes at the spool limit and goes on once a learner acknowledges', async () => {
    const basePath = join(dir, 'pm-base.onnx');
    // A broker port nobody listens on yet: the learner starts there later.
    const probe = await runLearnerService({
      outDir: join(dir, 'limit-probe'),
      brokerPort: 0,
      base: basePath,
      profile: 'cpu',
      config: smallLearner,
    });
    const brokerUrl = probe.brokerUrl;
    await probe.close();
    const lines: string[] = [];
    const d = join(dir, 'limit-actor');
    const limitMiB = 0.02;
    const actor = await runActor({
      robotId: 'full',
      brokerUrl,
      stateDir: d,
      base: basePath,
      env: new PointMassEnv(),
      rateHz: 1000,
      spoolLimitMiB: limitMiB,
      log: (l) => lines.push(l),
    });
    try {
      await waitFor('the spool to fill', () => actor.status().phase === 'spool-full', 15_000);
      const held = actor.status();
      await new Promise((r) => setTimeout(r, 500));
      // No episode starts while full; the last one was allowed to finish.
      expect(actor.status().episodes).toBe(held.episodes);
      expect(actor.status().transitions).toBe(held.transitions);
      const spool = readdirSync(d).filter((f) => f.startsWith('spool-'));
      const onDisk = spool.reduce((n, f) => n + statSync(join(d, f)).size, 0);
      // At most one episode (40 steps) past the limit.
      expect(onDisk).toBeGreaterThanOrEqual(limitMiB * 2 ** 20);
      expect(onDisk).toBeLessThan(limitMiB * 2 ** 20 + 40 * 200);
      expect(lines.some((l) => /not acknowledged by the learner.*Start the learner/.test(l))).toBe(true);

      const learner = await runLearnerService({
        outDir: join(dir, 'limit-learner'),
        brokerPort: Number(new URL(brokerUrl).port),
        base: basePath,
        profile: 'cpu',
        config: smallLearner,
      });
      try {
        await waitFor('episodes to go on', () => actor.status().episodes >= held.episodes + 3, 20_000);
        expect(lines.some((l) => l.includes('episodes go on'))).toBe(true);
        expect(learner.snapshot().logged).toBeGreaterThanOrEqual(held.transitions);
      } finally {
        await actor.stop();
        await learner.close();
      }
    } finally {
      await actor.stop();
    }
  }, 60_000);

  it('with conservative mixing: base-only episodes run the base exactly, the spool carries held-back bits and shares, the evidence survives a restart', async () => {
    const d = join(dir, 'mixing-actor');
    mkdirSync(d, { recursive: true });
    const store = new ResidualStore(d, 4, 2);
    store.offer(message('L1', 5));
    await store.settled();
    await store.take()?.policy.close();
    await store.close();
    const mixing: MixingSpec = { mode: 'eps', alpha: 0.5, delta: 0.05, baseline: { value: 0.5 } };
    const start = (spec: MixingSpec) =>
      runActor({
        robotId: 'mixer',
        brokerUrl: 'mqtt://127.0.0.1:1',
        stateDir: d,
        base: join(dir, 'pm-base.onnx'),
        env: new PointMassEnv(),
        rateHz: 400,
        mixing: spec,
      });
    const first = await start(mixing);
    await waitFor('12 episodes', () => first.status().episodes >= 12, 15_000);
    const s1 = await first.stop();
    expect(s1.mixingShare).toBeGreaterThanOrEqual(0.5);
    const lines = readFileSync(join(d, 'mixing.jsonl'), 'utf8').trim().split('\n');
    expect(JSON.parse(lines[0])).toEqual({ spec: mixing });
    const records = lines.slice(1).map((l) => JSON.parse(l) as MixingEpisode);
    expect(records.length).toBe(s1.episodes);
    const explore = new Map(records.map((r, i) => [i, r.params.explore === true]));
    expect(new Set(explore.values())).toEqual(new Set([true, false]));

    const spool = Spool.open(d);
    const steps = spool.unacked().flatMap((b) => decodeBatch(b.bytes).transitions);
    spool.close();
    expect(steps.length).toBe(s1.transitions);
    const clip = (v: number) => Math.max(-1, Math.min(1, v));
    let residualSteps = 0;
    for (const t of steps) {
      const exploring = explore.get(t.episode);
      expect(t.heldBack ?? false, `episode ${t.episode}`).toBe(!exploring);
      expect(t.mixingShare).toBeCloseTo(records[t.episode].share, 2);
      // The default safety layer is the box: what ran is the clipped composition, unless the layer
      // stepped in (its watchdog holds the last safe command when a loaded machine delays a tick).
      if (t.safetyEvents > 0) continue;
      const want = Array.from(t.baseAction, (b, j) => Math.fround(clip(b + (exploring ? t.residual[j] : 0))));
      expect(Array.from(t.action), `episode ${t.episode} step ${t.step}`).toEqual(want);
      if (exploring && t.residual.some((v) => v !== 0)) residualSteps++;
    }
    expect(residualSteps).toBeGreaterThan(20);

    // A restart replays the evidence and goes on numbering; other settings are refused.
    await expect(start({ ...mixing, alpha: 0.2 })).rejects.toThrow(/written with mixing settings/);
    const second = await start(mixing);
    await waitFor('2 more episodes', () => second.status().episodes >= 2, 15_000);
    await second.stop();
    const after = readFileSync(join(d, 'mixing.jsonl'), 'utf8').trim().split('\n').slice(1);
    const next = JSON.parse(after[records.length]) as MixingEpisode;
    expect(next.episode).toBe(records.length);
    expect(after.slice(0, records.length)).toEqual(lines.slice(1));
    // Episode numbers went on after the restart (never reused: the learner cuts episodes by them).
    const spooled = Spool.open(d);
    const all = spooled.unacked().flatMap((b) => decodeBatch(b.bytes).transitions);
    spooled.close();
    expect(all.length).toBeGreaterThan(steps.length);
    for (let i = 1; i < all.length; i++) expect(all[i].episode).toBeGreaterThanOrEqual(all[i - 1].episode);
  }, 40_000);

  it('stop() returns while a reset waits for a person', async () => {
    const pm = new PointMassEnv();
    const stuck: Env = {
      id: 'stuck',
      observationSpace: pm.observationSpace,
      actionSpace: pm.actionSpace,
      controlDt: pm.controlDt,
      maxEpisodeSteps: pm.maxEpisodeSteps,
      reset: () => new Promise(() => {}),
      step: (a) => pm.step(a),
      close: () => {},
    };
    const actor = await runActor({
      robotId: 'stuck',
      brokerUrl: 'mqtt://127.0.0.1:1',
      stateDir: join(dir, 'stuck'),
      base: join(dir, 'pm-base.onnx'),
      env: stuck,
    });
    await new Promise((r) => setTimeout(r, 200));
    expect(actor.status().phase).toBe('reset');
    const t0 = performance.now();
    await actor.stop();
    expect(performance.now() - t0).toBeLessThan(3000);
  }, 20_000);
});

describe('conservative mixing in a session', () => {
  it('held-back steps and the share reach the learner over MQTT; with two robots the lower share counts', async () => {
    const basePath = join(dir, 'pm-base.onnx');
    const learner = await runLearnerService({
      outDir: join(dir, 'mix-learner'),
      brokerPort: 0,
      base: basePath,
      profile: 'cpu',
      seed: 1,
      config: smallLearner,
    });
    // The two shares differ whatever the episodes do: the cautious robot's baseline of 1 keeps its
    // share near α (s* = α·V_base / (V_base − V_low), V_low stays far below 1 over a few episodes)
    // and the bold robot's α = 0.9 against 0.5 starts it at 0.9 and only raises it.
    const mixedActor = (robotId: string, alpha: number, baseline: number): Promise<ActorHandle> =>
      runActor({
        robotId,
        brokerUrl: learner.brokerUrl,
        stateDir: join(dir, `mix-actor-${robotId}`),
        base: basePath,
        env: new PointMassEnv(),
        rateHz: 400,
        mixing: { mode: 'step', alpha, delta: 0.05, baseline: { value: baseline } },
      });
    const shares = (robotId: string): number[] =>
      readFileSync(join(dir, `mix-actor-${robotId}`, 'mixing.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .slice(1)
        .map((l) => (JSON.parse(l) as MixingEpisode).share);
    const settled = async (a: ActorHandle): Promise<void> => {
      a.pause();
      await waitFor(`${a.robotId} acknowledged`, () => a.status().pendingTransitions === 0, 15_000);
    };
    try {
      const cautious = await mixedActor('cautious', 0.05, 1);
      const bold = await mixedActor('bold', 0.9, 0.5);
      await waitFor('6 episodes at the learner', () => learner.snapshot().episodes >= 6, 20_000);
      // The bold robot finishes the latest episode; the cautious one's share must still count.
      await settled(cautious);
      const boldEpisodes = shares('bold').length;
      await waitFor('another bold episode', () => shares('bold').length > boldEpisodes + 1, 15_000);
      await settled(bold);
      const snap = learner.snapshot();
      const lowShare = shares('cautious').at(-1) as number;
      const highShare = shares('bold').at(-1) as number;
      expect(lowShare).toBeLessThan(0.2);
      expect(highShare).toBeGreaterThanOrEqual(0.9);
      // The share travels to 1/255; StepMix tails (and base-only steps) are held back.
      expect(snap.mixingShare).toBeCloseTo(lowShare, 2);
      expect(Math.abs((snap.mixingShare as number) - lowShare)).toBeLessThanOrEqual(0.5 / 255);
      expect(snap.heldBackSteps).toBeGreaterThan(0);
      expect(snap.heldBackSteps).toBeLessThan(snap.logged);
      await cautious.stop();
      await bold.stop();
    } finally {
      await learner.close();
    }
  }, 60_000);
});

describe('terminal keys', () => {
  it('maps single key presses onto the actor', () => {
    const calls: string[] = [];
    let phase: 'run' | 'paused' = 'run';
    const handle = {
      estop: (s?: string) => calls.push(`estop:${s}`),
      resetEstop: () => (calls.push('reset-estop'), true),
      label: (ok: boolean) => calls.push(`label:${ok}`),
      pause: () => (calls.push('pause'), (phase = 'paused')),
      resume: () => (calls.push('resume'), (phase = 'run')),
      confirmReset: () => calls.push('reset-done'),
      stop: async () => (calls.push('stop'), {} as never),
      status: () => ({ phase }) as ReturnType<ActorHandle['status']>,
    };
    const input = new PassThrough();
    const seen: string[] = [];
    const detach = attachTerminalKeys(handle as never, input, (a) => seen.push(a));
    input.write('sfpp x?r q');
    detach();
    expect(calls).toEqual([
      'label:true',
      'label:false',
      'pause',
      'resume',
      'estop:terminal-key',
      'reset-estop',
      'reset-done',
      'estop:terminal-key',
      'stop',
    ]);
    expect(seen).toHaveLength(9);
  });
});

describe('bad input', () => {
  it('names the problem and the fix', async () => {
    await expect(
      runLearnerService({ outDir: join(dir, 'bad1'), obsDim: 4, actionDim: 2, publishEvery: 0 }),
    ).rejects.toThrow(/publishEvery = 0[\s\S]*fix:/);
    mkdirSync(join(dir, 'taken', 'wal'), { recursive: true });
    await expect(runLearnerService({ outDir: join(dir, 'taken'), obsDim: 4, actionDim: 2 })).rejects.toThrow(
      /already holds a session[\s\S]*--resume/,
    );
    const env = new PointMassEnv();
    const common = {
      brokerUrl: 'mqtt://127.0.0.1:1',
      stateDir: join(dir, 'bad-actor'),
      base: join(dir, 'pm-base.onnx'),
    };
    await expect(runActor({ ...common, robotId: 'a/b', env })).rejects.toThrow(/not usable in MQTT topics/);
    await expect(runActor({ ...common, robotId: 'a' })).rejects.toThrow(/exactly one of env/);
    await expect(runActor({ ...common, robotId: 'a', env, batchSize: 0 })).rejects.toThrow(/batchSize = 0/);
    await expect(
      runActor({
        ...common,
        robotId: 'a',
        env,
        mixing: { mode: 'eps', alpha: 0.1, delta: 0.05, baseline: 'initial-eval' },
      }),
    ).rejects.toThrow(/an actor has none[\s\S]*fix:.*--baseline/);
    await expect(
      runActor({
        ...common,
        robotId: 'a',
        env,
        mixing: { mode: 'eps', alpha: 2, delta: 0.05, baseline: { value: 0.5 } },
      }),
    ).rejects.toThrow(/mixing.alpha = 2/);
    mkdirSync(join(dir, 'bad-counter'), { recursive: true });
    writeFileSync(join(dir, 'bad-counter', 'episode.json'), '{}');
    await expect(
      runActor({ ...common, stateDir: join(dir, 'bad-counter'), robotId: 'a', env }),
    ).rejects.toThrow(/does not hold an episode counter[\s\S]*fix:/);
    expect(() => sessionTopics('a b')).toThrow(ResrtError);
  });
});
