/**
 * The device side of the MQTT bridge: puts a Plant on the broker with the same safety rules as the
 * firmware. Commands are applied only when fresh, in order, well-shaped and finite, then clamped to
 * the capabilities; no valid command within the watchdog timeout holds the plant (and, in watchdog
 * mode latch, latches a fault); an e-stop latches; a reset message clears both latches; a hold
 * message is the safe hold between episodes (watchdog disarmed until the next command).
 */
import { randomBytes } from 'node:crypto';
import type { Plant } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { CommandGate } from './command-gate.js';
import { MqttLink, type MqttAuthOptions, type ProtocolPreference } from './connection.js';
import { encodeCapabilities, type DeviceEvent, type DeviceStatus } from './messages.js';
import {
  PayloadError,
  StateFlags,
  decodeCommand,
  decodeEstop,
  decodeReset,
  encodeState,
  type PayloadRejectReason,
} from './payload.js';
import { TOPIC_QOS, parseMqttRobotUrl, robotTopics } from './topics.js';

export interface MqttDeviceOptions extends MqttAuthOptions {
  /** State publish rate; defaults to the plant's capabilities.rateHz. */
  rateHz?: number;
  /** Hold the plant when no valid command arrived for this long; default 3 periods, at least 50 ms. */
  watchdogMs?: number;
  /**
   * What the watchdog does besides holding (docs/mqtt-topics.md): 'hold' (default) resumes on the
   * next valid command; 'latch' latches a fault that only a reset message clears, like the serial
   * firmware's default.
   */
  watchdogMode?: 'latch' | 'hold';
  /** Tolerated wall-clock disagreement with the controller when checking deadlines; default 25 ms. */
  allowedClockSkewMs?: number;
  /** Also publish a state right after applying each command (lower command→state latency). */
  stateOnCommand?: boolean;
  reconnectBackoffMs?: number | { initialMs?: number; maxMs?: number };
  protocol?: ProtocolPreference;
  connectTimeoutMs?: number;
  clientId?: string;
}

export interface MqttDeviceCounters {
  applied: number;
  /** Clamped to the capabilities limits before applying. */
  clamped: number;
  stale: number;
  future: number;
  duplicate: number;
  outOfOrder: number;
  rejected: Record<PayloadRejectReason, number>;
  ignoredWhileEstopped: number;
  /** Commands dropped while a watchdog fault was latched (watchdog mode latch). */
  ignoredWhileFaulted: number;
  watchdogTrips: number;
  holds: number;
  estops: number;
  resets: number;
  statesPublished: number;
  reconnects: number;
}

export interface MqttDevice {
  /** 5 or 4 (3.1.1), whatever the broker accepted. */
  readonly protocolVersion: 4 | 5;
  readonly estopLatched: boolean;
  readonly watchdogLatched: boolean;
  counters(): MqttDeviceCounters;
  /** Publishes status offline, holds the plant and disconnects. */
  close(): Promise<void>;
  /** Drops the connection without a goodbye, as a power cut would: the broker publishes the Last Will. */
  abort(): void;
}

export async function serveMqttDevice(
  url: string,
  plant: Plant,
  options: MqttDeviceOptions = {},
): Promise<MqttDevice> {
  const { brokerUrl, robotId } = parseMqttRobotUrl(url);
  const topics = robotTopics(robotId);
  const caps = plant.capabilities;
  const rateHz = options.rateHz ?? caps.rateHz;
  if (!(rateHz > 0 && rateHz <= 10_000)) {
    throw new ResrtError(`device state rate ${rateHz} Hz is invalid`, 'use a rate in (0, 10000] Hz');
  }
  const periodMs = 1000 / rateHz;
  const watchdogMs = options.watchdogMs ?? Math.max(50, 3 * periodMs);
  if (!(watchdogMs > 0))
    throw new ResrtError(`watchdogMs ${watchdogMs} is invalid`, 'use a positive number of ms');
  const skew = options.allowedClockSkewMs ?? 25;
  if (!(skew >= 0)) throw new ResrtError(`allowedClockSkewMs ${skew} is invalid`, 'use 0 or more ms');
  const watchdogMode = options.watchdogMode ?? 'hold';
  if (watchdogMode !== 'latch' && watchdogMode !== 'hold')
    throw new ResrtError(`watchdogMode ${String(watchdogMode)} is invalid`, "use 'latch' or 'hold'");
  const low = Float32Array.from(caps.actionLow);
  const high = Float32Array.from(caps.actionHigh);

  const counters: MqttDeviceCounters = {
    applied: 0,
    clamped: 0,
    stale: 0,
    future: 0,
    duplicate: 0,
    outOfOrder: 0,
    rejected: { malformed: 0, version: 0, type: 0, dimension: 0, 'non-finite': 0, range: 0 },
    ignoredWhileEstopped: 0,
    ignoredWhileFaulted: 0,
    watchdogTrips: 0,
    holds: 0,
    estops: 0,
    resets: 0,
    statesPublished: 0,
    reconnects: 0,
  };
  const gate = new CommandGate({ allowedClockSkewMs: skew });
  let estopLatched = false;
  let estopReason = '';
  let watchdogLatched = false;
  /** The plant holds its safe state; the watchdog is armed only while this is false. */
  let holding = true;
  let stateSeq = 0;
  let closed = false;

  const offline = (reason: string): string =>
    JSON.stringify({ online: false, reason, atMs: Date.now() } satisfies DeviceStatus);
  const link = await MqttLink.open({
    ...options,
    brokerUrl,
    clientId: options.clientId ?? `resrt-dev-${robotId}-${randomBytes(4).toString('hex')}`,
    will: { topic: topics.status, payload: offline('connection lost (last will)'), qos: 1, retain: true },
  });
  const client = link.client;

  plant.hold();
  const watchdog = setTimeout(() => {
    if (closed || holding) return;
    holding = true;
    counters.watchdogTrips++;
    plant.hold();
    if (watchdogMode === 'latch') watchdogLatched = true;
    publishEvent({ type: 'watchdog', holding: true, latched: watchdogLatched, atMs: Date.now() });
    if (watchdogLatched) publishStatus();
  }, watchdogMs);
  watchdog.unref();

  function publishEvent(event: DeviceEvent): void {
    if (client.connected) client.publish(topics.events, JSON.stringify(event), { qos: TOPIC_QOS.events });
  }

  function publishStatus(): void {
    if (!client.connected) return;
    const status: DeviceStatus = {
      online: true,
      faulted: estopLatched || watchdogLatched,
      reason: estopLatched
        ? estopReason
        : watchdogLatched
          ? `watchdog: no valid command for ${watchdogMs} ms`
          : undefined,
      mqtt: link.protocolVersion,
      atMs: Date.now(),
    };
    client.publish(topics.status, JSON.stringify(status), { qos: TOPIC_QOS.status, retain: true });
  }

  function publishState(): void {
    if (!client.connected) return;
    const s = plant.sample();
    const last = gate.lastAccepted;
    const flags =
      (estopLatched ? StateFlags.estopLatched : 0) |
      (holding ? StateFlags.watchdogHold : 0) |
      (watchdogLatched ? StateFlags.watchdogLatched : 0);
    stateSeq = (stateSeq + 1) >>> 0;
    try {
      const payload = encodeState({
        flags,
        seq: stateSeq,
        deviceTimeUs: s.deviceTimeUs,
        lastCommandSession: last.session,
        lastCommandSeq: last.seq,
        positions: s.positions,
        velocities: s.velocities,
        efforts: s.efforts,
        sensors: s.sensors,
      });
      client.publish(topics.state, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), {
        qos: TOPIC_QOS.state,
      });
      counters.statesPublished++;
    } catch (err) {
      // A plant that reports NaN is faulty: latch, so the controller sees it and a person looks.
      if (err instanceof PayloadError) latchEstop(`plant state invalid: ${err.message}`);
      else throw err;
    }
  }

  function latchEstop(reason: string): void {
    counters.estops++;
    estopLatched = true;
    estopReason = reason;
    plant.hold();
    publishEvent({ type: 'estop', reason, atMs: Date.now() });
    publishStatus();
  }

  function onCommand(bytes: Uint8Array): void {
    if (estopLatched) {
      counters.ignoredWhileEstopped++;
      return;
    }
    if (watchdogLatched) {
      counters.ignoredWhileFaulted++;
      return;
    }
    let cmd;
    try {
      cmd = decodeCommand(bytes, caps.actionDim);
    } catch (err) {
      if (err instanceof PayloadError) {
        counters.rejected[err.reason]++;
        return;
      }
      throw err;
    }
    const verdict = gate.admit(cmd, Date.now());
    switch (verdict) {
      case 'stale':
        counters.stale++;
        return;
      case 'future':
        counters.future++;
        return;
      case 'duplicate':
        counters.duplicate++;
        return;
      case 'out-of-order':
        counters.outOfOrder++;
        return;
      case 'ok':
        break;
    }
    const action = cmd.action;
    let clamped = false;
    for (let i = 0; i < action.length; i++) {
      if (action[i] < low[i]) {
        action[i] = low[i];
        clamped = true;
      } else if (action[i] > high[i]) {
        action[i] = high[i];
        clamped = true;
      }
    }
    if (clamped) counters.clamped++;
    plant.command(action);
    counters.applied++;
    holding = false;
    watchdog.refresh();
    if (options.stateOnCommand) publishState();
  }

  client.on('message', (topic, payload) => {
    if (closed) return;
    const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
    if (topic === topics.cmd) {
      onCommand(bytes);
    } else if (topic === topics.estop) {
      // Any message on the e-stop topic latches, even a garbled one: fail towards stopped.
      let reason = 'e-stop (unreadable reason)';
      try {
        reason = decodeEstop(bytes).reason || 'e-stop';
      } catch {
        // keep the fallback reason
      }
      latchEstop(reason);
    } else if (topic === topics.reset || topic === topics.hold) {
      const type = topic === topics.reset ? 'reset' : 'hold';
      let nonce: number;
      try {
        nonce = decodeReset(bytes, type).nonce;
      } catch (err) {
        if (err instanceof PayloadError) counters.rejected[err.reason]++;
        return;
      }
      if (type === 'reset') {
        counters.resets++;
        estopLatched = false;
        estopReason = '';
        watchdogLatched = false;
      } else {
        counters.holds++;
      }
      // Both leave the plant holding, the watchdog disarmed: it moves again only on a fresh command.
      holding = true;
      plant.hold();
      publishEvent({ type, nonce, atMs: Date.now() });
      if (type === 'reset') publishStatus();
    }
  });

  function announce(): void {
    client.publish(
      topics.capabilities,
      encodeCapabilities({ ...caps, watchdog: { timeoutMs: watchdogMs, onTimeout: watchdogMode } }),
      {
        qos: TOPIC_QOS.capabilities,
        retain: true,
      },
    );
    publishStatus();
    client.subscribe({
      [topics.cmd]: { qos: TOPIC_QOS.cmd },
      [topics.estop]: { qos: TOPIC_QOS.estop },
      [topics.reset]: { qos: TOPIC_QOS.reset },
      [topics.hold]: { qos: TOPIC_QOS.hold },
    });
  }
  link.onUp(() => {
    counters.reconnects = link.reconnects;
    // A restarted broker forgot the retained messages; say them again.
    announce();
  });
  announce();

  // Self-correcting schedule: the next tick is computed from the first, so the rate does not drift.
  const start = performance.now();
  let tick = 0;
  let tickTimer: NodeJS.Timeout | null = null;
  const scheduleTick = (): void => {
    tick++;
    let due = start + tick * periodMs;
    const now = performance.now();
    if (due < now - periodMs) {
      // Fell behind by more than a period (paused process): skip ahead rather than burst.
      tick = Math.ceil((now - start) / periodMs);
      due = start + tick * periodMs;
    }
    tickTimer = setTimeout(
      () => {
        if (closed) return;
        publishState();
        scheduleTick();
      },
      Math.max(0, due - now),
    );
  };
  scheduleTick();

  return {
    protocolVersion: link.protocolVersion,
    get estopLatched() {
      return estopLatched;
    },
    get watchdogLatched() {
      return watchdogLatched;
    },
    counters: () => ({ ...counters, rejected: { ...counters.rejected }, reconnects: link.reconnects }),
    async close() {
      if (closed) return;
      closed = true;
      if (tickTimer) clearTimeout(tickTimer);
      clearTimeout(watchdog);
      plant.hold();
      await link.close(
        () =>
          new Promise<void>((resolve) =>
            client.publish(topics.status, offline('device closed'), { qos: 1, retain: true }, () =>
              resolve(),
            ),
          ),
      );
    },
    abort() {
      if (closed) return;
      closed = true;
      if (tickTimer) clearTimeout(tickTimer);
      clearTimeout(watchdog);
      plant.hold();
      link.abort();
    },
  };
}
