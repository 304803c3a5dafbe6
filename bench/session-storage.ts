/**
 * The session's disk side, measured:
 *   1. compaction: reach transitions (MuJoCo, the weak linear base, no broker: the actor spools
 *      them) are written into a learner write-ahead log with --segment-mib segments, and every
 *      sealed segment is packed: stored bytes per step before and after, and the packing rate.
 *   2. resume: reading that log back (every record decoded, as a resuming learner does), raw and
 *      packed, in MB of log per second and transitions per second.
 *   3. kills: the kill -9 soak of test/learner-kills.ts with --kills kills (half of them as a
 *      packing begins): transitions numbered by the actors vs in the log, duplicates, missing,
 *      whether the resumed replay equals the replay rebuilt from the log.
 *
 * usage: npx tsx bench/session-storage.ts [--json] [--mib 8] [--segment-mib 4] [--kills 40]
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { formatTable } from '../src/cli/common.js';
import { runActor } from '../src/runtime/session/actor.js';
import { Spool } from '../src/runtime/session/spool.js';
import { RecordLog } from '../src/runtime/session/record-log.js';
import { decodeBatch } from '../src/runtime/session/codec.js';
import { TransitionWal } from '../src/residual/service/wal.js';
import { MujocoEnv } from '../src/sim/env.js';
import { loadTask } from '../src/sim/registry.js';
import { writeWeakReachBase } from '../test/session-fixtures.js';
import { killSoak } from '../test/learner-kills.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const json = process.argv.includes('--json');
const mib = Number(arg('--mib') ?? 8);
const segmentMiB = Number(arg('--segment-mib') ?? 4);
const kills = Number(arg('--kills') ?? 40);
if (!(mib > 0) || !(segmentMiB > 0) || !(Number.isInteger(kills) && kills >= 0)) {
  console.error(
    'usage: npx tsx bench/session-storage.ts [--json] [--mib M>0] [--segment-mib S>0] [--kills N>=0]',
  );
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), 'resrt-bench-storage-'));
const MB = 1e6;
const dirBytes = (d: string, suffix: string): number =>
  readdirSync(d)
    .filter((f) => f.endsWith(suffix))
    .reduce((n, f) => n + statSync(join(d, f)).size, 0);

try {
  // -- 1. reach transitions, spooled by an actor without a learner ----------------------------------
  const stateDir = join(dir, 'actor');
  const basePath = join(dir, 'base.onnx');
  writeWeakReachBase(basePath);
  const env = await MujocoEnv.create(await loadTask('reach'));
  const actor = await runActor({
    robotId: 'reach',
    brokerUrl: 'mqtt://127.0.0.1:1',
    stateDir,
    base: basePath,
    env,
    spoolLimitMiB: mib * 4,
  });
  while (actor.status().storage.usedBytes < mib * 2 ** 20) await new Promise((r) => setTimeout(r, 200));
  const transitions = (await actor.stop()).transitions;
  env.close();

  // The same batches into a learner's log, sealed every segmentMiB.
  const walDir = join(dir, 'wal');
  const spool = Spool.open(stateDir);
  const wal = TransitionWal.open(
    walDir,
    { transitions: () => {}, episode: () => {} },
    {
      segmentBytes: segmentMiB * 2 ** 20,
    },
  );
  for (const b of spool.unacked()) wal.appendTransitions(decodeBatch(b.bytes));
  spool.close();
  await wal.close();
  const rawBytes = dirBytes(walDir, '.log');

  const readBack = (): { seconds: number; steps: number } => {
    const t = performance.now();
    let steps = 0;
    const w = TransitionWal.open(walDir, {
      transitions: (b) => (steps += b.transitions.length),
      episode: () => {},
    });
    void w.close();
    return { seconds: (performance.now() - t) / 1000, steps };
  };
  const rawRead = readBack();

  // -- 2. pack every sealed segment ------------------------------------------------------------------
  const { log } = RecordLog.open(walDir, { prefix: 'wal', segmentBytes: segmentMiB * 2 ** 20 });
  log.rotate();
  let packSeconds = 0;
  let packedRaw = 0;
  for (const n of log.sealedUnpacked()) {
    const t = performance.now();
    const r = await log.pack(n);
    packSeconds += (performance.now() - t) / 1000;
    packedRaw += r.rawBytes;
  }
  log.close();
  const packedBytes = dirBytes(walDir, '.pack');
  const packedRead = readBack();
  if (packedRead.steps !== transitions || rawRead.steps !== transitions)
    throw new Error(`read ${rawRead.steps}/${packedRead.steps} steps back, wrote ${transitions}`);

  const compaction = {
    transitions,
    segments: readdirSync(walDir).filter((f) => f.endsWith('.pack')).length,
    rawBytesPerStep: rawBytes / transitions,
    packedBytesPerStep: packedBytes / transitions,
    packedShare: packedBytes / rawBytes,
    packMBps: packedRaw / MB / packSeconds,
    readRawMBps: rawBytes / MB / rawRead.seconds,
    readPackedMBps: rawBytes / MB / packedRead.seconds,
    readRawStepsPerSec: transitions / rawRead.seconds,
    readPackedStepsPerSec: transitions / packedRead.seconds,
  };

  // -- 3. the kill soak --------------------------------------------------------------------------------
  const soak = kills > 0 ? await killSoak(join(dir, 'soak'), kills) : null;

  if (json) {
    console.log(JSON.stringify({ mib, segmentMiB, compaction, soak }));
  } else {
    console.log(`write-ahead log of ${transitions} reach transitions, ${segmentMiB} MiB segments`);
    console.log(
      formatTable(
        ['log', 'bytes/step', 'share', 'pack MB/s', 'read MB/s (of raw log)', 'read steps/s'],
        [
          [
            'raw',
            compaction.rawBytesPerStep.toFixed(1),
            '1.00',
            '–',
            compaction.readRawMBps.toFixed(0),
            compaction.readRawStepsPerSec.toFixed(0),
          ],
          [
            'packed',
            compaction.packedBytesPerStep.toFixed(1),
            compaction.packedShare.toFixed(2),
            compaction.packMBps.toFixed(1),
            compaction.readPackedMBps.toFixed(0),
            compaction.readPackedStepsPerSec.toFixed(0),
          ],
        ],
      ),
    );
    if (soak) {
      console.log(
        `\nkill -9 soak: ${soak.kills} kills in ${soak.seconds.toFixed(0)} s, ${soak.duringCompaction} during a packing, ` +
          `${soak.settledAtOpen} packings settled at the next start, ${soak.packs} packs`,
      );
      console.log(
        formatTable(
          ['robot', 'numbered', 'logged', 'duplicated', 'missing', 'in order once'],
          soak.robots.map((r) => [
            r.robotId,
            r.numbered,
            r.logged,
            r.duplicated,
            r.missing,
            String(r.inOrderOnce),
          ]),
        ),
      );
      console.log(
        `replay after resume = replay rebuilt from the log: ${soak.replayEqual} (${soak.replaySteps} steps)`,
      );
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
