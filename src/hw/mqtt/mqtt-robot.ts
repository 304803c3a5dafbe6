/**
 * The controller side of the MQTT bridge: a Robot whose commands go to a device over a broker.
 * A command is sent at most once and only while the link is up; it carries its own deadline and,
 * on MQTT 5, a message expiry, so nothing stale reaches the actuators after an outage.
 */
import { randomBytes } from 'node:crypto';
import { BehaviorSubject, ReplaySubject, distinctUntilChanged, type Observable } from 'rxjs';
import type { LinkStatus, Robot, RobotCapabilities, RobotCommand, RobotState } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { LatencyHistogram, type Percentiles } from '../../util/stats.js';
import { MqttLink, type MqttAuthOptions, type ProtocolPreference } from './connection.js';
import {
  decodeCapabilities,
  deviceEventSchema,
  deviceStatusSchema,
  parseJson,
  type DeviceStatus,
} from './messages.js';
import { PayloadError, StateFlags, decodeState, encodeCommand, encodeEstop, encodeReset } from './payload.js';
import { TOPIC_QOS, parseMqttRobotUrl, robotTopics, type RobotTopics } from './topics.js';

export interface MqttRobotOptions extends MqttAuthOptions {
  /** Reconnect delay, doubling per failed attempt: a number, or { initialMs, maxMs }. */
  reconnectBackoffMs?: number | { initialMs?: number; maxMs?: number };
  /** The link counts as lost when no state arrived for this long; default 5 device periods, at least 250 ms. */
  stateTimeoutMs?: number;
  /** How long connect() waits for the broker and for the retained capabilities; default 10 s. */
  connectTimeoutMs?: number;
  /** How long resetFault() and hold() wait for the device's confirmation; default 3 s. */
  resetTimeoutMs?: number;
  protocol?: ProtocolPreference;
  clientId?: string;
}

export interface MqttRobotCounters {
  protocolVersion: 4 | 5;
  sent: number;
  /** send() returned false because the link was down. */
  notSentOffline: number;
  /** send() returned false because the command was malformed (dimension, NaN, validity). */
  notSentInvalid: number;
  statesReceived: number;
  statesRejected: number;
  reconnects: number;
  /** From send() to the first state reporting that command applied (needs the device to echo it). */
  commandToStateMs: Percentiles;
}

const ESTOP_REPEAT_MS = 100;

// Remembered send times for the command→state latency; older ones are simply forgotten.
const SENT_RING = 1024;

export class MqttRobot implements Robot {
  private readonly stateSubject = new ReplaySubject<RobotState>(1);
  private readonly statusSubject = new BehaviorSubject<LinkStatus>('connecting');
  readonly state$: Observable<RobotState> = this.stateSubject.asObservable();
  readonly status$: Observable<LinkStatus>;
  private session = newSession();
  private seq = 0;
  private readonly sentSeq = new Uint32Array(SENT_RING);
  private readonly sentAt = new Float64Array(SENT_RING);
  private lastEchoedSeq = 0;
  private readonly latency = new LatencyHistogram();
  /** null until the device's retained status arrives. */
  private deviceOnline: boolean | null = null;
  private readonly startedAt = performance.now();
  private deviceFaulted = false;
  private lastStateAt = -Infinity;
  private stateTimer: NodeJS.Timeout | null = null;
  /** An e-stop the device has not yet reported latched, and when it was last published. */
  private pendingEstop: { reason: string; lastSentAt: number } | null = null;
  private closed = false;
  /** resetFault() and hold() calls waiting for the device's event with their nonce. */
  private readonly confirmWaiters = new Map<number, { type: 'reset' | 'hold'; done: () => void }>();
  private readonly counts = {
    sent: 0,
    notSentOffline: 0,
    notSentInvalid: 0,
    statesReceived: 0,
    statesRejected: 0,
  };

  private constructor(
    private readonly link: MqttLink,
    private readonly topics: RobotTopics,
    readonly capabilities: RobotCapabilities,
    private readonly options: MqttRobotOptions,
    readonly robotId: string,
    /** mqtt://host:port/robot-id: where the robot's own topics (and its MQTT cameras) are. */
    readonly url: string,
  ) {
    this.status$ = this.statusSubject.pipe(distinctUntilChanged());
  }

  /** Connects to `mqtt://host:port/robot-id`, reads the retained capabilities and follows state and status. */
  static async connect(url: string, options: MqttRobotOptions = {}): Promise<MqttRobot> {
    const { brokerUrl, robotId } = parseMqttRobotUrl(url);
    const topics = robotTopics(robotId);
    const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    const started = performance.now();
    const link = await MqttLink.open({
      ...options,
      brokerUrl,
      connectTimeoutMs,
      clientId: options.clientId ?? `resrt-ctl-${robotId}-${randomBytes(4).toString('hex')}`,
    });
    let capabilities: RobotCapabilities;
    try {
      capabilities = await readRetainedCapabilities(
        link,
        topics,
        connectTimeoutMs - (performance.now() - started),
      );
    } catch (err) {
      await link.close();
      throw err;
    }
    const robot = new MqttRobot(link, topics, capabilities, options, robotId, url);
    robot.start();
    return robot;
  }

  get protocolVersion(): 4 | 5 {
    return this.link.protocolVersion;
  }

  private get stateTimeoutMs(): number {
    return this.options.stateTimeoutMs ?? Math.max(250, 5000 / this.capabilities.rateHz);
  }

  private start(): void {
    const client = this.link.client;
    client.on('message', (topic, payload) => {
      if (this.closed) return;
      const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
      if (topic === this.topics.state) this.onState(bytes);
      else if (topic === this.topics.status) this.onStatus(parseJson(deviceStatusSchema, bytes));
      else if (topic === this.topics.events) {
        const ev = parseJson(deviceEventSchema, bytes);
        if (ev?.type === 'reset' || ev?.type === 'hold') {
          const w = this.confirmWaiters.get(ev.nonce);
          if (w?.type === ev.type) w.done();
        }
      }
    });
    this.subscribe();
    this.link.onUp(() => this.subscribe());
    this.link.onDown(() => this.updateStatus());
    const check = Math.max(10, Math.min(100, this.stateTimeoutMs / 4));
    this.stateTimer = setInterval(() => {
      this.updateStatus();
      this.repeatEstop();
    }, check);
    this.stateTimer.unref();
  }

  private subscribe(): void {
    this.link.client.subscribe({
      [this.topics.state]: { qos: TOPIC_QOS.state },
      [this.topics.status]: { qos: TOPIC_QOS.status },
      [this.topics.events]: { qos: TOPIC_QOS.events },
    });
  }

  private onStatus(status: DeviceStatus | null): void {
    if (!status) return;
    this.deviceOnline = status.online;
    this.deviceFaulted = status.faulted ?? false;
    if (this.deviceFaulted) this.pendingEstop = null;
    this.updateStatus();
  }

  private onState(bytes: Uint8Array): void {
    let decoded;
    try {
      decoded = decodeState(bytes, this.capabilities);
    } catch (err) {
      if (err instanceof PayloadError) {
        this.counts.statesRejected++;
        return;
      }
      throw err;
    }
    const now = performance.now();
    this.counts.statesReceived++;
    this.lastStateAt = now;
    if (decoded.lastCommandSession === this.session && decoded.lastCommandSeq > this.lastEchoedSeq) {
      this.lastEchoedSeq = decoded.lastCommandSeq;
      const slot = decoded.lastCommandSeq % SENT_RING;
      if (this.sentSeq[slot] === decoded.lastCommandSeq) this.latency.record(now - this.sentAt[slot]);
    }
    const estopLatched = (decoded.flags & StateFlags.estopLatched) !== 0;
    const watchdogLatched = (decoded.flags & StateFlags.watchdogLatched) !== 0;
    if (estopLatched) this.pendingEstop = null;
    this.stateSubject.next({
      deviceTimeUs: decoded.deviceTimeUs,
      receivedAtMs: now,
      positions: decoded.positions,
      velocities: decoded.velocities,
      efforts: decoded.efforts,
      sensors: decoded.sensors,
      faulted: estopLatched || watchdogLatched,
      ...(estopLatched
        ? { faultKind: 'estop' as const }
        : watchdogLatched
          ? { faultKind: 'watchdog' as const }
          : {}),
    });
    this.updateStatus();
  }

  private updateStatus(): void {
    if (this.closed) return;
    const now = performance.now();
    const fresh = now - this.lastStateAt <= this.stateTimeoutMs;
    const up = this.link.connected && this.deviceOnline !== false;
    if (up && fresh) this.statusSubject.next('connected');
    else if (this.statusSubject.value === 'connecting' && up && now - this.startedAt <= this.stateTimeoutMs)
      return;
    else this.statusSubject.next('lost');
  }

  /** Whether the connection to the broker is up (status may still be 'lost' for device reasons). */
  get brokerConnected(): boolean {
    return this.link.connected;
  }

  /** The current link status (what status$ last said). */
  get status(): LinkStatus {
    return this.statusSubject.value;
  }

  /** Sequence of the last command sent, and of the last one a state reported applied (this session). */
  get lastSentSeq(): number {
    return this.seq;
  }
  get lastAppliedSeq(): number {
    return this.lastEchoedSeq;
  }

  /** The device reported a latched e-stop or watchdog fault in its retained status. */
  get faulted(): boolean {
    return this.deviceFaulted;
  }

  send(command: RobotCommand): boolean {
    if (this.closed || !this.link.connected) {
      this.counts.notSentOffline++;
      return false;
    }
    const { action } = command;
    if (action.length !== this.capabilities.actionDim) {
      this.counts.notSentInvalid++;
      return false;
    }
    const validForMs = Math.ceil(command.validForMs);
    if (!(validForMs >= 1 && validForMs <= 0xffffffff)) {
      this.counts.notSentInvalid++;
      return false;
    }
    for (let i = 0; i < action.length; i++) {
      if (!Number.isFinite(action[i])) {
        this.counts.notSentInvalid++;
        return false;
      }
    }
    if (this.seq >= 0xffffffff) {
      // Sequences never wrap inside a session (the device would take 1 for a straggler): start a new one.
      this.session = newSession();
      this.seq = 0;
      this.lastEchoedSeq = 0;
    }
    this.seq++;
    const payload = encodeCommand({
      session: this.session,
      seq: this.seq,
      sentAtMs: Date.now(),
      validForMs,
      action,
    });
    const slot = this.seq % SENT_RING;
    this.sentSeq[slot] = this.seq;
    this.sentAt[slot] = performance.now();
    this.link.client.publish(
      this.topics.cmd,
      Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength),
      {
        qos: TOPIC_QOS.cmd,
        retain: false,
        // Second line behind the payload deadline: an MQTT 5 broker drops what it holds past expiry (whole seconds).
        ...(this.link.protocolVersion === 5
          ? { properties: { messageExpiryInterval: Math.max(1, Math.ceil(validForMs / 1000)) } }
          : {}),
      },
    );
    this.counts.sent++;
    return true;
  }

  /**
   * Latches the device's e-stop. QoS 1 only reaches the broker: a device that is not subscribed at
   * that moment (it is reconnecting after a broker restart) never sees it. So the e-stop is
   * repeated every ~100 ms, across reconnects, until the device reports it latched.
   */
  estop(reason: string): void {
    if (this.closed) return;
    this.pendingEstop = { reason, lastSentAt: -Infinity };
    this.repeatEstop();
  }

  private repeatEstop(): void {
    const p = this.pendingEstop;
    if (!p || this.closed || !this.link.connected) return;
    const now = performance.now();
    if (now - p.lastSentAt < ESTOP_REPEAT_MS) return;
    p.lastSentAt = now;
    this.link.client.publish(this.topics.estop, Buffer.from(encodeEstop({ reason: p.reason })), {
      qos: TOPIC_QOS.estop,
    });
  }

  resetFault(): Promise<void> {
    // A person decided to clear the fault: stop asserting an e-stop the device has not latched yet.
    if (!this.closed && this.link.connected) this.pendingEstop = null;
    return this.confirmed('reset').then(() => {
      this.deviceFaulted = false;
    });
  }

  /** The safe hold between episodes: the device holds and disarms its watchdog until the next command. */
  hold(): Promise<void> {
    return this.confirmed('hold');
  }

  /** Publishes a reset or hold with a fresh nonce; resolves when the device's event echoes it. */
  private confirmed(type: 'reset' | 'hold'): Promise<void> {
    if (this.closed) return Promise.reject(new ResrtError('robot link is closed', 'connect again'));
    if (!this.link.connected) {
      return Promise.reject(
        new ResrtError(
          `cannot ${type} ${this.robotId}: the MQTT link is down`,
          'wait for the link to come back and retry',
        ),
      );
    }
    const nonce = randomBytes(4).readUInt32LE(0);
    const timeoutMs = this.options.resetTimeoutMs ?? 3_000;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.confirmWaiters.delete(nonce);
        reject(
          new ResrtError(
            `${this.robotId} did not confirm the ${type} within ${timeoutMs} ms`,
            type === 'hold'
              ? 'check the device is online (status topic) and runs a resrt version with the hold topic'
              : 'check the device is online (status topic) and retry',
          ),
        );
      }, timeoutMs);
      this.confirmWaiters.set(nonce, {
        type,
        done: () => {
          clearTimeout(timer);
          this.confirmWaiters.delete(nonce);
          resolve();
        },
      });
      this.link.client.publish(this.topics[type], Buffer.from(encodeReset({ nonce }, type)), {
        qos: TOPIC_QOS[type],
      });
    });
  }

  counters(): MqttRobotCounters {
    return {
      protocolVersion: this.link.protocolVersion,
      ...this.counts,
      reconnects: this.link.reconnects,
      commandToStateMs: this.latency.summary(),
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.stateTimer) clearInterval(this.stateTimer);
    this.statusSubject.next('closed');
    await this.link.close();
    this.statusSubject.complete();
    this.stateSubject.complete();
  }
}

function newSession(): number {
  return randomBytes(4).readUInt32LE(0) || 1;
}

async function readRetainedCapabilities(
  link: MqttLink,
  topics: RobotTopics,
  timeoutMs: number,
): Promise<RobotCapabilities> {
  const client = link.client;
  return new Promise<RobotCapabilities>((resolve, reject) => {
    const onMessage = (topic: string, payload: Buffer): void => {
      if (topic !== topics.capabilities) return;
      cleanup();
      try {
        resolve(decodeCapabilities(payload.toString('utf8'), topic));
      } catch (err) {
        reject(err);
      }
    };
    const timer = setTimeout(
      () => {
        cleanup();
        reject(
          new ResrtError(
            `no retained capabilities on ${topics.capabilities} within ${Math.round(timeoutMs)} ms`,
            'start the device first (it publishes its capabilities retained), and check the robot id in the URL',
          ),
        );
      },
      Math.max(1, timeoutMs),
    );
    const cleanup = (): void => {
      clearTimeout(timer);
      client.removeListener('message', onMessage);
      client.unsubscribe(topics.capabilities);
    };
    client.on('message', onMessage);
    client.subscribe(topics.capabilities, { qos: TOPIC_QOS.capabilities }, (err) => {
      if (err) {
        cleanup();
        reject(
          new ResrtError(
            `cannot subscribe to ${topics.capabilities}: ${err.message}`,
            'check the broker ACLs',
          ),
        );
      }
    });
  });
}
