/**
 * Real-time scheduling for the control loop's thread (Linux). On a loaded machine the kernel's
 * fair scheduler lets a thread that wakes for its next tick wait behind every runnable process:
 * on this 2-core machine at load 12 the loop thread lost whole milliseconds at a time (thousands
 * of deadline misses per minute at 1 kHz). A SCHED_FIFO thread preempts them all when it wakes.
 * Node has no sched_setscheduler, so this asks util-linux's `chrt` to set it on the calling
 * thread (its kernel thread id from /proc/thread-self), as ros2_control does for its loop thread,
 * and says why not (with the fix) where it cannot.
 *
 * A SCHED_FIFO thread must sleep most of each period: the kernel throttles real-time threads
 * that use more than sched_rt_runtime_us of every second (95% by default) with a stall of the
 * remainder (50 ms), so the loop thread's scheduler sleeps on Atomics.wait between ticks
 * (realtimeSchedulerDefaults) instead of polling.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';

export type LoopPriority = 'realtime' | 'normal';

/**
 * SCHED_FIFO priority of the loop thread: ros2_control's default, level with the kernel's threaded
 * interrupt handlers (50), so the network and serial interrupts the loop waits on are not starved.
 */
export const REALTIME_PRIORITY = 50;

export interface PriorityOutcome {
  /** What the thread runs at now. */
  applied: 'realtime' | 'normal';
  /** E.g. 'SCHED_FIFO 50', or why real-time scheduling was not applied and how to allow it. */
  detail: string;
  /** Kernel thread id of the thread (0 where unknown). */
  tid: number;
}

/** The calling thread's kernel thread id (a synchronous fs call runs on the calling thread). */
export function currentThreadId(): number {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    return Number.isInteger(tid) && tid > 0 ? tid : 0;
  } catch {
    return 0;
  }
}

/** The scheduling policy and real-time priority of a thread of this process, from /proc. */
export function threadScheduling(tid: number): { policy: string; priority: number } {
  const stat = readFileSync(`/proc/${process.pid}/task/${tid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const priority = Number(fields[40 - 3]);
  const policy = Number(fields[41 - 3]);
  const names: Record<number, string> = { 0: 'SCHED_OTHER', 1: 'SCHED_FIFO', 2: 'SCHED_RR' };
  return { policy: names[policy] ?? `policy ${policy}`, priority };
}

const HOW_TO_ALLOW =
  'run as root, give node the capability (sudo setcap cap_sys_nice+ep "$(readlink -f "$(which node)")"), or allow real-time priorities to your user (an "rtprio 99" line in /etc/security/limits.conf); or pass --priority normal to run without it';

/**
 * Puts the calling thread at SCHED_FIFO `priority` ('realtime'), or leaves it alone ('normal').
 * Never throws: a refusal comes back as `applied: 'normal'` with the reason and the fix.
 */
export function setThreadPriority(
  wanted: LoopPriority,
  options: { priority?: number; chrt?: string } = {},
): PriorityOutcome {
  const tid = currentThreadId();
  if (wanted === 'normal') return { applied: 'normal', detail: 'normal scheduling (as asked)', tid };
  if (process.platform !== 'linux' || tid === 0) {
    return {
      applied: 'normal',
      detail: `real-time scheduling is set through Linux's /proc/thread-self and chrt; not available on ${process.platform}`,
      tid,
    };
  }
  const priority = options.priority ?? REALTIME_PRIORITY;
  const chrt = options.chrt ?? 'chrt';
  try {
    execFileSync(chrt, ['--fifo', '--pid', String(priority), String(tid)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    const why =
      e.code === 'ENOENT'
        ? `${chrt} was not found (it comes with util-linux: apt-get install util-linux)`
        : (e.stderr?.toString().trim().split('\n')[0] ?? e.message.split('\n')[0]);
    return {
      applied: 'normal',
      detail: `SCHED_FIFO ${priority} was refused: ${why}; ${HOW_TO_ALLOW}`,
      tid,
    };
  }
  const now = threadScheduling(tid);
  if (now.policy !== 'SCHED_FIFO') {
    return {
      applied: 'normal',
      detail: `chrt ran but the thread is still ${now.policy}; ${HOW_TO_ALLOW}`,
      tid,
    };
  }
  return { applied: 'realtime', detail: `SCHED_FIFO ${now.priority}`, tid };
}
