/**
 * resrt's training engine: ONNX graphs built in TypeScript, reverse-mode autodiff over a small op
 * set, optimizer steps inside the graph, run by onnxruntime-node on the CPU or CUDA. Imports only
 * src/types and src/util; src/residual and src/sim build their learners on it.
 */
export { Graph, Value, sizeOf, sameShape, NN_OPSET, type DType, type TapeEntry } from './graph.js';
export * as op from './ops.js';
export { grad } from './autodiff.js';
export { ParamLayout, DoubleBuffer, type ParamSpec, type ParamEntry } from './params.js';
export {
  adamStep,
  addAdamUpdate,
  polyak,
  AdamClock,
  adamDefaults,
  type AdamConfig,
  type AdamScalars,
} from './optim.js';
export {
  mlpApply,
  mlpParamSpecs,
  mlpWidths,
  convApply,
  convParamSpecs,
  LAYER_NORM_EPS,
  type MlpSpec,
  type ConvSpec,
} from './layers.js';
export {
  convEncoderApply,
  convEncoderGrid,
  convEncoderMacs,
  CONV_ENCODER_POOLINGS,
  convEncoderParamSpecs,
  flattenBatch,
  initConvEncoder,
  validateConvEncoderSpec,
  type ConvEncoderSpec,
  type ConvEncoderPooling,
} from './conv-encoder.js';
export { framesToBatch, randomShifts, type FrameStore } from './image-batch.js';
export {
  initEngine,
  defaultThreads,
  cudaProviderPath,
  CompiledGraph,
  type Engine,
  type EngineOptions,
  type Device,
  type DevicePreference,
  type CompileOptions,
} from './session.js';
