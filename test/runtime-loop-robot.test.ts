// A robot reached through the Robot interface from the control loop's own thread: the MQTT or
// serial link is opened there (robotLinkSource; the serial one over a non-blocking fd, not
// serialport), so states and commands never cross the main thread. The robots are virtual ones living in this thread: MuJoCo behind a real MQTT broker on
// loopback, and behind the C-protocol device emulation on a socat pseudo-terminal.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { robotLinkSpec } from '../src/cli/loop-sources.js';
import { startEmbeddedBroker, type RunningBroker } from '../src/util/mqtt-broker.js';
import { startVirtualRobot, type VirtualRobot } from '../src/hw/virtual-robot.js';
import { BehaviorSubject, Subject } from 'rxjs';
import type { PlainData } from '../src/runtime/loop-plan.js';
import { SharedRobotBridge, sharedRobotSource } from '../src/runtime/shared-robot.js';
import type { LinkStatus, Robot, RobotCommand, RobotState } from '../src/types.js';
import { WorkerControlLoop } from '../src/runtime/loop-host.js';
import type { LoopEvent } from '../src/runtime/loop.js';
import { exportMlpToOnnx, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { builtInTasks } from '../src/sim/registry.js';
import { Rng } from '../src/util/rng.js';

let broker: RunningBroker;
const robots: Record<'mqtt' | 'serial', VirtualRobot> = {} as Record<'mqtt' | 'serial', VirtualRobot>;
const dir = mkdtempSync(join(tmpdir(), 'resrt-loop-robot-'));
const basePath = join(dir, 'base.onnx');

beforeAll(async () => {
  broker = await startEmbeddedBroker({ port: 0 });
  robots.mqtt = await startVirtualRobot(builtInTasks.reach, { transport: { brokerUrl: broker.url } });
  robots.serial = await startVirtualRobot(builtInTasks.reach, { transport: 'serial' });
  writeFileSync(
    basePath,
    exportMlpToOnnx(
      randomMlpSpec({ inputs: [{ name: 'obs', dim: 10 }], hidden: [16], actionDim: 2, rng: new Rng(9) }),
    ),
  );
});

afterAll(async () => {
  await robots.mqtt?.close();
  await robots.serial?.close();
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('control loop thread with a robot link', () => {
  it.each(['mqtt', 'serial'] as const)(
    'reads states and sends commands over the %s link, and sends the safe action last',
    async (transport) => {
      const robot = robots[transport];
      const commands: number[][] = [];
      const command = robot.plant.command.bind(robot.plant);
      robot.plant.command = (action) => {
        commands.push(Array.from(action));
        command(action);
      };
      // Commands stay valid for a second: on a loaded CI box a command may take longer than the
      // config's 60 ms to cross the broker, and the device would rightly drop it as stale.
      const config = { ...robot.config, commandValidMs: 1000 };
      const plan = {
        policy: { base: basePath },
        source: robotLinkSpec({ url: robot.robotUrl, config: structuredClone(config) as PlainData }),
        safety: null,
        safeAction: [0, 0],
        rateHz: robot.config.rateHz,
        // A loaded CI box: a state may take a few periods.
        maxObsAgeMs: 200,
      };
      const loop = await WorkerControlLoop.create(plan);
      // The link lives in the loop thread, not behind the main thread's SharedRobotBridge.
      expect(loop.kind).toMatch(
        transport === 'serial' ? / via serial fd in the loop thread$/ : / via mqtt in the loop thread$/,
      );
      const events: LoopEvent[] = [];
      loop.events$.subscribe((e) => events.push(e));
      const stats = await loop.runFor(1500);
      // Give the last command time to reach the device.
      for (
        let i = 0;
        i < 100 && commands.length > 0 && commands[commands.length - 1].some((v) => v !== 0);
        i++
      )
        await new Promise((r) => setTimeout(r, 10));

      // States came in: the policy ran on them, most ticks.
      expect(stats.latency.policy.count).toBeGreaterThan(0.5 * stats.ticks);
      // 1.5 s at 50 Hz: a loaded machine skips ticks, but never most of them.
      expect(stats.ticks).toBeGreaterThan(10);
      // Commands went out: the device got policy actions (not all zero), then the safe action last.
      expect(commands.filter((c) => c.some((v) => v !== 0)).length).toBeGreaterThan(
        0.5 * stats.latency.policy.count,
      );
      expect(commands[commands.length - 1]).toEqual([0, 0]);
      expect(events[events.length - 1].kind).toBe('stopped');
      robot.plant.command = command;
    },
    60_000,
  );
});

class FakeRobot implements Robot {
  readonly capabilities = {
    name: 'fake',
    actionDim: 2,
    actionNames: ['a', 'b'],
    jointCount: 1,
    sensorCount: 1,
    rateHz: 100,
    safeAction: [0, 0],
    actionLow: [-1, -1],
    actionHigh: [1, 1],
  };
  readonly states = new Subject<RobotState>();
  readonly statuses = new BehaviorSubject<LinkStatus>('connected');
  readonly state$ = this.states.asObservable();
  readonly status$ = this.statuses.asObservable();
  readonly sent: RobotCommand[] = [];
  readonly estops: string[] = [];
  send(command: RobotCommand): boolean {
    this.sent.push(command);
    return true;
  }
  estop(reason: string): void {
    this.estops.push(reason);
  }
  async resetFault(): Promise<void> {}
  async close(): Promise<void> {}
}

describe('SharedRobotBridge', () => {
  it('carries states in and commands out through shared memory, latest value only', async () => {
    const robot = new FakeRobot();
    const bridge = new SharedRobotBridge(robot, { validForMs: 40 });
    const { source } = sharedRobotSource(bridge.sourceSpec.args);
    bridge.start();
    expect(source.latest()).toBeNull();
    const at = performance.now();
    const state = (faulted: boolean, x: number): RobotState => ({
      deviceTimeUs: 0,
      receivedAtMs: at,
      positions: Float32Array.of(x),
      velocities: Float32Array.of(2),
      efforts: Float32Array.of(0),
      sensors: Float32Array.of(3),
      faulted,
    });
    robot.states.next(state(false, 1));
    robot.states.next(state(false, 1.5));
    const sample = source.latest()!;
    expect(Array.from(sample.obs)).toEqual([1.5, 2, 3]);
    // Same thread here, so the same clock: the time survives the absolute-time round trip (to
    // the microsecond: timeOrigin + now is a larger double).
    expect(sample.atMs).toBeCloseTo(at, 3);
    expect(source.latest()).toBe(sample); // unchanged state: no new sample
    expect(source.fault()).toBeNull();

    expect(await source.actuate(Float32Array.of(0.25, -0.5), {} as never)).toEqual({ ok: true });
    for (let i = 0; i < 100 && robot.sent.length === 0; i++) await new Promise((r) => setTimeout(r, 1));
    expect(Array.from(robot.sent[0].action)).toEqual([0.25, -0.5]);
    expect(robot.sent[0].validForMs).toBe(40);

    robot.states.next(state(true, 1));
    expect(source.fault()).toMatch(/latched fault/);
    robot.states.next(state(false, 1));
    robot.statuses.next('lost');
    expect(source.fault()).toMatch(/link is lost/);
    expect((await source.actuate(Float32Array.of(0.1, 0.1), {} as never)).ok).toBe(false);
    robot.statuses.next('connected');

    bridge.estop('test');
    expect(robot.estops).toEqual(['test']);
    await source.close(Float32Array.of(0, 0));
    await bridge.close();
    expect(Array.from(robot.sent[robot.sent.length - 1].action)).toEqual([0, 0]);
    const count = robot.sent.length;
    robot.states.next(state(false, 9));
    expect(Array.from(source.latest()!.obs)).toEqual([1, 2, 3]); // unsubscribed
    expect(robot.sent.length).toBe(count);
  });
});
