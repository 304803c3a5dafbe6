/**
 * An SO-101-like arm in MJCF: shoulder pan, shoulder lift, elbow flex, wrist flex, wrist roll and a
 * parallel gripper (two fingers coupled by an equality constraint, one servo), each a position
 * servo, on a table with a 3 cm cube and a target marker. Lengths are close to the SO-101's; the
 * gripper is parallel rather than a single jaw, so that grasps are stable in simulation.
 *
 * JOINTS lists what the virtual servo bus needs: each joint's range and how a servo's encoder
 * counts follow it (counts = zeroCounts + sign · countsPerUnit · q).
 */

/** Heights and lengths, metres. */
export const ARM = {
  shoulderHeight: 0.1,
  upperArm: 0.12,
  forearm: 0.13,
  /** Wrist-flex axis to the point between the fingertips. */
  hand: 0.09,
  cubeHalf: 0.015,
  /** One finger's travel: the opening is twice this. */
  fingerTravel: 0.03,
};

export interface ArmJoint {
  /** Servo/joint name (LeRobot's SO-101 names). */
  name: string;
  /** Range of the joint (rad, or m for the gripper slide); the actuator's ctrlrange. */
  low: number;
  high: number;
  /** Encoder counts per rad (or per metre of finger travel, through the gripper's gearing). */
  countsPerUnit: number;
  /** Shaft counts at q = 0. */
  zeroCounts: number;
  /** +1: counts grow with q; −1: the servo is mounted the other way round. */
  sign: 1 | -1;
}

const PER_RAD = 4096 / (2 * Math.PI);

export const JOINTS: readonly ArmJoint[] = [
  { name: 'shoulder_pan', low: -2.0, high: 2.0, countsPerUnit: PER_RAD, zeroCounts: 2048, sign: 1 },
  { name: 'shoulder_lift', low: -0.5, high: 2.0, countsPerUnit: PER_RAD, zeroCounts: 1500, sign: 1 },
  // Mounted reversed, as real arms often have one joint: the calibration's direction undoes it.
  { name: 'elbow_flex', low: -2.6, high: 0.5, countsPerUnit: PER_RAD, zeroCounts: 1700, sign: -1 },
  { name: 'wrist_flex', low: -2.2, high: 1.2, countsPerUnit: PER_RAD, zeroCounts: 2400, sign: 1 },
  { name: 'wrist_roll', low: -3.0, high: 3.0, countsPerUnit: PER_RAD, zeroCounts: 2048, sign: 1 },
  // 0.03 m of finger travel over about 100° of servo horn.
  {
    name: 'gripper',
    low: 0,
    high: ARM.fingerTravel,
    countsPerUnit: 1150 / ARM.fingerTravel,
    zeroCounts: 1500,
    sign: 1,
  },
];

const A = ARM;
const finger = (side: 1 | -1): string => `
                <body name="finger_${side > 0 ? 'l' : 'r'}" pos="0.015 0 0">
                  <joint name="${side > 0 ? 'gripper' : 'gripper_mirror'}" type="slide" axis="0 ${side} 0" range="0 ${A.fingerTravel}" damping="4" armature="0.001"/>
                  <geom name="finger_${side > 0 ? 'l' : 'r'}" type="box" size="0.03 0.004 0.011" pos="0.032 ${side * 0.004} 0" mass="0.01"
                        contype="2" conaffinity="1" condim="4" friction="1.5 0.02 0.002" rgba="0.2 0.2 0.2 1"/>
                </body>`;

export const SO101_MJCF = `
<mujoco model="so101-like">
  <compiler angle="radian"/>
  <size memory="4M"/>
  <option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <default>
    <joint damping="0.2" armature="0.005"/>
    <geom contype="0" conaffinity="0" friction="1 0.01 0.001" rgba="0.95 0.55 0.15 1"/>
  </default>
  <worldbody>
    <light pos="0 0 1.2"/>
    <!-- Where SO-101 setups put theirs: one above the workspace, one in front of the arm. -->
    <camera name="top" pos="0.17 0 0.6" xyaxes="0 -1 0 1 0 0" fovy="50"/>
    <camera name="front" pos="0.55 0 0.35" xyaxes="0 1 0 -0.35 0 0.4" fovy="50"/>
    <geom name="table" type="plane" size="0.5 0.5 0.01" contype="1" conaffinity="1" rgba="0.82 0.82 0.78 1"/>
    <body name="base">
      <geom type="cylinder" size="0.045 0.03" pos="0 0 0.03" mass="0.4"/>
      <body name="pan" pos="0 0 0.06">
        <joint name="shoulder_pan" axis="0 0 1" range="${JOINTS[0].low} ${JOINTS[0].high}"/>
        <geom type="cylinder" size="0.028 0.02" pos="0 0 0.02" mass="0.1"/>
        <body name="upper_arm" pos="0 0 ${A.shoulderHeight - 0.06}">
          <joint name="shoulder_lift" axis="0 -1 0" range="${JOINTS[1].low} ${JOINTS[1].high}"/>
          <geom type="capsule" fromto="0 0 0 ${A.upperArm} 0 0" size="0.016" mass="0.1"/>
          <body name="forearm" pos="${A.upperArm} 0 0">
            <joint name="elbow_flex" axis="0 -1 0" range="${JOINTS[2].low} ${JOINTS[2].high}"/>
            <geom type="capsule" fromto="0 0 0 ${A.forearm} 0 0" size="0.014" mass="0.08"/>
            <body name="wrist" pos="${A.forearm} 0 0">
              <joint name="wrist_flex" axis="0 -1 0" range="${JOINTS[3].low} ${JOINTS[3].high}"/>
              <geom type="capsule" fromto="0 0 0 0.03 0 0" size="0.012" mass="0.03"/>
              <body name="hand" pos="0.03 0 0">
                <joint name="wrist_roll" axis="1 0 0" range="${JOINTS[4].low} ${JOINTS[4].high}" damping="0.05"/>
                <geom type="box" size="0.008 0.038 0.013" pos="0.006 0 0" mass="0.04"/>
                <site name="tip" pos="${A.hand - 0.03} 0 0" size="0.004"/>${finger(1)}${finger(-1)}
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
    <body name="cube" pos="0.2 0 ${A.cubeHalf}">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="${A.cubeHalf} ${A.cubeHalf} ${A.cubeHalf}" mass="0.03"
            contype="1" conaffinity="3" condim="4" friction="1.5 0.02 0.002" rgba="0.15 0.45 0.85 1"/>
    </body>
    <body name="target" mocap="true" pos="0.2 0.1 0">
      <geom type="cylinder" size="0.025 0.0008" rgba="0.1 0.75 0.2 0.6"/>
    </body>
  </worldbody>
  <equality>
    <joint joint1="gripper_mirror" joint2="gripper" polycoef="0 1 0 0 0"/>
  </equality>
  <actuator>
    <position name="shoulder_pan" joint="shoulder_pan" kp="25" kv="1.2" ctrlrange="${JOINTS[0].low} ${JOINTS[0].high}"/>
    <position name="shoulder_lift" joint="shoulder_lift" kp="45" kv="2" ctrlrange="${JOINTS[1].low} ${JOINTS[1].high}"/>
    <position name="elbow_flex" joint="elbow_flex" kp="35" kv="1.5" ctrlrange="${JOINTS[2].low} ${JOINTS[2].high}"/>
    <position name="wrist_flex" joint="wrist_flex" kp="12" kv="0.5" ctrlrange="${JOINTS[3].low} ${JOINTS[3].high}"/>
    <position name="wrist_roll" joint="wrist_roll" kp="4" kv="0.15" ctrlrange="${JOINTS[4].low} ${JOINTS[4].high}"/>
    <position name="gripper" joint="gripper" kp="300" kv="8" ctrlrange="${JOINTS[5].low} ${JOINTS[5].high}" forcerange="-8 8"/>
  </actuator>
</mujoco>`;
