/**
 * How long a peer has been silent, counting only time this thread was listening. A link judges
 * silence on a timer that shares the event loop with the peer's bytes: after the thread was blocked
 * (a long synchronous step, a loaded machine), that timer runs first on waking, while what the peer
 * sent meanwhile still waits behind it (socket or serial 'data' events), or was never sent where the
 * peer shares this thread (a virtual device). So a check that itself came late,
 * more than two check periods after the last, restarts the clock: a host stall is not taken for a
 * dead peer. Used by SerialLink.
 */
export class SilenceClock {
  private lastHeardMs = -Infinity;
  private lastCheckMs: number;
  private listeningSinceMs = -Infinity;

  /** `checkEveryMs`: the period of the caller's silence check. */
  constructor(
    private readonly checkEveryMs: number,
    nowMs: number = performance.now(),
  ) {
    this.lastCheckMs = nowMs;
  }

  /** The peer spoke. */
  heard(nowMs: number): void {
    this.lastHeardMs = nowMs;
  }

  /** Called by the periodic check before it judges: notes whether this thread was stalled. */
  checked(nowMs: number): void {
    if (nowMs - this.lastCheckMs > 2 * this.checkEveryMs) this.listeningSinceMs = nowMs;
    this.lastCheckMs = nowMs;
  }

  /** Silence that counts, ms; Infinity until the peer was first heard. */
  silentMs(nowMs: number): number {
    if (this.lastHeardMs === -Infinity) return Infinity;
    return nowMs - Math.max(this.lastHeardMs, this.listeningSinceMs);
  }

  /** Whether the peer has spoken since this clock started. */
  get everHeard(): boolean {
    return this.lastHeardMs !== -Infinity;
  }
}
