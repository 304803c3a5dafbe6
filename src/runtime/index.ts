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
