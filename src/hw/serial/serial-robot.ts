/**
 * A Robot behind the resrt serial protocol. The device is authoritative for safety (clamp,
 * watchdog, e-stop latch); this side validates before sending, negotiates the protocol version,
 * and reports link loss as status 'lost' (the device's watchdog then holds the safe action).
 */
import { BehaviorSubject, ReplaySubject, Subject, type Observable } from 'rxjs';
import type { LinkStatus, Robot, RobotCapabilities, RobotCommand, RobotState } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import type { Frame } from './frame.js';
import { SerialLink, type LinkCounters, type SerialLinkOptions } from './link.js';
import {
  decodePayload,
  messageTypeCode,
  type CapabilitiesMessage,
  type Message,
  type NackMessage,
  type StateMessage,
} from './messages.js';
import {
  FLAG_ACK_REQ,
  MAX_VERSIONS,
  MessageType,
  Status,
  SUPPORTED_VERSIONS,
  WATCHDOG_MAX_MS,
  WATCHDOG_MIN_MS,
  errorName,
  typeName,
} from './protocol.js';
import type { SerialTransportKind } from './transport.js';

export interface SerialRobotConfig {
  /** Device watchdog timeout, ms; default: keep the device's. */
  watchdogMs?: number;
  /** Narrower command clamp (normalized); must lie within the device's own limits. */
  actionLow?: number[];
  actionHigh?: number[];
}

export interface SerialRobotOptions extends SerialLinkOptions {
  /**
   * How long open() (and each reconnect) waits for CAPABILITIES, ms (default 3000: boards that
   * reset when the port opens, like an Arduino Uno, answer only after their bootloader).
   */
  handshakeTimeoutMs?: number;
  /** Versions offered in HELLO (default: every version this implementation speaks). */
  protocolVersions?: number[];
  /** Sent after every successful handshake. */
  config?: SerialRobotConfig;
  /** How long resetFault()/CONFIG wait for the device's ACK, ms (default 500). */
  ackTimeoutMs?: number;
  /** Names for the action dimensions (the protocol carries none); default a0, a1, ... */
  actionNames?: string[];
}

export interface SerialRobotCapabilities extends RobotCapabilities {
  /** The device's watchdog timeout when the handshake completed, ms. */
  watchdogMs: number;
}

/** RobotState plus what the serial device reports beyond it. */
export interface SerialRobotState extends RobotState {
  /** What the device drives now, after its clamp (its safe action while holding). */
  outputs: Float32Array;
  /** Raw STATE status bits (see Status). */
  status: number;
  /** Sequence number of the last COMMAND the device applied. */
  lastCommandSeq: number;
  estopLatched: boolean;
  watchdogFault: boolean;
  /** Version 2, watchdog mode hold: the watchdog fired and the device holds (nothing latched). */
  watchdogHold: boolean;
  clamped: boolean;
  holdingSafe: boolean;
}

export interface NackEvent {
  /** Type of the rejected frame (0 when the frame itself was unreadable). */
  rejectedType: number;
  rejectedSeq: number;
  error: number;
  errorName: string;
  detail: number;
}

export interface SerialRobotCounters extends LinkCounters {
  statesIn: number;
  /** Device frames never received (gaps in the device's sequence numbers). */
  framesMissed: number;
  /** Verified frames that could not be used (malformed payload, wrong version or shape). */
  dropped: number;
  nacks: number;
  commandsSent: number;
  /** send() calls that returned false. */
  commandsRefused: number;
}

interface Pending {
  type: number;
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

const HELLO_RETRY_MS = 100;

export class SerialRobot implements Robot {
  private readonly stateSubject = new ReplaySubject<SerialRobotState>(1);
  private readonly statusSubject = new BehaviorSubject<LinkStatus>('connecting');
  private readonly nackSubject = new Subject<NackEvent>();
  readonly state$: Observable<SerialRobotState> = this.stateSubject.asObservable();
  readonly status$: Observable<LinkStatus> = this.statusSubject.asObservable();
  /** Every NACK the device sends. */
  readonly nack$: Observable<NackEvent> = this.nackSubject.asObservable();
  private readonly pending = new Map<number, Pending>();
  private lastDeviceSeq = -1;
  private estopReason: string | null = null;
  private estopTimer: NodeJS.Timeout | null = null;
  private latest: SerialRobotState | null = null;
  private lastSentSeq = -1;
  private readonly stats = {
    statesIn: 0,
    framesMissed: 0,
    dropped: 0,
    nacks: 0,
    commandsSent: 0,
    commandsRefused: 0,
  };

  /** The safe hold between episodes (HOLD, protocol version 2); absent on a version 1 device. */
  readonly hold?: () => Promise<void>;

  private constructor(
    private readonly link: SerialLink,
    readonly capabilities: SerialRobotCapabilities,
    private readonly options: SerialRobotOptions,
  ) {
    if ((capabilities.protocolVersion ?? 1) >= 2) this.hold = () => this.request({ type: 'hold' }, 'HOLD');
  }

  /** Opens the port, negotiates the protocol version and reads the device's capabilities. */
  static async open(path: string, options: SerialRobotOptions = {}): Promise<SerialRobot> {
    const versions = options.protocolVersions ?? [...SUPPORTED_VERSIONS];
    if (
      versions.length < 1 ||
      versions.length > MAX_VERSIONS ||
      versions.some((v) => !Number.isInteger(v) || v < 1 || v > 255)
    ) {
      throw new ResrtError(
        `protocolVersions must list 1 to ${MAX_VERSIONS} versions in [1, 255], got [${versions.join(', ')}]`,
        `leave it unset to offer [${SUPPORTED_VERSIONS.join(', ')}]`,
      );
    }
    const link = await SerialLink.open(path, options);
    let caps: CapabilitiesMessage;
    try {
      caps = await SerialRobot.handshake(link, { ...options, protocolVersions: versions });
    } catch (err) {
      await link.close();
      throw err;
    }
    const capabilities = toCapabilities(caps, options.actionNames);
    const robot = new SerialRobot(link, capabilities, { ...options, protocolVersions: versions });
    robot.attach();
    try {
      await robot.applyConfig();
    } catch (err) {
      await robot.close();
      throw err;
    }
    robot.statusSubject.next('connected');
    return robot;
  }

  /** HELLO until CAPABILITIES (or a version NACK) arrives; used before the robot exists. */
  private static handshake(link: SerialLink, options: SerialRobotOptions): Promise<CapabilitiesMessage> {
    const versions = options.protocolVersions ?? [...SUPPORTED_VERSIONS];
    const timeoutMs = options.handshakeTimeoutMs ?? 3000;
    return new Promise((resolve, reject) => {
      let helloSeq = -1;
      const finish = (fn: () => void): void => {
        clearInterval(retry);
        clearTimeout(timeout);
        off();
        offDown();
        link.heartbeatsHeld = false;
        fn();
      };
      // A link that will not reopen by itself fails the handshake at once, with its reason.
      const offDown = link.onDown((reason) => {
        if (options.reconnect === false) {
          finish(() =>
            reject(
              new ResrtError(
                `serial link ${link.path} lost during the handshake: ${reason}`,
                'check the device and the cable, then open it again',
              ),
            ),
          );
        }
      });
      const off = link.onFrame((frame) => {
        if (frame.type === MessageType.Capabilities) {
          const d = decodePayload(frame.type, frame.payload, frame.version);
          if (d.ok && d.message.type === 'capabilities') {
            const caps = d.message;
            if (!versions.includes(caps.protocolVersion)) {
              finish(() =>
                reject(
                  new ResrtError(
                    `device chose protocol version ${caps.protocolVersion}, which was not offered`,
                    'update the device firmware',
                  ),
                ),
              );
              return;
            }
            link.version = caps.protocolVersion;
            finish(() => resolve(caps));
          }
        } else if (frame.type === MessageType.Nack) {
          const d = decodePayload(frame.type, frame.payload, frame.version);
          if (
            d.ok &&
            d.message.type === 'nack' &&
            d.message.nackedType === MessageType.Hello &&
            d.message.nackedSeq === helloSeq
          ) {
            const n = d.message;
            finish(() =>
              reject(
                new ResrtError(
                  `device on ${link.path} rejected HELLO (${errorName(n.error)}): it speaks protocol version ${n.detail}, host offered [${versions.join(', ')}]`,
                  'update the host (resrt) or the device firmware so they share a protocol version',
                ),
              ),
            );
          }
        }
      });
      // Nothing but HELLO until the answer: a frame in the old version could cross the switch.
      link.heartbeatsHeld = true;
      const sendHello = (): void => {
        const seq = link.send({ type: 'hello', versions });
        if (seq !== null) helloSeq = seq;
      };
      const retry = setInterval(sendHello, HELLO_RETRY_MS);
      const timeout = setTimeout(
        () =>
          finish(() =>
            reject(
              new ResrtError(
                `no CAPABILITIES from ${link.path} within ${timeoutMs} ms`,
                'check that the device runs the resrt bridge firmware, the baud rate, and the cable',
              ),
            ),
          ),
        timeoutMs,
      );
      sendHello();
    });
  }

  private attach(): void {
    this.link.onFrame((frame) => this.onFrame(frame));
    this.link.onDown(() => {
      this.failPending(
        new ResrtError('serial link lost', 'check the cable and the device; the link reopens by itself'),
      );
      this.statusSubject.next('lost');
    });
    this.link.onUp(() => void this.renegotiate());
  }

  private async renegotiate(): Promise<void> {
    this.statusSubject.next('connecting');
    this.lastDeviceSeq = -1;
    // An e-stop that could not be delivered goes first: the device honours it before HELLO.
    if (this.estopReason !== null) this.sendEstop();
    try {
      const caps = await SerialRobot.handshake(this.link, this.options);
      // Another shape or version is another device (or firmware): this robot's users cannot follow.
      const same =
        caps.actionDim === this.capabilities.actionDim &&
        caps.jointCount === this.capabilities.jointCount &&
        caps.sensorCount === this.capabilities.sensorCount &&
        caps.protocolVersion === this.capabilities.protocolVersion;
      if (!same) {
        this.statusSubject.next('lost');
        await this.link.close();
        return;
      }
      await this.applyConfig();
      if (this.link.isUp) this.statusSubject.next('connected');
    } catch (err) {
      this.link.fail(`handshake after reconnect failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private async applyConfig(): Promise<void> {
    const c = this.options.config;
    if (!c) return;
    const dim = this.capabilities.actionDim;
    const low = c.actionLow ?? this.capabilities.actionLow;
    const high = c.actionHigh ?? this.capabilities.actionHigh;
    const watchdogMs = c.watchdogMs ?? this.capabilities.watchdogMs;
    if (low.length !== dim || high.length !== dim) {
      throw new ResrtError(
        `config limits must have ${dim} values each`,
        'pass one bound per action dimension',
      );
    }
    if (!Number.isInteger(watchdogMs) || watchdogMs < WATCHDOG_MIN_MS || watchdogMs > WATCHDOG_MAX_MS) {
      throw new ResrtError(
        `config watchdogMs must be an integer in [${WATCHDOG_MIN_MS}, ${WATCHDOG_MAX_MS}], got ${watchdogMs}`,
        'pick a watchdog of a few control periods',
      );
    }
    await this.request(
      { type: 'config', watchdogMs, low: Float32Array.from(low), high: Float32Array.from(high) },
      'CONFIG',
    );
    // The device's limits and watchdog are now these (its later CAPABILITIES would say so).
    const caps = this.capabilities;
    caps.actionLow = Array.from(Float32Array.from(low));
    caps.actionHigh = Array.from(Float32Array.from(high));
    caps.watchdogMs = watchdogMs;
    caps.watchdog = { timeoutMs: watchdogMs, onTimeout: caps.watchdog?.onTimeout ?? 'latch' };
  }

  /** Sends a message with ACK requested; resolves on ACK, rejects on NACK, timeout or link loss. */
  private request(message: Message, what: string): Promise<void> {
    const seq = this.link.send(message, FLAG_ACK_REQ);
    if (seq === null)
      return Promise.reject(
        new ResrtError(`cannot send ${what}: serial link is down`, 'wait for status connected'),
      );
    const timeoutMs = this.options.ackTimeoutMs ?? 500;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(
          new ResrtError(
            `device did not acknowledge ${what} within ${timeoutMs} ms`,
            'check the link (counters()) and retry',
          ),
        );
      }, timeoutMs);
      this.pending.set(seq, {
        type: messageTypeCode(message),
        resolve,
        reject,
        timer,
      });
    });
  }

  private failPending(err: Error): void {
    for (const [seq, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(seq);
      p.reject(err);
    }
  }

  private onFrame(frame: Frame): void {
    if (this.lastDeviceSeq >= 0) {
      const gap = (frame.seq - this.lastDeviceSeq - 1) & 0xffff;
      if (gap < 0x8000) this.stats.framesMissed += gap;
    }
    this.lastDeviceSeq = frame.seq;
    if (frame.version !== this.link.version && frame.type !== MessageType.Capabilities) {
      this.stats.dropped++;
      return;
    }
    const d = decodePayload(frame.type, frame.payload, this.link.version);
    if (!d.ok) {
      this.stats.dropped++;
      return;
    }
    const m = d.message;
    switch (m.type) {
      case 'state':
        this.onState(m);
        break;
      case 'ack': {
        if (m.ackedType === MessageType.Estop) {
          this.stopEstopRetry();
          return;
        }
        const p = this.pending.get(m.ackedSeq);
        if (p && p.type === m.ackedType) {
          clearTimeout(p.timer);
          this.pending.delete(m.ackedSeq);
          p.resolve();
        }
        break;
      }
      case 'nack':
        this.onNack(m);
        break;
      case 'heartbeat':
      case 'capabilities':
        break;
      default:
        this.stats.dropped++;
    }
  }

  private onState(m: StateMessage): void {
    const c = this.capabilities;
    if (
      m.positions.length !== c.jointCount ||
      m.sensors.length !== c.sensorCount ||
      m.outputs.length !== c.actionDim
    ) {
      this.stats.dropped++;
      return;
    }
    this.stats.statesIn++;
    const estopLatched = (m.status & Status.Estop) !== 0;
    const watchdogFault = (m.status & Status.Watchdog) !== 0;
    if (estopLatched) this.stopEstopRetry();
    const state: SerialRobotState = {
      deviceTimeUs: m.deviceTimeUs,
      receivedAtMs: performance.now(),
      positions: m.positions,
      velocities: m.velocities,
      efforts: m.efforts,
      sensors: m.sensors,
      faulted: estopLatched || watchdogFault,
      ...(estopLatched
        ? { faultKind: 'estop' as const }
        : watchdogFault
          ? { faultKind: 'watchdog' as const }
          : {}),
      outputs: m.outputs,
      status: m.status,
      lastCommandSeq: m.lastCommandSeq,
      estopLatched,
      watchdogFault,
      watchdogHold: (m.status & Status.WatchdogHold) !== 0,
      clamped: (m.status & Status.Clamped) !== 0,
      holdingSafe: (m.status & Status.SafeHold) !== 0,
    };
    this.latest = state;
    this.stateSubject.next(state);
  }

  private onNack(m: NackMessage): void {
    this.stats.nacks++;
    const event: NackEvent = {
      rejectedType: m.nackedType,
      rejectedSeq: m.nackedSeq,
      error: m.error,
      errorName: errorName(m.error),
      detail: m.detail,
    };
    const p = this.pending.get(m.nackedSeq);
    if (p && p.type === m.nackedType) {
      clearTimeout(p.timer);
      this.pending.delete(m.nackedSeq);
      p.reject(
        new ResrtError(
          `device rejected ${typeName(m.nackedType)} (${event.errorName})`,
          m.nackedType === MessageType.Reset
            ? 'send a heartbeat right before RESET and make sure the cause of the fault is gone'
            : 'see docs/serial-protocol.md, "Errors"',
        ),
      );
    }
    this.nackSubject.next(event);
  }

  get status(): LinkStatus {
    return this.statusSubject.value;
  }

  /** The latest state received, or null before the first. */
  get latestState(): SerialRobotState | null {
    return this.latest;
  }

  /** Sequence number of the last COMMAND handed to the link (-1 before the first). */
  get lastCommandSeq(): number {
    return this.lastSentSeq;
  }

  send(command: RobotCommand): boolean {
    const action = command.action;
    const ok =
      this.statusSubject.value === 'connected' &&
      action.length === this.capabilities.actionDim &&
      action.every((v) => Number.isFinite(v)) &&
      Number.isFinite(command.validForMs) &&
      command.validForMs >= 0;
    if (!ok) {
      this.stats.commandsRefused++;
      return false;
    }
    // On the wire 0 means "no expiry of its own"; a host deadline of 0 ms means the opposite, so the
    // shortest validity sent is 1 ms.
    const validityMs = Math.max(1, Math.min(65535, Math.ceil(command.validForMs)));
    const seq = this.link.send({ type: 'command', validityMs, action });
    if (seq === null) {
      this.stats.commandsRefused++;
      return false;
    }
    this.lastSentSeq = seq;
    this.stats.commandsSent++;
    return true;
  }

  estop(reason: string): void {
    this.estopReason = reason;
    this.sendEstop();
    // Repeated until the device acknowledges it or reports the latch: one lost frame must not lose the stop.
    if (this.estopTimer === null) {
      this.estopTimer = setInterval(() => this.sendEstop(), Math.max(10, this.options.heartbeatMs ?? 50));
    }
  }

  private sendEstop(): void {
    if (this.estopReason !== null) this.link.send({ type: 'estop', reason: this.estopReason }, FLAG_ACK_REQ);
  }

  private stopEstopRetry(): void {
    if (this.estopTimer) clearInterval(this.estopTimer);
    this.estopTimer = null;
    this.estopReason = null;
  }

  async resetFault(): Promise<void> {
    if (this.statusSubject.value !== 'connected') {
      throw new ResrtError(
        `cannot reset the device fault: link is ${this.statusSubject.value}`,
        'wait for status connected',
      );
    }
    this.stopEstopRetry();
    this.link.sendHeartbeat();
    await this.request({ type: 'reset' }, 'RESET');
  }

  /** Reads what the link received, now: the control loop calls it each tick (Robot.poll). */
  poll(): void {
    this.link.poll();
  }

  /** Which transport carries the link's bytes ('fd' in a worker thread). */
  get transport(): SerialTransportKind {
    return this.link.transport;
  }

  counters(): SerialRobotCounters {
    return { ...this.link.counters(), ...this.stats };
  }

  /** Writes raw bytes to the link, bypassing every host-side check (fault-injection tests). */
  writeRaw(bytes: Uint8Array): boolean {
    return this.link.writeBytes(bytes);
  }

  /** Header version in use after negotiation. */
  get protocolVersion(): number {
    return this.link.version;
  }

  async close(): Promise<void> {
    if (this.statusSubject.value === 'closed') return;
    this.stopEstopRetry();
    this.failPending(new ResrtError('serial robot closed', 'open it again'));
    await this.link.close();
    this.statusSubject.next('closed');
    this.statusSubject.complete();
    this.stateSubject.complete();
    this.nackSubject.complete();
  }
}

function toCapabilities(c: CapabilitiesMessage, names?: string[]): SerialRobotCapabilities {
  if (names && names.length !== c.actionDim) {
    throw new ResrtError(
      `actionNames has ${names.length} names but the device has ${c.actionDim} action dimensions`,
      'pass one name per dimension or none',
    );
  }
  return {
    name: c.name,
    actionDim: c.actionDim,
    actionNames: names ?? Array.from({ length: c.actionDim }, (_, i) => `a${i}`),
    jointCount: c.jointCount,
    sensorCount: c.sensorCount,
    rateHz: c.rateHz,
    safeAction: Array.from(c.safe),
    actionLow: Array.from(c.low),
    actionHigh: Array.from(c.high),
    firmwareVersion: c.firmwareVersion,
    protocolVersion: c.protocolVersion,
    watchdogMs: c.watchdogMs,
    watchdog: { timeoutMs: c.watchdogMs, onTimeout: c.watchdogMode },
  };
}
