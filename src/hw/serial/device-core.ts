/**
 * The device side of the protocol in TypeScript: the same state machine and safety rules as the
 * C bridge (firmware-bridge/src/bridge.c), driving a Plant, checked against it by one conformance
 * suite (test/hw-serial-conformance.test.ts). Every COMMAND is checked (dimension, finiteness,
 * sequence) and clamped to the device's own limits; it expires after its validity; a watchdog
 * latches a fault (or holds, in hold mode) when commands stop; an e-stop latch only RESET with a
 * fresh heartbeat clears. Transport-free: bytes in through feed(), out through the write callback.
 */
import type { Plant } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { serializeFrame, wireFromRaw, type Frame } from './frame.js';
import { FrameDecoder, type DropKind } from './frame-decoder.js';
import { decodePayload, encodePayload, messageTypeCode, type Message } from './messages.js';
import {
  ErrorCode,
  FLAG_ACK_REQ,
  HANDSHAKE_VERSION,
  MAX_FW,
  MessageType,
  PROTOCOL_VERSION,
  SUPPORTED_VERSIONS,
  Status,
  WATCHDOG_MAX_MS,
  WATCHDOG_MIN_MS,
  seqNewer,
  stateFits,
  type WatchdogMode,
} from './protocol.js';

export interface DeviceCoreOptions {
  /** Watchdog timeout until a CONFIG changes it, ms (default 200). */
  watchdogMs?: number;
  /** What the watchdog does in a version 2 session (default 'latch'; version 1 always latches). */
  watchdogMode?: WatchdogMode;
  /** Highest protocol version served (default 2); 1 behaves like a version 1-only firmware. */
  maxVersion?: number;
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

/** What a device accepts after the ESTOP/HELLO checks; HOLD from version 2. */
const acceptedTypes: ReadonlySet<number> = new Set([
  MessageType.Command,
  MessageType.Config,
  MessageType.Heartbeat,
  MessageType.Reset,
  MessageType.Hold,
]);

export class DeviceCore {
  private readonly decoder = new FrameDecoder();
  private readonly dim: number;
  private readonly rateHz: number;
  private readonly factoryLow: Float32Array;
  private readonly factoryHigh: Float32Array;
  private readonly safe: Float32Array;
  /** Versions this implementation speaks (a pre-negotiation HEARTBEAT may carry any of them). */
  private readonly spoken: readonly number[];
  /** Versions offered in negotiation: those this device's STATE fits in, highest first. */
  private readonly versions: readonly number[];
  private readonly watchdogMode: WatchdogMode;
  private low: Float32Array;
  private high: Float32Array;
  private outputs: Float32Array;
  private watchdogMs: number;
  private version = 1;
  private negotiated = false;
  private haveCmdSeq = false;
  private lastCmdSeq = 0;
  private watchdogArmed = false;
  private lastCmdUs = 0;
  private expiresUs = 0;
  private haveHeartbeat = false;
  private lastHeartbeatUs = 0;
  private txSeq = 0;
  /** An event STATE is owed at the next tick. */
  private stateDue = false;
  /** Periodic STATEs fall on a grid: slot k is due at anchor + floor(k * 1e6 / rateHz) µs. */
  private gridAnchorUs = 0;
  private gridK = 0;
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
    this.rateHz = c.rateHz;
    const watchdogMs = options.watchdogMs ?? 200;
    const maxVersion = options.maxVersion ?? PROTOCOL_VERSION;
    const problem = validateCapabilities(plant, watchdogMs, maxVersion);
    if (problem)
      throw new ResrtError(
        `cannot serve this plant over serial: ${problem}`,
        'see docs/serial-protocol.md, "Limits"',
      );
    this.spoken = SUPPORTED_VERSIONS.filter((v) => v <= maxVersion);
    this.versions = this.spoken.filter((v) => stateFits(v, c.jointCount, c.sensorCount, c.actionDim));
    this.watchdogMode = options.watchdogMode ?? 'latch';
    this.factoryLow = Float32Array.from(c.actionLow);
    this.factoryHigh = Float32Array.from(c.actionHigh);
    this.safe = Float32Array.from(c.safeAction);
    this.low = this.factoryLow.slice();
    this.high = this.factoryHigh.slice();
    this.outputs = this.safe.slice();
    this.watchdogMs = watchdogMs;
    this.corruptEvery = options.corruptEvery ?? 0;
    this.firmwareVersion = (options.firmwareVersion ?? c.firmwareVersion ?? 'resrt-ts').slice(0, MAX_FW);
    this.holdSafe(0);
    this.stateDue = false;
  }

  feed(chunk: Uint8Array): void {
    this.decoder.push(
      chunk,
      (frame) => this.onFrame(frame),
      (kind: DropKind) => this.nack(0, 0, kind === 'crc' ? ErrorCode.BadCrc : ErrorCode.BadLength, 0),
    );
  }

  /** Watchdog, command expiry and the STATE schedule; call at least at nextDeadlineUs(). */
  tick(): void {
    const now = this.now();
    if (this.watchdogArmed && now - this.lastCmdUs > this.watchdogMs * 1000) {
      this.watchdogArmed = false;
      this.counters.watchdogTrips++;
      // Hold mode exists from version 2; a version 1 session always latches.
      const hold = this.watchdogMode === 'hold' && this.version >= 2;
      this.holdSafe(hold ? Status.WatchdogHold : Status.Watchdog);
    }
    if (this.expiresUs !== 0 && now > this.expiresUs) this.holdSafe(Status.Expired);
    if (this.negotiated) {
      const periodic = now >= this.gridSlot(this.gridK);
      if (this.stateDue || periodic) {
        this.sendState(now);
        this.stateDue = false;
        if (periodic) this.gridAdvance(now);
      }
    }
  }

  nextDeadlineUs(): number {
    let d = Infinity;
    if (this.negotiated) d = this.stateDue ? 0 : this.gridSlot(this.gridK);
    if (this.watchdogArmed) d = Math.min(d, this.lastCmdUs + this.watchdogMs * 1000 + 1);
    if (this.expiresUs !== 0) d = Math.min(d, this.expiresUs + 1);
    return d;
  }

  /** Integer µs, like a firmware's clock: the grid and the timeouts compare whole microseconds. */
  private now(): number {
    return Math.floor(this.io.nowUs());
  }

  private gridSlot(k: number): number {
    return this.gridAnchorUs + Math.floor((k * 1e6) / this.rateHz);
  }

  /** To the first slot after now; after a stall the missed slots are skipped, not sent in a burst. */
  private gridAdvance(now: number): void {
    let k = now > this.gridAnchorUs ? Math.floor(((now - this.gridAnchorUs) * this.rateHz) / 1e6) : 0;
    // One second is exactly rateHz slots: move the anchor by whole seconds to keep k small.
    this.gridAnchorUs += Math.floor(k / this.rateHz) * 1e6;
    k %= this.rateHz;
    this.gridK = k + 1;
    while (this.gridSlot(this.gridK) <= now) this.gridK++;
  }

  private txVersion(): number {
    return this.negotiated ? this.version : HANDSHAKE_VERSION;
  }

  private send(message: Message, flags = 0): void {
    const version = this.txVersion();
    const raw = serializeFrame({
      version,
      type: messageTypeCode(message),
      seq: this.txSeq,
      flags,
      payload: encodePayload(message, version),
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

  /** Outputs to the safe action; an event STATE reports it. `cause` is the status bit that says why. */
  private holdSafe(cause: number): void {
    this.outputs = this.safe.slice();
    this.plant.hold();
    this.status |= Status.SafeHold | cause;
    this.expiresUs = 0;
    this.stateDue = true;
  }

  /** Safe action now, watchdog disarmed until the next applied COMMAND: the state after boot. */
  private enterHold(): void {
    this.watchdogArmed = false;
    this.status &= ~(Status.Expired | Status.WatchdogHold);
    this.holdSafe(0);
  }

  private sendState(now: number): void {
    const s = this.plant.sample();
    this.send({
      type: 'state',
      deviceTimeUs: now,
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
    const now = this.now();
    this.counters.rxFrames++;
    // E-stop is honoured before any session or version check; HELLO is read in every version.
    if (f.type === MessageType.Estop) return this.onEstop(f);
    if (f.type === MessageType.Hello) return this.onHello(f, now);
    if (!this.negotiated) {
      if (f.type !== MessageType.Heartbeat) return this.nack(f.type, f.seq, ErrorCode.NotNegotiated, 0);
      if (!this.spoken.includes(f.version))
        return this.nack(f.type, f.seq, ErrorCode.BadVersion, this.versions[0]);
    } else if (f.version !== this.version) {
      return this.nack(f.type, f.seq, ErrorCode.BadVersion, this.version);
    }
    if (!acceptedTypes.has(f.type) || (f.type === MessageType.Hold && this.version < 2))
      return this.nack(f.type, f.seq, ErrorCode.UnknownType, 0);
    const d = decodePayload(f.type, f.payload, this.version);
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
        return this.send({ type: 'heartbeat', timeUs: now >>> 0, echoUs: m.timeUs });
      case 'reset':
        return this.onReset(f, now);
      case 'hold':
        this.enterHold();
        return this.ack(f);
      default:
        return this.nack(f.type, f.seq, ErrorCode.UnknownType, 0);
    }
  }

  private onHello(f: Frame, now: number): void {
    const d = decodePayload(f.type, f.payload, this.version);
    if (!d.ok || d.message.type !== 'hello')
      return this.nack(f.type, f.seq, d.ok ? ErrorCode.BadLength : d.error, 0);
    const common = d.message.versions.filter((v) => this.versions.includes(v));
    if (common.length === 0) return this.nack(f.type, f.seq, ErrorCode.BadVersion, this.versions[0]);
    this.version = Math.max(...common);
    this.negotiated = true;
    this.status |= Status.Negotiated;
    // A new session numbers its commands afresh; the watchdog and latches carry over.
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
      watchdogMode: this.watchdogMode,
      name: c.name,
      firmwareVersion: this.firmwareVersion,
      low: this.low,
      high: this.high,
      safe: this.safe,
    });
    this.stateDue = false;
    this.gridAnchorUs = now;
    this.gridK = 0;
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
    this.status &= ~(Status.SafeHold | Status.Expired | Status.Clamped | Status.WatchdogHold);
    if (clamped) {
      this.status |= Status.Clamped;
      this.counters.commandsClamped++;
    }
    this.counters.commandsApplied++;
    this.ack(f);
    // One STATE per applied COMMAND, before the next frame is read: the host sees every applied
    // seq. It restarts the grid, so a command stream at rateHz does not double the traffic.
    this.sendState(now);
    this.stateDue = false;
    this.gridAnchorUs = now;
    this.gridK = 1;
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
    // New limits bind at once: a command being held is clamped again (the safe action is not).
    if (!(this.status & Status.SafeHold)) {
      let changed = false;
      const out = this.outputs.slice();
      for (let i = 0; i < this.dim; i++) {
        const v = Math.min(this.high[i], Math.max(this.low[i], out[i]));
        if (v !== out[i]) {
          out[i] = v;
          changed = true;
        }
      }
      if (changed) {
        this.outputs = out;
        this.plant.command(out.slice());
        this.status |= Status.Clamped;
        this.stateDue = true;
      }
    }
    this.ack(f);
  }

  private onEstop(f: Frame): void {
    // Latched whatever the payload: the reason is informational, and a malformed one must not stop
    // the stop. The ACK means "latched", so the host stops repeating it.
    this.status |= Status.Estop;
    this.watchdogArmed = false;
    this.holdSafe(0);
    this.ack(f);
  }

  private onReset(f: Frame, now: number): void {
    if (!this.haveHeartbeat || now - this.lastHeartbeatUs > this.watchdogMs * 1000) {
      return this.nack(f.type, f.seq, ErrorCode.StaleHeartbeat, 0);
    }
    this.status &= ~(Status.Estop | Status.Watchdog);
    this.enterHold();
    this.ack(f);
  }
}

/** Why a plant cannot be served over the protocol (up to maxVersion), or null when it can. */
export function validateCapabilities(
  plant: Plant,
  watchdogMs: number,
  maxVersion = PROTOCOL_VERSION,
): string | null {
  const c = plant.capabilities;
  if (!Number.isInteger(c.actionDim) || c.actionDim < 1) return `actionDim must be >= 1, got ${c.actionDim}`;
  if (
    !SUPPORTED_VERSIONS.some((v) => v <= maxVersion && stateFits(v, c.jointCount, c.sensorCount, c.actionDim))
  ) {
    return (
      `${c.jointCount} joints, ${c.sensorCount} sensors and ${c.actionDim} actions do not fit in one STATE frame ` +
      (maxVersion >= 2
        ? '(protocol version 2 carries at most 64 of each)'
        : '(protocol version 1 carries at most 16 of each and 12*joints + 4*sensors + 4*actions <= 234; version 2 carries 64 of each)')
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
