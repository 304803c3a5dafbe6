/** The runtime: ONNX export/loading, base + residual composition, action chunks, the control loop. */
export {
  exportMlpToOnnx,
  mlpForward,
  randomMlpSpec,
  validateMlpSpec,
  MetaKey,
  ONNX_OPSET,
  ONNX_IR_VERSION,
} from './onnx-export.js';
export { OnnxPolicy, type OnnxPolicyOptions, type OnnxRunResult } from './onnx-policy.js';
export { inspectOnnx, inferOnce, formatInspectReport, type InspectReport } from './onnx-inspect.js';
export type { OnnxLayout, NormalizationSource } from './onnx-layout.js';
export {
  ChunkExecutor,
  isChunkPolicy,
  ResidualComposer,
  ComposedPolicy,
  type ChunkExecutorOptions,
  type ChunkPolicy,
  type ResidualModel,
  type ComposedStep,
  type ComposedPolicyOptions,
} from './compose.js';
export {
  ControlLoop,
  runControlLoop,
  passThroughSafety,
  formatLatencyTable,
  type ControlLoopOptions,
  type LoopEvent,
  type LoopEventKind,
  type LoopStats,
  type LatencyStage,
} from './loop.js';
export {
  envSource,
  robotSource,
  defaultRobotObs,
  type ObservationSource,
  type ObservationSample,
  type ActuationRecord,
  type ActuationResult,
  type EnvSource,
  type EnvSourceOptions,
  type RobotSourceOptions,
} from './sources.js';
export { fixedRate, waitUntil, nowMs, type Tick, type SchedulerOptions } from './scheduler.js';
