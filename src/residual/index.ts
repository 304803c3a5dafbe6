/** The residual off-policy learner (ResFiT-style TD3) and its baselines, for the CLI and benchmarks. */
export {
  trainResidual,
  relabelDemos,
  checkDims,
  ResidualActor,
  DivergedError,
  type TrainOptions,
  type TrainResult,
  type TrainProgress,
} from './trainer.js';
export {
  makeConfig,
  profileFor,
  profiles,
  validateConfig,
  type ResidualConfig,
  type ProfileName,
} from './config.js';
export { exportResidualOnnx, residualPolicySpec, type ResidualSpecInput } from './export.js';
export { trainRlpdScratch, scratchOverrides } from './rlpd.js';
export {
  validateMixingSpec,
  windowedViolations,
  MIXING_MODES,
  type MixingSpec,
  type MixingMode,
  type MixingBaseline,
  type MixingEpisode,
} from './mixing-run.js';
export { ResidualLearner, DivergenceError, type UpdateStats, type LearnerDims } from './td3.js';
export { readCheckpoint, writeCheckpoint, hasCheckpoint } from './checkpoint.js';
export { writeCurves, successSvg, curvesCsv, type CurvePoint, type CurveSeries } from './curves.js';
export { initEngine, type Engine, type DevicePreference } from '../nn/index.js';
export {
  trainResidualPpo,
  defaultPpoConfig,
  type PpoConfig,
  type PpoOptions,
  type PpoResult,
} from './ppo.js';
