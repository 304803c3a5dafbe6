/**
 * One MQTT connection as the bridge needs it: MQTT 5 when the broker has it, 3.1.1 otherwise;
 * reconnect with exponential backoff; never a queued QoS 0 packet (a replayed command is a stale
 * command).
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { ResrtError } from '../../util/errors.js';

export interface MqttTlsOptions {
  /** PEM contents (not paths) of the CA, client certificate and key. */
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  rejectUnauthorized?: boolean;
}

export interface MqttAuthOptions {
  username?: string;
  password?: string;
  tls?: MqttTlsOptions;
}

export interface BackoffMs {
  initialMs: number;
  maxMs: number;
}

export type ProtocolPreference = 'auto' | 5 | 4;

export interface MqttLinkOptions extends MqttAuthOptions {
  /** mqtt://host:port or mqtts://host:port. */
  brokerUrl: string;
  clientId: string;
  /** 'auto' tries MQTT 5 and falls back to 3.1.1 when the broker refuses it. */
  protocol?: ProtocolPreference;
  will?: { topic: string; payload: string | Buffer; qos: 0 | 1 | 2; retain: boolean };
  /** Reconnect delay: doubles from initialMs per failed attempt up to maxMs; a number sets both ends. */
  reconnectBackoffMs?: number | Partial<BackoffMs>;
  /** How long the first connection may take, retries included, before connect() gives up. */
  connectTimeoutMs?: number;
  keepaliveS?: number;
}

const DEFAULT_BACKOFF: BackoffMs = { initialMs: 100, maxMs: 5_000 };

function backoffOf(v: MqttLinkOptions['reconnectBackoffMs']): BackoffMs {
  const b =
    typeof v === 'number'
      ? { initialMs: v, maxMs: Math.max(v, DEFAULT_BACKOFF.maxMs) }
      : { ...DEFAULT_BACKOFF, ...v };
  if (!(b.initialMs > 0 && b.maxMs >= b.initialMs)) {
    throw new ResrtError(
      `reconnectBackoffMs ${JSON.stringify(v)} is invalid`,
      'give initialMs > 0 and maxMs >= initialMs (or one positive number)',
    );
  }
  return b;
}

// 3.1.1 return codes 4/5 and MQTT 5 reason codes 0x86/0x87: retrying will not help.
const AUTH_REFUSALS = new Set<unknown>([4, 5, 134, 135]);

// Node's TLS verification error codes: retrying cannot fix a certificate.
const TLS_FAILURES = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/;

/** True when a connect error says the broker does not speak the requested protocol level. */
function isProtocolRefusal(err: Error & { code?: unknown }): boolean {
  // 3.1.1 CONNACK return code 1; MQTT 5 reason code 0x84 (132).
  return err.code === 1 || err.code === 132 || /protocol version/i.test(err.message);
}

function attemptConnect(
  options: IClientOptions & { protocolVersion: 4 | 5 },
  url: string,
  timeoutMs: number,
) {
  return new Promise<MqttClient>((resolve, reject) => {
    const client = mqtt.connect(url, options);
    const timer = setTimeout(() => fail(new Error(`no CONNACK within ${timeoutMs} ms`)), timeoutMs);
    const onClose = (): void => fail(new Error('connection closed before CONNACK'));
    // Only our own listeners come off: mqtt.js keeps internal ones on the client itself.
    const detach = (): void => {
      clearTimeout(timer);
      client.off('connect', onConnect);
      client.off('error', fail);
      client.off('close', onClose);
    };
    function fail(err: Error): void {
      detach();
      client.on('error', () => {});
      client.end(true);
      reject(err);
    }
    function onConnect(): void {
      detach();
      resolve(client);
    }
    client.once('connect', onConnect);
    client.once('error', fail);
    client.once('close', onClose);
  });
}

/**
 * Commands and states are small and latency-bound: without TCP_NODELAY, Nagle's algorithm meets
 * delayed ACKs and adds ~40 ms to a share of them. mqtt.js does not set it, so we do, per connection.
 */
function noDelay(client: MqttClient): void {
  const stream = client.stream as unknown as { setNoDelay?: (on: boolean) => void };
  stream.setNoDelay?.(true);
}

export class MqttLink {
  private upHandlers: (() => void)[] = [];
  private downHandlers: (() => void)[] = [];
  private attempt = 0;
  private timer: NodeJS.Timeout | null = null;
  private closing = false;
  private reconnectCount = 0;
  private wasUp = true;

  private constructor(
    readonly client: MqttClient,
    readonly protocolVersion: 4 | 5,
    private readonly backoff: BackoffMs,
    readonly brokerUrl: string,
  ) {
    client.on('error', () => {
      // Errors surface as 'close'; the reconnect loop handles them.
    });
    noDelay(client);
    client.on('connect', () => {
      noDelay(client);
      this.attempt = 0;
      if (!this.wasUp) this.reconnectCount++;
      this.wasUp = true;
      for (const h of this.upHandlers) h();
    });
    client.on('close', () => {
      if (this.closing) return;
      if (this.wasUp) {
        this.wasUp = false;
        for (const h of this.downHandlers) h();
      }
      this.scheduleReconnect();
    });
  }

  static async open(options: MqttLinkOptions): Promise<MqttLink> {
    const backoff = backoffOf(options.reconnectBackoffMs);
    const deadline = performance.now() + (options.connectTimeoutMs ?? 10_000);
    const base: IClientOptions = {
      clientId: options.clientId,
      username: options.username,
      password: options.password,
      clean: true,
      keepalive: options.keepaliveS ?? 5,
      reconnectPeriod: 0, // our own loop, with backoff
      resubscribe: false, // subscriptions are renewed by the up handlers
      queueQoSZero: false,
      will: options.will,
      ...(options.tls ?? {}),
    };
    const preference = options.protocol ?? 'auto';
    let version: 4 | 5 = preference === 4 ? 4 : 5;
    let delay = backoff.initialMs;
    let lastError: Error | null = null;
    while (performance.now() < deadline) {
      const left = Math.max(1, deadline - performance.now());
      try {
        const client = await attemptConnect({ ...base, protocolVersion: version }, options.brokerUrl, left);
        return new MqttLink(client, version, backoff, options.brokerUrl);
      } catch (err) {
        lastError = err as Error;
        if (version === 5 && preference === 'auto' && isProtocolRefusal(lastError)) {
          version = 4;
          continue;
        }
        if (isProtocolRefusal(lastError)) break;
        const code = (lastError as { code?: unknown }).code;
        if (typeof code === 'string' && TLS_FAILURES.test(code)) {
          throw new ResrtError(
            `cannot connect to MQTT broker ${options.brokerUrl}: TLS verification failed (${code}): ${lastError.message}`,
            "pass tls.ca with the CA that signed the broker's certificate, and connect by a name the certificate lists",
          );
        }
        if (AUTH_REFUSALS.has(code)) {
          throw new ResrtError(
            `broker ${options.brokerUrl} refused the credentials: ${lastError.message}`,
            'check username/password (or client certificate) for this broker',
          );
        }
      }
      await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(0, deadline - performance.now()))));
      delay = Math.min(backoff.maxMs, delay * 2);
    }
    throw new ResrtError(
      `cannot connect to MQTT broker ${options.brokerUrl}: ${lastError?.message ?? 'timed out'}`,
      'check the broker is running and reachable (host, port, TLS), or raise connectTimeoutMs',
    );
  }

  get connected(): boolean {
    return this.client.connected;
  }

  /** Times the link came back after a drop. */
  get reconnects(): number {
    return this.reconnectCount;
  }

  /** Runs after every reconnect (not the first connect, which open() resolves). */
  onUp(handler: () => void): void {
    this.upHandlers.push(handler);
  }

  onDown(handler: () => void): void {
    this.downHandlers.push(handler);
  }

  private scheduleReconnect(): void {
    if (this.timer || this.closing) return;
    const base = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** this.attempt);
    // Jitter spreads a fleet's reconnects after a broker restart.
    const delay = base * (0.8 + 0.4 * Math.random());
    this.attempt++;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.closing || this.client.connected) return;
      // Keep the stores so QoS 1 packets (e-stops) queued while down are still delivered.
      this.client.reconnect({
        incomingStore: this.client.incomingStore,
        outgoingStore: this.client.outgoingStore,
      });
    }, delay);
  }

  /** Drops the TCP connection without DISCONNECT (the broker then publishes the Last Will). */
  abort(): void {
    this.closing = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.client.end(true);
  }

  async close(beforeDisconnect?: () => Promise<void>): Promise<void> {
    if (this.closing) return;
    if (beforeDisconnect && this.client.connected) {
      // Best effort and bounded: a broker that never acknowledges must not hang the shutdown.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        beforeDisconnect().catch(() => {}),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, 1_000))),
      ]);
      clearTimeout(timer);
    }
    this.closing = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await new Promise<void>((resolve) => {
      const force = !this.client.connected;
      const t = setTimeout(() => {
        this.client.end(true, {}, () => resolve());
      }, 1_000);
      this.client.end(force, {}, () => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}
