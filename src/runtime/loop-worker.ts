/**
 * The control loop's own thread: the worker builds a LoopPlan's ControlLoop (scheduler, policy
 * sessions, safety layer, source) and runs it on an event loop that holds nothing else, so I/O,
 * the learner, MQTT and the main thread's garbage collections never sit between a tick and its
 * action. It talks to loop-host.ts only through messages: commands in (start, stop, e-stop,
 * scale, new residual), events, transitions and stats out, in batches between ticks.
 */
import { isMainThread, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import type { Transition } from '../types.js';
import { ResrtError } from '../util/errors.js';
import { CameraResidual, loadResidual } from './camera-residual.js';
import { ImageResidual } from './image-residual.js';
import { FusedPolicy, type FusedPlan } from './fused-policy.js';
import type { LoopEvent, LoopStats } from './loop.js';
import { buildLoop, loopThreadScheduler, type BuiltLoop, type LoopPlan } from './loop-plan.js';
import { OnnxPolicy } from './onnx-policy.js';
import { nowMs } from './scheduler.js';
import { setThreadPriority, type PriorityOutcome } from './thread-priority.js';

export type ToLoop =
  | { type: 'start' }
  | { type: 'stop' }
  | { type: 'estop'; source: string; detail?: string }
  | { type: 'scale'; value: number }
  /** A verified fused plan (fused loops) or a residual file (two-call loops). */
  | { type: 'residual'; id: number; plan?: FusedPlan; path?: string };

export interface ErrorInfo {
  message: string;
  hint?: string;
}

export type FromLoop =
  | {
      type: 'ready';
      fusion: string;
      sessionMode: 'native' | 'public-api' | 'two-call';
      kind: string;
      obsDim: number;
      actionDim: number;
      /** The source's cameras (name -> size): a residual swap loads the base against them. */
      cameras: Record<string, { width: number; height: number }>;
      /** The loop thread's performance.timeOrigin: its event times are relative to it. */
      timeOrigin: number;
      priority: PriorityOutcome;
    }
  | { type: 'started' }
  | { type: 'report'; events: LoopEvent[]; transitions: Transition[]; stats: LoopStats | null }
  | { type: 'residual'; id: number; version?: number; error?: ErrorInfo }
  | { type: 'stopped'; stats: LoopStats; events: LoopEvent[]; transitions: Transition[] }
  | { type: 'failed'; error: ErrorInfo };

export interface LoopWorkerData {
  resrtLoop: true;
  plan: LoopPlan;
  /** Events and transitions leave the worker at most this often. Default 20 ms. */
  reportEveryMs?: number;
  /** A stats snapshot leaves the worker this often. Default 250 ms. */
  statsEveryMs?: number;
}

function errorInfo(err: unknown): ErrorInfo {
  if (err instanceof ResrtError) return { message: err.message.split('\n')[0], hint: err.hint };
  return { message: err instanceof Error ? err.message : String(err) };
}

/** Runs one plan's loop for the host on the other end of `port`. */
export async function serveLoop(port: MessagePort, data: LoopWorkerData): Promise<void> {
  const post = (msg: FromLoop): void => port.postMessage(msg);
  // Before anything else: sessions and sources built from here on run on this thread as it is now.
  const priority = setThreadPriority(data.plan.priority ?? 'normal');
  let built: BuiltLoop;
  try {
    built = await buildLoop({
      ...data.plan,
      scheduler: data.plan.scheduler ?? loopThreadScheduler(priority.applied),
    });
  } catch (err) {
    post({ type: 'failed', error: errorInfo(err) });
    port.close();
    return;
  }
  const { loop, policy } = built;
  const events: LoopEvent[] = [];
  const transitions: Transition[] = [];
  loop.events$.subscribe((e) => events.push(e));
  loop.transitions$.subscribe((t) => transitions.push(t));
  const report = (withStats: boolean): void => {
    if (events.length === 0 && transitions.length === 0 && !withStats) return;
    post({
      type: 'report',
      events: events.splice(0),
      transitions: transitions.splice(0),
      stats: withStats ? loop.stats() : null,
    });
  };
  const reportTimer = setInterval(() => report(false), data.reportEveryMs ?? 20);
  const statsTimer = setInterval(() => report(true), data.statsEveryMs ?? 250);

  let finishing: Promise<void> | null = null;
  const finish = (stopping: Promise<LoopStats>): Promise<void> =>
    (finishing ??= (async () => {
      const stats = await stopping;
      clearInterval(reportTimer);
      clearInterval(statsTimer);
      await built.release().catch((err: unknown) => {
        events.push({
          kind: 'actuator_error',
          source: 'loop',
          atMs: nowMs(),
          tick: stats.ticks,
          detail: `releasing the source failed: ${errorInfo(err).message}`,
        });
      });
      post({ type: 'stopped', stats, events: events.splice(0), transitions: transitions.splice(0) });
      process.off('uncaughtException', onCrash);
      process.off('unhandledRejection', onCrash);
      port.close();
    })());
  // An error that escaped every stage of the loop: the loop reports it and stops with the safe
  // action, instead of the thread dying with the actuator holding its last command.
  const onCrash = (err: unknown): void => void finish(loop.crash(err));
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);

  port.on('message', (msg: ToLoop) => {
    switch (msg.type) {
      case 'start':
        loop.start().then(
          () => post({ type: 'started' }),
          (err: unknown) => {
            post({ type: 'failed', error: errorInfo(err) });
            void finish(loop.stop());
          },
        );
        return;
      case 'stop':
        void finish(loop.stop());
        return;
      case 'estop':
        loop.estop(msg.source, msg.detail);
        return;
      case 'scale':
        try {
          policy.scale = msg.value;
        } catch (err) {
          events.push({
            kind: 'policy_error',
            source: 'loop',
            atMs: nowMs(),
            tick: loop.stats().ticks,
            detail: errorInfo(err).message,
          });
        }
        return;
      case 'residual':
        void swapResidual(built, msg).then(
          (version) => post({ type: 'residual', id: msg.id, version }),
          (err: unknown) => post({ type: 'residual', id: msg.id, error: errorInfo(err) }),
        );
        return;
    }
  });
  post({
    type: 'ready',
    fusion: built.fusion,
    sessionMode: policy instanceof FusedPolicy ? policy.mode : 'two-call',
    kind: built.source.kind,
    obsDim: built.source.obsDim,
    actionDim: built.source.actionDim,
    cameras: Object.fromEntries(
      (built.source.cameras ?? []).map((c) => [c.name, { width: c.width, height: c.height }]),
    ),
    timeOrigin: performance.timeOrigin,
    priority,
  });
}

async function swapResidual(built: BuiltLoop, msg: Extract<ToLoop, { type: 'residual' }>): Promise<number> {
  const { policy, source } = built;
  if (policy instanceof FusedPolicy) {
    if (!msg.plan) throw new ResrtError('internal: a fused loop needs a fused plan for a new residual');
    await policy.replace(msg.plan);
    return policy.version;
  }
  if (!msg.path) throw new ResrtError('internal: a two-call loop needs the new residual file');
  // Two calls: a new residual session (state-only or camera; paired with the base on the main
  // thread), built here. It blocks this thread while onnxruntime loads it.
  const next = await loadResidual(msg.path, {
    expectObsDim: source.obsDim,
    expectActionDim: source.actionDim,
  });
  const old = policy.composer.residualModel;
  policy.setResidual(next);
  // A tick may still be inside the old session's run (the public API resolves a turn later);
  // close it once that turn is surely over.
  if (old instanceof OnnxPolicy || old instanceof CameraResidual || old instanceof ImageResidual)
    setTimeout(() => void old.close(), 1000).unref();
  return next.version;
}

if (!isMainThread && (workerData as Partial<LoopWorkerData> | null)?.resrtLoop && parentPort) {
  void serveLoop(parentPort, workerData as LoopWorkerData);
}
