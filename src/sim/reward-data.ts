/**
 * Labelled frames for the success detector from demonstration files with frames (`resrt collect`
 * on a task with cameras): each episode's `success` flag is its label, and its sidecar holds the
 * frames of every observation. Any source that writes this format (a session's episodes, a
 * person's recordings) feeds `resrt reward train` the same way; docs/success-detector.md.
 */
import type { CameraSpec } from '../types.js';
import { ResrtError } from '../util/errors.js';
import type { FrameStore } from '../nn/index.js';
import { chooseBcCameras } from './bc-frames.js';
import { type DemoSet, loadEpisodeFrames } from './demos.js';

export interface LabelledEpisodes {
  task: string;
  /** With `mjcfCamera` where the frames are an extra stream of that simulator camera. */
  cameras: { name: string; width: number; height: number; mjcfCamera?: string }[];
  episodes: { name: string; success: boolean; load(): FrameStore[] }[];
}

/** The episodes of `sets` (one task, the same cameras) with the chosen cameras' frames. */
export function labelledEpisodes(
  sets: readonly { path: string; demos: DemoSet }[],
  cameraChoice: 'auto' | readonly string[],
): LabelledEpisodes {
  if (sets.length === 0) throw new ResrtError('no data files given', 'pass --data demos.jsonl[,more.jsonl]');
  const first = sets[0];
  let cameras: CameraSpec[] | null = null;
  for (const { path, demos } of sets) {
    if (demos.header.task !== first.demos.header.task) {
      throw new ResrtError(
        `${path} records task ${demos.header.task}, ${first.path} task ${first.demos.header.task}`,
        demos.header.task === 'session' || first.demos.header.task === 'session'
          ? "name the session's task when you import it: `resrt import session DIR --out FILE --task T`"
          : 'train a detector on episodes of one task',
      );
    }
    if (!demos.header.cameras?.length) {
      throw new ResrtError(
        `${path} has no camera frames`,
        `collect episodes with frames on a task with cameras, e.g. \`resrt collect --task push-cam --episodes 150 --out ${path}\``,
      );
    }
    const chosen = chooseBcCameras(demos, cameraChoice, 'detector');
    if (cameras) {
      const same = chosen.every((c, i) => cameras![i].width === c.width && cameras![i].height === c.height);
      if (!same) {
        throw new ResrtError(
          `${path} records ${chosen.map((c) => `"${c.name}" ${c.width}x${c.height}`).join(', ')}, ${first.path} ${cameras.map((c) => `"${c.name}" ${c.width}x${c.height}`).join(', ')}`,
          'train on files recorded with the same camera sizes',
        );
      }
    } else cameras = chosen;
  }
  const specs = cameras ?? [];
  const episodes = sets.flatMap(({ path, demos }) =>
    demos.episodes.map((ep) => ({
      name: `${path} episode ${ep.episode}`,
      success: ep.success,
      load: (): FrameStore[] => {
        const frames = loadEpisodeFrames(demos, ep);
        return specs.map((c) => {
          const size = c.width * c.height * 3;
          const data = new Uint8Array(frames.length * size);
          frames.forEach((f, t) => {
            const frame = f[c.name];
            if (!frame || frame.data.length !== size) {
              throw new ResrtError(
                `${path} episode ${ep.episode} step ${t} has no ${c.width}x${c.height} RGB frame from camera "${c.name}"`,
                'the frames file does not match its demonstrations; collect them again with `resrt collect`',
              );
            }
            data.set(frame.data, t * size);
          });
          return { width: c.width, height: c.height, data, count: frames.length };
        });
      },
    })),
  );
  return {
    task: first.demos.header.task,
    cameras: specs.map((c) => ({
      name: c.name,
      width: c.width,
      height: c.height,
      ...(c.mjcfCamera !== undefined ? { mjcfCamera: c.mjcfCamera } : {}),
    })),
    episodes,
  };
}
