/**
 * What actors and the learner say to each other over MQTT (docs/sessions.md, "Topics"): topic
 * names, the versioned residual message, acknowledgements, control commands and status reports.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ResrtError } from '../../util/errors.js';
import { checkRobotId } from './codec.js';

export interface SessionTopics {
  /** Actor → learner: transition batches (binary, QoS 1). */
  transitions(robotId: string): string;
  transitionsWildcard: string;
  /** Learner → actor: highest seq durably logged (JSON, QoS 1, retained). */
  ack(robotId: string): string;
  /** Learner → actors: the current residual (binary, QoS 1, retained). */
  policy: string;
  /** Learner → actors: exploration settings and liveness (JSON, QoS 1, retained; will: offline). */
  learnerStatus: string;
  /** Anyone → actor: e-stop, pause, resume, label, reset confirmation (JSON, QoS 1). */
  control(robotId: string): string;
  /** Anyone → actor: teleoperation commands (JSON, QoS 0). */
  teleop(robotId: string): string;
  /** Actor → anyone: live numbers (JSON, QoS 0; retained will: offline). */
  actorStatus(robotId: string): string;
  actorStatusWildcard: string;
  /** Actor → dashboards: a camera's latest frame as JPEG (binary, QoS 0, twice a second). */
  frame(robotId: string, camera: string): string;
  frameWildcard: string;
}

export function sessionTopics(session: string): SessionTopics {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(session))
    throw new ResrtError(`session name "${session}"`, 'use 1-64 characters from A-Z a-z 0-9 _ . -');
  const root = `resrt/session/${session}`;
  return {
    transitions: (id) => `${root}/tx/${checkRobotId(id)}`,
    transitionsWildcard: `${root}/tx/+`,
    ack: (id) => `${root}/ack/${checkRobotId(id)}`,
    policy: `${root}/policy`,
    learnerStatus: `${root}/learner`,
    control: (id) => `${root}/control/${checkRobotId(id)}`,
    teleop: (id) => `${root}/teleop/${checkRobotId(id)}`,
    actorStatus: (id) => `${root}/actor/${checkRobotId(id)}`,
    actorStatusWildcard: `${root}/actor/+`,
    frame: (id, camera) => `${root}/frame/${checkRobotId(id)}/${camera}`,
    frameWildcard: `${root}/frame/+/+`,
  };
}

/** The last topic level (the robot id in per-robot topics). */
export function lastLevel(topic: string): string {
  return topic.slice(topic.lastIndexOf('/') + 1);
}

// -- the residual message ------------------------------------------------------------------------

export const POLICY_MAGIC = 0x4c4f5052; // 'RPOL'

export interface PolicyHeader {
  /** The learner's lineage (one per learner output folder): versions only compare within one. */
  lineage: string;
  version: number;
  /** sha256 (hex) of the ONNX bytes that follow. */
  sha256: string;
  bytes: number;
  obsDim: number;
  actionDim: number;
  /** The residual's output bound (tanh × actionScale). */
  actionScale: number;
  updates: number;
  createdAt: string;
}

const policyHeaderSchema = z.object({
  lineage: z.string().min(1).max(64),
  version: z.number().int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  bytes: z.number().int().min(1),
  obsDim: z.number().int().min(1),
  actionDim: z.number().int().min(1),
  actionScale: z.number().positive(),
  updates: z.number().int().min(0),
  createdAt: z.string(),
});

export const sha256Hex = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** u32 magic 'RPOL' | u32 header length | header JSON | ONNX bytes. */
export function encodePolicyMessage(
  header: Omit<PolicyHeader, 'sha256' | 'bytes'>,
  onnx: Uint8Array,
): Uint8Array {
  const full: PolicyHeader = { ...header, sha256: sha256Hex(onnx), bytes: onnx.byteLength };
  const json = Buffer.from(JSON.stringify(full));
  const out = Buffer.alloc(8 + json.byteLength + onnx.byteLength);
  out.writeUInt32LE(POLICY_MAGIC, 0);
  out.writeUInt32LE(json.byteLength, 4);
  json.copy(out, 8);
  out.set(onnx, 8 + json.byteLength);
  return out;
}

/** Decodes and verifies (length, sha256); throws ResrtError naming what is wrong. */
export function decodePolicyMessage(bytes: Uint8Array): { header: PolicyHeader; onnx: Uint8Array } {
  const bad = (what: string): never => {
    throw new ResrtError(
      `residual message rejected: ${what}`,
      'the learner and actor must run the same resrt version; the actor keeps its last good residual',
    );
  };
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.byteLength < 8 || buf.readUInt32LE(0) !== POLICY_MAGIC) bad('bad magic');
  const len = buf.readUInt32LE(4);
  if (8 + len > buf.byteLength) bad('header runs past the end');
  let raw: unknown;
  try {
    raw = JSON.parse(buf.toString('utf8', 8, 8 + len));
  } catch {
    bad('header is not JSON');
  }
  const parsed = policyHeaderSchema.safeParse(raw);
  if (!parsed.success) return bad(`header: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  const header = parsed.data;
  const onnx = new Uint8Array(buf.subarray(8 + len));
  if (onnx.byteLength !== header.bytes) bad(`${onnx.byteLength} ONNX bytes, header says ${header.bytes}`);
  if (sha256Hex(onnx) !== header.sha256) bad('sha256 mismatch (corrupted in transit or in storage)');
  return { header, onnx };
}

// -- small JSON messages -------------------------------------------------------------------------

export const ackSchema = z.object({ seq: z.number().int().min(-1), learner: z.string() });
export type AckMessage = z.infer<typeof ackSchema>;

export const learnerStatusSchema = z.object({
  online: z.boolean(),
  learner: z.string(),
  version: z.number().int().min(0),
  updates: z.number().int().min(0),
  ingested: z.number().int().min(0),
  /** Still collecting warm-up data: actors explore with uniform residual noise. */
  warmup: z.boolean(),
  explorationStd: z.number().min(0),
  warmupNoise: z.number().min(0),
  actionScale: z.number().positive(),
  /** Why the learner logs and acknowledges nothing (its disk; names the fix); null while it does. */
  storageStopped: z.string().nullable().optional(),
});
export type LearnerStatus = z.infer<typeof learnerStatusSchema>;

export const controlSchema = z.discriminatedUnion('cmd', [
  z.object({ cmd: z.literal('estop'), source: z.string().default('mqtt') }),
  /** Clears an e-stop; its arrival is the operator's heartbeat (clocks of sender and actor differ). */
  z.object({ cmd: z.literal('reset-estop') }),
  z.object({ cmd: z.literal('pause') }),
  z.object({ cmd: z.literal('resume') }),
  z.object({ cmd: z.literal('label'), success: z.boolean() }),
  z.object({ cmd: z.literal('confirm-reset') }),
]);
export type ControlCommand = z.infer<typeof controlSchema>;

export const teleopSchema = z.object({ action: z.array(z.number()).nullable() });

/** Parses a JSON payload with a schema; null (and no throw) on anything malformed. */
export function parseJson<T>(schema: z.ZodType<T>, payload: Uint8Array | string): T | null {
  try {
    const r = schema.safeParse(
      JSON.parse(typeof payload === 'string' ? payload : Buffer.from(payload).toString('utf8')),
    );
    return r.success ? r.data : null;
  } catch {
    return null;
  }
}

/** A side's data on disk and whether it stopped collection (docs/sessions.md, "Disk limits"). */
export interface StorageStatus {
  /** What the limit counts: the actor's unacknowledged spool, the learner's write-ahead log. */
  usedBytes: number;
  limitBytes: number;
  /** Free bytes on the filesystem that holds it; null where they cannot be read. */
  freeBytes: number | null;
  /** Collection stops while fewer bytes than this are free there. */
  minFreeBytes: number;
  /** Why collection stopped, naming the cause and the fix; null while it goes on. */
  stopped: string | null;
}

export interface ActorStatus {
  robotId: string;
  online: boolean;
  phase:
    'starting' | 'reset' | 'run' | 'label' | 'paused' | 'spool-full' | 'disk-full' | 'estopped' | 'stopped';
  episode: number;
  episodes: number;
  successes: number;
  /** Success rate over the last 20 episodes. */
  recentSuccessRate: number | null;
  lastReturn: number | null;
  residualVersion: number;
  transitions: number;
  pendingTransitions: number;
  ackedSeq: number;
  interventionSteps: number;
  safetyEvents: number;
  latencyMs: { p50: number; p99: number };
  learnerOnline: boolean;
  brokerConnected: boolean;
  /** With conservative mixing: the running (or next) episode's planned exploring share s*. */
  mixingShare: number | null;
  /** The spool against its limit and the disk against its reserve. */
  storage: StorageStatus;
  /** The robot's cameras (their latest frames: /frame/{robot}/{camera}.jpg on the dashboards). */
  cameras?: string[];
  /** Steps sent without camera data in a camera session (no frame, or no embedding). */
  cameraStepsMissing?: number;
}
