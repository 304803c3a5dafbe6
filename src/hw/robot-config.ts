/**
 * The robot config file: what a real robot is (transport, action layout and limits, rate, safe
 * action), what the learner sees of it (observation layout) and how its episodes start and end
 * (reset procedure, success source). Errors name the field and say how to fix it.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import type { RobotState } from '../types.js';
import { configProblems } from '../util/config-check.js';
import { ResrtError } from '../util/errors.js';
import { parseMqttRobotUrl } from './mqtt/topics.js';
import { parseServoUrl, servoSectionSchema, type ServoUrl } from './servo/servo-config.js';

export type RobotUrl =
  | { kind: 'serial'; path: string; baudRate?: number }
  | { kind: 'mqtt'; brokerUrl: string; robotId: string }
  | ServoUrl;

const SCHEMES =
  'serial:/dev/ttyUSB0, mqtt://host:port/robot-id, feetech:/dev/ttyACM0 or dynamixel:/dev/ttyUSB0';

/**
 * `serial:/dev/ttyUSB0` (optionally `?baud=921600`), `mqtt://host:port/robot-id` (mqtts:// for TLS),
 * or a servo bus: `feetech:/dev/ttyACM0`, `dynamixel:/dev/ttyUSB0` (optionally `?baud=1000000`).
 */
export function parseRobotUrl(url: string): RobotUrl {
  if (typeof url !== 'string' || url.length === 0) {
    throw new ResrtError('robot transport is empty', `write ${SCHEMES}`);
  }
  const servo = parseServoUrl(url);
  if (servo) return servo;
  if (url.startsWith('serial:')) {
    const rest = url.slice('serial:'.length).replace(/^\/\/(?=\/)/, '');
    const [path, query] = rest.split('?', 2) as [string, string | undefined];
    if (!path.startsWith('/') && !/^COM\d+$/i.test(path)) {
      throw new ResrtError(
        `serial transport ${JSON.stringify(url)} does not name a device path`,
        'write serial:/dev/ttyUSB0 (or serial:COM3 on Windows)',
      );
    }
    if (query === undefined) return { kind: 'serial', path };
    const m = /^baud=(\d+)$/.exec(query);
    const baudRate = m ? Number(m[1]) : NaN;
    if (!(baudRate > 0)) {
      throw new ResrtError(
        `serial transport ${JSON.stringify(url)} has an unknown option ${JSON.stringify(query)}`,
        'the only option is ?baud=<positive integer>',
      );
    }
    return { kind: 'serial', path, baudRate };
  }
  if (url.startsWith('mqtt:') || url.startsWith('mqtts:')) {
    const { brokerUrl, robotId } = parseMqttRobotUrl(url);
    return { kind: 'mqtt', brokerUrl, robotId };
  }
  throw new ResrtError(`robot transport ${JSON.stringify(url)} has an unknown scheme`, `write ${SCHEMES}`);
}

const finite = () => z.number({ error: 'must be a number' }).refine(Number.isFinite, 'must be finite');
const normalized = () =>
  finite().refine((v) => v >= -1 && v <= 1, 'must be inside [-1, 1] (actions are normalized)');

const observationFields = ['positions', 'velocities', 'efforts', 'sensors'] as const;
export type ObservationField = (typeof observationFields)[number];

const observationEntry = z.strictObject({
  field: z.enum(observationFields, {
    error: `must be one of ${observationFields.join(', ')}`,
  }),
  /** Which entries of the field, in order; all of them when omitted. */
  indices: z
    .array(z.number().int('must be an integer').min(0, 'must be >= 0'))
    .min(1, 'list at least one index, or leave indices out to take the whole field')
    .refine((a) => new Set(a).size === a.length, 'has a repeated index')
    .optional(),
});

const waypoint = z.strictObject({
  action: z.array(normalized()),
  holdMs: finite().refine((v) => v > 0 && v <= 600_000, 'must be in (0, 600000] ms'),
});

// "manual" is shorthand for {"mode":"manual"}; the discriminated union then names the bad field.
const manualShorthand = (v: unknown): unknown => (v === 'manual' ? { mode: 'manual' } : v);

const resetSchema = z.preprocess(
  manualShorthand,
  z.discriminatedUnion(
    'mode',
    [
      z.strictObject({ mode: z.literal('manual'), prompt: z.string().optional() }),
      z.strictObject({
        mode: z.literal('home'),
        waypoints: z.array(waypoint).min(1, 'a home reset needs at least one waypoint'),
      }),
    ],
    {
      error: 'must be "manual" or {"mode":"home","waypoints":[{"action":[...],"holdMs":500}]}',
    },
  ),
);

const successSchema = z.preprocess(
  manualShorthand,
  z.discriminatedUnion(
    'mode',
    [
      z.strictObject({ mode: z.literal('manual') }),
      z.strictObject({
        mode: z.literal('sensor'),
        index: z
          .number({ error: 'must be the index of a state sensor' })
          .int('must be an integer')
          .min(0, 'must be >= 0'),
        threshold: finite(),
      }),
    ],
    { error: 'must be "manual" or {"mode":"sensor","index":0,"threshold":0.5}' },
  ),
);

// What the device's command watchdog does (docs/serial-protocol.md §3, docs/mqtt-topics.md).
const watchdogSchema = z.strictObject({
  /** What happens when commands stop: the device must report exactly this. */
  onTimeout: z.enum(['latch', 'hold'], {
    error: 'must be "latch" (a fault a person clears) or "hold" (resume on the next command)',
  }),
  /** The timeout, ms; serial devices are configured to it, MQTT devices must already use it. */
  timeoutMs: z
    .number({ error: 'must be a number of ms' })
    .int('must be an integer number of ms')
    .min(10, 'must be >= 10 ms')
    .max(60_000, 'must be <= 60000 ms')
    .optional(),
});

/**
 * A camera beside the robot: `source` is "mqtt" (JPEG frames on the robot's own MQTT camera topic),
 * a V4L2 device (/dev/video0), any URL or file ffmpeg opens, or lavfi:<filter> (test patterns).
 */
const cameraSchema = z.strictObject({
  name: z
    .string({ error: 'must be a string' })
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'use 1-64 characters from A-Z a-z 0-9 _ . -'),
  source: z.string({ error: 'must be "mqtt", /dev/videoN, a URL ffmpeg opens, or lavfi:<filter>' }).min(1),
  width: z.number().int('must be an integer').min(8, 'must be >= 8').max(4096, 'must be <= 4096'),
  height: z.number().int('must be an integer').min(8, 'must be >= 8').max(4096, 'must be <= 4096'),
  fps: finite()
    .refine((v) => v > 0 && v <= 240, 'must be in (0, 240]')
    .optional(),
  /**
   * A success detector's camera (`--success-detector`), e.g. the policy's camera streamed again at
   * a finer size: its frames come with every observation (Env.auxCameras) and with --send-frames
   * jpeg, but the policy, its encoders and replay do not read it (docs/success-detector.md).
   */
  detector: z.boolean({ error: 'must be true or false' }).optional(),
});

const cameraLimitsSchema = z.strictObject({
  maxAgeMs: finite()
    .refine((v) => v > 0, 'must be > 0')
    .optional(),
  maxFrozenMs: finite()
    .refine((v) => v > 0, 'must be > 0')
    .optional(),
  maxFutureMs: finite()
    .refine((v) => v >= 0, 'must be >= 0')
    .optional(),
});

const configSchema = z
  .strictObject({
    name: z
      .string({ error: 'must be a string' })
      .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'use 1-64 characters from A-Z a-z 0-9 _ . -'),
    transport: z.string({ error: 'must be a string like serial:/dev/ttyUSB0 or mqtt://host:port/robot-id' }),
    rateHz: finite().refine((v) => v > 0 && v <= 1000, 'must be in (0, 1000] Hz'),
    commandValidMs: z
      .number({ error: 'must be a number of ms' })
      .int('must be an integer number of ms')
      .min(1, 'must be >= 1 ms')
      .max(60_000, 'must be <= 60000 ms'),
    /** Cameras whose latest frames come with every observation (HardwareEnv). */
    cameras: z.array(cameraSchema).optional(),
    /** When a camera frame is too old, frozen or future-dated to act on. */
    cameraLimits: cameraLimitsSchema.optional(),
    action: z.strictObject({
      dim: z.number().int('must be an integer').min(1, 'must be >= 1').max(0xffff, 'must be <= 65535'),
      names: z.array(z.string().min(1, 'names must not be empty')),
      low: z.array(normalized()),
      high: z.array(normalized()),
      safe: z.array(normalized()),
    }),
    observation: z
      .array(observationEntry)
      .min(1, 'list at least one state field, e.g. [{"field":"positions"}]'),
    episode: z.strictObject({
      maxSteps: z.number().int('must be an integer').min(1, 'must be >= 1'),
      reset: resetSchema,
      success: successSchema,
    }),
    /** Absent: whatever the device does (it reports it); present: the device must do exactly this. */
    watchdog: watchdogSchema.optional(),
    /** Servo-bus arms (feetech:/dynamixel: transports): see src/hw/servo/servo-config.ts. */
    servo: servoSectionSchema.optional(),
  })
  .superRefine((c, ctx) => {
    try {
      parseRobotUrl(c.transport);
    } catch (err) {
      ctx.addIssue({
        code: 'custom',
        path: ['transport'],
        message: (err as Error).message.replace('\n  fix:', ';'),
      });
    }
    const dim = c.action.dim;
    for (const key of ['names', 'low', 'high', 'safe'] as const) {
      if (c.action[key].length !== dim) {
        ctx.addIssue({
          code: 'custom',
          path: ['action', key],
          message: `has ${c.action[key].length} entries but action.dim is ${dim}; give one per action dimension`,
        });
      }
    }
    if (new Set(c.action.names).size !== c.action.names.length) {
      ctx.addIssue({
        code: 'custom',
        path: ['action', 'names'],
        message: 'has a repeated name; names must be unique',
      });
    }
    const within = (values: number[], path: (string | number)[], what: string): void => {
      values.forEach((v, i) => {
        const lo = c.action.low[i];
        const hi = c.action.high[i];
        if (lo !== undefined && hi !== undefined && (v < lo || v > hi)) {
          ctx.addIssue({
            code: 'custom',
            path: [...path, i],
            message: `${what} ${v} is outside the limits [${lo}, ${hi}] of ${c.action.names[i] ?? `dimension ${i}`}; move it inside or widen action.low/high`,
          });
        }
      });
    };
    c.action.low.forEach((lo, i) => {
      const hi = c.action.high[i];
      if (hi !== undefined && !(lo < hi)) {
        ctx.addIssue({
          code: 'custom',
          path: ['action', 'low', i],
          message: `low ${lo} is not below high ${hi}; each dimension needs low < high`,
        });
      }
    });
    within(c.action.safe, ['action', 'safe'], 'safe action');
    if (c.servo) {
      const names = c.servo.joints.map((j) => j.name);
      if (names.join('\u0000') !== c.action.names.join('\u0000')) {
        ctx.addIssue({
          code: 'custom',
          path: ['servo', 'joints'],
          message: `name the joints [${names.join(', ')}] but action.names is [${c.action.names.join(', ')}]; list the same joints in the same order`,
        });
      }
    }
    const reset = c.episode.reset;
    if (reset.mode === 'home') {
      reset.waypoints.forEach((w, k) => {
        if (w.action.length !== dim) {
          ctx.addIssue({
            code: 'custom',
            path: ['episode', 'reset', 'waypoints', k, 'action'],
            message: `has ${w.action.length} entries but action.dim is ${dim}`,
          });
        } else {
          within(w.action, ['episode', 'reset', 'waypoints', k, 'action'], 'waypoint value');
        }
      });
    }
  });

export type RobotConfig = z.output<typeof configSchema>;
export type ResetProcedure = RobotConfig['episode']['reset'];
export type SuccessSpec = RobotConfig['episode']['success'];
export type ObservationEntry = RobotConfig['observation'][number];
export type WatchdogConfig = NonNullable<RobotConfig['watchdog']>;
export type CameraConfig = NonNullable<RobotConfig['cameras']>[number];

function issueLine(issue: z.core.$ZodIssue): { problem: string; fix: string } {
  if (issue.code === 'invalid_type' && issue.input === undefined) {
    return { problem: 'is missing', fix: `add it (expected ${issue.expected})` };
  }
  return { problem: issue.message, fix: '' };
}

/** Validates an already-parsed config object; `source` names it in errors. */
export function parseRobotConfig(raw: unknown, source = 'robot config'): RobotConfig {
  const parsed = configSchema.safeParse(raw, { reportInput: true });
  if (parsed.success) return parsed.data;
  const lines = configProblems(configSchema, parsed.error.issues, issueLine).map(
    (p) => `  - ${p.path}: ${p.problem}${p.fix ? `; fix: ${p.fix}` : ''}`,
  );
  throw new ResrtError(
    `${source} is invalid:\n${lines.join('\n')}`,
    'edit the fields listed above (docs/mqtt-topics.md and src/hw/robot-config.ts describe the format)',
  );
}

export function loadRobotConfig(path: string): RobotConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ResrtError(`cannot read robot config ${path}: ${(err as Error).message}`, 'check the path');
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ResrtError(
      `robot config ${path} is not valid JSON: ${(err as Error).message}`,
      'fix the JSON syntax',
    );
  }
  const config = parseRobotConfig(raw, `robot config ${path}`);
  // A servo arm's calibration file is named relative to its robot config.
  if (config.servo && !isAbsolute(config.servo.calibration)) {
    config.servo.calibration = resolve(dirname(path), config.servo.calibration);
  }
  return config;
}

/** The observation vector a robot state gives under this config's layout (length from observationLength). */
export function observeState(
  config: Pick<RobotConfig, 'observation'>,
  s: RobotState,
  length: number,
): Float32Array {
  const obs = new Float32Array(length);
  let k = 0;
  for (const e of config.observation) {
    const src = s[e.field];
    if (e.indices) for (const i of e.indices) obs[k++] = src[i];
    else for (let i = 0; i < src.length; i++) obs[k++] = src[i];
  }
  return obs;
}

/** Length of the observation vector this config builds from states with these counts. */
export function observationLength(
  config: Pick<RobotConfig, 'observation'>,
  counts: { jointCount: number; sensorCount: number },
): number {
  let n = 0;
  for (const e of config.observation) {
    n += e.indices ? e.indices.length : e.field === 'sensors' ? counts.sensorCount : counts.jointCount;
  }
  return n;
}
