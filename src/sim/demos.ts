/**
 * Demonstration files: JSON Lines, streamable and append-only.
 *
 *   line 1: {"format":"resrt-demos","version":1,"task":..,"obsDim":..,"actionDim":..,"obsNames":[..],
 *            "actionNames":[..],"controlDt":..,"createdAt":..,"source":..}
 *   then one line per finished episode:
 *           {"episode":i,"seed":s,"success":b,"terminated":b,"truncated":b,
 *            "obs":[[..]..],      // T + 1 observations (the last is the observation after the final step)
 *            "actions":[[..]..],  // T normalized actions in [-1, 1]
 *            "rewards":[..]}      // T rewards
 *
 * Each episode is written and fsynced when it ends, so a crash loses at most the episode in progress;
 * a torn last line (crash mid-write) is detected and ignored on read.
 *
 * With cameras the header also lists them ("cameras": [{name, width, height, channels, depth}]) and
 * names the binary sidecar holding their frames ("framesFile", beside this file; see
 * demo-frames.ts); each episode line adds "frames": {"offset", "bytes"}, its byte range there.
 * Files without cameras are exactly as before.
 *
 * A simulated task with privileged state (push-cam's goal, which only the camera shows) also records
 * it, LeRobot's `observation.environment_state`: the header names it ("environmentStateNames") and
 * each episode adds "environmentState" (T + 1 rows). No policy reads it; it is the label a state
 * estimator learns from the frames (`resrt encoder train`, src/sim/state-encoder.ts).
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { CameraFrames, CameraSpec } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { type FrameRange, FrameSidecarWriter, readEpisodeFrames } from './demo-frames.js';

export interface DemoHeader {
  format: 'resrt-demos';
  version: 1;
  task: string;
  obsDim: number;
  actionDim: number;
  obsNames: string[];
  actionNames: string[];
  controlDt: number;
  createdAt: string;
  source: string;
  /** The cameras whose frames the sidecar holds, in record order. */
  cameras?: CameraSpec[];
  /** File name (beside this file) of the frames sidecar. */
  framesFile?: string;
  /** Names of the simulator's privileged state recorded per observation (absent: none recorded). */
  environmentStateNames?: string[];
}

export interface DemoEpisode {
  episode: number;
  seed: number;
  success: boolean;
  terminated: boolean;
  truncated: boolean;
  /** T + 1 observations. */
  obs: Float32Array[];
  /** T actions. */
  actions: Float32Array[];
  rewards: number[];
  /** Writing: one CameraFrames per observation (T + 1), when the file has cameras. */
  frames?: CameraFrames[];
  /** Reading: where this episode's frames are in the sidecar (load them with loadEpisodeFrames). */
  frameRange?: FrameRange;
  /** The simulator's privileged state at each observation (T + 1), when the header names it. */
  environmentState?: Float32Array[];
}

export interface DemoSet {
  header: DemoHeader;
  episodes: DemoEpisode[];
  /** True when the file ended in a torn line (a crash during writing); that episode was dropped. */
  tornTail: boolean;
  /** Absolute path of the frames sidecar, when the file has cameras. */
  framesPath?: string;
}

export class DemoWriter {
  private readonly fd: number;
  private readonly frames: FrameSidecarWriter | null;
  private count = 0;

  private constructor(
    readonly path: string,
    readonly header: DemoHeader,
    framesPath: string | undefined,
  ) {
    const cameras = header.cameras ?? [];
    if (cameras.length > 0 && !header.framesFile) {
      throw new ResrtError('demonstrations with cameras need a framesFile in the header');
    }
    this.frames =
      cameras.length > 0
        ? new FrameSidecarWriter(framesPath ?? join(dirname(path), header.framesFile!), cameras)
        : null;
    this.fd = openSync(path, 'w');
    this.writeLine(JSON.stringify(header));
  }

  /**
   * `framesPath`: where to write the sidecar when it is not yet at its final name (collect writes
   * under temporary names); default `header.framesFile` beside `path`.
   */
  static create(
    path: string,
    header: Omit<DemoHeader, 'format' | 'version' | 'createdAt'>,
    options: { framesPath?: string } = {},
  ): DemoWriter {
    return new DemoWriter(
      path,
      { format: 'resrt-demos', version: 1, createdAt: new Date().toISOString(), ...header },
      options.framesPath,
    );
  }

  append(episode: Omit<DemoEpisode, 'episode'>): void {
    const { obs, actions, rewards } = episode;
    if (obs.length !== actions.length + 1 || rewards.length !== actions.length) {
      throw new ResrtError(
        `demo episode has ${obs.length} observations, ${actions.length} actions and ${rewards.length} rewards`,
        'an episode of T steps needs T + 1 observations, T actions and T rewards',
      );
    }
    let range: FrameRange | undefined;
    if (this.frames) {
      if (!episode.frames || episode.frames.length !== obs.length) {
        throw new ResrtError(
          `demo episode has ${episode.frames?.length ?? 0} camera frames for ${obs.length} observations`,
          'record the frames of every observation (the reset and every step)',
        );
      }
      // The frames are on disk before the line that points at them.
      range = this.frames.appendEpisode(episode.frames);
    }
    const envState = this.header.environmentStateNames ? episode.environmentState : undefined;
    if (this.header.environmentStateNames && envState?.length !== obs.length) {
      throw new ResrtError(
        `demo episode has ${envState?.length ?? 0} environment states for ${obs.length} observations`,
        'record the environment state of every observation (the reset and every step)',
      );
    }
    const line = JSON.stringify({
      episode: this.count,
      seed: episode.seed,
      success: episode.success,
      terminated: episode.terminated,
      truncated: episode.truncated,
      obs: obs.map(roundRow),
      actions: actions.map(roundRow),
      rewards,
      ...(range ? { frames: range } : {}),
      ...(envState ? { environmentState: envState.map(roundRow) } : {}),
    });
    this.writeLine(line);
    this.count++;
  }

  get episodes(): number {
    return this.count;
  }

  close(): void {
    closeSync(this.fd);
    this.frames?.close();
  }

  private writeLine(line: string): void {
    const bytes = Buffer.from(line + '\n');
    let off = 0;
    while (off < bytes.length) off += writeSync(this.fd, bytes, off, bytes.length - off);
    fsyncSync(this.fd);
  }
}

// Float32 values printed with 9 significant digits read back bit-exact.
function roundRow(row: Float32Array): number[] {
  return Array.from(row, (v) => Number(v.toPrecision(9)));
}

export function readDemos(path: string): DemoSet {
  if (!existsSync(path)) {
    throw new ResrtError(
      `demonstration file ${path} does not exist`,
      'create one with `resrt collect --task T --out FILE`',
    );
  }
  const text = readFileSync(path, 'utf8');
  const lines = text.split('\n');
  // A file that ends without a newline was cut mid-write.
  const tornTail = lines[lines.length - 1] !== '';
  if (lines[lines.length - 1] === '' || tornTail) lines.pop();
  if (lines.length === 0)
    throw new ResrtError(`${path} is empty`, 'collect demonstrations with `resrt collect`');
  let header: DemoHeader;
  try {
    header = JSON.parse(lines[0]) as DemoHeader;
  } catch {
    throw new ResrtError(
      `${path} is not a resrt demonstration file (first line is not JSON)`,
      'collect demonstrations with `resrt collect`',
    );
  }
  if (header.format !== 'resrt-demos' || header.version !== 1) {
    throw new ResrtError(
      `${path} has format ${String(header.format)} version ${String(header.version)}; expected resrt-demos version 1`,
      'collect demonstrations with this version of `resrt collect`',
    );
  }
  const episodes: DemoEpisode[] = [];
  for (let i = 1; i < lines.length; i++) {
    const raw = JSON.parse(lines[i]) as {
      episode: number;
      seed: number;
      success: boolean;
      terminated: boolean;
      truncated: boolean;
      obs: number[][];
      actions: number[][];
      rewards: number[];
      frames?: FrameRange;
      environmentState?: number[][];
    };
    const ep: DemoEpisode = {
      episode: raw.episode,
      seed: raw.seed,
      success: raw.success,
      terminated: raw.terminated,
      truncated: raw.truncated,
      obs: raw.obs.map((r) => Float32Array.from(r)),
      actions: raw.actions.map((r) => Float32Array.from(r)),
      rewards: raw.rewards,
    };
    if (raw.frames) ep.frameRange = raw.frames;
    if (raw.environmentState) ep.environmentState = raw.environmentState.map((r) => Float32Array.from(r));
    checkEpisode(path, header, ep, i + 1);
    episodes.push(ep);
  }
  const set: DemoSet = { header, episodes, tornTail };
  if (header.cameras?.length) {
    const framesPath = join(dirname(path), basename(header.framesFile ?? ''));
    if (!header.framesFile || !existsSync(framesPath)) {
      throw new ResrtError(
        `${path} records cameras (${header.cameras.map((c) => c.name).join(', ')}) but its frames file ${framesPath} is missing`,
        'keep the .frames file next to the .jsonl file (copy both), or collect again',
      );
    }
    set.framesPath = framesPath;
  }
  return set;
}

/** The camera frames of one episode of a DemoSet (T + 1 of them), decoded from the sidecar. */
export function loadEpisodeFrames(set: DemoSet, episode: DemoEpisode): CameraFrames[] {
  const cameras = set.header.cameras ?? [];
  if (!set.framesPath || cameras.length === 0 || !episode.frameRange) {
    throw new ResrtError(
      `episode ${episode.episode} has no camera frames`,
      'collect demonstrations on a task with cameras (e.g. --task push-cam)',
    );
  }
  return readEpisodeFrames(set.framesPath, cameras, episode.frameRange, episode.obs.length);
}

function checkEpisode(path: string, header: DemoHeader, ep: DemoEpisode, line: number): void {
  const bad = (what: string): never => {
    throw new ResrtError(
      `${path}:${line}: ${what}`,
      'the file is corrupt; collect it again with `resrt collect`',
    );
  };
  if (ep.obs.length !== ep.actions.length + 1) bad('an episode needs one more observation than actions');
  if (ep.rewards.length !== ep.actions.length) bad('an episode needs one reward per action');
  for (const o of ep.obs)
    if (o.length !== header.obsDim) bad(`observation of length ${o.length}, header says ${header.obsDim}`);
  for (const a of ep.actions)
    if (a.length !== header.actionDim) bad(`action of length ${a.length}, header says ${header.actionDim}`);
  if (header.cameras?.length && !ep.frameRange) bad('the header lists cameras but the episode has no frames');
  const envNames = header.environmentStateNames;
  if (envNames) {
    if (ep.environmentState?.length !== ep.obs.length)
      bad('the header names an environment state but the episode has none for some observations');
    for (const e of ep.environmentState!)
      if (e.length !== envNames.length)
        bad(`environment state of length ${e.length}, header names ${envNames.length}`);
  }
}
