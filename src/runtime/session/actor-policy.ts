/**
 * The policy side of an actor, checked against its plant before anything runs: the frozen base
 * (loaded from ONNX or given), what the cameras send (--send-frames), the success detector's
 * cameras, and the safety layer, all of the env's widths.
 */
import type { Env, Policy } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { OnnxPolicy } from '../onnx-policy.js';
import { checkEnvCameras } from '../success-detector.js';
import { SafetyLayer } from '../../safety/layer.js';
import { checkSendFrames } from './camera-batch.js';
import { CameraSender } from './camera-sender.js';
import type { ActorOptions } from './actor-options.js';

export interface ActorPolicy {
  base: Policy;
  cameras: CameraSender;
  safety: SafetyLayer;
  /** Closes the base when this actor loaded it (a given Policy stays its owner's). */
  close(): Promise<void>;
}

export async function openActorPolicy(options: ActorOptions, env: Env): Promise<ActorPolicy> {
  const sendFrames = checkSendFrames(options.sendFrames, options.jpegQuality);
  const O = env.observationSpace.dim;
  const A = env.actionSpace.dim;
  const detector = options.successDetector;
  if (detector) checkEnvCameras(detector, env);
  const loaded =
    typeof options.base === 'string'
      ? await OnnxPolicy.load(options.base, {
          expectObsDim: O,
          expectActionDim: A,
          cameras: Object.fromEntries((env.cameras ?? []).map((c) => [c.name, c])),
        })
      : null;
  const base: Policy = loaded ?? (options.base as Policy);
  const cameras = CameraSender.create(
    sendFrames,
    base,
    env.cameras ?? [],
    options.jpegQuality,
    env.auxCameras ?? [],
  );
  if (base.actionDim !== A) {
    throw new ResrtError(
      `the base policy outputs ${base.actionDim} action dims, ${env.id} takes ${A}`,
      'use the base policy exported for this robot/task',
    );
  }
  const safety = new SafetyLayer(options.safety ?? { actionDim: A });
  if (safety.config.actionDim !== A) {
    throw new ResrtError(
      `the safety config has actionDim ${safety.config.actionDim}, ${env.id} takes ${A}`,
      'write the safety config for this robot',
    );
  }
  return { base, cameras, safety, close: async () => loaded?.close() };
}
