/**
 * The `servo` section of a robot config (robot-config.ts embeds it): which servos make the arm,
 * where its calibration lives, what a fault does to the servos, and how the bus is polled. Also
 * the `feetech:` / `dynamixel:` robot URLs.
 *
 *   "servo": {
 *     "joints": [{ "name": "shoulder_pan", "id": 1, "model": "sts3215" }, ...],
 *     "calibration": "so101-calibration.json",   // relative to the robot config file
 *     "onFault": "hold",                           // or "torque-off"
 *     "maxStep": 0.2,                              // largest goal change per command, normalized
 *     "pollHz": 100
 *   }
 */
import { z } from 'zod';
import { ResrtError } from '../../util/errors.js';
import { MOTOR_MODELS } from './models.js';
import type { ProtocolName } from './packet.js';

export interface ServoUrl {
  kind: 'servo';
  protocol: ProtocolName;
  path: string;
  baudRate?: number;
}

/** `feetech:/dev/ttyACM0` or `dynamixel:/dev/ttyUSB0`, optionally `?baud=1000000`; null for other schemes. */
export function parseServoUrl(url: string): ServoUrl | null {
  const m = /^(feetech|dynamixel):(.*)$/.exec(url);
  if (!m) return null;
  const protocol = m[1] as ProtocolName;
  const rest = m[2].replace(/^\/\/(?=\/)/, '');
  const [path, query] = rest.split('?', 2) as [string, string | undefined];
  if (!path.startsWith('/') && !/^COM\d+$/i.test(path)) {
    throw new ResrtError(
      `servo bus ${JSON.stringify(url)} does not name a device path`,
      `write ${protocol}:/dev/tty${protocol === 'feetech' ? 'ACM0' : 'USB0'} (or ${protocol}:COM3 on Windows)`,
    );
  }
  if (query === undefined) return { kind: 'servo', protocol, path };
  const b = /^baud=(\d+)$/.exec(query);
  const baudRate = b ? Number(b[1]) : NaN;
  if (!(baudRate > 0)) {
    throw new ResrtError(
      `servo bus ${JSON.stringify(url)} has an unknown option ${JSON.stringify(query)}`,
      'the only option is ?baud=<positive integer>, e.g. ?baud=1000000',
    );
  }
  return { kind: 'servo', protocol, path, baudRate };
}

const modelNames = Object.keys(MOTOR_MODELS);

const jointSchema = z.strictObject({
  name: z.string().min(1, 'must not be empty'),
  id: z.number().int('must be an integer').min(0, 'must be in 0..252').max(252, 'must be in 0..252'),
  model: z.enum(modelNames as [string, ...string[]], { error: `must be one of ${modelNames.join(', ')}` }),
  /** Operating mode (default "position"); Dynamixel arms often use "extended-position" or "current-position". */
  mode: z.string().optional(),
  /** The joint's positive direction is opposite to the servo's. */
  invert: z.boolean().optional(),
  /** The joint turns freely (wrist roll): its range is the whole turn, not recorded by hand. */
  fullTurn: z.boolean().optional(),
});

export const servoSectionSchema = z
  .strictObject({
    joints: z.array(jointSchema).min(1, 'list at least one servo'),
    /** Calibration file; relative paths are relative to the robot config file. */
    calibration: z.string().min(1, 'must name a file'),
    /** What the servos do on an e-stop, a link loss, a servo fault, and at close. */
    onFault: z.enum(['hold', 'torque-off'], { error: 'must be "hold" or "torque-off"' }),
    /** Largest change of a goal from the present position per command, in normalized units (range 2). */
    maxStep: z
      .number({ error: 'must be a number' })
      .refine((v) => v > 0 && v <= 2, 'must be in (0, 2] (normalized units; 2 is the whole range)')
      .default(0.2),
    /** Bus reads per second (each reads every servo's state block). */
    pollHz: z
      .number({ error: 'must be a number' })
      .refine((v) => v > 0 && v <= 1000, 'must be in (0, 1000] Hz')
      .default(100),
    /** Written to every servo at connect when it differs (µs; LeRobot uses 0). */
    returnDelayUs: z.number().int().min(0).max(508).optional(),
    /** Tries after the first for a missing status packet. */
    retries: z.number().int().min(0).max(10).default(2),
    /** Waited past the wire time for a status packet, ms. */
    timeoutMarginMs: z.number().positive().max(1000).default(35),
    /** No servo answered for this long: the link is lost. */
    linkTimeoutMs: z.number().positive().max(60_000).default(1000),
    /** A device that reports scene values (the virtual bus's scene board) at this id. */
    scene: z
      .strictObject({
        id: z.number().int().min(0).max(252),
        values: z.number().int().min(1).max(31),
        /**
         * The scene's physics advances one control period per goal write (the virtual arm with
         * --lockstep): a late state there means a busy host, not a moving arm, so the environment
         * waits for it instead of ending the episode.
         */
        lockstep: z.boolean().optional(),
      })
      .optional(),
  })
  .superRefine((s, ctx) => {
    const seen = new Map<number, string>();
    s.joints.forEach((j, k) => {
      const other = seen.get(j.id);
      if (other !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['joints', k, 'id'],
          message: `id ${j.id} is already used by ${other}; every servo on a bus needs its own id`,
        });
      }
      seen.set(j.id, j.name);
      const model = MOTOR_MODELS[j.model];
      if (model && j.mode !== undefined && !(j.mode in model.operatingModes)) {
        ctx.addIssue({
          code: 'custom',
          path: ['joints', k, 'mode'],
          message: `${j.model} has no mode "${j.mode}"; use one of ${Object.keys(model.operatingModes).join(', ')}`,
        });
      }
    });
    const protocols = new Set(s.joints.map((j) => MOTOR_MODELS[j.model]?.protocol));
    if (protocols.size > 1) {
      ctx.addIssue({
        code: 'custom',
        path: ['joints'],
        message: 'mixes Feetech and Dynamixel servos; one bus speaks one protocol',
      });
    }
    if (s.scene && seen.has(s.scene.id)) {
      ctx.addIssue({ code: 'custom', path: ['scene', 'id'], message: `id ${s.scene.id} is a joint's id` });
    }
  });

export type ServoSection = z.output<typeof servoSectionSchema>;
export type ServoJointConfig = ServoSection['joints'][number];

export function sectionProtocol(s: ServoSection): ProtocolName {
  return MOTOR_MODELS[s.joints[0].model].protocol;
}
