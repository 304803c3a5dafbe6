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
