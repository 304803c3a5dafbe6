/**
 * The device side of the protocol in TypeScript: the same state machine and safety rules as the
 * C bridge (firmware-bridge/src/bridge.c), driving a Plant. Every COMMAND is checked (dimension,
 * finiteness, sequence) and clamped to the device's own limits; it expires after its validity;
 * a watchdog latches a fault when commands stop; an e-stop latch only RESET with a fresh heartbeat
 * clears. Transport-free: bytes in through feed(), out through the write callback.
 */
import type { Plant } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { serializeFrame, wireFromRaw } from './frame.js';
import { FrameDecoder } from './frame-decoder.js';
import { decodePayload, encodePayload, messageTypeCode, type Message } from './messages.js';
import type { Frame } from './frame.js';
import {
  ErrorCode,
  FLAG_ACK_REQ,
  MAX_DIM,
  MAX_FW,
  MAX_JOINTS,
  MAX_SENSORS,
  MessageType,
  PROTOCOL_VERSION,
  SUPPORTED_VERSIONS,
  Status,
  WATCHDOG_MAX_MS,
  WATCHDOG_MIN_MS,
  seqNewer,
  stateFits,
} from './protocol.js';

export interface DeviceCoreOptions {
  /** Watchdog timeout until a CONFIG changes it, ms (default 200). */
  watchdogMs?: number;
  /** Fault injection: corrupt one byte of every nth outgoing frame after its CRC. */
  corruptEvery?: number;
  firmwareVersion?: string;
}

export interface DeviceCoreIo {
  write(bytes: Uint8Array): void;
  /** Monotonic microseconds. */
  nowUs(): number;
}

export interface DeviceCounters {
  rxFrames: number;
  txFrames: number;
  txCorrupted: number;
  nacksSent: number;
  commandsApplied: number;
  commandsClamped: number;
  watchdogTrips: number;
}

export class DeviceCore {
  private readonly decoder = new FrameDecoder();
  private readonly dim: number;
  private readonly factoryLow: Float32Array;
  private readonly factoryHigh: Float32Array;
  private readonly safe: Float32Array;
  private low: Float32Array;
  private high: Float32Array;
  private outputs: Float32Array;
  private watchdogMs: number;
  private version: number = PROTOCOL_VERSION;
  private negotiated = false;
  private haveCmdSeq = false;
  private lastCmdSeq = 0;
  private watchdogArmed = false;
  private lastCmdUs = 0;
  private expiresUs = 0;
  private haveHeartbeat = false;
  private lastHeartbeatUs = 0;
  private txSeq = 0;
  private stateDue = false;
  private nextStateUs = 0;
  private txCount = 0;
  private readonly corruptEvery: number;
  private readonly firmwareVersion: string;
  status = Status.SafeHold as number;
  readonly counters: DeviceCounters = {
    rxFrames: 0,
    txFrames: 0,
    txCorrupted: 0,
    nacksSent: 0,
    commandsApplied: 0,
    commandsClamped: 0,
    watchdogTrips: 0,
  };

  constructor(
    private readonly plant: Plant,
    private readonly io: DeviceCoreIo,
    options: DeviceCoreOptions = {},
  ) {
    const c = plant.capabilities;
    this.dim = c.actionDim;
    const watchdogMs = options.watchdogMs ?? 200;
    const problem = validateCapabilities(plant, watchdogMs);
    if (problem)
      throw new ResrtError(
        `cannot serve this plant over serial: ${problem}`,
        'see docs/serial-protocol.md, "Limits"',
      );
    this.factoryLow = Float32Array.from(c.actionLow);
    this.factoryHigh = Float32Array.from(c.actionHigh);
    this.safe = Float32Array.from(c.safeAction);
    this.low = this.factoryLow.slice();
    this.high = this.factoryHigh.slice();
    this.outputs = this.safe.slice();
    this.watchdogMs = watchdogMs;
    this.corruptEvery = options.corruptEvery ?? 0;
    this.firmwareVersion = (options.firmwareVersion ?? c.firmwareVersion ?? 'resrt-ts').slice(0, MAX_FW);
    this.holdSafe();
    this.stateDue = false;
  }

  feed(chunk: Uint8Array): void {
    this.decoder.push(chunk, (frame) => this.onFrame(frame));
    const d = this.decoder.counters;
    // The decoder only counts: answer each kind of bad frame like the C bridge does.
    const crc = d.crcErrors - this.seenCrc;
    const other = d.cobsErrors + d.lengthErrors + d.oversize - this.seenOther;
    this.seenCrc = d.crcErrors;
    this.seenOther = d.cobsErrors + d.lengthErrors + d.oversize;
    for (let i = 0; i < crc; i++) this.nack(0, 0, ErrorCode.BadCrc, 0);
    for (let i = 0; i < other; i++) this.nack(0, 0, ErrorCode.BadLength, 0);
  }
  private seenCrc = 0;
  private seenOther = 0;

  /** Watchdog, command expiry and the STATE schedule; call at least at nextDeadlineUs(). */
  tick(): void {
    const now = this.io.nowUs();
    if (
      this.watchdogArmed &&
      !(this.status & Status.Watchdog) &&
      now - this.lastCmdUs > this.watchdogMs * 1000
    ) {
      this.status |= Status.Watchdog;
      this.watchdogArmed = false;
      this.counters.watchdogTrips++;
      this.holdSafe();
    }
    if (this.expiresUs !== 0 && now > this.expiresUs) {
      this.status |= Status.Expired;
      this.holdSafe();
    }
    if (this.negotiated && (this.stateDue || now >= this.nextStateUs)) {
      this.sendState();
      this.stateDue = false;
      this.nextStateUs = now + 1e6 / this.plant.capabilities.rateHz;
    }
  }

  nextDeadlineUs(): number {
    let d = Infinity;
    if (this.negotiated) d = this.stateDue ? 0 : this.nextStateUs;
    if (this.watchdogArmed && !(this.status & Status.Watchdog))
      d = Math.min(d, this.lastCmdUs + this.watchdogMs * 1000 + 1);
    if (this.expiresUs !== 0) d = Math.min(d, this.expiresUs + 1);
    return d;
  }

  private send(message: Message, flags = 0): void {
    const raw = serializeFrame({
      version: this.negotiated ? this.version : PROTOCOL_VERSION,
      type: messageTypeCode(message),
      seq: this.txSeq,
      flags,
      payload: encodePayload(message),
    });
    this.txSeq = (this.txSeq + 1) & 0xffff;
    this.txCount++;
    if (this.corruptEvery > 0 && this.txCount % this.corruptEvery === 0) {
      raw[raw.length >> 1] ^= 0x5a;
      this.counters.txCorrupted++;
    }
    this.io.write(wireFromRaw(raw));
    this.counters.txFrames++;
  }

  private ack(req: Frame): void {
    if (req.flags & FLAG_ACK_REQ) this.send({ type: 'ack', ackedType: req.type, ackedSeq: req.seq });
  }

  private nack(type: number, seq: number, error: number, detail: number): void {
    this.send({ type: 'nack', nackedType: type, nackedSeq: seq, error, detail });
    this.counters.nacksSent++;
  }

  private holdSafe(): void {
    this.outputs = this.safe.slice();
    this.plant.hold();
    this.status |= Status.SafeHold;
    this.expiresUs = 0;
    this.stateDue = true;
  }

  private sendState(): void {
    const s = this.plant.sample();
    this.send({
      type: 'state',
      deviceTimeUs: s.deviceTimeUs,
      status: this.status,
      lastCommandSeq: this.lastCmdSeq,
      positions: s.positions,
      velocities: s.velocities,
      efforts: s.efforts,
      sensors: s.sensors,
      outputs: this.outputs,
    });
  }

  private onFrame(f: Frame): void {
    const now = this.io.nowUs();
    this.counters.rxFrames++;
    if (f.type === MessageType.Estop) return this.onEstop(f);
    if (f.type === MessageType.Hello) return this.onHello(f, now);
    if (!this.negotiated && f.type !== MessageType.Heartbeat)
      return this.nack(f.type, f.seq, ErrorCode.NotNegotiated, 0);
    const v = this.negotiated ? this.version : PROTOCOL_VERSION;
    if (f.version !== v) return this.nack(f.type, f.seq, ErrorCode.BadVersion, v);
    const d = decodePayload(f.type, f.payload);
    if (!d.ok) {
      const withDim = f.type === MessageType.Command || f.type === MessageType.Config;
      return this.nack(f.type, f.seq, d.error, withDim ? this.dim : 0);
    }
    const m = d.message;
    switch (m.type) {
      case 'command':
        return this.onCommand(f, m.action, m.validityMs, now);
      case 'config':
        return this.onConfig(f, m.watchdogMs, m.low, m.high);
      case 'heartbeat':
        this.haveHeartbeat = true;
        this.lastHeartbeatUs = now;
        return this.send({ type: 'heartbeat', timeUs: Math.floor(now) >>> 0, echoUs: m.timeUs });
      case 'reset':
        return this.onReset(f, now);
      default:
        return this.nack(f.type, f.seq, ErrorCode.UnknownType, 0);
    }
  }

  private onHello(f: Frame, now: number): void {
    const d = decodePayload(f.type, f.payload);
    if (!d.ok || d.message.type !== 'hello')
      return this.nack(f.type, f.seq, d.ok ? ErrorCode.BadLength : d.error, 0);
    const common = d.message.versions.filter((v) => SUPPORTED_VERSIONS.includes(v));
    if (common.length === 0)
      return this.nack(f.type, f.seq, ErrorCode.BadVersion, Math.max(...SUPPORTED_VERSIONS));
    this.version = Math.max(...common);
    this.negotiated = true;
    this.status |= Status.Negotiated;
    this.haveCmdSeq = false;
    const c = this.plant.capabilities;
    this.send({
      type: 'capabilities',
      protocolVersion: this.version,
      actionDim: this.dim,
      jointCount: c.jointCount,
      sensorCount: c.sensorCount,
      rateHz: c.rateHz,
      watchdogMs: this.watchdogMs,
      name: c.name,
      firmwareVersion: this.firmwareVersion,
      low: this.low,
      high: this.high,
      safe: this.safe,
    });
    this.stateDue = true;
    this.nextStateUs = now;
  }

  private onCommand(f: Frame, action: Float32Array, validityMs: number, now: number): void {
    if (action.length !== this.dim) return this.nack(f.type, f.seq, ErrorCode.WrongDimension, this.dim);
    const bad = action.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) return this.nack(f.type, f.seq, ErrorCode.NonFinite, bad);
    if (this.haveCmdSeq && !seqNewer(f.seq, this.lastCmdSeq))
      return this.nack(f.type, f.seq, ErrorCode.StaleSequence, this.lastCmdSeq);
    if (this.status & Status.Estop) return this.nack(f.type, f.seq, ErrorCode.Estopped, 0);
    if (this.status & Status.Watchdog) return this.nack(f.type, f.seq, ErrorCode.Faulted, 0);
    let clamped = false;
    const out = new Float32Array(this.dim);
    for (let i = 0; i < this.dim; i++) {
      let v = action[i];
      if (v < this.low[i]) {
        v = this.low[i];
        clamped = true;
      } else if (v > this.high[i]) {
        v = this.high[i];
        clamped = true;
      }
      out[i] = v;
    }
    this.outputs = out;
    this.plant.command(out.slice());
    this.haveCmdSeq = true;
    this.lastCmdSeq = f.seq;
    this.lastCmdUs = now;
    this.watchdogArmed = true;
    this.expiresUs = validityMs ? now + validityMs * 1000 : 0;
    this.status &= ~(Status.SafeHold | Status.Expired | Status.Clamped);
    if (clamped) {
      this.status |= Status.Clamped;
      this.counters.commandsClamped++;
    }
    this.counters.commandsApplied++;
    this.stateDue = true;
    this.ack(f);
  }

  private onConfig(f: Frame, watchdogMs: number, low: Float32Array, high: Float32Array): void {
    if (low.length !== this.dim) return this.nack(f.type, f.seq, ErrorCode.WrongDimension, this.dim);
    let ok = watchdogMs >= WATCHDOG_MIN_MS && watchdogMs <= WATCHDOG_MAX_MS;
    for (let i = 0; i < this.dim && ok; i++) {
      ok =
        Number.isFinite(low[i]) &&
        Number.isFinite(high[i]) &&
        low[i] <= high[i] &&
        low[i] >= this.factoryLow[i] &&
        high[i] <= this.factoryHigh[i];
    }
    if (!ok) return this.nack(f.type, f.seq, ErrorCode.BadConfig, 0);
    this.low = low.slice();
    this.high = high.slice();
    this.watchdogMs = watchdogMs;
    this.ack(f);
  }

  private onEstop(f: Frame): void {
    // Latch first: a malformed reason must not stop the stop.
    const d = decodePayload(f.type, f.payload);
    this.status |= Status.Estop;
    this.watchdogArmed = false;
    this.holdSafe();
    if (d.ok) this.ack(f);
    else this.nack(f.type, f.seq, d.error, 0);
  }

  private onReset(f: Frame, now: number): void {
    if (!this.haveHeartbeat || now - this.lastHeartbeatUs > this.watchdogMs * 1000) {
      return this.nack(f.type, f.seq, ErrorCode.StaleHeartbeat, 0);
    }
    this.status &= ~(Status.Estop | Status.Watchdog);
    this.watchdogArmed = false;
    this.stateDue = true;
    this.ack(f);
  }
}

/** Why a plant cannot be served over the protocol, or null when it can. */
export function validateCapabilities(plant: Plant, watchdogMs: number): string | null {
  const c = plant.capabilities;
  if (!Number.isInteger(c.actionDim) || c.actionDim < 1) return `actionDim must be >= 1, got ${c.actionDim}`;
  if (!stateFits(c.jointCount, c.sensorCount, c.actionDim)) {
    return (
      `${c.jointCount} joints, ${c.sensorCount} sensors and ${c.actionDim} actions do not fit in one STATE frame ` +
      `(at most ${MAX_JOINTS} joints, ${MAX_SENSORS} sensors and ${MAX_DIM} actions, and 12*joints + 4*sensors + 4*actions <= 234)`
    );
  }
  if (
    c.actionLow.length !== c.actionDim ||
    c.actionHigh.length !== c.actionDim ||
    c.safeAction.length !== c.actionDim
  ) {
    return 'actionLow, actionHigh and safeAction must each have actionDim values';
  }
  for (let i = 0; i < c.actionDim; i++) {
    const lo = c.actionLow[i];
    const hi = c.actionHigh[i];
    const s = c.safeAction[i];
    if (!(lo >= -1 && hi <= 1 && lo <= hi))
      return `limits of dimension ${i} must satisfy -1 <= low <= high <= 1, got [${lo}, ${hi}]`;
    if (!(s >= -1 && s <= 1)) return `safe action ${i} must lie in [-1, 1], got ${s}`;
  }
  if (!Number.isInteger(c.rateHz) || c.rateHz < 1 || c.rateHz > 65535)
    return `rateHz must be an integer in [1, 65535], got ${c.rateHz}`;
  if (!Number.isInteger(watchdogMs) || watchdogMs < WATCHDOG_MIN_MS || watchdogMs > WATCHDOG_MAX_MS) {
    return `watchdogMs must be an integer in [${WATCHDOG_MIN_MS}, ${WATCHDOG_MAX_MS}], got ${watchdogMs}`;
  }
  return null;
}
