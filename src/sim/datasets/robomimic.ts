/**
 * robomimic HDF5 demonstrations (the format ResFiT converts from) through h5wasm:
 *
 *   data/                      attrs: env_args (JSON), total
 *   data/demo_N/actions        [T, A]
 *   data/demo_N/rewards        [T]        data/demo_N/dones [T]
 *   data/demo_N/obs/<key>      [T, d]     low-dimensional keys are concatenated in the order asked
 *   data/demo_N/next_obs/<key> [T, d]     the observation after the last action comes from here
 *
 * Image keys (more than two dimensions) are not imported yet and are listed in `skippedKeys`.
 */
import { existsSync } from 'node:fs';
import h5wasm from 'h5wasm/node';
import { ResrtError } from '../../util/errors.js';
import type { DemoEpisode, DemoSet } from '../demos.js';

interface H5Dataset {
  shape: number[];
  value: ArrayLike<number> | ArrayLike<bigint>;
}
interface H5Group {
  keys(): string[];
  get(name: string): H5Group | H5Dataset | null;
  attrs: Record<string, { value: unknown }>;
}

export interface RobomimicImport {
  set: DemoSet;
  obsKeys: string[];
  skippedKeys: { name: string; why: string }[];
  envName: string | null;
}

function rows(ds: H5Dataset, T: number, width: number): Float32Array[] {
  const v = ds.value;
  const out: Float32Array[] = [];
  for (let t = 0; t < T; t++) {
    const r = new Float32Array(width);
    for (let i = 0; i < width; i++) r[i] = Number(v[t * width + i]);
    out.push(r);
  }
  return out;
}

export async function readRobomimic(
  path: string,
  options: { obsKeys?: string[]; controlDt?: number } = {},
): Promise<RobomimicImport> {
  if (!existsSync(path))
    throw new ResrtError(`${path} does not exist`, 'give the path of a robomimic .hdf5 file');
  await h5wasm.ready;
  let file: InstanceType<typeof h5wasm.File>;
  try {
    file = new h5wasm.File(path, 'r');
  } catch (err) {
    throw new ResrtError(
      `${path} is not an HDF5 file h5wasm can open: ${(err as Error).message}`,
      'check the file',
    );
  }
  try {
    const data = file.get('data') as unknown as H5Group | null;
    if (!data || typeof data.keys !== 'function') {
      throw new ResrtError(
        `${path} has no data/ group`,
        'robomimic files keep demonstrations under data/demo_N',
      );
    }
    const demos = data
      .keys()
      .filter((k) => /^demo_\d+$/.test(k))
      .sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)));
    if (demos.length === 0)
      throw new ResrtError(`${path} has no data/demo_N groups`, 'export demonstrations with robomimic first');
    let envName: string | null = null;
    try {
      envName = (JSON.parse(String(data.attrs.env_args?.value)) as { env_name?: string }).env_name ?? null;
    } catch {
      envName = null;
    }
    const first = data.get(`${demos[0]}/obs`) as H5Group;
    const skippedKeys: { name: string; why: string }[] = [];
    const lowDim = first
      .keys()
      .sort()
      .filter((k) => {
        const ds = first.get(k) as H5Dataset;
        if (ds.shape.length > 2) {
          skippedKeys.push({
            name: k,
            why: `shape [${ds.shape.join(', ')}]: camera observations are not imported yet`,
          });
          return false;
        }
        return true;
      });
    const obsKeys = options.obsKeys ?? lowDim;
    for (const k of obsKeys) {
      if (!lowDim.includes(k)) {
        throw new ResrtError(
          `${path}: observation key "${k}" is not a low-dimensional key of ${demos[0]}`,
          `use some of: ${lowDim.join(', ')}`,
        );
      }
    }
    const width = (ds: H5Dataset): number => (ds.shape.length === 2 ? ds.shape[1] : 1);
    const episodes: DemoEpisode[] = [];
    let obsDim = 0;
    let actionDim = 0;
    for (const [e, name] of demos.entries()) {
      const g = data.get(name) as H5Group;
      const actions = g.get('actions') as H5Dataset;
      const T = actions.shape[0];
      actionDim = width(actions);
      const obsRows = Array.from({ length: T + 1 }, () => [] as number[]);
      for (const k of obsKeys) {
        const ds = g.get(`obs/${k}`) as H5Dataset | null;
        const next = g.get(`next_obs/${k}`) as H5Dataset | null;
        if (!ds)
          throw new ResrtError(
            `${path}: ${name} has no obs/${k}`,
            'every demo needs the same observation keys',
          );
        const w = width(ds);
        rows(ds, T, w).forEach((r, t) => obsRows[t].push(...r));
        const last = next ? rows(next, T, w)[T - 1] : rows(ds, T, w)[T - 1];
        obsRows[T].push(...last);
      }
      const rewardsDs = g.get('rewards') as H5Dataset | null;
      const rewards = rewardsDs ? Array.from(rewardsDs.value, Number) : new Array<number>(T).fill(0);
      const donesDs = g.get('dones') as H5Dataset | null;
      const done = donesDs ? Number(donesDs.value[T - 1]) > 0 : false;
      const success = rewards.some((r) => r > 0) || done;
      const obs = obsRows.map((r) => Float32Array.from(r));
      obsDim = obs[0].length;
      episodes.push({
        episode: e,
        seed: e,
        success,
        terminated: success,
        truncated: !success,
        obs,
        actions: rows(actions, T, actionDim),
        rewards,
      });
    }
    return {
      set: {
        header: {
          format: 'resrt-demos',
          version: 1,
          task: envName ?? 'robomimic',
          obsDim,
          actionDim,
          obsNames: obsKeys.flatMap((k) => {
            const w = width(first.get(k) as H5Dataset);
            return w === 1 ? [k] : Array.from({ length: w }, (_, i) => `${k}[${i}]`);
          }),
          actionNames: Array.from({ length: actionDim }, (_, i) => `action[${i}]`),
          controlDt: options.controlDt ?? 0.05,
          createdAt: new Date().toISOString(),
          source: `robomimic HDF5 ${path}`,
        },
        episodes,
        tornTail: false,
      },
      obsKeys,
      skippedKeys,
      envName,
    };
  } finally {
    file.close();
  }
}
