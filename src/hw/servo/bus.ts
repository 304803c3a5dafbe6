/**
 * The servo-bus transaction layer: one instruction at a time over a half-duplex serial bus (a USB
 * adapter, or a pseudo-terminal to the virtual bus), each waiting for the status packets it asks
 * for with a timeout, and retried when a status packet is missing or corrupt. Every outcome is
 * counted: missing ("no status packet", the common field failure), checksum errors, duplicates
 * (two servos on one id), status error bits, link losses.
 *
 * The port reopens by itself after a loss (adapter unplugged and plugged back): `onDown`/`onUp`
 * tell the robot above, which decides what the servos must do next.
 */
import { SerialPort } from 'serialport';
import { ResrtError } from '../../util/errors.js';
import { dynamixelCodec } from './dynamixel-codec.js';
import { feetechCodec } from './feetech-codec.js';
import {
  BROADCAST_ID,
  Instruction,
  readParams,
  syncReadParams,
  syncWriteParams,
  writeParams,
  type PacketCodec,
  type PacketDecoder,
  type ProtocolName,
  type StatusPacket,
} from './packet.js';

export function codecFor(protocol: ProtocolName): PacketCodec {
  return protocol === 'feetech' ? feetechCodec : dynamixelCodec;
}

export interface ServoBusOptions {
  protocol: ProtocolName;
  /** Default 1 000 000 (what SO-101 and Koch arms ship with). */
  baudRate?: number;
  /** Waited past the computed wire time for the last status packet, ms (default 35: two USB latency timers and a little). */
  timeoutMarginMs?: number;
  /** Tries after the first for a missing or corrupt status packet (default 2). */
  retries?: number;
  /** The servos' return delay, µs, counted into the wait (default 0). */
  returnDelayUs?: number;
  /** Reopen the port after a loss (default true). */
  reconnect?: boolean;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
}

export interface BusCounters {
  instructions: number;
  statusPackets: number;
  /** Status packets expected and never received. */
  missingStatus: number;
  checksumErrors: number;
  malformed: number;
  discardedBytes: number;
  /** A second status packet from an id that already answered (two servos on one id). */
  duplicateStatus: number;
  /** Status packets from ids nobody asked, or after their transaction ended. */
  unexpectedStatus: number;
  /** Status packets whose error byte was not zero. */
  statusErrors: number;
  retries: number;
  /** Transactions that still missed a status packet after every retry. */
  failures: number;
  bytesOut: number;
  bytesIn: number;
  linkLosses: number;
  reconnects: number;
}

/** A transaction that did not get its answer; `ids` are the servos that stayed silent or corrupt. */
export class BusTransactionError extends ResrtError {
  constructor(
    readonly kind: 'no-status' | 'link-down',
    readonly ids: number[],
    message: string,
    hint: string,
  ) {
    super(message, hint);
  }
}

interface Waiting {
  expect: Set<number>;
  got: Map<number, StatusPacket>;
  dataLength: number | null;
  done: () => void;
}

const defaults = {
  baudRate: 1_000_000,
  timeoutMarginMs: 35,
  retries: 2,
  returnDelayUs: 0,
  reconnect: true,
  backoffInitialMs: 50,
  backoffMaxMs: 2000,
};

function openPort(path: string, baudRate: number): Promise<SerialPort> {
  return new Promise((resolve, reject) => {
    const port = new SerialPort({ path, baudRate, autoOpen: false });
    port.open((err) => (err ? reject(err) : resolve(port)));
  });
}

export class ServoBus {
  readonly codec: PacketCodec;
  private readonly opts: Required<ServoBusOptions>;
  private port: SerialPort | null = null;
  private state: 'up' | 'down' | 'closed' = 'down';
  private readonly decoder: PacketDecoder<StatusPacket>;
  private waiting: Waiting | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  private reconnectTimer: NodeJS.Timeout | null = null;
  private backoffMs: number;
  private readonly downListeners = new Set<(reason: string) => void>();
  private readonly upListeners = new Set<() => void>();
  private readonly stats = {
    instructions: 0,
    statusPackets: 0,
    missingStatus: 0,
    duplicateStatus: 0,
    unexpectedStatus: 0,
    statusErrors: 0,
    retries: 0,
    failures: 0,
    bytesOut: 0,
    bytesIn: 0,
    linkLosses: 0,
    reconnects: 0,
  };
  /** Last time any byte arrived (performance.now()). */
  lastRxMs = performance.now();

  private constructor(
    readonly path: string,
    options: ServoBusOptions,
  ) {
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    this.opts = { ...defaults, ...given } as Required<ServoBusOptions>;
    for (const k of ['baudRate', 'timeoutMarginMs', 'backoffInitialMs', 'backoffMaxMs'] as const) {
      const v = this.opts[k];
      if (!(Number.isFinite(v) && v > 0)) {
        throw new ResrtError(`servo bus option ${k} must be a positive number, got ${v}`, `pass ${k} > 0`);
      }
    }
    if (!(Number.isInteger(this.opts.retries) && this.opts.retries >= 0)) {
      throw new ResrtError(
        `servo bus retries must be an integer >= 0, got ${this.opts.retries}`,
        'e.g. retries: 2',
      );
    }
    this.codec = codecFor(options.protocol);
    this.decoder = this.codec.statusDecoder();
    this.backoffMs = this.opts.backoffInitialMs;
  }

  static async open(path: string, options: ServoBusOptions): Promise<ServoBus> {
    const bus = new ServoBus(path, options);
    let port: SerialPort;
    try {
      port = await openPort(path, bus.opts.baudRate);
    } catch (err) {
      throw new ResrtError(
        `cannot open servo bus adapter ${path}: ${err instanceof Error ? err.message : String(err)}`,
        'check the adapter is plugged in (ls /dev/ttyACM* /dev/ttyUSB*), that no other program holds it, and that you may open it (dialout group)',
      );
    }
    bus.attach(port);
    return bus;
  }

  get protocol(): ProtocolName {
    return this.codec.protocol;
  }

  get baudRate(): number {
    return this.opts.baudRate;
  }

  get isUp(): boolean {
    return this.state === 'up';
  }

  onDown(listener: (reason: string) => void): () => void {
    this.downListeners.add(listener);
    return () => this.downListeners.delete(listener);
  }

  onUp(listener: () => void): () => void {
    this.upListeners.add(listener);
    return () => this.upListeners.delete(listener);
  }

  counters(): BusCounters {
    const d = this.decoder.counters;
    return {
      ...this.stats,
      checksumErrors: d.checksumErrors,
      malformed: d.malformed,
      discardedBytes: d.discardedBytes,
    };
  }

  /** Wire time of `bytes` bytes at the bus's baud rate (10 bits a byte), ms. */
  wireMs(bytes: number): number {
    return (bytes * 10 * 1000) / this.opts.baudRate;
  }

  // -- instructions -------------------------------------------------------------------------------

  /** PING: the model number of the servo at `id`, or null when nothing answers after the retries. */
  async ping(
    id: number,
    retries = this.opts.retries,
  ): Promise<{ modelNumber: number; error: number } | null> {
    const got = await this.request(id, Instruction.Ping, new Uint8Array(0), retries, null).catch((err) => {
      if (err instanceof BusTransactionError && err.kind === 'no-status') return null;
      throw err;
    });
    if (!got) return null;
    if (this.protocol === 'dynamixel') {
      // Protocol 2.0 PING answers with the model number (2 bytes) and the firmware version.
      if (got.params.length < 3) return null;
      return { modelNumber: got.params[0] | (got.params[1] << 8), error: got.error };
    }
    // Feetech PING carries no data: the model number is read from address 3.
    const model = await this.read(id, 3, 2, retries).catch(() => null);
    return model ? { modelNumber: model.params[0] | (model.params[1] << 8), error: got.error } : null;
  }

  /** Pings every id in `ids` (with `retries` more tries each); returns who answered. */
  async scan(
    ids: Iterable<number> = range(0, 253),
    retries = 0,
  ): Promise<{ id: number; modelNumber: number }[]> {
    const found: { id: number; modelNumber: number }[] = [];
    for (const id of ids) {
      const r = await this.ping(id, retries);
      if (r) found.push({ id, modelNumber: r.modelNumber });
    }
    return found;
  }

  read(id: number, address: number, length: number, retries = this.opts.retries): Promise<StatusPacket> {
    return this.request(id, Instruction.Read, readParams(this.codec, address, length), retries, length);
  }

  write(id: number, address: number, data: Uint8Array, retries = this.opts.retries): Promise<StatusPacket> {
    return this.request(id, Instruction.Write, writeParams(this.codec, address, data), retries, 0);
  }

  /**
   * SYNC READ of `length` bytes at `address` from every id; ids whose status packet is missing or
   * corrupt are asked again (one sync read of just those), up to the retries. Returns what arrived;
   * the ids still missing are in `missing`.
   */
  async syncRead(
    address: number,
    length: number,
    ids: readonly number[],
    retries = this.opts.retries,
  ): Promise<{ data: Map<number, StatusPacket>; missing: number[] }> {
    const data = new Map<number, StatusPacket>();
    let pending = [...ids];
    for (let attempt = 0; attempt <= retries && pending.length > 0; attempt++) {
      if (attempt > 0) this.stats.retries++;
      const params = syncReadParams(this.codec, address, length, pending);
      const got = await this.transact(
        { id: BROADCAST_ID, instruction: Instruction.SyncRead, params },
        pending,
        length,
      );
      for (const [id, p] of got) data.set(id, p);
      pending = pending.filter((id) => !got.has(id));
    }
    if (pending.length > 0) this.stats.failures++;
    return { data, missing: pending };
  }

  /** SYNC WRITE of `length` bytes at `address` to every listed servo; nothing answers it. */
  syncWrite(
    address: number,
    length: number,
    entries: readonly { id: number; data: Uint8Array }[],
  ): Promise<void> {
    const params = syncWriteParams(this.codec, address, length, entries);
    return this.serialize(async () => {
      this.requireUp();
      this.send({ id: BROADCAST_ID, instruction: Instruction.SyncWrite, params });
    });
  }

  /** Writes raw bytes (fault-injection tests push corrupt packets through here). */
  writeRaw(bytes: Uint8Array): boolean {
    const port = this.port;
    if (this.state !== 'up' || !port) return false;
    port.write(Buffer.from(bytes));
    this.stats.bytesOut += bytes.length;
    return true;
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.waiting?.done();
    const port = this.port;
    this.port = null;
    if (port?.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
  }

  // -- transactions -------------------------------------------------------------------------------

  private async request(
    id: number,
    instruction: number,
    params: Uint8Array,
    retries: number,
    dataLength: number | null,
  ): Promise<StatusPacket> {
    if (!(Number.isInteger(id) && id >= 0 && id <= 252)) {
      throw new ResrtError(`servo id ${id} is not a servo id`, 'use an id in 0..252');
    }
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (attempt > 0) this.stats.retries++;
      const got = await this.transact({ id, instruction, params }, [id], dataLength);
      const p = got.get(id);
      if (p) return p;
    }
    this.stats.failures++;
    throw new BusTransactionError(
      'no-status',
      [id],
      `servo ${id} on ${this.path} sent no valid status packet (${retries + 1} tries)`,
      `check that servo ${id} is powered and wired, that its id and baud rate (${this.opts.baudRate}) are right (resrt servo scan), and the bus counters for checksum errors`,
    );
  }

  /** One instruction and the status packets of `expect`, in order; resolves with what arrived in time. */
  private transact(
    packet: { id: number; instruction: number; params: Uint8Array },
    expect: readonly number[],
    dataLength: number | null,
  ): Promise<Map<number, StatusPacket>> {
    return this.serialize(async () => {
      this.requireUp();
      // Whatever is left over belongs to an earlier, timed-out transaction.
      this.decoder.reset();
      const got = new Map<number, StatusPacket>();
      const replyBytes = expect.length * this.codec.statusSize(dataLength ?? 0);
      const sent = this.send(packet);
      const waitMs =
        this.wireMs(sent + replyBytes) +
        (expect.length * this.opts.returnDelayUs) / 1000 +
        this.opts.timeoutMarginMs;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => finish(), waitMs);
        const finish = (): void => {
          clearTimeout(timer);
          this.waiting = null;
          resolve();
        };
        this.waiting = { expect: new Set(expect), got, dataLength, done: finish };
      });
      const missing = expect.length - got.size;
      this.stats.missingStatus += missing;
      return got;
    });
  }

  private send(packet: { id: number; instruction: number; params: Uint8Array }): number {
    const bytes = this.codec.encodeInstruction(packet);
    this.stats.instructions++;
    this.stats.bytesOut += bytes.length;
    this.port!.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    return bytes.length;
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private requireUp(): void {
    if (this.state !== 'up' || !this.port) {
      throw new BusTransactionError(
        'link-down',
        [],
        `servo bus ${this.path} is ${this.state === 'closed' ? 'closed' : 'disconnected'}`,
        'plug the adapter back in; the bus reopens by itself',
      );
    }
  }

  private onStatus(p: StatusPacket): void {
    this.stats.statusPackets++;
    if (p.error !== 0) this.stats.statusErrors++;
    const w = this.waiting;
    if (!w || !w.expect.has(p.id)) {
      this.stats.unexpectedStatus++;
      return;
    }
    if (w.got.has(p.id)) {
      this.stats.duplicateStatus++;
      return;
    }
    if (w.dataLength !== null && p.params.length !== w.dataLength) {
      // The answer to some other request (a late one): not ours.
      this.stats.unexpectedStatus++;
      return;
    }
    w.got.set(p.id, p);
    if (w.got.size === w.expect.size) w.done();
  }

  private attach(port: SerialPort): void {
    this.port = port;
    this.decoder.reset();
    this.state = 'up';
    this.lastRxMs = performance.now();
    port.on('data', (chunk: Buffer) => {
      if (this.port !== port) return;
      this.lastRxMs = performance.now();
      this.stats.bytesIn += chunk.length;
      this.decoder.push(chunk, (p) => this.onStatus(p));
    });
    port.on('close', () => {
      if (this.port === port) this.markDown('port closed');
    });
    port.on('error', (err: Error) => {
      if (this.port === port) this.markDown(`port error: ${err.message}`);
    });
  }

  /** Declares the link lost (also for a port that stays open but went silent). */
  fail(reason: string): void {
    this.markDown(reason);
  }

  private markDown(reason: string): void {
    if (this.state !== 'up') return;
    this.state = 'down';
    this.stats.linkLosses++;
    const port = this.port;
    this.port = null;
    this.waiting?.done();
    if (port?.isOpen) port.close(() => undefined);
    for (const l of this.downListeners) l(reason);
    if (this.opts.reconnect) this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.state !== 'down') return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      openPort(this.path, this.opts.baudRate).then(
        (port) => {
          if (this.state !== 'down') {
            port.close(() => undefined);
            return;
          }
          this.stats.reconnects++;
          this.backoffMs = this.opts.backoffInitialMs;
          this.attach(port);
          for (const l of this.upListeners) l();
        },
        () => {
          this.backoffMs = Math.min(this.backoffMs * 2, this.opts.backoffMaxMs);
          this.scheduleReconnect();
        },
      );
    }, this.backoffMs);
  }
}

function* range(from: number, to: number): Generator<number> {
  for (let i = from; i < to; i++) yield i;
}
