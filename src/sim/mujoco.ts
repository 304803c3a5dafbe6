/**
 * The MuJoCo WebAssembly module, loaded once per process, and typed views of the arrays we use.
 * The bindings type most arrays as `any`; this file is the one place that narrows them.
 */
import loadMujoco, { type MainModule, type MjData, type MjModel } from '@mujoco/mujoco';
import { ResrtError } from '../util/errors.js';

export type { MainModule, MjData, MjModel };

let modulePromise: Promise<MainModule> | undefined;

export function mujoco(): Promise<MainModule> {
  modulePromise ??= loadMujoco();
  return modulePromise;
}

/** Compiles MJCF, turning MuJoCo's parse/compile errors into one that says where to look. */
export function compileMjcf(mj: MainModule, xml: string, origin: string): MjModel {
  try {
    return mj.MjModel.from_xml_string(xml);
  } catch (err) {
    const raw = err instanceof Error ? err.message : String(err);
    const detail = raw.replace(/^MuJoCo Error:\s*/, '').trim();
    throw new ResrtError(
      `the MJCF of ${origin} does not compile: ${detail}`,
      'fix the XML at the line MuJoCo names (see https://mujoco.readthedocs.io/en/stable/XMLreference.html)',
    );
  }
}

/**
 * Live views into MjData. The wasm heap can grow when anything allocates a model or data, which
 * detaches every view taken before; `refresh()` re-reads them, and `ensure()` does so only when needed.
 */
export class DataViews {
  qpos!: Float64Array;
  qvel!: Float64Array;
  ctrl!: Float64Array;
  siteXpos!: Float64Array;
  siteXmat!: Float64Array;
  xpos!: Float64Array;
  xquat!: Float64Array;
  sensordata!: Float64Array;

  constructor(private readonly data: MjData) {
    this.refresh();
  }

  ensure(): void {
    if (this.qpos.buffer.byteLength === 0) this.refresh();
  }

  refresh(): void {
    const d = this.data;
    this.qpos = d.qpos as Float64Array;
    this.qvel = d.qvel as Float64Array;
    this.ctrl = d.ctrl as Float64Array;
    this.siteXpos = d.site_xpos as Float64Array;
    this.siteXmat = d.site_xmat as Float64Array;
    this.xpos = d.xpos as Float64Array;
    this.xquat = d.xquat as Float64Array;
    this.sensordata = d.sensordata as Float64Array;
  }
}

/** Index lookups by name with an error that lists what exists. */
export function siteId(model: MjModel, name: string): number {
  return lookup(model, 'site', name, model.nsite, (i) => model.site(i).name as string);
}
export function bodyId(model: MjModel, name: string): number {
  return lookup(model, 'body', name, model.nbody, (i) => model.body(i).name as string);
}
export function jointId(model: MjModel, name: string): number {
  return lookup(model, 'joint', name, model.njnt, (i) => model.jnt(i).name as string);
}
export function geomId(model: MjModel, name: string): number {
  return lookup(model, 'geom', name, model.ngeom, (i) => model.geom(i).name as string);
}

function lookup(
  model: MjModel,
  kind: string,
  name: string,
  count: number,
  nameOf: (i: number) => string,
): number {
  for (let i = 0; i < count; i++) if (nameOf(i) === name) return i;
  const names = Array.from({ length: count }, (_, i) => nameOf(i)).filter(Boolean);
  throw new ResrtError(
    `the model has no ${kind} named "${name}"`,
    `use one of: ${names.join(', ') || '(none)'}`,
  );
}
