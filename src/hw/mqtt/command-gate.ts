/**
 * The receiver's acceptance rules for commands: a command is applied only while its own deadline
 * holds on the receiver's wall clock, and only in sequence order. MQTT 5 message expiry is a
 * second line; this is the one that works on every broker.
 */
import type { CommandPayload } from './payload.js';

export type CommandVerdict = 'ok' | 'stale' | 'future' | 'duplicate' | 'out-of-order';

export interface CommandGateOptions {
  /** How far the sender's and receiver's wall clocks may disagree, ms. */
  allowedClockSkewMs: number;
}

export class CommandGate {
  private session = 0;
  private lastSeq = -1;
  private lastSentAtMs = -Infinity;

  constructor(private readonly options: CommandGateOptions) {}

  /** Judges a decoded command at the receiver's wall-clock time `nowMs`; 'ok' advances the sequence. */
  admit(cmd: CommandPayload, nowMs: number): CommandVerdict {
    const skew = this.options.allowedClockSkewMs;
    if (nowMs > cmd.sentAtMs + cmd.validForMs + skew) return 'stale';
    // A send time ahead of our clock by more than the skew means the clocks disagree; its
    // deadline cannot be trusted either way.
    if (cmd.sentAtMs > nowMs + skew) return 'future';
    if (cmd.session === this.session) {
      if (cmd.seq === this.lastSeq) return 'duplicate';
      if (cmd.seq < this.lastSeq) return 'out-of-order';
    } else if (cmd.sentAtMs <= this.lastSentAtMs) {
      // Another sender session that sent this before the last applied command: a straggler of a
      // previous controller run, or a second controller fighting the first.
      return 'out-of-order';
    }
    this.session = cmd.session;
    this.lastSeq = cmd.seq;
    this.lastSentAtMs = cmd.sentAtMs;
    return 'ok';
  }

  get lastAccepted(): { session: number; seq: number } {
    return { session: this.session, seq: Math.max(0, this.lastSeq) };
  }
}
