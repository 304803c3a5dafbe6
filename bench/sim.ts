/**
 * bench/sim: environment steps per second for every built-in task, single and vectorized, next to
 * raw mj_step on the same model in the same run. All three replay one deterministic trajectory
 * (same seed, same action sequence), in interleaved passes; each reports its fastest pass, which
 * keeps the comparison fair on a machine with other load. The overhead is the wrapper's time per
 * control step over raw physics for the same physics steps.
 *
 *   npx tsx bench/sim.ts [--json] [--seconds S] [--vec N] [--steps N]
 */
import { formatTable } from '../src/cli/common.js';
import { MujocoEnv } from '../src/sim/env.js';
import { RandomPolicy } from '../src/sim/expert.js';
import { builtInTasks } from '../src/sim/registry.js';
import { VecEnv } from '../src/sim/vec-env.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const json = args.includes('--json');
const seconds = flag('--seconds', 3);
const vecCount = flag('--vec', 8);
const passSteps = flag('--steps', 1000);

interface Row {
  task: string;
  substeps: number;
  raw_physics_steps_per_s: number;
  raw_control_steps_per_s: number;
  env_steps_per_s: number;
  vec_env_steps_per_s: number;
  overhead_single: number;
  overhead_vec: number;
}

const rows: Row[] = [];
for (const [name, task] of Object.entries(builtInTasks)) {
  const env = await MujocoEnv.create(task);
  const vec = await VecEnv.create(task, vecCount);
  const policy = new RandomPolicy(env.actionSpace.dim, 1);
  const actions = Array.from({ length: passSteps }, () => policy.act());
  const substeps = task.controlSubsteps;
  const { mj, model, data, views } = env.sim;

  // Record the states and controls of one pass.
  // The solver's warm start is part of the state: without it the replay does different work.
  const warmstart = (): Float64Array => data.qacc_warmstart as Float64Array;
  const record: { qpos: Float64Array; qvel: Float64Array; warm: Float64Array; ctrl: Float64Array }[] = [];
  env.reset({ seed: 0 });
  for (const a of actions) {
    const qpos = Float64Array.from(views.qpos);
    const qvel = Float64Array.from(views.qvel);
    const warm = Float64Array.from(warmstart());
    const r = env.step(a);
    record.push({ qpos, qvel, warm, ctrl: Float64Array.from(views.ctrl) });
    if (r.terminated || r.truncated) env.reset();
  }

  const envPass = (): void => {
    env.reset({ seed: 0 });
    for (const a of actions) {
      const r = env.step(a);
      if (r.terminated || r.truncated) env.reset();
    }
  };
  const rawPass = (): void => {
    for (const rec of record) {
      views.qpos.set(rec.qpos);
      views.qvel.set(rec.qvel);
      warmstart().set(rec.warm);
      views.ctrl.set(rec.ctrl);
      for (let s = 0; s < substeps; s++) mj.mj_step(model, data);
    }
  };
  const batch = new Float32Array(vecCount * vec.actionDim);
  const vecPass = (): void => {
    vec.reset(new Array(vecCount).fill(0));
    for (const a of actions) {
      for (let i = 0; i < vecCount; i++) batch.set(a, i * vec.actionDim);
      vec.step(batch);
    }
  };

  const best = { env: Infinity, raw: Infinity, vec: Infinity };
  const timed = (fn: () => void): number => {
    const t = performance.now();
    fn();
    return performance.now() - t;
  };
  const start = performance.now();
  do {
    best.env = Math.min(best.env, timed(envPass));
    best.raw = Math.min(best.raw, timed(rawPass));
    best.vec = Math.min(best.vec, timed(vecPass));
  } while (performance.now() - start < seconds * 1000);
  env.close();
  vec.close();

  const rawRate = passSteps / (best.raw / 1000);
  const envRate = passSteps / (best.env / 1000);
  const vecRate = (passSteps * vecCount) / (best.vec / 1000);
  rows.push({
    task: name,
    substeps,
    raw_physics_steps_per_s: Math.round(rawRate * substeps),
    raw_control_steps_per_s: Math.round(rawRate),
    env_steps_per_s: Math.round(envRate),
    vec_env_steps_per_s: Math.round(vecRate),
    overhead_single: Number((rawRate / envRate - 1).toFixed(4)),
    overhead_vec: Number((rawRate / vecRate - 1).toFixed(4)),
  });
}

if (json) {
  console.log(
    JSON.stringify({
      bench: 'sim',
      seconds_per_task: seconds,
      steps_per_pass: passSteps,
      vec_envs: vecCount,
      node: process.version,
      tasks: rows,
    }),
  );
} else {
  console.log(
    `bench/sim: ${seconds}s per task, passes of ${passSteps} control steps, vectorized over ${vecCount} envs, ${process.version}`,
  );
  console.log(
    formatTable(
      [
        'task',
        'substeps',
        'raw mj_step/s',
        'raw ctrl steps/s',
        'env steps/s',
        'vec env steps/s',
        'overhead single',
        'overhead vec',
      ],
      rows.map((r) => [
        r.task,
        r.substeps,
        r.raw_physics_steps_per_s,
        r.raw_control_steps_per_s,
        r.env_steps_per_s,
        r.vec_env_steps_per_s,
        `${(100 * r.overhead_single).toFixed(1)}%`,
        `${(100 * r.overhead_vec).toFixed(1)}%`,
      ]),
    ),
  );
}
