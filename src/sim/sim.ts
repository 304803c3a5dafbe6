import {
  type DataViews,
  type MainModule,
  type MjData,
  type MjModel,
  bodyId,
  jointId,
  siteId,
} from './mujoco.js';

/**
 * What a task module sees of the simulator: the model, the data, live views, and name lookups
 * cached so that observe() stays cheap.
 */
export class Sim {
  private readonly siteIds = new Map<string, number>();
  private readonly bodyIds = new Map<string, number>();
  private readonly jointAdr = new Map<string, { qpos: number; dof: number }>();

  constructor(
    readonly mj: MainModule,
    readonly model: MjModel,
    readonly data: MjData,
    readonly views: DataViews,
  ) {}

  site(name: string): number {
    let id = this.siteIds.get(name);
    if (id === undefined) this.siteIds.set(name, (id = siteId(this.model, name)));
    return id;
  }

  body(name: string): number {
    let id = this.bodyIds.get(name);
    if (id === undefined) this.bodyIds.set(name, (id = bodyId(this.model, name)));
    return id;
  }

  private joint(name: string): { qpos: number; dof: number } {
    let adr = this.jointAdr.get(name);
    if (adr === undefined) {
      const j = this.model.jnt(jointId(this.model, name));
      adr = { qpos: j.qposadr as number, dof: j.dofadr as number };
      this.jointAdr.set(name, adr);
    }
    return adr;
  }

  /** World position of a site (component 0 = x, 1 = y, 2 = z). */
  sitePos(name: string, axis: 0 | 1 | 2): number {
    return this.views.siteXpos[3 * this.site(name) + axis];
  }

  bodyPos(name: string, axis: 0 | 1 | 2): number {
    return this.views.xpos[3 * this.body(name) + axis];
  }

  qpos(joint: string, offset = 0): number {
    return this.views.qpos[this.joint(joint).qpos + offset];
  }

  qvel(joint: string, offset = 0): number {
    return this.views.qvel[this.joint(joint).dof + offset];
  }

  setQpos(joint: string, value: number, offset = 0): void {
    this.views.qpos[this.joint(joint).qpos + offset] = value;
  }

  /** Recomputes positions after reset() changed qpos or mocap poses. */
  forward(): void {
    this.mj.mj_forward(this.model, this.data);
  }

  setMocapPose(body: string, pos: [number, number, number], yaw = 0): void {
    const id = this.model.body(this.body(body)).mocapid as number;
    const mpos = this.data.mocap_pos as Float64Array;
    const mquat = this.data.mocap_quat as Float64Array;
    mpos.set(pos, 3 * id);
    mquat.set([Math.cos(yaw / 2), 0, 0, Math.sin(yaw / 2)], 4 * id);
  }
}
