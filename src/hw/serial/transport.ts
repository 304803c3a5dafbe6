/**
 * The byte pipe under a SerialLink: something that writes bytes, hands over the bytes that
 * arrived, and says when the other end is gone. Two implementations: serialport's SerialPort
 * (events on the thread's event loop, main thread only: its native poller aborts the process in a
 * worker thread) and FdTransport (fd-transport.ts: a non-blocking file descriptor read in poll(),
 * usable from any thread).
 */
import { isMainThread } from 'node:worker_threads';
import { SerialPort } from 'serialport';
import { ResrtError } from '../../util/errors.js';

/** Why a transport stopped: a failed write, a failed or ended read, or the port closing under us. */
export type TransportEnd = { cause: 'write' | 'read' | 'closed'; reason: string };

export interface ByteTransport {
  /**
   * Hands bytes to the device. True when they are written or queued to be written in order;
   * false when the transport is dead or closed (the end listener says why).
   */
  write(bytes: Uint8Array): boolean;
  /** Bytes from the device, in order. A chunk is only valid during the call. */
  onData(listener: (chunk: Uint8Array) => void): void;
  /** Called once when the transport can carry no more bytes (dead peer, error, closed port). */
  onEnd(listener: (end: TransportEnd) => void): void;
  /**
   * Reads what has arrived and writes what is queued, now. Transports whose bytes come as
   * events (serialport) have nothing to do here; FdTransport reads its fd here.
   */
  poll(): void;
  close(): Promise<void>;
}

export type SerialTransportKind = 'serialport' | 'fd';

/** Opens a port as a transport; SerialLink calls it on open and on every reconnect. */
export type TransportOpener = (path: string, baudRate: number) => Promise<ByteTransport>;

/** serialport's SerialPort as a ByteTransport. */
export class SerialPortTransport implements ByteTransport {
  private dataListener: ((chunk: Uint8Array) => void) | null = null;
  private endListener: ((end: TransportEnd) => void) | null = null;
  private ended = false;

  private constructor(private readonly port: SerialPort) {
    port.on('data', (chunk: Buffer) => this.dataListener?.(chunk));
    port.on('close', () => this.end({ cause: 'closed', reason: 'port closed' }));
    port.on('error', (err: Error) => this.end({ cause: 'read', reason: `port error: ${err.message}` }));
  }

  static open(path: string, baudRate: number): Promise<SerialPortTransport> {
    if (!isMainThread) {
      // Refused rather than tried: the attempt takes the whole process down, not just this port.
      return Promise.reject(
        new ResrtError(
          `serialport cannot open ${path} in a worker thread: its native poller aborts the process there`,
          "use the fd transport there (SerialLink's transport: 'fd', the default off the main thread)",
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const port = new SerialPort({ path, baudRate, autoOpen: false });
      port.open((err) => (err ? reject(err) : resolve(new SerialPortTransport(port))));
    });
  }

  write(bytes: Uint8Array): boolean {
    if (this.ended) return false;
    try {
      this.port.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), (err) => {
        if (err) this.end({ cause: 'write', reason: `write failed: ${err.message}` });
      });
    } catch (err) {
      this.end({
        cause: 'write',
        reason: `write failed: ${err instanceof Error ? err.message : String(err)}`,
      });
      return false;
    }
    return true;
  }

  onData(listener: (chunk: Uint8Array) => void): void {
    this.dataListener = listener;
  }

  onEnd(listener: (end: TransportEnd) => void): void {
    this.endListener = listener;
  }

  poll(): void {}

  async close(): Promise<void> {
    this.ended = true;
    this.dataListener = null;
    this.endListener = null;
    const port = this.port;
    if (port.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
  }

  private end(end: TransportEnd): void {
    if (this.ended) return;
    this.ended = true;
    this.endListener?.(end);
    if (this.port.isOpen) this.port.close(() => undefined);
  }
}
