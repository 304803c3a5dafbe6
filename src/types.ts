/**
 * The seams between the parts (see docs/architecture.md). Every module that crosses a directory
 * boundary speaks these types; nothing here imports anything of ours.
 */
import type { Observable } from 'rxjs';

export type MaybePromise<T> = T | Promise<T>;

/** A box of named dimensions. Actions are always normalized to [-1, 1] at this seam. */
export interface BoxSpace {
  readonly dim: number;
  readonly low: readonly number[];
  readonly high: readonly number[];
  readonly names: readonly string[];
}

export interface StepInfo {
  /** True on the step the task's success predicate first holds. */
  success: boolean;
  [key: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// Cameras: observation parts beside the state vector. `obs` stays the state vector everywhere; an
// environment or robot with cameras adds `frames`, keyed by camera name (LeRobot's
// `observation.images.<camera>`). Frames are shared by reference between stages: nobody writes
// into a frame it did not create, and whoever keeps one beyond a step (demos, replay) owns a copy.

/** One image from one camera. */
export interface CameraFrame {
  width: number;
  height: number;
  /** 3 = RGB. */
  channels: number;
  /** height x width x channels, row-major, row 0 at the top, uint8 RGB. */
  data: Uint8Array;
  /** Metres along the optical axis (z-depth), height x width; 0 where nothing was hit. */
  depth?: Float32Array;
  /** Host monotonic time of the capture, ms (performance.now() timebase). */
  capturedAtMs: number;
  /** Frame counter of this camera, increasing by one per captured frame. */
  seq: number;
}

export type CameraFrames = Readonly<Record<string, CameraFrame>>;

/** What a camera delivers: its name and image size. */
export interface CameraSpec {
  name: string;
  width: number;
  height: number;
  /** 3 = RGB. */
  channels: number;
  /** Whether frames carry depth. */
  depth: boolean;
  /**
   * Set on an extra stream (Env.auxCameras): the simulator (MJCF) camera it renders, at a size of
   * its own, for a success detector (docs/success-detector.md). Absent on observation cameras.
   */
  mjcfCamera?: string;
}

export interface ResetResult {
  obs: Float32Array;
  info: StepInfo;
  /** The cameras' frames of this observation, when the environment has cameras. */
  frames?: CameraFrames;
}

export interface StepResult {
  obs: Float32Array;
  reward: number;
  /** The episode ended inside the task (success, failure state): do not bootstrap. */
  terminated: boolean;
  /** The episode was cut from outside (time limit): bootstrap through it. */
  truncated: boolean;
  info: StepInfo;
  /** The cameras' frames of this observation, when the environment has cameras. */
  frames?: CameraFrames;
}

/**
 * Gymnasium-style environment. Simulated tasks answer synchronously; hardware answers with promises,
 * so generic code awaits both.
 */
export interface Env {
  readonly id: string;
  readonly observationSpace: BoxSpace;
  /** Normalized: low = -1, high = 1 in every dimension. */
  readonly actionSpace: BoxSpace;
  /** Seconds between two steps. */
  readonly controlDt: number;
  /** Steps after which an episode is truncated. */
  readonly maxEpisodeSteps: number;
  /** The cameras whose frames come with every observation; absent or empty for state-only envs. */
  readonly cameras?: readonly CameraSpec[];
  /**
   * Cameras whose frames also come in `frames` with every observation for a reader beside the
   * policy: a success detector's camera at its own size. The policy, its encoders and replay do
   * not read them.
   */
  readonly auxCameras?: readonly CameraSpec[];
  reset(options?: { seed?: number }): MaybePromise<ResetResult>;
  step(action: ArrayLike<number>): MaybePromise<StepResult>;
  close(): MaybePromise<void>;
}

/** One record shared by actors, replay, the write-ahead log and the learner. */
export interface Transition {
  obs: Float32Array;
  /** Camera frames of `obs` (by reference; a store that keeps them owns them from then on). */
  frames?: CameraFrames;
  /** What the frozen base policy proposed. */
  baseAction: Float32Array;
  /** What the residual added (before scaling/clipping by the composition). */
  residual: Float32Array;
  /** What was actually executed after composition, safety and interventions. */
  action: Float32Array;
  reward: number;
  nextObs: Float32Array;
  /** Camera frames of `nextObs`. */
  nextFrames?: CameraFrames;
  terminated: boolean;
  truncated: boolean;
  /** A human (teleoperation) chose `action`. */
  intervention: boolean;
  /** Number of safety events raised on this step (masks that bit, guards, watchdog). */
  safetyEvents: number;
  /** Version of the residual that produced `residual`; 0 for the base alone. */
  policyVersion: number;
  robotId?: string;
  episode?: number;
  step?: number;
}

// ---------------------------------------------------------------------------------------------
// Hardware (ros2_control-like): a narrow state/command interface. Transports live behind it.

export interface RobotCapabilities {
  name: string;
  /** Number of commanded dimensions; commands are normalized to [-1, 1]. */
  actionDim: number;
  actionNames: string[];
  /** Joint positions/velocities/efforts reported per state. */
  jointCount: number;
  /** Extra sensor values reported per state (object poses, forces, ...). */
  sensorCount: number;
  /** The command rate the device is built for. */
  rateHz: number;
  /** What the device does when it does not trust its commands. */
  safeAction: number[];
  /** The device's own command clamp, in normalized units. */
  actionLow: number[];
  actionHigh: number[];
  firmwareVersion?: string;
  protocolVersion?: number;
  /** What the device does when commands stop; absent when the transport does not say. */
  watchdog?: WatchdogSpec;
}

/** A device's command watchdog (docs/serial-protocol.md §3; the same rule on MQTT). */
export interface WatchdogSpec {
  /** No applied command for this long fires it, ms. */
  timeoutMs: number;
  /**
   * 'latch': the safe action and a latched fault that only resetFault() clears;
   * 'hold': the safe action until the next valid command, nothing latched.
   */
  onTimeout: 'latch' | 'hold';
}

export interface RobotState {
  /** Device clock, microseconds. */
  deviceTimeUs: number;
  /** Host clock when the state arrived (performance.now(), ms). */
  receivedAtMs: number;
  positions: Float32Array;
  velocities: Float32Array;
  efforts: Float32Array;
  sensors: Float32Array;
  /** The device latched an e-stop or a watchdog fault and is holding its safe state. */
  faulted: boolean;
  /** Which latch, when faulted and the transport says (an e-stop wins when both are set). */
  faultKind?: 'estop' | 'watchdog';
}

export interface RobotCommand {
  /** Normalized action, length = capabilities.actionDim. */
  action: Float32Array;
  /** The device must not apply the command after this many ms from its sending. */
  validForMs: number;
}

/**
 * A camera on a robot, beside the Robot (the Robot's state stream carries no images): latest-frame
 * semantics, like state$. Sources decode whatever the camera speaks (V4L2, RTSP, JPEG over MQTT).
 */
export interface CameraSource {
  readonly spec: CameraSpec;
  /** Latest-value stream of decoded frames. */
  readonly frame$: Observable<CameraFrame>;
  /** The newest frame, or null before the first. */
  latest(): CameraFrame | null;
  close(): Promise<void>;
}

export type LinkStatus = 'connecting' | 'connected' | 'lost' | 'closed';

export interface Robot {
  readonly capabilities: RobotCapabilities;
  /** Latest-value stream of states. */
  readonly state$: Observable<RobotState>;
  readonly status$: Observable<LinkStatus>;
  /** Returns false when the command could not be handed to the link (link down, bad shape). */
  send(command: RobotCommand): boolean;
  /** Latching emergency stop on the device. */
  estop(reason: string): void;
  /** Clears a latched e-stop/fault on the device; resolves when the device confirms. */
  resetFault(): Promise<void>;
  /**
   * The safe hold between episodes: the safe action now and the watchdog disarmed until the next
   * command, latches untouched, so a person may reset the cell for as long as it takes. Resolves
   * when the device confirms. Absent where the device cannot do it (serial protocol version 1).
   */
  hold?(): Promise<void>;
  /**
   * Takes in what the link has received, now, so the next state$ value is as fresh as the
   * bytes in the kernel. Links that read by themselves (an fd polled by this call and a timer)
   * have it; the control loop calls it once per tick before reading the latest state.
   */
  poll?(): void;
  close(): Promise<void>;
}

/** A robot opened for a session actor: the device, its Env, and where a person's reset confirmation goes. */
export interface OpenedRobot {
  robot: Robot;
  env: Env;
  /** A manual reset confirmed (dashboard, key r, API); absent: the env needs none. */
  confirmReset?: () => void;
}

/**
 * Connects the robot and wraps it as an Env (hw's `openActorRobot`); prompts for a person go to
 * `log`. The actor closes the env, then the robot.
 */
export type RobotOpener = (log: (line: string) => void) => Promise<OpenedRobot>;

/** A session actor's robot (`runActor`'s `robot`; hw's `actorRobot(...)` builds it from a URL and a robot config). */
export interface ActorRobotOptions {
  open: RobotOpener;
  /** How long the explicit safe command at a stop stays valid (config commandValidMs). Default 100. */
  commandValidMs?: number;
  /** The robot's control rate (config rateHz): a virtual scene is held at it. Default 50. */
  rateHz?: number;
  /** A resrt virtual robot (it resets its own scene): its task observation width. */
  virtualScene?: { obsDim: number };
}

// ---------------------------------------------------------------------------------------------
// Safety: the control loop calls one hook per tick; src/safety implements it.

export interface SafetyEvent {
  kind: string;
  /** Monotonic host time, ms. */
  atMs: number;
  detail?: string;
}

export interface SafetyContext {
  obs: Float32Array | null;
  baseAction: Float32Array | null;
  nowMs: number;
  /** Age of the observation the proposal was computed from, ms. */
  obsAgeMs: number;
}

export interface SafetyDecision {
  action: Float32Array;
  events: SafetyEvent[];
  /** True when the safe action replaced the proposal entirely. */
  overridden: boolean;
}

export interface SafetyHook {
  filter(proposed: Float32Array | null, ctx: SafetyContext): SafetyDecision;
  /** The action to send when nothing can be trusted. */
  safeAction(): Float32Array;
}

/**
 * The device side of a robot link: what a transport server (serial firmware emulation, MQTT device)
 * drives. The virtual robot puts a MuJoCo task behind it; tests use small plants.
 */
export interface Plant {
  readonly capabilities: RobotCapabilities;
  /** Apply a validated, clamped normalized command. */
  command(action: Float32Array): void;
  /** Drive the outputs to the safe state (watchdog, e-stop, link loss). */
  hold(): void;
  /** The current state, in the device's clock. */
  sample(): Omit<RobotState, 'receivedAtMs' | 'faulted'>;
}

// ---------------------------------------------------------------------------------------------
// Policies as data: BC, the residual learner and the ONNX exporter agree on this description.

export type Activation = 'relu' | 'tanh' | 'linear';

export interface DenseLayerSpec {
  inDim: number;
  outDim: number;
  /** Row-major [inDim, outDim]: y = x · W + b. */
  weight: Float32Array;
  bias: Float32Array;
  /** Applied after the affine map and before the activation. */
  layerNorm?: { gamma: Float32Array; beta: Float32Array; epsilon: number };
  activation: Activation;
}

export interface MlpPolicySpec {
  /** Graph inputs, concatenated in this order, each shaped [batch, dim]. */
  inputs: { name: string; dim: number }[];
  /** Applied to the concatenated input: (x - mean) / std. */
  inputNormalization?: { mean: Float32Array; std: Float32Array };
  layers: DenseLayerSpec[];
  output: {
    name: string;
    actionDim: number;
    /** 1: output [batch, actionDim]; H > 1: output [batch, H, actionDim] (action chunk). */
    chunkLength: number;
    /** y = tanh(y) * tanhScale when set (residual actors). */
    tanhScale?: number;
    /** y = y * std + mean when set, before tanh/clip; per action dimension. */
    denormalize?: { mean: Float32Array; std: Float32Array };
  };
  /** Written to ONNX metadata_props. */
  metadata: Record<string, string>;
}

/** Anything that maps an observation to a normalized action: experts, ONNX policies, composed policies. */
export interface Policy {
  readonly actionDim: number;
  /** Called at the start of every episode (chunk buffers, expert phases, noise). */
  reset?(seed?: number): void;
  /** `frames`: the cameras' latest frames, for visuomotor policies; state-only policies ignore it. */
  act(obs: Float32Array, frames?: CameraFrames): MaybePromise<Float32Array>;
}
