// Demonstrations in and out: a LeRobotDataset v3 fixture (written here the way LeRobot lays it
// out, with a camera feature resrt skips and says so) imported through the CLI, checked against a
// task, cloned with `resrt bc` and evaluated on the virtual SO-101-like arm over its servo bus;
// export then re-import gives identical episodes; robomimic HDF5 through h5wasm.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import h5wasm from 'h5wasm/node';
import { parquetReadObjects } from 'hyparquet';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startVirtualServoArm, type VirtualArm } from '../src/hw/servo/virtual/virtual-arm.js';
import { collectDemos } from '../src/sim/collect.js';
import { checkDatasetFitsTask } from '../src/sim/datasets/check.js';
import { readLeRobotDataset, writeLeRobotDataset } from '../src/sim/datasets/lerobot.js';
import { readRobomimic } from '../src/sim/datasets/robomimic.js';
import { readDemos, type DemoSet } from '../src/sim/demos.js';
import { builtInTasks } from '../src/sim/registry.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'resrt-datasets-'));
const task = builtInTasks['so101-pick-place'];
let source: DemoSet;

async function cli(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', 'test/fixtures/cli-entry.ts', ...args], {
    maxBuffer: 1 << 24,
  });
  return stdout;
}

/** A LeRobotDataset v3 as LeRobot writes it (pyarrow list<item> columns, pandas task index). */
function writeFixture(root: string, set: DemoSet): void {
  const h = set.header;
  mkdirSync(join(root, 'meta', 'episodes', 'chunk-000'), { recursive: true });
  mkdirSync(join(root, 'data', 'chunk-000'), { recursive: true });
  const frames = set.episodes.flatMap((ep, e) =>
    ep.actions.map((a, t) => ({
      e,
      t,
      obs: ep.obs[t],
      a,
      r: ep.rewards[t],
      last: t === ep.actions.length - 1,
    })),
  );
  const list = (name: string) => [
    { name, repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
    { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
    { name: 'item', type: 'FLOAT', repetition_type: 'OPTIONAL' },
  ];
  const scalar = (name: string, type: string) => ({ name, type, repetition_type: 'OPTIONAL' });
  const data = parquetWriteBuffer({
    columnData: [
      { name: 'observation.state', data: frames.map((f) => Array.from(f.obs)) },
      { name: 'action', data: frames.map((f) => Array.from(f.a)) },
      { name: 'next.reward', data: frames.map((f) => f.r) },
      { name: 'next.done', data: frames.map((f) => f.last) },
      { name: 'timestamp', data: frames.map((f) => f.t / 25) },
      { name: 'frame_index', data: frames.map((f) => BigInt(f.t)) },
      { name: 'episode_index', data: frames.map((f) => BigInt(f.e)) },
      { name: 'index', data: frames.map((_, i) => BigInt(i)) },
      { name: 'task_index', data: frames.map(() => 0n) },
    ],
    schema: [
      { name: 'schema', num_children: 9 },
      ...list('observation.state'),
      ...list('action'),
      scalar('next.reward', 'FLOAT'),
      scalar('next.done', 'BOOLEAN'),
      scalar('timestamp', 'FLOAT'),
      scalar('frame_index', 'INT64'),
      scalar('episode_index', 'INT64'),
      scalar('index', 'INT64'),
      scalar('task_index', 'INT64'),
    ] as never,
  });
  writeFileSync(join(root, 'data', 'chunk-000', 'file-000.parquet'), new Uint8Array(data));
  const tasks = parquetWriteBuffer({
    columnData: [
      { name: 'task_index', data: [0n] },
      { name: 'task', data: ['Pick up the cube and place it on the green target.'] },
    ],
    schema: [
      { name: 'schema', num_children: 2 },
      { name: 'task_index', type: 'INT64', repetition_type: 'OPTIONAL' },
      { name: 'task', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
    ] as never,
  });
  writeFileSync(join(root, 'meta', 'tasks.parquet'), new Uint8Array(tasks));
  const f32 = (n: number, names: string[]) => ({ dtype: 'float32', shape: [n], names });
  writeFileSync(
    join(root, 'meta', 'info.json'),
    JSON.stringify({
      codebase_version: 'v3.0',
      robot_type: 'so101_follower',
      total_episodes: set.episodes.length,
      total_frames: frames.length,
      total_tasks: 1,
      chunks_size: 1000,
      data_files_size_in_mb: 100,
      video_files_size_in_mb: 500,
      fps: 25,
      splits: { train: `0:${set.episodes.length}` },
      data_path: 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet',
      video_path: 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4',
      features: {
        'observation.state': f32(h.obsDim, h.obsNames),
        action: f32(h.actionDim, h.actionNames),
        'observation.images.front': {
          dtype: 'video',
          shape: [480, 640, 3],
          names: ['height', 'width', 'channels'],
        },
        'next.reward': { dtype: 'float32', shape: [1], names: null },
        'next.done': { dtype: 'bool', shape: [1], names: null },
        timestamp: { dtype: 'float32', shape: [1], names: null },
        frame_index: { dtype: 'int64', shape: [1], names: null },
        episode_index: { dtype: 'int64', shape: [1], names: null },
        index: { dtype: 'int64', shape: [1], names: null },
        task_index: { dtype: 'int64', shape: [1], names: null },
      },
    }),
  );
}

beforeAll(async () => {
  const demos = join(dir, 'expert.jsonl');
  await collectDemos({ task, episodes: 16, out: demos, seed: 0, noise: task.demoNoise! });
  source = readDemos(demos);
  writeFixture(join(dir, 'fixture'), source);
}, 120_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('LeRobotDataset v3', () => {
  let arm: VirtualArm | null = null;
  afterAll(async () => arm?.close());

  it('imports a fixture (skipping its camera, said aloud), clones it with resrt bc, and evaluates the base on the virtual arm over the bus', async () => {
    const out = await cli(
      'import',
      'lerobot',
      join(dir, 'fixture'),
      '--out',
      join(dir, 'imported.jsonl'),
      '--task',
      'so101-pick-place',
    );
    expect(out).toMatch(/skipped feature observation\.images\.front \(video\)/);
    expect(out).toMatch(/imported 16 episodes/);
    const imported = readDemos(join(dir, 'imported.jsonl'));
    expect(imported.header.task).toBe('so101-pick-place');
    expect(imported.header.obsNames).toEqual(source.header.obsNames);
    expect(imported.episodes.map((e) => e.success)).toEqual(source.episodes.map((e) => e.success));
    for (const [k, ep] of imported.episodes.entries()) {
      expect(ep.actions).toEqual(source.episodes[k].actions);
      expect(ep.obs.slice(0, -1)).toEqual(source.episodes[k].obs.slice(0, -1));
    }
    await cli(
      'bc',
      '--demos',
      join(dir, 'imported.jsonl'),
      '--out',
      join(dir, 'base.onnx'),
      '--epochs',
      '6',
      '--hidden',
      '64,64',
    );
    arm = await startVirtualServoArm({ protocol: 'feetech', seed: 11 });
    const config = arm.writeConfig(dir);
    // Short episodes: the test shows the base runs on the arm over the bus, not how well.
    const json = JSON.parse(readFileSync(config, 'utf8')) as { episode: { maxSteps: number } };
    json.episode.maxSteps = 60;
    writeFileSync(config, JSON.stringify(json));
    const evalOut = await cli(
      'eval',
      '--task',
      'so101-pick-place',
      '--robot',
      arm.robotUrl,
      '--robot-config',
      config,
      '--virtual',
      '--base',
      join(dir, 'base.onnx'),
      '--episodes',
      '2',
      '--json',
    );
    const result = JSON.parse(evalOut) as { episodes: number; policy: string; robot: string };
    expect(result).toMatchObject({ episodes: 2, policy: 'base', robot: arm.robotUrl });
  }, 240_000);

  it('refuses a dataset whose features do not fit the task, and says what to do', async () => {
    const { set } = await readLeRobotDataset(join(dir, 'fixture'));
    const reach = { name: 'reach', obsNames: ['x', 'y', 'gx', 'gy'], actionNames: ['dx', 'dy'] };
    expect(() => checkDatasetFitsTask(set.header, reach)).toThrow(
      /does not fit task reach[\s\S]*observations have 24 values[\s\S]*fix: import it for the task it was recorded on/,
    );
    const renamed = {
      name: 'so101',
      obsNames: set.header.obsNames,
      actionNames: set.header.actionNames.map((n) => `${n}_goal`),
    };
    expect(checkDatasetFitsTask(set.header, renamed)).toEqual(set.header.actionNames);
  });

  it('exports episodes in the v3 layout and re-imports them identically', async () => {
    const out = join(dir, 'exported');
    const info = writeLeRobotDataset(out, source, {
      task: 'Pick up the cube and place it on the green target.',
      robotType: 'so101',
    });
    expect(info).toMatchObject({ codebase_version: 'v3.0', total_episodes: 16, fps: 25, total_tasks: 1 });
    for (const f of [
      'meta/info.json',
      'meta/stats.json',
      'meta/tasks.parquet',
      'meta/episodes/chunk-000/file-000.parquet',
      'data/chunk-000/file-000.parquet',
    ]) {
      expect(existsSync(join(out, f))).toBe(true);
    }
    const stats = JSON.parse(readFileSync(join(out, 'meta/stats.json'), 'utf8')) as Record<
      string,
      Record<string, number[]>
    >;
    expect(stats.action.mean).toHaveLength(6);
    const buf = readFileSync(join(out, 'meta/episodes/chunk-000/file-000.parquet'));
    const eps = (await parquetReadObjects({
      file: buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength),
    })) as Record<string, unknown>[];
    expect(eps[1]).toMatchObject({
      episode_index: 1n,
      'data/chunk_index': 0n,
      dataset_from_index: BigInt(source.episodes[0].actions.length),
    });
    const back = await readLeRobotDataset(out);
    expect(back.tasks).toEqual(['Pick up the cube and place it on the green target.']);
    expect(back.set.header.actionNames).toEqual(source.header.actionNames);
    expect(back.skippedFeatures).toEqual([]);
    for (const [k, ep] of back.set.episodes.entries()) {
      const want = source.episodes[k];
      expect({ ...ep, episode: 0, seed: 0 }).toEqual({ ...want, episode: 0, seed: 0 });
    }
  }, 60_000);
});

describe('robomimic HDF5', () => {
  it('concatenates low-dimensional observation keys, takes the last observation from next_obs, and skips images aloud', async () => {
    await h5wasm.ready;
    const path = join(dir, 'lift.hdf5');
    const f = new h5wasm.File(path, 'w');
    f.create_group('data');
    const data = f.get('data') as unknown as {
      create_attribute(n: string, v: string): void;
      create_group(n: string): void;
    };
    data.create_attribute('env_args', JSON.stringify({ env_name: 'Lift' }));
    const T = 4;
    for (const d of [0, 1]) {
      f.create_group(`data/demo_${d}`);
      f.create_group(`data/demo_${d}/obs`);
      f.create_group(`data/demo_${d}/next_obs`);
      const g = (p: string) =>
        f.get(p) as unknown as {
          create_dataset(o: {
            name: string;
            data: Float32Array | Float64Array | Uint8Array;
            shape: number[];
          }): void;
        };
      g(`data/demo_${d}`).create_dataset({
        name: 'actions',
        data: Float32Array.from({ length: T * 2 }, (_, i) => d + i / 10),
        shape: [T, 2],
      });
      g(`data/demo_${d}`).create_dataset({
        name: 'rewards',
        data: Float64Array.from({ length: T }, (_, i) => (d === 0 && i === T - 1 ? 1 : 0)),
        shape: [T],
      });
      g(`data/demo_${d}`).create_dataset({
        name: 'dones',
        data: Uint8Array.from({ length: T }, (_, i) => (d === 0 && i === T - 1 ? 1 : 0)),
        shape: [T],
      });
      for (const where of ['obs', 'next_obs']) {
        const shift = where === 'next_obs' ? 1 : 0;
        g(`data/demo_${d}/${where}`).create_dataset({
          name: 'object',
          data: Float64Array.from({ length: T * 3 }, (_, i) => 100 * d + Math.floor(i / 3) + shift),
          shape: [T, 3],
        });
        g(`data/demo_${d}/${where}`).create_dataset({
          name: 'robot0_eef_pos',
          data: Float64Array.from({ length: T }, (_, i) => -i - shift),
          shape: [T, 1],
        });
        g(`data/demo_${d}/${where}`).create_dataset({
          name: 'agentview_image',
          data: new Uint8Array(T * 4 * 4 * 3),
          shape: [T, 4, 4, 3],
        });
      }
    }
    f.close();
    const r = await readRobomimic(path, { controlDt: 0.05 });
    expect(r.skippedKeys.map((k) => k.name)).toEqual(['agentview_image']);
    expect(r.envName).toBe('Lift');
    const set = r.set;
    expect(set.header).toMatchObject({ task: 'Lift', obsDim: 4, actionDim: 2, controlDt: 0.05 });
    expect(set.header.obsNames).toEqual(['object[0]', 'object[1]', 'object[2]', 'robot0_eef_pos']);
    const ep = set.episodes[0];
    expect(Array.from(ep.obs[1])).toEqual([1, 1, 1, -1]);
    expect(Array.from(ep.obs[T])).toEqual([4, 4, 4, -4]);
    expect(ep.success).toBe(true);
    expect(set.episodes[1]).toMatchObject({ success: false, truncated: true });
  }, 60_000);
});
