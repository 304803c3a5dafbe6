import { BehaviorSubject, ReplaySubject } from 'rxjs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HardwareEnv, PeriodClock, type HardwareStepInfo } from '../src/hw/hardware-env.js';
import { startEmbeddedBroker, type RunningBroker } from '../src/util/mqtt-broker.js';
import { FollowerPlant } from '../src/hw/mqtt/follower-plant.js';
import { serveMqttDevice, type MqttDevice } from '../src/hw/mqtt/mqtt-device.js';
import { MqttRobot } from '../src/hw/mqtt/mqtt-robot.js';
import { parseRobotConfig, type RobotConfig } from '../src/hw/robot-config.js';
import type { LinkStatus, Robot, RobotState } from '../src/types.js';
import { ResrtError } from '../src/util/errors.js';

const RATE_HZ = 50;

function config(
  robotUrl: string,
  episode: Partial<RobotConfig['episode']> = {},
  extra: Partial<Pick<RobotConfig, 'watchdog'>> = {},
): RobotConfig {
  return parseRobotConfig({
    ...extra,
    name: 'follower',
    transport: robotUrl,
    rateHz: RATE_HZ,
    commandValidMs: 100,
    action: { dim: 2, names: ['j0', 'j1'], low: [-1, -1], high: [1, 0.9], safe: [0, 0] },
    observation: [{ field: 'positions' }, { field: 'sensors', indices: [0] }],
    episode: {
      maxSteps: 15,
      reset: { mode: 'home', waypoints: [{ action: [-0.5, -0.5], holdMs: 200 }] },
      success: { mode: 'sensor', index: 0, threshold: 0.6 },
      ...episode,
    },
  });
}

describe('HardwareEnv over MqttRobot (aedes)', () => {
  let broker: RunningBroker;
  let n = 0;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    broker = await startEmbeddedBroker({ port: 0 });
  });
  afterAll(async () => {
    await broker?.close();
  });
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  async function setup(
    episode: Partial<RobotConfig['episode']> = {},
    prompt?: (m: string) => void,
    resetTimeoutMs = 3_000,
  ) {
    const url = `${broker.url}/env-${++n}`;
    const applied: number[][] = [];
    const plant = new FollowerPlant({
      joints: 2,
      rateHz: 200,
      timeConstantMs: 30,
      onCommand: (a) => applied.push([...a]),
    });
    const device: MqttDevice = await serveMqttDevice(url, plant, { reconnectBackoffMs: 50 });
    cleanups.push(() => device.close());
    const robot = await MqttRobot.connect(url, { reconnectBackoffMs: 50, stateTimeoutMs: 1000 });
    const env = new HardwareEnv(robot, config(url, episode), {
      onResetPrompt: prompt,
      resetTimeoutMs,
    });
    cleanups.push(() => env.close());
    return { env, robot, device, plant, applied };
  }

  it('resets through the home waypoints and lays out the observation per the config', async () => {
    const { env, applied } = await setup();
    expect(env.observationSpace.names).toEqual(['positions[0]', 'positions[1]', 'sensors[0]']);
    expect(env.actionSpace).toMatchObject({ dim: 2, low: [-1, -1], high: [1, 1], names: ['j0', 'j1'] });
    expect(env.controlDt).toBeCloseTo(1 / RATE_HZ);
    const { obs, info } = await env.reset();
    expect(info.success).toBe(false);
    expect(applied.length).toBeGreaterThanOrEqual(4); // ~200 ms of waypoint at 50 Hz
    expect(applied.every((a) => a[0] === -0.5 && a[1] === -0.5)).toBe(true);
    expect(obs).toHaveLength(3);
    expect(Math.abs(obs[0] + 0.5), `obs ${obs}`).toBeLessThan(0.1);
    expect(Math.abs(obs[1] + 0.5), `obs ${obs}`).toBeLessThan(0.1);
    expect(obs[2]).toBeCloseTo((obs[0] + obs[1]) / 2, 5);
  });

  it('steps at the configured rate on fresh states, clips to the limits, and truncates at the time limit', async () => {
    const { env, applied } = await setup();
    await env.reset();
    const periods: number[] = [];
    let t = performance.now();
    let last;
    for (let k = 1; k <= 15; k++) {
      last = await env.step([0, 2]); // j1 clips to 0.9
      const now = performance.now();
      periods.push(now - t);
      t = now;
      const info = last.info as HardwareStepInfo;
      expect(info.fault).toBeUndefined();
      expect(Array.from(info.action)).toEqual([0, Math.fround(0.9)]);
      expect(last.terminated).toBe(false);
      expect(last.truncated).toBe(k === 15);
      expect(last.reward).toBe(0);
    }
    expect(applied.at(-1)).toEqual([0, Math.fround(0.9)]);
    expect(last!.obs[1]).toBeGreaterThan(0.6);
    const steady = periods.slice(1);
    const mean = steady.reduce((a, b) => a + b, 0) / steady.length;
    const median = [...steady].sort((a, b) => a - b)[steady.length >> 1];
    // 20 ms period. Never faster than the rate, on average; and one period a step, not two: the
    // median, since a loaded machine stalls a few steps (a full suite beside a learner run
    // stretched the mean to 35 ms).
    expect(mean).toBeGreaterThan((0.85 * 1000) / RATE_HZ);
    expect(median).toBeLessThan((1.6 * 1000) / RATE_HZ);
    await expect(env.step([0, 0])).rejects.toThrow(ResrtError);
  });

  it('terminates with reward 1 when the success sensor passes its threshold', async () => {
    const { env } = await setup();
    await env.reset();
    const rewards: number[] = [];
    let r;
    for (let k = 0; k < 15; k++) {
      r = await env.step([1, 0.9]);
      rewards.push(r.reward);
      if (r.terminated || r.truncated) break;
    }
    expect(r!.terminated).toBe(true);
    expect(r!.truncated).toBe(false);
    expect(r!.reward).toBe(1);
    expect(r!.info.success).toBe(true);
    expect(r!.obs[2]).toBeGreaterThanOrEqual(0.6);
    expect(rewards.slice(0, -1).every((x) => x === 0)).toBe(true);
    expect(rewards.length).toBeGreaterThan(1); // it took the plant a few steps to get there
  });

  it('truncates with info.fault and the safe action when the link is lost, without throwing', async () => {
    const { env, device } = await setup({}, undefined, 500);
    await env.reset();
    const ok = await env.step([0.3, 0.3]);
    expect((ok.info as HardwareStepInfo).fault).toBeUndefined();
    device.abort(); // Last Will → status 'lost'
    let r;
    for (let k = 0; k < 20; k++) {
      r = await env.step([0.3, 0.3]);
      if (r.truncated) break;
    }
    const info = r!.info as HardwareStepInfo;
    expect(r!.truncated).toBe(true);
    expect(r!.terminated).toBe(false);
    expect(info.fault).toMatch(/link lost|no fresh state/);
    expect(Array.from(info.action)).toEqual([0, 0]);
    await expect(env.reset()).rejects.toThrow(/robot link is lost/);
  });

  it('truncates with info.fault when the robot latches an e-stop', async () => {
    const { env, robot } = await setup();
    await env.reset();
    await env.step([0.2, 0.2]);
    robot.estop('operator');
    let r;
    for (let k = 0; k < 20; k++) {
      r = await env.step([0.2, 0.2]);
      if (r.truncated) break;
    }
    expect((r!.info as HardwareStepInfo).fault).toBe('robot faulted (e-stop latched)');
    await expect(env.reset()).rejects.toThrow(/the e-stop of follower is latched/);
    await robot.resetFault();
    // Cleared: a new episode runs.
    await new Promise((res) => setTimeout(res, 50));
    await env.reset();
    expect((await env.step([0, 0])).info.success).toBe(false);
  });

  it('waits for a person on a manual reset and takes a manual success label', async () => {
    const prompts: string[] = [];
    const { env } = await setup(
      { reset: { mode: 'manual', prompt: 'put the part back' }, success: { mode: 'manual' } },
      (m) => prompts.push(m),
    );
    let done = false;
    const resetting = env.reset().then((r) => {
      done = true;
      return r;
    });
    await new Promise((res) => setTimeout(res, 100));
    expect(done).toBe(false);
    expect(prompts).toEqual(['put the part back']);
    expect(env.awaitingResetConfirmation).toBe(true);
    expect(env.confirmReset()).toBe(true);
    const { obs } = await resetting;
    expect(obs).toHaveLength(3);
    expect((await env.step([0, 0])).terminated).toBe(false);
    env.labelSuccess(true);
    const r = await env.step([0, 0]);
    expect(r).toMatchObject({ terminated: true, truncated: false, reward: 1 });
    expect(env.confirmReset()).toBe(false);
  });

  describe('between episodes, with a latching watchdog', () => {
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
    const WATCHDOG_MS = 80;
    let latest: RobotState | null = null;
    /** Bounded waits: a promise that failed must fail the test, not hang it. */
    async function until(what: string, pred: () => boolean, timeoutMs = 5000): Promise<void> {
      const t0 = performance.now();
      while (!pred()) {
        if (performance.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
        await sleep(5);
      }
    }

    async function setup(opts: { withoutHold?: boolean; faultPrompts?: string[] } = {}) {
      const url = `${broker.url}/latch-${++n}`;
      const plant = new FollowerPlant({ joints: 2, rateHz: 200, timeConstantMs: 30 });
      const device = await serveMqttDevice(url, plant, {
        reconnectBackoffMs: 50,
        watchdogMs: WATCHDOG_MS,
        watchdogMode: 'latch',
      });
      cleanups.push(() => device.close());
      const robot = await MqttRobot.connect(url, { reconnectBackoffMs: 50, stateTimeoutMs: 1000 });
      // A robot without a safe hold, as a transport that has none would be.
      if (opts.withoutHold) Object.defineProperty(robot, 'hold', { value: undefined });
      robot.state$.subscribe((st) => (latest = st));
      const prompts: string[] = [];
      const env: HardwareEnv = new HardwareEnv(
        robot,
        config(
          url,
          { reset: { mode: 'manual' }, success: { mode: 'manual' } },
          {
            watchdog: { onTimeout: 'latch', timeoutMs: WATCHDOG_MS },
          },
        ),
        {
          onResetPrompt: (m) => prompts.push(m),
          onFaultPrompt: opts.faultPrompts ? (m) => opts.faultPrompts!.push(m) : undefined,
          resetTimeoutMs: 3_000,
        },
      );
      cleanups.push(() => env.close());
      return { env, robot, device, prompts };
    }

    /** An episode of a few steps, ended by a person's label. */
    async function episode(env: HardwareEnv): Promise<void> {
      const resetting = env.reset();
      await until('the reset prompt', () => env.awaitingResetConfirmation);
      env.confirmReset();
      await resetting;
      await env.step([0.2, 0.2]);
      env.labelSuccess(true);
      expect((await env.step([0.2, 0.2])).terminated).toBe(true);
    }

    it('holds the robot from the end of an episode through a long manual reset: the watchdog never fires', async () => {
      const { env, device } = await setup();
      await episode(env);
      await sleep(6 * WATCHDOG_MS); // the person takes their time before the next reset...
      const resetting = env.reset();
      await until('the reset prompt', () => env.awaitingResetConfirmation);
      await sleep(6 * WATCHDOG_MS); // ...and during it
      expect(device.watchdogLatched).toBe(false);
      expect(device.counters().watchdogTrips).toBe(0);
      expect(device.counters().holds).toBeGreaterThanOrEqual(2); // at the episode's end and at reset
      env.confirmReset();
      await resetting;
      expect((await env.step([0.1, 0.1])).truncated).toBe(false);
    });

    it('without a safe hold the watchdog latches, and reset() asks a person before it clears it', async () => {
      const faultPrompts: string[] = [];
      const { env, device } = await setup({ withoutHold: true, faultPrompts });
      await episode(env);
      await sleep(6 * WATCHDOG_MS);
      expect(device.watchdogLatched).toBe(true);
      const resetting = env.reset();
      await until('the fault prompt', () => env.awaitingFaultConfirmation);
      expect(faultPrompts).toHaveLength(1);
      expect(faultPrompts[0]).toMatch(/the watchdog of follower latched: it received no command for 80 ms/);
      // Nothing is cleared until the person confirms.
      await sleep(150);
      expect(device.watchdogLatched).toBe(true);
      expect(device.counters().resets).toBe(0);
      expect(env.confirmFaultClear()).toBe(true);
      await until('the reset prompt', () => env.awaitingResetConfirmation);
      expect(device.watchdogLatched).toBe(false);
      expect(device.counters().resets).toBe(1);
      env.confirmReset();
      await resetting;
    });

    it('without anyone to ask, reset() refuses a latched robot and says what happened', async () => {
      const { env, device, robot } = await setup({ withoutHold: true });
      await episode(env);
      await sleep(6 * WATCHDOG_MS);
      expect(device.watchdogLatched).toBe(true);
      await expect(env.reset()).rejects.toThrow(/watchdog of follower latched[\s\S]*fix: clear the latch/);
      // A fault cleared elsewhere (a dashboard) lets the next reset go on, once the robot reports it.
      await robot.resetFault();
      await until('an unlatched state', () => !device.watchdogLatched && latest?.faulted === false);
      const resetting = env.reset();
      await until('the reset prompt', () => env.awaitingResetConfirmation);
      env.confirmReset();
      await resetting;
    });

    it('refuses a config whose watchdog the device does not have', async () => {
      const url = `${broker.url}/latch-${++n}`;
      const device = await serveMqttDevice(
        url,
        new FollowerPlant({ joints: 2, rateHz: 200, timeConstantMs: 30 }),
        {
          watchdogMs: WATCHDOG_MS,
          watchdogMode: 'latch',
        },
      );
      cleanups.push(() => device.close());
      const robot = await MqttRobot.connect(url, { stateTimeoutMs: 1000 });
      cleanups.push(() => robot.close());
      expect(robot.capabilities.watchdog).toEqual({ timeoutMs: WATCHDOG_MS, onTimeout: 'latch' });
      expect(() => new HardwareEnv(robot, config(url, {}, { watchdog: { onTimeout: 'hold' } }))).toThrow(
        /watchdog.onTimeout "hold", the device's watchdog does "latch"[\s\S]*fix: set "onTimeout": "latch"/,
      );
      expect(
        () => new HardwareEnv(robot, config(url, {}, { watchdog: { onTimeout: 'latch', timeoutMs: 200 } })),
      ).toThrow(/timeoutMs 200, the device's watchdog is 80 ms/);
    });
  });
});

describe('HardwareEnv checks the config against the robot', () => {
  function fakeRobot(actionDim: number, rateHz = 100, sensorCount = 1): Robot {
    return {
      capabilities: {
        name: 'fake',
        actionDim,
        actionNames: Array.from({ length: actionDim }, (_, i) => `a${i}`),
        jointCount: actionDim,
        sensorCount,
        rateHz,
        safeAction: new Array<number>(actionDim).fill(0),
        actionLow: new Array<number>(actionDim).fill(-1),
        actionHigh: new Array<number>(actionDim).fill(1),
      },
      state$: new ReplaySubject<RobotState>(1),
      status$: new BehaviorSubject<LinkStatus>('connected'),
      send: () => true,
      estop: () => {},
      resetFault: async () => {},
      close: async () => {},
    };
  }

  it('names the mismatching field', () => {
    const cfg = config('mqtt://127.0.0.1:1883/x');
    expect(() => new HardwareEnv(fakeRobot(3), cfg)).toThrow(/action.dim 2, the robot reports 3/);
    expect(() => new HardwareEnv(fakeRobot(2, 20), cfg)).toThrow(/rateHz 50 is above the device's 20 Hz/);
    expect(() => new HardwareEnv(fakeRobot(2, 100, 0), cfg)).toThrow(/observation\[1\] takes sensors\[0\]/);
    const env = new HardwareEnv(fakeRobot(2), cfg);
    expect(env.maxEpisodeSteps).toBe(15);
  });

  it('refuses step() before reset()', async () => {
    const env = new HardwareEnv(fakeRobot(2), config('mqtt://127.0.0.1:1883/x'));
    await expect(env.step([0, 0])).rejects.toThrow(/call reset\(\) first/);
  });
});

describe('PeriodClock', () => {
  it('ticks at its period and re-anchors after an overrun', async () => {
    const clock = new PeriodClock(10_000_000n); // 10 ms
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) await clock.tick();
    const elapsed = performance.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(99);
    // On the period's grid ten ticks take ~100 ms. A loaded machine may wake the clock late; a wake a
    // whole period late must then show as an overrun, counted by the tick after it (asserting a time
    // bound here would test the machine's load, not the clock).
    await clock.tick();
    if (elapsed >= 200) expect(clock.overruns).toBeGreaterThan(0);
    const overruns = clock.overruns; // a loaded box may already have caused some
    await new Promise((r) => setTimeout(r, 35));
    const late = await clock.tick();
    expect(late).toBeGreaterThan(10);
    expect(clock.overruns).toBe(overruns + 1);
  });
});
