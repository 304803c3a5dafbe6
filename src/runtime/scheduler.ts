/**
 * A fixed-rate tick source that does not drift: deadline n is start + n * period, computed from
 * the start time (never from the previous tick), reached with a coarse timer sleep and a short
 * spin at the end. setInterval alone drifts and jitters by a millisecond or more.
 */
import { performance } from 'node:perf_hooks';
import { setImmediate as immediate, setTimeout as sleep } from 'node:timers/promises';
import { Observable } from 'rxjs';

/** Monotonic host clock (uv_hrtime underneath), ms; the same clock as RobotState.receivedAtMs. */
export const nowMs = (): number => performance.now();

export interface Tick {
  /** Index of the deadline this tick serves: deadlineMs = startMs + index * periodMs. */
  index: number;
  deadlineMs: number;
  /** When the tick actually fired. */
  firedMs: number;
  /** firedMs - the deadline the scheduler was waiting for (includes skipped periods). */
  lateMs: number;
  /** Deadlines passed over because the process woke up more than a period late. */
  skipped: number;
}

export interface SchedulerOptions {
  /** Last stretch before a deadline spent polling instead of sleeping. Default 1 ms. */
  spinMs?: number;
  /** Final stretch spent in a hard busy-wait (no event-loop turns). Default 0.05 ms. */
  hardSpinMs?: number;
  /**
   * While polling: busy-wait this long between two event-loop turns. 0 (default) turns the event
   * loop continuously, which allocates a promise and an immediate per turn (hundreds per period at
   * 1 kHz, hence frequent scavenges); a loop thread with little I/O sets e.g. 0.1 ms.
   */
  pollEveryMs?: number;
  /**
   * How the far part of a wait sleeps. 'timer' (default): setTimeout, ~1 ms resolution, I/O keeps
   * flowing. 'atomics': Atomics.wait, ~0.1 ms resolution and the core is free meanwhile, but the
   * thread's event loop stands still until it wakes: only for a thread that owns nothing else (the
   * loop worker), and only with spinMs large enough for the I/O that lands meanwhile.
   */
  sleep?: 'timer' | 'atomics';
}

/** Blocks the calling thread for `ms` (Atomics.wait on a private cell nobody notifies). */
const sleepCell = new Int32Array(new SharedArrayBuffer(4));
function blockFor(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

/**
 * Busy-waits until `t` (shorter than any timer resolves). performance.now() allocates (Node 20
 * builds it on process.hrtime(), a new array per call): read back to back it fed a 1 kHz loop
 * thread ~37 KB of garbage per tick, a 0.3 ms scavenge every ~65 ms, a tail the loop's p99 showed.
 * Between two reads the spin idles about a microsecond in arithmetic instead.
 */
function spinUntil(t: number): void {
  if (idlePerMicrosecond === 0) idlePerMicrosecond = calibrateIdle();
  while (nowMs() < t) idle(idlePerMicrosecond);
}

let idlePerMicrosecond = 0;
/** Where idle() leaves its result, so the compiler cannot drop the loop. */
let idleSink = 0;

function idle(iterations: number): void {
  let x = idleSink;
  for (let i = 0; i < iterations; i++) x = (Math.imul(x, 1664525) + 1013904223) | 0;
  idleSink = x;
}

/**
 * Iterations of idle() per microsecond, measured once (after warm-up, so it is measured compiled).
 * A measurement cut short by preemption only errs low: more clock reads, never a late deadline.
 */
function calibrateIdle(): number {
  const n = 20_000;
  for (let i = 0; i < 5; i++) idle(n);
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const t0 = nowMs();
    idle(n);
    best = Math.min(best, nowMs() - t0);
  }
  return Math.max(1, Math.round(n / Math.max(best * 1000, 1)));
}

/**
 * Waits until `deadline`. Sleeps on a timer while far away (timers fire up to ~1 ms late), then
 * polls with setImmediate so I/O callbacks (robot states, onnxruntime completions) still run,
 * and busy-waits only the last few tens of microseconds.
 */
export async function waitUntil(
  deadline: number,
  options: SchedulerOptions = {},
  cancelled: () => boolean = () => false,
): Promise<void> {
  const spinMs = options.spinMs ?? 1;
  const hardSpinMs = options.hardSpinMs ?? 0.05;
  const pollEveryMs = options.pollEveryMs ?? 0;
  const atomics = options.sleep === 'atomics';
  // Always give the event loop one turn, even when already late: the previous tick's pipeline
  // finishes its promise chain and pending I/O (fresh robot states) lands before the next tick,
  // instead of the next tick firing in between and counting a spurious overrun.
  await immediate();
  for (;;) {
    if (cancelled()) return;
    const remaining = deadline - nowMs();
    if (remaining <= 0) return;
    if (atomics && remaining > spinMs) {
      blockFor(remaining - spinMs);
      // Whatever arrived while the thread slept is handled before the deadline.
      await immediate();
    } else if (!atomics && remaining - spinMs >= 1) await sleep(Math.floor(remaining - spinMs));
    else if (remaining > hardSpinMs) {
      if (pollEveryMs > 0) spinUntil(Math.min(nowMs() + pollEveryMs, deadline - hardSpinMs));
      await immediate();
    } else {
      spinUntil(deadline);
      return;
    }
  }
}

/**
 * Emits a Tick at each deadline of a `hz` grid anchored at subscription time. Subscribers run
 * synchronously inside the tick; work they start asynchronously overlaps the wait for the next
 * deadline. Unsubscribing stops the ticks.
 */
export function fixedRate(hz: number, options: SchedulerOptions = {}): Observable<Tick> {
  if (!(hz > 0 && Number.isFinite(hz))) throw new RangeError(`tick rate ${hz} Hz`);
  const period = 1000 / hz;
  return new Observable<Tick>((subscriber) => {
    let stopped = false;
    const start = nowMs();
    const run = async (): Promise<void> => {
      let index = 0;
      while (!stopped) {
        const awaited = start + index * period;
        await waitUntil(awaited, options, () => stopped);
        if (stopped) break;
        const fired = nowMs();
        // A stall longer than a period (GC, a blocked event loop) skips the deadlines it covered
        // instead of firing them back to back: stale ticks would only send stale commands.
        const skipped = Math.max(0, Math.floor((fired - awaited) / period));
        index += skipped;
        subscriber.next({
          index,
          deadlineMs: start + index * period,
          firedMs: fired,
          lateMs: fired - awaited,
          skipped,
        });
        index++;
      }
    };
    run().catch((err: unknown) => subscriber.error(err));
    return () => {
      stopped = true;
    };
  });
}
