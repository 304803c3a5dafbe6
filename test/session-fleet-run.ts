// A whole session through real dependencies, shared by the fleet test files (the state fleet on
// each broker, and the fleet with cameras): two virtual robots (a MuJoCo puck task behind MQTT),
// two actors with a biased ONNX base, and one learner. Residual versions must advance, both actors
// must pick them up and act with them, and success must rise: the residual the fleet trained,
// evaluated without noise on the same physics, beats the base alone.
//
// The virtual robots run in wall-clock time, so what the fleet learns depends on the actors keeping
// their periods. vitest.config.ts therefore runs the fleet files after every other file, one at a
// time: under a busy full suite (learners and 1000 Hz actors in the other fork) the same fleet
// ended at 0.30–0.79, against 0.83–1.00 run apart.
import { expect } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import {
  runLearnerService,
  type LearnerService,
  type LearnerSnapshot,
} from '../src/residual/service/learner-service.js';
import type { EpisodeRecord } from '../src/residual/service/wal.js';
import { runActor, type ActorHandle } from '../src/runtime/session/index.js';
import type { SendFrames } from '../src/runtime/session/camera-batch.js';
import { actorRobot } from '../src/hw/actor-robot.js';
import { startVirtualRobot, type VirtualRobot } from '../src/hw/virtual-robot.js';
import { MujocoEnv } from '../src/sim/env.js';
import type { AnyTask } from '../src/sim/registry.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import { loadResidual } from '../src/runtime/camera-residual.js';
import { ComposedPolicy } from '../src/runtime/compose.js';
import { evaluatePolicy } from '../src/runtime/evaluate.js';
import { puckTask } from './fixtures/puck-task.js';
import { puckLearner, waitFor, writeBiasedPuckBase } from './session-fixtures.js';

/** What differs between the fleets. */
export interface FleetSpec {
  /** Session name, and the temp folder's prefix. */
  session: string;
  /** The task the virtual robots serve (with its cameras, if any) and the evaluation runs. */
  task: AnyTask;
  writeBase(path: string): void;
  /** One actor per entry, each on its own virtual robot. */
  actors: { robotId: string; sendFrames?: SendFrames }[];
  /** The least rise of the fleet's last 50 residual-acted episodes over the base (noise-free). */
  recentRise: number;
  /** The least rise of the newest residual, noise-free, over the base, on the same episodes. */
  noiseFreeRise: number;
  /** Learner updates before the fleet stops. */
  updates: number;
  /** The learner's actor learning rate (default: puckLearner's, 3e-5). */
  actorLr?: number;
}

export interface FleetResult {
  /** The learner's output folder (write-ahead log, residual.onnx); removed by the cleanups. */
  learnerDir: string;
  final: LearnerSnapshot;
  episodes: readonly EpisodeRecord[];
  /** Success rates, noise-free on the same 100 seeded episodes, and of the last 50 residual-acted ones. */
  rates: { base: number; residual: number; recent: number };
}

/**
 * Runs a fleet against one learner and checks that it learns. Everything it starts is pushed onto
 * `cleanups` (most recent last), which the caller runs after the test.
 */
export async function runFleetOf(
  spec: FleetSpec,
  brokerUrl: string | undefined,
  cleanups: (() => Promise<void> | void)[],
): Promise<FleetResult> {
  const tag = `fleet ${spec.session}`;
  const dir = mkdtempSync(join(tmpdir(), `resrt-${spec.session}-`));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const basePath = join(dir, 'base.onnx');
  spec.writeBase(basePath);
  const learnerDir = join(dir, 'learner');
  const learner: LearnerService = await runLearnerService({
    outDir: learnerDir,
    brokerUrl,
    brokerPort: 0,
    session: spec.session,
    base: basePath,
    profile: 'cpu',
    seed: 1,
    config: { ...puckLearner, actorLr: spec.actorLr ?? puckLearner.actorLr },
    publishEvery: 10,
  });
  cleanups.push(() => learner.close());
  const actors: ActorHandle[] = [];
  const versionsSeen = new Map<string, Set<number>>();
  for (const [k, { robotId, sendFrames }] of spec.actors.entries()) {
    const v: VirtualRobot = await startVirtualRobot(spec.task, {
      transport: { brokerUrl: learner.brokerUrl, robotId },
      seed: 10 + k,
    });
    cleanups.push(() => v.close());
    const seen = new Set<number>();
    versionsSeen.set(robotId, seen);
    const a = await runActor({
      robotId,
      brokerUrl: learner.brokerUrl,
      session: spec.session,
      stateDir: join(dir, robotId),
      base: basePath,
      seed: k,
      // The robot's cameras (if any) come from its config, over MQTT, as on real hardware. Their
      // renderer, JPEG encoder and broker share this process with the learner: on the loaded 2-core
      // machine frames arrived past the default 200 ms age limit and cut episodes short (14 of
      // 110 in one fleet), so the fleet allows 1 s, as test/hw-camera.test.ts does.
      robot: actorRobot({
        url: v.robotUrl,
        config: { ...v.config, cameraLimits: { maxAgeMs: 1000 } },
        virtualScene: { obsDim: v.plant.obsDim },
      }),
      sendFrames,
      onCommand: () => seen.add(a?.status().residualVersion ?? 0),
    });
    actors.push(a);
    cleanups.push(async () => void (await a.stop()));
  }
  const robotIds = spec.actors.map((a) => a.robotId);
  // Versions advance, and each actor runs at least two different published residuals.
  await waitFor(
    'every actor to run two published residual versions',
    () => [...versionsSeen.values()].every((s) => [...s].filter((v) => v > 0).length >= 2),
    75_000,
    100,
  );
  const snap = learner.snapshot();
  expect(snap.version).toBeGreaterThanOrEqual(2);
  expect(snap.updates).toBeGreaterThan(0);
  for (const a of actors) {
    const s = a.status();
    expect(s.residualVersion).toBeGreaterThanOrEqual(1);
    expect(s.residualVersion).toBeLessThanOrEqual(snap.version);
    expect(s.episodes).toBeGreaterThan(0);
  }
  // The learner saw episodes from every robot acted with a residual (version recorded per transition).
  await waitFor(
    'episodes acted with a residual from every robot',
    () => robotIds.every((id) => learner.episodes().some((e) => e.robotId === id && e.policyVersion > 0)),
    30_000,
  );
  // Learning: enough updates for the residual to settle, then the fleet stops.
  await waitFor(
    `${spec.updates} learner updates`,
    () => learner.snapshot().updates >= spec.updates,
    180_000,
    200,
  );
  for (const a of actors) await a.stop();
  const final = learner.snapshot();
  await learner.close();
  const eps = learner.episodes();
  const withResidual = eps.filter((e) => e.policyVersion > 0);
  const rate = (xs: typeof eps): string => `${xs.filter((e) => e.success).length}/${xs.length}`;
  // Failures before the time limit: a fault (a stale state or camera frame) cut them short.
  const cut = eps.filter((e) => !e.success && e.steps < spec.task.maxEpisodeSteps).length;
  console.log(
    `${tag}: v${final.version}, ${final.updates} updates, ${final.logged} transitions; training episodes (with exploration noise) base-only ${rate(eps.filter((e) => e.policyVersion === 0))}, with a residual ${rate(withResidual)}; ${cut} cut short by a fault`,
  );

  // Success rises: the newest published residual against the base alone, same seeded episodes.
  const env = await MujocoEnv.create(spec.task);
  const expectDims = { expectObsDim: env.observationSpace.dim, expectActionDim: env.actionSpace.dim };
  const base = await OnnxPolicy.load(basePath, {
    ...expectDims,
    cameras: Object.fromEntries((env.cameras ?? []).map((c) => [c.name, c])),
  });
  const residual = await loadResidual(join(learnerDir, 'residual.onnx'), expectDims);
  cleanups.push(async () => {
    await base.close();
    await residual.close();
    env.close();
  });
  const episodes = { episodes: 100, seed: 7000 };
  const before = await evaluatePolicy(env, new ComposedPolicy({ base }), episodes);
  const after = await evaluatePolicy(env, new ComposedPolicy({ base, residual }), episodes);
  console.log(
    `${tag}: base ${before.successRate.toFixed(2)} → base + residual v${final.version} ${after.successRate.toFixed(2)}`,
  );
  expect(before.successRate).toBeLessThan(0.5);
  // An episode a fault cut short (a stale state or frame on a loaded machine: the puck tasks end
  // early only by success) says nothing of the residual: the rise is read from the last 50 it
  // acted on to their end. A clean-root run beside two detector trainings (load ~6 on 2 cores) cut
  // 5 of 95 such episodes short, and its last 50 read 22 points over the base with them counted.
  const ranToEnd = withResidual.filter((e) => e.success || e.steps >= spec.task.maxEpisodeSteps);
  const recent = ranToEnd.slice(-50);
  const recentRate = recent.filter((e) => e.success).length / recent.length;
  console.log(
    `${tag}: last ${recent.length} episodes with a residual that ran to their end ${recentRate.toFixed(2)}`,
  );
  expect(recent.length).toBe(50);
  // Rates of 50 and 100 episodes differ by whole hundredths; compared in hundredths, so that
  // 0.42 − 0.32 counts as the 10 points it is (as floats it is 0.0999…).
  const points = (rate: number): number => Math.round(100 * rate);
  expect(points(recentRate - before.successRate)).toBeGreaterThanOrEqual(points(spec.recentRise));
  expect(points(after.successRate - before.successRate)).toBeGreaterThanOrEqual(points(spec.noiseFreeRise));
  return {
    learnerDir,
    final,
    episodes: eps,
    rates: { base: before.successRate, residual: after.successRate, recent: recentRate },
  };
}

/** The state fleet: the puck task without cameras, its linear biased base, actors arm-a and arm-b. */
export async function runFleet(
  brokerUrl: string | undefined,
  cleanups: (() => Promise<void> | void)[],
): Promise<void> {
  await runFleetOf(
    {
      session: 'fleet',
      task: puckTask,
      writeBase: writeBiasedPuckBase,
      actors: [{ robotId: 'arm-a' }, { robotId: 'arm-b' }],
      // The fleet's own record carries the size of the rise: its last 50 episodes acted with a
      // residual (exploration noise on) against the base alone. The newest residual, one snapshot
      // of a policy still training, must beat the base noise-free too, by less: over 24 fleet runs
      // it ended anywhere in 0.44–1.00 (base 0.32). Some fleets learn slowly (one won 53 of its 99
      // residual-acted episodes, its last 50 at 0.60); most win 0.83–0.96 of them.
      //
      // Why, measured over 12 more fleets (2026-12-05, machine load ~6 on 2 cores): not timing. In
      // every fleet the learner kept its UTD pace (updates = transitions − 300), and the actors'
      // loop latency p99 (26–54 ms) did not go with the outcome. It is the task's thin margin: the
      // base's x bias (0.07) rests the puck 14 mm from the goal against a 10 mm tolerance, so the
      // residual must bring the resting velocity offset |(0.07 + r_x, r_y)| under 0.05 of its ±0.1
      // range. The learned residuals did cancel r_x ≈ −0.07, but also drifted in r_y (up to ±0.05,
      // which costs no success until it crosses the edge): final offsets at the goal ranged
      // 0.005–0.064, and the snapshots near or past 0.05 (0.81 and 0.72 noise-free, last 50 at
      // 0.94–0.98) are the dips. A fixture with more margin (base offset well beyond the
      // tolerance) would make both checks far from their marks; these marks held in all 12.
      recentRise: 0.25,
      noiseFreeRise: 0.1,
      updates: 4000,
    },
    brokerUrl,
    cleanups,
  );
}
