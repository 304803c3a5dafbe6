/**
 * The actor's side of the MQTT session: publishes spooled batches at QoS 1 (oldest first, a bounded
 * window in flight, resent until acknowledged), follows the learner's acknowledgements, residuals,
 * status, control commands and teleoperation. The spool is the truth; the broker and the learner may
 * come and go.
 */
import mqtt, { type MqttClient } from 'mqtt';
import type { Spool } from './spool.js';
import { encodeEnvelope } from './codec.js';
import {
  ackSchema,
  controlSchema,
  learnerStatusSchema,
  parseJson,
  sessionTopics,
  teleopSchema,
  type ActorStatus,
  type ControlCommand,
  type LearnerStatus,
  type SessionTopics,
} from './protocol.js';

export interface ActorLinkOptions {
  brokerUrl: string;
  session: string;
  robotId: string;
  spool: Spool;
  /** Resend a batch not acknowledged within this time. Default 2000 ms. */
  resendMs?: number;
  /** Batches published and not yet acknowledged, at most. Default 64. */
  maxInFlight?: number;
  username?: string;
  password?: string;
  onPolicy: (payload: Uint8Array) => void;
  onLearnerStatus: (s: LearnerStatus) => void;
  onControl: (c: ControlCommand) => void;
  onTeleop: (action: number[] | null) => void;
}

export class ActorLink {
  readonly topics: SessionTopics;
  private readonly client: MqttClient;
  private readonly timer: NodeJS.Timeout;
  private readonly resendMs: number;
  private readonly maxInFlight: number;
  /** The learner's watermark for this robot as last seen (retained ack), -1 before any. */
  learnerSeq = -1;
  private ackSeen = false;
  published = 0;
  resent = 0;

  constructor(private readonly o: ActorLinkOptions) {
    this.topics = sessionTopics(o.session);
    this.resendMs = o.resendMs ?? 2000;
    this.maxInFlight = o.maxInFlight ?? 64;
    const statusTopic = this.topics.actorStatus(o.robotId);
    this.client = mqtt.connect(o.brokerUrl, {
      clientId: `resrt-actor-${o.robotId}-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
      clean: true,
      reconnectPeriod: 500,
      connectTimeout: 5_000,
      username: o.username,
      password: o.password,
      will: {
        topic: statusTopic,
        payload: Buffer.from(JSON.stringify({ robotId: o.robotId, online: false })),
        qos: 1,
        retain: true,
      },
    });
    this.client.on('connect', () => {
      this.client.subscribe(
        [
          this.topics.ack(o.robotId),
          this.topics.policy,
          this.topics.learnerStatus,
          this.topics.control(o.robotId),
          this.topics.teleop(o.robotId),
        ],
        { qos: 1 },
      );
      // Everything unacknowledged goes out again: the broker or learner may have lost it.
      for (const b of o.spool.unacked()) b.sentAtMs = 0;
      this.pump();
    });
    // Errors surface as reconnects; the spool keeps the data meanwhile.
    this.client.on('error', () => {});
    this.client.on('message', (topic, payload) => this.onMessage(topic, payload));
    this.timer = setInterval(() => this.pump(), Math.min(250, this.resendMs / 2));
  }

  get connected(): boolean {
    return this.client.connected;
  }

  /** True once the learner's retained ack for this robot arrived (or none exists after a wait). */
  get ackKnown(): boolean {
    return this.ackSeen;
  }

  private onMessage(topic: string, payload: Buffer): void {
    const t = this.topics;
    const id = this.o.robotId;
    if (topic === t.ack(id)) {
      const ack = parseJson(ackSchema, payload);
      if (!ack) return;
      this.ackSeen = true;
      this.learnerSeq = ack.seq;
      this.o.spool.ack(ack.seq);
      this.pump();
    } else if (topic === t.policy) {
      if (payload.byteLength > 0) this.o.onPolicy(new Uint8Array(payload));
    } else if (topic === t.learnerStatus) {
      const s = parseJson(learnerStatusSchema, payload);
      if (s) this.o.onLearnerStatus(s);
    } else if (topic === t.control(id)) {
      const c = parseJson(controlSchema, payload);
      if (c) this.o.onControl(c);
    } else if (topic === t.teleop(id)) {
      const m = parseJson(teleopSchema, payload);
      if (m) this.o.onTeleop(m.action);
    }
  }

  /** Publishes what is due: never-sent batches and ones unacknowledged for resendMs. */
  pump(): void {
    if (!this.client.connected) return;
    const now = performance.now();
    let inFlight = 0;
    for (const b of this.o.spool.unacked()) {
      if (inFlight >= this.maxInFlight) break;
      inFlight++;
      if (b.sentAtMs !== 0 && now - b.sentAtMs < this.resendMs) continue;
      if (b.sentAtMs !== 0) this.resent++;
      b.sentAtMs = now;
      this.published++;
      this.client.publish(
        this.topics.transitions(this.o.robotId),
        Buffer.from(encodeEnvelope(this.o.spool.ackedSeq, b.bytes)),
        { qos: 1 },
      );
    }
  }

  publishStatus(status: ActorStatus): void {
    if (!this.client.connected) return;
    // QoS 1: the embedded broker (aedes) forwards a retained QoS 0 message to no live subscriber,
    // so the learner's dashboard never listed its robots.
    this.client.publish(this.topics.actorStatus(this.o.robotId), JSON.stringify(status), {
      qos: 1,
      retain: true,
    });
  }

  publishFrame(camera: string, jpeg: Uint8Array): void {
    if (!this.client.connected) return;
    this.client.publish(this.topics.frame(this.o.robotId, camera), Buffer.from(jpeg), { qos: 0 });
  }

  async close(final?: ActorStatus): Promise<void> {
    clearInterval(this.timer);
    if (final && this.client.connected) {
      await new Promise<void>((resolve) =>
        this.client.publish(
          this.topics.actorStatus(this.o.robotId),
          JSON.stringify(final),
          { qos: 1, retain: true },
          () => resolve(),
        ),
      );
    }
    await new Promise<void>((resolve) => this.client.end(true, {}, () => resolve()));
  }
}
