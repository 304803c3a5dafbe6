/**
 * A control loop described as data: which ONNX files, which safety config, where observations
 * come from (a factory module), at what rate. The same plan builds the same ControlLoop in this
 * thread (`buildLoop`) or in a worker thread (loop-host.ts), so the worker runs no second copy of
 * the loop, and tests can hold the two side by side.
 */
import { defaultSafetyConfig, type SafetyConfigInput } from '../safety/config.js';
import { SafetyLayer } from '../safety/layer.js';
import type { SafetyHook } from '../types.js';
import { ResrtError } from '../util/errors.js';
import type { ChunkExecutorOptions } from './chunk.js';
import type { ComposedPolicy } from './compose.js';
import { loadLoopPolicy, type FusedPolicy } from './fused-policy.js';
import { ControlLoop, passThroughSafety } from './loop.js';
import { nowMs, type SchedulerOptions } from './scheduler.js';
import type { ObservationSource } from './sources.js';
import type { LoopPriority } from './thread-priority.js';

/** JSON-like data (and shared memory): what a plan may carry to a worker. */
export type PlainData =
  string | number | boolean | null | PlainData[] | { [key: string]: PlainData | undefined };

/**
 * Where the loop's observations come from and its actions go: `module`'s export `name`, called as
 * `factory(args)` in the thread that runs the loop. A simulator or a robot link built there keeps
 * its I/O callbacks on the loop's own event loop.
 */
export interface SourceSpec {
  /** An import() specifier: a file URL (new URL('./x.js', import.meta.url).href) or a package. */
  module: string;
  export: string;
  args?: PlainData;
}

/** What a source factory returns. */
export interface HostedSource {
  source: ObservationSource;
  /** After the loop stopped: release what the factory opened (env, robot link). */
  close(): Promise<void>;
}

export type SourceFactory = (args: PlainData | undefined) => Promise<HostedSource> | HostedSource;

export interface LoopPlan {
  policy: {
    base: string;
    residual?: string;
    /** Residual scale; default 1. */
    scale?: number;
    chunk?: ChunkExecutorOptions;
    /** Default true: base and residual in one session call where the layouts allow. */
    fuse?: boolean;
  };
  source: SourceSpec;
  /**
   * A SafetyLayer config (JSON); 'default' for defaultSafetyConfig of the source's action width;
   * null for the pass-through hook.
   */
  safety: SafetyConfigInput | 'default' | null;
  rateHz: number;
  safeAction?: number[];
  maxObsAgeMs?: number;
  onOverrun?: 'safe' | 'hold';
  stopTimeoutMs?: number;
  /** Default: loopThreadScheduler() of the priority the loop thread got. */
  scheduler?: SchedulerOptions;
  /**
   * The loop thread's scheduling (worker-hosted loops only): 'realtime' asks for SCHED_FIFO
   * (thread-priority.ts) and says why not where it is refused; default 'normal'.
   */
  priority?: LoopPriority;
}

/**
 * How a loop thread waits for its deadlines, by the scheduling it got. A real-time thread sleeps
 * on Atomics.wait until 0.3 ms before each deadline (it wakes within tens of microseconds, and a
 * real-time thread that never sleeps is throttled by the kernel); it then turns its event loop
 * every 0.1 ms for I/O that landed. A normal thread wakes late on a busy machine, so it sleeps on
 * a timer only until 1 ms before and polls from there (a core's worth of spinning at 1 kHz).
 * Either way the thread owns nothing else: few event-loop turns, so few allocations and scavenges.
 */
export function loopThreadScheduler(applied: LoopPriority): SchedulerOptions {
  return applied === 'realtime' ? { sleep: 'atomics', spinMs: 0.3, pollEveryMs: 0.1 } : { pollEveryMs: 0.1 };
}

/**
 * An Atomics.wait sleep stands the thread's event loop still, so the result of an asynchronous
 * onnxruntime call (two-call policies: chunk executors, pairs that do not fuse) would land only
 * when the thread wakes before the next deadline, a whole period late. Only a fused policy, which runs
 * synchronously inside the tick, may sleep that way; the others sleep on a timer.
 */
function schedulerFor(
  options: SchedulerOptions | undefined,
  synchronousPolicy: boolean,
): SchedulerOptions | undefined {
  if (!options || options.sleep !== 'atomics' || synchronousPolicy) return options;
  return { ...options, sleep: 'timer', spinMs: Math.max(options.spinMs ?? 1, 1) };
}

export interface BuiltLoop {
  loop: ControlLoop;
  policy: FusedPolicy | ComposedPolicy;
  /** 'fused', or why base and residual run as separate calls. */
  fusion: string;
  safety: SafetyHook;
  source: ObservationSource;
  /** Stops nothing: releases the policy sessions, the safety layer and the source's resources. */
  release(): Promise<void>;
}

export async function loadSourceFactory(spec: SourceSpec): Promise<SourceFactory> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(spec.module)) as Record<string, unknown>;
  } catch (err) {
    throw new ResrtError(
      `cannot import the observation source module ${spec.module}: ${(err as Error).message.split('\n')[0]}`,
      'pass an import() specifier the loop thread can resolve (a file:// URL or a package name)',
    );
  }
  const factory = mod[spec.export];
  if (typeof factory !== 'function') {
    throw new ResrtError(
      `${spec.module} has no function export '${spec.export}'`,
      `export a function (args) => ({ source, close }) named '${spec.export}'`,
    );
  }
  return factory as SourceFactory;
}

/** Builds the plan's loop in this thread; nothing runs until loop.start(). */
export async function buildLoop(plan: LoopPlan): Promise<BuiltLoop> {
  const factory = await loadSourceFactory(plan.source);
  const hosted = await factory(plan.source.args);
  const { source } = hosted;
  let policy: Awaited<ReturnType<typeof loadLoopPolicy>>;
  try {
    policy = await loadLoopPolicy(plan.policy.base, plan.policy.residual, {
      expectObsDim: source.obsDim,
      expectActionDim: source.actionDim,
      scale: plan.policy.scale,
      chunk: plan.policy.chunk,
      fuse: plan.policy.fuse,
      cameras: Object.fromEntries(
        (source.cameras ?? []).map((c) => [c.name, { width: c.width, height: c.height }]),
      ),
    });
  } catch (err) {
    await hosted.close();
    throw err;
  }
  let layer: SafetyLayer | null = null;
  let safety: SafetyHook;
  try {
    if (plan.safety) {
      const config = plan.safety === 'default' ? defaultSafetyConfig(source.actionDim) : plan.safety;
      layer = new SafetyLayer(config, { clock: nowMs });
      const dim = layer.safeAction().length;
      if (dim !== source.actionDim) {
        throw new ResrtError(
          `the safety config is for ${dim} actions, ${source.kind} takes ${source.actionDim}`,
          'use the safety config written for this robot or task',
        );
      }
      safety = layer;
    } else {
      safety = passThroughSafety(source.actionDim, plan.safeAction);
    }
  } catch (err) {
    await policy.close();
    await hosted.close();
    throw err;
  }
  const loop = new ControlLoop({
    source,
    policy: policy.policy,
    safety,
    safeAction: plan.safeAction,
    rateHz: plan.rateHz,
    maxObsAgeMs: plan.maxObsAgeMs,
    onOverrun: plan.onOverrun,
    stopTimeoutMs: plan.stopTimeoutMs,
    scheduler: schedulerFor(plan.scheduler, policy.fusion === 'fused'),
    // A SafetyLayer advances its per-episode schedules (masks, EpsMix) at every episode start.
    onEpisodeStart: layer ? () => layer.beginEpisode() : undefined,
  });
  return {
    loop,
    policy: policy.policy,
    fusion: policy.fusion,
    safety,
    source,
    async release() {
      await policy.close();
      layer?.close();
      await hosted.close();
    },
  };
}
