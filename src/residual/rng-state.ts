/**
 * Saves and restores the state of a src/util/rng Rng, so a resumed run continues the exact random
 * stream; restoring validates what a checkpoint holds.
 */
import { Rng, type RngState } from '../util/rng.js';
import { ResrtError } from '../util/errors.js';

export type { RngState };

export function getRngState(rng: Rng): RngState {
  return rng.getState();
}

export function setRngState(rng: Rng, state: RngState): void {
  if (
    !Array.isArray(state?.s) ||
    state.s.length !== 4 ||
    !state.s.every((w) => Number.isInteger(w) && Math.abs(w) < 2 ** 32)
  ) {
    throw new ResrtError(
      'checkpoint holds an invalid random-number state',
      'delete the checkpoint to start over',
    );
  }
  rng.setState(state);
}

export function rngFromState(state: RngState): Rng {
  const rng = new Rng(0);
  setRngState(rng, state);
  return rng;
}
