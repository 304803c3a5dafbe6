/**
 * Camera frames over MQTT (docs/mqtt-topics.md, topic resrt/v1/{robot}/camera/{name}): the device
 * publishes each new frame as JPEG with its capture time; the controller's MqttCamera decodes them
 * as a CameraSource with latest-frame semantics. QoS 0 and never retained: a lost frame is
 * superseded by the next one, and a retained frame would be an old image posing as a live one.
 *
 * Frame message (type 5), little-endian:
 *   u8 version (1)  u8 type (5)  u16 width  u16 height  u16 reserved (0)
 *   u32 seq         f64 capturedAtMs: the sender's wall clock (Unix epoch ms) at capture
 *   JPEG bytes (baseline, RGB)
 */
import { randomBytes } from 'node:crypto';
import { BehaviorSubject, filter, type Observable } from 'rxjs';
import type { CameraFrame, CameraSource, CameraSpec } from '../../types.js';
import { decodeImage, encodeRgbJpeg } from '../../util/image-codec.js';
import { MqttLink, type MqttAuthOptions } from '../mqtt/connection.js';
import { PAYLOAD_FORMAT_VERSION } from '../mqtt/payload.js';
import { CAMERA_QOS, cameraTopic, parseMqttRobotUrl } from '../mqtt/topics.js';

export const CAMERA_FRAME_TYPE = 5;
const HEADER = 20;

export interface CameraFramePayload {
  width: number;
  height: number;
  seq: number;
  /** Sender wall clock, Unix epoch ms. */
  capturedAtUnixMs: number;
  jpeg: Uint8Array;
}

export function encodeCameraFrame(p: CameraFramePayload): Uint8Array {
  const out = new Uint8Array(HEADER + p.jpeg.length);
  const v = new DataView(out.buffer);
  v.setUint8(0, PAYLOAD_FORMAT_VERSION);
  v.setUint8(1, CAMERA_FRAME_TYPE);
  v.setUint16(2, p.width, true);
  v.setUint16(4, p.height, true);
  v.setUint16(6, 0, true);
  v.setUint32(8, p.seq >>> 0, true);
  v.setFloat64(12, p.capturedAtUnixMs, true);
  out.set(p.jpeg, HEADER);
  return out;
}

/** Null when the header does not fit (short, other version or type, zero size, non-finite time). */
export function decodeCameraFrameHeader(bytes: Uint8Array): CameraFramePayload | null {
  if (bytes.length <= HEADER) return null;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint8(0) !== PAYLOAD_FORMAT_VERSION || v.getUint8(1) !== CAMERA_FRAME_TYPE) return null;
  const width = v.getUint16(2, true);
  const height = v.getUint16(4, true);
  const capturedAtUnixMs = v.getFloat64(12, true);
  if (width === 0 || height === 0 || !Number.isFinite(capturedAtUnixMs)) return null;
  return { width, height, seq: v.getUint32(8, true), capturedAtUnixMs, jpeg: bytes.subarray(HEADER) };
}

export interface MqttCameraCounters {
  received: number;
  /** Header did not decode. */
  malformed: number;
  /** JPEG did not decode. */
  corrupt: number;
  /** Not the size the camera was configured for. */
  wrongSize: number;
}

export interface MqttCameraOptions extends MqttAuthOptions {
  /** Expected frame size; frames of another size are dropped and counted. Default: the first frame's. */
  width?: number;
  height?: number;
  connectTimeoutMs?: number;
}

/** Controller side: one camera of a robot on the broker, as a CameraSource. */
export class MqttCamera implements CameraSource {
  readonly frame$: Observable<CameraFrame>;
  /** The most recent problem with a received frame (corrupt JPEG, wrong size), for events and logs. */
  lastProblem: string | null = null;
  private readonly latestFrame = new BehaviorSubject<CameraFrame | null>(null);
  private readonly counts: MqttCameraCounters = { received: 0, malformed: 0, corrupt: 0, wrongSize: 0 };
  private specValue: CameraSpec;

  private constructor(
    private readonly link: MqttLink,
    readonly topic: string,
    readonly name: string,
    options: MqttCameraOptions,
  ) {
    this.specValue = {
      name,
      width: options.width ?? 0,
      height: options.height ?? 0,
      channels: 3,
      depth: false,
    };
    this.frame$ = this.latestFrame.pipe(filter((f): f is CameraFrame => f !== null));
    link.client.on('message', (topic, payload) => {
      if (topic === this.topic) this.onFrame(payload);
    });
    link.onUp(() => link.client.subscribe(this.topic, { qos: CAMERA_QOS }));
  }

  /** `url`: mqtt://host:port/robot-id of the robot whose camera `name` to read. */
  static async connect(url: string, name: string, options: MqttCameraOptions = {}): Promise<MqttCamera> {
    const { brokerUrl, robotId } = parseMqttRobotUrl(url);
    const topic = cameraTopic(robotId, name);
    const link = await MqttLink.open({
      ...options,
      brokerUrl,
      clientId: `resrt-cam-${robotId}-${name}-${randomBytes(4).toString('hex')}`,
      connectTimeoutMs: options.connectTimeoutMs,
    });
    const camera = new MqttCamera(link, topic, name, options);
    await link.client.subscribeAsync(topic, { qos: CAMERA_QOS });
    return camera;
  }

  get spec(): CameraSpec {
    return this.specValue;
  }

  counters(): MqttCameraCounters {
    return { ...this.counts };
  }

  latest(): CameraFrame | null {
    return this.latestFrame.value;
  }

  async close(): Promise<void> {
    this.latestFrame.complete();
    await this.link.close();
  }

  private onFrame(bytes: Uint8Array): void {
    const head = decodeCameraFrameHeader(bytes);
    if (!head) {
      this.counts.malformed++;
      this.lastProblem = `a message on ${this.topic} is not a camera frame (format ${PAYLOAD_FORMAT_VERSION}, type ${CAMERA_FRAME_TYPE})`;
      return;
    }
    const { width, height } = this.specValue;
    if (width && height && (head.width !== width || head.height !== height)) {
      this.counts.wrongSize++;
      this.lastProblem = `camera "${this.name}" sent a ${head.width}x${head.height} frame; it is configured for ${width}x${height}`;
      return;
    }
    let img;
    try {
      img = decodeImage(head.jpeg, `camera "${this.name}" frame ${head.seq}`);
    } catch (err) {
      this.counts.corrupt++;
      this.lastProblem = (err as Error).message.split('\n')[0];
      return;
    }
    if (img.width !== head.width || img.height !== head.height) {
      this.counts.corrupt++;
      this.lastProblem = `camera "${this.name}" frame ${head.seq}: the JPEG is ${img.width}x${img.height}, its header says ${head.width}x${head.height}`;
      return;
    }
    if (!width) this.specValue = { ...this.specValue, width: img.width, height: img.height };
    this.counts.received++;
    // The sender's wall-clock capture time on this host's monotonic clock (both on NTP/PTP).
    const capturedAtMs = performance.now() - (Date.now() - head.capturedAtUnixMs);
    this.latestFrame.next({
      width: img.width,
      height: img.height,
      channels: 3,
      data: img.data,
      capturedAtMs,
      seq: head.seq,
    });
  }
}

export interface CameraPublisher {
  published(): number;
  close(): Promise<void>;
}

/**
 * Device side: publishes `grab()`'s frame whenever it is new (by seq), checked `rateHz` times a
 * second. Frame capture times are host-monotonic (performance.now()); they go out as Unix ms.
 */
export async function publishMqttCamera(
  url: string,
  name: string,
  grab: () => CameraFrame | null | undefined,
  options: MqttAuthOptions & { rateHz?: number; quality?: number } = {},
): Promise<CameraPublisher> {
  const { brokerUrl, robotId } = parseMqttRobotUrl(url);
  const topic = cameraTopic(robotId, name);
  const link = await MqttLink.open({
    ...options,
    brokerUrl,
    clientId: `resrt-campub-${robotId}-${name}-${randomBytes(4).toString('hex')}`,
  });
  let lastSeq = -1;
  let count = 0;
  const timer = setInterval(
    () => {
      const frame = grab();
      if (!frame || frame.seq === lastSeq || !link.connected) return;
      lastSeq = frame.seq;
      const jpeg = encodeRgbJpeg(frame, options.quality ?? 90);
      const payload = encodeCameraFrame({
        width: frame.width,
        height: frame.height,
        seq: frame.seq,
        capturedAtUnixMs: Date.now() - (performance.now() - frame.capturedAtMs),
        jpeg,
      });
      link.client.publish(topic, Buffer.from(payload), { qos: CAMERA_QOS, retain: false });
      count++;
    },
    1000 / (options.rateHz ?? 30),
  );
  return {
    published: () => count,
    async close() {
      clearInterval(timer);
      await link.close();
    },
  };
}
