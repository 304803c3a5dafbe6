// ServoRobot on the virtual SO-101-like arm over a real pseudo-terminal, for both protocols: the
// state mapping, goals clamped to maxStep, e-stop → the configured torque state on the next tick,
// unplug/replug, a servo's overload bit, an uncalibrated arm, and the calibration round trip.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { firstValueFrom, filter } from 'rxjs';
import { afterAll, describe, expect, it } from 'vitest';
import { openRobotEnv } from '../src/cli/robot-commands.js';
import { connectRobot } from '../src/hw/connect.js';
import { loadRobotConfig, type RobotConfig } from '../src/hw/robot-config.js';
import { ServoBus } from '../src/hw/servo/bus.js';
import { recordCalibration } from '../src/hw/servo/calibration.js';
import { encodeRegister, XL430_W250, type Register } from '../src/hw/servo/models.js';
import { EmulatedServo } from '../src/hw/servo/virtual/emulated-servo.js';
import type { ServoRobot } from '../src/hw/servo/servo-robot.js';
import { startVirtualServoArm } from '../src/hw/servo/virtual/virtual-arm.js';
import { JOINTS } from '../src/sim/tasks/so101/model.js';
import { normalizeJoint, SCENE_NAMES } from '../src/sim/tasks/so101/task.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A virtual arm, its robot config on disk (with waits for a loaded machine), and a connected robot. */
async function setUp(protocol: 'feetech' | 'dynamixel', onFault: 'hold' | 'torque-off') {
  const dir = mkdtempSync(join(tmpdir(), 'resrt-servo-robot-'));
  dirs.push(dir);
  const arm = await startVirtualServoArm({ protocol, onFault, seed: 3 });
  const path = arm.writeConfig(dir);
  const config = loadRobotConfig(path);
  Object.assign(config.servo!, { timeoutMarginMs: 150, retries: 4, linkTimeoutMs: 3000, pollHz: 50 });
  const robot = (await connectRobot(arm.robotUrl, { config })) as ServoRobot;
  return { dir, arm, config, robot, path };
}

const nextState = (robot: ServoRobot, after = performance.now()) =>
  firstValueFrom(robot.state$.pipe(filter((s) => s.receivedAtMs > after)));

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe.each([
  ['feetech', 'torque-off'],
  ['dynamixel', 'hold'],
] as const)('%s arm (on fault: %s)', (protocol, onFault) => {
  it('reports calibrated joint state, clamps goals to maxStep, and puts the servos in the fault state on the next tick after an e-stop', async () => {
    const { arm, robot, config } = await setUp(protocol, onFault);
    try {
      const s = await nextState(robot);
      const q = JOINTS.map((j, k) => normalizeJoint(k, arm.plant.env.sim.qpos(j.name)));
      for (let k = 0; k < JOINTS.length; k++) expect(s.positions[k]).toBeCloseTo(q[k], 2);
      // Scene values: the cube, then success/episode/step; then per joint temperature, voltage, fault bits.
      expect(s.sensors.length).toBe(config.servo!.scene!.values + 3 * JOINTS.length);
      expect(s.sensors[config.servo!.scene!.values]).toBe(32);
      expect(robot.capabilities.actionNames).toEqual(JOINTS.map((j) => j.name));

      // Far beyond maxStep: the goal moves maxStep of the range from where the joint is.
      const target = Float32Array.from(s.positions);
      target[0] = Math.min(1, s.positions[0] + 0.9);
      expect(robot.send({ action: target, validForMs: 500 })).toBe(true);
      await until('a clamped goal', () => robot.counters().goalsClamped > 0);
      // A sync write has no answer: the read after it shows the bus has handled it.
      await nextState(robot);
      const cal = arm.calibration.joints.shoulder_pan;
      const goal = arm.servos[0].get(arm.servos[0].model.registers.goalPosition);
      const startRaw = cal.rangeMin + ((s.positions[0] + 1) / 2) * (cal.rangeMax - cal.rangeMin);
      const step = (config.servo!.maxStep / 2) * (cal.rangeMax - cal.rangeMin);
      expect(Math.abs(goal - startRaw - step)).toBeLessThan(0.1 * step);

      robot.estop('test');
      expect(robot.send({ action: target, validForMs: 500 })).toBe(false);
      const after = await nextState(robot);
      expect(after.faulted).toBe(true);
      for (const servo of arm.servos) {
        if (onFault === 'torque-off') expect(servo.torqueOn).toBe(false);
        else expect(servo.torqueOn).toBe(true);
      }
      if (onFault === 'hold') {
        // Held where each joint was when the fault came: a joint still moving then settles back
        // onto that goal (on a loaded host the check may come well after the hold was written).
        const settled = () =>
          arm.servos.every(
            (sv) => Math.abs(sv.get(sv.model.registers.goalPosition) - sv.presentCounts()) <= 2,
          );
        await until('the joints to settle at their held goals', settled);
      }
      expect(robot.currentFault?.reason).toMatch(/e-stop: test/);
      await robot.resetFault();
      expect(arm.servos.every((sv) => sv.torqueOn)).toBe(true);
      expect((await nextState(robot)).faulted).toBe(false);
      expect(robot.send({ action: target, validForMs: 500 })).toBe(true);
    } finally {
      await robot.close();
      await arm.close();
    }
  });

  it('faults on an unplugged adapter, applies the fault state when plugged back, and resets', async () => {
    const { arm, robot } = await setUp(protocol, onFault);
    try {
      const lost = firstValueFrom(robot.status$.pipe(filter((s) => s === 'lost')));
      await arm.bus.unplug();
      await lost;
      expect(robot.send({ action: new Float32Array(6), validForMs: 100 })).toBe(false);
      expect(robot.currentFault?.reason).toMatch(/link lost/);
      const back = firstValueFrom(robot.status$.pipe(filter((s) => s === 'connected')));
      await arm.bus.replug();
      await back;
      await nextState(robot);
      if (onFault === 'torque-off') expect(arm.servos.some((sv) => sv.torqueOn)).toBe(false);
      expect((await nextState(robot)).faulted).toBe(true);
      await robot.resetFault();
      expect(arm.servos.every((sv) => sv.torqueOn)).toBe(true);
      expect(robot.counters()).toMatchObject({ linkLosses: 1, reconnects: 1 });
    } finally {
      await robot.close();
      await arm.close();
    }
  });

  it('latches a servo overload with its fix, refuses to reset while the bit stays, and names voltage and heat faults', async () => {
    const { arm, robot } = await setUp(protocol, onFault);
    try {
      arm.servos[2].faults = 0x20; // overload, in both vendors' bit maps
      await until('the overload fault', () => robot.currentFault !== null);
      expect(robot.currentFault!.reason).toMatch(/elbow_flex \(id 3\) reports overload/);
      expect(robot.currentFault!.fix).toMatch(/blocked/);
      await expect(robot.resetFault()).rejects.toThrow(/still reports overload/);
      arm.servos[2].faults = 0;
      await nextState(robot);
      await robot.resetFault();
      expect((await nextState(robot)).faulted).toBe(false);
      // Input voltage (bit 0x01 for both vendors), then overheating (0x04): each named, with its fix.
      for (const [bit, name, fix] of [
        [0x01, /input voltage/, /power supply/],
        [0x04, /overheat/, /cool down/],
      ] as const) {
        arm.servos[4].faults = bit;
        await until(`the ${String(name)} fault`, () => robot.currentFault !== null);
        expect(robot.currentFault!.reason).toMatch(name);
        expect(robot.currentFault!.reason).toMatch(/wrist_roll \(id 5\)/);
        expect(robot.currentFault!.fix).toMatch(fix);
        arm.servos[4].faults = 0;
        await nextState(robot);
        await robot.resetFault();
      }
      expect(robot.counters().faults).toBe(3);
    } finally {
      await robot.close();
      await arm.close();
    }
  });
});

describe('bad wiring and bad commands', () => {
  it('names a silent servo, two servos on one id and a wrong model with their fixes; clamps goals out of range and refuses non-finite ones', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'resrt-servo-wiring-'));
    dirs.push(dir);
    const arm = await startVirtualServoArm({ protocol: 'dynamixel', seed: 6 });
    const config = loadRobotConfig(arm.writeConfig(dir));
    // A margin a loaded host keeps (the bus answers in its own process); retries 1 keeps a silent servo quick to name.
    Object.assign(config.servo!, { timeoutMarginMs: 250, retries: 1, maxStep: 2, pollHz: 50 });
    // What a person does with the vendor's tool: renumber a servo, or put in another model.
    const setReg = (k: number, reg: Register, v: number) =>
      arm.servos[k].memory.set(encodeRegister(reg, v), reg.address);
    const regs = arm.servos[0].model.registers;
    try {
      setReg(4, regs.id, 9);
      await expect(connectRobot(arm.robotUrl, { config })).rejects.toThrow(
        /wrist_roll \(id 5\) does not answer[\s\S]*resrt servo scan --robot dynamixel:/,
      );
      setReg(4, regs.id, 5);
      setReg(5, regs.id, 5);
      await expect(connectRobot(arm.robotUrl, { config })).rejects.toThrow(
        /wrist_roll \(id 5\) answers only with corrupt packets: two servos may share id 5[\s\S]*one at a time/,
      );
      setReg(5, regs.id, 6);
      // An XL430 where the gripper's XL330 should be.
      const gripper = arm.bus.devices[5];
      arm.bus.devices[5] = new EmulatedServo(XL430_W250, 6, arm.servos[5].joint);
      await expect(connectRobot(arm.robotUrl, { config })).rejects.toThrow(
        /gripper \(id 6\) is a xl430-w250, the robot config says xl330-m288 \(model 1200\)[\s\S]*fix the model of gripper/,
      );
      arm.bus.devices[5] = gripper;

      const robot = (await connectRobot(arm.robotUrl, { config })) as ServoRobot;
      try {
        const s = await nextState(robot);
        // Past the end of the range: the goal stops at the calibrated limit, and it is counted.
        const action = Float32Array.from(s.positions);
        action[0] = 1.5;
        expect(robot.send({ action, validForMs: 500 })).toBe(true);
        await until('a clamped goal', () => robot.counters().goalsClamped > 0);
        // A sync write has no answer: the read after it shows the bus has handled it.
        await nextState(robot);
        const cal = arm.calibration.joints.shoulder_pan;
        expect(arm.servos[0].get(regs.goalPosition)).toBe(cal.rangeMax);
        action[1] = Number.NaN;
        expect(robot.send({ action, validForMs: 500 })).toBe(false);
        expect(robot.counters().commandsRefused).toBe(1);
      } finally {
        await robot.close();
      }
    } finally {
      await arm.close();
    }
  });
});

describe('lockstep virtual arm', () => {
  it('takes one physics step per environment step, however the host is paced, and each state follows its command', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'resrt-servo-lockstep-'));
    dirs.push(dir);
    const arm = await startVirtualServoArm({ protocol: 'dynamixel', lockstep: true, timeScale: 8, seed: 4 });
    const env = await openRobotEnv(arm.robotUrl, arm.writeConfig(dir), true);
    try {
      const stepOf = () => arm.plant.sceneValues()[SCENE_NAMES.length + 2];
      let { obs } = await env.reset({ seed: 0 });
      expect(stepOf()).toBe(0);
      const goal = arm.servos[0];
      for (let t = 1; t <= 25; t++) {
        // Sweep shoulder_pan a little each step; every few steps the host dawdles.
        const action = Float32Array.from(obs.subarray(0, 6));
        action[0] = Math.max(-1, Math.min(1, obs[0] + (t % 2 ? 0.01 : -0.01)));
        if (t % 5 === 0) await new Promise((r) => setTimeout(r, 30));
        const r = await env.step(action);
        expect(r.truncated && r.info.fault).toBeFalsy();
        expect(stepOf()).toBe(t);
        // The goal this step asked for is on the servo by the time its state arrives.
        const cal = arm.calibration.joints.shoulder_pan;
        const want = cal.rangeMin + ((action[0] + 1) / 2) * (cal.rangeMax - cal.rangeMin);
        expect(Math.abs(goal.get(goal.model.registers.goalPosition) - want)).toBeLessThanOrEqual(1);
        obs = r.obs;
      }
    } finally {
      await env.close();
      await arm.close();
    }
  });
});

describe('calibration', () => {
  it('an uncalibrated arm refuses to connect and says how to calibrate', async () => {
    const arm = await startVirtualServoArm({ protocol: 'feetech' });
    const dir = mkdtempSync(join(tmpdir(), 'resrt-servo-cal-'));
    dirs.push(dir);
    try {
      const config = loadRobotConfig(arm.writeConfig(dir));
      const missing: RobotConfig = {
        ...config,
        servo: { ...config.servo!, calibration: join(dir, 'none.json') },
      };
      await expect(connectRobot(arm.robotUrl, { config: missing })).rejects.toThrow(
        /not calibrated[\s\S]*resrt calibrate --robot feetech:/,
      );
      const wrong = structuredClone(arm.calibration);
      wrong.joints.gripper.id = 9;
      writeFileSync(join(dir, 'wrong.json'), JSON.stringify(wrong));
      const bad: RobotConfig = {
        ...config,
        servo: { ...config.servo!, calibration: join(dir, 'wrong.json') },
      };
      await expect(connectRobot(arm.robotUrl, { config: bad })).rejects.toThrow(
        /gripper was calibrated as id 9/,
      );
    } finally {
      await arm.close();
    }
  });

  it.each(['feetech', 'dynamixel'] as const)(
    '%s: a scripted person calibrating the arm records its true limits',
    async (protocol) => {
      const arm = await startVirtualServoArm({ protocol });
      const dir = mkdtempSync(join(tmpdir(), 'resrt-servo-cal-'));
      dirs.push(dir);
      const config = loadRobotConfig(arm.writeConfig(dir));
      const bus = await ServoBus.open(arm.bus.hostPath, { protocol, retries: 4, timeoutMarginMs: 150 });
      try {
        const mid = Object.fromEntries(JOINTS.map((j) => [j.name, (j.low + j.high) / 2]));
        const cal = await recordCalibration(bus, config.servo!.joints, {
          ask: async () => arm.plant.moveJoints(mid),
          sweepUntilDone: async (_msg, poll) => {
            for (const end of ['low', 'high'] as const) {
              arm.plant.moveJoints(Object.fromEntries(JOINTS.map((j) => [j.name, j[end]])));
              await poll();
            }
            arm.plant.moveJoints(mid);
            await poll();
          },
        });
        for (const j of JOINTS) {
          const got = cal.joints[j.name];
          const want = arm.calibration.joints[j.name];
          expect(got.direction).toBe(want.direction);
          expect(Math.abs(got.homingOffset - want.homingOffset)).toBeLessThanOrEqual(1);
          expect(Math.abs(got.rangeMin - want.rangeMin)).toBeLessThanOrEqual(2);
          expect(Math.abs(got.rangeMax - want.rangeMax)).toBeLessThanOrEqual(2);
        }
        // The limits went to EEPROM and survive a power cycle.
        const servo = arm.servos[1];
        servo.powerCycle();
        expect(servo.get(servo.model.registers.minPositionLimit)).toBe(cal.joints.shoulder_lift.rangeMin);
      } finally {
        await bus.close();
        await arm.close();
      }
    },
  );
});
