/**
 * Renders the MJCF cameras of a MuJoCo scene to RGB, depth and geom segmentation without GL or a
 * GPU, by casting one ray per pixel. Two backends give the same image:
 *
 * - `raycast` (default): exact ray/primitive intersections in TypeScript (geometry.ts), each geom
 *   tested only on the pixels its bounding sphere projects to; meshes are intersected triangle by
 *   triangle over each triangle's own pixel box. Transparent geoms (0 < alpha < 1) blend over what
 *   is behind them and do not occlude depth.
 * - `mujoco`: MuJoCo's own mj_multiRay (every geom type, height fields and SDFs included; it sees
 *   transparent geoms as opaque). `auto` picks it only for scenes with height fields or SDFs.
 *
 * Shading is MuJoCo's fixed-function model without specular highlights or shadows: the headlight's
 * ambient plus, per light (and the headlight along the view), diffuse × max(0, n · l). Colours are
 * the geom rgba, or its material's when the geom keeps the default rgba; textures are not drawn.
 * Frames show the kinematics MuJoCo last computed (after mj_step: those of its last substep, as
 * MuJoCo's own viewer shows them). Depth is metres along the optical axis; 0 where nothing is hit.
 */
import { ResrtError } from '../../util/errors.js';
import type { Rng } from '../../util/rng.js';
import type { MainModule, MjData, MjModel } from '../mujoco.js';
import {
  GeomType,
  geomTypeName,
  hitBox,
  hitCapsule,
  hitCylinder,
  hitEllipsoid,
  hitSphere,
  hitTriangle,
} from './geometry.js';

export type RenderBackend = 'raycast' | 'mujoco';

export interface RenderedImage {
  width: number;
  height: number;
  /** height x width x 3, row 0 at the top. */
  rgb: Uint8Array;
  /** Metres along the optical axis; 0 = nothing hit. */
  depth?: Float32Array;
  /** Geom id per pixel, -1 for background. */
  segmentation?: Int32Array;
}

export interface RenderRequest {
  width: number;
  height: number;
  depth?: boolean;
  segmentation?: boolean;
}

/** Appearance randomization, drawn per episode (0 everywhere = the scene as modelled). */
export interface CameraRandomization {
  /** Std of a per-geom brightness factor (1 + N(0, s)) and of per-channel shifts N(0, s/2). */
  colorStd: number;
  /** Light intensity factor drawn uniformly from [low, high]. */
  lightScale: [number, number];
  /** Std of a rotation of every light direction (and the headlight), radians. */
  lightDirStd: number;
  /** Std of the camera position offset per axis, metres. */
  cameraPosStd: number;
  /** Std of the camera rotation per axis (small angles, camera frame), radians. */
  cameraRotStd: number;
  /** Std of the vertical field of view, degrees. */
  fovyStd: number;
}

export const noCameraRandomization: CameraRandomization = {
  colorStd: 0,
  lightScale: [1, 1],
  lightDirStd: 0,
  cameraPosStd: 0,
  cameraRotStd: 0,
  fovyStd: 0,
};

export interface SceneRendererOptions {
  /** Geom groups drawn (MuJoCo's viewer default: 0, 1, 2). */
  geomGroups?: readonly number[];
  backend?: RenderBackend | 'auto';
}

const DEFAULT_GROUPS = [0, 1, 2];
const T_MIN = 1e-6;
const BACKGROUND = [0, 0, 0];

interface CameraPerturbation {
  dpos: Float64Array;
  /** Row-major rotation applied in the camera frame. */
  drot: Float64Array;
  dfovy: number;
}

export class SceneRenderer {
  readonly cameraNames: readonly string[];
  readonly backend: RenderBackend;
  private readonly ngeom: number;
  private readonly types: Int32Array;
  private readonly sizes: Float64Array;
  private readonly rbound: Float64Array;
  private readonly visible: Uint8Array;
  private readonly baseRgba: Float32Array;
  private rgba: Float32Array;
  private readonly meshVerts = new Map<number, { vert: Float32Array; face: Int32Array }>();
  private readonly fovy: Float64Array;
  private readonly tanOverride: (readonly [number, number] | null)[];
  private readonly groupFlags: number[];
  private readonly headAmbient: Float32Array;
  private readonly headDiffuse: Float32Array;
  private readonly lightType: Int32Array;
  private readonly lightDiffuse: Float32Array;
  private readonly lightAmbient: Float32Array;
  private lightScale = 1;
  private lightRot: Float64Array | null = null;
  private perturb: (CameraPerturbation | null)[];
  private buffers: Buffers | null = null;
  private rayBuffers: { n: number; geomid: RayBuffer; dist: RayBuffer; normal: RayBuffer } | null = null;
  private readonly scratch = new Float64Array(3);

  constructor(
    private readonly mj: MainModule,
    private readonly model: MjModel,
    private readonly data: MjData,
    options: SceneRendererOptions = {},
  ) {
    const m = model;
    const ncam = m.ncam as number;
    this.cameraNames = Array.from({ length: ncam }, (_, i) => m.cam(i).name || `camera${i}`);
    this.ngeom = m.ngeom as number;
    this.types = Int32Array.from(m.geom_type as Int32Array);
    this.sizes = Float64Array.from(m.geom_size as Float64Array);
    this.rbound = Float64Array.from(m.geom_rbound as Float64Array);
    const groups = options.geomGroups ?? DEFAULT_GROUPS;
    this.groupFlags = Array.from({ length: 6 }, (_, g) => (groups.includes(g) ? 1 : 0));
    const group = m.geom_group as Int32Array;
    const matid = m.geom_matid as Int32Array;
    const geomRgba = m.geom_rgba as Float32Array;
    const matRgba = m.mat_rgba as Float32Array;
    this.baseRgba = new Float32Array(4 * this.ngeom);
    this.visible = new Uint8Array(this.ngeom);
    let needsMujoco = false;
    for (let g = 0; g < this.ngeom; g++) {
      const own = geomRgba.subarray(4 * g, 4 * g + 4);
      const isDefault = own[0] === 0.5 && own[1] === 0.5 && own[2] === 0.5 && own[3] === 1;
      const src = matid[g] >= 0 && isDefault ? matRgba.subarray(4 * matid[g], 4 * matid[g] + 4) : own;
      this.baseRgba.set(src, 4 * g);
      const shown = this.groupFlags[group[g]] === 1 && src[3] > 0;
      this.visible[g] = shown ? 1 : 0;
      if (shown && (this.types[g] === GeomType.hfield || this.types[g] === GeomType.sdf)) needsMujoco = true;
    }
    this.rgba = Float32Array.from(this.baseRgba);
    const requested = options.backend ?? 'auto';
    if (requested === 'raycast' && needsMujoco) {
      const g = this.types.findIndex(
        (t, i) => this.visible[i] === 1 && (t === GeomType.hfield || t === GeomType.sdf),
      );
      throw new ResrtError(
        `the raycast renderer cannot draw geom ${g} (${geomTypeName(this.types[g])})`,
        "use backend 'mujoco' (or 'auto'), or move the geom to a hidden group (group 3-5)",
      );
    }
    this.backend = requested === 'auto' ? (needsMujoco ? 'mujoco' : 'raycast') : requested;
    if (this.backend === 'raycast') this.loadMeshes();
    this.fovy = Float64Array.from(m.cam_fovy as Float64Array);
    const sensor = m.cam_sensorsize as Float32Array;
    const intrinsic = m.cam_intrinsic as Float32Array;
    // A camera given by sensor size and focal length: its half-angle tangents come from those.
    this.tanOverride = Array.from({ length: ncam }, (_, c) =>
      sensor[2 * c] > 0 && sensor[2 * c + 1] > 0 && intrinsic[4 * c] > 0 && intrinsic[4 * c + 1] > 0
        ? ([sensor[2 * c] / (2 * intrinsic[4 * c]), sensor[2 * c + 1] / (2 * intrinsic[4 * c + 1])] as const)
        : null,
    );
    const head = m.vis.headlight;
    this.headAmbient = Float32Array.from(head.ambient as Float32Array);
    this.headDiffuse = Float32Array.from(head.diffuse as Float32Array);
    this.lightType = Int32Array.from(m.light_type as Int32Array);
    this.lightDiffuse = Float32Array.from(m.light_diffuse as Float32Array);
    this.lightAmbient = Float32Array.from(m.light_ambient as Float32Array);
    this.perturb = new Array<CameraPerturbation | null>(ncam).fill(null);
  }

  cameraId(name: string): number {
    const id = this.cameraNames.indexOf(name);
    if (id < 0) {
      throw new ResrtError(
        `the scene has no camera named "${name}"`,
        this.cameraNames.length
          ? `use one of: ${this.cameraNames.join(', ')}`
          : 'add a <camera name="..." pos="..." xyaxes="..."/> to the MJCF worldbody or a body',
      );
    }
    return id;
  }

  /** Back to the scene as modelled (colours, lights, camera poses). */
  resetAppearance(): void {
    this.rgba.set(this.baseRgba);
    this.lightScale = 1;
    this.lightRot = null;
    this.perturb.fill(null);
  }

  /** Draws one appearance from `rng` (deterministic for a seed). */
  randomize(rng: Rng, r: CameraRandomization): void {
    this.resetAppearance();
    if (r.colorStd > 0) {
      for (let g = 0; g < this.ngeom; g++) {
        const gain = 1 + rng.normal(0, r.colorStd);
        for (let k = 0; k < 3; k++) {
          const v = this.baseRgba[4 * g + k] * gain + rng.normal(0, r.colorStd / 2);
          this.rgba[4 * g + k] = Math.min(1, Math.max(0, v));
        }
      }
    }
    this.lightScale = rng.range(r.lightScale[0], r.lightScale[1]);
    if (r.lightDirStd > 0) this.lightRot = smallRotation(rng, r.lightDirStd);
    if (r.cameraPosStd > 0 || r.cameraRotStd > 0 || r.fovyStd > 0) {
      for (let c = 0; c < this.perturb.length; c++) {
        this.perturb[c] = {
          dpos: Float64Array.from([0, 1, 2], () => rng.normal(0, r.cameraPosStd)),
          drot: r.cameraRotStd > 0 ? smallRotation(rng, r.cameraRotStd) : identity3(),
          dfovy: rng.normal(0, r.fovyStd),
        };
      }
    }
  }

  /** Renders camera `cam` (index or name) of the current state. */
  render(cam: number | string, request: RenderRequest): RenderedImage {
    const id = typeof cam === 'string' ? this.cameraId(cam) : cam;
    const { width: W, height: H } = request;
    if (!Number.isInteger(W) || !Number.isInteger(H) || W < 1 || H < 1 || W * H > 4096 * 4096) {
      throw new ResrtError(`camera image size ${W}x${H} is invalid`, 'use positive integers, e.g. 84x84');
    }
    const view = this.cameraView(id, W, H);
    const buf = this.ensureBuffers(W * H);
    if (this.backend === 'raycast') this.castRays(view, W, H, buf);
    else this.castMujocoRays(view, W, H, buf);
    return this.shade(view, W, H, buf, request);
  }

  /** Frees the WebAssembly buffers of the mujoco backend. */
  close(): void {
    if (this.rayBuffers) {
      this.rayBuffers.geomid.delete();
      this.rayBuffers.dist.delete();
      this.rayBuffers.normal.delete();
      this.rayBuffers = null;
    }
  }

  // -------------------------------------------------------------------------------------------

  private loadMeshes(): void {
    const m = this.model;
    let verts: Float32Array | null = null;
    let faces: Int32Array | null = null;
    for (let g = 0; g < this.ngeom; g++) {
      if (this.types[g] !== GeomType.mesh || !this.visible[g]) continue;
      verts ??= m.mesh_vert as Float32Array;
      faces ??= m.mesh_face as Int32Array;
      const mesh = (m.geom_dataid as Int32Array)[g];
      const va = (m.mesh_vertadr as Int32Array)[mesh];
      const vn = (m.mesh_vertnum as Int32Array)[mesh];
      const fa = (m.mesh_faceadr as Int32Array)[mesh];
      const fn = (m.mesh_facenum as Int32Array)[mesh];
      this.meshVerts.set(g, {
        vert: verts.slice(3 * va, 3 * (va + vn)),
        face: faces.slice(3 * fa, 3 * (fa + fn)),
      });
    }
  }

  private cameraView(id: number, W: number, H: number): CameraView {
    const pos = (this.data.cam_xpos as Float64Array).subarray(3 * id, 3 * id + 3);
    const mat = (this.data.cam_xmat as Float64Array).subarray(9 * id, 9 * id + 9);
    const p = this.perturb[id];
    const R = p ? matMul(mat, p.drot) : Float64Array.from(mat);
    const origin = Float64Array.from(pos);
    if (p) for (let k = 0; k < 3; k++) origin[k] += p.dpos[k];
    let tanX: number;
    let tanY: number;
    const fixed = this.tanOverride[id];
    if (fixed) [tanX, tanY] = fixed;
    else {
      const fovy = Math.min(170, Math.max(1, this.fovy[id] + (p?.dfovy ?? 0)));
      tanY = Math.tan((fovy * Math.PI) / 360);
      tanX = (tanY * W) / H;
    }
    // Columns of the camera rotation: x right, y up, z backwards (the camera looks along -z).
    const right = [R[0], R[3], R[6]];
    const up = [R[1], R[4], R[7]];
    const forward = [-R[2], -R[5], -R[8]];
    const xs = new Float64Array(W);
    const ys = new Float64Array(H);
    for (let c = 0; c < W; c++) xs[c] = ((2 * (c + 0.5)) / W - 1) * tanX;
    for (let r = 0; r < H; r++) ys[r] = (1 - (2 * (r + 0.5)) / H) * tanY;
    return { origin, right, up, forward, xs, ys, tanX, tanY };
  }

  private ensureBuffers(n: number): Buffers {
    if (!this.buffers || this.buffers.z.length !== n) {
      this.buffers = {
        z: new Float64Array(n),
        id: new Int32Array(n),
        normal: new Float32Array(3 * n),
        tz: new Float64Array(n),
        tid: new Int32Array(n),
        tnormal: new Float32Array(3 * n),
      };
    }
    const b = this.buffers;
    b.z.fill(Infinity);
    b.id.fill(-1);
    b.tz.fill(Infinity);
    b.tid.fill(-1);
    return b;
  }

  /** Pixel box [c0, c1] x [r0, r1] that geom g can cover, or null when it is off screen. */
  private pixelBox(
    g: number,
    gpos: Float64Array,
    gmat: Float64Array,
    v: CameraView,
    W: number,
    H: number,
  ): [number, number, number, number] | null {
    const full: [number, number, number, number] = [0, W - 1, 0, H - 1];
    const points: number[][] = [];
    if (this.types[g] === GeomType.plane) {
      const sx = this.sizes[3 * g];
      const sy = this.sizes[3 * g + 1];
      if (!(sx > 0 && sy > 0)) return full;
      for (const [a, b] of [
        [sx, sy],
        [sx, -sy],
        [-sx, sy],
        [-sx, -sy],
      ]) {
        points.push([
          gpos[0] + gmat[0] * a + gmat[1] * b,
          gpos[1] + gmat[3] * a + gmat[4] * b,
          gpos[2] + gmat[6] * a + gmat[7] * b,
        ]);
      }
      return projectBox(points, 0, v, W, H);
    }
    const half = localHalfExtents(this.types[g], this.sizes, g);
    if (!half) return projectBox([[gpos[0], gpos[1], gpos[2]]], this.rbound[g], v, W, H);
    // The 8 corners of the geom's own bounding box: far tighter than its sphere for long links.
    for (let k = 0; k < 8; k++) {
      const a = k & 1 ? half[0] : -half[0];
      const b = k & 2 ? half[1] : -half[1];
      const c = k & 4 ? half[2] : -half[2];
      points.push([
        gpos[0] + gmat[0] * a + gmat[1] * b + gmat[2] * c,
        gpos[1] + gmat[3] * a + gmat[4] * b + gmat[5] * c,
        gpos[2] + gmat[6] * a + gmat[7] * b + gmat[8] * c,
      ]);
    }
    return projectBox(points, 0, v, W, H);
  }

  private castRays(v: CameraView, W: number, H: number, b: Buffers): void {
    const gx = this.data.geom_xpos as Float64Array;
    const gm = this.data.geom_xmat as Float64Array;
    const n = this.scratch;
    const { xs, ys } = v;
    for (let g = 0; g < this.ngeom; g++) {
      if (!this.visible[g]) continue;
      const gpos = gx.subarray(3 * g, 3 * g + 3);
      const R = gm.subarray(9 * g, 9 * g + 9);
      const box = this.pixelBox(g, gpos, R, v, W, H);
      if (!box) continue;
      // The camera's origin and basis in the geom frame (local = R^T (world - pos)).
      const rx = v.origin[0] - gpos[0];
      const ry = v.origin[1] - gpos[1];
      const rz = v.origin[2] - gpos[2];
      const ox = R[0] * rx + R[3] * ry + R[6] * rz;
      const oy = R[1] * rx + R[4] * ry + R[7] * rz;
      const oz = R[2] * rx + R[5] * ry + R[8] * rz;
      const ax = toLocal(R, v.right, 0);
      const ay = toLocal(R, v.right, 1);
      const az = toLocal(R, v.right, 2);
      const bx = toLocal(R, v.up, 0);
      const by = toLocal(R, v.up, 1);
      const bz = toLocal(R, v.up, 2);
      const fx = toLocal(R, v.forward, 0);
      const fy = toLocal(R, v.forward, 1);
      const fz = toLocal(R, v.forward, 2);
      const type = this.types[g];
      const s0 = this.sizes[3 * g];
      const s1 = this.sizes[3 * g + 1];
      const s2 = this.sizes[3 * g + 2];
      const transparent = this.rgba[4 * g + 3] < 1;
      const zb = transparent ? b.tz : b.z;
      const ib = transparent ? b.tid : b.id;
      const nb = transparent ? b.tnormal : b.normal;
      const mesh = type === GeomType.mesh ? this.meshVerts.get(g) : undefined;
      if (mesh) {
        this.castMesh(
          mesh,
          g,
          R,
          gpos,
          v,
          W,
          H,
          box,
          [ox, oy, oz, ax, ay, az, bx, by, bz, fx, fy, fz],
          zb,
          ib,
          nb,
        );
        continue;
      }
      const [c0, c1, r0, r1] = box;
      if (type === GeomType.plane) {
        castPlane(g, R, [ox, oy, oz, ax, ay, az, bx, by, bz, fx, fy, fz], s0, s1, xs, ys, W, box, zb, ib, nb);
        continue;
      }
      for (let r = r0; r <= r1; r++) {
        const y = ys[r];
        for (let c = c0; c <= c1; c++) {
          const x = xs[c];
          const dx = ax * x + bx * y + fx;
          const dy = ay * x + by * y + fy;
          const dz = az * x + bz * y + fz;
          let t: number;
          switch (type) {
            case GeomType.sphere:
              t = hitSphere(ox, oy, oz, dx, dy, dz, s0, T_MIN, n);
              break;
            case GeomType.capsule:
              t = hitCapsule(ox, oy, oz, dx, dy, dz, s0, s1, T_MIN, n);
              break;
            case GeomType.ellipsoid:
              t = hitEllipsoid(ox, oy, oz, dx, dy, dz, s0, s1, s2, T_MIN, n);
              break;
            case GeomType.cylinder:
              t = hitCylinder(ox, oy, oz, dx, dy, dz, s0, s1, T_MIN, n);
              break;
            case GeomType.box:
              t = hitBox(ox, oy, oz, dx, dy, dz, s0, s1, s2, T_MIN, n);
              break;
            default:
              t = Infinity;
          }
          const p = r * W + c;
          if (t < zb[p]) {
            zb[p] = t;
            ib[p] = g;
            storeNormal(nb, p, R, n);
          }
        }
      }
    }
  }

  private castMesh(
    mesh: { vert: Float32Array; face: Int32Array },
    g: number,
    R: Float64Array,
    gpos: Float64Array,
    v: CameraView,
    W: number,
    H: number,
    geomBox: [number, number, number, number],
    local: number[],
    zb: Float64Array,
    ib: Int32Array,
    nb: Float32Array,
  ): void {
    const [ox, oy, oz, ax, ay, az, bx, by, bz, fx, fy, fz] = local;
    const { vert, face } = mesh;
    const n = this.scratch;
    const world = (i: number): number[] => {
      const x = vert[3 * i];
      const y = vert[3 * i + 1];
      const z = vert[3 * i + 2];
      return [
        gpos[0] + R[0] * x + R[1] * y + R[2] * z,
        gpos[1] + R[3] * x + R[4] * y + R[5] * z,
        gpos[2] + R[6] * x + R[7] * y + R[8] * z,
      ];
    };
    for (let f = 0; f < face.length; f += 3) {
      const i0 = face[f];
      const i1 = face[f + 1];
      const i2 = face[f + 2];
      const box = projectBox([world(i0), world(i1), world(i2)], 0, v, W, H) ?? null;
      if (!box) continue;
      const c0 = Math.max(box[0], geomBox[0]);
      const c1 = Math.min(box[1], geomBox[1]);
      const r0 = Math.max(box[2], geomBox[2]);
      const r1 = Math.min(box[3], geomBox[3]);
      for (let r = r0; r <= r1; r++) {
        const y = v.ys[r];
        for (let c = c0; c <= c1; c++) {
          const x = v.xs[c];
          const t = hitTriangle(
            ox,
            oy,
            oz,
            ax * x + bx * y + fx,
            ay * x + by * y + fy,
            az * x + bz * y + fz,
            vert,
            i0,
            i1,
            i2,
            T_MIN,
            n,
          );
          const p = r * W + c;
          if (t < zb[p]) {
            zb[p] = t;
            ib[p] = g;
            storeNormal(nb, p, R, n);
          }
        }
      }
    }
  }

  private castMujocoRays(v: CameraView, W: number, H: number, b: Buffers): void {
    const n = W * H;
    const rb = this.ensureRayBuffers(n);
    const vec = new Float64Array(3 * n);
    for (let r = 0; r < H; r++) {
      for (let c = 0; c < W; c++) {
        const p = 3 * (r * W + c);
        for (let k = 0; k < 3; k++) vec[p + k] = v.right[k] * v.xs[c] + v.up[k] * v.ys[r] + v.forward[k];
      }
    }
    // Directions have a forward component of 1, so MuJoCo's distances (in units of vec) are z-depths.
    this.mj.mj_multiRay(
      this.model,
      this.data,
      Array.from(v.origin),
      vec as unknown as number[],
      this.groupFlags,
      true,
      -1,
      rb.geomid,
      rb.dist,
      rb.normal,
      n,
      1e6,
    );
    const ids = rb.geomid.GetView() as Int32Array;
    const dist = rb.dist.GetView() as Float64Array;
    const normal = rb.normal.GetView() as Float64Array;
    for (let p = 0; p < n; p++) {
      const g = ids[p];
      if (g < 0 || dist[p] < 0) continue;
      b.z[p] = dist[p];
      b.id[p] = g;
      b.normal[3 * p] = normal[3 * p];
      b.normal[3 * p + 1] = normal[3 * p + 1];
      b.normal[3 * p + 2] = normal[3 * p + 2];
    }
  }

  private ensureRayBuffers(n: number): { geomid: RayBuffer; dist: RayBuffer; normal: RayBuffer } {
    if (!this.rayBuffers || this.rayBuffers.n !== n) {
      this.close();
      this.rayBuffers = {
        n,
        geomid: new this.mj.IntBuffer(n),
        dist: new this.mj.DoubleBuffer(n),
        normal: new this.mj.DoubleBuffer(3 * n),
      };
    }
    return this.rayBuffers;
  }

  private shade(v: CameraView, W: number, H: number, b: Buffers, req: RenderRequest): RenderedImage {
    const n = W * H;
    // Clamped storage rounds and saturates on assignment.
    const clamped = new Uint8ClampedArray(3 * n);
    const L = this.lightsNow();
    const color = new Float64Array(3);
    const under = new Float64Array(3);
    const { origin, right, up, forward, xs, ys } = v;
    for (let r = 0; r < H; r++) {
      const y = ys[r];
      for (let c = 0; c < W; c++) {
        const p = r * W + c;
        const x = xs[c];
        const dx = right[0] * x + up[0] * y + forward[0];
        const dy = right[1] * x + up[1] * y + forward[1];
        const dz = right[2] * x + up[2] * y + forward[2];
        const g = b.id[p];
        if (g >= 0) this.shadePoint(g, b.z[p], b.normal, p, origin, dx, dy, dz, L, color);
        else {
          color[0] = BACKGROUND[0];
          color[1] = BACKGROUND[1];
          color[2] = BACKGROUND[2];
        }
        const tg = b.tid[p];
        if (tg >= 0 && b.tz[p] < b.z[p]) {
          const a = this.rgba[4 * tg + 3];
          under.set(color);
          this.shadePoint(tg, b.tz[p], b.tnormal, p, origin, dx, dy, dz, L, color);
          for (let k = 0; k < 3; k++) color[k] = a * color[k] + (1 - a) * under[k];
        }
        clamped[3 * p] = 255 * color[0];
        clamped[3 * p + 1] = 255 * color[1];
        clamped[3 * p + 2] = 255 * color[2];
      }
    }
    const out: RenderedImage = { width: W, height: H, rgb: new Uint8Array(clamped.buffer) };
    if (req.depth) {
      const depth = new Float32Array(n);
      for (let p = 0; p < n; p++) depth[p] = b.id[p] >= 0 ? b.z[p] : 0;
      out.depth = depth;
    }
    if (req.segmentation) out.segmentation = Int32Array.from(b.id);
    return out;
  }

  private shadePoint(
    g: number,
    t: number,
    normals: Float32Array,
    p: number,
    o: Float64Array,
    dx: number,
    dy: number,
    dz: number,
    L: LightsNow,
    out: Float64Array,
  ): void {
    let nx = normals[3 * p];
    let ny = normals[3 * p + 1];
    let nz = normals[3 * p + 2];
    let dot = nx * dx + ny * dy + nz * dz;
    // Two-sided lighting: a face seen from behind is lit as its front.
    if (dot > 0) {
      nx = -nx;
      ny = -ny;
      nz = -nz;
      dot = -dot;
    }
    // The headlight shines along the view.
    const head = (-dot / Math.sqrt(dx * dx + dy * dy + dz * dz)) * this.lightScale;
    let r = L.ambient[0] + this.headDiffuse[0] * head;
    let gr = L.ambient[1] + this.headDiffuse[1] * head;
    let bl = L.ambient[2] + this.headDiffuse[2] * head;
    const px = o[0] + t * dx;
    const py = o[1] + t * dy;
    const pz = o[2] + t * dz;
    for (let i = 0; i < L.count; i++) {
      let lx = L.dir[3 * i];
      let ly = L.dir[3 * i + 1];
      let lz = L.dir[3 * i + 2];
      if (!L.directional[i]) {
        lx = L.pos[3 * i] - px;
        ly = L.pos[3 * i + 1] - py;
        lz = L.pos[3 * i + 2] - pz;
        const inv = 1 / (Math.sqrt(lx * lx + ly * ly + lz * lz) || 1);
        lx *= inv;
        ly *= inv;
        lz *= inv;
      }
      const cos = nx * lx + ny * ly + nz * lz;
      if (cos > 0) {
        const k = cos * this.lightScale;
        r += L.diffuse[3 * i] * k;
        gr += L.diffuse[3 * i + 1] * k;
        bl += L.diffuse[3 * i + 2] * k;
      }
    }
    out[0] = r * this.rgba[4 * g];
    out[1] = gr * this.rgba[4 * g + 1];
    out[2] = bl * this.rgba[4 * g + 2];
  }

  private lightsNow(): LightsNow {
    const pos = this.data.light_xpos as Float64Array;
    const xdir = this.data.light_xdir as Float64Array;
    const count = this.lightType.length;
    const dir = new Float64Array(3 * count);
    const ambient = Float64Array.from(this.headAmbient);
    const directional = new Uint8Array(count);
    for (let i = 0; i < count; i++) {
      // Towards the light (light_xdir points along the beam).
      let d = [-xdir[3 * i], -xdir[3 * i + 1], -xdir[3 * i + 2]];
      if (this.lightRot) d = rotate(this.lightRot, d);
      dir.set(d, 3 * i);
      directional[i] = this.lightType[i] === 1 ? 1 : 0;
      for (let k = 0; k < 3; k++) ambient[k] += this.lightAmbient[3 * i + k];
    }
    return { count, directional, pos: Float64Array.from(pos), dir, diffuse: this.lightDiffuse, ambient };
  }
}

interface CameraView {
  origin: Float64Array;
  right: number[];
  up: number[];
  forward: number[];
  /** Image-plane coordinates at unit forward distance, per column and per row. */
  xs: Float64Array;
  ys: Float64Array;
  tanX: number;
  tanY: number;
}

interface Buffers {
  z: Float64Array;
  id: Int32Array;
  normal: Float32Array;
  /** Nearest transparent surface per pixel. */
  tz: Float64Array;
  tid: Int32Array;
  tnormal: Float32Array;
}

/** The lights of the current frame, flat: position, direction towards the light, colours. */
interface LightsNow {
  count: number;
  directional: Uint8Array;
  pos: Float64Array;
  dir: Float64Array;
  diffuse: Float32Array;
  /** Headlight ambient plus every light's ambient. */
  ambient: Float64Array;
}

type RayBuffer = { GetView(): unknown; delete(): void };

/**
 * The plane is most of a tabletop image: intersected inline (one division per pixel), with its
 * constant world normal. One-sided like mj_ray: seen only from above its local z.
 */
function castPlane(
  g: number,
  R: Float64Array,
  local: number[],
  sx: number,
  sy: number,
  xs: Float64Array,
  ys: Float64Array,
  W: number,
  box: [number, number, number, number],
  zb: Float64Array,
  ib: Int32Array,
  nb: Float32Array,
): void {
  const [ox, oy, oz, ax, ay, az, bx, by, bz, fx, fy, fz] = local;
  if (oz <= 0) return;
  const boundX = sx > 0 ? sx : Infinity;
  const boundY = sy > 0 ? sy : Infinity;
  const nx = R[2];
  const ny = R[5];
  const nz = R[8];
  const [c0, c1, r0, r1] = box;
  for (let r = r0; r <= r1; r++) {
    const y = ys[r];
    for (let c = c0; c <= c1; c++) {
      const x = xs[c];
      const dz = az * x + bz * y + fz;
      if (dz >= 0) continue;
      const t = -oz / dz;
      const p = r * W + c;
      if (!(t > T_MIN) || t >= zb[p]) continue;
      if (Math.abs(ox + t * (ax * x + bx * y + fx)) > boundX) continue;
      if (Math.abs(oy + t * (ay * x + by * y + fy)) > boundY) continue;
      zb[p] = t;
      ib[p] = g;
      nb[3 * p] = nx;
      nb[3 * p + 1] = ny;
      nb[3 * p + 2] = nz;
    }
  }
}

/** Half-extents of a primitive's local bounding box; null where the bounding sphere is used. */
function localHalfExtents(type: number, sizes: Float64Array, g: number): [number, number, number] | null {
  const [a, b, c] = [sizes[3 * g], sizes[3 * g + 1], sizes[3 * g + 2]];
  switch (type) {
    case GeomType.sphere:
      return [a, a, a];
    case GeomType.capsule:
      return [a, a, b + a];
    case GeomType.cylinder:
      return [a, a, b];
    case GeomType.box:
    case GeomType.ellipsoid:
      return [a, b, c];
    default:
      return null;
  }
}

function toLocal(R: Float64Array, w: number[], k: number): number {
  return R[k] * w[0] + R[3 + k] * w[1] + R[6 + k] * w[2];
}

function storeNormal(nb: Float32Array, p: number, R: Float64Array, n: Float64Array): void {
  const wx = R[0] * n[0] + R[1] * n[1] + R[2] * n[2];
  const wy = R[3] * n[0] + R[4] * n[1] + R[5] * n[2];
  const wz = R[6] * n[0] + R[7] * n[1] + R[8] * n[2];
  // (Math.hypot is several times slower than sqrt in V8, and this runs per pixel.)
  const inv = 1 / (Math.sqrt(wx * wx + wy * wy + wz * wz) || 1);
  nb[3 * p] = wx * inv;
  nb[3 * p + 1] = wy * inv;
  nb[3 * p + 2] = wz * inv;
}

/**
 * Conservative pixel box of points inflated by radius `rad` (a bounding sphere when one point),
 * or null when entirely off screen; the whole image when any of it is at or behind the camera.
 */
function projectBox(
  points: number[][],
  rad: number,
  v: CameraView,
  W: number,
  H: number,
): [number, number, number, number] | null {
  let xmin = Infinity;
  let xmax = -Infinity;
  let ymin = Infinity;
  let ymax = -Infinity;
  for (const q of points) {
    const rx = q[0] - v.origin[0];
    const ry = q[1] - v.origin[1];
    const rz = q[2] - v.origin[2];
    const x = rx * v.right[0] + ry * v.right[1] + rz * v.right[2];
    const y = rx * v.up[0] + ry * v.up[1] + rz * v.up[2];
    const z = rx * v.forward[0] + ry * v.forward[1] + rz * v.forward[2];
    if (z - rad <= T_MIN) return [0, W - 1, 0, H - 1];
    for (const zz of [z - rad, z + rad]) {
      xmin = Math.min(xmin, (x - rad) / zz);
      xmax = Math.max(xmax, (x + rad) / zz);
      ymin = Math.min(ymin, (y - rad) / zz);
      ymax = Math.max(ymax, (y + rad) / zz);
    }
  }
  // Pixel centres: x = (2 (c + 0.5) / W - 1) tanX, y = (1 - 2 (r + 0.5) / H) tanY.
  const c0 = Math.max(0, Math.floor(((xmin / v.tanX + 1) * W) / 2 - 0.5));
  const c1 = Math.min(W - 1, Math.ceil(((xmax / v.tanX + 1) * W) / 2 - 0.5));
  const r0 = Math.max(0, Math.floor(((1 - ymax / v.tanY) * H) / 2 - 0.5));
  const r1 = Math.min(H - 1, Math.ceil(((1 - ymin / v.tanY) * H) / 2 - 0.5));
  if (c0 > c1 || r0 > r1) return null;
  return [c0, c1, r0, r1];
}

function identity3(): Float64Array {
  return Float64Array.from([1, 0, 0, 0, 1, 0, 0, 0, 1]);
}

function matMul(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const out = new Float64Array(9);
  for (let i = 0; i < 3; i++)
    for (let j = 0; j < 3; j++)
      out[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
  return out;
}

function rotate(R: Float64Array, v: number[]): number[] {
  return [
    R[0] * v[0] + R[1] * v[1] + R[2] * v[2],
    R[3] * v[0] + R[4] * v[1] + R[5] * v[2],
    R[6] * v[0] + R[7] * v[1] + R[8] * v[2],
  ];
}

/** Rotation by a random axis-angle vector with per-axis std `std` (Rodrigues). */
function smallRotation(rng: Rng, std: number): Float64Array {
  const w = [rng.normal(0, std), rng.normal(0, std), rng.normal(0, std)];
  const theta = Math.hypot(w[0], w[1], w[2]);
  if (theta === 0) return identity3();
  const [x, y, z] = w.map((c) => c / theta);
  const c = Math.cos(theta);
  const s = Math.sin(theta);
  const C = 1 - c;
  return Float64Array.from([
    c + x * x * C,
    x * y * C - z * s,
    x * z * C + y * s,
    y * x * C + z * s,
    c + y * y * C,
    y * z * C - x * s,
    z * x * C - y * s,
    z * y * C + x * s,
    c + z * z * C,
  ]);
}
