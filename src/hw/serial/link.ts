/**
 * The host end of a serial link: a byte transport (transport.ts) that frames messages, sends
 * heartbeats, notices when the peer is gone, and reopens with exponential backoff.
 *
 * A pseudo-terminal whose peer died may only show it on the next write or read (EIO), and a USB
 * adapter pulled out may show nothing at all; so loss is declared when the transport ends (write
 * error, read error or end of file, port closed) or when no frame arrived for linkTimeoutMs,
 * whichever comes first.
 */
import { isMainThread } from 'node:worker_threads';
import { ResrtError } from '../../util/errors.js';
import { encodeFrame, type Frame } from './frame.js';
import { FrameDecoder } from './frame-decoder.js';
import { decodePayload, encodePayload, messageTypeCode, type Message } from './messages.js';
import { SilenceClock } from '../silence-clock.js';
import { HANDSHAKE_VERSION, MessageType } from './protocol.js';
import { openFdTransport } from './serial-fd.js';
import {
  SerialPortTransport,
  type ByteTransport,
  type SerialTransportKind,
  type TransportOpener,
} from './transport.js';

export interface SerialLinkOptions {
  /** Default 1_000_000. Pseudo-terminals ignore it, USB CDC devices mostly too; UARTs do not. */
  baudRate?: number;
  /** Heartbeat period, ms (default 50). */
  heartbeatMs?: number;
  /** No frame for this long, once the peer has spoken since the port opened, means the link is lost, ms (default 250). */
  linkTimeoutMs?: number;
  /** Reopen after a loss (default true). */
  reconnect?: boolean;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /**
   * 'serialport': serialport's SerialPort, its bytes arriving as events (main thread only).
   * 'fd': a non-blocking fd read in poll() (fd-transport.ts), for any thread. Default: 'serialport'
   * on the main thread, 'fd' in a worker thread.
   */
  transport?: SerialTransportKind;
}

export interface LinkCounters {
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
  crcErrors: number;
  cobsErrors: number;
  lengthErrors: number;
  oversize: number;
  writeErrors: number;
  linkLosses: number;
  reconnects: number;
  /** Round trip of the last echoed heartbeat, ms (NaN before the first). */
  lastHeartbeatRttMs: number;
}

type Listener<T> = (value: T) => void;

const defaults = {
  baudRate: 1_000_000,
  heartbeatMs: 50,
  linkTimeoutMs: 250,
  reconnect: true,
  backoffInitialMs: 50,
  backoffMaxMs: 2000,
  transport: (isMainThread ? 'serialport' : 'fd') as SerialTransportKind,
};

const openers: Record<SerialTransportKind, TransportOpener> = {
  serialport: (path, baudRate) => SerialPortTransport.open(path, baudRate),
  fd: openFdTransport,
};

function checkPositive(name: string, v: number): void {
  if (!Number.isFinite(v) || v <= 0) {
    throw new ResrtError(
      `serial link option ${name} must be a positive number, got ${v}`,
      `pass ${name} > 0`,
    );
  }
}

export class SerialLink {
  private readonly opts: Required<SerialLinkOptions>;
  private port: ByteTransport | null = null;
  private readonly openTransport: TransportOpener;
  private state: 'up' | 'down' | 'closed' = 'down';
  private readonly decoder = new FrameDecoder();
  private txSeq = 0;
  private peerHeartbeatUs = 0;
  private readonly t0 = performance.now();
  private timer: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private backoffMs: number;
  private readonly frameListeners = new Set<Listener<Frame>>();
  private readonly upListeners = new Set<Listener<void>>();
  private readonly downListeners = new Set<Listener<string>>();
  private readonly stats = {
    framesOut: 0,
    bytesOut: 0,
    writeErrors: 0,
    linkLosses: 0,
    reconnects: 0,
    lastHeartbeatRttMs: NaN,
  };
  /** Header version of outgoing frames (and the session's payload rules); the robot sets it after negotiation. */
  version = HANDSHAKE_VERSION;
  /**
   * Set while a HELLO awaits its answer: the device switches version when it reads the HELLO, so a
   * heartbeat written meanwhile in the old version would be refused (docs/serial-protocol.md §4).
   */
  heartbeatsHeld = false;

  private constructor(
    readonly path: string,
    options: SerialLinkOptions,
  ) {
    this.opts = { ...defaults, ...options };
    checkPositive('baudRate', this.opts.baudRate);
    checkPositive('heartbeatMs', this.opts.heartbeatMs);
    checkPositive('linkTimeoutMs', this.opts.linkTimeoutMs);
    checkPositive('backoffInitialMs', this.opts.backoffInitialMs);
    checkPositive('backoffMaxMs', this.opts.backoffMaxMs);
    this.backoffMs = this.opts.backoffInitialMs;
    if (!(this.opts.transport in openers)) {
      throw new ResrtError(
        `serial link option transport must be 'serialport' or 'fd', got '${String(this.opts.transport)}'`,
        "pass transport: 'fd' (any thread) or 'serialport' (main thread), or leave it unset",
      );
    }
    this.openTransport = openers[this.opts.transport];
  }

  /** Opens the port once; the first open must succeed (later losses reopen by themselves). */
  static async open(path: string, options: SerialLinkOptions = {}): Promise<SerialLink> {
    const link = new SerialLink(path, options);
    let port: ByteTransport;
    try {
      port = await link.openTransport(path, link.opts.baudRate);
    } catch (err) {
      if (err instanceof ResrtError) throw err;
      throw new ResrtError(
        `cannot open serial port ${path}: ${err instanceof Error ? err.message : String(err)}`,
        'check the device path (ls /dev/tty*), that no other program holds it, and that you may open it (dialout group)',
      );
    }
    link.attach(port);
    return link;
  }

  /** Which transport carries the bytes. */
  get transport(): SerialTransportKind {
    return this.opts.transport;
  }

  get isUp(): boolean {
    return this.state === 'up';
  }

  onFrame(listener: Listener<Frame>): () => void {
    this.frameListeners.add(listener);
    return () => this.frameListeners.delete(listener);
  }

  onUp(listener: Listener<void>): () => void {
    this.upListeners.add(listener);
    return () => this.upListeners.delete(listener);
  }

  onDown(listener: Listener<string>): () => void {
    this.downListeners.add(listener);
    return () => this.downListeners.delete(listener);
  }

  /** Frames and writes a message; returns its sequence number, or null when the link is down. */
  send(message: Message, flags = 0): number | null {
    if (this.state !== 'up') return null;
    const seq = this.txSeq;
    this.txSeq = (this.txSeq + 1) & 0xffff;
    const wire = encodeFrame({
      version: this.version,
      type: messageTypeCode(message),
      seq,
      flags,
      payload: encodePayload(message, this.version),
    });
    return this.writeBytes(wire) ? seq : null;
  }

  /** Writes bytes as they are (fault-injection tests force malformed frames through here). */
  writeBytes(bytes: Uint8Array): boolean {
    const port = this.port;
    if (this.state !== 'up' || port === null) return false;
    // A failed write ends the transport, which reports it (and counts it) through onEnd.
    if (!port.write(bytes)) return false;
    this.stats.framesOut++;
    this.stats.bytesOut += bytes.length;
    return true;
  }

  /**
   * Reads what the transport has received, now (an fd transport; serialport delivers by events).
   * The control loop calls it each tick before reading the latest state.
   */
  poll(): void {
    this.port?.poll();
  }

  /** Sends a heartbeat now (a RESET is only accepted right after one). */
  sendHeartbeat(): boolean {
    const timeUs = Math.floor((performance.now() - this.t0) * 1000) >>> 0;
    return this.send({ type: 'heartbeat', timeUs, echoUs: this.peerHeartbeatUs }) !== null;
  }

  /** Declares the link lost (the robot calls it when a reconnected peer fails its handshake). */
  fail(reason: string): void {
    this.markDown(reason);
  }

  counters(): LinkCounters {
    const d = this.decoder.counters;
    return {
      framesIn: d.frames,
      bytesIn: d.bytes,
      crcErrors: d.crcErrors,
      cobsErrors: d.cobsErrors,
      lengthErrors: d.lengthErrors,
      oversize: d.oversize,
      ...this.stats,
    };
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.stopTimers();
    const port = this.port;
    this.port = null;
    await port?.close();
  }

  private attach(port: ByteTransport): void {
    this.port = port;
    this.decoder.reset();
    // A reopened port starts a new session: handshake frames until the next HELLO succeeds.
    this.version = HANDSHAKE_VERSION;
    this.state = 'up';
    const period = Math.min(this.opts.heartbeatMs, this.opts.linkTimeoutMs / 4);
    // The peer's silence since this port opened. Until the peer sent anything, silence is not a
    // loss: a device may still be booting (an Arduino resets when its port opens and spends a
    // second or two in its bootloader), and the handshake's own timeout bounds the wait.
    const silence = new SilenceClock(period);
    port.onData((chunk) => {
      if (this.port !== port) return;
      silence.heard(performance.now());
      this.decoder.push(chunk, (frame) => this.onFrameIn(frame));
    });
    port.onEnd((end) => {
      if (this.port !== port) return;
      if (end.cause === 'write') this.stats.writeErrors++;
      this.markDown(end.reason);
    });
    let lastBeat = 0;
    this.timer = setInterval(() => {
      // Bytes that are already here count before silence is judged (a blocked thread wakes to both).
      port.poll();
      if (this.port !== port) return;
      const now = performance.now();
      // A stall of this thread restarts the clock (silence-clock.ts says why).
      silence.checked(now);
      const silentMs = silence.silentMs(now);
      if (silence.everHeard && silentMs > this.opts.linkTimeoutMs) {
        this.markDown(`no frame for ${Math.round(silentMs)} ms`);
        return;
      }
      if (!this.heartbeatsHeld && now - lastBeat >= this.opts.heartbeatMs - 1) {
        lastBeat = now;
        this.sendHeartbeat();
      }
    }, period);
    this.sendHeartbeat();
  }

  private onFrameIn(frame: Frame): void {
    // Backoff restarts only once the peer talks: a port that opens but stays silent keeps backing off.
    this.backoffMs = this.opts.backoffInitialMs;
    if (frame.type === MessageType.Heartbeat) {
      const decoded = decodePayload(frame.type, frame.payload, this.version);
      if (decoded.ok && decoded.message.type === 'heartbeat') {
        this.peerHeartbeatUs = decoded.message.timeUs;
        if (decoded.message.echoUs !== 0) {
          const nowUs = Math.floor((performance.now() - this.t0) * 1000) >>> 0;
          this.stats.lastHeartbeatRttMs = ((nowUs - decoded.message.echoUs) >>> 0) / 1000;
        }
      }
    }
    for (const l of this.frameListeners) l(frame);
  }

  private stopTimers(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.timer = null;
    this.reconnectTimer = null;
  }

  private markDown(reason: string): void {
    if (this.state !== 'up') return;
    this.state = 'down';
    this.stats.linkLosses++;
    this.stopTimers();
    const port = this.port;
    this.port = null;
    void port?.close().catch(() => undefined);
    for (const l of this.downListeners) l(reason);
    if (this.opts.reconnect) this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.state !== 'down') return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.openTransport(this.path, this.opts.baudRate).then(
        (port) => {
          if (this.state !== 'down') {
            void port.close().catch(() => undefined);
            return;
          }
          this.stats.reconnects++;
          this.attach(port);
          // A transport may end at its first write (a peer gone again): then it never came up.
          if (this.isUp) for (const l of this.upListeners) l();
        },
        () => {
          this.backoffMs = Math.min(this.backoffMs * 2, this.opts.backoffMaxMs);
          this.scheduleReconnect();
        },
      );
    }, this.backoffMs);
  }
}
