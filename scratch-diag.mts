// Diagnostic: how does the push-cam image base fail? Per episode: success, final and min puck-goal distance,
// puck travel, whether it ended by failure or truncation.
import { MujocoEnv } from '/work/main/src/sim/env.js';
import { loadTask } from '/work/main/src/sim/registry.js';
import { OnnxPolicy } from '/work/main/src/runtime/onnx-policy.js';

const [basePath, taskName = 'push-cam', nStr = '100'] = process.argv.slice(2);
const task = await loadTask(taskName);
const env = await MujocoEnv.create(task);
const cams = Object.fromEntries((env.cameras ?? []).map((c) => [c.name, { width: c.width, height: c.height }]));
const base = await OnnxPolicy.load(basePath, { expectObsDim: env.observationSpace.dim, expectActionDim: env.actionSpace.dim, cameras: cams });
const n = Number(nStr);
const rows: { seed: number; success: boolean; final: number; min: number; travel: number; steps: number; trunc: boolean; gdist: number; gdir: number }[] = [];
for (let i = 0; i < n; i++) {
  const seed = 2_000_000_000 + i;
  let { obs, frames } = await env.reset({ seed });
  const p0 = env.expertObservation();
  let min = Infinity; let final = 0; let steps = 0;
  for (;;) {
    const a = await base.act(obs, frames);
    const r = await env.step(a);
    steps++;
    obs = r.obs; frames = r.frames;
    const p = env.expertObservation();
    const d = Math.hypot(p[14], p[15]);
    min = Math.min(min, d); final = d;
    if (r.terminated || r.truncated) {
      rows.push({ seed, success: r.info.success, final, min, travel: Math.hypot(p[8] - p0[8], p[9] - p0[9]), steps, trunc: r.truncated, gdist: Math.hypot(p0[14], p0[15]), gdir: Math.atan2(p0[15], p0[14]) });
      break;
    }
  }
}
const ok = rows.filter((r) => r.success);
const bad = rows.filter((r) => !r.success);
console.log(`success ${ok.length}/${rows.length}`);
const q = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return [0.1, 0.5, 0.9].map((f) => (s[Math.floor(f * (s.length - 1))] * 100).toFixed(1)).join('/'); };
console.log('failures: final dist cm p10/50/90', q(bad.map((r) => r.final)), ' min dist', q(bad.map((r) => r.min)), ' puck travel', q(bad.map((r) => r.travel)), ' truncated', bad.filter((r) => r.trunc).length);
console.log('fail by goal dir (rad) buckets:');
for (const lo of [-1.9, -1.1, -0.4, 0.4, 1.1]) {
  const inB = rows.filter((r) => r.gdir >= lo && r.gdir < lo + 0.75);
  console.log(` [${lo.toFixed(1)},${(lo + 0.75).toFixed(1)}) success ${inB.filter((r) => r.success).length}/${inB.length}`);
}
for (const r of bad.slice(0, 15)) console.log(JSON.stringify({ ...r, final: +r.final.toFixed(3), min: +r.min.toFixed(3), travel: +r.travel.toFixed(3), gdist: +r.gdist.toFixed(3), gdir: +r.gdir.toFixed(2) }));
await base.close(); env.close();
