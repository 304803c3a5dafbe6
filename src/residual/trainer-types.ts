/** The options, progress and results of a residual run (`trainResidual`, ./trainer.ts), and what it checkpoints. */
import type { CameraFrames, Env, Policy } from '../types.js';
import type { DemoEpisode, DemoSet } from '../sim/demos.js';
import type { EvalResult } from '../runtime/evaluate.js';
import type { SuccessJudge } from '../runtime/success-detector.js';
import type { DevicePreference } from '../nn/index.js';
import type { ProfileName, ResidualConfig } from './config.js';
import type { RngState } from './rng-state.js';
import type { CurvePoint } from './curves.js';
import type { EvaluationRecord, HeldOutResult } from './held-out.js';
import type { MixingEpisode, MixingSpec, MixingState } from './mixing-run.js';
import type { KeptEvaluation } from './kept-residual.js';
import type { StateEncoderSource } from './encoder-choice.js';

export interface TrainProgress {
  envSteps: number;
  totalSteps: number;
  episodes: number;
  updates: number;
  updatesPerSec: number;
  /** Latest evaluation success rate (no noise). */
  evalSuccessRate: number | null;
  /** Success over the last 100 training episodes. */
  trainSuccessRate: number | null;
  qMean: number | null;
  criticLoss: number | null;
  actorLoss: number | null;
  phase: 'warmup' | 'critic-warmup' | 'training' | 'evaluating' | 'done';
  /** With mixing: the exploring share planned for the current episode. */
  mixingShare?: number;
}

/** One training step as executed, for observers (tests, logging). */
export interface TrainStepInfo {
  /** Training episode index (0-based, counting resumed ones). */
  episode: number;
  /** Step within the episode. */
  step: number;
  obs: Float32Array;
  baseAction: Float32Array;
  /** The exploring residual (policy + noise, clipped to ±actionScale) before mixing; zero when w = 0. */
  residual: Float32Array;
  /** The exploring policy's weight w_t (1 without mixing). */
  weight: number;
  /** What was sent to the environment: clip(base + w·residual). */
  action: Float32Array;
}

export interface TrainOptions {
  /** A fresh environment per call (training and evaluation use separate instances). */
  makeEnv: () => Env | Promise<Env>;
  /** The frozen base policy. Ignored (zero base) when config.useBase is false. */
  base: Policy;
  demos?: DemoSet;
  /**
   * The camera frames of a demonstration episode (one per observation), for visuomotor bases and
   * camera residuals: the CLI passes the sidecar reader (src/sim/demos.ts loadEpisodeFrames).
   */
  demoFrames?: (episode: DemoEpisode) => CameraFrames[];
  /** Environment steps to train for (total, including any resumed ones). */
  steps: number;
  outDir: string;
  resume?: boolean;
  seed?: number;
  /** 'auto' picks from the learner's device (GPU → gpu); see docs/learner.md. */
  profile?: ProfileName | 'auto';
  config?: Partial<ResidualConfig>;
  /** Evaluate every this many env steps (at the next episode end); 0 = only at start and end. */
  evalEvery?: number;
  evalEpisodes?: number;
  /**
   * The evaluation the run reports, after training: the written residual.onnx with the base, on
   * held-out seeds (src/residual/held-out.ts). `episodes` defaults to evalEpisodes; `base: false`
   * skips the base's own held-out evaluation (a robot's time), leaving the step-0 one.
   */
  heldOut?: { episodes?: number; base?: boolean };
  /**
   * Which residual the run writes as residual.onnx: 'final' (default) the weights training ended
   * with; 'best' those of the periodic evaluation with the highest success rate, the final one
   * included (kept-residual.ts). 'best' needs evalEvery > 0: a simulator, not a robot's time.
   */
  keep?: 'final' | 'best';
  /** Checkpoint every this many env steps (at the next episode end); 0 = only at the end. */
  checkpointEvery?: number;
  /** Run the learner in a worker thread (second core). Default true; false is deterministic. */
  worker?: boolean;
  /** Where the learner computes: 'auto' (CUDA when installed and working, else CPU), 'cpu', 'cuda'. */
  device?: DevicePreference;
  /** The learner's onnxruntime intra-op threads (default: docs/learner.md, "Threads"). */
  threads?: number;
  /** Called at most every ~100 ms and at every evaluation. */
  onProgress?: (p: TrainProgress) => void;
  /** Log lines (engine, profile, checkpoints). Default: stderr. */
  log?: (line: string) => void;
  /** Task name for file titles and the checkpoint check. */
  taskName?: string;
  /**
   * Conservative mixing (src/safety/mixing.ts): each training episode gets a plan and executes
   * clip(a_base + w_t·a_res) with w_t = plan.weightAt(t); the replay stores the executed action.
   * Evaluation is unaffected (it measures the residual itself). Omit it for unconstrained training.
   */
  mixing?: MixingSpec;
  /** Called after every training step with what was executed. */
  onTrainStep?: (s: TrainStepInfo) => void;
  /**
   * A learned success detector as the training episodes' success source (reward, termination);
   * the task's own success is kept beside it (TrainEpisode.trueSuccess). Evaluation still
   * measures the task's success.
   */
  successDetector?: SuccessJudge & { path?: string };
  /**
   * What trains the frozen encoder of encoder 'state' (and 'auto' where it can) from the
   * demonstrations; without it those modes find no demonstrations to train from.
   */
  stateEncoder?: StateEncoderSource;
}

/** A training episode's outcome. */
export interface TrainEpisode {
  episode: number;
  /** Env steps done when it ended (cumulative). */
  envSteps: number;
  steps: number;
  success: boolean;
  /** With a success detector: the task's own verdict (`success` is the detector's). */
  trueSuccess?: boolean;
}

export interface TrainResult {
  profile: ProfileName;
  profileReason: string;
  /** The training engine that ran, in words (e.g. "onnxruntime-node 1.30.0 on the CPU, 1 intra-op thread"). */
  backend: string;
  config: ResidualConfig;
  envSteps: number;
  updates: number;
  episodes: number;
  curve: CurvePoint[];
  /** The first evaluation (the base alone, since the residual starts at zero). */
  baseEval: EvalResult | null;
  /** The last evaluation during training (null when it happened before a resume). */
  finalEval: EvalResult | null;
  /** What the run reports: residual.onnx (and the base) on held-out seeds; null if nothing was written. */
  heldOut: HeldOutResult | null;
  /** Every evaluation summary.json names, keyed as there. */
  evaluations: Record<string, EvaluationRecord>;
  onnxPath: string;
  /** With keep 'best': the evaluation whose residual residual.onnx holds. */
  kept: KeptEvaluation | null;
  wallSeconds: number;
  resumedFrom: number | null;
  /**
   * Every training episode in order, resumed ones included (a checkpoint written before this was
   * kept holds none, so episodes before such a resume are missing).
   */
  trainEpisodes: TrainEpisode[];
  /** With mixing: every training episode's plan and outcome (resumed ones included), as in mixing.jsonl. */
  mixing: MixingEpisode[] | null;
}

/** What the acting side checkpoints beside the learner, and gets back on resume. */
export interface TrainerState {
  envSteps: number;
  episodes: number;
  rng: RngState;
  curve: CurvePoint[];
  recentSuccess: boolean[];
  /** Absent in checkpoints written before it was kept. */
  trainEpisodes?: TrainEpisode[];
  wallSeconds: number;
  lastEvalAt: number;
  lastCheckpointAt: number;
  /** Present only for runs with mixing, so checkpoints of other runs are unchanged. */
  mixing?: MixingState;
}
