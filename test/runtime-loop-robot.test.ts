// A robot reached through the Robot interface from the control loop's own thread: the MQTT link is
// opened there (robotLinkSource), so states and commands never cross the main thread. The robot is
// a virtual one (MuJoCo behind a real MQTT broker on loopback) living in this thread.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { robotLinkSpec } from '../src/cli/loop-sources.js';
import { startEmbeddedBroker, type RunningBroker } from '../src/hw/mqtt/broker.js';
import { startVirtualRobot, type VirtualRobot } from '../src/hw/virtual-robot.js';
import type { PlainData } from '../src/runtime/loop-plan.js';
import { WorkerControlLoop } from '../src/runtime/loop-host.js';
import type { LoopEvent } from '../src/runtime/loop.js';
import { exportMlpToOnnx, randomMlpSpec } from '../src/runtime/onnx-export.js';
import { builtInTasks } from '../src/sim/registry.js';
import { Rng } from '../src/util/rng.js';

let broker: RunningBroker;
let robot: VirtualRobot;
const dir = mkdtempSync(join(tmpdir(), 'resrt-loop-robot-'));
const basePath = join(dir, 'base.onnx');

beforeAll(async () => {
  broker = await startEmbeddedBroker({ port: 0 });
  robot = await startVirtualRobot(builtInTasks.reach, { transport: { brokerUrl: broker.url } });
  writeFileSync(
    basePath,
    exportMlpToOnnx(
      randomMlpSpec({ inputs: [{ name: 'obs', dim: 10 }], hidden: [16], actionDim: 2, rng: new Rng(9) }),
    ),
  );
});

afterAll(async () => {
  await robot?.close();
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('control loop thread with a robot link', () => {
  it('reads states and sends commands over the link it opened, and sends the safe action last', async () => {
    const commands: number[][] = [];
    const command = robot.plant.command.bind(robot.plant);
    robot.plant.command = (action) => {
      commands.push(Array.from(action));
      command(action);
    };
    const loop = await WorkerControlLoop.create({
      policy: { base: basePath },
      source: robotLinkSpec({ url: robot.robotUrl, config: structuredClone(robot.config) as PlainData }),
      safety: null,
      safeAction: [0, 0],
      rateHz: robot.config.rateHz,
      // MQTT on a loaded CI box: a state may take a few periods.
      maxObsAgeMs: 200,
    });
    expect(loop.kind).toMatch(/^robot:/);
    const events: LoopEvent[] = [];
    loop.events$.subscribe((e) => events.push(e));
    const stats = await loop.runFor(1500);
    // Give the last command time to cross the broker.
    for (let i = 0; i < 100 && commands.length > 0 && commands[commands.length - 1].some((v) => v !== 0); i++)
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
  }, 60_000);
});
