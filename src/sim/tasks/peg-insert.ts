/**
 * peg-insert: a 4-DoF SCARA arm (shoulder, elbow, vertical slide, wrist yaw) under gravity inserts
 * the square peg it holds into a square hole with 2 mm total clearance (1 mm per side) in a block at a
 * random position and yaw. Success: the peg's bottom is at least INSERT_DEPTH below the block's top
 * while inside the hole. BC alone is imprecise here: millimetres and a few degrees decide contact.
 *
 * Actions are Cartesian deltas of the peg (dx, dy, dz, dyaw), as an insertion cell is usually
 * commanded: the task integrates them into a target pose and the arm's position servos track that
 * pose through inverse kinematics.
 */
import { defineTask, type ExpertController } from '../task.js';
import { twoLinkIk } from './reach.js';

const L1 = 0.22;
const L2 = 0.18;
const SHOULDER_Z = 0.3;
const PEG_HALF = 0.01; // 20 mm square peg
const PEG_LEN = 0.06;
const CLEARANCE = 0.002; // hole width - peg width
const HOLE_HALF = PEG_HALF + CLEARANCE / 2;
const BLOCK_H = 0.04;
const WALL = 0.025;
const INSERT_DEPTH = 0.015;
const SLIDE_RANGE: [number, number] = [-0.24, -0.08];
const RANGE = [2.6, 2.6, 0, 3.1];
/** Largest commanded motion per control step (action = ±1). */
const STEP_XY = 0.01;
const STEP_Z = 0.01;
const STEP_YAW = 0.1;
// Peg bottom height when the slide is at 0: shoulder height minus carriage and peg length.
const PEG_BOTTOM_AT_ZERO = SHOULDER_Z - 0.02 - PEG_LEN;

const wallBoxes = (() => {
  // Four walls around a square hole, in the block frame.
  const off = HOLE_HALF + WALL / 2;
  const long = HOLE_HALF + WALL;
  return [
    { pos: [off, 0], size: [WALL / 2, long] },
    { pos: [-off, 0], size: [WALL / 2, long] },
    { pos: [0, off], size: [HOLE_HALF, WALL / 2] },
    { pos: [0, -off], size: [HOLE_HALF, WALL / 2] },
  ]
    .map(
      (b, i) =>
        `<geom name="wall${i}" type="box" pos="${b.pos[0]} ${b.pos[1]} ${BLOCK_H / 2}" size="${b.size[0]} ${b.size[1]} ${BLOCK_H / 2}"` +
        ` contype="1" conaffinity="1" rgba="0.6 0.45 0.3 1"/>`,
    )
    .join('\n        ');
})();

const mjcf = `
<mujoco model="peg-insert">
  <compiler angle="radian"/>
  <size memory="2M"/>
  <option timestep="0.001" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <default>
    <joint damping="0.5" armature="0.01"/>
    <geom contype="0" conaffinity="0" friction="0.5 0.005 0.0001" solref="0.005 1" rgba="0.3 0.5 0.8 1"/>
  </default>
  <worldbody>
    <light pos="0 0 1.5"/>
    <camera name="front" pos="1.1 -0.9 0.9" xyaxes="0.63 0.77 0 -0.38 0.31 0.87" fovy="45"/>
    <geom name="table" type="plane" size="0.6 0.6 0.01" contype="1" conaffinity="1" rgba="0.85 0.85 0.8 1"/>
    <geom name="column" type="cylinder" pos="0 0 ${SHOULDER_Z / 2}" size="0.04 ${SHOULDER_Z / 2}"/>
    <body name="link1" pos="0 0 ${SHOULDER_Z}">
      <joint name="shoulder" type="hinge" axis="0 0 1" range="-${RANGE[0]} ${RANGE[0]}"/>
      <geom type="box" pos="${L1 / 2} 0 0" size="${L1 / 2} 0.025 0.015" mass="1.5"/>
      <body name="link2" pos="${L1} 0 0">
        <joint name="elbow" type="hinge" axis="0 0 1" range="-${RANGE[1]} ${RANGE[1]}"/>
        <geom type="box" pos="${L2 / 2} 0 0" size="${L2 / 2} 0.02 0.012" mass="0.8"/>
        <body name="carriage" pos="${L2} 0 0">
          <joint name="lift" type="slide" axis="0 0 1" range="${SLIDE_RANGE[0]} ${SLIDE_RANGE[1]}" damping="20"/>
          <geom type="cylinder" pos="0 0 -0.01" size="0.012 0.01" mass="0.2"/>
          <body name="wrist" pos="0 0 -0.02">
            <joint name="wrist" type="hinge" axis="0 0 1" range="-${RANGE[3]} ${RANGE[3]}" damping="0.05"/>
            <geom name="peg" type="box" pos="0 0 ${-PEG_LEN / 2}" size="${PEG_HALF} ${PEG_HALF} ${PEG_LEN / 2}" mass="0.05"
                  contype="2" conaffinity="1" rgba="0.8 0.8 0.85 1"/>
            <site name="peg_bottom" pos="0 0 ${-PEG_LEN}" size="0.003"/>
          </body>
        </body>
      </body>
    </body>
    <body name="block" mocap="true" pos="0.3 0 0">
        ${wallBoxes}
        <site name="hole_top" pos="0 0 ${BLOCK_H}" size="0.003"/>
    </body>
  </worldbody>
  <actuator>
    <position name="shoulder" joint="shoulder" kp="300" kv="30" ctrlrange="-${RANGE[0]} ${RANGE[0]}"/>
    <position name="elbow" joint="elbow" kp="150" kv="12" ctrlrange="-${RANGE[1]} ${RANGE[1]}"/>
    <position name="lift" joint="lift" kp="2000" kv="120" ctrlrange="${SLIDE_RANGE[0]} ${SLIDE_RANGE[1]}"/>
    <position name="wrist" joint="wrist" kp="10" kv="0.6" ctrlrange="-${RANGE[3]} ${RANGE[3]}"/>
  </actuator>
</mujoco>`;

interface PegState {
  hole: [number, number, number];
  yaw: number;
  /** The commanded peg pose that actions move. */
  target: { x: number; y: number; z: number; yaw: number };
}

const OBS = [
  'shoulder',
  'elbow',
  'lift',
  'wrist',
  'shoulder_vel',
  'elbow_vel',
  'lift_vel',
  'wrist_vel',
  'peg_x',
  'peg_y',
  'peg_z',
  'hole_x',
  'hole_y',
  'hole_z',
  'hole_minus_peg_x',
  'hole_minus_peg_y',
  'hole_minus_peg_z',
  'yaw_error',
];

export const pegInsertTask = defineTask<PegState>({
  name: 'peg-insert',
  description:
    '4-DoF SCARA inserts a held 20 mm square peg into a hole with 2 mm clearance at a random pose (gravity, contact)',
  mjcf,
  controlSubsteps: 40,
  maxEpisodeSteps: 100,
  observationNames: OBS,
  reset(sim, rng, spread) {
    const [q1, q2] = twoLinkIk(
      0.26 + rng.range(-0.02, 0.02) * spread,
      rng.range(-0.05, 0.05) * spread,
      L1,
      L2,
      1,
    );
    sim.setQpos('shoulder', q1);
    sim.setQpos('elbow', q2);
    sim.setQpos('lift', -0.1);
    sim.setQpos('wrist', rng.range(-0.3, 0.3) * spread);
    const r = 0.3 + rng.range(-0.04, 0.04) * spread;
    const theta = rng.range(-0.35, 0.35) * spread;
    const hole: [number, number, number] = [r * Math.cos(theta), r * Math.sin(theta), BLOCK_H];
    const yaw = rng.range(-Math.PI / 4, Math.PI / 4) * Math.min(spread, 1);
    sim.setMocapPose('block', [hole[0], hole[1], 0], yaw);
    sim.forward();
    const target = {
      x: sim.sitePos('peg_bottom', 0),
      y: sim.sitePos('peg_bottom', 1),
      z: sim.sitePos('peg_bottom', 2),
      yaw: pegYaw(sim.qpos('shoulder'), sim.qpos('elbow'), sim.qpos('wrist')),
    };
    const ctrl = sim.views.ctrl;
    ctrl.set([sim.qpos('shoulder'), sim.qpos('elbow'), sim.qpos('lift'), sim.qpos('wrist')]);
    return { hole, yaw, target };
  },
  actionNames: ['dx', 'dy', 'dz', 'dyaw'],
  applyAction(sim, state, a) {
    const t = state.target;
    t.x += a[0] * STEP_XY;
    t.y += a[1] * STEP_XY;
    t.z = Math.max(0.0, Math.min(0.2, t.z + a[2] * STEP_Z));
    t.yaw = Math.max(-2.5, Math.min(2.5, t.yaw + a[3] * STEP_YAW));
    // Keep the target inside the arm's annulus of reach.
    const r = Math.hypot(t.x, t.y);
    const rClamped = Math.max(0.08, Math.min(L1 + L2 - 0.005, r));
    if (r > 0 && rClamped !== r) {
      t.x *= rClamped / r;
      t.y *= rClamped / r;
    }
    const [q1, q2] = twoLinkIk(t.x, t.y, L1, L2, 1);
    const lift = Math.max(SLIDE_RANGE[0], Math.min(SLIDE_RANGE[1], t.z - PEG_BOTTOM_AT_ZERO));
    const wrist = Math.max(-RANGE[3], Math.min(RANGE[3], t.yaw - q1 - q2));
    sim.views.ctrl.set([q1, q2, lift, wrist]);
  },
  observe(sim, state, out) {
    out[0] = sim.qpos('shoulder');
    out[1] = sim.qpos('elbow');
    out[2] = sim.qpos('lift');
    out[3] = sim.qpos('wrist');
    out[4] = sim.qvel('shoulder');
    out[5] = sim.qvel('elbow');
    out[6] = sim.qvel('lift');
    out[7] = sim.qvel('wrist');
    const px = sim.sitePos('peg_bottom', 0);
    const py = sim.sitePos('peg_bottom', 1);
    const pz = sim.sitePos('peg_bottom', 2);
    out[8] = px;
    out[9] = py;
    out[10] = pz;
    out[11] = state.hole[0];
    out[12] = state.hole[1];
    out[13] = state.hole[2];
    out[14] = state.hole[0] - px;
    out[15] = state.hole[1] - py;
    out[16] = state.hole[2] - pz;
    out[17] = squareYawError(state.yaw - pegYaw(out[0], out[1], out[3]));
  },
  success(sim, state) {
    const dx = sim.sitePos('peg_bottom', 0) - state.hole[0];
    const dy = sim.sitePos('peg_bottom', 1) - state.hole[1];
    const depth = state.hole[2] - sim.sitePos('peg_bottom', 2);
    return depth >= INSERT_DEPTH && Math.hypot(dx, dy) < HOLE_HALF;
  },
  expert: () => pegExpert(),
  // About 0.3 mm of jitter and 0.1 mm of drift per step at the peg: a careful person with a spacemouse.
  demoNoise: { jitterStd: 0.03, biasStd: 0.01, pauseProbability: 0.02, maxPauseSteps: 4 },
  trace(sim) {
    return { peg: [sim.sitePos('peg_bottom', 0), sim.sitePos('peg_bottom', 1)] };
  },
  markers(_sim, state) {
    return [{ label: 'hole', x: state.hole[0], y: state.hole[1], radius: HOLE_HALF }];
  },
});

function pegYaw(shoulder: number, elbow: number, wrist: number): number {
  return shoulder + elbow + wrist;
}

/** The peg is square: yaw errors are equivalent modulo 90 degrees. */
function squareYawError(e: number): number {
  const q = Math.PI / 2;
  return e - q * Math.round(e / q);
}

/**
 * Above the hole at a safe height with the yaw aligned, then straight down: a proportional controller
 * on the measured peg pose. It descends only when aligned to a fraction of the clearance. Because the
 * commanded target integrates the deltas, servo offsets and a biased hand are corrected, not repeated.
 */
function pegExpert(): ExpertController {
  return {
    reset() {},
    act(obs) {
      const [hz, ex, ey] = [obs[13], obs[14], obs[15]];
      const pegZ = obs[10];
      const yawErr = obs[17];
      const aligned = Math.hypot(ex, ey) < 0.0006 && Math.abs(yawErr) < 0.02;
      const inside = pegZ < hz - 0.002;
      // Hover 15 mm above the block until aligned, then go 25 mm deep.
      const targetZ = aligned || inside ? hz - 0.025 : hz + 0.015;
      const gain = 0.6;
      return Float32Array.from([
        clamp((gain * ex) / STEP_XY),
        clamp((gain * ey) / STEP_XY),
        clamp((gain * (targetZ - pegZ)) / STEP_Z),
        clamp((0.4 * yawErr) / STEP_YAW),
      ]);
    },
  };
}

function clamp(v: number): number {
  return Math.max(-1, Math.min(1, v));
}
