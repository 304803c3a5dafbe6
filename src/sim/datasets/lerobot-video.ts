/**
 * LeRobotDataset v3 camera streams (lerobot.ts holds the rest of the format): where each episode's
 * frames are in the videos (meta/episodes: videos/<key>/chunk_index, file_index, from_timestamp,
 * to_timestamp; a row's frame is at from_timestamp + its timestamp), decoded one episode at a time,
 * and the writer's side: one MP4 per camera per data file, with the image statistics.
 */
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { CameraFrame, CameraFrames, CameraSpec } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { loadEpisodeFrames, type DemoSet } from '../demos.js';
import {
  CHUNKS_SIZE,
  IMAGES_PREFIX,
  cameraName,
  fail,
  formatPath,
  type FeatureSpec,
  type LeRobotInfo,
} from './lerobot-layout.js';
import { readParquet, type Row } from './parquet.js';
import { decodeFrames, probeVideo, VideoWriter, type VideoStream } from './video.js';

interface VideoSegment {
  path: string;
  fromS: number;
  toS: number;
}

/** Where each episode's frames are, per camera, from the episodes metadata; the streams probed. */
export async function openVideos(
  dir: string,
  info: LeRobotInfo,
  keys: string[],
): Promise<{
  cameras: CameraSpec[];
  load(episode: number, timestamps: number[], observations: number): Promise<CameraFrames[]>;
}> {
  if (!info.video_path) {
    fail(dir, 'it has video features but no video_path in meta/info.json', 'regenerate its meta/info.json');
  }
  const metaDir = join(dir, 'meta', 'episodes');
  if (!existsSync(metaDir)) {
    fail(
      dir,
      'meta/episodes/ is missing (it says where each episode is in the videos)',
      'download the whole dataset',
    );
  }
  const segments = new Map<string, Map<number, VideoSegment>>(keys.map((k) => [k, new Map()]));
  const metaFiles = readdirSync(metaDir)
    .filter((c) => c.startsWith('chunk-'))
    .flatMap((c) =>
      readdirSync(join(metaDir, c))
        .filter((f) => f.endsWith('.parquet'))
        .map((f) => join(metaDir, c, f)),
    );
  const streams = new Map<string, VideoStream>();
  for (const file of metaFiles) {
    for (const r of (await readParquet(file)).rows) {
      for (const key of keys) {
        const col = (what: string): unknown => r[`videos/${key}/${what}`];
        if (col('chunk_index') === undefined || col('from_timestamp') === undefined) {
          fail(
            dir,
            `meta/episodes has no videos/${key}/chunk_index or from_timestamp`,
            'the dataset predates v3.0; convert it with LeRobot (lerobot.datasets.v30.convert_dataset_v21_to_v30)',
          );
        }
        const path = join(
          dir,
          formatPath(info.video_path!, {
            video_key: key,
            chunk_index: Number(col('chunk_index')),
            file_index: Number(col('file_index')),
          }),
        );
        segments.get(key)!.set(Number(r.episode_index), {
          path,
          fromS: Number(col('from_timestamp')),
          toS: Number(col('to_timestamp')),
        });
      }
    }
  }
  const stream = (key: string, path: string): VideoStream => {
    let s = streams.get(path);
    if (!s) {
      if (!existsSync(path))
        fail(dir, `the video ${path} is missing`, 'download the whole dataset, videos included');
      s = probeVideo(path);
      if (Math.abs(s.fps - info.fps) > 0.01) {
        fail(
          dir,
          `${key}'s video ${path} runs at ${s.fps.toFixed(3)} fps, info.json says ${info.fps}`,
          'the dataset is inconsistent; re-encode the video at the dataset fps',
        );
      }
      streams.set(path, s);
    }
    return s;
  };
  // The first file of each camera gives its size (LeRobot keeps one size per camera).
  const firstPath = (key: string): string =>
    join(dir, formatPath(info.video_path!, { video_key: key, chunk_index: 0, file_index: 0 }));
  const cameras: CameraSpec[] = keys.map((key) => {
    const s = stream(key, firstPath(key));
    return { name: cameraName(key), width: s.width, height: s.height, channels: 3, depth: false };
  });
  if (new Set(cameras.map((c) => c.name)).size !== cameras.length) {
    fail(dir, `two video features map to one camera name (${keys.join(', ')})`, 'rename the features');
  }
  return {
    cameras,
    async load(episode, times, observations) {
      const steps: Record<string, CameraFrame>[] = Array.from({ length: observations }, () => ({}));
      for (const [c, key] of keys.entries()) {
        const seg = segments.get(key)!.get(episode);
        if (!seg)
          fail(dir, `meta/episodes has no entry for episode ${episode}`, 'download the whole dataset');
        const s = stream(key, seg.path);
        if (s.width !== cameras[c].width || s.height !== cameras[c].height) {
          fail(dir, `${key} changes size between video files`, 'keep one size per camera');
        }
        const count = Math.max(1, Math.round((seg.toS - seg.fromS) * s.fps));
        const rgb = await decodeFrames(seg.path, s, seg.fromS, count);
        const frameAt = (t: number): number => {
          // Each row's frame is at its timestamp; the observation after the last action is the
          // next frame when the video has it.
          const k =
            t < times.length ? Math.round(times[t] * s.fps) : Math.round(times[times.length - 1] * s.fps) + 1;
          return Math.min(k, count - 1);
        };
        for (let t = 0; t < observations; t++) {
          const k = frameAt(t);
          if (t < times.length && k !== Math.round(times[t] * s.fps)) {
            fail(
              dir,
              `episode ${episode}'s ${key} video holds ${count} frames, its row ${t} is at ${times[t].toFixed(3)} s`,
              "the dataset's videos and episode metadata disagree; download the dataset again",
            );
          }
          steps[t][cameras[c].name] = {
            width: s.width,
            height: s.height,
            channels: 3,
            data: rgb[k],
            capturedAtMs: (1000 * k) / s.fps,
            seq: k,
          };
        }
      }
      return steps;
    },
  };
}

export interface ChannelStats {
  min: number[];
  max: number[];
  sum: number[];
  sq: number[];
  /** Pixels per channel. */
  count: number;
  frames: number;
}

/**
 * Encodes every camera's frames: one MP4 per camera per data file, episodes one after another,
 * each episode's T + 1 frames (the last is what LeRobot does not keep: the observation after the
 * final action). Fills the episodes' video columns, the features' codec and the image statistics.
 */
export async function writeVideos(
  dir: string,
  set: DemoSet,
  fileOfEpisode: number[],
  fps: number,
  episodeMeta: Row[],
  features: Record<string, FeatureSpec>,
  encoders: Record<string, string>,
  channelStats: Record<string, ChannelStats>,
): Promise<void> {
  const cameras = set.header.cameras ?? [];
  const writers = new Map<string, { file: number; writer: VideoWriter }>();
  const close = async (key: string): Promise<void> => {
    const w = writers.get(key);
    if (!w) return;
    writers.delete(key);
    await w.writer.close();
  };
  try {
    for (const [e, ep] of set.episodes.entries()) {
      const frames = ep.frames ?? loadEpisodeFrames(set, ep);
      const file = fileOfEpisode[e];
      for (const c of cameras) {
        const key = `${IMAGES_PREFIX}${c.name}`;
        if (writers.get(key)?.file !== file) {
          await close(key);
          const path = join(
            dir,
            'videos',
            key,
            `chunk-${String(Math.floor(file / CHUNKS_SIZE)).padStart(3, '0')}`,
            `file-${String(file % CHUNKS_SIZE).padStart(3, '0')}.mp4`,
          );
          mkdirSync(dirname(path), { recursive: true });
          const writer = VideoWriter.open(path, c.width, c.height, fps);
          writers.set(key, { file, writer });
          encoders[key] = writer.choice.encoder;
          Object.assign(features[key].info!, {
            'video.codec': writer.choice.codec,
            'video.pix_fmt': writer.choice.pixFmt,
          });
        }
        const { writer } = writers.get(key)!;
        const st = (channelStats[key] ??= {
          min: [255, 255, 255],
          max: [0, 0, 0],
          sum: [0, 0, 0],
          sq: [0, 0, 0],
          count: 0,
          frames: 0,
        });
        const from = writer.frames / fps;
        for (const [t, step] of frames.entries()) {
          const f = step[c.name];
          if (!f) {
            throw new ResrtError(
              `episode ${e} has no ${c.name} frame at step ${t}`,
              'the demonstrations are incomplete; collect them again',
            );
          }
          await writer.write(f.data);
          if (t < ep.actions.length) addPixels(st, f.data);
        }
        Object.assign(episodeMeta[e], {
          [`videos/${key}/chunk_index`]: Math.floor(file / CHUNKS_SIZE),
          [`videos/${key}/file_index`]: file % CHUNKS_SIZE,
          [`videos/${key}/from_timestamp`]: from,
          [`videos/${key}/to_timestamp`]: writer.frames / fps,
        });
      }
    }
  } finally {
    for (const key of [...writers.keys()]) await close(key);
  }
}

function addPixels(st: ChannelStats, rgb: Uint8Array): void {
  for (let i = 0; i < rgb.length; i += 3) {
    for (let k = 0; k < 3; k++) {
      const v = rgb[i + k];
      if (v < st.min[k]) st.min[k] = v;
      if (v > st.max[k]) st.max[k] = v;
      st.sum[k] += v;
      st.sq[k] += v * v;
    }
  }
  st.count += rgb.length / 3;
  st.frames++;
}

/** Per-channel image statistics in [0, 1], shaped (3, 1, 1) as LeRobot's normalizers read them. */
export function imageStats(channelStats: Record<string, ChannelStats>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(channelStats).map(([key, c]) => {
      const per = (f: (k: number) => number): number[][][] => [0, 1, 2].map((k) => [[f(k)]]);
      const mean = (k: number): number => c.sum[k] / Math.max(1, c.count);
      return [
        key,
        {
          min: per((k) => c.min[k] / 255),
          max: per((k) => c.max[k] / 255),
          mean: per((k) => mean(k) / 255),
          std: per((k) => Math.sqrt(Math.max(0, c.sq[k] / Math.max(1, c.count) - mean(k) ** 2)) / 255),
          count: [c.frames],
        },
      ];
    }),
  );
}
