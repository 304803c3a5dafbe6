/** The safety layer's public surface (what the runtime and the CLI import). */
export { SafetyLayer, type RelevantSetFn, type SafetyLayerOptions } from './layer.js';
export {
  loadSafetyConfig,
  parseSafetyConfig,
  defaultSafetyConfig,
  resolveSafetyConfig,
  type SafetyConfig,
  type SafetyConfigInput,
  type ResolvedSafetyConfig,
  type MaskSchedule,
} from './config.js';
export {
  SAFETY_EVENT_KINDS,
  type SafetyEventKind,
  type SafetyFilterResult,
  type SafetyState,
  type ResetResult,
} from './events.js';
export {
  projectAction,
  workspaceBounds,
  brakingVelocity,
  makeProjectionScratch,
  MaskBit,
  type MaskInputs,
} from './masks.js';
export { maskProbability } from './epsilon.js';
export {
  lowerConfidenceBound,
  upperConfidenceBound,
  normalQuantile,
  BOUND_KINDS,
  type BoundKind,
} from './bounds.js';
export {
  ConservativeMixer,
  EpsMix,
  StepMix,
  ResidualScaleMix,
  EpisodePlan,
  type EpisodeRecord,
  type MixingOptions,
  type MixMode,
  type BaselineSpec,
} from './mixing.js';
