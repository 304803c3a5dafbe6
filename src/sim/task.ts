/**
 * What a task is: an MJCF scene plus a small module (reset distribution, observation, success
 * predicate, optional scripted expert). Built-in tasks and user tasks loaded by path use this same
 * contract; see docs/tasks.md.
 */
import type { Policy } from '../types.js';
import type { Rng } from '../util/rng.js';
import type { TaskCameras } from './camera/sim-cameras.js';
import type { ExpertNoise } from './expert.js';
import type { Sim } from './sim.js';

export interface TaskDefinition<S = unknown> {
  /** Short id used on the command line. */
  name: string;
  description: string;
  /** Inline MJCF, or a path (relative to the task module) of an MJCF file. */
  mjcf: string | { path: string };
  /** Physics steps per control step: the control period is controlSubsteps × timestep. */
  controlSubsteps: number;
  /** Steps after which an episode is truncated. */
  maxEpisodeSteps: number;
  observationNames: string[];
  /** Defaults to the actuator names of the model. Required with applyAction. */
  actionNames?: string[];
  /**
   * Optional: how a normalized action drives the actuators (e.g. Cartesian deltas through inverse
   * kinematics). Without it, action i maps linearly onto actuator i's control range.
   */
  applyAction?(sim: Sim, state: S, action: Float32Array): void;
  /**
   * Samples an episode after the model was reset to its defaults: set joint positions, object and
   * goal poses; return the task's per-episode state (goals etc.). `poseSpread` scales the sampled
   * ranges (domain randomization; 1 is the nominal distribution).
   */
  reset(sim: Sim, rng: Rng, poseSpread: number): S;
  /** Writes the observation (length = observationNames.length). */
  observe(sim: Sim, state: S, out: Float32Array): void;
  /** The sparse binary reward: success terminates the episode with reward 1. */
  success(sim: Sim, state: S): boolean;
  /** Optional: a failure that also terminates (reward 0), e.g. an object knocked off the table. */
  failure?(sim: Sim, state: S): boolean;
  /**
   * Optional: the MJCF cameras whose frames are part of the observation (default 84 x 84 RGB).
   * Without it the task is state-only; `resrt eval --video` can still render any of its cameras.
   */
  cameras?: TaskCameras;
  /** Optional scripted expert, working from observations (or the privileged observation). */
  expert?(): ExpertController;
  /**
   * Optional: what the scripted expert sees when the observation lacks something it needs (the
   * goal of push-cam is only in the camera image). Without it the expert sees the observation.
   */
  privilegedObservation?: {
    names: string[];
    observe(sim: Sim, state: S, out: Float32Array): void;
    /**
     * The names of it that the observation lacks and the cameras show (push-cam: the goal and the
     * puck's offset to it): what a state encoder learns to read from the frames (`resrt encoder
     * train`'s default --targets, and what the cpu profile's encoder 'auto' trains one for).
     */
    cameraTargets?: string[];
  };
  /**
   * Optional: the noise that makes this task's expert look like a person's demonstrations (actions
   * are normalized, so what is human-like depends on the task's ranges and precision).
   */
  demoNoise?: ExpertNoise;
  /** Optional: named top-down points (x, y) recorded every step for `resrt eval --plot`. */
  trace?(sim: Sim, state: S): Record<string, [number, number]>;
  /** Optional: static markers for the plot (goals, holes). */
  markers?(sim: Sim, state: S): PlotMarker[];
}

export interface PlotMarker {
  label: string;
  x: number;
  y: number;
  radius: number;
}

/** A clean, deterministic controller; noise is layered on by `ImperfectExpert`. */
export interface ExpertController {
  reset(): void;
  act(obs: Float32Array): Float32Array;
}

/** Identity helper that gives a user task module its types. */
export function defineTask<S>(task: TaskDefinition<S>): TaskDefinition<S> {
  return task;
}

export type { Policy };
