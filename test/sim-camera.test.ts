/**
 * Simulated cameras through real MuJoCo: known pixels of a known scene computed by hand, the
 * TypeScript ray caster against MuJoCo's own mj_multiRay on every primitive and a mesh, determinism
 * and appearance randomization, and push-cam (the goal is in the image, not in the state).
 */
import { describe, expect, it } from 'vitest';
import { SceneRenderer } from '../src/sim/camera/renderer.js';
import { MujocoEnv } from '../src/sim/env.js';
import { compileMjcf, mujoco } from '../src/sim/mujoco.js';
import { builtInTasks } from '../src/sim/registry.js';
import { pushCamTask } from '../src/sim/tasks/push-cam.js';
import { defineTask } from '../src/sim/task.js';

const boxScene = `
<mujoco>
  <visual><headlight ambient="0.1 0.1 0.1" diffuse="0.4 0.4 0.4"/></visual>
  <worldbody>
    <light directional="true" dir="0 0 -1" diffuse="0.3 0.3 0.3" pos="0 0 2"/>
    <camera name="down" pos="0 0 1" xyaxes="1 0 0 0 1 0" fovy="90"/>
    <geom name="floor" type="plane" size="2 2 0.1" rgba="0.5 0.5 0.5 1"/>
    <geom name="box" type="box" pos="0.2 0 0.05" size="0.05 0.05 0.05" rgba="1 0 0 1"/>
  </worldbody>
</mujoco>`;

async function scene(xml: string) {
  const mj = await mujoco();
  const model = compileMjcf(mj, xml, 'test scene');
  const data = new mj.MjData(model);
  mj.mj_forward(model, data);
  return {
    mj,
    model,
    data,
    renderer: (backend: 'raycast' | 'mujoco') => new SceneRenderer(mj, model, data, { backend }),
    close() {
      data.delete();
      model.delete();
    },
  };
}

describe('sim camera rendering', () => {
  it('renders the hand-computed depth, colour and geom at known pixels of a box scene', async () => {
    const s = await scene(boxScene);
    const W = 64;
    const H = 64;
    for (const backend of ['raycast', 'mujoco'] as const) {
      const r = s.renderer(backend);
      const img = r.render('down', { width: W, height: H, depth: true, segmentation: true });
      // fovy 90: pixel (c, r) looks along (x, y, -1) with x = 2 (c + 0.5) / W - 1, y = 1 - 2 (r + 0.5) / H.
      // Image right is world +x, image up world +y (xyaxes "1 0 0 0 1 0").
      const pixel = (c: number, row: number) => {
        const x = (2 * (c + 0.5)) / W - 1;
        const y = 1 - (2 * (row + 0.5)) / H;
        return { p: row * W + c, x, y, cos: 1 / Math.sqrt(x * x + y * y + 1) };
      };
      // Box top (z = 0.1) spans world x in [0.15, 0.25]: at depth 0.9, image x in [0.167, 0.278].
      const onBox = pixel(38, 31);
      expect(onBox.x * 0.9).toBeGreaterThan(0.15);
      expect(onBox.x * 0.9).toBeLessThan(0.25);
      expect(img.segmentation![onBox.p]).toBe(1);
      expect(img.depth![onBox.p]).toBeCloseTo(0.9, 6);
      // Top face, normal +z: (headlight ambient 0.1 + headlight 0.4 cos(view) + light 0.3) x red.
      const red = Math.round(255 * Math.min(1, 0.1 + 0.4 * onBox.cos + 0.3));
      expect(Math.abs(img.rgb[3 * onBox.p] - red)).toBeLessThanOrEqual(1);
      expect(img.rgb[3 * onBox.p + 1]).toBe(0);
      expect(img.rgb[3 * onBox.p + 2]).toBe(0);
      // Floor (z = 0) at depth 1, grey 0.5.
      const onFloor = pixel(10, 50);
      expect(img.segmentation![onFloor.p]).toBe(0);
      expect(img.depth![onFloor.p]).toBeCloseTo(1, 6);
      const grey = Math.round(255 * 0.5 * (0.1 + 0.4 * onFloor.cos + 0.3));
      for (let k = 0; k < 3; k++) expect(Math.abs(img.rgb[3 * onFloor.p + k] - grey)).toBeLessThanOrEqual(1);
      // Beside the box, on its left: floor.
      expect(img.segmentation![pixel(33, 31).p]).toBe(0);
      r.close();
    }
    s.close();
  });

  it('agrees with MuJoCo mj_multiRay on every primitive and a mesh', async () => {
    const s = await scene(`
<mujoco>
  <asset>
    <mesh name="tet" vertex="0 0 0  0.08 0 0  0 0.08 0  0 0 0.08"/>
    <material name="blue" rgba="0.1 0.2 0.9 1"/>
  </asset>
  <worldbody>
    <light pos="0.3 -0.2 1.2"/>
    <camera name="oblique" pos="0.7 -0.7 0.6" xyaxes="0.7071 0.7071 0 -0.35 0.35 0.87" fovy="50"/>
    <geom type="plane" size="0.6 0.6 0.01" rgba="0.8 0.8 0.8 1"/>
    <geom type="sphere" pos="0 0 0.06" size="0.06" rgba="0.9 0.1 0.1 1"/>
    <geom type="capsule" fromto="0.15 -0.2 0.04 0.3 -0.05 0.1" size="0.03" rgba="0.1 0.9 0.1 1"/>
    <geom type="cylinder" pos="-0.2 0.15 0.05" euler="0.4 0.3 0" size="0.05 0.05" material="blue"/>
    <geom type="ellipsoid" pos="0.15 0.2 0.06" size="0.08 0.04 0.05" euler="0 0 0.7" rgba="0.9 0.8 0.1 1"/>
    <geom type="box" pos="-0.15 -0.2 0.05" euler="0.2 0.5 0.9" size="0.04 0.06 0.03" rgba="0.6 0.2 0.7 1"/>
    <geom type="mesh" mesh="tet" pos="0.3 0.25 0.001" rgba="0.2 0.7 0.7 1"/>
  </worldbody>
</mujoco>`);
    const W = 96;
    const H = 72;
    const ray = s
      .renderer('raycast')
      .render('oblique', { width: W, height: H, depth: true, segmentation: true });
    const ref = s
      .renderer('mujoco')
      .render('oblique', { width: W, height: H, depth: true, segmentation: true });
    let agree = 0;
    let maxDepth = 0;
    let maxColour = 0;
    const seen = new Set<number>();
    for (let p = 0; p < W * H; p++) {
      seen.add(ref.segmentation![p]);
      if (ray.segmentation![p] !== ref.segmentation![p]) continue;
      agree++;
      maxDepth = Math.max(maxDepth, Math.abs(ray.depth![p] - ref.depth![p]));
      for (let k = 0; k < 3; k++)
        maxColour = Math.max(maxColour, Math.abs(ray.rgb[3 * p + k] - ref.rgb[3 * p + k]));
    }
    // Every geom is in view, and the two backends disagree only on a few silhouette pixels.
    expect([...seen].sort((a, b) => a - b)).toEqual([-1, 0, 1, 2, 3, 4, 5, 6]);
    expect(agree / (W * H)).toBeGreaterThan(0.995);
    expect(maxDepth).toBeLessThan(1e-4);
    expect(maxColour).toBeLessThanOrEqual(2);
    s.close();
  });

  it('draws transparent geoms over what is behind them without hiding its depth', async () => {
    const s = await scene(`
<mujoco><worldbody>
  <camera name="down" pos="0 0 1" xyaxes="1 0 0 0 1 0" fovy="60"/>
  <geom type="plane" size="1 1 0.1" rgba="0 0 1 1"/>
  <geom type="box" pos="0 0 0.3" size="0.3 0.3 0.01" rgba="1 0 0 0.5"/>
</worldbody></mujoco>`);
    const img = s
      .renderer('raycast')
      .render('down', { width: 16, height: 16, depth: true, segmentation: true });
    const p = 8 * 16 + 8;
    expect(img.segmentation![p]).toBe(0);
    expect(img.depth![p]).toBeCloseTo(1, 6);
    expect(img.rgb[3 * p]).toBeGreaterThan(40);
    expect(img.rgb[3 * p + 2]).toBeGreaterThan(40);
    s.close();
  });

  it('names the cameras that exist when one is missing, and refuses bad sizes', async () => {
    const s = await scene(boxScene);
    const r = s.renderer('raycast');
    expect(() => r.render('top', { width: 8, height: 8 })).toThrow(
      /no camera named "top"[\s\S]*use one of: down/,
    );
    expect(() => r.render('down', { width: 0, height: 8 })).toThrow(/size 0x8 is invalid/);
    s.close();
    const task = defineTask({
      ...pushCamTask,
      name: 'no-such-camera',
      cameras: { names: ['wrist'] },
    });
    await expect(MujocoEnv.create(task)).rejects.toThrow(/no camera named "wrist"[\s\S]*use one of: top/);
  });

  it('renders deterministically; appearance randomization is seeded and leaves the physics alone', async () => {
    const make = (randomization = {}) =>
      MujocoEnv.create(pushCamTask, { cameras: { depth: true, randomization } });
    const [a, b] = [await make(), await make()];
    const ra = a.reset({ seed: 7 });
    const rb = b.reset({ seed: 7 });
    expect(ra.frames!.top.data).toEqual(rb.frames!.top.data);
    expect(ra.frames!.top.depth).toEqual(rb.frames!.top.depth);
    const action = [0.3, -0.2, 0.1];
    const sa = a.step(action);
    const sb = b.step(action);
    expect(sa.frames!.top.data).toEqual(sb.frames!.top.data);
    expect(sa.frames!.top.seq).toBe(1);
    expect(sa.frames!.top.data).not.toEqual(ra.frames!.top.data);

    const jitter = {
      colorStd: 0.1,
      lightScale: [0.7, 1.2] as [number, number],
      cameraPosStd: 0.01,
      cameraRotStd: 0.02,
    };
    const [c, d] = [await make(jitter), await make(jitter)];
    const rc = c.reset({ seed: 7 });
    expect(rc.frames!.top.data).toEqual(d.reset({ seed: 7 }).frames!.top.data);
    expect(rc.frames!.top.data).not.toEqual(ra.frames!.top.data);
    expect(rc.frames!.top.data).not.toEqual(c.reset({ seed: 8 }).frames!.top.data);
    // Same episode physics with or without appearance randomization.
    expect(c.reset({ seed: 7 }).obs).toEqual(a.reset({ seed: 7 }).obs);
    for (const env of [a, b, c, d]) env.close();
  });

  it('push-cam shows the goal only in the image, where the privileged goal is', async () => {
    const env = await MujocoEnv.create(pushCamTask);
    expect(env.cameras).toEqual([{ name: 'top', width: 84, height: 84, channels: 3, depth: false }]);
    expect(env.observationSpace.names).not.toContain('goal_x');
    for (const seed of [1, 2, 3]) {
      const { frames } = env.reset({ seed });
      const img = frames!.top;
      let sx = 0;
      let sy = 0;
      let count = 0;
      for (let p = 0; p < 84 * 84; p++) {
        const [r, g, b] = [img.data[3 * p], img.data[3 * p + 1], img.data[3 * p + 2]];
        if (r > 150 && g < 60 && b < 60) {
          sx += p % 84;
          sy += Math.floor(p / 84);
          count++;
        }
      }
      expect(count).toBeGreaterThan(8);
      // Camera "top" at (0.2, 0, 0.55) looking down, fovy 50: image right = world -y, image up = world +x.
      const tan = Math.tan((25 * Math.PI) / 180);
      const depth = 0.55 - 0.002;
      const col = sx / count;
      const row = sy / count;
      const worldX = 0.2 + (1 - (2 * (row + 0.5)) / 84) * tan * depth;
      const worldY = -((2 * (col + 0.5)) / 84 - 1) * tan * depth;
      const goal = (env.taskState as { goal: [number, number] }).goal;
      expect(Math.hypot(worldX - goal[0], worldY - goal[1])).toBeLessThan(0.01);
    }
    env.close();
  });

  it('every built-in task scene has a camera to render', async () => {
    for (const task of Object.values(builtInTasks)) {
      const env = await MujocoEnv.create(task, { cameras: { names: 'all', width: 32, height: 24 } });
      const { frames } = env.reset({ seed: 0 });
      expect(Object.keys(frames ?? {}).length).toBeGreaterThan(0);
      for (const f of Object.values(frames!)) {
        expect([f.width, f.height, f.data.length]).toEqual([32, 24, 32 * 24 * 3]);
        // Something other than background is in view.
        expect(f.data.some((v) => v > 0)).toBe(true);
      }
      env.close();
    }
  });
});
