/**
 * The state encoder of a residual run's encoder 'state' (and the cpu profile's 'auto'): trained
 * from the run's demonstrations to what the task's observation lacks and its cameras show
 * (`cameraTargets`), as `resrt encoder train` trains one, and written into the run folder.
 */
import { join } from 'node:path';
import type { DevicePreference } from '../nn/index.js';
import type { StateEncoderSource } from '../residual/encoder-choice.js';
import type { DemoSet } from '../sim/demos.js';
import type { AnyTask } from '../sim/registry.js';
import { trainStateEncoder, type StateEncoderResult } from '../sim/state-encoder.js';
import { writeFileAtomic } from '../util/files.js';

export const STATE_ENCODER_FILE = 'state-encoder.onnx';

/** What `resrt encoder train` and a run's state encoder write beside the file (FILE.train.json). */
export function writeStateEncoder(path: string, demos: DemoSet, result: StateEncoderResult): object {
  const summary = {
    encoder: path,
    task: demos.header.task,
    cameras: result.cameras,
    targets: result.targets,
    samples: result.samples,
    validation_samples: result.validationSamples,
    train_loss: result.trainLoss,
    validation_loss: result.validationLoss,
    held_out: result.errors,
    held_out_joint: { median: result.jointMedian, p90: result.jointP90 },
    export_max_abs_error: result.exportMaxAbsError,
    backend: result.backend,
    seconds: result.seconds,
  };
  writeFileAtomic(`${path}.train.json`, JSON.stringify(summary, null, 2));
  writeFileAtomic(path, result.onnx);
  return summary;
}

/** Why these demonstrations cannot train the task's state encoder, or null when they can. */
function unavailableReason(task: AnyTask | null, demos: DemoSet | undefined): string | null {
  const targets = task?.privilegedObservation?.cameraTargets;
  if (!task) return 'a robot records no simulator state to learn from';
  if (!targets?.length)
    return `task ${task.name} names no cameraTargets (state its observation lacks and its cameras show)`;
  if (!demos) return 'no demonstrations were given (--demos)';
  if (!demos.framesPath) return `the demonstrations of ${demos.header.task} carry no camera frames`;
  const recorded = demos.header.environmentStateNames ?? [];
  const missing = targets.filter((t) => !recorded.includes(t));
  if (missing.length)
    return `the demonstrations record no ${missing.join(', ')} (collected before resrt recorded environment state: collect them again)`;
  return null;
}

export function stateEncoderSource(
  task: AnyTask | null,
  demos: DemoSet | undefined,
  options: { seed: number; device?: DevicePreference; threads?: number },
): StateEncoderSource {
  const unavailable = unavailableReason(task, demos);
  return {
    unavailable,
    async prepare(outDir, log) {
      const path = join(outDir, STATE_ENCODER_FILE);
      const targets = task!.privilegedObservation!.cameraTargets!;
      log(`state encoder: training one from the demonstrations' frames to ${targets.join(', ')}`);
      const result = await trainStateEncoder(
        demos!,
        { targets, seed: options.seed, device: options.device ?? 'auto', threads: options.threads },
        undefined,
        log,
      );
      writeStateEncoder(path, demos!, result);
      const errors = result.errors.map((e) => `${e.name} ${e.median.toPrecision(2)}`).join(', ');
      log(
        `state encoder: ${path} in ${result.seconds.toFixed(0)} s; held-out median error ${errors} (joint ${result.jointMedian.toPrecision(2)}, p90 ${result.jointP90.toPrecision(2)})`,
      );
      return path;
    },
  };
}
