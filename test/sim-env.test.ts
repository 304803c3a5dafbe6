import { describe, expect, it } from 'vitest';
import { MujocoEnv } from '../src/sim/env.js';
import { cleanExpert, ImperfectExpert, PrivilegedExpert, RandomPolicy } from '../src/sim/expert.js';
import { builtInTasks, loadTask } from '../src/sim/registry.js';
import { defineTask } from '../src/sim/task.js';
import { VecEnv } from '../src/sim/vec-env.js';
import { evaluatePolicy } from '../src/runtime/evaluate.js';
import { ResrtError } from '../src/util/errors.js';

function rollout(env: MujocoEnv, seed: number, steps: number): number[][] {
  const rng = new RandomPolicy(env.actionSpace.dim, seed);
  const out: number[][] = [];
  let { obs } = env.reset({ seed });
  out.push(Array.from(obs));
  for (let t = 0; t < steps; t++) {
    const r = env.step(rng.act());
    out.push(Array.from(r.obs));
    obs = r.obs;
    if (r.terminated || r.truncated) ({ obs } = env.reset());
  }
  return out;
}

describe('MuJoCo environments', () => {
  it.each(Object.keys(builtInTasks))('%s is deterministic under a seed', async (name) => {
    const a = await MujocoEnv.create(builtInTasks[name]);
    const b = await MujocoEnv.create(builtInTasks[name]);
    expect(rollout(a, 7, 120)).toEqual(rollout(b, 7, 120));
    // A different seed gives a different episode.
    expect(rollout(a, 8, 5)).not.toEqual(rollout(b, 7, 5));
    a.close();
    b.close();
  });

  it.each(Object.keys(builtInTasks))(
    '%s: the clean expert succeeds in >= 95 percent of 50 episodes, random near 0',
    async (name) => {
      const task = builtInTasks[name];
      // The experts need no images (push-cam's acts on its privileged state).
      const env = await MujocoEnv.create(task, { cameras: { names: 'none' } });
      const clean = new ImperfectExpert(task.expert!(), env.actionSpace.dim, cleanExpert);
      const expert = await evaluatePolicy(
        env,
        task.privilegedObservation ? new PrivilegedExpert(clean, () => env.expertObservation()) : clean,
        {
          episodes: 50,
          seed: 500,
        },
      );
      const random = await evaluatePolicy(env, new RandomPolicy(env.actionSpace.dim, 3), {
        episodes: 50,
        seed: 500,
      });
      env.close();
      expect(expert.successRate).toBeGreaterThanOrEqual(0.95);
      expect(random.successRate).toBeLessThanOrEqual(0.1);
    },
  );

  it('maps normalized actions onto the actuator control ranges and clips out-of-range values', async () => {
    const env = await MujocoEnv.create(builtInTasks.push);
    env.reset({ seed: 1 });
    const ctrlrange = env.sim.model.actuator_ctrlrange as Float64Array;
    env.step([-1, 0, 0.5]);
    const ctrl = env.sim.views.ctrl;
    expect(ctrl[0]).toBeCloseTo(ctrlrange[0]);
    expect(ctrl[1]).toBeCloseTo((ctrlrange[2] + ctrlrange[3]) / 2);
    expect(ctrl[2]).toBeCloseTo(ctrlrange[4] + 0.75 * (ctrlrange[5] - ctrlrange[4]));
    env.step([5, -5, 1]);
    expect(ctrl[0]).toBeCloseTo(ctrlrange[1]);
    expect(ctrl[1]).toBeCloseTo(ctrlrange[2]);
    expect(env.actionSpace.low).toEqual([-1, -1, -1]);
    expect(env.actionSpace.names).toEqual(['shoulder', 'elbow', 'wrist']);
    // The control period is a whole number of physics steps.
    expect(env.controlDt).toBeCloseTo(20 * 0.002);
    env.close();
  });

  it('lets a task map actions itself: peg-insert moves its Cartesian target by the commanded deltas', async () => {
    const env = await MujocoEnv.create(builtInTasks['peg-insert']);
    env.reset({ seed: 1 });
    expect(env.actionSpace.names).toEqual(['dx', 'dy', 'dz', 'dyaw']);
    const target = (env.taskState as { target: { x: number; y: number; z: number } }).target;
    const before = { ...target };
    env.step([1, -0.5, 0.5, 0]);
    expect(target.x - before.x).toBeCloseTo(0.01);
    expect(target.y - before.y).toBeCloseTo(-0.005);
    expect(target.z - before.z).toBeCloseTo(0.005);
    // Holding zero deltas for a while brings the peg onto its target.
    let obs = env.step([0, 0, 0, 0]).obs;
    for (let i = 0; i < 20; i++) obs = env.step([0, 0, 0, 0]).obs;
    expect(Math.abs(obs[8] - target.x)).toBeLessThan(0.001);
    expect(Math.abs(obs[9] - target.y)).toBeLessThan(0.001);
    env.close();
  });

  it('truncates at the time limit and terminates on success, with reward only on success', async () => {
    const env = await MujocoEnv.create(builtInTasks.reach, { maxEpisodeSteps: 5 });
    env.reset({ seed: 2 });
    const hold = [0, 0];
    let last;
    for (let t = 0; t < 5; t++) last = env.step(hold);
    expect(last!.truncated).toBe(true);
    expect(last!.terminated).toBe(false);
    expect(last!.reward).toBe(0);
    expect(() => env.step(hold)).toThrow(/reset\(\)/);
    env.close();

    const task = builtInTasks.reach;
    const env2 = await MujocoEnv.create(task);
    const expert = new ImperfectExpert(task.expert!(), 2, cleanExpert);
    let { obs } = env2.reset({ seed: 3 });
    for (;;) {
      const r = env2.step(expert.act(obs));
      obs = r.obs;
      if (r.terminated || r.truncated) {
        expect(r.terminated).toBe(true);
        expect(r.truncated).toBe(false);
        expect(r.reward).toBe(1);
        expect(r.info.success).toBe(true);
        break;
      }
      expect(r.reward).toBe(0);
    }
    env2.close();
  });

  it('rejects wrong action shapes and non-finite actions with an error naming the fix', async () => {
    const env = await MujocoEnv.create(builtInTasks.push);
    env.reset({ seed: 0 });
    expect(() => env.step([0, 0])).toThrow(/length 3 \(shoulder, elbow, wrist\), got 2/);
    expect(() => env.step([0, NaN, 0])).toThrow(/action\[1\] \(elbow\) is NaN/);
    expect(() => env.step([0, 0, Infinity])).toThrow(ResrtError);
    env.close();
  });

  it('reports an MJCF that does not parse with the parser message', async () => {
    const bad = defineTask({
      ...builtInTasks.reach,
      name: 'bad-xml',
      mjcf: '<mujoco><worldbody><body></worldbody></mujoco>',
    });
    await expect(MujocoEnv.create(bad)).rejects.toThrow(/MJCF of task bad-xml does not compile: .*XML/s);
  });

  it('applies domain randomization: friction, mass, observation noise, action delay', async () => {
    const task = builtInTasks.push;
    const env = await MujocoEnv.create(task, {
      randomization: {
        frictionScale: [0.5, 0.5],
        massScale: [2, 2],
        obsNoiseStd: 0.01,
        actionDelaySteps: [2, 2],
      },
    });
    const nominal = await MujocoEnv.create(task);
    env.reset({ seed: 4 });
    nominal.reset({ seed: 4 });
    const f = env.sim.model.geom_friction as Float64Array;
    const f0 = nominal.sim.model.geom_friction as Float64Array;
    expect(f[0]).toBeCloseTo(f0[0] * 0.5);
    const m = env.sim.model.body_mass as Float64Array;
    const m0 = nominal.sim.model.body_mass as Float64Array;
    expect(m[1]).toBeCloseTo(m0[1] * 2);
    // Two steps of delay: the first two steps execute zeros (the centre of every range).
    env.step([1, 1, 1]);
    expect(env.sim.views.ctrl[0]).toBeCloseTo(0);
    env.step([1, 1, 1]);
    env.step([1, 1, 1]);
    const range = env.sim.model.actuator_ctrlrange as Float64Array;
    expect(env.sim.views.ctrl[0]).toBeCloseTo(range[1]);
    // Observation noise: the same state observed twice differs.
    const r1 = env.reset({ seed: 9 }).obs;
    const r2 = env.reset({ seed: 10 }).obs;
    expect(r1[12]).not.toBe(r2[12]);
    env.close();
    nominal.close();
  });

  it('the vectorized runner equals N single environments', async () => {
    const task = builtInTasks.push;
    const n = 4;
    const vec = await VecEnv.create(task, n);
    const singles = await Promise.all(Array.from({ length: n }, () => MujocoEnv.create(task)));
    const seeds = [11, 12, 13, 14];
    let vObs = vec.reset(seeds);
    const sObs = singles.map((e, i) => e.reset({ seed: seeds[i] }).obs);
    for (let i = 0; i < n; i++)
      expect(Array.from(vObs.subarray(i * 16, (i + 1) * 16))).toEqual(Array.from(sObs[i]));
    const policy = new RandomPolicy(3 * n, 5);
    let resets = 0;
    for (let t = 0; t < 200; t++) {
      const actions = policy.act();
      const vr = vec.step(actions);
      for (let i = 0; i < n; i++) {
        const sr = singles[i].step(actions.subarray(i * 3, (i + 1) * 3));
        expect(vr.rewards[i]).toBe(sr.reward);
        expect(Boolean(vr.terminated[i])).toBe(sr.terminated);
        expect(Boolean(vr.truncated[i])).toBe(sr.truncated);
        let next = sr.obs;
        if (sr.terminated || sr.truncated) {
          expect(Array.from(vr.finalObs[i]!)).toEqual(Array.from(sr.obs));
          next = singles[i].reset().obs;
          resets++;
        }
        expect(Array.from(vr.obs.subarray(i * 16, (i + 1) * 16))).toEqual(Array.from(next));
      }
      vObs = vr.obs;
    }
    expect(resets).toBeGreaterThan(0);
    vec.close();
    singles.forEach((e) => e.close());
  });
});

describe('task loading', () => {
  it('loads a user task by path (module + MJCF file) and runs it with its expert', async () => {
    const task = await loadTask('test/fixtures/user-task');
    expect(task.name).toBe('slider');
    const env = await MujocoEnv.create(task);
    expect(env.actionSpace.names).toEqual(['x']);
    const r = await evaluatePolicy(env, new ImperfectExpert(task.expert!(), 1, cleanExpert), {
      episodes: 10,
    });
    expect(r.successRate).toBe(1);
    env.close();
    const byFile = await loadTask('test/fixtures/user-task/task.ts');
    expect(byFile.name).toBe('slider');
  });

  it('names the missing functions of a broken task module', async () => {
    await expect(loadTask('test/fixtures/bad-task.ts')).rejects.toThrow(
      /missing or has invalid: observe \(function\), success \(function\)/,
    );
  });

  it('rejects unknown task names and missing paths with the fix', async () => {
    await expect(loadTask('pushh')).rejects.toThrow(/unknown task "pushh"[\s\S]*reach, push, peg-insert/);
    await expect(loadTask('./nowhere/task.ts')).rejects.toThrow(/no file or directory/);
  });
});
