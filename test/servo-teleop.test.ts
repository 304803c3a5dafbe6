// Teleoperation beyond the keyboard: a leader arm on its own (virtual) servo bus drives the
// follower arm through the safety layer as an intervention; a synthetic gamepad driven by the test
// in headless Chromium intervenes and labels episodes on the dashboard.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchChromium, type HeadlessChromium } from './fixtures/chromium.js';
import { filter, firstValueFrom } from 'rxjs';
import { afterAll, describe, expect, it } from 'vitest';
import { connectRobot } from '../src/hw/connect.js';
import { loadRobotConfig } from '../src/hw/robot-config.js';
import { LeaderArm } from '../src/hw/servo/leader-arm.js';
import { STS3215 } from '../src/hw/servo/models.js';
import type { ServoRobot } from '../src/hw/servo/servo-robot.js';
import { EmulatedServo, IdealJoint } from '../src/hw/servo/virtual/emulated-servo.js';
import { startVirtualServoArm } from '../src/hw/servo/virtual/virtual-arm.js';
import { VirtualServoBus } from '../src/hw/servo/virtual/virtual-bus.js';
import { startDashboard } from '../src/runtime/dashboard/server.js';
import type { ControlCommand } from '../src/runtime/session/protocol.js';
import { SafetyLayer } from '../src/safety/layer.js';

const dir = mkdtempSync(join(tmpdir(), 'resrt-teleop-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('leader arm', () => {
  it("moves the follower through the safety layer: the leader's calibrated pose becomes the follower's goals", async () => {
    const follower = await startVirtualServoArm({ protocol: 'feetech', seed: 5 });
    const config = loadRobotConfig(follower.writeConfig(dir));
    Object.assign(config.servo!, { timeoutMarginMs: 150, retries: 4, linkTimeoutMs: 3000, maxStep: 2 });
    // The leader: the same joints on a second bus, held by a person (no physics, torque off).
    const joints = config.servo!.joints.map(() => new IdealJoint(2047));
    const leaderBus = await VirtualServoBus.start({
      protocol: 'feetech',
      devices: joints.map((j, k) => new EmulatedServo(STS3215, k + 1, j)),
    });
    const calibration = structuredClone(follower.calibration);
    for (const c of Object.values(calibration.joints))
      Object.assign(c, { homingOffset: 0, rangeMin: 1047, rangeMax: 3047, direction: 1 });
    writeFileSync(join(dir, 'leader-cal.json'), JSON.stringify(calibration));
    const robot = (await connectRobot(follower.robotUrl, { config })) as ServoRobot;
    const safety = new SafetyLayer({ actionDim: 6 });
    const decisions: { intervention: boolean; action: Float32Array }[] = [];
    const leader = await LeaderArm.open(
      { kind: 'servo', protocol: 'feetech', path: leaderBus.hostPath },
      {
        section: {
          ...config.servo!,
          joints: config.servo!.joints.map((j) => ({ ...j, invert: false })),
          calibration: join(dir, 'leader-cal.json'),
        },
        calibration,
        followerJoints: config.action.names,
        rateHz: 30,
        onAction: (a) => {
          const now = performance.now();
          safety.setTeleop(a, now);
          if (!a) return;
          const base = new Float32Array(6);
          const d = safety.filter(base, { obs: null, baseAction: base, nowMs: now, obsAgeMs: 0 });
          decisions.push({ intervention: d.intervention, action: d.action });
          robot.send({ action: d.action, validForMs: 200 });
        },
      },
    );
    try {
      expect(leader.readings).toBe(0);
      // The person bends the leader's shoulder_lift to 3/4 of its range and closes its gripper.
      joints[1].position = 2547;
      joints[5].position = 1047;
      leader.engage(true);
      await until('intervening commands', () => decisions.length >= 3);
      const last = decisions[decisions.length - 1];
      expect(last.intervention).toBe(true);
      expect(last.action[1]).toBeCloseTo(0.5, 2);
      expect(last.action[5]).toBeCloseTo(-1, 2);
      // The follower goes there (its own calibration maps the same normalized goals).
      const lift = follower.calibration.joints.shoulder_lift;
      const want = lift.rangeMin + 0.75 * (lift.rangeMax - lift.rangeMin);
      const goal = follower.servos[1];
      await until(
        'the follower goal',
        () => Math.abs(goal.get(goal.model.registers.goalPosition) - want) <= 2,
      );
      leader.engage(false);
      expect(
        safety.filter(new Float32Array(6), {
          obs: null,
          baseAction: null,
          nowMs: performance.now(),
          obsAgeMs: 0,
        }).intervention,
      ).toBe(false);
      await firstValueFrom(robot.state$.pipe(filter(() => true)));
    } finally {
      await leader.close();
      await robot.close();
      await leaderBus.close();
      await follower.close();
    }
  }, 60_000);
});

describe('gamepad on the dashboard (Chromium)', () => {
  let chrome: HeadlessChromium | null = null;
  afterAll(async () => chrome?.close());

  it('a synthetic gamepad intervenes while LB is held, maps sticks and triggers to the action, and labels with Y/X', async () => {
    const safety = new SafetyLayer({ actionDim: 6 });
    const teleops: (number[] | null)[] = [];
    const commands: ControlCommand[] = [];
    const dash = await startDashboard({
      title: 'teleop test',
      port: 0,
      snapshot: () => ({ role: 'actor', actionDim: 6, robots: { arm: { phase: 'run' } } }),
      command: (_robot, c) => {
        commands.push(c);
        return true;
      },
      teleop: (_robot, a) => {
        teleops.push(a);
        safety.setTeleop(a, performance.now());
        return true;
      },
      intervalMs: 50,
    });
    try {
      chrome = await launchChromium();
      const browser = chrome.browser;
      const page = browser.pages()[0] ?? (await browser.newPage());
      // The synthetic gamepad: the page reads navigator.getGamepads(); the test sets its state.
      await page.addInitScript(() => {
        const w = globalThis as unknown as {
          __pad: { axes: number[]; buttons: { pressed: boolean; value: number }[] };
        };
        w.__pad = {
          axes: [0, 0, 0, 0],
          buttons: Array.from({ length: 17 }, () => ({ pressed: false, value: 0 })),
        };
        Object.defineProperty((globalThis as unknown as { navigator: object }).navigator, 'getGamepads', {
          value: () => [
            {
              id: 'resrt synthetic gamepad (STANDARD GAMEPAD)',
              index: 0,
              connected: true,
              mapping: 'standard',
              timestamp: performance.now(),
              axes: w.__pad.axes,
              buttons: w.__pad.buttons,
            },
          ],
        });
      });
      await page.goto(dash.url);
      await page.getByTestId('robot-arm').waitFor();
      await page.getByTestId('gamepad').filter({ hasText: 'synthetic gamepad' }).waitFor();
      expect(teleops).toEqual([]);
      const setPad = (axes: number[], pressed: Record<number, number>) =>
        page.evaluate(
          ([a, p]) => {
            const w = globalThis as unknown as {
              __pad: { axes: number[]; buttons: { pressed: boolean; value: number }[] };
            };
            w.__pad.axes.splice(0, 4, ...a);
            w.__pad.buttons.forEach((b, i) => {
              b.value = p[i] ?? 0;
              b.pressed = (p[i] ?? 0) > 0.5;
            });
          },
          [axes, pressed] as [number[], Record<number, number>],
        );
      // Sticks pushed without LB: nothing is sent.
      await setPad([0.5, 0, 0, 0], {});
      await page.waitForTimeout(200);
      expect(teleops).toEqual([]);
      // LB held, left stick right and up, right trigger half, B: the action follows.
      await setPad([0.5, -0.8, 0.05, 0], { 4: 1, 7: 0.5, 1: 1 });
      await until('a gamepad teleop command', () => teleops.some((a) => a !== null));
      const sent = teleops.find((a) => a !== null)!;
      expect(sent.map((v) => Number(v.toFixed(3)))).toEqual([0.5, 0.8, 0, 0, 0.5, 1]);
      const d = safety.filter(new Float32Array(6), {
        obs: null,
        baseAction: null,
        nowMs: performance.now(),
        obsAgeMs: 0,
      });
      expect(d.intervention).toBe(true);
      expect(Array.from(d.action).map((v) => Number(v.toFixed(3)))).toEqual([0.5, 0.8, 0, 0, 0.5, 1]);
      // Y labels success once per press; X labels failure.
      await setPad([0, 0, 0, 0], { 4: 1, 3: 1 });
      await until('a success label', () => commands.some((c) => c.cmd === 'label'));
      await setPad([0, 0, 0, 0], { 4: 1, 2: 1 });
      await until('a failure label', () => commands.filter((c) => c.cmd === 'label').length >= 2);
      expect(commands.filter((c) => c.cmd === 'label')).toEqual([
        { cmd: 'label', success: true },
        { cmd: 'label', success: false },
      ]);
      // LB released: control is handed back.
      await setPad([0, 0, 0, 0], {});
      await until('the release', () => teleops[teleops.length - 1] === null);
    } finally {
      await chrome?.close();
      chrome = null;
      await dash.close();
    }
  }, 90_000);
});
