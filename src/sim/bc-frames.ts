/**
 * The camera side of BC's dataset: which recorded cameras a policy reads, and their frames decoded
 * from the demonstrations' sidecar once and held as uint8, one frame per training row (the
 * observation each action was taken at). Batches become floats only when drawn (src/nn/image-batch).
 */
import type { CameraSpec } from '../types.js';
import { ResrtError } from '../util/errors.js';
import type { FrameStore } from '../nn/index.js';
import { type DemoEpisode, type DemoSet, loadEpisodeFrames } from './demos.js';

/**
 * 'auto': every observation camera the demonstrations recorded (none for state-only files); a
 * success detector's 'auto' is its own streams (`collect --detector-cameras`) where there are any.
 */
export type BcCameraChoice = 'auto' | 'none' | readonly string[];

/** The recorded cameras a BC policy reads, checked against the file; [] for a state-only policy. */
export function chooseBcCameras(
  demos: DemoSet,
  choice: BcCameraChoice,
  auto: 'observation' | 'detector' = 'observation',
): CameraSpec[] {
  const recorded = demos.header.cameras ?? [];
  if (choice === 'none') return [];
  if (choice === 'auto') {
    // Streams recorded for a success detector (`collect --detector-cameras`) are not what a policy
    // reads; a detector reads them when there are any.
    const streams = recorded.filter((c) => c.mjcfCamera !== undefined);
    const observation = recorded.filter((c) => c.mjcfCamera === undefined);
    return (auto === 'detector' && streams.length > 0 ? streams : observation).map(checkRgb);
  }
  if (choice.length === 0) return [];
  if (recorded.length === 0) {
    throw new ResrtError(
      `BC from pixels needs camera frames, and the demonstrations of ${demos.header.task} have none (asked for ${choice.map((c) => `"${c}"`).join(', ')})`,
      `collect them on a task with cameras, e.g. \`resrt collect --task push-cam --episodes 400 --out demos.jsonl\` (frames go to demos.jsonl.frames), or train on the state alone with --cameras none`,
    );
  }
  const seen = new Set<string>();
  return choice.map((name) => {
    const spec = recorded.find((c) => c.name === name);
    if (!spec) {
      throw new ResrtError(
        `camera "${name}" is not in the demonstrations (they record: ${recorded.map((c) => c.name).join(', ')})`,
        `pass --cameras ${recorded.map((c) => c.name).join(',')}, or collect demonstrations that record "${name}"`,
      );
    }
    if (seen.has(name))
      throw new ResrtError(
        `camera "${name}" is listed twice`,
        `name each camera once, e.g. --cameras ${name}`,
      );
    seen.add(name);
    return checkRgb(spec);
  });
}

function checkRgb(spec: CameraSpec): CameraSpec {
  if (spec.channels !== 3) {
    throw new ResrtError(
      `camera "${spec.name}" records ${spec.channels}-channel frames; BC's encoders read RGB`,
      'record RGB frames (3 channels) for this camera',
    );
  }
  return spec;
}

/**
 * For each camera, the frames of observations 0…T−1 of every episode, in dataset row order.
 * Decodes one episode at a time, so the PNGs never sit in memory beside the bytes.
 */
export function loadFrameStores(
  demos: DemoSet,
  episodes: readonly DemoEpisode[],
  cameras: readonly CameraSpec[],
): FrameStore[] {
  if (cameras.length === 0) return [];
  const rows = episodes.reduce((s, e) => s + e.actions.length, 0);
  const stores = cameras.map((c): FrameStore => {
    const bytes = rows * c.height * c.width * 3;
    let data: Uint8Array;
    try {
      data = new Uint8Array(bytes);
    } catch {
      throw new ResrtError(
        `the frames of camera "${c.name}" for ${rows} steps need ${(bytes / 2 ** 30).toFixed(1)} GiB as bytes, more than this process can hold`,
        'train on fewer demonstrations (collect fewer episodes, or split the file)',
      );
    }
    return { height: c.height, width: c.width, data, count: rows };
  });
  let row = 0;
  for (const ep of episodes) {
    const frames = loadEpisodeFrames(demos, ep);
    for (let t = 0; t < ep.actions.length; t++, row++) {
      cameras.forEach((c, k) => {
        const frame = frames[t][c.name];
        const store = stores[k];
        const size = store.height * store.width * 3;
        if (!frame || frame.data.length !== size) {
          throw new ResrtError(
            `episode ${ep.episode} step ${t} has no ${c.width}x${c.height} RGB frame from camera "${c.name}"`,
            'the frames file does not match its demonstrations; collect them again with `resrt collect`',
          );
        }
        store.data.set(frame.data, row * size);
      });
    }
  }
  return stores;
}
