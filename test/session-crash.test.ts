// Crash safety of a session through real processes and a real broker: the learner runs as a child
// process and is killed with SIGKILL (twice, once right after it came back), the broker is
// restarted, and in the end every transition the actors produced is in the learner's write-ahead
// log exactly once. Meanwhile the actors keep acting, and the robots only ever receive commands
// the actors produced (policy or safe), never something else. Then 20 kills in a row, half of them
// as the learner compacts its log (test/learner-kills.ts).
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { startEmbeddedBroker, type RunningBroker } from '../src/util/mqtt-broker.js';
import { runActor } from '../src/runtime/session/actor.js';
import type { ActorHandle } from '../src/runtime/session/actor-handle.js';
import { actorRobot } from '../src/hw/actor-robot.js';
import { startVirtualRobot, type VirtualRobot } from '../src/hw/virtual-robot.js';
import { builtInTasks } from '../src/sim/registry.js';
import { TransitionWal } from '../src/residual/service/wal.js';
import type { LearnerServiceOptions } from '../src/residual/service/service-options.js';
import { smallLearner, waitFor, writeWeakReachBase } from './session-fixtures.js';
import { killSoak, spawnLearner as spawnChildLearner, type ChildLearner } from './learner-kills.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** A child learner, killed at the end of the test if still running. */
async function spawnLearner(options: LearnerServiceOptions): Promise<ChildLearner> {
  const learner = await spawnChildLearner(options);
  cleanups.push(() => learner.kill());
  return learner;
}

const key = (a: ArrayLike<number>): string => Array.from(a, (v) => Math.fround(v)).join(',');

describe('session crash safety', () => {
  it('kill -9 of the learner (twice) and a broker restart: no transition lost or duplicated, robots stay safe', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'resrt-crash-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const basePath = join(dir, 'base.onnx');
    writeWeakReachBase(basePath);
    let broker: RunningBroker = await startEmbeddedBroker({ port: 0 });
    const port = broker.port;
    cleanups.push(() => broker.close());
    const learnerOptions: LearnerServiceOptions = {
      outDir: join(dir, 'learner'),
      brokerUrl: broker.url,
      session: 'crash',
      base: basePath,
      profile: 'cpu',
      config: smallLearner,
      publishEvery: 10,
      checkpointEverySec: 2,
    };
    let learner = await spawnLearner(learnerOptions);

    const ids = ['left', 'right'];
    const actors: ActorHandle[] = [];
    const sent = new Map<string, string[]>();
    const safeKeys = new Map<string, string>();
    const applied = new Map<string, string[]>();
    const robots: VirtualRobot[] = [];
    for (const [k, id] of ids.entries()) {
      const v = await startVirtualRobot(builtInTasks.reach, {
        transport: { brokerUrl: broker.url, robotId: id },
        seed: k,
      });
      robots.push(v);
      cleanups.push(() => v.close());
      const got: string[] = [];
      applied.set(id, got);
      const original = v.plant.command.bind(v.plant);
      v.plant.command = (a: Float32Array) => {
        got.push(key(a));
        original(a);
      };
      const mine: string[] = [];
      sent.set(id, mine);
      safeKeys.set(id, key(v.config.action.safe));
      const a = await runActor({
        robotId: id,
        brokerUrl: broker.url,
        session: 'crash',
        stateDir: join(dir, id),
        base: basePath,
        seed: k,
        resendMs: 500,
        robot: actorRobot({ url: v.robotUrl, config: v.config, virtualScene: { obsDim: v.plant.obsDim } }),
        onCommand: (action) => mine.push(key(action)),
      });
      actors.push(a);
      cleanups.push(async () => void (await a.stop()));
    }
    const acked = (): number[] => actors.map((a) => a.status().ackedSeq);
    await waitFor(
      'the learner to acknowledge 100 transitions per robot',
      () => acked().every((s) => s >= 100),
      40_000,
    );

    // 1. kill -9 mid-session: the actors keep acting and spool what they make.
    learner.child.kill('SIGKILL');
    await learner.exited;
    const before = actors.map((a) => a.status().transitions);
    // However slowly a loaded host runs them, the actors go on acting and spooling without a learner.
    await waitFor(
      'the actors to make 30 transitions each with the learner dead',
      () => actors.every((a, k) => a.status().transitions - before[k] > 30),
      30_000,
    );
    for (const a of actors) expect(a.status().pendingTransitions).toBeGreaterThan(0);

    // 2. Resume, and kill it again soon after it came back (mid-replay, mid-ingest).
    learner = await spawnLearner({ ...learnerOptions, resume: true });
    await new Promise((r) => setTimeout(r, 700));
    learner.child.kill('SIGKILL');
    await learner.exited;
    learner = await spawnLearner({ ...learnerOptions, resume: true });
    await waitFor(
      'the resumed learner to catch up',
      () => actors.every((a) => a.status().pendingTransitions < 40),
      40_000,
    );

    // 3. The broker dies and comes back on the same port.
    await broker.close();
    await new Promise((r) => setTimeout(r, 1500));
    broker = await startEmbeddedBroker({ port });
    const afterRestart = actors.map((a) => a.status().transitions);
    await waitFor(
      'the actors to act and be acknowledged again after the broker restart',
      () =>
        actors.every(
          (a, k) =>
            a.status().transitions > afterRestart[k] + 60 && a.status().ackedSeq >= afterRestart[k] + 30,
        ),
      45_000,
    );

    // 4. Stop the actors (they wait for the last acknowledgements), then the learner, cleanly.
    const finals = [];
    for (const a of actors) finals.push(await a.stop());
    learner.child.kill('SIGTERM');
    expect(await learner.exited).toBe(0);

    const seqs = new Map<string, number[]>(ids.map((id) => [id, []]));
    const wal = TransitionWal.open(join(dir, 'learner', 'wal'), {
      transitions: (b) => seqs.get(b.robotId)!.push(...b.transitions.map((t) => t.seq)),
      episode: () => {},
    });
    await wal.close();
    for (const [k, id] of ids.entries()) {
      const got = seqs.get(id)!;
      expect(finals[k].pendingTransitions).toBe(0);
      // Exactly the actor's transitions, each once, in order: 0 .. n-1.
      expect(got.length).toBe(finals[k].transitions);
      expect(got.every((s, i) => s === i)).toBe(true);
      // Every command the robot applied is one its actor produced (policy, teleop or safe), in the
      // order it produced them: an old command applied after a newer one would break the order.
      const mine = sent.get(id)!;
      const safe = safeKeys.get(id)!;
      let at = 0;
      const outOfOrder: string[] = [];
      for (const c of applied.get(id)!) {
        if (c === safe) continue; // the config's safe action, sent by the env on a link fault
        while (at < mine.length && mine[at] !== c) at++;
        if (at === mine.length) outOfOrder.push(c);
      }
      expect(outOfOrder).toEqual([]);
      expect(applied.get(id)!.length).toBeGreaterThan(100);
    }
  }, 150_000);

  it('kill -9 of the learner 20 times, half of them as it compacts its log: every transition once in the log, and resume rebuilds the replay exactly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'resrt-kills-'));
    // Retries: a learner killed at the end may still be flushing into the folder.
    cleanups.push(() => rmSync(dir, { recursive: true, force: true, maxRetries: 10 }));
    const r = await killSoak(dir, 20);
    for (const robot of r.robots) {
      expect(robot, robot.robotId).toMatchObject({ duplicated: 0, missing: 0, inOrderOnce: true });
      expect(robot.logged).toBe(robot.numbered);
      expect(robot.numbered).toBeGreaterThan(500);
    }
    expect(r.packs).toBeGreaterThan(5);
    // The checkpointed replay (checkpoint + log replayed after 21 starts) is the replay rebuilt from
    // the log, row for row.
    expect(r.replaySteps).toBe(r.rebuiltSteps);
    expect(r.replayEqual).toBe(true);
    // Kills landed in packings (at least the ten aimed at one), some in a state on disk that the next
    // start settled (a .tmp, or a pack beside its .log).
    expect(r.duringCompaction).toBeGreaterThanOrEqual(10);
    expect(r.settledAtOpen).toBeGreaterThanOrEqual(1);
    // ~70 s on a quiet machine; every one of its 21 learner starts replays a growing log, so a load
    // of twice the cores makes it several times slower.
  }, 600_000);
});
