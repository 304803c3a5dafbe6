/**
 * Small camera models for push-cam (12 state values, 3 actions, camera "top" 84 x 84), written by
 * the project's own exporters: a visuomotor BC base (`exportVisuomotorBc`, a conv encoder with an
 * `embedding` output, as `resrt bc --cameras` writes it) with seeded untrained weights, and camera
 * residuals (`residualPolicySpec` with a feature width, as `resrt train --encoder base-embedding`
 * exports them). The base reads 32 x 32 images, so the task's 84 x 84 frames are cropped and resized.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initEngine } from '../src/nn/index.js';
import { exportResidualOnnx, residualPolicySpec } from '../src/residual/export.js';
import { exportVisuomotorBc } from '../src/sim/bc-export.js';
import { BcNetwork } from '../src/sim/bc-network.js';
import type { DenseLayerSpec } from '../src/types.js';
import { Rng } from '../src/util/rng.js';

export const PUSH_CAM = { obsDim: 12, actionDim: 3, camera: 'top', cameraSize: 84 } as const;
/** The base's embedding width (the camera encoder's features). */
export const EMBEDDING = 8;

/** Writes the visuomotor base to dir/base.onnx and returns its path. */
export async function writeCameraBase(dir: string, seed = 1): Promise<string> {
  const engine = await initEngine({ device: 'cpu', threads: 1 });
  const net = new BcNetwork(
    engine,
    {
      stateDim: PUSH_CAM.obsDim,
      cameras: [
        { name: PUSH_CAM.camera, encoder: { height: 32, width: 32, channels: [4, 8], features: EMBEDDING } },
      ],
      hidden: [16],
      layerNorm: false,
      outDim: PUSH_CAM.actionDim,
    },
    new Float32Array(PUSH_CAM.obsDim),
    new Float32Array(PUSH_CAM.obsDim).fill(1),
  );
  const params = net.init(new Rng(seed));
  // The head's output layer starts near zero (init's choice for training); a visibly acting base
  // makes the test's comparisons meaningful.
  const w = net.layout.view(params, 'l1/w');
  for (let i = 0; i < w.length; i++) w[i] *= 30;
  const bytes = exportVisuomotorBc(
    net,
    params,
    [{ name: PUSH_CAM.camera, width: 32, height: 32, channels: 3, depth: false }],
    { length: 1, actionDim: PUSH_CAM.actionDim },
    {},
  );
  const path = join(dir, 'base.onnx');
  writeFileSync(path, bytes);
  return path;
}

function denseLayers(widths: number[], rng: Rng): DenseLayerSpec[] {
  return widths.slice(0, -1).map((inDim, l) => {
    const outDim = widths[l + 1];
    const last = l + 2 === widths.length;
    return {
      inDim,
      outDim,
      weight: Float32Array.from({ length: inDim * outDim }, () => rng.normal(0, Math.sqrt(2 / inDim))),
      bias: Float32Array.from({ length: outDim }, () => rng.normal(0, 0.05)),
      activation: last ? 'linear' : 'relu',
    };
  });
}

/**
 * Writes a camera residual reading [base_embedding (embeddingDim) | obs | base_action] with the
 * given version; its weights follow the seed, so two versions act differently.
 */
export function writeCameraResidual(
  dir: string,
  name: string,
  options: { version: number; seed: number; embeddingDim?: number },
): string {
  const E = options.embeddingDim ?? EMBEDDING;
  const { obsDim, actionDim } = PUSH_CAM;
  const spec = residualPolicySpec({
    layers: denseLayers([E + obsDim + actionDim, 16, actionDim], new Rng(options.seed)),
    obsDim: E + obsDim,
    featureDim: E,
    actionDim,
    actionScale: 0.3,
    useBase: true,
    obsMean: null,
    obsStd: null,
    version: options.version,
  });
  const path = join(dir, name);
  exportResidualOnnx(spec, path);
  return path;
}
