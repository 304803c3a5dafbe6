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
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import { ResrtError } from '../util/errors.js';

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
}

export interface DemoSet {
  header: DemoHeader;
  episodes: DemoEpisode[];
  /** True when the file ended in a torn line (a crash during writing); that episode was dropped. */
  tornTail: boolean;
}

export class DemoWriter {
  private readonly fd: number;
  private count = 0;

  private constructor(
    readonly path: string,
    readonly header: DemoHeader,
  ) {
    this.fd = openSync(path, 'w');
    this.writeLine(JSON.stringify(header));
  }

  static create(path: string, header: Omit<DemoHeader, 'format' | 'version' | 'createdAt'>): DemoWriter {
    return new DemoWriter(path, {
      format: 'resrt-demos',
      version: 1,
      createdAt: new Date().toISOString(),
      ...header,
    });
  }

  append(episode: Omit<DemoEpisode, 'episode'>): void {
    const { obs, actions, rewards } = episode;
    if (obs.length !== actions.length + 1 || rewards.length !== actions.length) {
      throw new ResrtError(
        `demo episode has ${obs.length} observations, ${actions.length} actions and ${rewards.length} rewards`,
        'an episode of T steps needs T + 1 observations, T actions and T rewards',
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
    });
    this.writeLine(line);
    this.count++;
  }

  get episodes(): number {
    return this.count;
  }

  close(): void {
    closeSync(this.fd);
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
    checkEpisode(path, header, ep, i + 1);
    episodes.push(ep);
  }
  return { header, episodes, tornTail };
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
}
