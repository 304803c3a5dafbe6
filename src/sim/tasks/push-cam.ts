/**
 * push-cam: the push task where the goal is seen, not told. The observation vector is the arm and
 * the puck only; the goal is an opaque red patch on the table that only the "top" camera (84 x 84
 * RGB) shows. A policy must read the image to know where to push. The scripted expert is
 * privileged: it acts on push's full observation, goal included (demonstrations record the frames).
 */
import { defineTask } from '../task.js';
import { pushExpert, pushMjcf, pushTask, type PushState } from './push.js';

/** push's observation without the goal: indices 0-11 of push's 16. */
const OBS = pushTask.observationNames.slice(0, 12);

export const pushCamTask = defineTask<PushState>({
  name: 'push-cam',
  description: 'push, with the goal only in the top camera image (a red patch), not in the state',
  mjcf: pushMjcf('push-cam', '0.85 0.1 0.1 1'),
  controlSubsteps: pushTask.controlSubsteps,
  maxEpisodeSteps: pushTask.maxEpisodeSteps,
  observationNames: OBS,
  cameras: { names: ['top'], width: 84, height: 84 },
  reset: (sim, rng, spread) => pushTask.reset(sim, rng, spread),
  observe(sim, state, out) {
    const full = new Float32Array(pushTask.observationNames.length);
    pushTask.observe(sim, state, full);
    out.set(full.subarray(0, OBS.length));
  },
  privilegedObservation: {
    names: pushTask.observationNames,
    observe: (sim, state, out) => pushTask.observe(sim, state, out),
    // What push-cam's state leaves out of push's: the goal and the puck's offset to it, so a state
    // encoder's features and the state together are push's observation.
    cameraTargets: ['goal_x', 'goal_y', 'puck_to_goal_x', 'puck_to_goal_y'],
  },
  success: (sim, state) => pushTask.success(sim, state),
  failure: (sim, state) => pushTask.failure!(sim, state),
  expert: () => pushExpert(),
  demoNoise: pushTask.demoNoise,
  trace: (sim, state) => pushTask.trace!(sim, state),
  markers: (sim, state) => pushTask.markers!(sim, state),
});
