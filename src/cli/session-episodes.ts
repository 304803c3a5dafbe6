/**
 * A stopped learner's session as demonstrations: its write-ahead log's transitions grouped into
 * finished episodes (`resrt export lerobot --session`, `resrt import session`). Where the actors
 * sent JPEG frames (`--send-frames jpeg`), each episode also has the frames of every observation,
 * the last one included: episodes a person labelled become data for `resrt reward train`.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { TransitionWal } from '../residual/service/wal.js';
import { decodeJpegPayload, type CameraPayload } from '../runtime/session/camera-batch.js';
import type { SessionTransition } from '../runtime/session/codec.js';
import type { DemoEpisode, DemoSet } from '../sim/demos.js';
import type { CameraFrames, CameraSpec } from '../types.js';
import { ResrtError } from '../util/errors.js';

export interface SessionEpisodes {
  set: DemoSet;
  /** Present when the session holds JPEG frames; then only episodes with every frame are in `set`. */
  frames: { cameras: CameraSpec[]; load(ep: DemoEpisode): CameraFrames[] } | null;
  /** Finished episodes left out because some observation's JPEG frames are missing. */
  withoutFrames: number;
  /** Finished episodes left out with `labelledOnly` because no person labelled them. */
  unlabelled: number;
}

type JpegFrames = Readonly<Record<string, Uint8Array>>;

const jpegOf = (p: CameraPayload | null | undefined): JpegFrames | null =>
  p?.kind === 'jpeg' ? p.jpeg : null;

/**
 * Reads `dir`/wal; `fps` is the robots' control rate (the log does not hold it). With
 * `frames: false` every finished episode comes without frames; with `labelledOnly` only those
 * whose outcome a person labelled (dashboard, terminal key, MQTT).
 */
export function readSessionEpisodes(
  dir: string,
  fps: number,
  options: { frames?: boolean; labelledOnly?: boolean } = {},
): SessionEpisodes {
  const walDir = join(dir, 'wal');
  if (!existsSync(walDir))
    throw new ResrtError(
      `${dir} has no write-ahead log (wal/)`,
      'pass the folder the learner wrote (`resrt learner --out DIR`)',
    );
  const episodes = new Map<string, SessionTransition[]>();
  let obsDim = 0;
  let actionDim = 0;
  let sessionHasJpeg = false;
  const wal = TransitionWal.open(walDir, {
    transitions(batch) {
      obsDim = batch.obsDim;
      actionDim = batch.actionDim;
      if (batch.camera?.kind === 'jpeg' && options.frames !== false) sessionHasJpeg = true;
      for (const t of batch.transitions) {
        const key = `${t.robotId}/${t.episode}`;
        (episodes.get(key) ?? episodes.set(key, []).get(key)!).push(t);
      }
    },
    episode() {},
  });
  wal.close();

  const out: DemoEpisode[] = [];
  let unlabelled = 0;
  const frameLists: JpegFrames[][] = [];
  let withoutFrames = 0;
  for (const ts of episodes.values()) {
    ts.sort((a, b) => a.step - b.step);
    const last = ts[ts.length - 1];
    if (!(last.terminated || last.truncated)) continue;
    if (options.labelledOnly && !last.labelled) {
      unlabelled++;
      continue;
    }
    let jpegs: JpegFrames[] | null = null;
    if (sessionHasJpeg) {
      const list = [...ts.map((t) => jpegOf(t.camera?.obs)), jpegOf(last.camera?.next)];
      if (list.some((f) => f === null)) {
        withoutFrames++;
        continue;
      }
      jpegs = list as JpegFrames[];
    }
    out.push({
      episode: out.length,
      seed: last.episode,
      success: last.success,
      terminated: last.terminated,
      truncated: last.truncated,
      obs: [...ts.map((t) => t.obs), last.nextObs],
      actions: ts.map((t) => t.action),
      rewards: ts.map((t) => t.reward),
    });
    if (jpegs) frameLists.push(jpegs);
  }

  let frames: SessionEpisodes['frames'] = null;
  if (frameLists.length > 0) {
    const first = decodeJpegPayload(frameLists[0][0], `${dir} episode 0`);
    const cameras: CameraSpec[] = Object.entries(first).map(([name, f]) => ({
      name,
      width: f.width,
      height: f.height,
      channels: 3,
      depth: false,
    }));
    frames = {
      cameras,
      load: (ep) =>
        frameLists[ep.episode].map((jpeg, t) => {
          const decoded = decodeJpegPayload(jpeg, `${dir} episode ${ep.episode} observation ${t}`);
          for (const c of cameras) {
            const f = decoded[c.name];
            if (!f || f.width !== c.width || f.height !== c.height)
              throw new ResrtError(
                `${dir} episode ${ep.episode} observation ${t}: camera "${c.name}" is ${f ? `${f.width}x${f.height}` : 'missing'}, the session's first frame ${c.width}x${c.height}`,
                'import sessions whose actors sent the same cameras at one size',
              );
          }
          return decoded;
        }),
    };
  }
  return {
    set: {
      header: {
        format: 'resrt-demos',
        version: 1,
        task: 'session',
        obsDim,
        actionDim,
        obsNames: Array.from({ length: obsDim }, (_, i) => `obs[${i}]`),
        actionNames: Array.from({ length: actionDim }, (_, i) => `action[${i}]`),
        controlDt: 1 / fps,
        createdAt: new Date().toISOString(),
        source: `session ${dir}`,
      },
      episodes: out,
      tornTail: false,
    },
    frames,
    withoutFrames,
    unlabelled,
  };
}
