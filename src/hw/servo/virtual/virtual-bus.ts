/**
 * A virtual servo bus behind a pseudo-terminal: emulated servos (and other bus devices) answer
 * instruction packets as real ones do — status packets after each servo's return delay, sync read
 * answers in the order asked, error bits, colliding answers when two devices share an id — with an
 * optional rate of dropped or corrupted status packets. The host side (`hostPath`) is opened like a
 * USB adapter: `feetech:<hostPath>` or `dynamixel:<hostPath>`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SerialPort } from 'serialport';
import { ResrtError } from '../../../util/errors.js';
import { Rng } from '../../../util/rng.js';
import { codecFor } from '../bus.js';
import {
  BROADCAST_ID,
  Instruction,
  readField,
  type InstructionPacket,
  type PacketCodec,
  type ProtocolName,
} from '../packet.js';
import { DxlError } from './emulated-servo.js';
import { createPtyPair, type PtyPair } from './pty-pair.js';

/** Anything that sits on the bus at an id and has a control table. */
export interface BusDevice {
  readonly id: number;
  readonly model: { protocol: ProtocolName; modelNumber: number };
  readonly returnDelayUs: number;
  /** Answers writes (status return level), not just reads and pings. */
  readonly answersWrites: boolean;
  read(address: number, length: number): { error: number; data: Uint8Array };
  /** Applies a write; returns the error byte of its status packet. */
  write(address: number, data: Uint8Array): number;
  statusError(): number;
}

export interface VirtualServoBusOptions {
  protocol: ProtocolName;
  devices: BusDevice[];
  /** Folder for the pty links (default: a new temporary folder, removed at close). */
  dir?: string;
  /** Probability that a status packet is not sent (a "no status packet" in the field). */
  dropRate?: number;
  /** Probability that a status packet arrives with one byte flipped (a checksum error). */
  corruptRate?: number;
  seed?: number;
  /** Called before each instruction is handled (the physics catches up to now). */
  beforeInstruction?: () => void;
  /** Called after each instruction is applied, before its answers go out. */
  afterInstruction?: (p: InstructionPacket) => void;
}

export interface VirtualBusCounters {
  instructions: number;
  statusSent: number;
  dropped: number;
  corrupted: number;
  collisions: number;
  /** Instruction packets that failed their checksum/CRC. */
  badInstructions: number;
}

export class VirtualServoBus {
  readonly codec: PacketCodec;
  private port: SerialPort | null = null;
  private readonly decoder;
  private readonly rng: Rng;
  private readonly stats = { instructions: 0, statusSent: 0, dropped: 0, corrupted: 0, collisions: 0 };
  private closed = false;
  dropRate: number;
  corruptRate: number;

  private constructor(
    private readonly pty: PtyPair,
    private readonly ownDir: string | null,
    readonly devices: BusDevice[],
    private readonly options: VirtualServoBusOptions,
  ) {
    this.codec = codecFor(options.protocol);
    this.decoder = this.codec.instructionDecoder();
    this.rng = new Rng(options.seed ?? 0);
    this.dropRate = options.dropRate ?? 0;
    this.corruptRate = options.corruptRate ?? 0;
    for (const d of devices) {
      if (d.model.protocol !== options.protocol) {
        throw new ResrtError(
          `device ${d.id} speaks ${d.model.protocol}, the bus ${options.protocol}`,
          'put Feetech and Dynamixel servos on separate buses',
        );
      }
    }
  }

  static async start(options: VirtualServoBusOptions): Promise<VirtualServoBus> {
    const ownDir = options.dir === undefined ? mkdtempSync(join(tmpdir(), 'resrt-servo-bus-')) : null;
    const pty = await createPtyPair(options.dir ?? ownDir!);
    const bus = new VirtualServoBus(pty, ownDir, options.devices, options);
    try {
      await bus.openDevice();
    } catch (err) {
      await pty.stop();
      if (ownDir) rmSync(ownDir, { recursive: true, force: true });
      throw err;
    }
    return bus;
  }

  /** What the host opens. */
  get hostPath(): string {
    return this.pty.hostPath;
  }

  /** `feetech:<hostPath>` or `dynamixel:<hostPath>`. */
  get robotUrl(): string {
    return `${this.options.protocol}:${this.pty.hostPath}`;
  }

  counters(): VirtualBusCounters {
    return { ...this.stats, badInstructions: this.decoder.counters.checksumErrors };
  }

  /** The adapter is pulled out: the host's port dies. */
  async unplug(): Promise<void> {
    await this.closeDevice();
    await this.pty.stop();
  }

  /** The adapter is plugged back in at the same path. */
  async replug(): Promise<void> {
    await this.pty.start();
    await this.openDevice();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.closeDevice();
    await this.pty.stop();
    if (this.ownDir) rmSync(this.ownDir, { recursive: true, force: true });
  }

  private async openDevice(): Promise<void> {
    const port = new SerialPort({ path: this.pty.devicePath, baudRate: 1_000_000, autoOpen: false });
    await new Promise<void>((resolve, reject) =>
      port.open((err) =>
        err
          ? reject(
              new ResrtError(
                `cannot open the bus side ${this.pty.devicePath}: ${err.message}`,
                'check the folder',
              ),
            )
          : resolve(),
      ),
    );
    this.decoder.reset();
    port.on('data', (chunk: Buffer) => {
      if (this.port !== port) return;
      this.decoder.push(chunk, (p) => this.handle(p));
    });
    port.on('error', () => undefined);
    this.port = port;
  }

  private async closeDevice(): Promise<void> {
    const port = this.port;
    this.port = null;
    if (port?.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
  }

  private at(id: number): BusDevice[] {
    return this.devices.filter((d) => d.id === id);
  }

  private handle(p: InstructionPacket): void {
    this.stats.instructions++;
    this.options.beforeInstruction?.();
    const f = this.codec.fieldBytes;
    const replies: { delayUs: number; bytes: Uint8Array }[] = [];
    const answer = (
      targets: BusDevice[],
      make: (d: BusDevice) => { error: number; params: Uint8Array },
    ): void => {
      if (targets.length === 0) return;
      const packets = targets.map((d) => this.codec.encodeStatus({ id: d.id, ...make(d) }));
      replies.push({
        delayUs: Math.max(...targets.map((d) => d.returnDelayUs)),
        bytes: this.collide(packets),
      });
    };
    const unicast = p.id !== BROADCAST_ID;
    switch (p.instruction) {
      case Instruction.Ping:
        answer(this.at(p.id), (d) => ({
          error: d.statusError(),
          // Protocol 2.0 PING answers with the model number and firmware version; Feetech with nothing.
          params:
            this.options.protocol === 'dynamixel'
              ? Uint8Array.from([d.model.modelNumber & 0xff, d.model.modelNumber >> 8, 1])
              : new Uint8Array(0),
        }));
        break;
      case Instruction.Read: {
        if (!unicast || p.params.length !== 2 * f) break;
        const address = readField(p.params, 0, f);
        const length = readField(p.params, f, f);
        answer(this.at(p.id), (d) => {
          const r = d.read(address, length);
          return { error: r.error, params: r.data };
        });
        break;
      }
      case Instruction.Write: {
        if (p.params.length <= f) break;
        const address = readField(p.params, 0, f);
        const data = p.params.subarray(f);
        const targets = unicast ? this.at(p.id) : this.devices;
        const errors = new Map(targets.map((d) => [d, d.write(address, data)]));
        if (unicast)
          answer(
            targets.filter((d) => d.answersWrites),
            (d) => ({ error: errors.get(d)!, params: new Uint8Array(0) }),
          );
        break;
      }
      case Instruction.SyncRead: {
        if (p.params.length < 2 * f) break;
        const address = readField(p.params, 0, f);
        const length = readField(p.params, f, f);
        for (const id of p.params.subarray(2 * f)) {
          answer(this.at(id), (d) => {
            const r = d.read(address, length);
            return { error: r.error, params: r.data };
          });
        }
        break;
      }
      case Instruction.SyncWrite: {
        if (p.params.length < 2 * f) break;
        const address = readField(p.params, 0, f);
        const length = readField(p.params, f, f);
        const body = p.params.subarray(2 * f);
        for (let k = 0; k + 1 + length <= body.length; k += 1 + length) {
          const data = body.slice(k + 1, k + 1 + length);
          for (const d of this.at(body[k])) d.write(address, data);
        }
        break;
      }
      default:
        if (unicast && this.options.protocol === 'dynamixel') {
          answer(this.at(p.id), () => ({ error: DxlError.InstructionError, params: new Uint8Array(0) }));
        }
    }
    this.options.afterInstruction?.(p);
    this.send(replies);
  }

  /**
   * Two devices answering at once: their transmitters never start on the same bit, and on a shared
   * line a 0 from either wins; modelled as each later answer starting one byte time later.
   */
  private collide(packets: Uint8Array[]): Uint8Array {
    if (packets.length === 1) return packets[0];
    this.stats.collisions++;
    const out = new Uint8Array(Math.max(...packets.map((p, k) => p.length + k))).fill(0xff);
    packets.forEach((p, k) => {
      for (let i = 0; i < p.length; i++) out[i + k] &= p[i];
    });
    return out;
  }

  private send(replies: { delayUs: number; bytes: Uint8Array }[]): void {
    const port = this.port;
    if (!port || replies.length === 0) return;
    let delayUs = 0;
    const chunks: { atUs: number; bytes: Uint8Array }[] = [];
    for (const r of replies) {
      delayUs += r.delayUs;
      if (this.dropRate > 0 && this.rng.uniform() < this.dropRate) {
        this.stats.dropped++;
        continue;
      }
      let bytes = r.bytes;
      if (this.corruptRate > 0 && this.rng.uniform() < this.corruptRate) {
        bytes = Uint8Array.from(bytes);
        // Flip a byte past the header, so the packet frames but fails its check.
        const i = Math.min(bytes.length - 1, 4 + this.rng.int(Math.max(1, bytes.length - 5)));
        bytes[i] ^= 0x5a;
        this.stats.corrupted++;
      }
      this.stats.statusSent++;
      chunks.push({ atUs: delayUs, bytes });
    }
    // Answers with no return delay go out together; delayed ones after their delay.
    const groups = new Map<number, Uint8Array[]>();
    for (const c of chunks) {
      const ms = Math.floor(c.atUs / 1000);
      (groups.get(ms) ?? groups.set(ms, []).get(ms)!).push(c.bytes);
    }
    for (const [ms, parts] of groups) {
      const data = Buffer.concat(parts);
      if (ms === 0) port.write(data);
      else setTimeout(() => this.port === port && port.write(data), ms);
    }
  }
}
