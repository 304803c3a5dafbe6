/**
 * LeRobotDataset v3 in and out (the layout LeRobot's dataset code writes):
 *
 *   meta/info.json             codebase_version "v3.0", fps, features {name: {dtype, shape, names}},
 *                              data_path "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet", ...
 *   meta/stats.json            per feature: min, max, mean, std, count
 *   meta/tasks.parquet         task (the pandas index) → task_index
 *   meta/episodes/chunk-000/file-000.parquet
 *                              per episode: episode_index, tasks, length, data/chunk_index,
 *                              data/file_index, dataset_from_index, dataset_to_index,
 *                              meta/episodes/chunk_index, meta/episodes/file_index, stats/<feature>/<stat>
 *   data/chunk-XXX/file-XXX.parquet
 *                              one row per frame: observation.state, action, next.reward, next.done,
 *                              timestamp, frame_index, episode_index, index, task_index
 *   videos/observation.images.<camera>/chunk-XXX/file-XXX.mp4
 *                              camera streams (AV1), episodes one after another; the episodes
 *                              metadata says where: videos/<key>/chunk_index, file_index,
 *                              from_timestamp, to_timestamp; a row's frame is at from + timestamp
 *
 * A LeRobot frame holds the observation and the action taken from it; resrt's demonstrations also
 * keep the observation after the last action, the outcome and the time-limit flag. They travel as
 * extra features (next.observation.state, next.success, next.truncated): LeRobot loads them as
 * any other column, and a re-import gives back identical episodes. A dataset without them imports
 * with the last observation repeated and success read from next.reward. A simulator's privileged
 * state (demonstrations whose header names `environmentStateNames`) travels as LeRobot's
 * observation.environment_state (and next.observation.environment_state for the last row), both ways.
 *
 * Camera features of dtype "video" become the demonstrations' camera frames (camera name = the key
 * after "observation.images."), decoded through ffmpeg (video.ts) one episode at a time; the
 * frame after the last action is the video's next frame where it has one (resrt writes it), else
 * the last frame again. Depth videos and "image" features (PNG in Parquet) are not imported: the
 * reader lists them in `skippedFeatures` so that callers say so. The writer encodes the
 * demonstrations' RGB frames as LeRobot does (video.ts says which codec when AV1 is missing);
 * depth frames have no LeRobot feature and are left out, said in `skipped`.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CameraFrames, CameraSpec } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import type { DemoEpisode, DemoHeader, DemoSet } from '../demos.js';
import { CHUNKS_SIZE, IMAGES_PREFIX, fail, type FeatureSpec, type LeRobotInfo } from './lerobot-layout.js';
import { imageStats, openVideos, writeVideos, type ChannelStats } from './lerobot-video.js';
import { readParquet, writeParquet, type Column, type Row } from './parquet.js';

export { cameraName, type FeatureSpec, type LeRobotInfo } from './lerobot-layout.js';

export interface LeRobotImport {
  set: DemoSet;
  info: LeRobotInfo;
  tasks: string[];
  /** Features present in the dataset that were not imported, with why. */
  skippedFeatures: { name: string; dtype: string; why: string }[];
  /** The imported camera streams (empty without video features, or with `videos: false`). */
  cameras: CameraSpec[];
  /** An episode's camera frames, one per observation (T + 1), decoded from the videos. */
  loadFrames(episode: DemoEpisode): Promise<CameraFrames[]>;
}

export interface LeRobotReadOptions {
  /** Decode the camera videos (default true; false lists them as skipped). */
  videos?: boolean;
}

const STATE = 'observation.state';
const ACTION = 'action';
const NEXT_STATE = 'next.observation.state';
// The simulator's privileged state (push-cam's goal): the label `resrt encoder train` learns from.
const ENV_STATE = 'observation.environment_state';
const NEXT_ENV_STATE = 'next.observation.environment_state';
const DATA_FILE_MB = 100;

function featureNames(f: FeatureSpec | undefined, dim: number, prefix: string): string[] {
  const n = f?.names;
  const list = Array.isArray(n)
    ? n
    : n && typeof n === 'object' && Array.isArray((n as { motors?: unknown }).motors)
      ? (n as { motors: string[] }).motors
      : null;
  return list && list.length === dim
    ? list.map(String)
    : Array.from({ length: dim }, (_, i) => `${prefix}[${i}]`);
}

/** Reads every episode of a local LeRobotDataset v3 folder (camera frames on demand, per episode). */
export async function readLeRobotDataset(
  dir: string,
  options: LeRobotReadOptions = {},
): Promise<LeRobotImport> {
  const infoPath = join(dir, 'meta', 'info.json');
  if (!existsSync(infoPath)) {
    fail(dir, 'meta/info.json is missing', 'point at the dataset root (the folder holding meta/ and data/)');
  }
  let info: LeRobotInfo;
  try {
    info = JSON.parse(readFileSync(infoPath, 'utf8')) as LeRobotInfo;
  } catch (err) {
    fail(dir, `meta/info.json is not JSON (${(err as Error).message})`, 'download the dataset again');
  }
  const version = String(info.codebase_version ?? '');
  if (!version.startsWith('v3.')) {
    fail(
      dir,
      `codebase_version is ${version || 'missing'}`,
      version.startsWith('v2')
        ? "convert it with LeRobot's v2.1 → v3.0 conversion script (lerobot.datasets.v30.convert_dataset_v21_to_v30)"
        : 'resrt reads codebase_version v3.x',
    );
  }
  const features = info.features ?? {};
  for (const key of [STATE, ACTION]) {
    if (!features[key])
      fail(
        dir,
        `it has no "${key}" feature`,
        `resrt needs ${STATE} and ${ACTION}; features are: ${Object.keys(features).join(', ')}`,
      );
  }
  const obsDim = features[STATE].shape.reduce((a, b) => a * b, 1);
  const actionDim = features[ACTION].shape.reduce((a, b) => a * b, 1);
  const envDim = features[ENV_STATE]?.shape.reduce((a, b) => a * b, 1) ?? 0;
  const skippedFeatures: LeRobotImport['skippedFeatures'] = [];
  const videoKeys: string[] = [];
  for (const [name, f] of Object.entries(features)) {
    if (f.dtype === 'image') {
      skippedFeatures.push({
        name,
        dtype: f.dtype,
        why: 'image features (PNG in Parquet) are not imported; LeRobot records cameras as video by default',
      });
    } else if (f.dtype === 'video') {
      const vinfo = (f.info ?? (f as { video_info?: Record<string, unknown> }).video_info ?? {}) as Record<
        string,
        unknown
      >;
      if (vinfo['video.is_depth_map'] === true) {
        skippedFeatures.push({ name, dtype: f.dtype, why: 'depth videos are not imported' });
      } else if (options.videos === false) {
        skippedFeatures.push({ name, dtype: f.dtype, why: 'videos not imported (--no-videos)' });
      } else videoKeys.push(name);
    }
  }

  const tasks: string[] = [];
  const tasksPath = join(dir, 'meta', 'tasks.parquet');
  if (existsSync(tasksPath)) {
    for (const r of (await readParquet(tasksPath)).rows) {
      const task = r.task ?? r.__index_level_0__;
      tasks[Number(r.task_index)] = String(task);
    }
  }

  const dataDir = join(dir, 'data');
  if (!existsSync(dataDir)) fail(dir, 'data/ is missing', 'download the whole dataset, not only meta/');
  const files = readdirSync(dataDir)
    .filter((c) => c.startsWith('chunk-'))
    .sort()
    .flatMap((c) =>
      readdirSync(join(dataDir, c))
        .filter((f) => f.endsWith('.parquet'))
        .sort()
        .map((f) => join(dataDir, c, f)),
    );
  if (files.length === 0) fail(dir, 'data/ holds no Parquet files', 'download the whole dataset');
  const byEpisode = new Map<number, Row[]>();
  const timestamps = new Map<number, number[]>();
  for (const f of files) {
    for (const r of (await readParquet(f)).rows) {
      const e = Number(r.episode_index);
      (byEpisode.get(e) ?? byEpisode.set(e, []).get(e)!).push(r);
    }
  }
  const vector = (r: Row, key: string, dim: number, where: string): Float32Array => {
    const v = r[key];
    if (!Array.isArray(v) || v.length !== dim) {
      fail(
        dir,
        `${where}: ${key} has ${Array.isArray(v) ? v.length : typeof v} values, info.json says ${dim}`,
        'the dataset is inconsistent; regenerate its meta/info.json',
      );
    }
    return Float32Array.from(v as number[]);
  };
  const episodes: DemoEpisode[] = [];
  for (const e of [...byEpisode.keys()].sort((a, b) => a - b)) {
    const rows = byEpisode.get(e)!.sort((a, b) => Number(a.frame_index) - Number(b.frame_index));
    const where = `episode ${e}`;
    timestamps.set(
      e,
      rows.map((r) => Number(r.timestamp ?? Number(r.frame_index) / (info.fps || 1))),
    );
    const obs = rows.map((r) => vector(r, STATE, obsDim, where));
    const actions = rows.map((r) => vector(r, ACTION, actionDim, where));
    const rewards = rows.map((r) => Number(r['next.reward'] ?? 0));
    const last = rows[rows.length - 1];
    obs.push(
      NEXT_STATE in last && last[NEXT_STATE] != null
        ? vector(last, NEXT_STATE, obsDim, where)
        : obs[obs.length - 1],
    );
    const environmentState = envDim > 0 ? rows.map((r) => vector(r, ENV_STATE, envDim, where)) : undefined;
    environmentState?.push(
      NEXT_ENV_STATE in last && last[NEXT_ENV_STATE] != null
        ? vector(last, NEXT_ENV_STATE, envDim, where)
        : environmentState[environmentState.length - 1],
    );
    const success = 'next.success' in last ? Boolean(last['next.success']) : rewards.some((r) => r > 0);
    const truncated = 'next.truncated' in last ? Boolean(last['next.truncated']) : !success;
    episodes.push({
      episode: e,
      seed: e,
      success,
      terminated: !truncated,
      truncated,
      obs,
      actions,
      rewards,
      ...(environmentState ? { environmentState } : {}),
    });
  }
  const videos = videoKeys.length > 0 ? await openVideos(dir, info, videoKeys) : null;
  const cameras = videos?.cameras ?? [];
  const header: DemoHeader = {
    format: 'resrt-demos',
    version: 1,
    task: tasks[0] ?? 'lerobot',
    obsDim,
    actionDim,
    obsNames: featureNames(features[STATE], obsDim, STATE),
    actionNames: featureNames(features[ACTION], actionDim, ACTION),
    ...(envDim > 0 ? { environmentStateNames: featureNames(features[ENV_STATE], envDim, ENV_STATE) } : {}),
    controlDt: 1 / (info.fps || 1),
    createdAt: new Date().toISOString(),
    source: `LeRobotDataset ${version} at ${dir}${info.robot_type ? ` (robot ${info.robot_type})` : ''}`,
  };
  return {
    set: { header, episodes, tornTail: false },
    info,
    tasks,
    skippedFeatures,
    cameras,
    async loadFrames(ep) {
      if (!videos) return [];
      return videos.load(ep.episode, timestamps.get(ep.episode) ?? [], ep.obs.length);
    },
  };
}

function stats(rows: Float32Array[]): Record<string, number[]> {
  const dim = rows[0]?.length ?? 0;
  const min = new Array<number>(dim).fill(Infinity);
  const max = new Array<number>(dim).fill(-Infinity);
  const sum = new Array<number>(dim).fill(0);
  const sq = new Array<number>(dim).fill(0);
  for (const r of rows) {
    for (let i = 0; i < dim; i++) {
      min[i] = Math.min(min[i], r[i]);
      max[i] = Math.max(max[i], r[i]);
      sum[i] += r[i];
      sq[i] += r[i] * r[i];
    }
  }
  const n = Math.max(1, rows.length);
  const mean = sum.map((s) => s / n);
  const std = sq.map((s, i) => Math.sqrt(Math.max(0, s / n - mean[i] * mean[i])));
  return { min, max, mean, std, count: [rows.length] };
}

export interface LeRobotExportOptions {
  /** The task's words in meta/tasks.parquet (default: the demo header's task). */
  task?: string;
  robotType?: string | null;
}

/** Writes episodes as a LeRobotDataset v3 folder (refuses a folder that already has meta/info.json). */
export interface LeRobotExport {
  info: LeRobotInfo;
  /** Per camera feature: the ffmpeg encoder that wrote it. */
  encoders: Record<string, string>;
  /** What the dataset could not carry (depth frames), in words. */
  skipped: string[];
}

/**
 * Writes episodes as a LeRobotDataset v3 folder (refuses a folder that already has meta/info.json).
 * Demonstrations with cameras get one video per camera per data file, each episode's T + 1 frames
 * one after another.
 */
export async function writeLeRobotDataset(
  dir: string,
  set: DemoSet,
  options: LeRobotExportOptions = {},
): Promise<LeRobotExport> {
  if (existsSync(join(dir, 'meta', 'info.json'))) {
    throw new ResrtError(`${dir} already holds a dataset`, 'export into a new folder');
  }
  const h = set.header;
  const task = options.task ?? h.task;
  const fps = Math.round(1 / h.controlDt);
  const features: Record<string, FeatureSpec> = {
    [STATE]: { dtype: 'float32', shape: [h.obsDim], names: h.obsNames },
    [ACTION]: { dtype: 'float32', shape: [h.actionDim], names: h.actionNames },
    [NEXT_STATE]: { dtype: 'float32', shape: [h.obsDim], names: h.obsNames },
    'next.reward': { dtype: 'float32', shape: [1], names: null },
    'next.done': { dtype: 'bool', shape: [1], names: null },
    'next.success': { dtype: 'bool', shape: [1], names: null },
    'next.truncated': { dtype: 'bool', shape: [1], names: null },
    timestamp: { dtype: 'float32', shape: [1], names: null },
    frame_index: { dtype: 'int64', shape: [1], names: null },
    episode_index: { dtype: 'int64', shape: [1], names: null },
    index: { dtype: 'int64', shape: [1], names: null },
    task_index: { dtype: 'int64', shape: [1], names: null },
  };
  const envNames = h.environmentStateNames ?? [];
  // Checked once, before anything is written: every episode holds one row per observation.
  const environmentState = (ep: DemoEpisode): Float32Array[] => ep.environmentState!;
  if (envNames.length > 0) {
    const short = set.episodes.find((ep) => ep.environmentState?.length !== ep.obs.length);
    if (short)
      throw new ResrtError(
        `episode ${short.episode} has ${short.environmentState?.length ?? 0} environment states for ${short.obs.length} observations, though the header names them`,
        'record the demonstrations again with resrt collect',
      );
    features[ENV_STATE] = { dtype: 'float32', shape: [envNames.length], names: envNames };
    features[NEXT_ENV_STATE] = { dtype: 'float32', shape: [envNames.length], names: envNames };
  }
  const cameras = h.cameras ?? [];
  const videoKey = (c: CameraSpec): string => `${IMAGES_PREFIX}${c.name}`;
  for (const c of cameras) {
    features[videoKey(c)] = {
      dtype: 'video',
      shape: [c.height, c.width, 3],
      names: ['height', 'width', 'channels'],
      info: {
        'video.height': c.height,
        'video.width': c.width,
        'video.codec': null,
        'video.pix_fmt': null,
        'video.is_depth_map': false,
        'video.fps': fps,
        'video.channels': 3,
        has_audio: false,
      },
    };
  }
  // Files hold whole episodes and stay under the size LeRobot uses (100 MB of frames).
  const frameBytes = 4 * (2 * h.obsDim + h.actionDim + 2 * envNames.length) + 48;
  const perFile = Math.max(1, Math.floor((DATA_FILE_MB * 2 ** 20) / frameBytes));
  type Frame = { ep: DemoEpisode; e: number; t: number; index: number };
  const files: Frame[][] = [[]];
  const episodeMeta: Row[] = [];
  let index = 0;
  const fileOfEpisode: number[] = [];
  set.episodes.forEach((ep, e) => {
    if (files[files.length - 1].length > 0 && files[files.length - 1].length + ep.actions.length > perFile)
      files.push([]);
    const fileIndex = files.length - 1;
    fileOfEpisode.push(fileIndex);
    const from = index;
    for (let t = 0; t < ep.actions.length; t++) files[fileIndex].push({ ep, e, t, index: index++ });
    const s = {
      [STATE]: stats(ep.obs.slice(0, -1)),
      [ACTION]: stats(ep.actions),
      ...(envNames.length > 0 ? { [ENV_STATE]: stats(environmentState(ep).slice(0, -1)) } : {}),
    };
    episodeMeta.push({
      episode_index: e,
      tasks: [task],
      length: ep.actions.length,
      'data/chunk_index': Math.floor(fileIndex / CHUNKS_SIZE),
      'data/file_index': fileIndex % CHUNKS_SIZE,
      dataset_from_index: from,
      dataset_to_index: index,
      'meta/episodes/chunk_index': 0,
      'meta/episodes/file_index': 0,
      ...Object.fromEntries(
        Object.entries(s).flatMap(([f, st]) => Object.entries(st).map(([k, v]) => [`stats/${f}/${k}`, v])),
      ),
    });
  });
  mkdirSync(join(dir, 'meta', 'episodes', 'chunk-000'), { recursive: true });
  files.forEach((frames, k) => {
    const chunkDir = join(dir, 'data', `chunk-${String(Math.floor(k / CHUNKS_SIZE)).padStart(3, '0')}`);
    mkdirSync(chunkDir, { recursive: true });
    const col = (name: string, type: Column['type'], f: (x: Frame) => unknown, list = false): Column => ({
      name,
      type,
      list,
      data: frames.map(f),
    });
    writeParquet(join(chunkDir, `file-${String(k % CHUNKS_SIZE).padStart(3, '0')}.parquet`), [
      col(STATE, 'FLOAT', (x) => Array.from(x.ep.obs[x.t]), true),
      col(ACTION, 'FLOAT', (x) => Array.from(x.ep.actions[x.t]), true),
      col(NEXT_STATE, 'FLOAT', (x) => Array.from(x.ep.obs[x.t + 1]), true),
      ...(envNames.length > 0
        ? [
            col(ENV_STATE, 'FLOAT', (x) => Array.from(environmentState(x.ep)[x.t]), true),
            col(NEXT_ENV_STATE, 'FLOAT', (x) => Array.from(environmentState(x.ep)[x.t + 1]), true),
          ]
        : []),
      col('next.reward', 'FLOAT', (x) => x.ep.rewards[x.t]),
      col('next.done', 'BOOLEAN', (x) => x.t === x.ep.actions.length - 1),
      col('next.success', 'BOOLEAN', (x) => x.ep.success && x.t === x.ep.actions.length - 1),
      col('next.truncated', 'BOOLEAN', (x) => x.ep.truncated && x.t === x.ep.actions.length - 1),
      col('timestamp', 'FLOAT', (x) => x.t / fps),
      col('frame_index', 'INT64', (x) => x.t),
      col('episode_index', 'INT64', (x) => x.e),
      col('index', 'INT64', (x) => x.index),
      col('task_index', 'INT64', () => 0),
    ]);
  });
  const encoders: Record<string, string> = {};
  const channelStats: Record<string, ChannelStats> = {};
  if (cameras.length > 0) {
    await writeVideos(dir, set, fileOfEpisode, fps, episodeMeta, features, encoders, channelStats);
  }
  const metaCols: Column[] = Object.keys(episodeMeta[0] ?? {}).map((name) => {
    const first = episodeMeta[0][name];
    const list = Array.isArray(first);
    const sample = list ? (first as unknown[])[0] : first;
    const type: Column['type'] =
      typeof sample === 'string'
        ? 'STRING'
        : name.startsWith('stats/') || name.endsWith('_timestamp')
          ? 'DOUBLE'
          : 'INT64';
    return { name, type, list, data: episodeMeta.map((r) => r[name]) };
  });
  if (metaCols.length > 0)
    writeParquet(join(dir, 'meta', 'episodes', 'chunk-000', 'file-000.parquet'), metaCols);
  // pandas restores the "task" column as the index from this metadata, as LeRobot wrote it.
  const pandas = {
    index_columns: ['task'],
    column_indexes: [],
    columns: [
      {
        name: 'task_index',
        field_name: 'task_index',
        pandas_type: 'int64',
        numpy_type: 'int64',
        metadata: null,
      },
      { name: 'task', field_name: 'task', pandas_type: 'unicode', numpy_type: 'object', metadata: null },
    ],
    creator: { library: 'resrt' },
    pandas_version: '2.2.0',
  };
  writeParquet(
    join(dir, 'meta', 'tasks.parquet'),
    [
      { name: 'task_index', type: 'INT64', data: [0] },
      { name: 'task', type: 'STRING', data: [task] },
    ],
    { pandas: JSON.stringify(pandas) },
  );
  const allObs = set.episodes.flatMap((e) => e.obs.slice(0, -1));
  const allAct = set.episodes.flatMap((e) => e.actions);
  writeFileSync(
    join(dir, 'meta', 'stats.json'),
    JSON.stringify(
      {
        [STATE]: stats(allObs),
        [ACTION]: stats(allAct),
        ...(envNames.length > 0
          ? { [ENV_STATE]: stats(set.episodes.flatMap((e) => environmentState(e).slice(0, -1))) }
          : {}),
        ...imageStats(channelStats),
      },
      null,
      4,
    ) + '\n',
  );
  const info: LeRobotInfo = {
    codebase_version: 'v3.0',
    robot_type: options.robotType ?? null,
    total_episodes: set.episodes.length,
    total_frames: index,
    total_tasks: 1,
    chunks_size: CHUNKS_SIZE,
    data_files_size_in_mb: DATA_FILE_MB,
    video_files_size_in_mb: 200,
    fps,
    splits: { train: `0:${set.episodes.length}` },
    data_path: 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet',
    video_path:
      cameras.length > 0 ? 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4' : null,
    features,
  };
  writeFileSync(join(dir, 'meta', 'info.json'), JSON.stringify(info, null, 4) + '\n');
  const skipped = cameras
    .filter((c) => c.depth)
    .map((c) => `${c.name}'s depth (LeRobot has no depth feature)`);
  return { info, encoders, skipped };
}
