/**
 * reach: a planar two-link arm brings its tip within 1 cm of a random target. Fast; for tests and
 * smoke runs. Position-servo actuators: actions are joint targets over each joint's range.
 */
import { defineTask, type ExpertController } from '../task.js';

const L1 = 0.12;
const L2 = 0.12;
const SHOULDER_RANGE = 3.0;
const ELBOW_RANGE = 2.8;
const SUCCESS_RADIUS = 0.01;

const mjcf = `
<mujoco model="reach">
  <compiler angle="radian"/>
  <size memory="256K"/>
  <option timestep="0.002" integrator="implicitfast"/>
  <default>
    <joint damping="0.02" armature="0.002"/>
    <geom contype="0" conaffinity="0" rgba="0.3 0.5 0.8 1"/>
    <position kp="1.0" kv="0.08"/>
  </default>
  <worldbody>
    <light pos="0 0 1"/>
    <camera name="top" pos="0 0 0.65" xyaxes="1 0 0 0 1 0" fovy="50"/>
    <geom name="floor" type="plane" size="0.4 0.4 0.01" rgba="0.9 0.9 0.9 1"/>
    <body name="upper" pos="0 0 0.02">
      <joint name="shoulder" type="hinge" axis="0 0 1"/>
      <geom type="capsule" fromto="0 0 0 ${L1} 0 0" size="0.01" mass="0.1"/>
      <body name="fore" pos="${L1} 0 0">
        <joint name="elbow" type="hinge" axis="0 0 1" range="-${ELBOW_RANGE} ${ELBOW_RANGE}" limited="true"/>
        <geom type="capsule" fromto="0 0 0 ${L2} 0 0" size="0.008" mass="0.06"/>
        <site name="tip" pos="${L2} 0 0" size="0.005"/>
      </body>
    </body>
    <body name="target" mocap="true" pos="0.15 0.05 0.02">
      <geom type="sphere" size="${SUCCESS_RADIUS}" rgba="0.9 0.2 0.2 0.5"/>
    </body>
  </worldbody>
  <actuator>
    <position name="shoulder" joint="shoulder" ctrlrange="-${SHOULDER_RANGE} ${SHOULDER_RANGE}" ctrllimited="true"/>
    <position name="elbow" joint="elbow" ctrlrange="-${ELBOW_RANGE} ${ELBOW_RANGE}" ctrllimited="true"/>
  </actuator>
</mujoco>`;

interface ReachState {
  target: [number, number];
}

const OBS = [
  'shoulder',
  'elbow',
  'shoulder_vel',
  'elbow_vel',
  'tip_x',
  'tip_y',
  'target_x',
  'target_y',
  'dx',
  'dy',
];

export const reachTask = defineTask<ReachState>({
  name: 'reach',
  description: 'planar 2-link arm: bring the tip within 1 cm of a random target',
  mjcf,
  controlSubsteps: 10,
  maxEpisodeSteps: 60,
  observationNames: OBS,
  reset(sim, rng, spread) {
    sim.setQpos('shoulder', rng.range(-0.5, 0.5) * spread);
    sim.setQpos('elbow', rng.range(-0.5, 0.5) * spread);
    // Targets on an annulus the arm can reach with margin on both sides.
    const r = rng.range(0.08, 0.21);
    const theta = rng.range(-Math.PI / 2, Math.PI / 2) * Math.min(spread, 2);
    const target: [number, number] = [r * Math.cos(theta), r * Math.sin(theta)];
    sim.setMocapPose('target', [target[0], target[1], 0.02]);
    return { target };
  },
  observe(sim, state, out) {
    const tx = sim.sitePos('tip', 0);
    const ty = sim.sitePos('tip', 1);
    out[0] = sim.qpos('shoulder');
    out[1] = sim.qpos('elbow');
    out[2] = sim.qvel('shoulder');
    out[3] = sim.qvel('elbow');
    out[4] = tx;
    out[5] = ty;
    out[6] = state.target[0];
    out[7] = state.target[1];
    out[8] = state.target[0] - tx;
    out[9] = state.target[1] - ty;
  },
  success(sim, state) {
    return (
      Math.hypot(state.target[0] - sim.sitePos('tip', 0), state.target[1] - sim.sitePos('tip', 1)) <
      SUCCESS_RADIUS
    );
  },
  expert: () => reachExpert(),
  demoNoise: { jitterStd: 0.03, biasStd: 0.01, pauseProbability: 0.02, maxPauseSteps: 4 },
  trace(sim) {
    return { tip: [sim.sitePos('tip', 0), sim.sitePos('tip', 1)] };
  },
  markers(_sim, state) {
    return [{ label: 'target', x: state.target[0], y: state.target[1], radius: SUCCESS_RADIUS }];
  },
});

/** Two-link inverse kinematics: joint angles that put the tip at (x, y), elbow on the side of `elbowSign`. */
export function twoLinkIk(x: number, y: number, l1: number, l2: number, elbowSign: number): [number, number] {
  const d2 = x * x + y * y;
  const c2 = Math.max(-1, Math.min(1, (d2 - l1 * l1 - l2 * l2) / (2 * l1 * l2)));
  const q2 = elbowSign * Math.acos(c2);
  const q1 = Math.atan2(y, x) - Math.atan2(l2 * Math.sin(q2), l1 + l2 * Math.cos(q2));
  return [q1, q2];
}

function reachExpert(): ExpertController {
  return {
    reset() {},
    act(obs) {
      // Keep the elbow on the side it is already on, so the arm never swings through the singularity.
      const elbowSign = obs[1] >= 0 ? 1 : -1;
      const [q1, q2] = twoLinkIk(obs[6], obs[7], L1, L2, elbowSign);
      return Float32Array.from([clamp(q1 / SHOULDER_RANGE), clamp(q2 / ELBOW_RANGE)]);
    },
  };
}

function clamp(v: number): number {
  return Math.max(-1, Math.min(1, v));
}
