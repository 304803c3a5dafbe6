/**
 * The LeRobotDataset v3 layout that its reader and writer share: meta/info.json's shape, the
 * folder constants, path templates and the import error.
 */
import { ResrtError } from '../../util/errors.js';

export interface FeatureSpec {
  dtype: string;
  shape: number[];
  names?: string[] | Record<string, unknown> | null;
  info?: Record<string, unknown>;
}

export interface LeRobotInfo {
  codebase_version: string;
  robot_type: string | null;
  total_episodes: number;
  total_frames: number;
  total_tasks: number;
  chunks_size: number;
  data_files_size_in_mb: number;
  video_files_size_in_mb: number;
  fps: number;
  splits: Record<string, string>;
  data_path: string;
  video_path: string | null;
  features: Record<string, FeatureSpec>;
}

/** Files per chunk folder (LeRobot's chunks_size). */
export const CHUNKS_SIZE = 1000;

export const IMAGES_PREFIX = 'observation.images.';

/** resrt's camera name for a LeRobot feature key (LeRobot's observation.images.<camera>). */
export function cameraName(key: string): string {
  return key.startsWith(IMAGES_PREFIX) ? key.slice(IMAGES_PREFIX.length) : key.replace(/^observation\./, '');
}

/** Fills a LeRobot path template: {video_key}, {chunk_index:03d}, {file_index:03d}. */
export function formatPath(template: string, values: Record<string, string | number>): string {
  return template.replace(/\{(\w+)(?::0(\d+)d)?\}/g, (m, name: string, width?: string) => {
    const v = values[name];
    if (v === undefined) return m;
    return width ? String(v).padStart(Number(width), '0') : String(v);
  });
}

export function fail(dir: string, what: string, fix: string): never {
  throw new ResrtError(`${dir} is not a LeRobotDataset v3 resrt can import: ${what}`, fix);
}
