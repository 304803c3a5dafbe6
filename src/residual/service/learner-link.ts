/**
 * The learner's side of the MQTT session: the broker (an embedded one on loopback when given no
 * URL), its retained status with a last will, the actors' batches, statuses and latest frames in,
 * and acknowledgements, residuals, control commands and teleoperation out.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { startEmbeddedBroker, type RunningBroker } from '../../util/mqtt-broker.js';
import {
  lastLevel,
  parseJson,
  sessionTopics,
  type ActorStatus,
  type ControlCommand,
  type LearnerStatus,
  type SessionTopics,
} from '../../runtime/session/protocol.js';
import { z } from 'zod';
import { LatestFrames } from './camera-ingest.js';

/**
 * The session's broker: `brokerUrl` when given, else an embedded broker started on loopback at
 * `brokerPort` (default 1883; 0 picks a free one), which the caller closes last.
 */
export async function openSessionBroker(
  brokerUrl: string | undefined,
  brokerPort: number | undefined,
  log: (line: string) => void,
): Promise<{ url: string; broker: RunningBroker | null }> {
  if (brokerUrl) return { url: brokerUrl, broker: null };
  const broker = await startEmbeddedBroker({ port: brokerPort ?? 1883, host: '127.0.0.1' });
  log(`embedded MQTT broker on ${broker.url}`);
  return { url: broker.url, broker };
}

export interface LearnerLinkOptions {
  session: string;
  brokerUrl: string;
  username?: string;
  password?: string;
  /** This learner process's id (in its status and acknowledgements). */
  incarnation: string;
  /** The learner's status as it is now, online or (for the last will and at close) not. */
  status: (online: boolean) => LearnerStatus;
  /** Connected (again): after the subscriptions and the status. */
  onConnect: () => void;
  onBatch: (robotId: string, payload: Buffer) => void;
}

const actorStatusSchema = z.object({ robotId: z.string(), online: z.boolean() }).passthrough();

export class LearnerLink {
  readonly topics: SessionTopics;
  /** Each actor's latest status. */
  readonly actors = new Map<string, ActorStatus>();
  /** Each actor's cameras' latest frames (JPEG), for the dashboard. */
  readonly latestFrames: LatestFrames;
  private readonly client: MqttClient;

  /** Connects (and reconnects) to the broker at once. */
  constructor(private readonly o: LearnerLinkOptions) {
    const topics = (this.topics = sessionTopics(o.session));
    this.latestFrames = new LatestFrames(topics.frameWildcard.slice(0, -3));
    const client = (this.client = mqtt.connect(o.brokerUrl, {
      clientId: `resrt-learner-${o.session}-${o.incarnation}`,
      clean: true,
      reconnectPeriod: 500,
      username: o.username,
      password: o.password,
      will: {
        topic: topics.learnerStatus,
        payload: Buffer.from(JSON.stringify(o.status(false))),
        qos: 1,
        retain: true,
      },
    }));
    client.on('error', () => {});
    client.on('connect', () => {
      client.subscribe({
        [topics.transitionsWildcard]: { qos: 1 },
        [topics.actorStatusWildcard]: { qos: 1 },
        [topics.frameWildcard]: { qos: 0 },
      });
      client.publish(topics.learnerStatus, JSON.stringify(o.status(true)), { qos: 1, retain: true });
      o.onConnect();
    });
    client.on('message', (topic, payload) => {
      if (this.latestFrames.offer(topic, payload)) return;
      const robotId = lastLevel(topic);
      if (topic === topics.transitions(robotId)) o.onBatch(robotId, payload);
      else if (topic === topics.actorStatus(robotId)) {
        const s = parseJson(actorStatusSchema, payload);
        if (s) this.actors.set(robotId, s as unknown as ActorStatus);
      }
    });
  }

  /** Says the learner's current status (retained), when connected. */
  publishStatus(): void {
    if (this.client.connected)
      this.client.publish(this.topics.learnerStatus, JSON.stringify(this.o.status(true)), {
        qos: 1,
        retain: true,
      });
  }

  /** Acknowledges everything of a robot up to `seq` (retained: a restarted actor reads it). */
  ack(robotId: string, seq: number): void {
    this.client.publish(this.topics.ack(robotId), JSON.stringify({ seq, learner: this.o.incarnation }), {
      qos: 1,
      retain: true,
    });
  }

  /** Publishes a residual's policy message, retained. */
  publishPolicy(message: Buffer): void {
    this.client.publish(this.topics.policy, message, { qos: 1, retain: true });
  }

  command(robotIds: readonly string[], c: ControlCommand): void {
    for (const id of robotIds) this.client.publish(this.topics.control(id), JSON.stringify(c), { qos: 1 });
  }

  teleop(robotId: string, action: number[] | null): void {
    this.client.publish(this.topics.teleop(robotId), JSON.stringify({ action }), { qos: 0 });
  }

  /** Says the learner is offline (when connected) and disconnects. */
  async disconnect(): Promise<void> {
    const client = this.client;
    if (client.connected) {
      await new Promise<void>((resolve) =>
        client.publish(
          this.topics.learnerStatus,
          JSON.stringify(this.o.status(false)),
          { qos: 1, retain: true },
          () => resolve(),
        ),
      );
    }
    await new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
  }
}
