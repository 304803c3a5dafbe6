/**
 * The actor's episode number, kept in stateDir/episode.json across restarts: the learner tells a
 * restarted actor's abandoned episode from its next one by the number, and a simulator's reset
 * seed follows it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ResrtError } from '../../util/errors.js';
import { writeFileAtomic } from '../../util/files.js';

export class EpisodeCounter {
  /** The number of the first episode this run starts (0 in a fresh state folder). */
  readonly first: number;
  private readonly path: string;
  /** The episode number whose successor the file holds (-1: none written by this run). */
  private written = -1;

  /** `attempt` runs a write into the state folder and says whether the disk took it (ActorStorage.attempt). */
  constructor(
    stateDir: string,
    private readonly attempt: (what: string, write: () => void) => boolean,
  ) {
    this.path = join(stateDir, 'episode.json');
    this.first = existsSync(this.path) ? readEpisodeCounter(this.path) : 0;
  }

  /** Puts `episode + 1` on disk before episode `episode` starts; false while the disk refuses it. */
  save(episode: number): boolean {
    if (this.written === episode) return true;
    const next = { next: episode + 1 };
    if (!this.attempt('episode counter', () => writeFileAtomic(this.path, JSON.stringify(next))))
      return false;
    this.written = episode;
    return true;
  }
}

function readEpisodeCounter(path: string): number {
  let next: unknown;
  try {
    next = (JSON.parse(readFileSync(path, 'utf8')) as { next?: unknown }).next;
  } catch {
    next = undefined;
  }
  if (typeof next !== 'number' || !Number.isSafeInteger(next) || next < 0) {
    throw new ResrtError(
      `${path} does not hold an episode counter ({"next": N})`,
      'move the file away; the actor then numbers episodes from 0 again',
    );
  }
  return next;
}
