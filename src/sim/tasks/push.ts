/**
 * push: a 3-DoF planar arm pushes a puck across a table (real contact and sliding friction) until
 * the puck's centre is within 2 cm of a random goal. Position-servo joints; only the pusher at the
 * end of the arm touches the puck.
 */
import { defineTask, type ExpertController } from '../task.js';
import { twoLinkIk } from './reach.js';

const L1 = 0.16;
const L2 = 0.13;
const L3 = 0.07;
const RANGE = [3.0, 2.8, 2.2];
const PUCK_R = 0.025;
const PUSHER_R = 0.012;
const SUCCESS_RADIUS = 0.02;
const HEIGHT = 0.02;

/**
 * The push scene. `goalRgba` colours the goal disc (push-cam makes it an opaque patch, the only
 * place its goal appears). Camera "top" looks straight down at the workspace.
 */
export function pushMjcf(model: string, goalRgba: string): string {
  return `
<mujoco model="${model}">
  <compiler angle="radian"/>
  <size memory="1M"/>
  <option timestep="0.002" integrator="implicitfast" cone="elliptic"/>
  <default>
    <joint damping="0.05" armature="0.005"/>
    <geom contype="0" conaffinity="0" rgba="0.3 0.5 0.8 1"/>
    <position kp="6" kv="0.4"/>
  </default>
  <worldbody>
    <light pos="0 0 1"/>
    <camera name="top" pos="0.2 0 0.55" xyaxes="0 -1 0 1 0 0" fovy="50"/>
    <geom name="table" type="plane" size="0.6 0.6 0.01" contype="1" conaffinity="1" friction="0.4 0.005 0.0001" rgba="0.85 0.85 0.8 1"/>
    <body name="l1" pos="0 0 0.06">
      <joint name="shoulder" type="hinge" axis="0 0 1"/>
      <geom type="capsule" fromto="0 0 0 ${L1} 0 0" size="0.012" mass="0.2"/>
      <body name="l2" pos="${L1} 0 0">
        <joint name="elbow" type="hinge" axis="0 0 1" range="-${RANGE[1]} ${RANGE[1]}" limited="true"/>
        <geom type="capsule" fromto="0 0 0 ${L2} 0 0" size="0.01" mass="0.12"/>
        <body name="l3" pos="${L2} 0 0">
          <joint name="wrist" type="hinge" axis="0 0 1" range="-${RANGE[2]} ${RANGE[2]}" limited="true"/>
          <geom type="capsule" fromto="0 0 0 ${L3} 0 0" size="0.008" mass="0.05"/>
          <geom name="pusher" type="cylinder" pos="${L3} 0 ${-0.06 + HEIGHT}" size="${PUSHER_R} 0.015" mass="0.03"
                contype="2" conaffinity="0" friction="0.2 0.005 0.0001" rgba="0.2 0.3 0.6 1"/>
          <geom type="capsule" fromto="${L3} 0 0 ${L3} 0 ${-0.06 + HEIGHT}" size="0.006" mass="0.01"/>
          <site name="pusher" pos="${L3} 0 ${-0.06 + HEIGHT}" size="0.005"/>
        </body>
      </body>
    </body>
    <body name="puck" pos="0.25 0 ${HEIGHT}">
      <freejoint name="puck"/>
      <geom name="puck" type="cylinder" size="${PUCK_R} 0.015" mass="0.08" contype="1" conaffinity="3"
            friction="0.4 0.005 0.0001" rgba="0.9 0.5 0.1 1"/>
    </body>
    <body name="goal" mocap="true" pos="0.3 0.1 0.001">
      <geom name="goal" type="cylinder" size="${SUCCESS_RADIUS} 0.001" rgba="${goalRgba}"/>
    </body>
  </worldbody>
  <actuator>
    <position name="shoulder" joint="shoulder" ctrlrange="-${RANGE[0]} ${RANGE[0]}"/>
    <position name="elbow" joint="elbow" ctrlrange="-${RANGE[1]} ${RANGE[1]}"/>
    <position name="wrist" joint="wrist" ctrlrange="-${RANGE[2]} ${RANGE[2]}"/>
  </actuator>
</mujoco>`;
}

const mjcf = pushMjcf('push', '0.1 0.8 0.2 0.4');

export interface PushState {
  goal: [number, number];
}

const OBS = [
  'shoulder',
  'elbow',
  'wrist',
  'shoulder_vel',
  'elbow_vel',
  'wrist_vel',
  'pusher_x',
  'pusher_y',
  'puck_x',
  'puck_y',
  'puck_vx',
  'puck_vy',
  'goal_x',
  'goal_y',
  'puck_to_goal_x',
  'puck_to_goal_y',
];

export const pushTask = defineTask<PushState>({
  name: 'push',
  description: '3-DoF planar arm pushes a puck (contact, friction) to within 2 cm of a random goal',
  mjcf,
  controlSubsteps: 20,
  maxEpisodeSteps: 150,
  observationNames: OBS,
  reset(sim, rng, spread) {
    // Arm folded back out of the way; puck in front; goal 8-14 cm away from the puck in a random direction.
    const [q1, q2] = twoLinkIk(0.12, rng.range(-0.04, 0.04) * spread, L1, L2, 1);
    sim.setQpos('shoulder', q1);
    sim.setQpos('elbow', q2);
    sim.setQpos('wrist', 0);
    const px = 0.24 + rng.range(-0.03, 0.03) * spread;
    const py = rng.range(-0.06, 0.06) * spread;
    sim.setQpos('puck', px, 0);
    sim.setQpos('puck', py, 1);
    sim.setQpos('puck', HEIGHT, 2);
    let goal: [number, number];
    for (;;) {
      const dist = rng.range(0.08, 0.14);
      const dir = rng.range(-Math.PI * 0.6, Math.PI * 0.6) * Math.min(spread, 1.6);
      goal = [px + dist * Math.cos(dir), py + dist * Math.sin(dir)];
      const r = Math.hypot(goal[0], goal[1]);
      if (r > 0.16 && r < 0.36) break;
    }
    sim.setMocapPose('goal', [goal[0], goal[1], 0.001]);
    return { goal };
  },
  observe(sim, state, out) {
    out[0] = sim.qpos('shoulder');
    out[1] = sim.qpos('elbow');
    out[2] = sim.qpos('wrist');
    out[3] = sim.qvel('shoulder');
    out[4] = sim.qvel('elbow');
    out[5] = sim.qvel('wrist');
    out[6] = sim.sitePos('pusher', 0);
    out[7] = sim.sitePos('pusher', 1);
    const px = sim.qpos('puck', 0);
    const py = sim.qpos('puck', 1);
    out[8] = px;
    out[9] = py;
    out[10] = sim.qvel('puck', 0);
    out[11] = sim.qvel('puck', 1);
    out[12] = state.goal[0];
    out[13] = state.goal[1];
    out[14] = state.goal[0] - px;
    out[15] = state.goal[1] - py;
  },
  success(sim, state) {
    return (
      Math.hypot(state.goal[0] - sim.qpos('puck', 0), state.goal[1] - sim.qpos('puck', 1)) < SUCCESS_RADIUS
    );
  },
  failure(sim) {
    // Knocked off the reachable table area.
    return Math.hypot(sim.qpos('puck', 0), sim.qpos('puck', 1)) > 0.45;
  },
  expert: () => pushExpert(),
  demoNoise: { jitterStd: 0.03, biasStd: 0.01, pauseProbability: 0.02, maxPauseSteps: 5 },
  trace(sim) {
    return {
      pusher: [sim.sitePos('pusher', 0), sim.sitePos('pusher', 1)],
      puck: [sim.qpos('puck', 0), sim.qpos('puck', 1)],
    };
  },
  markers(_sim, state) {
    return [{ label: 'goal', x: state.goal[0], y: state.goal[1], radius: SUCCESS_RADIUS }];
  },
});

/** Joint targets (normalized) that put the pusher at (x, y) with the last link pointing along `heading`. */
function pusherIk(x: number, y: number, heading: number, elbowSign: number): Float32Array {
  const wx = x - L3 * Math.cos(heading);
  const wy = y - L3 * Math.sin(heading);
  const [q1, q2] = twoLinkIk(wx, wy, L1, L2, elbowSign);
  const q3 = wrapAngle(heading - q1 - q2);
  return Float32Array.from(
    [q1 / RANGE[0], q2 / RANGE[1], q3 / RANGE[2]].map((v) => Math.max(-1, Math.min(1, v))),
  );
}

/**
 * Circle around the puck (at a safe radius) to the side opposite the goal, come in along the goal
 * line, then push through the puck while steering the contact point. Polar coordinates around the
 * puck and a hysteresis on the push phase keep the controller from chattering between phases.
 */
export function pushExpert(): ExpertController {
  let elbowSign = 1;
  let pushing = false;
  return {
    reset() {
      elbowSign = 1;
      pushing = false;
    },
    act(obs) {
      const [sx, sy, px, py, gx, gy] = [obs[6], obs[7], obs[8], obs[9], obs[12], obs[13]];
      if (Math.abs(obs[1]) > 0.05) elbowSign = Math.sign(obs[1]);
      const toGoal = Math.hypot(gx - px, gy - py) || 1e-6;
      const ux = (gx - px) / toGoal;
      const uy = (gy - py) / toGoal;
      const contact = PUCK_R + PUSHER_R;
      const rx = sx - px;
      const ry = sy - py;
      const dist = Math.hypot(rx, ry);
      const phi = Math.atan2(ry, rx);
      const behind = Math.atan2(-uy, -ux);
      const delta = wrapAngle(behind - phi);
      pushing = pushing
        ? Math.abs(delta) < 0.6 && dist < contact + 0.03
        : Math.abs(delta) < 0.25 && dist < contact + 0.012;
      let tx: number;
      let ty: number;
      if (pushing) {
        // Push through the puck; the sideways term moves the contact point back onto the goal line.
        const across = -rx * uy + ry * ux;
        const step = Math.min(0.025, toGoal + 0.004);
        tx = px - ux * (contact - step) + uy * across * 0.8;
        ty = py - uy * (contact - step) - ux * across * 0.8;
      } else if (Math.abs(delta) > 0.25) {
        // Orbit at a safe radius toward the side behind the puck.
        const radius = contact + 0.03;
        const angle = dist < radius - 0.01 ? phi : phi + Math.max(-0.7, Math.min(0.7, delta));
        tx = px + radius * Math.cos(angle);
        ty = py + radius * Math.sin(angle);
      } else {
        // Behind the puck: come in along the goal line.
        tx = px - ux * (contact + 0.004);
        ty = py - uy * (contact + 0.004);
      }
      return pusherIk(tx, ty, Math.atan2(ty, tx), elbowSign);
    },
  };
}

function wrapAngle(a: number): number {
  return Math.atan2(Math.sin(a), Math.cos(a));
}
