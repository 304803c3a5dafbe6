// The control loop in its own worker thread (loop-host.ts / loop-worker.ts): the same loop as in
// this thread, commands that reach it, and crashes that end in the safe action plus an event.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { WorkerControlLoop } from '../src/runtime/loop-host.js';
import { buildLoop, type LoopPlan } from '../src/runtime/loop-plan.js';
import type { LoopEvent } from '../src/runtime/loop.js';
import { exportMlpToOnnx, MetaKey, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { OnnxPolicy } from '../src/runtime/onnx-policy.js';
import {
  currentThreadId,
  REALTIME_PRIORITY,
  setThreadPriority,
  threadScheduling,
} from '../src/runtime/thread-priority.js';
import type { Transition } from '../src/types.js';
import { Rng } from '../src/util/rng.js';

const dir = mkdtempSync(join(tmpdir(), 'resrt-loop-worker-'));
const fixtures = new URL('./fixtures/loop-sources.ts', import.meta.url).href;
const rng = new Rng(11);
const basePath = join(dir, 'base.onnx');
const residualPath = (version: number): string => join(dir, `residual-v${version}.onnx`);
writeFileSync(
  basePath,
  exportMlpToOnnx(randomMlpSpec({ inputs: [{ name: 'obs', dim: 4 }], hidden: [16, 16], actionDim: 2, rng })),
);
for (const version of [1, 2]) {
  const spec = randomMlpSpec({
    inputs: [
      { name: 'obs', dim: 4 },
      { name: 'base_action', dim: 2 },
    ],
    hidden: [16, 16],
    actionDim: 2,
    tanhScale: 0.3,
    rng,
    metadata: { [MetaKey.kind]: 'residual', [MetaKey.version]: String(version) },
  });
  writeFileSync(residualPath(version), exportMlpToOnnx(spec));
}

const widePath = join(dir, 'residual-wide.onnx');
writeFileSync(
  widePath,
  exportMlpToOnnx(
    randomMlpSpec({
      inputs: [
        { name: 'obs', dim: 5 },
        { name: 'base_action', dim: 2 },
      ],
      hidden: [8],
      actionDim: 2,
      rng,
      metadata: { [MetaKey.kind]: 'residual' },
    }),
  ),
);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const plan = (source: LoopPlan['source'], extra: Partial<LoopPlan> = {}): LoopPlan => ({
  policy: { base: basePath, residual: residualPath(1) },
  source,
  safety: null,
  rateHz: 100,
  safeAction: [0.05, -0.05],
  // Observations never go stale here: a stall of the loaded test machine must not turn a tick into
  // a safe action (staleness has its own tests in runtime-loop.test.ts).
  maxObsAgeMs: 60_000,
  ...extra,
});
const pointMass = { module: fixtures, export: 'pointMassSource', args: { maxSteps: 40 } };

function collect<T>(source: { subscribe(fn: (v: T) => void): unknown }): T[] {
  const out: T[] = [];
  source.subscribe((v: T) => out.push(v));
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until `n` more items arrived, then returns those that arrive after a settling pause. */
async function after<T>(list: T[], settleMs = 100): Promise<number> {
  await sleep(settleMs);
  return list.length;
}

describe('control loop in a worker thread', () => {
  it('gives the same transitions as the same plan run in this thread', async () => {
    const same = plan(pointMass);
    const inThread = await buildLoop(same);
    expect(inThread.fusion).toBe('fused');
    const local = collect<Transition>(inThread.loop.transitions$);
    await inThread.loop.runFor(700);
    await inThread.release();

    const hosted = await WorkerControlLoop.create(same);
    expect(hosted.fusion).toBe('fused');
    expect(hosted.sessionMode).toBe('native');
    const remote = collect<Transition>(hosted.transitions$);
    const stats = await hosted.runFor(700);

    expect(stats.ticks).toBeGreaterThan(10);
    const n = Math.min(local.length, remote.length);
    // 100 Hz for 0.7 s: a loaded machine may skip ticks, but both ran at least two episodes' worth.
    expect(n).toBeGreaterThan(20);
    expect(remote.length).toBe(stats.ticks);
    for (let i = 0; i < n; i++) {
      const [a, b] = [local[i], remote[i]];
      expect(Array.from(b.obs)).toEqual(Array.from(a.obs));
      expect(Array.from(b.baseAction)).toEqual(Array.from(a.baseAction));
      expect(Array.from(b.residual)).toEqual(Array.from(a.residual));
      expect(Array.from(b.action)).toEqual(Array.from(a.action));
      expect([b.reward, b.episode, b.step, b.truncated, b.policyVersion]).toEqual([
        a.reward,
        a.episode,
        a.step,
        a.truncated,
        a.policyVersion,
      ]);
    }
    expect(remote.some((t) => t.truncated)).toBe(true);
    expect(remote.every((t) => t.policyVersion === 1 && t.residual.some((v) => v !== 0))).toBe(true);
  });

  it('new residual weights, the scale, e-stop and stop reach the loop thread', async () => {
    const loop = await WorkerControlLoop.create(
      plan(pointMass, { policy: { base: basePath, residual: residualPath(1) } }),
    );
    const transitions = collect<Transition>(loop.transitions$);
    const events = collect<LoopEvent>(loop.events$);
    let completed = false;
    loop.transitions$.subscribe({ complete: () => (completed = true) });
    await loop.start();
    await sleep(150);

    // A residual for another observation is refused with the reason; the loop keeps version 1.
    await expect(loop.setResidual(widePath)).rejects.toThrow(
      /takes 5 observation values but the task provides 4/,
    );
    expect(transitions.every((t) => t.policyVersion === 1)).toBe(true);

    // A new residual version: planned and verified here, swapped in there.
    expect(await loop.setResidual(residualPath(2))).toBe(2);
    const fromV2 = await after(transitions);
    await sleep(150);
    const v2 = transitions.slice(fromV2);
    expect(v2.length).toBeGreaterThan(3);
    const reference = await OnnxPolicy.load(residualPath(2), { residual: true });
    for (const t of v2) {
      expect(t.policyVersion).toBe(2);
      expect(Array.from(t.residual)).toEqual(Array.from(await reference.residual(t.obs, t.baseAction)));
      for (let i = 0; i < 2; i++)
        expect(t.action[i]).toBe(Math.fround(Math.max(-1, Math.min(1, t.baseAction[i] + t.residual[i]))));
    }
    await reference.close();

    // Scale 0: the base alone (clipped), bit for bit.
    loop.setScale(0);
    const fromScale0 = await after(transitions);
    await sleep(150);
    const scaled = transitions.slice(fromScale0);
    expect(scaled.length).toBeGreaterThan(3);
    for (const t of scaled)
      expect(Array.from(t.action)).toEqual(
        Array.from(t.baseAction, (v) => Math.fround(Math.max(-1, Math.min(1, v)))),
      );

    // E-stop: every later tick sends the safe action; the policy is not asked.
    loop.estop('test', 'operator pressed the button');
    const fromEstop = await after(transitions);
    await sleep(150);
    const stopped = transitions.slice(fromEstop);
    expect(stopped.length).toBeGreaterThan(3);
    for (const t of stopped) expect(Array.from(t.action)).toEqual([0.05, -0.05].map(Math.fround));
    expect(events.find((e) => e.kind === 'estop')?.detail).toBe('test: operator pressed the button');

    const stats = await loop.stop();
    expect(stats.safeActions).toBeGreaterThanOrEqual(stopped.length);
    expect(events[events.length - 1].kind).toBe('stopped');
    expect(completed).toBe(true);
    await expect(loop.setResidual(residualPath(1))).rejects.toThrow(/has stopped/);
  });

  it('an error escaping every loop stage ends in the safe action and a loop_crash event, not an unhandled exception', async () => {
    const loop = await WorkerControlLoop.create(
      plan({ module: fixtures, export: 'buggySource', args: { bugAfter: 15, mode: 'throw' } }),
    );
    const sent = collect<Transition>(loop.transitions$);
    const events = collect<LoopEvent>(loop.events$);
    await loop.start();
    // The loop stops itself; stop() returns its final stats.
    for (let i = 0; i < 300 && !events.some((e) => e.kind === 'stopped'); i++) await sleep(10);
    const stats = await loop.stop();
    const crash = events.find((e) => e.kind === 'loop_crash');
    expect(crash?.detail).toMatch(/sensor driver callback bug; stopping with the safe action/);
    expect(stats.events.loop_crash).toBe(1);
    // The last command the device got is the safe action, after the crash.
    const last = sent[sent.length - 1];
    expect(last.step).toBe(-1);
    expect(Array.from(last.action)).toEqual([0.05, -0.05].map(Math.fround));
    expect(sent.filter((t) => (t.step ?? -1) >= 0).length).toBeGreaterThanOrEqual(15);
  });

  it('a loop thread that dies outright is reported as a loop_crash and stop() still resolves', async () => {
    const loop = await WorkerControlLoop.create(
      plan({ module: fixtures, export: 'buggySource', args: { bugAfter: 5, mode: 'exit' } }),
    );
    const events = collect<LoopEvent>(loop.events$);
    await loop.start();
    for (let i = 0; i < 300 && !events.some((e) => e.kind === 'loop_crash'); i++) await sleep(10);
    const stats = await loop.stop();
    expect(events.find((e) => e.kind === 'loop_crash')?.detail).toMatch(/exited \(code 3\).*validForMs/);
    expect(stats.rateHz).toBe(100);
    expect(loop.running).toBe(false);
  });

  it('realtime priority: the loop thread runs SCHED_FIFO where allowed, or says why not and how to allow it', async () => {
    const loop = await WorkerControlLoop.create(plan(pointMass, { priority: 'realtime' }));
    const transitions = collect<Transition>(loop.transitions$);
    await loop.start();
    await sleep(300);
    // What the loop thread reports is what the kernel says about it.
    const { tid, applied, detail } = loop.priority;
    expect(tid).toBeGreaterThan(0);
    expect(tid).not.toBe(currentThreadId());
    const kernel = threadScheduling(tid);
    if (applied === 'realtime') {
      expect(kernel).toEqual({ policy: 'SCHED_FIFO', priority: REALTIME_PRIORITY });
      expect(detail).toBe(`SCHED_FIFO ${REALTIME_PRIORITY}`);
    } else {
      // Refused (no CAP_SYS_NICE here): the reason comes with the ways to allow it.
      expect(kernel.policy).toBe('SCHED_OTHER');
      expect(detail).toMatch(/refused: .*setcap cap_sys_nice\+ep.*--priority normal/);
    }
    // Real-time or not, the thread sleeps between ticks and ticks on (Atomics.wait when real-time).
    const stats = await loop.stop();
    expect(stats.ticks).toBeGreaterThan(5);
    expect(transitions.length).toBe(stats.ticks);
    // This thread was never touched.
    expect(threadScheduling(currentThreadId()).policy).toBe('SCHED_OTHER');
  });

  it('a refused or unavailable real-time request leaves the thread as it was, with the fix', () => {
    const me = currentThreadId();
    const before = threadScheduling(me);
    const missing = setThreadPriority('realtime', { chrt: join(dir, 'no-such-chrt') });
    expect(missing.applied).toBe('normal');
    expect(missing.detail).toMatch(/no-such-chrt was not found \(it comes with util-linux/);
    expect(missing.detail).toMatch(/--priority normal/);
    expect(setThreadPriority('normal')).toEqual({
      applied: 'normal',
      detail: 'normal scheduling (as asked)',
      tid: me,
    });
    expect(threadScheduling(me)).toEqual(before);
  });

  it('a plan that cannot be built rejects with the cause and a fix', async () => {
    await expect(
      WorkerControlLoop.create(plan({ module: fixtures, export: 'noSuchFactory' })),
    ).rejects.toThrow(/has no function export 'noSuchFactory'/);
    // The same builder runs in both threads; this thread shows the policy errors without a worker.
    await expect(
      buildLoop({ ...plan(pointMass), policy: { base: join(dir, 'missing.onnx') } }),
    ).rejects.toThrow(/missing\.onnx does not exist/);
  });
});
