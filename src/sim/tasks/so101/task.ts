/**
 * so101-pick-place: the SO-101-like arm picks a 3 cm cube from a random pose on the table and
 * places it on a green target marker. Sparse success: the cube rests within 2 cm of the target's
 * centre and the gripper has let go. Actions are absolute joint goals, normalized over each
 * joint's range (as LeRobot commands SO-101 goal positions); observations are the joints'
 * normalized positions and velocities (what the servos report), then the scene: cube and target
 * poses and their offsets (what the virtual bus's scene board reports in place of cameras).
 *
 * The scripted expert works from observations alone: hover over the cube with the fingers aligned
 * to its faces, descend, close, lift, carry, lower, open.
 */
import { defineTask, type ExpertController } from '../../task.js';
import type { Sim } from '../../sim.js';
import { ARM, JOINTS, SO101_MJCF } from './model.js';

const N = JOINTS.length;
export const SCENE_NAMES = [
  'cube_x',
  'cube_y',
  'cube_z',
  'cube_yaw_sin4',
  'cube_yaw_cos4',
  'target_x',
  'target_y',
  'cube_minus_tip_x',
  'cube_minus_tip_y',
  'cube_minus_tip_z',
  'target_minus_cube_x',
  'target_minus_cube_y',
];
const OBS = [...JOINTS.map((j) => `${j.name}.pos`), ...JOINTS.map((j) => `${j.name}.vel`), ...SCENE_NAMES];
/** Where the scene values start in the observation. */
export const SCENE_OFFSET = 2 * N;
const PLACE_TOLERANCE = 0.02;
/**
 * Largest goal change per command, normalized (2 = a joint's whole range): the arm's servo
 * config clamps goals the same way (servo.maxStep), so the simulator and the bus move alike.
 */
export const MAX_STEP = 0.25;
const HOVER = 0.07;
/** The fingertips reach 17 mm past the tip point: grasp this far above the cube's centre. */
const GRASP_ABOVE = 0.006;

interface PickPlaceState {
  target: [number, number];
}

export function normalizeJoint(k: number, q: number): number {
  const j = JOINTS[k];
  return (2 * (q - j.low)) / (j.high - j.low) - 1;
}

export function denormalizeJoint(k: number, n: number): number {
  const j = JOINTS[k];
  return j.low + ((n + 1) / 2) * (j.high - j.low);
}

function cubeYaw(sim: Sim): number {
  const w = sim.qpos('cube', 3);
  const x = sim.qpos('cube', 4);
  const y = sim.qpos('cube', 5);
  const z = sim.qpos('cube', 6);
  return Math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z));
}

/** Joint angles that put the point between the fingertips at (x, y, z), pointing down, fingers at `yaw`. */
export function armIk(x: number, y: number, z: number, yaw: number): number[] | null {
  const pan = Math.atan2(y, x);
  const r = Math.hypot(x, y);
  const h = z + ARM.hand - ARM.shoulderHeight;
  const { upperArm: l1, forearm: l2 } = ARM;
  const c = (r * r + h * h - l1 * l1 - l2 * l2) / (2 * l1 * l2);
  if (c > 1 || c < -1) return null;
  const elbow = -Math.acos(c);
  const lift = Math.atan2(h, r) - Math.atan2(l2 * Math.sin(elbow), l1 + l2 * Math.cos(elbow));
  const wrist = -Math.PI / 2 - (lift + elbow);
  // Fingers close along the hand's y axis: align it with a cube face (the cube repeats every 90°).
  let roll = pan - yaw;
  roll -= (Math.PI / 2) * Math.round(roll / (Math.PI / 2));
  return [pan, lift, elbow, wrist, roll];
}

export const so101PickPlaceTask = defineTask<PickPlaceState>({
  name: 'so101-pick-place',
  description:
    'SO-101-like 5-DoF arm + gripper picks a 3 cm cube and places it on a target (joint goals, sparse success)',
  mjcf: SO101_MJCF,
  controlSubsteps: 20,
  maxEpisodeSteps: 160,
  observationNames: OBS,
  actionNames: JOINTS.map((j) => j.name),
  applyAction(sim, _state, action) {
    const ctrl = sim.views.ctrl;
    for (const [k, j] of JOINTS.entries()) {
      const q = sim.qpos(j.name);
      const step = (MAX_STEP / 2) * (j.high - j.low);
      const goal = denormalizeJoint(k, action[k]);
      ctrl[k] = Math.max(j.low, Math.min(j.high, Math.max(q - step, Math.min(q + step, goal))));
    }
  },
  reset(sim, rng, spread) {
    const home = [0, 1.3, -1.8, -1.07, 0, ARM.fingerTravel * 0.8];
    for (const [k, j] of JOINTS.entries()) sim.setQpos(j.name, home[k]);
    sim.setQpos('gripper_mirror', home[5]);
    const polar = (): [number, number] => {
      const r = 0.17 + rng.range(-0.035, 0.035) * spread;
      const a = rng.range(-0.55, 0.55) * spread;
      return [r * Math.cos(a), r * Math.sin(a)];
    };
    const cube = polar();
    let target = polar();
    for (let i = 0; i < 20 && Math.hypot(target[0] - cube[0], target[1] - cube[1]) < 0.08; i++)
      target = polar();
    const yaw = rng.range(-Math.PI / 4, Math.PI / 4) * Math.min(1, spread);
    sim.setQpos('cube', cube[0], 0);
    sim.setQpos('cube', cube[1], 1);
    sim.setQpos('cube', ARM.cubeHalf, 2);
    sim.setQpos('cube', Math.cos(yaw / 2), 3);
    sim.setQpos('cube', 0, 4);
    sim.setQpos('cube', 0, 5);
    sim.setQpos('cube', Math.sin(yaw / 2), 6);
    sim.setMocapPose('target', [target[0], target[1], 0]);
    sim.views.ctrl.set(home);
    return { target };
  },
  observe(sim, state, out) {
    for (const [k, j] of JOINTS.entries()) {
      out[k] = normalizeJoint(k, sim.qpos(j.name));
      out[N + k] = (2 * sim.qvel(j.name)) / (j.high - j.low);
    }
    const cx = sim.bodyPos('cube', 0);
    const cy = sim.bodyPos('cube', 1);
    const cz = sim.bodyPos('cube', 2);
    const yaw = cubeYaw(sim);
    const s = SCENE_OFFSET;
    out[s] = cx;
    out[s + 1] = cy;
    out[s + 2] = cz;
    out[s + 3] = Math.sin(4 * yaw);
    out[s + 4] = Math.cos(4 * yaw);
    out[s + 5] = state.target[0];
    out[s + 6] = state.target[1];
    out[s + 7] = cx - sim.sitePos('tip', 0);
    out[s + 8] = cy - sim.sitePos('tip', 1);
    out[s + 9] = cz - sim.sitePos('tip', 2);
    out[s + 10] = state.target[0] - cx;
    out[s + 11] = state.target[1] - cy;
  },
  success(sim, state) {
    const dx = sim.bodyPos('cube', 0) - state.target[0];
    const dy = sim.bodyPos('cube', 1) - state.target[1];
    const resting = sim.bodyPos('cube', 2) < ARM.cubeHalf + 0.004;
    const released = sim.qpos('gripper') > ARM.cubeHalf + 0.004;
    return Math.hypot(dx, dy) < PLACE_TOLERANCE && resting && released;
  },
  failure(sim) {
    // Knocked off the table's reach.
    return Math.hypot(sim.bodyPos('cube', 0), sim.bodyPos('cube', 1)) > 0.4;
  },
  expert: () => pickPlaceExpert(),
  demoNoise: { jitterStd: 0.01, biasStd: 0.004, pauseProbability: 0.02, maxPauseSteps: 3 },
  trace(sim) {
    return {
      tip: [sim.sitePos('tip', 0), sim.sitePos('tip', 1)],
      cube: [sim.bodyPos('cube', 0), sim.bodyPos('cube', 1)],
    };
  },
  markers(_sim, state) {
    return [{ label: 'target', x: state.target[0], y: state.target[1], radius: PLACE_TOLERANCE }];
  },
});

/**
 * A reactive expert: the phase follows from the observation (where the cube is relative to the
 * fingers, whether the gripper is closed on it, where the cube is relative to the target), so a
 * policy cloned from it sees everything the expert decides on.
 */
function pickPlaceExpert(): ExpertController {
  const open = 1;
  const closed = -1;
  const step = 0.012;
  return {
    reset() {},
    act(obs) {
      const s = SCENE_OFFSET;
      const cube = [obs[s], obs[s + 1], obs[s + 2]];
      const yaw = Math.atan2(obs[s + 3], obs[s + 4]) / 4;
      const target = [obs[s + 5], obs[s + 6]];
      const tip = [cube[0] - obs[s + 7], cube[1] - obs[s + 8], cube[2] - obs[s + 9]];
      const finger = denormalizeJoint(5, obs[5]);
      const xyToCube = Math.hypot(obs[s + 7], obs[s + 8]);
      const cubeToTarget = Math.hypot(obs[s + 10], obs[s + 11]);
      const holding =
        xyToCube < 0.012 && Math.abs(obs[s + 9] + GRASP_ABOVE) < 0.012 && finger < ARM.cubeHalf + 0.002;
      let goal: number[];
      let grip: number;
      if (cubeToTarget < PLACE_TOLERANCE * 0.6 && cube[2] < ARM.cubeHalf + 0.006) {
        // Placed: let go and rise.
        goal = [tip[0], tip[1], cube[2] + (finger > ARM.cubeHalf + 0.006 ? HOVER : 0)];
        grip = open;
      } else if (holding) {
        const over = Math.hypot(target[0] - cube[0], target[1] - cube[1]) < 0.006;
        const high = cube[2] > ARM.cubeHalf + HOVER * 0.6;
        if (over)
          goal = [tip[0] + (target[0] - cube[0]), tip[1] + (target[1] - cube[1]), ARM.cubeHalf + 0.002];
        else if (high) goal = [tip[0] + (target[0] - cube[0]), tip[1] + (target[1] - cube[1]), tip[2]];
        else goal = [tip[0], tip[1], ARM.cubeHalf + HOVER];
        grip = closed;
      } else if (xyToCube > 0.008) {
        goal = [cube[0], cube[1], cube[2] + HOVER];
        // Keep the fingers clear of the cube while lining up.
        if (tip[2] < cube[2] + HOVER * 0.5) goal = [tip[0], tip[1], cube[2] + HOVER];
        grip = open;
      } else if (tip[2] > cube[2] + GRASP_ABOVE + 0.003) {
        goal = [cube[0], cube[1], cube[2] + GRASP_ABOVE];
        grip = open;
      } else {
        goal = [cube[0], cube[1], cube[2] + GRASP_ABOVE];
        grip = closed;
      }
      // At most `step` of motion per control step toward the goal.
      const d = [goal[0] - tip[0], goal[1] - tip[1], goal[2] - tip[2]];
      const dist = Math.hypot(d[0], d[1], d[2]);
      const k = dist > step ? step / dist : 1;
      const q = armIk(tip[0] + k * d[0], tip[1] + k * d[1], tip[2] + k * d[2], yaw);
      const out = new Float32Array(N);
      for (let i = 0; i < 5; i++) out[i] = q ? clamp(normalizeJoint(i, q[i])) : obs[i];
      out[5] = grip;
      return out;
    },
  };
}

function clamp(v: number): number {
  return Math.max(-1, Math.min(1, v));
}
