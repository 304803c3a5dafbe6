/**
 * bench/success-detector: does a learned success detector stand in for the true reward? Two
 * residual runs on push-cam, identical but for the success source of the training episodes: the
 * task's own success, and the detector (`resrt reward train` file) judging the top camera's frames.
 * Both are evaluated on the task's true success. The residual here reads the privileged state
 * (push-cam's observation plus the goal, as the `push` task's 16 values) on top of a noisy
 * privileged scripted expert as the base; the detector sees only the camera. (The same comparison
 * from the camera, over an image-BC base: `resrt train --success-detector` against `resrt train`,
 * BENCHMARKS.md "Success detector".)
 *
 *   npx tsx bench/success-detector.ts --detector detector.onnx [--steps 6000] [--eval-episodes 100] [--seed 0] [--json]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatTable, pct } from '../src/cli/common.js';
import { trainResidual, type TrainResult } from '../src/residual/trainer.js';
import { detectorAgreement } from '../src/residual/trainer-report.js';
import { SuccessDetector } from '../src/runtime/success-detector.js';
import { type CameraStream, detectorStreams } from '../src/sim/camera/sim-cameras.js';
import { MujocoEnv } from '../src/sim/env.js';
import { ImperfectExpert } from '../src/sim/expert.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import type { Env } from '../src/types.js';

const args = process.argv.slice(2);
const value = (name: string, fallback?: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const json = args.includes('--json');
const detectorPath = value('--detector');
if (!detectorPath) {
  console.error(
    'bench/success-detector needs --detector FILE.onnx (resrt reward train --data ... --out FILE.onnx)',
  );
  process.exit(2);
}
const steps = Number(value('--steps', '6000'));
const evalEpisodes = Number(value('--eval-episodes', '100'));
const seed = Number(value('--seed', '0'));
/** The base: the scripted expert with a per-episode bias, so it fails often enough to improve on. */
const baseNoise = { jitterStd: 0.05, biasStd: 0.06, pauseProbability: 0.02, maxPauseSteps: 5 };

/**
 * push-cam whose observation is the privileged one (the goal included); frames pass through, with
 * the detector's own camera streams (`collect --detector-cameras`) where it reads any.
 */
async function privilegedPushCam(streams: readonly CameraStream[]): Promise<Env> {
  const env = await MujocoEnv.create(pushCamTask, streams.length ? { cameras: { extra: streams } } : {});
  const names = pushCamTask.privilegedObservation!.names;
  return {
    id: env.id,
    observationSpace: {
      dim: names.length,
      low: names.map(() => -Infinity),
      high: names.map(() => Infinity),
      names,
    },
    actionSpace: env.actionSpace,
    controlDt: env.controlDt,
    maxEpisodeSteps: env.maxEpisodeSteps,
    cameras: env.cameras,
    auxCameras: env.auxCameras,
    reset: (o) => ({ ...env.reset(o), obs: env.expertObservation() }),
    step: (a) => ({ ...env.step(a), obs: env.expertObservation() }),
    close: () => env.close(),
  };
}

async function run(detector: SuccessDetector | undefined): Promise<TrainResult> {
  const dir = mkdtempSync(join(tmpdir(), 'resrt-bench-detector-'));
  try {
    return await trainResidual({
      makeEnv: () =>
        privilegedPushCam(
          detector ? detectorStreams(detector.cameras, pushCamTask.cameras?.names ?? []) : [],
        ),
      base: new ImperfectExpert(pushCamTask.expert!(), 3, baseNoise, seed),
      steps,
      outDir: dir,
      seed,
      evalEpisodes,
      evalEvery: 0,
      profile: 'cpu',
      device: 'cpu',
      log: () => {},
      successDetector: detector,
      // A state-only base (the scripted expert): the residual reads the privileged state.
      config: { encoder: 'none' },
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const detector = await SuccessDetector.load(detectorPath);
const truth = await run(undefined);
const learned = await run(detector);
await detector.close();
const agree = detectorAgreement(learned.trainEpisodes)?.agreement ?? NaN;
const rate = (r: TrainResult): number => r.finalEval?.successRate ?? r.curve[r.curve.length - 1].successRate;
const out = {
  task: `push-cam (privileged state residual; detector on ${detector.cameras.map((c) => `${c.name} ${c.width}x${c.height}`).join(', ')})`,
  detector: detectorPath,
  threshold: detector.threshold,
  steps,
  eval_episodes: evalEpisodes,
  seed,
  base_success: truth.baseEval?.successRate ?? null,
  true_reward: { final_success: rate(truth), wall_seconds: truth.wallSeconds, episodes: truth.episodes },
  detector_reward: {
    final_success: rate(learned),
    wall_seconds: learned.wallSeconds,
    episodes: learned.episodes,
    train_episodes_agreeing_with_truth: agree,
  },
  difference_points: 100 * (rate(learned) - rate(truth)),
};
if (json) console.log(JSON.stringify(out));
else {
  console.log(
    formatTable(
      ['success source', 'base', `after ${steps} steps`, 'wall s', 'train episodes agreeing with truth'],
      [
        [
          'task (true reward)',
          pct(out.base_success ?? NaN),
          pct(rate(truth)),
          truth.wallSeconds.toFixed(0),
          '-',
        ],
        [
          'detector',
          pct(learned.baseEval?.successRate ?? NaN),
          pct(rate(learned)),
          learned.wallSeconds.toFixed(0),
          pct(agree),
        ],
      ],
    ),
  );
  console.log(`difference: ${out.difference_points.toFixed(1)} points`);
}
