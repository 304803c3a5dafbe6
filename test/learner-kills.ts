// The learner service as a child process that tests (and bench/session-storage.ts) kill with
// SIGKILL, and a soak that does so again and again while two actors stream to it: half of the kills
// the moment the learner starts compacting a segment of its write-ahead log, half after a random
// short run. The soak reports what a reader needs to judge exactly-once: per robot, what the actor
// numbered against what the log holds, and whether the learner's checkpointed replay equals the
// replay rebuilt from the log.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { startEmbeddedBroker } from '../src/util/mqtt-broker.js';
import { runActor } from '../src/runtime/session/actor.js';
import type { ActorHandle } from '../src/runtime/session/actor-handle.js';
import { TransitionWal } from '../src/residual/service/wal.js';
import type { LearnerServiceOptions } from '../src/residual/service/service-options.js';
import { EpisodeAssembler, episodeRewards } from '../src/residual/service/ingest.js';
import { ReplayBuffer, packSteps } from '../src/residual/replay.js';
import { readCheckpoint } from '../src/residual/checkpoint.js';
import { Rng } from '../src/util/rng.js';
import { BiasedBase, PointMassEnv } from './residual-pointmass.js';
import { smallLearner, waitFor } from './session-fixtures.js';

const repo = resolve(import.meta.dirname, '..');

export interface ChildLearner {
  child: ChildProcess;
  exited: Promise<number | null>;
  /** Its stderr (the service's log), line by line as it comes. */
  lines: string[];
  /** SIGKILL unless it already exited. */
  kill(): void;
}

/** Starts src/residual/service/child.ts and waits for its READY line (60 s at most). */
export async function spawnLearner(options: LearnerServiceOptions): Promise<ChildLearner> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(repo, 'src/residual/service/child.ts'), JSON.stringify(options)],
    { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  const lines: string[] = [];
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  createInterface({ input: child.stderr! }).on('line', (l) => lines.push(l));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const ready = new Promise<void>((resolveReady, reject) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      if (l.startsWith('READY ')) resolveReady();
    });
    void exited.then((code) => reject(new Error(`learner exited (${code}) before READY: ${stderr}`)));
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      ready,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`learner not READY in 60 s: ${stderr}`)), 60_000);
      }),
    ]);
  } catch (err) {
    kill();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return { child, exited, lines, kill };
}

export interface KillSoakResult {
  kills: number;
  /** Kills that came after a "compacting segment N" line and before its "segment N compacted". */
  duringCompaction: number;
  /** Starts that found a packing's files on disk mid-way and settled them. */
  settledAtOpen: number;
  /** Packed (compacted) segments in the log at the end. */
  packs: number;
  robots: {
    robotId: string;
    /** Transitions the actor numbered (all acknowledged at the end). */
    numbered: number;
    /** Transition records in the learner's log for this robot. */
    logged: number;
    /** Seqs in the log more than once, and seqs below `numbered` missing from it. */
    duplicated: number;
    missing: number;
    /** The log holds 0 … numbered−1, once each, in order. */
    inOrderOnce: boolean;
  }[];
  /** Steps in the learner's checkpointed replay and in the one rebuilt from the log. */
  replaySteps: number;
  rebuiltSteps: number;
  /** The two replays hold the same steps, row for row. */
  replayEqual: boolean;
  seconds: number;
}

/**
 * `kills` SIGKILLs of a child learner while two point-mass actors (in this process, 400 Hz, batches
 * of 8) stream to it over an embedded broker; the learner's log segments are 4 KiB, so it compacts
 * all the time. Then a last start, every transition acknowledged, a clean stop (checkpoint).
 */
export async function killSoak(dir: string, kills: number, seed = 18): Promise<KillSoakResult> {
  const t0 = performance.now();
  const O = 4;
  const A = 2;
  const outDir = join(dir, 'learner');
  const broker = await startEmbeddedBroker({ port: 0 });
  const options: LearnerServiceOptions = {
    outDir,
    brokerUrl: broker.url,
    session: 'kills',
    obsDim: O,
    actionDim: A,
    profile: 'cpu',
    config: smallLearner,
    publishEvery: 10,
    checkpointEverySec: 1,
    // Segments of 4 KiB: one is sealed and compacted every few batches.
    walSegmentMiB: 4 / 1024,
    minFreeMiB: 0,
  };
  const actors: ActorHandle[] = [];
  let learner: ChildLearner | null = null;
  try {
    for (const [k, id] of ['north', 'south'].entries()) {
      actors.push(
        await runActor({
          robotId: id,
          brokerUrl: broker.url,
          session: 'kills',
          stateDir: join(dir, id),
          base: new BiasedBase(),
          env: new PointMassEnv(),
          seed: k,
          rateHz: 400,
          batchSize: 8,
          flushMs: 50,
          resendMs: 300,
        }),
      );
    }
    const rng = new Rng(seed);
    let duringCompaction = 0;
    let settledAtOpen = 0;
    const settled = (l: ChildLearner): number =>
      l.lines.filter((line) => line.includes('compactions a stop interrupted')).length;
    for (let kill = 0; kill < kills; kill++) {
      const current = await spawnLearner({ ...options, resume: kill > 0 });
      learner = current;
      settledAtOpen += settled(current);
      const from = current.lines.length;
      if (kill % 2 === 0) {
        // Kill the moment a packing begins: mid-read, mid-write of the pack, or mid-commit.
        await waitFor(
          'a compaction',
          () => current.lines.slice(from).some((l) => l.includes('compacting segment')),
          20_000,
          1,
        );
      } else await new Promise((r) => setTimeout(r, 50 + rng.int(600)));
      current.kill();
      await current.exited;
      const started = current.lines.findLast((l) => l.includes('compacting segment'));
      const n = started?.match(/segment (\d+)/)?.[1];
      if (n && !current.lines.some((l) => l.includes(`segment ${n} compacted`))) duringCompaction++;
    }

    // Back once more: everything the actors made reaches the log.
    const last = await spawnLearner({ ...options, resume: true });
    learner = last;
    settledAtOpen += settled(last);
    for (const a of actors) a.pause();
    await waitFor(
      'every transition acknowledged',
      () => actors.every((a) => a.status().pendingTransitions === 0),
      120_000,
    );
    const numbered = new Map<string, number>();
    for (const a of actors) numbered.set(a.robotId, (await a.stop()).transitions);
    last.child.kill('SIGTERM');
    if ((await last.exited) !== 0)
      throw new Error(`the last learner did not stop cleanly: ${last.lines.slice(-5).join('\n')}`);

    // The log, and the replay an uninterrupted learner would hold: every finished episode in log order.
    const seqs = new Map<string, number[]>();
    const rebuilt = new ReplayBuffer(smallLearner.bufferSize!, O, A);
    const episodes = new EpisodeAssembler();
    const wal = TransitionWal.open(join(outDir, 'wal'), {
      transitions: (b) => {
        if (!seqs.has(b.robotId)) seqs.set(b.robotId, []);
        seqs.get(b.robotId)!.push(...b.transitions.map((t) => t.seq));
        for (const t of b.transitions)
          for (const ep of episodes.add(t)) {
            const rewards = episodeRewards(ep, 'task');
            rebuilt.addBatch(
              packSteps(
                ep.map((s, i) => ({ ...s, reward: rewards[i] })),
                O,
                A,
              ),
            );
          }
      },
      episode: () => {},
    });
    await wal.close();
    const resumed = readCheckpoint(outDir)!.online;
    return {
      kills,
      duringCompaction,
      settledAtOpen,
      packs: readdirSync(join(outDir, 'wal')).filter((f) => f.endsWith('.pack')).length,
      robots: [...numbered].map(([robotId, n]) => {
        const got = seqs.get(robotId) ?? [];
        const distinct = new Set(got);
        return {
          robotId,
          numbered: n,
          logged: got.length,
          duplicated: got.length - distinct.size,
          missing: Array.from({ length: n }, (_, i) => i).filter((i) => !distinct.has(i)).length,
          inOrderOnce: got.length === n && got.every((s, i) => s === i),
        };
      }),
      replaySteps: resumed.size,
      rebuiltSteps: rebuilt.size,
      // Only the count of all steps ever added (a Float64 at byte 24) restarts with each resume.
      replayEqual: withoutAddedCount(resumed.serialize()).equals(withoutAddedCount(rebuilt.serialize())),
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    learner?.kill();
    for (const a of actors) await a.stop();
    await broker.close();
  }
}

function withoutAddedCount(bytes: Uint8Array): Buffer {
  const b = Buffer.from(bytes);
  b.writeDoubleLE(0, 24);
  return b;
}
