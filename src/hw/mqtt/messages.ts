/**
 * The JSON messages of the bridge: retained capabilities and status, and device events. They are
 * low-rate and read by people with mosquitto_sub, so they are JSON; states and commands are binary.
 */
import { z } from 'zod';
import type { RobotCapabilities } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { PAYLOAD_FORMAT_VERSION } from './payload.js';

const finite = z.number().refine(Number.isFinite, 'must be a finite number');

export const capabilitiesSchema = z
  .object({
    name: z.string().min(1),
    actionDim: z.number().int().min(1).max(0xffff),
    actionNames: z.array(z.string()),
    jointCount: z.number().int().min(0).max(0xffff),
    sensorCount: z.number().int().min(0).max(0xffff),
    rateHz: finite.refine((v) => v > 0, 'must be > 0'),
    safeAction: z.array(finite),
    actionLow: z.array(finite),
    actionHigh: z.array(finite),
    firmwareVersion: z.string().optional(),
    protocolVersion: z.number().int().optional(),
    watchdog: z
      .object({ timeoutMs: finite.refine((v) => v > 0, 'must be > 0'), onTimeout: z.enum(['latch', 'hold']) })
      .optional(),
  })
  .superRefine((c, ctx) => {
    for (const key of ['actionNames', 'safeAction', 'actionLow', 'actionHigh'] as const) {
      if (c[key].length !== c.actionDim) {
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: `has ${c[key].length} entries, actionDim is ${c.actionDim}`,
        });
      }
    }
    for (let i = 0; i < c.actionDim; i++) {
      const lo = c.actionLow[i];
      const hi = c.actionHigh[i];
      if (lo === undefined || hi === undefined) break;
      if (!(lo >= -1 && hi <= 1 && lo < hi)) {
        ctx.addIssue({
          code: 'custom',
          path: ['actionLow', i],
          message: `[${lo}, ${hi}] is not inside [-1, 1]`,
        });
      }
      const s = c.safeAction[i];
      if (s !== undefined && (s < lo || s > hi)) {
        ctx.addIssue({ code: 'custom', path: ['safeAction', i], message: `${s} is outside [${lo}, ${hi}]` });
      }
    }
  });

export function encodeCapabilities(caps: RobotCapabilities): string {
  return JSON.stringify({ ...caps, protocolVersion: caps.protocolVersion ?? PAYLOAD_FORMAT_VERSION });
}

export function decodeCapabilities(text: string, topic: string): RobotCapabilities {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ResrtError(
      `capabilities on ${topic} are not JSON`,
      'the device must publish its capabilities as JSON',
    );
  }
  const parsed = capabilitiesSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ResrtError(
      `capabilities on ${topic} are invalid:\n${z.prettifyError(parsed.error)}`,
      'fix the capabilities the device publishes',
    );
  }
  const caps: RobotCapabilities = parsed.data;
  if (caps.protocolVersion !== undefined && caps.protocolVersion !== PAYLOAD_FORMAT_VERSION) {
    throw new ResrtError(
      `device on ${topic} speaks payload format ${caps.protocolVersion}, this build speaks ${PAYLOAD_FORMAT_VERSION}`,
      'run matching resrt versions on the device and the controller',
    );
  }
  return caps;
}

export const deviceStatusSchema = z.object({
  online: z.boolean(),
  faulted: z.boolean().optional(),
  reason: z.string().optional(),
  /** MQTT protocol level the device connected with. */
  mqtt: z.number().int().optional(),
  atMs: z.number().optional(),
});
export type DeviceStatus = z.infer<typeof deviceStatusSchema>;

export const deviceEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('estop'), reason: z.string(), atMs: z.number() }),
  z.object({ type: z.literal('reset'), nonce: z.number().int(), atMs: z.number() }),
  z.object({ type: z.literal('hold'), nonce: z.number().int(), atMs: z.number() }),
  z.object({
    type: z.literal('watchdog'),
    holding: z.boolean(),
    /** Watchdog mode latch: a fault only a reset clears. */
    latched: z.boolean().optional(),
    atMs: z.number(),
  }),
]);
export type DeviceEvent = z.infer<typeof deviceEventSchema>;

/** Parses a JSON message with a schema; null when it does not fit (callers count and drop). */
export function parseJson<T>(schema: z.ZodType<T>, bytes: Uint8Array): T | null {
  try {
    const parsed = schema.safeParse(JSON.parse(Buffer.from(bytes).toString('utf8')));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
