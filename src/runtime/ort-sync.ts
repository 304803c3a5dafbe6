/**
 * onnxruntime sessions that run on the calling thread and return before the next line of code.
 *
 * The public API (`InferenceSession.run`) wraps every call in a Promise resolved from a
 * `setImmediate`, i.e. one event-loop turn per inference, plus a Tensor object per output. At
 * 1 kHz that turn is where the latency tail comes from: any I/O callback, timer or GC that lands
 * in it delays the action. onnxruntime-node's native binding underneath is synchronous
 * (`binding.d.ts`: "a simple synchronized inference session object wrap"), and its `run` writes
 * into preallocated output tensors; this module opens sessions through it when it is there, and
 * through the public API (one turn per call) when a future onnxruntime-node moves it.
 */
import '../util/ort-telemetry.js';
import { createRequire } from 'node:module';
import * as ort from 'onnxruntime-node';
import { ResrtError } from '../util/errors.js';

/** Outputs land in these preallocated tensors; the binding writes their data in place. */
export type Fetches = Record<string, ort.Tensor>;
export type Feeds = Record<string, ort.Tensor>;

export interface PolicySession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** 'native' runs synchronously (no event-loop turn); 'public-api' resolves a Promise. */
  readonly mode: 'native' | 'public-api';
  /**
   * Runs the graph and writes every fetched output into its preallocated tensor. Returns nothing
   * when it ran synchronously, a Promise otherwise.
   */
  run(feeds: Feeds, fetches: Fetches): void | Promise<void>;
  release(): void;
}

interface NativeSession {
  loadModel(buffer: ArrayBuffer, byteOffset: number, byteLength: number, options: object): void;
  readonly inputMetadata?: { name: string }[];
  readonly outputMetadata?: { name: string }[];
  readonly inputNames?: string[];
  readonly outputNames?: string[];
  run(feeds: object, fetches: object): Record<string, { data: unknown }>;
  dispose?(): void;
}

interface NativeBinding {
  binding: { InferenceSession: new () => NativeSession };
  initOrt: () => void;
}

let native: NativeBinding | null | undefined;
let nativeProblem = '';

/** The synchronous binding, or null (with the reason in nativeUnavailableReason()). */
function nativeBinding(): NativeBinding | null {
  if (native !== undefined) return native;
  try {
    const loaded = createRequire(import.meta.url)('onnxruntime-node/dist/binding') as Partial<NativeBinding>;
    const ctor = loaded.binding?.InferenceSession;
    if (
      typeof loaded.initOrt !== 'function' ||
      typeof ctor !== 'function' ||
      typeof ctor.prototype.loadModel !== 'function' ||
      typeof ctor.prototype.run !== 'function'
    ) {
      nativeProblem =
        'onnxruntime-node/dist/binding no longer exports InferenceSession.loadModel/run and initOrt';
      native = null;
    } else {
      native = loaded as NativeBinding;
    }
  } catch (err) {
    nativeProblem = `onnxruntime-node/dist/binding did not load: ${(err as Error).message.split('\n')[0]}`;
    native = null;
  }
  return native;
}

/** Why sessions fall back to the public API (empty while the native binding works). */
export function nativeUnavailableReason(): string {
  nativeBinding();
  return nativeProblem;
}

export const sessionOptions = (threads: number): ort.InferenceSession.SessionOptions => ({
  executionProviders: ['cpu'],
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  graphOptimizationLevel: 'all',
  executionMode: 'sequential',
  logSeverityLevel: 3,
});

function names(list: { name: string }[] | string[] | undefined): string[] {
  return (list ?? []).map((v) => (typeof v === 'string' ? v : v.name));
}

/**
 * Opens an in-memory ONNX model. `threads` is onnxruntime's intra-op pool: 1 for a control loop
 * (one predictable core). Throws a ResrtError when onnxruntime rejects the model.
 */
export async function openPolicySession(
  model: Uint8Array,
  label: string,
  threads = 1,
  options: { forcePublicApi?: boolean } = {},
): Promise<PolicySession> {
  const binding = options.forcePublicApi ? null : nativeBinding();
  try {
    if (binding) return openNative(binding, model, threads);
    return await openPublic(model, threads);
  } catch (err) {
    throw new ResrtError(
      `onnxruntime cannot load ${label}: ${(err as Error).message.split('\n')[0]}`,
      'export with only standard ONNX operators (torch.onnx.export(..., opset_version=17)); custom ops are not supported',
    );
  }
}

function openNative(binding: NativeBinding, model: Uint8Array, threads: number): PolicySession {
  binding.initOrt();
  const session = new binding.binding.InferenceSession();
  // The binding reads the bytes during loadModel only; a private copy keeps a caller's pooled
  // buffer (fs.readFileSync) from being handed over with unrelated bytes around it.
  const bytes = model.slice();
  session.loadModel(bytes.buffer, bytes.byteOffset, bytes.byteLength, sessionOptions(threads));
  const inputNames = names(session.inputMetadata ?? session.inputNames);
  const outputNames = names(session.outputMetadata ?? session.outputNames);
  let released = false;
  return {
    inputNames,
    outputNames,
    mode: 'native',
    run(feeds, fetches) {
      if (released) throw new ResrtError('the policy session was released; load the policy again');
      // Preallocated fetches: the binding writes each output into the tensor's own buffer.
      session.run(feeds, fetches);
    },
    release() {
      if (released) return;
      released = true;
      session.dispose?.();
    },
  };
}

async function openPublic(model: Uint8Array, threads: number): Promise<PolicySession> {
  const session = await ort.InferenceSession.create(model, sessionOptions(threads));
  let released = false;
  return {
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    mode: 'public-api',
    async run(feeds, fetches) {
      if (released) throw new ResrtError('the policy session was released; load the policy again');
      const out = await session.run(feeds, fetches);
      // Preallocated fetches are filled in place by the backend; copy defensively when a backend
      // hands back its own buffer instead.
      for (const [name, tensor] of Object.entries(fetches)) {
        const got = out[name];
        if (got && got.data !== tensor.data) (tensor.data as Float32Array).set(got.data as Float32Array);
      }
    },
    release() {
      if (released) return;
      released = true;
      void session.release();
    },
  };
}
