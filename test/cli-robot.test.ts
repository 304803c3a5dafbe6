// eval, run and train on a robot exactly as in simulation: a virtual robot (MuJoCo behind a real
// MQTT broker) driven through the CLI's own entry point.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startEmbeddedBroker, type RunningBroker } from '../src/util/mqtt-broker.js';
import { startVirtualRobot, type VirtualRobot } from '../src/hw/virtual-robot.js';
import { saveBcPolicy, trainBc } from '../src/sim/bc.js';
import { collectDemos } from '../src/sim/collect.js';
import { readDemos } from '../src/sim/demos.js';
import { humanLikeExpert } from '../src/sim/expert.js';
import { builtInTasks } from '../src/sim/registry.js';
import { tempDir } from './temp-dirs.js';
import { RESRT_CLI } from './fixtures/cli.js';

const run = promisify(execFile);
let broker: RunningBroker;
let robot: VirtualRobot;
const dir = tempDir('resrt-cli-robot-');
const configPath = join(dir, 'robot.json');
const basePath = join(dir, 'base.onnx');

beforeAll(async () => {
  broker = await startEmbeddedBroker({ port: 0 });
  robot = await startVirtualRobot(builtInTasks.reach, { transport: { brokerUrl: broker.url } });
  writeFileSync(configPath, JSON.stringify(robot.config));
  const demos = join(dir, 'demos.jsonl');
  await collectDemos({ task: builtInTasks.reach, episodes: 20, out: demos, noise: humanLikeExpert });
  saveBcPolicy(await trainBc(readDemos(demos), { epochs: 5, hidden: [32, 32] }), basePath);
}, 120_000);

afterAll(async () => {
  await robot?.close();
  await broker?.close();
});

// The CLI runs in its own process, as a user runs it; the virtual robot lives in this one.
async function cli(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [...RESRT_CLI, ...args], {
    maxBuffer: 1 << 24,
  });
  return stdout;
}

describe('resrt on a (virtual) robot', () => {
  it('eval --robot runs episodes through the bridge', async () => {
    const out = await cli(
      'eval',
      '--task',
      'reach',
      '--robot',
      robot.robotUrl,
      '--robot-config',
      configPath,
      '--virtual',
      '--base',
      basePath,
      '--episodes',
      '2',
      '--json',
    );
    const r = JSON.parse(out) as { episodes: number; robot: string };
    expect(r.episodes).toBe(2);
    expect(r.robot).toBe(robot.robotUrl);
  }, 60_000);

  it('train --robot learns from robot episodes and writes a residual', async () => {
    const outDir = join(dir, 'run');
    await cli(
      'train',
      '--robot',
      robot.robotUrl,
      '--robot-config',
      configPath,
      '--virtual',
      '--base',
      basePath,
      '--steps',
      '120',
      '--out',
      outDir,
      '--eval-every',
      '0',
      '--eval-episodes',
      '1',
      '--checkpoint-every',
      '0',
      '--set',
      'learningStarts=40',
      '--set',
      'criticWarmupSteps=10',
      '--set',
      'batchSize=32',
      '--set',
      'criticInput=action', // a bare word is a string value
    );
    expect(existsSync(join(outDir, 'residual.onnx'))).toBe(true);
    const summary = JSON.parse(readFileSync(join(outDir, 'summary.json'), 'utf8')) as {
      envSteps: number;
      updates: number;
      config: { criticInput: string; batchSize: number };
    };
    expect(summary.config).toMatchObject({ criticInput: 'action', batchSize: 32 });
    expect(summary.envSteps).toBeGreaterThanOrEqual(120);
    expect(summary.updates).toBeGreaterThan(0);
  }, 120_000);
});
