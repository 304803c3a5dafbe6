/**
 * A ByteTransport over a non-blocking file descriptor, driven by poll(): no native poller and no
 * event-loop hop between the bytes arriving in the kernel and the caller seeing them. The control
 * loop polls once per tick before reading the latest state; a 1 ms timer polls between ticks (and
 * whenever nobody else does: handshakes, heartbeats, a robot used outside a loop).
 *
 * Writes never block and never drop: what the kernel does not take now (EAGAIN, a short write)
 * waits in a queue, in order, and goes out on the next poll before anything newer. A peer that
 * stops reading for long enough to fill the queue is a dead peer, said so, not a silent loss.
 * On a pseudo-terminal a peer that went away shows as read() returning 0 or failing with EIO.
 */
import { closeSync, readSync, writeSync } from 'node:fs';
import type { ByteTransport, TransportEnd } from './transport.js';

export interface FdTransportOptions {
  /**
   * Another fd to write to, where reads and writes go through two (a pair of pipes); default: the
   * read fd, as on a tty.
   */
  writeFd?: number;
  /** Closes the fd(s) (default fs.closeSync). openSerialFd passes the serial binding's close. */
  closeFd?: (fd: number) => Promise<void> | void;
  /** Polls this often while idle, ms (default 1). */
  idlePollMs?: number;
  /** Bytes queued behind a peer that does not read before it counts as dead (default 64 KiB). */
  maxQueuedBytes?: number;
  /** Read buffer size (default 4096). */
  readChunkBytes?: number;
}

function errnoCode(err: unknown): string {
  return (err as NodeJS.ErrnoException | null)?.code ?? '';
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class FdTransport implements ByteTransport {
  private readonly readBuffer: Buffer;
  private readonly queue: Buffer[] = [];
  private queuedBytes = 0;
  private dataListener: ((chunk: Uint8Array) => void) | null = null;
  private endListener: ((end: TransportEnd) => void) | null = null;
  private state: 'open' | 'ended' | 'closed' = 'open';
  private polling = false;
  private readonly timer: NodeJS.Timeout;
  private readonly maxQueuedBytes: number;
  private readonly closeFd: (fd: number) => Promise<void> | void;
  private readonly writeFd: number;
  /** Times a write met a full kernel buffer and queued (tests and diagnostics). */
  writesQueued = 0;

  constructor(
    readonly fd: number,
    options: FdTransportOptions = {},
  ) {
    this.readBuffer = Buffer.alloc(options.readChunkBytes ?? 4096);
    this.maxQueuedBytes = options.maxQueuedBytes ?? 65536;
    this.closeFd = options.closeFd ?? closeSync;
    this.writeFd = options.writeFd ?? fd;
    this.timer = setInterval(() => this.poll(), options.idlePollMs ?? 1);
  }

  /** Bytes waiting for the kernel to take them. */
  get pendingBytes(): number {
    return this.queuedBytes;
  }

  write(bytes: Uint8Array): boolean {
    if (this.state !== 'open') return false;
    if (this.queue.length > 0) {
      // Behind older bytes: order first, so these wait their turn.
      this.enqueue(Buffer.from(bytes));
      this.flush();
      return this.state === 'open';
    }
    const written = this.writeSome(bytes);
    if (written < 0) return false;
    if (written < bytes.length) this.enqueue(Buffer.from(bytes.subarray(written)));
    return this.state === 'open';
  }

  onData(listener: (chunk: Uint8Array) => void): void {
    this.dataListener = listener;
  }

  onEnd(listener: (end: TransportEnd) => void): void {
    this.endListener = listener;
  }

  poll(): void {
    // A data listener may write (and a write may end the transport): no re-entry.
    if (this.state !== 'open' || this.polling) return;
    this.polling = true;
    try {
      if (this.queue.length > 0) this.flush();
      while (this.state === 'open') {
        let n: number;
        try {
          n = readSync(this.fd, this.readBuffer, 0, this.readBuffer.length, null);
        } catch (err) {
          const code = errnoCode(err);
          if (code === 'EAGAIN' || code === 'EWOULDBLOCK') break;
          if (code === 'EINTR') continue;
          this.end({
            cause: 'read',
            reason: code === 'EIO' ? 'the peer is gone (read: EIO)' : `read failed: ${message(err)}`,
          });
          break;
        }
        if (n === 0) {
          this.end({ cause: 'read', reason: 'the peer is gone (read: end of file)' });
          break;
        }
        this.dataListener?.(this.readBuffer.subarray(0, n));
        if (n < this.readBuffer.length) break; // drained: the next read would say EAGAIN
      }
    } finally {
      this.polling = false;
    }
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearInterval(this.timer);
    this.dataListener = null;
    this.endListener = null;
    this.queue.length = 0;
    this.queuedBytes = 0;
    await this.closeFd(this.fd);
    if (this.writeFd !== this.fd) await this.closeFd(this.writeFd);
  }

  /** Bytes written (0 when the kernel buffer is full), or -1 when the transport ended. */
  private writeSome(bytes: Uint8Array): number {
    for (;;) {
      try {
        return writeSync(this.writeFd, bytes, 0, bytes.length);
      } catch (err) {
        const code = errnoCode(err);
        if (code === 'EAGAIN' || code === 'EWOULDBLOCK') return 0;
        if (code === 'EINTR') continue;
        this.end({
          cause: 'write',
          reason: code === 'EIO' ? 'write failed: the peer is gone (EIO)' : `write failed: ${message(err)}`,
        });
        return -1;
      }
    }
  }

  private enqueue(bytes: Buffer): void {
    this.writesQueued++;
    this.queue.push(bytes);
    this.queuedBytes += bytes.length;
    if (this.queuedBytes > this.maxQueuedBytes) {
      this.end({
        cause: 'write',
        reason: `the peer stopped reading: ${this.queuedBytes} bytes wait to be written (limit ${this.maxQueuedBytes})`,
      });
    }
  }

  private flush(): void {
    while (this.queue.length > 0 && this.state === 'open') {
      const head = this.queue[0];
      const written = this.writeSome(head);
      if (written < 0) return;
      if (written === 0) return;
      this.queuedBytes -= written;
      if (written === head.length) this.queue.shift();
      else {
        this.queue[0] = head.subarray(written);
        return;
      }
    }
  }

  private end(end: TransportEnd): void {
    if (this.state !== 'open') return;
    this.state = 'ended';
    clearInterval(this.timer);
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.endListener?.(end);
  }
}
