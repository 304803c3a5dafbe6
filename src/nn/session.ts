/**
 * Runs engine graphs in onnxruntime-node: the execution provider ('cpu' or 'cuda', the same graphs
 * on both), intra-op threads and optimization level chosen deliberately, and outputs written into
 * caller-owned buffers (onnxruntime's preallocated outputs) so a training step copies nothing back.
 */
import '../util/ort-telemetry.js';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { ResrtError } from '../util/errors.js';
import { Graph, type DType } from './graph.js';
import { neg } from './ops.js';

export type Device = 'cpu' | 'cuda';
export type DevicePreference = 'auto' | Device;

export interface EngineOptions {
  /** 'auto' takes CUDA when its provider is installed and starts, else the CPU. */
  device?: DevicePreference;
  /** onnxruntime intra-op threads (CPU); default RESRT_NN_THREADS or `defaultThreads()`. */
  threads?: number;
  /**
   * Let idle intra-op pool threads spin-wait for the next op (onnxruntime's default) instead of
   * sleeping. Default false: see `CompiledGraph.create` for the measurement.
   */
  spinning?: boolean;
}

export interface Engine {
  device: Device;
  threads: number;
  /** Idle intra-op threads spin (EngineOptions.spinning); absent means false. */
  spinning?: boolean;
  /** True when training runs on a GPU (the `gpu` profile's condition). */
  gpu: boolean;
  /** One line for logs: what runs and why. */
  description: string;
}

/**
 * Intra-op threads for a learner: every core. With spinning off (see `CompiledGraph.create`) an
 * idle pool thread sleeps, so the thread that steps the environment gets its core when it needs it
 * (docs/learner.md, "Threads", has the measurements behind this).
 */
export function defaultThreads(): number {
  return Math.max(1, availableParallelism());
}

const require = createRequire(import.meta.url);

/** Where onnxruntime-node looks for its CUDA execution provider library. */
export function cudaProviderPath(): string {
  const root = dirname(require.resolve('onnxruntime-node/package.json'));
  return join(
    root,
    'bin',
    'napi-v6',
    `${process.platform}/${process.arch}`,
    'libonnxruntime_providers_cuda.so',
  );
}

const CUDA_FIX =
  'on a machine with an NVIDIA GPU and CUDA 12, run scripts/gpu-check.sh (it installs the provider with ' +
  'ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js); otherwise use --device cpu';

const engines = new Map<string, Promise<Engine>>();

function isPreference(s: string): s is DevicePreference {
  return s === 'auto' || s === 'cpu' || s === 'cuda';
}

/**
 * Chooses the execution provider once per (preference, threads). RESRT_DEVICE overrides 'auto'.
 * Asking for CUDA where it is not installed or does not start is a ResrtError with the fix.
 */
export function initEngine(options: EngineOptions = {}): Promise<Engine> {
  let pref = options.device ?? 'auto';
  if (!isPreference(pref))
    throw new ResrtError(
      `device '${String(pref)}' is not one of auto, cpu, cuda`,
      'use --device auto, cpu or cuda',
    );
  const fromEnv = process.env.RESRT_DEVICE;
  if (pref === 'auto' && fromEnv) {
    if (!isPreference(fromEnv))
      throw new ResrtError(`RESRT_DEVICE=${fromEnv} is not a device`, 'use one of auto, cpu, cuda');
    pref = fromEnv;
  }
  const threads = options.threads ?? threadsFromEnv() ?? defaultThreads();
  if (!Number.isInteger(threads) || threads < 1)
    throw new ResrtError(`${threads} intra-op threads`, 'use a positive whole number (RESRT_NN_THREADS)');
  const spinning = options.spinning ?? false;
  const key = `${pref}/${threads}/${spinning}`;
  let e = engines.get(key);
  if (!e) {
    e = selectEngine(pref, threads, spinning);
    engines.set(key, e);
    // A failed choice must not stick (e.g. after installing the CUDA provider).
    e.catch(() => engines.delete(key));
  }
  return e;
}

function threadsFromEnv(): number | undefined {
  const s = process.env.RESRT_NN_THREADS;
  if (!s) return undefined;
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1)
    throw new ResrtError(
      `RESRT_NN_THREADS=${s} is not a thread count`,
      'use a positive whole number, e.g. 1',
    );
  return n;
}

async function selectEngine(pref: DevicePreference, threads: number, spinning: boolean): Promise<Engine> {
  const cpu: Engine = {
    device: 'cpu',
    threads,
    spinning,
    gpu: false,
    description: `onnxruntime-node ${ort.env.versions.common} on the CPU, ${threads} intra-op thread${threads > 1 ? 's' : ''}${spinning ? ' (spinning)' : ''}`,
  };
  if (pref === 'cpu') return cpu;
  const installed = existsSync(cudaProviderPath());
  if (!installed) {
    if (pref === 'cuda')
      throw new ResrtError(
        `the CUDA execution provider of onnxruntime-node is not installed (no ${cudaProviderPath()})`,
        CUDA_FIX,
      );
    return { ...cpu, description: `${cpu.description} (no CUDA provider installed)` };
  }
  const cuda: Engine = {
    device: 'cuda',
    threads,
    spinning,
    gpu: true,
    description: `onnxruntime-node ${ort.env.versions.common} with the CUDA execution provider`,
  };
  try {
    await probe(cuda);
    return cuda;
  } catch (err) {
    const why = (err as Error).message.split('\n')[0];
    if (pref === 'cuda')
      throw new ResrtError(`the CUDA execution provider is installed but did not start: ${why}`, CUDA_FIX);
    return { ...cpu, description: `${cpu.description} (CUDA provider did not start: ${why})` };
  }
}

/** Creates and runs a one-op session, so a device that cannot run is found at start-up. */
async function probe(engine: Engine): Promise<void> {
  const g = new Graph('probe');
  g.output('y', neg(g.input('x', [2])));
  const c = await CompiledGraph.create(g, engine);
  try {
    await c.run({ x: new Float32Array([1, 2]) });
  } finally {
    await c.release();
  }
}

export interface CompileOptions {
  /** onnxruntime's graph optimizations (default 'all'; 'disabled' runs the graph as written). */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Write onnxruntime's per-node profile (JSON) with this file prefix; see `endProfiling()`. */
  profilePrefix?: string;
  /** Write the graph as onnxruntime optimized it (to see what it fused). */
  optimizedModelPath?: string;
}

type Feed = Float32Array | BigInt64Array;

interface IoSpec {
  shape: readonly number[];
  dtype: DType;
  size: number;
}

const ortType = { float32: 'float32', int64: 'int64', bool: 'bool' } as const;

/** One graph as an onnxruntime session, fed and fetched by name. */
export class CompiledGraph {
  /** Tensor wrappers per buffer: a learner feeds the same (double-buffered) arrays every step. */
  private readonly wrapped = new WeakMap<Feed, ort.Tensor>();

  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly profiling: boolean,
    readonly name: string,
    readonly inputs: ReadonlyMap<string, IoSpec>,
    readonly outputs: ReadonlyMap<string, IoSpec>,
  ) {}

  static async create(graph: Graph, engine: Engine, opts: CompileOptions = {}): Promise<CompiledGraph> {
    const spec = (shape: readonly number[], dtype: DType): IoSpec => ({
      shape,
      dtype,
      size: shape.reduce((a, b) => a * b, 1),
    });
    const inputs = new Map(graph.inputValues.map((v) => [v.name, spec(v.shape, v.dtype)]));
    const outputs = new Map(
      graph.outputValues.map(({ name, value }) => [name, spec(value.shape, value.dtype)]),
    );
    // RESRT_NN_PROFILE=DIR profiles every session (bench/learner.ts --ort-profile sets it).
    const profilePrefix =
      opts.profilePrefix ??
      (process.env.RESRT_NN_PROFILE ? join(process.env.RESRT_NN_PROFILE, graph.name) : undefined);
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders: engine.device === 'cuda' ? ['cuda', 'cpu'] : ['cpu'],
      intraOpNumThreads: engine.threads,
      // The parallel executor (2 inter-op threads) ran the TD3 update at less than half the
      // sequential rate when the engine was built (docs/learner.md, "The training engine").
      interOpNumThreads: 1,
      executionMode: 'sequential',
      // Pool threads sleep between ops unless asked to spin. On the shared 2-core machine a
      // spinning pool of 2 ran the TD3 update (2 critics 2×256, batch 256) at 21 updates/s and
      // 29 CPU-ms each, a sleeping one at 81/s and 12 CPU-ms; spinning also takes the core the
      // environment thread needs (docs/learner.md, "Threads").
      extra: { session: { intra_op: { allow_spinning: engine.spinning ? '1' : '0' } } },
      graphOptimizationLevel: opts.optimization ?? 'all',
      enableCpuMemArena: true,
      // Shapes are static, so onnxruntime can plan every buffer once.
      enableMemPattern: true,
      logSeverityLevel: 3,
      ...(profilePrefix ? { enableProfiling: true, profileFilePrefix: profilePrefix } : {}),
      ...(opts.optimizedModelPath ? { optimizedModelFilePath: opts.optimizedModelPath } : {}),
    };
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(graph.encode(), options);
    } catch (err) {
      throw new ResrtError(
        `onnxruntime (${engine.device}) rejected the engine graph '${graph.name}': ${(err as Error).message}`,
        engine.device === 'cuda'
          ? CUDA_FIX
          : 'this is a bug in the training engine (src/nn); please report it',
      );
    }
    return new CompiledGraph(session, !!profilePrefix, graph.name, inputs, outputs);
  }

  private tensor(name: string, data: Feed, io: IoSpec): ort.Tensor {
    const hit = this.wrapped.get(data);
    if (hit && hit.dims.length === io.shape.length && hit.dims.every((d, i) => d === io.shape[i])) return hit;
    if (data.length !== io.size)
      throw new Error(
        `${this.name}: '${name}' needs ${io.size} values [${io.shape.join(',')}], got ${data.length}`,
      );
    const tensor = new ort.Tensor(ortType[io.dtype], data, [...io.shape]);
    this.wrapped.set(data, tensor);
    return tensor;
  }

  /**
   * Runs the graph. Outputs named in `into` are written into those buffers (no allocation, no
   * copy); the others come back as new arrays.
   */
  async run(
    feeds: Readonly<Record<string, Feed>>,
    into: Readonly<Record<string, Float32Array>> = {},
  ): Promise<Record<string, Float32Array>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, io] of this.inputs) {
      const data = feeds[name];
      if (!data) throw new Error(`${this.name}: no feed for input '${name}'`);
      ortFeeds[name] = this.tensor(name, data, io);
    }
    const fetches: Record<string, ort.Tensor | null> = {};
    for (const [name, io] of this.outputs) {
      const buf = into[name];
      fetches[name] = buf ? this.tensor(name, buf, io) : null;
    }
    const result = await this.session.run(ortFeeds, fetches);
    const out: Record<string, Float32Array> = {};
    for (const name of this.outputs.keys()) out[name] = into[name] ?? (result[name].data as Float32Array);
    return out;
  }

  /** Releases the session (writing its profile first when profiling). */
  async release(): Promise<void> {
    if (this.profiling) this.session.endProfiling();
    await this.session.release();
  }
}
