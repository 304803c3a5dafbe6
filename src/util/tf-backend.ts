/**
 * One place that picks the TensorFlow.js backend for training (BC and the residual learner):
 * tfjs-node-gpu → tfjs-node → wasm (SIMD) → cpu, and patches matMul so that transposed products do
 * not fall onto the wasm backend's slow path.
 *
 * Why the patch: tfjs-backend-wasm runs `matMul(a, b)` through XNNPACK (~25 GFLOP/s on one core),
 * but any transposeA/transposeB flag drops it to a naive loop that is ~12-25× slower. tfjs's stock
 * BatchMatMul gradient and the fused-matMul gradient both use those flags, so backprop spends most
 * of its time there. We (1) register a BatchMatMul gradient that transposes explicitly, and (2) on
 * wasm wrap the BatchMatMul/_FusedMatMul kernels so any remaining flagged call (tf.layers, fused
 * gradients) transposes first and then multiplies on the fast path.
 */
import * as tfjs from '@tensorflow/tfjs';
import { ResrtError } from './errors.js';

export type Tf = typeof tfjs;
export type BackendPreference = 'auto' | 'wasm' | 'cpu' | 'tensorflow';

export interface TfHandle {
  tf: Tf;
  /** The tfjs backend name now active: 'tensorflow', 'wasm' or 'cpu'. */
  backend: string;
  /** One line for logs: which package runs and why. */
  description: string;
  /** True when the backend computes on a GPU (tfjs-node-gpu). */
  gpu: boolean;
}

const handles = new Map<BackendPreference, Promise<TfHandle>>();

/**
 * Selects and initialises the fastest available backend (or the one asked for) and installs the
 * fast matMul paths. Idempotent per preference; `RESRT_TF_BACKEND` overrides 'auto'.
 */
export function initTf(preferred: BackendPreference = 'auto'): Promise<TfHandle> {
  const fromEnv = process.env.RESRT_TF_BACKEND;
  let pref = preferred;
  if (pref === 'auto' && fromEnv) {
    if (!isPreference(fromEnv)) {
      throw new ResrtError(
        `RESRT_TF_BACKEND=${fromEnv} is not a backend`,
        'use one of auto, tensorflow, wasm, cpu',
      );
    }
    pref = fromEnv;
  }
  let h = handles.get(pref);
  if (!h) {
    h = select(pref);
    handles.set(pref, h);
    // A failed selection must not poison later attempts (e.g. after installing a package).
    h.catch(() => handles.delete(pref));
  }
  return h;
}

function isPreference(s: string): s is BackendPreference {
  return s === 'auto' || s === 'wasm' || s === 'cpu' || s === 'tensorflow';
}

async function select(pref: BackendPreference): Promise<TfHandle> {
  const tf = tfjs;
  const notes: string[] = [];
  if (pref === 'auto' || pref === 'tensorflow') {
    for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
      if (await tryImport(pkg)) {
        if (await tf.setBackend('tensorflow')) {
          await tf.ready();
          installFastMatMulGrad(tf);
          return {
            tf,
            backend: 'tensorflow',
            description: `tensorflow (native libtensorflow via ${pkg})`,
            gpu: pkg.endsWith('-gpu'),
          };
        }
        notes.push(`${pkg} imported but its backend did not start`);
      }
    }
    if (pref === 'tensorflow') {
      throw new ResrtError(
        'the native TensorFlow backend is not available (neither @tensorflow/tfjs-node-gpu nor @tensorflow/tfjs-node loads)',
        'install @tensorflow/tfjs-node (or -gpu) where libtensorflow can be downloaded, or use --backend wasm',
      );
    }
    notes.push('no tfjs-node');
  }
  if (pref === 'auto' || pref === 'wasm') {
    try {
      await import('@tensorflow/tfjs-backend-wasm');
      if (await tf.setBackend('wasm')) {
        await tf.ready();
        installFastMatMulGrad(tf);
        const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
        return {
          tf,
          backend: 'wasm',
          description: `wasm (${simd ? 'SIMD' : 'no SIMD'}, single thread${notes.length ? `; ${notes.join(', ')}` : ''})`,
          gpu: false,
        };
      }
      notes.push('wasm backend did not start');
    } catch (err) {
      notes.push(`wasm failed: ${(err as Error).message ?? String(err)}`);
    }
    if (pref === 'wasm') {
      throw new ResrtError(
        `the wasm backend did not start (${notes.join('; ')})`,
        'reinstall @tensorflow/tfjs-backend-wasm, or use --backend cpu (about 30× slower)',
      );
    }
  }
  if (!(await tf.setBackend('cpu'))) {
    throw new ResrtError('no TensorFlow.js backend could start', 'reinstall @tensorflow/tfjs');
  }
  await tf.ready();
  installFastMatMulGrad(tf);
  return {
    tf,
    backend: 'cpu',
    description: `cpu (plain JavaScript, slow${notes.length ? `; ${notes.join(', ')}` : ''})`,
    gpu: false,
  };
}

async function tryImport(pkg: string): Promise<boolean> {
  try {
    // A variable specifier keeps TypeScript from requiring the optional package's types.
    const spec: string = pkg;
    await import(spec);
    return true;
  } catch {
    return false;
  }
}

const installedOn = new WeakSet<object>();

/**
 * Registers a BatchMatMul gradient that computes dA = dY·Bᵀ and dB = Aᵀ·dY with explicit
 * transposes (no transpose flags), and on the wasm backend wraps the matMul kernels so flagged
 * calls transpose first. Safe to call more than once.
 */
export function installFastMatMulGrad(tf: Tf): void {
  if (!installedOn.has(tf.registerGradient)) {
    installedOn.add(tf.registerGradient);
    const swapLast = (x: tfjs.Tensor): tfjs.Tensor => {
      const r = x.rank;
      const perm = [...Array(r).keys()];
      perm[r - 2] = r - 1;
      perm[r - 1] = r - 2;
      return tf.transpose(x, perm);
    };
    const mm = (x: tfjs.Tensor, y: tfjs.Tensor): tfjs.Tensor => tf.matMul(x, y);
    // matMul broadcasts batch dimensions ([B,k]·[H,k,n]); the gradient sums over the broadcast ones.
    const reduceTo = (g: tfjs.Tensor, like: tfjs.Tensor): tfjs.Tensor => {
      if (g.rank === like.rank && g.shape.every((d, i) => d === like.shape[i])) return g;
      const lead = g.rank - like.rank;
      const axes: number[] = [];
      for (let i = 0; i < g.rank - 2; i++) if (i < lead || like.shape[i - lead] === 1) axes.push(i);
      return tf.reshape(tf.sum(g, axes), like.shape);
    };
    // The stock gradient would otherwise warn about the override on every install.
    const warn = console.warn;
    console.warn = () => {};
    try {
      tf.registerGradient({
        kernelName: tf.BatchMatMul,
        inputsToSave: ['a', 'b'],
        gradFunc: (dy, saved, attrs) => {
          const [a, b] = saved;
          const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
          const g = dy as tfjs.Tensor;
          const da = (): tfjs.Tensor => {
            if (!transposeA && !transposeB) return mm(g, swapLast(b));
            if (!transposeA && transposeB) return mm(g, b);
            if (transposeA && !transposeB) return mm(b, swapLast(g));
            return mm(swapLast(b), swapLast(g));
          };
          const db = (): tfjs.Tensor => {
            if (!transposeA && !transposeB) return mm(swapLast(a), g);
            if (!transposeA && transposeB) return mm(swapLast(g), a);
            if (transposeA && !transposeB) return mm(a, g);
            return mm(swapLast(g), swapLast(a));
          };
          return { a: () => reduceTo(da(), a), b: () => reduceTo(db(), b) };
        },
      });
    } finally {
      console.warn = warn;
    }
  }
  if (tf.getBackend() === 'wasm') wrapWasmMatMulKernels(tf);
}

interface WasmBackendLike {
  disposeData(dataId: object): void;
  makeOutput(shape: number[], dtype: string): tfjs.TensorInfo;
  typedArrayFromHeap(t: tfjs.TensorInfo): Float32Array;
}
interface KernelArgs {
  inputs: Record<string, tfjs.TensorInfo | undefined>;
  backend: WasmBackendLike;
  attrs: Record<string, unknown>;
}
type KernelFn = (args: KernelArgs) => tfjs.TensorInfo;

let wasmWrapped = false;

function swapLastPerm(rank: number): number[] {
  const perm = [...Array(rank).keys()];
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return perm;
}

function wrapWasmMatMulKernels(tf: Tf): void {
  if (wasmWrapped) return;
  const transposeCfg = tf.getKernel(tf.Transpose, 'wasm');
  if (!transposeCfg) return;
  wasmWrapped = true;
  const transposeFn = transposeCfg.kernelFunc as unknown as KernelFn;
  for (const name of [tf.BatchMatMul, tf._FusedMatMul]) {
    const cfg = tf.getKernel(name, 'wasm');
    if (!cfg) continue;
    const original = cfg.kernelFunc as unknown as KernelFn;
    const batched = name === tf.BatchMatMul;
    const wrapped: KernelFn = (args) => {
      const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
      let a = args.inputs.a as tfjs.TensorInfo;
      let b = args.inputs.b as tfjs.TensorInfo;
      const batchA = a.shape.slice(0, -2).reduce((p, d) => p * d, 1);
      const batchB = b.shape.slice(0, -2).reduce((p, d) => p * d, 1);
      const splitBatch = batched && Math.max(batchA, batchB) > 1;
      if (!transposeA && !transposeB && !splitBatch) return original(args);
      const temps: tfjs.TensorInfo[] = [];
      const flip = (x: tfjs.TensorInfo): tfjs.TensorInfo => {
        const t = transposeFn({
          inputs: { x },
          backend: args.backend,
          attrs: { perm: swapLastPerm(x.shape.length) },
        });
        temps.push(t);
        return t;
      };
      if (transposeA) a = flip(a);
      if (transposeB) b = flip(b);
      const attrs = { ...args.attrs, transposeA: false, transposeB: false };
      let out: tfjs.TensorInfo;
      if (splitBatch && (batchA === batchB || batchA === 1 || batchB === 1)) {
        out = batchedAsLoop(original, args.backend, a, b, batchA, batchB, attrs);
      } else {
        out = original({ inputs: { ...args.inputs, a, b }, backend: args.backend, attrs });
      }
      for (const t of temps) args.backend.disposeData(t.dataId);
      return out;
    };
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel({ ...cfg, kernelFunc: wrapped as unknown as tfjs.KernelFunc });
  }
}

/**
 * The wasm BatchMatMul runs XNNPACK only for a batch of 1 and a naive loop otherwise (~20× slower,
 * measured 1.2 vs 25 GFLOP/s at [10,256,256]); so a batched product runs as one 2-D product per
 * batch entry, copying slices in and out of the wasm heap.
 */
function batchedAsLoop(
  original: KernelFn,
  backend: WasmBackendLike,
  a: tfjs.TensorInfo,
  b: tfjs.TensorInfo,
  batchA: number,
  batchB: number,
  attrs: Record<string, unknown>,
): tfjs.TensorInfo {
  const [m, k] = a.shape.slice(-2);
  const n = b.shape[b.shape.length - 1];
  const batch = Math.max(batchA, batchB);
  const outBatchShape = (batchA >= batchB ? a : b).shape.slice(0, -2);
  const out = backend.makeOutput([...outBatchShape, m, n], 'float32');
  for (let h = 0; h < batch; h++) {
    const ah = backend.makeOutput([m, k], 'float32');
    const bh = backend.makeOutput([k, n], 'float32');
    // Heap views are taken after every allocation: growing the heap detaches older views.
    const ai = batchA === 1 ? 0 : h;
    const bi = batchB === 1 ? 0 : h;
    backend.typedArrayFromHeap(ah).set(backend.typedArrayFromHeap(a).subarray(ai * m * k, (ai + 1) * m * k));
    backend.typedArrayFromHeap(bh).set(backend.typedArrayFromHeap(b).subarray(bi * k * n, (bi + 1) * k * n));
    const oh = original({ inputs: { a: ah, b: bh }, backend, attrs });
    backend.typedArrayFromHeap(out).set(backend.typedArrayFromHeap(oh), h * m * n);
    backend.disposeData(ah.dataId);
    backend.disposeData(bh.dataId);
    backend.disposeData(oh.dataId);
  }
  return out;
}
