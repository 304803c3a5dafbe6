/**
 * Every knob of the residual learner in one object (CleanRL style), with two named profiles: `gpu`
 * (the ResFiT recipe as published) and `cpu` (sized so a 2-core machine learns in minutes).
 */
import { nearestName } from '../util/config-check.js';
import { ResrtError } from '../util/errors.js';

export interface ResidualConfig {
  /** Hidden widths of the residual actor (2×256 default; up to 2×1024). */
  actorHidden: number[];
  /** Hidden widths of every critic head. */
  criticHidden: number[];
  /** LayerNorm after every hidden affine map, in actor and critics. */
  layerNorm: boolean;
  /** Residual output = tanh(y) × actionScale, in normalized action units. */
  actionScale: number;
  /** Critic ensemble size (REDQ N). */
  numCritics: number;
  /** Heads drawn at random for the min in the TD target (REDQ M). */
  targetSubset: number;
  /** Discount. */
  gamma: number;
  /** Polyak averaging rate for the target networks. */
  tau: number;
  /** n-step returns. */
  nStep: number;
  /** Gradient updates per environment step (update-to-data ratio). */
  utd: number;
  /** Transitions per update (half online, half demos when demos exist). */
  batchSize: number;
  /** Critic Adam learning rate. */
  criticLr: number;
  /** Actor Adam learning rate (1e-6 to 3e-4 are sensible). */
  actorLr: number;
  /** Global-norm gradient clipping, per network. */
  gradClip: number;
  /** Std of the Gaussian exploration noise added to the residual while acting. */
  explorationStd: number;
  /** Std of the target-policy smoothing noise added to the target residual. */
  targetNoiseStd: number;
  /** Clip of the target-policy smoothing noise. */
  targetNoiseClip: number;
  /** Actor (and target) update every this many critic updates (TD3 delay). */
  policyDelay: number;
  /** Online replay capacity in transitions. */
  bufferSize: number;
  /** Fraction of each batch drawn from demonstrations when there are any (RLPD: 0.5). */
  demoFraction: number;
  /** Environment steps acted with base + uniform noise before any update. */
  learningStarts: number;
  /** Amplitude of the uniform residual noise during learningStarts (× actionScale). */
  warmupNoise: number;
  /** Critic-only updates after learningStarts before the actor moves. */
  criticWarmupSteps: number;
  /** Normalize observations with statistics frozen at learningStarts (baked into the export). */
  normalizeObs: boolean;
  /** Feed the base action to the actor and critics; false for RLPD from scratch (zero base). */
  useBase: boolean;
  /**
   * What the critics see of the action: 'action' = Q(s, a) on the composed action (ResFiT as
   * published); 'residual' = Q(s, a_base, (a − a_base)/actionScale), the same information split so
   * that the residual, the only part the actor controls, is not confounded with the state.
   */
  criticInput: 'action' | 'residual';
  /**
   * Weight of a behaviour-cloning term (TD3+BC, scaled by mean |Q|) that keeps the residual near
   * the executed one on steps conservative mixing held back. Most data of a mixed run are such
   * steps, and without it the actor chases the critic's extrapolation where no residual was ever
   * executed. 0 turns it off; unconstrained runs have no held-back steps, so it never acts there.
   */
  heldBackBc: number;
  /**
   * What the residual sees of the cameras when the environment has any (state-only tasks ignore
   * it); the actor reads [features | state | base action], the critics [features | state | action].
   * 'base-embedding': the frozen base's `embedding` output (resrt bc --cameras exports one),
   *   computed once per env step when the base acts and cached in replay as a float vector.
   * 'file': a frozen encoder ONNX given by the user (encoderFile; e.g. a pretrained ResNet or
   *   DINO exported with one `observation.images.<camera>` input per camera and a [batch, E]
   *   output), run once per env step on the observation's frames, cached in replay the same way,
   *   and carried inside the exported residual.
   * 'state': a frozen encoder trained before RL from the demonstrations' frames to the state they
   *   recorded that the observation lacks and the cameras show (a simulated task's `cameraTargets`,
   *   e.g. push-cam's goal and the puck's offset to it; `resrt encoder train`'s method, written
   *   to the run folder as state-encoder.onnx), then used as 'file'. Needs demonstrations from
   *   `resrt collect` on such a task.
   * 'auto': 'state' where the demonstrations can train one, else 'base-embedding'.
   * 'none': the residual reads the state alone, frames are not used.
   * 'learned': one conv encoder per camera (ResFiT/DrQ) trained by the critic loss alone on frames
   *   sampled from replay with random shift (pad 4); the actor reads its features detached.
   */
  encoder: EncoderMode;
  /** The encoder ONNX of encoder 'file' (a path); '' for every other mode. */
  encoderFile: string;
  /** 'learned' encoder: output channels of each 3×3 stride-2 convolution (src/nn/conv-encoder.ts). */
  encoderChannels: number[];
  /** 'learned' encoder: features per camera (the LayerNorm'd tanh trunk's width). */
  encoderFeatures: number;
  /** Keep the cameras' frames in replay (uint8, each once; docs/learner.md "Replay with frames"). */
  replayFrames: boolean;
}

/** See ResidualConfig.encoder. */
export type EncoderMode = 'base-embedding' | 'file' | 'state' | 'auto' | 'none' | 'learned';
export const ENCODER_MODES: readonly EncoderMode[] = [
  'base-embedding',
  'file',
  'state',
  'auto',
  'none',
  'learned',
];

export type ProfileName = 'gpu' | 'cpu';

/** Width of the critics' input: [s | a], or [s | a_base | residual] (criticInput 'residual' with a base). */
export function criticInputDim(cfg: ResidualConfig, obsDim: number, actionDim: number): number {
  return obsDim + (criticSplitsResidual(cfg) ? 2 : 1) * actionDim;
}

/** True when the critics read the base action and the residual apart (see criticInput). */
export function criticSplitsResidual(cfg: ResidualConfig): boolean {
  return cfg.criticInput === 'residual' && cfg.useBase;
}

const gpuProfile: ResidualConfig = {
  actorHidden: [256, 256],
  criticHidden: [256, 256],
  layerNorm: true,
  actionScale: 0.1,
  numCritics: 10,
  targetSubset: 2,
  gamma: 0.99,
  tau: 0.005,
  nStep: 3,
  utd: 4,
  batchSize: 256,
  criticLr: 1e-4,
  actorLr: 1e-4,
  gradClip: 1.0,
  explorationStd: 0.05,
  targetNoiseStd: 0.05,
  targetNoiseClip: 0.1,
  policyDelay: 2,
  bufferSize: 1_000_000,
  demoFraction: 0.5,
  learningStarts: 5000,
  warmupNoise: 1.0,
  criticWarmupSteps: 5000,
  normalizeObs: true,
  useBase: true,
  criticInput: 'residual',
  heldBackBc: 0.4,
  // ResFiT as published: a GPU runs the conv encoder's forward and backward on every batch cheaply.
  encoder: 'learned',
  encoderFile: '',
  // DrQ's encoder as the BC-from-pixels base uses it (src/sim/bc.ts), 64 features per camera.
  encoderChannels: [16, 32, 32, 32],
  encoderFeatures: 64,
  // makeConfig turns it on for 'learned' (the encoder reads frames from replay); off otherwise,
  // since the frozen modes cache features and frames would only cost memory.
  replayFrames: false,
};

/**
 * Two cores. Chosen when the learner ran on tfjs-wasm, where an update cost matmul FLOPs plus a
 * fixed ~400 kernel launches on one thread, so heads and UTD were what cut wall-clock: 2 heads
 * (TD3's clipped double Q; REDQ's subset is then both) and UTD 1 at 2×256, with a larger critic lr
 * to make up for fewer updates. Kept on the onnxruntime engine (src/nn), which runs this shape at
 * ~117 updates/s on one thread: push still crosses 95% at 14.2k env steps with it, and on push-cam
 * UTD 3 (3× the updates) ended below UTD 1 at 30k (BENCHMARKS.md "Learning", "Learning on push-cam").
 */
const cpuProfile: ResidualConfig = {
  ...gpuProfile,
  actorHidden: [256, 256],
  criticHidden: [256, 256],
  numCritics: 2,
  utd: 1,
  batchSize: 256,
  criticLr: 3e-4,
  actorLr: 1e-4,
  bufferSize: 300_000,
  learningStarts: 1000,
  criticWarmupSteps: 500,
  // A frozen mode: on push-cam's shape an update with the learned conv encoder costs ~22× a
  // base-embedding update on one onnxruntime thread (batch 256: 270 vs 11.8 CPU-ms, 2.0 vs 42
  // updates/s; batch 64: ~10×; `npx tsx bench/learned-encoder.ts`, 2026-12-06 on this 2-core
  // machine under load), which UTD 1 at tens of env steps per second cannot pay. Of the frozen
  // modes, a state encoder trained from the demonstrations takes push-cam's image-BC base to
  // 95–98% held out in 50k env steps where the base's own embedding stays at its 52%
  // (BENCHMARKS.md "A state encoder for push-cam"); 'auto' uses one wherever the demonstrations
  // recorded what the cameras show, and the base's embedding elsewhere (a robot's teleoperation).
  // 'learned' at batch 64 (`--encoder learned --set batchSize=64`) took the same base on push-cam
  // to 95% at 20k env steps on seed 0, where auto takes 30–40k, at ~5× the wall-clock (84 min for
  // 50k steps against auto's ~17): the candidate where env steps cost more than compute, a robot
  // whose rate the learner keeps up with (BENCHMARKS.md "The `learned` mode on the CPU", all seeds).
  encoder: 'auto',
};

export const profiles: Record<ProfileName, ResidualConfig> = { gpu: gpuProfile, cpu: cpuProfile };

/** The profile a learner device gets: a GPU gets `gpu`, the CPU gets `cpu`. */
export function profileFor(engine: { device: string; gpu: boolean }): { name: ProfileName; why: string } {
  if (engine.gpu) return { name: 'gpu', why: `the learner runs on ${engine.device}, a GPU` };
  return {
    name: 'cpu',
    why: `the learner runs on the CPU, where the gpu profile (10 heads, UTD 4) costs ~10× more per env step`,
  };
}

/** Profile values overridden value by value, then validated. */
export function makeConfig(profile: ProfileName, overrides: Partial<ResidualConfig> = {}): ResidualConfig {
  const base = profiles[profile];
  if (!base) throw new ResrtError(`unknown profile '${String(profile)}'`, "use 'gpu' or 'cpu'");
  const unknown = Object.keys(overrides).filter((key) => !(key in base));
  if (unknown.length) {
    const known = Object.keys(base);
    const named = unknown.map((key) => {
      const near = nearestName(key, known);
      return near ? `'${key}' (did you mean '${near}'?)` : `'${key}'`;
    });
    throw new ResrtError(
      `unknown residual config key${unknown.length > 1 ? 's' : ''} ${named.join(', ')}`,
      `known keys (src/residual/config.ts): ${known.join(', ')}`,
    );
  }
  const cfg: ResidualConfig = { ...base, ...stripUndefined(overrides) };
  // The learned encoder trains on frames sampled from replay, so replay must keep them.
  if (cfg.encoder === 'learned' && overrides.replayFrames === undefined) cfg.replayFrames = true;
  validateConfig(cfg);
  return cfg;
}

function stripUndefined<T extends object>(o: Partial<T>): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

/** Checks every value; all bad ones are reported in one error. */
export function validateConfig(cfg: ResidualConfig): void {
  const problems: { what: string; fix: string }[] = [];
  const bad = (what: string, fix: string): void => {
    problems.push({ what, fix });
  };
  const posInt = (k: keyof ResidualConfig): void => {
    const v = cfg[k] as number;
    if (!Number.isInteger(v) || v <= 0) bad(`${k} = ${v}`, `${k} must be a positive integer`);
  };
  const inRange = (k: keyof ResidualConfig, lo: number, hi: number): void => {
    const v = cfg[k] as number;
    if (!(Number.isFinite(v) && v >= lo && v <= hi)) bad(`${k} = ${v}`, `${k} must lie in [${lo}, ${hi}]`);
  };
  for (const k of ['actorHidden', 'criticHidden'] as const) {
    const h = cfg[k];
    if (!Array.isArray(h) || h.length === 0 || h.some((w) => !Number.isInteger(w) || w <= 0 || w > 4096))
      bad(
        `${k} = ${JSON.stringify(h)}`,
        `${k} must be a non-empty list of widths in 1..4096, e.g. [256, 256]`,
      );
  }
  for (const k of [
    'numCritics',
    'targetSubset',
    'nStep',
    'utd',
    'batchSize',
    'policyDelay',
    'bufferSize',
  ] as const)
    posInt(k);
  for (const k of ['learningStarts', 'criticWarmupSteps'] as const) {
    const v = cfg[k];
    if (!Number.isInteger(v) || v < 0) bad(`${k} = ${v}`, `${k} must be a non-negative integer`);
  }
  if (cfg.targetSubset > cfg.numCritics)
    bad(`targetSubset ${cfg.targetSubset} > numCritics ${cfg.numCritics}`, 'draw at most numCritics heads');
  inRange('actionScale', 1e-6, 2);
  inRange('gamma', 0, 1);
  inRange('tau', 0, 1);
  inRange('criticLr', 0, 1);
  inRange('actorLr', 0, 1);
  inRange('gradClip', 0, Infinity);
  inRange('explorationStd', 0, 10);
  inRange('targetNoiseStd', 0, 10);
  inRange('targetNoiseClip', 0, 10);
  inRange('demoFraction', 0, 1);
  inRange('warmupNoise', 0, 10);
  inRange('heldBackBc', 0, 100);
  if (
    !Array.isArray(cfg.encoderChannels) ||
    cfg.encoderChannels.length === 0 ||
    cfg.encoderChannels.some((c) => !Number.isInteger(c) || c <= 0 || c > 1024)
  )
    bad(
      `encoderChannels = ${JSON.stringify(cfg.encoderChannels)}`,
      'encoderChannels must be a non-empty list of channel counts in 1..1024, e.g. [16, 32, 32, 32]',
    );
  posInt('encoderFeatures');
  if (cfg.encoder === 'learned' && !cfg.replayFrames)
    bad(
      'encoder learned with replayFrames false',
      'the learned encoder reads frames from replay: set replayFrames true',
    );
  if (!ENCODER_MODES.includes(cfg.encoder))
    bad(`encoder = ${String(cfg.encoder)}`, `encoder must be one of: ${ENCODER_MODES.join(', ')}`);
  if (typeof cfg.encoderFile !== 'string')
    bad(`encoderFile = ${String(cfg.encoderFile)}`, 'encoderFile must be a path to an encoder ONNX file');
  else if (cfg.encoder === 'file' && cfg.encoderFile === '')
    bad(
      'encoder = file without encoderFile',
      'name the encoder ONNX: --encoder file --encoder-file ENCODER.onnx',
    );
  else if (cfg.encoder !== 'file' && cfg.encoderFile !== '')
    bad(
      `encoderFile = ${cfg.encoderFile} with encoder = ${cfg.encoder}`,
      'the encoder file is read only in encoder mode file: pass --encoder file, or drop --encoder-file',
    );
  for (const k of ['layerNorm', 'normalizeObs', 'useBase', 'replayFrames'] as const)
    if (typeof cfg[k] !== 'boolean') bad(`${k} = ${String(cfg[k])}`, `${k} must be true or false`);
  if (cfg.criticInput !== 'action' && cfg.criticInput !== 'residual')
    bad(`criticInput = ${String(cfg.criticInput)}`, "criticInput must be 'action' or 'residual'");
  if (problems.length === 1) throw new ResrtError(`residual config: ${problems[0].what}`, problems[0].fix);
  if (problems.length > 1)
    throw new ResrtError(
      `residual config has ${problems.length} bad values:\n${problems.map((p) => `  - ${p.what}; fix: ${p.fix}`).join('\n')}`,
      'correct each value listed above (--set key=value, or the config you pass)',
    );
}
