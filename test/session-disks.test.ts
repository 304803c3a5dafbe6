// Bounded disks in a session (docs/sessions.md, "Disk limits"): compaction of the write-ahead log
// at every point a crash can interrupt it, the learner's log limit and its free-space reserve, and
// actors and a learner on a real, small filesystem (tmpfs) that fills up and gets room again. In
// every case each transition an actor numbered ends up exactly once in the learner's log.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { RecordLog } from '../src/runtime/session/record-log.js';
import { packSegment } from '../src/runtime/session/segment-pack.js';
import { parseRecords } from '../src/runtime/session/record-frame.js';
import { runLearnerService, type LearnerService } from '../src/residual/service/learner-service.js';
import type { LearnerServiceOptions } from '../src/residual/service/service-options.js';
import { TransitionWal } from '../src/residual/service/wal.js';
import { runActor } from '../src/runtime/session/actor.js';
import type { ActorHandle } from '../src/runtime/session/actor-handle.js';
import { Spool } from '../src/runtime/session/spool.js';
import { ResrtError } from '../src/util/errors.js';
import { PointMassEnv } from './residual-pointmass.js';
import { smallLearner, waitFor, writeBiasedPointMassBase } from './session-fixtures.js';
import { mountSmallDisk, type SmallDisk } from './small-disk.js';

let dir: string;
let basePath: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'resrt-session-disks-'));
  basePath = join(dir, 'pm-base.onnx');
  writeBiasedPointMassBase(basePath);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const KiB = 1024;
const MiB = 2 ** 20;
const seg = (d: string, n: number, form: string): string =>
  join(d, `wal-${String(n).padStart(8, '0')}.${form}`);
const filesIn = (d: string): string[] => readdirSync(d).sort();

/** Every transition seq per robot in a learner's log (packs included), in log order. */
function loggedSeqs(outDir: string): Map<string, number[]> {
  const seqs = new Map<string, number[]>();
  const wal = TransitionWal.open(join(outDir, 'wal'), {
    transitions: (b) => {
      if (!seqs.has(b.robotId)) seqs.set(b.robotId, []);
      seqs.get(b.robotId)!.push(...b.transitions.map((t) => t.seq));
    },
    episode: () => {},
  });
  void wal.close();
  return seqs;
}

const inOrderOnce = (seqs: number[] | undefined, n: number): void => {
  expect(seqs?.length).toBe(n);
  expect(seqs!.every((s, i) => s === i)).toBe(true);
};

/** A free port: an embedded broker is started there and closed, so actors can wait for a learner. */
async function freeBrokerUrl(name: string): Promise<string> {
  const probe = await runLearnerService({
    outDir: join(dir, `${name}-probe`),
    brokerPort: 0,
    base: basePath,
    profile: 'cpu',
    config: smallLearner,
  });
  const url = probe.brokerUrl;
  await probe.close();
  return url;
}

/** A learner continuing the session in outDir, its broker on brokerUrl's port, its log into lines. */
const learnerAt = (
  outDir: string,
  brokerUrl: string,
  lines: string[],
  options: Partial<LearnerServiceOptions>,
): Promise<LearnerService> =>
  runLearnerService({
    outDir,
    resume: true,
    brokerPort: Number(new URL(brokerUrl).port),
    base: basePath,
    profile: 'cpu',
    config: smallLearner,
    log: (l) => lines.push(l),
    ...options,
  });

describe('write-ahead log compaction', () => {
  it('leaves every record exactly once, in order, whatever step of a packing a crash interrupted', async () => {
    const d = join(dir, 'packing');
    const payload = (i: number): Uint8Array =>
      Uint8Array.from({ length: 40 + (i % 7) }, (_, k) => (i * 31 + (k % 4)) & 0xff);
    const { log } = RecordLog.open(d, { prefix: 'wal', segmentBytes: 300 });
    for (let i = 0; i < 40; i++) log.append(1 + (i % 2), payload(i));
    log.sync();
    expect(log.sealedUnpacked().length).toBeGreaterThan(5);
    // Segment 1 packed the whole way.
    const r1 = await log.pack(1);
    expect(r1.packedBytes).toBeLessThan(r1.rawBytes);
    log.close();
    const packOf = async (n: number): Promise<Buffer> => {
      const raw = readFileSync(seg(d, n, 'log'));
      return packSegment(raw, n, parseRecords(raw, n).records.length);
    };
    // Segment 2: killed while writing the pack (a short .tmp); segment 3: after the .tmp was complete
    // but before the rename; segment 4: after the rename, before the .log was deleted; segment 5: a
    // committed pack damaged on disk while its .log is still there.
    const p2 = await packOf(2);
    writeFileSync(seg(d, 2, 'pack.tmp'), p2.subarray(0, p2.byteLength >> 1));
    writeFileSync(seg(d, 3, 'pack.tmp'), await packOf(3));
    writeFileSync(seg(d, 4, 'pack'), await packOf(4));
    const p5 = await packOf(5);
    p5[p5.byteLength - 3] ^= 0xff;
    writeFileSync(seg(d, 5, 'pack'), p5);

    const seen: number[][] = [];
    const { log: again, report } = RecordLog.open(d, { prefix: 'wal', segmentBytes: 300 }, (r) =>
      seen.push([r.type, ...r.payload]),
    );
    const want = Array.from({ length: 40 }, (_, i) => [1 + (i % 2), ...payload(i)]);
    expect(seen).toEqual(want);
    expect(report.interruptedPacks).toBe(4);
    const files = filesIn(d);
    expect(files).toContain('wal-00000001.pack');
    expect(files).toContain('wal-00000002.log');
    expect(files).toContain('wal-00000003.log');
    expect(files).toContain('wal-00000004.pack');
    expect(files).not.toContain('wal-00000004.log');
    expect(files).toContain('wal-00000005.log');
    expect(files).not.toContain('wal-00000005.pack');
    expect(files.some((f) => f.endsWith('.tmp'))).toBe(false);
    // diskBytes is what is on disk.
    expect(again.diskBytes).toBe(files.reduce((n, f) => n + statSync(join(d, f)).size, 0));

    // Seal the current segment, pack everything sealed, append on, reopen: the same records and
    // the new one, which went to a new segment (a packed one is never appended to).
    again.rotate();
    for (const n of again.sealedUnpacked()) await again.pack(n);
    again.append(3, Uint8Array.of(7, 7, 7));
    again.close();
    expect(filesIn(d).filter((f) => f.endsWith('.log'))).toEqual([filesIn(d).at(-1)]);
    const after: number[][] = [];
    RecordLog.open(d, { prefix: 'wal' }, (r) => after.push([r.type, ...r.payload])).log.close();
    expect(after).toEqual([...want, [3, 7, 7, 7]]);

    // A damaged pack with no .log beside it is corruption, reported with the file.
    const damaged = readFileSync(seg(d, 1, 'pack'));
    damaged[damaged.byteLength - 2] ^= 0xff;
    writeFileSync(seg(d, 1, 'pack'), damaged);
    expect(() => RecordLog.open(d, { prefix: 'wal' })).toThrow(ResrtError);
    expect(() => RecordLog.open(d, { prefix: 'wal' })).toThrow(/wal-00000001\.pack is corrupt[\s\S]*fix:/);
  });

  it('the learner stops logging at --wal-limit; a restart with a higher limit goes on, and the log holds each transition once', async () => {
    const outDir = join(dir, 'limit-learner');
    const brokerUrl = await freeBrokerUrl('limit');
    const lines: string[] = [];
    const start = (walLimitMiB: number): Promise<LearnerService> =>
      learnerAt(outDir, brokerUrl, lines, { walLimitMiB, walSegmentMiB: 2 / 1024, minFreeMiB: 0 });
    let learner = await start(12 / 1024);
    const actorLines: string[] = [];
    const actor = await runActor({
      robotId: 'limited',
      brokerUrl,
      stateDir: join(dir, 'limit-actor'),
      base: basePath,
      env: new PointMassEnv(),
      rateHz: 1000,
      batchSize: 8,
      resendMs: 300,
      spoolLimitMiB: 0.01,
      log: (l) => actorLines.push(l),
    });
    try {
      await waitFor('the log limit', () => learner.snapshot().storage.stopped !== null, 30_000).catch(
        (err) => {
          throw new Error(
            `${(err as Error).message}; learner: ${lines.slice(-5).join(' | ')}; actor: ${JSON.stringify(actor.status())}`,
          );
        },
      );
      const snap = learner.snapshot();
      expect(snap.storage.stopped).toMatch(
        /its limit is 0\.01 MiB \(--wal-limit\)[\s\S]*--resume and a higher --wal-limit/,
      );
      expect(lines.some((l) => /write-ahead log: .* holds .* its limit is/.test(l))).toBe(true);
      // Sealed segments were compacted meanwhile; the log is at most a batch and a segment past its
      // limit (compaction may have taken it below again since).
      expect(snap.storage.compactedSegments).toBeGreaterThan(0);
      expect(snap.storage.usedBytes).toBeLessThan(12 * KiB + 4 * KiB);
      expect(lines.some((l) => /segment \d+ compacted, \d+ → \d+ KiB/.test(l))).toBe(true);
      // Nothing more is acknowledged: the actor fills its spool and says why, with the learner's reason.
      await waitFor(
        'the actor to stop at its spool limit',
        () => actor.status().phase === 'spool-full',
        20_000,
      );
      await waitFor(
        "the learner's reason in the actor's log",
        () =>
          actorLines.some((l) =>
            /no new episode until it is back\. The learner logs nothing: .*--wal-limit/.test(l),
          ),
        10_000,
      );
      const logged = learner.snapshot().logged;
      await new Promise((r) => setTimeout(r, 700));
      expect(learner.snapshot().logged).toBe(logged);
      expect(actor.status().storage.stopped).toMatch(/not acknowledged by the learner/);

      await learner.close();
      learner = await start(64);
      await waitFor('episodes to go on', () => actor.status().phase !== 'spool-full', 20_000);
      actor.pause();
      await waitFor('everything acknowledged', () => actor.status().pendingTransitions === 0, 20_000);
      expect(learner.snapshot().storage.stopped).toBeNull();
    } finally {
      await actor.stop();
      await learner.close();
    }
    const n = actor.status().transitions;
    inOrderOnce(loggedSeqs(outDir).get('limited'), n);
    expect(readdirSync(join(outDir, 'wal')).filter((f) => f.endsWith('.pack')).length).toBeGreaterThan(3);
  }, 90_000);
});

describe('a small disk that fills up (tmpfs)', () => {
  let disk: SmallDisk | string;
  beforeAll(() => {
    disk = mountSmallDisk(3 * MiB);
  });
  afterAll(() => {
    if (typeof disk !== 'string') disk.unmount();
  });

  it('actor: a write the disk refuses ends the episode safely and holds collection; room again, it goes on by itself; then the --min-free reserve holds it until the learner acknowledges', async ({
    skip,
  }) => {
    if (typeof disk === 'string') return skip(disk);
    const small = disk;
    const stateDir = join(small.path, 'actor');
    const brokerUrl = await freeBrokerUrl('tmpfs-actor');
    const lines: string[] = [];
    const commands: Float32Array[] = [];
    const start = (minFreeMiB: number): Promise<ActorHandle> =>
      runActor({
        robotId: 'cramped',
        brokerUrl,
        stateDir,
        base: basePath,
        env: new PointMassEnv(),
        rateHz: 1000,
        batchSize: 8,
        resendMs: 300,
        // Segments of 32 KiB: acknowledged data leaves the disk in those steps.
        spoolLimitMiB: 0.25,
        minFreeMiB,
        log: (l) => lines.push(l),
        onCommand: (a) => commands.push(a),
      });

    // 1. No reserve: the spool's own write fails with ENOSPC in the middle of an episode.
    small.fill(40 * KiB);
    let actor = await start(0);
    let total = 0;
    try {
      await waitFor('the disk to refuse a write', () => actor.status().phase === 'disk-full', 20_000);
      expect(
        lines.some((l) =>
          /spool: cannot write to .*ENOSPC.*running episode ends with the safe action.*Free space/.test(l),
        ),
      ).toBe(true);
      expect(actor.status().storage.stopped).toMatch(/ENOSPC/);
      // Stopped, not e-stopped: the robot gets nothing more, and no person needs to clear anything.
      const sent = commands.length;
      const episodes = actor.status().episodes;
      await new Promise((r) => setTimeout(r, 500));
      expect(commands.length).toBe(sent);
      expect(actor.status().episodes).toBe(episodes);
      expect(actor.status().phase).toBe('disk-full');

      small.release();
      await waitFor('writing again', () => lines.some((l) => l === 'spool: writing again'), 10_000);
      await waitFor('more episodes', () => actor.status().episodes >= episodes + 2, 15_000);
      expect(lines.some((l) => l.includes('room again; episodes go on'))).toBe(true);
    } finally {
      total += (await actor.stop()).transitions;
    }
    // Nothing was lost: every numbered transition is spooled.
    const spooled = Spool.open(stateDir);
    expect(spooled.pendingTransitions).toBe(total);
    spooled.close();

    // 2. With a reserve: no write fails; episodes stop starting while the disk has less free.
    lines.length = 0;
    small.fill(320 * KiB);
    actor = await start(0.25);
    let learner: LearnerService | null = null;
    try {
      await waitFor('the reserve', () => actor.status().phase === 'disk-full', 20_000);
      expect(
        lines.some((l) => /disk: .* MiB free where the spool is .*less than --min-free 0\.25 MiB/.test(l)),
      ).toBe(true);
      expect(lines.some((l) => l.includes('cannot write'))).toBe(false);
      const episodes = actor.status().episodes;
      await new Promise((r) => setTimeout(r, 400));
      expect(actor.status().episodes).toBe(episodes);

      // The learner comes back: its acknowledgements delete spooled segments, which is room.
      learner = await runLearnerService({
        outDir: join(dir, 'tmpfs-actor-learner'),
        brokerPort: Number(new URL(brokerUrl).port),
        base: basePath,
        profile: 'cpu',
        config: smallLearner,
      });
      await waitFor('episodes to go on', () => actor.status().episodes > episodes + 1, 20_000);
      expect(lines.some((l) => l === 'disk: room again; episodes go on')).toBe(true);
      actor.pause();
      await waitFor('everything acknowledged', () => actor.status().pendingTransitions === 0, 20_000);
    } finally {
      total = (await actor.stop()).transitions + total;
      await learner?.close();
      small.release();
    }
    inOrderOnce(loggedSeqs(join(dir, 'tmpfs-actor-learner')).get('cramped'), total);
  }, 120_000);

  it('learner: a log write the disk refuses, then the --min-free reserve: nothing is acknowledged meanwhile, the actor keeps it spooled, and the log ends with each transition once', async ({
    skip,
  }) => {
    if (typeof disk === 'string') return skip(disk);
    const small = disk;
    const outDir = join(small.path, 'learner');
    const lines: string[] = [];
    const brokerUrl = await freeBrokerUrl('tmpfs-learner');
    const start = (minFreeMiB: number): Promise<LearnerService> =>
      // No segment is sealed (and compacted, which frees space) during the test.
      learnerAt(outDir, brokerUrl, lines, { minFreeMiB, walSegmentMiB: 1, checkpointEverySec: 3600 });
    const actor = await runActor({
      robotId: 'feeder',
      brokerUrl,
      stateDir: join(dir, 'tmpfs-learner-actor'),
      base: basePath,
      env: new PointMassEnv(),
      rateHz: 1000,
      batchSize: 8,
      resendMs: 300,
    });
    let learner = await start(0);
    try {
      // 1. The log's append fails with ENOSPC: not acknowledged, taken back, sent again later.
      await waitFor('a few logged', () => learner.snapshot().logged > 100, 20_000);
      small.fill(24 * KiB);
      await waitFor(
        'the write error',
        () => lines.some((l) => l.includes('write-ahead log: cannot write')),
        20_000,
      );
      expect(lines.find((l) => l.includes('cannot write'))).toMatch(
        /ENOSPC[\s\S]*the actors keep their transitions spooled\. Free disk space there/,
      );
      // The actor goes on; acknowledgements fall behind (a short batch may still fit in the end of a
      // page the failed write left, so not all of them stop).
      const before = actor.status();
      await new Promise((r) => setTimeout(r, 800));
      const after = actor.status();
      expect(after.transitions - before.transitions).toBeGreaterThan(16);
      expect(after.ackedSeq - before.ackedSeq).toBeLessThan((after.transitions - before.transitions) / 2);
      expect(learner.snapshot().storage.stopped).toMatch(/cannot write/);
      small.release();
      await waitFor('writing again', () => lines.includes('write-ahead log: writing again'), 20_000);
      await learner.close();

      // 2. A reserve: logging stops before any write fails, and goes on once there is room.
      lines.length = 0;
      learner = await start(1);
      small.fill(0.9 * MiB);
      await waitFor('the reserve', () => learner.snapshot().storage.stopped !== null, 20_000);
      expect(learner.snapshot().storage.stopped).toMatch(
        /MiB free, less than the 1\.00 MiB kept for checkpoints and compaction \(--min-free\)/,
      );
      expect(lines.some((l) => l.includes('cannot write'))).toBe(false);
      // Nothing more is logged, so nothing past it is acknowledged (an acknowledgement of what was
      // logged before the stop may still be on its way to the actor on a loaded machine).
      const held = learner.snapshot().watermarks.feeder;
      await new Promise((r) => setTimeout(r, 600));
      expect(learner.snapshot().watermarks.feeder).toBe(held);
      expect(actor.status().ackedSeq).toBeLessThanOrEqual(held);
      expect(actor.status().pendingTransitions).toBeGreaterThan(0);
      small.release();
      await waitFor('logging again', () => learner.snapshot().storage.stopped === null, 20_000);
      actor.pause();
      await waitFor('everything acknowledged', () => actor.status().pendingTransitions === 0, 20_000);
    } finally {
      await actor.stop();
      await learner.close();
      small.release();
    }
    inOrderOnce(loggedSeqs(outDir).get('feeder'), actor.status().transitions);
  }, 120_000);
});
