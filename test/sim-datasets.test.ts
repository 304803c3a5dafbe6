// Demonstrations in and out: a LeRobotDataset v3 fixture (written here the way LeRobot lays it
// out, with an AV1 camera video whose frames say which step they belong to) imported through the
// CLI, checked against a task, cloned with `resrt bc` and evaluated on the virtual SO-101-like arm
// over its servo bus; export then re-import gives identical episodes, camera frames through real
// ffmpeg AV1; robomimic HDF5 through h5wasm.
import { execFile, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
import { loadEpisodeFrames, readDemos, type DemoSet } from '../src/sim/demos.js';
import { builtInTasks } from '../src/sim/registry.js';
import { RESRT_CLI } from './fixtures/cli.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'resrt-datasets-'));
const task = builtInTasks['so101-pick-place'];
let source: DemoSet;

async function cli(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [...RESRT_CLI, ...args], {
    maxBuffer: 1 << 24,
  });
  return stdout;
}

/** The fixture's camera: a flat colour that tells the episode and the step (red = 8·step, green = 16·episode). */
const CAM = 64;
const colourOf = (e: number, t: number): [number, number, number] => [(8 * t) % 256, (16 * e) % 256, 128];

/**
 * A LeRobotDataset v3 as LeRobot writes it (pyarrow list<item> columns, pandas task index, one AV1
 * video per camera holding every episode's frames one after another, one frame per row).
 */
function writeFixture(root: string, set: DemoSet): void {
  const h = set.header;
  mkdirSync(join(root, 'meta', 'episodes', 'chunk-000'), { recursive: true });
  mkdirSync(join(root, 'data', 'chunk-000'), { recursive: true });
  const videoDir = join(root, 'videos', 'observation.images.front', 'chunk-000');
  mkdirSync(videoDir, { recursive: true });
  const raw = Buffer.concat(
    set.episodes.flatMap((ep, e) =>
      ep.actions.map((_, t) => {
        const px = Buffer.alloc(CAM * CAM * 3);
        const c = colourOf(e, t);
        for (let i = 0; i < CAM * CAM; i++) px.set(c, 3 * i);
        return px;
      }),
    ),
  );
  const enc = spawnSync(
    'ffmpeg',
    [
      ...['-hide_banner', '-loglevel', 'error', '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${CAM}x${CAM}`],
      ...['-r', '25', '-i', 'pipe:0', '-c:v', 'libsvtav1', '-pix_fmt', 'yuv420p', '-g', '2', '-crf', '30'],
      join(videoDir, 'file-000.mp4'),
    ],
    { input: raw },
  );
  if (enc.status !== 0) throw new Error(`ffmpeg: ${enc.stderr.toString()}`);
  let at = 0;
  const episodeRows = set.episodes.map((ep, e) => {
    const from = at;
    at += ep.actions.length;
    return {
      e,
      length: ep.actions.length,
      from: from / 25,
      to: at / 25,
      fromIndex: from,
    };
  });
  const meta = parquetWriteBuffer({
    columnData: [
      { name: 'episode_index', data: episodeRows.map((r) => BigInt(r.e)) },
      { name: 'length', data: episodeRows.map((r) => BigInt(r.length)) },
      { name: 'dataset_from_index', data: episodeRows.map((r) => BigInt(r.fromIndex)) },
      { name: 'videos/observation.images.front/chunk_index', data: episodeRows.map(() => 0n) },
      { name: 'videos/observation.images.front/file_index', data: episodeRows.map(() => 0n) },
      { name: 'videos/observation.images.front/from_timestamp', data: episodeRows.map((r) => r.from) },
      { name: 'videos/observation.images.front/to_timestamp', data: episodeRows.map((r) => r.to) },
    ],
  });
  writeFileSync(join(root, 'meta', 'episodes', 'chunk-000', 'file-000.parquet'), new Uint8Array(meta));
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
          shape: [CAM, CAM, 3],
          names: ['height', 'width', 'channels'],
          info: {
            'video.fps': 25,
            'video.codec': 'av1',
            'video.pix_fmt': 'yuv420p',
            'video.is_depth_map': false,
          },
        },
        'observation.images.wrist_depth': {
          dtype: 'video',
          shape: [CAM, CAM, 1],
          names: ['height', 'width', 'channels'],
          info: { 'video.fps': 25, 'video.is_depth_map': true },
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

  it('imports a fixture with its camera frames (skipping a depth video, said aloud), clones it with resrt bc, and evaluates the base on the virtual arm over the bus', async () => {
    const out = await cli(
      'import',
      'lerobot',
      join(dir, 'fixture'),
      '--out',
      join(dir, 'imported.jsonl'),
      '--task',
      'so101-pick-place',
    );
    expect(out).toMatch(
      /skipped feature observation\.images\.wrist_depth \(video\): depth videos are not imported/,
    );
    expect(out).toMatch(/imported 16 episodes .*cameras front 64x64/);
    const imported = readDemos(join(dir, 'imported.jsonl'));
    // Each row's frame is the one at its timestamp; the observation after the last action repeats it.
    expect(imported.header.cameras).toEqual([
      { name: 'front', width: CAM, height: CAM, channels: 3, depth: false },
    ]);
    for (const k of [0, 7, 15]) {
      const ep = imported.episodes[k];
      const frames = loadEpisodeFrames(imported, ep);
      expect(frames).toHaveLength(ep.obs.length);
      frames.forEach((f, t) => {
        const want = colourOf(k, Math.min(t, ep.actions.length - 1));
        const px = f.front.data.subarray(3 * (CAM * 32 + 32), 3 * (CAM * 32 + 32) + 3);
        for (let c = 0; c < 3; c++) expect(Math.abs(px[c] - want[c])).toBeLessThanOrEqual(4);
      });
    }
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
      // The virtual arm has no camera: a state-only clone (bc would read the imported frames by default).
      '--cameras',
      'none',
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
    // A download without its videos: named, with the fix; --no-videos imports the rest.
    const partial = join(dir, 'fixture-no-videos');
    cpSync(join(dir, 'fixture'), partial, { recursive: true });
    rmSync(join(partial, 'videos'), { recursive: true });
    await expect(readLeRobotDataset(partial)).rejects.toThrow(
      /videos\/observation\.images\.front\/chunk-000\/file-000\.mp4 is missing[\s\S]*videos included/,
    );
    const stateOnly = await readLeRobotDataset(partial, { videos: false });
    expect(stateOnly.cameras).toEqual([]);
    expect(stateOnly.skippedFeatures.map((f) => f.name)).toContain('observation.images.front');
  });

  it('exports episodes in the v3 layout and re-imports them identically', async () => {
    const out = join(dir, 'exported');
    const { info } = await writeLeRobotDataset(out, source, {
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

  it('exports camera demonstrations as AV1 videos LeRobot can index, and re-imports the frames', async () => {
    const demos = join(dir, 'push-cam.jsonl');
    await collectDemos({
      task: builtInTasks['push-cam'],
      episodes: 2,
      out: demos,
      seed: 3,
      noise: builtInTasks['push-cam'].demoNoise!,
    });
    const set = readDemos(demos);
    const out = join(dir, 'push-cam-lerobot');
    const said = await cli('export', 'lerobot', '--demos', demos, '--out', out);
    expect(said).toMatch(/video observation\.images\.top: libsvtav1/);
    const info = JSON.parse(readFileSync(join(out, 'meta', 'info.json'), 'utf8')) as {
      video_path: string;
      features: Record<
        string,
        { dtype: string; shape: number[]; names?: unknown; info?: Record<string, unknown> }
      >;
    };
    expect(info.video_path).toBe('videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4');
    expect(info.features['observation.images.top']).toMatchObject({
      dtype: 'video',
      shape: [84, 84, 3],
      info: { 'video.codec': 'av1', 'video.pix_fmt': 'yuv420p', 'video.fps': 25 },
    });
    const mp4 = join(out, 'videos', 'observation.images.top', 'chunk-000', 'file-000.mp4');
    const probe = spawnSync('ffprobe', [
      '-v',
      'error',
      '-show_entries',
      'stream=codec_name,nb_frames',
      '-of',
      'csv=p=0',
      mp4,
    ]);
    const frames = set.episodes.reduce((n, ep) => n + ep.obs.length, 0);
    expect(probe.stdout.toString().trim()).toBe(`av1,${frames}`);
    // Where LeRobot looks for each episode: from_timestamp + a row's timestamp.
    const buf = readFileSync(join(out, 'meta/episodes/chunk-000/file-000.parquet'));
    const eps = (await parquetReadObjects({
      file: buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength),
    })) as Record<string, unknown>[];
    expect(eps[1]['videos/observation.images.top/from_timestamp']).toBeCloseTo(
      set.episodes[0].obs.length / 25,
      9,
    );
    const stats = JSON.parse(readFileSync(join(out, 'meta', 'stats.json'), 'utf8')) as Record<
      string,
      Record<string, unknown>
    >;
    expect((stats['observation.images.top'].mean as number[][][]).map((c) => c[0].length)).toEqual([1, 1, 1]);

    const said2 = await cli(
      'import',
      'lerobot',
      out,
      '--out',
      join(dir, 'push-cam-back.jsonl'),
      '--task',
      'push-cam',
    );
    expect(said2).toMatch(/cameras top 84x84/);
    expect(said2).not.toMatch(/note: .*camera/);
    const back = readDemos(join(dir, 'push-cam-back.jsonl'));
    // push-cam's goal, which only the camera shows, travels as observation.environment_state.
    const envNames = set.header.environmentStateNames!;
    expect(envNames).toEqual(expect.arrayContaining(['goal_x', 'goal_y']));
    expect(info.features['observation.environment_state']).toMatchObject({
      dtype: 'float32',
      shape: [envNames.length],
      names: envNames,
    });
    expect(back.header.environmentStateNames).toEqual(set.header.environmentStateNames);
    for (const [k, ep] of back.episodes.entries()) {
      const want = set.episodes[k];
      expect(ep.obs).toEqual(want.obs);
      expect(ep.actions).toEqual(want.actions);
      expect(ep.environmentState).toEqual(want.environmentState);
      const got = loadEpisodeFrames(back, ep);
      const orig = loadEpisodeFrames(set, want);
      expect(got).toHaveLength(orig.length);
      // AV1 at LeRobot's CRF 30 is lossy: close, not equal, frame by frame (the last one included),
      // and no neighbouring frame is closer (the frames are not shifted).
      const meanErr = (a: Uint8Array, b: Uint8Array): number => {
        let err = 0;
        for (let i = 0; i < a.length; i++) err += Math.abs(a[i] - b[i]);
        return err / a.length;
      };
      for (const [t, f] of got.entries()) {
        const err = meanErr(f.top.data, orig[t].top.data);
        expect(err, `episode ${k} frame ${t}`).toBeLessThan(6);
        for (const n of [t - 1, t + 1].filter((n) => n >= 0 && n < orig.length))
          expect(err).toBeLessThanOrEqual(meanErr(f.top.data, orig[n].top.data) + 0.05);
      }
    }
  }, 120_000);
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
