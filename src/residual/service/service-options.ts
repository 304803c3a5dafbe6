/**
 * What `runLearnerService` takes, and the checks on it that need nothing opened yet: a bad option
 * is an error naming it and its fix before the session folder is locked or a broker started.
 */
import { ResrtError } from '../../util/errors.js';
import type { DevicePreference } from '../../nn/index.js';
import type { ProfileName, ResidualConfig } from '../config.js';

export interface LearnerServiceOptions {
  /** Checkpoints, the write-ahead log and the exported residual go here. */
  outDir: string;
  /** Continue the session in outDir (after a crash, kill -9 or a planned stop). */
  resume?: boolean;
  /** The session's broker; none: start the embedded broker on loopback (`brokerPort`). */
  brokerUrl?: string;
  /** Port of the embedded broker. Default 1883; 0 picks a free one. */
  brokerPort?: number;
  username?: string;
  password?: string;
  /** Topic namespace shared with the actors. Default 'default'. */
  session?: string;
  /** The base ONNX (for its observation/action widths); or give obsDim and actionDim. */
  base?: string;
  obsDim?: number;
  actionDim?: number;
  profile?: ProfileName | 'auto';
  config?: Partial<ResidualConfig>;
  /** Publish the residual every this many actor updates. Default 50. */
  publishEvery?: number;
  /** Checkpoint at most this often (and at close). Default 60 s. */
  checkpointEverySec?: number;
  /** 'task': the actors' rewards; 'rlif': −1 on the step a person intervenes, else 0. */
  rewardMode?: 'task' | 'rlif';
  /** Capacity of the intervention (demonstration) replay. Default 50 000. */
  demoCapacity?: number;
  /**
   * The write-ahead log (the session's dataset) may take this many MiB on disk, compacted segments
   * counted as stored. At the limit nothing more is logged or acknowledged: the actors keep their
   * transitions spooled and stop at their spool limits. Default 65536 (64 GiB).
   */
  walLimitMiB?: number;
  /**
   * Nothing is logged while the disk holding outDir has less than this many MiB free: the room
   * checkpoints and compaction need. Default 1024.
   */
  minFreeMiB?: number;
  /** Log segments are sealed and compacted at this size. Default 32. */
  walSegmentMiB?: number;
  seed?: number;
  /** Where the learner computes: 'auto' (CUDA when installed and working, else CPU), 'cpu', 'cuda'. */
  device?: DevicePreference;
  dashboardPort?: number;
  host?: string;
  token?: string;
  log?: (line: string) => void;
}

/** Throws a ResrtError naming the first bad option and its fix. */
export function checkServiceOptions(o: LearnerServiceOptions): void {
  const bad = (what: string, fix: string): never => {
    throw new ResrtError(`learner: ${what}`, fix);
  };
  if (o.publishEvery !== undefined && !(Number.isInteger(o.publishEvery) && o.publishEvery > 0))
    bad(`publishEvery = ${o.publishEvery}`, 'publish every N actor updates, N a positive integer (e.g. 50)');
  if (o.checkpointEverySec !== undefined && !(o.checkpointEverySec > 0))
    bad(`checkpointEverySec = ${o.checkpointEverySec}`, 'give a positive number of seconds (e.g. 60)');
  if (o.rewardMode !== undefined && o.rewardMode !== 'task' && o.rewardMode !== 'rlif')
    bad(`rewardMode = ${String(o.rewardMode)}`, "use 'task' or 'rlif'");
  for (const [key, value, min, fix] of [
    [
      'walLimitMiB',
      o.walLimitMiB,
      1 / 1024,
      'give the MiB the write-ahead log may take on disk (default 65536)',
    ],
    [
      'minFreeMiB',
      o.minFreeMiB,
      0,
      'give the MiB to keep free on the disk of --out (default 1024; 0 for none)',
    ],
    ['walSegmentMiB', o.walSegmentMiB, 1 / 1024, 'give a segment size in MiB (default 32)'],
  ] as const)
    if (value !== undefined && !(Number.isFinite(value) && value >= min)) bad(`${key} = ${value}`, fix);
  if (o.demoCapacity !== undefined && !(Number.isInteger(o.demoCapacity) && o.demoCapacity > 0))
    bad(`demoCapacity = ${o.demoCapacity}`, 'give a positive whole number of transitions');
  if (
    o.brokerPort !== undefined &&
    !(Number.isInteger(o.brokerPort) && o.brokerPort >= 0 && o.brokerPort < 65536)
  )
    bad(`brokerPort = ${o.brokerPort}`, 'use a TCP port in 0..65535 (0 picks a free one)');
}
