/**
 * Baseline: RLPD from scratch — the same off-policy learner (REDQ ensemble, LayerNorm, UTD,
 * symmetric demo sampling) with a zero base and no base input, so the actor must produce the whole
 * action. Exploration and smoothing noise use the usual TD3 sizes for full-range actions.
 */
import type { ResidualConfig } from './config.js';
import { trainResidual, type TrainOptions, type TrainResult } from './trainer.js';

export const scratchOverrides: Partial<ResidualConfig> = {
  useBase: false,
  actionScale: 1,
  explorationStd: 0.2,
  targetNoiseStd: 0.2,
  targetNoiseClip: 0.5,
  warmupNoise: 1,
};

/** `options.base` is only used to check dimensions; the policy learns the full action. */
export function trainRlpdScratch(options: TrainOptions): Promise<TrainResult> {
  return trainResidual({ ...options, config: { ...scratchOverrides, ...options.config } });
}
