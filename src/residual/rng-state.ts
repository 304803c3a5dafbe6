/**
 * Saves and restores the state of a src/util/rng Rng, so a resumed run continues the exact random
 * stream. Rng keeps its words private; until it grows getState/setState (requested from the lead),
 * this reads them through a structural view of the instance.
 */
import { Rng } from '../util/rng.js';
import { ResrtError } from '../util/errors.js';

export interface RngState {
  s: [number, number, number, number];
  spareGaussian: number | null;
}

interface RngInternals {
  s0: number;
  s1: number;
  s2: number;
  s3: number;
  spareGaussian: number | null;
}

export function getRngState(rng: Rng): RngState {
  const r = rng as unknown as RngInternals;
  return { s: [r.s0, r.s1, r.s2, r.s3], spareGaussian: r.spareGaussian };
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
  const r = rng as unknown as RngInternals;
  [r.s0, r.s1, r.s2, r.s3] = state.s;
  r.spareGaussian = state.spareGaussian;
}

export function rngFromState(state: RngState): Rng {
  const rng = new Rng(0);
  setRngState(rng, state);
  return rng;
}
