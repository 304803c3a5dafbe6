/**
 * Servo calibration: per joint the homing offset written to the servo (so that the middle of the
 * joint's travel reads half a turn), the range of raw positions the joint can reach, and its
 * direction. Normalized joint values (actions and reported positions) map [-1, 1] onto that range:
 *
 *   raw = rangeMin + (direction · n + 1) / 2 · (rangeMax − rangeMin)
 *
 * `recordCalibration` is the procedure `resrt calibrate` runs: torque off, a person puts the arm
 * in the middle of its range (offsets are written), then moves every joint through its whole
 * range while the extremes are recorded. The prompts go through an interface, so tests script them.
 */
import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import { ResrtError } from '../../util/errors.js';
import { writeFileAtomic } from '../../util/files.js';
import type { ServoBus } from './bus.js';
import { MOTOR_MODELS, type MotorModel } from './models.js';
import type { ProtocolName } from './packet.js';
import { readRegister, writeEeprom, writeRegister } from './registers.js';
import type { ServoJointConfig } from './servo-config.js';

export interface JointCalibration {
  id: number;
  model: string;
  homingOffset: number;
  rangeMin: number;
  rangeMax: number;
  direction: 1 | -1;
}

export interface Calibration {
  format: 'resrt-servo-calibration';
  version: 1;
  protocol: ProtocolName;
  createdAt: string;
  joints: Record<string, JointCalibration>;
}

const fileSchema = z.strictObject({
  format: z.literal('resrt-servo-calibration'),
  version: z.literal(1),
  protocol: z.enum(['feetech', 'dynamixel']),
  createdAt: z.string(),
  joints: z.record(
    z.string(),
    z.strictObject({
      id: z.number().int().min(0).max(252),
      model: z.string(),
      homingOffset: z.number().int(),
      rangeMin: z.number().int(),
      rangeMax: z.number().int(),
      direction: z.union([z.literal(1), z.literal(-1)]),
    }),
  ),
});

function howToCalibrate(robotUrl?: string, configPath?: string): string {
  return `record one with \`resrt calibrate --robot ${robotUrl ?? 'feetech:/dev/ttyACM0'} --robot-config ${configPath ?? 'ROBOT.json'}\``;
}

/** Loads and checks a calibration against the configured joints; errors say how to (re)calibrate. */
export function loadCalibration(
  path: string,
  joints: readonly ServoJointConfig[],
  hint: { robotUrl?: string; configPath?: string } = {},
): Calibration {
  const fix = howToCalibrate(hint.robotUrl, hint.configPath);
  if (!existsSync(path)) {
    throw new ResrtError(
      `the arm is not calibrated: no calibration file at ${path}; it will not move without one`,
      fix,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ResrtError(`calibration ${path} is not valid JSON: ${(err as Error).message}`, fix);
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  - ${i.path.join('.') || '(top level)'}: ${i.message}`);
    throw new ResrtError(`calibration ${path} is malformed:\n${lines.join('\n')}`, fix);
  }
  const cal = parsed.data as Calibration;
  const problems: string[] = [];
  for (const j of joints) {
    const c = cal.joints[j.name];
    const model = MOTOR_MODELS[j.model];
    if (!c) {
      problems.push(`joint ${j.name} is not in it`);
      continue;
    }
    if (c.id !== j.id || c.model !== j.model) {
      problems.push(
        `joint ${j.name} was calibrated as id ${c.id} (${c.model}); the config says id ${j.id} (${j.model})`,
      );
    }
    if (!(c.rangeMin < c.rangeMax))
      problems.push(`joint ${j.name}: rangeMin ${c.rangeMin} is not below rangeMax ${c.rangeMax}`);
    if (model.protocol === 'feetech' && (c.rangeMin < 0 || c.rangeMax > model.resolution - 1)) {
      problems.push(
        `joint ${j.name}: range [${c.rangeMin}, ${c.rangeMax}] leaves 0..${model.resolution - 1}`,
      );
    }
    if (Math.abs(c.homingOffset) > model.homingLimit) {
      problems.push(`joint ${j.name}: homing offset ${c.homingOffset} exceeds ±${model.homingLimit}`);
    }
    if (c.direction !== (j.invert ? -1 : 1)) {
      problems.push(
        `joint ${j.name}: direction ${c.direction} disagrees with the config's invert ${Boolean(j.invert)}`,
      );
    }
  }
  for (const name of Object.keys(cal.joints)) {
    if (!joints.some((j) => j.name === name)) problems.push(`joint ${name} is not in the robot config`);
  }
  if (problems.length > 0) {
    throw new ResrtError(
      `calibration ${path} does not fit this arm:\n${problems.map((p) => `  - ${p}`).join('\n')}`,
      fix,
    );
  }
  return cal;
}

export function saveCalibration(path: string, cal: Calibration): void {
  writeFileAtomic(path, JSON.stringify(cal, null, 2) + '\n');
}

/** Raw counts → normalized [-1, 1] (beyond when the joint is outside its recorded range). */
export function normalize(c: JointCalibration, raw: number): number {
  return c.direction * ((2 * (raw - c.rangeMin)) / (c.rangeMax - c.rangeMin) - 1);
}

/** Normalized → raw counts (not rounded, not clamped). */
export function denormalize(c: JointCalibration, n: number): number {
  return c.rangeMin + ((c.direction * n + 1) / 2) * (c.rangeMax - c.rangeMin);
}

/** Normalized units per raw count. */
export function countsToNormalized(c: JointCalibration): number {
  return (2 * c.direction) / (c.rangeMax - c.rangeMin);
}

/** The homing offset that makes `actual` read half a turn. */
export function homingOffsetFor(model: MotorModel, actual: number): number {
  const half = model.resolution / 2 - 1;
  // Feetech: present = actual − offset; Dynamixel: present = actual + offset.
  return model.homingSign === -1 ? actual - half : half - actual;
}

/** What the calibration procedure asks of the person at the arm. */
export interface CalibrationPrompts {
  /** Show `message` and resolve when the person is ready (Enter). */
  ask(message: string): Promise<void>;
  /** Resolves when the person says the range sweep is done; `live` shows the extremes so far. */
  sweepUntilDone(message: string, poll: () => Promise<void>): Promise<void>;
  log?(line: string): void;
}

export async function recordCalibration(
  bus: ServoBus,
  joints: readonly ServoJointConfig[],
  prompts: CalibrationPrompts,
): Promise<Calibration> {
  const models = joints.map((j) => MOTOR_MODELS[j.model]);
  const log = prompts.log ?? ((): void => {});
  // Torque off everywhere: a person moves the arm by hand.
  for (const [k, j] of joints.entries()) await writeRegister(bus, j.id, models[k], 'torqueEnable', 0);
  // Offsets from a previous calibration would shift what is read now.
  for (const [k, j] of joints.entries()) await writeEeprom(bus, j.id, models[k], 'homingOffset', 0);
  await prompts.ask(
    'Move the arm to the middle of its range of motion (every joint half-way), then press Enter.',
  );
  const offsets: number[] = [];
  for (const [k, j] of joints.entries()) {
    const actual = await readRegister(bus, j.id, models[k], 'presentPosition');
    const offset = homingOffsetFor(models[k], actual);
    await writeEeprom(bus, j.id, models[k], 'homingOffset', offset);
    offsets.push(offset);
    log(`${j.name}: at ${actual}, homing offset ${offset}`);
  }
  const min = joints.map(() => Infinity);
  const max = joints.map(() => -Infinity);
  const sample = async (): Promise<void> => {
    for (const [k, j] of joints.entries()) {
      const p = await readRegister(bus, j.id, models[k], 'presentPosition');
      min[k] = Math.min(min[k], p);
      max[k] = Math.max(max[k], p);
    }
  };
  await sample();
  await prompts.sweepUntilDone(
    `Move each joint${
      joints.some((j) => j.fullTurn)
        ? ' (except ' +
          joints
            .filter((j) => j.fullTurn)
            .map((j) => j.name)
            .join(', ') +
          ')'
        : ''
    } through its whole range of motion, then press Enter.`,
    sample,
  );
  const cal: Calibration = {
    format: 'resrt-servo-calibration',
    version: 1,
    protocol: models[0].protocol,
    createdAt: new Date().toISOString(),
    joints: {},
  };
  for (const [k, j] of joints.entries()) {
    const model = models[k];
    let rangeMin = min[k];
    let rangeMax = max[k];
    if (j.fullTurn) {
      rangeMin = 0;
      rangeMax = model.resolution - 1;
    }
    if (!(rangeMax > rangeMin)) {
      throw new ResrtError(
        `joint ${j.name} (id ${j.id}) did not move during the sweep (it stayed at ${rangeMin})`,
        'run the calibration again and move every joint from one end of its travel to the other',
      );
    }
    await writeEeprom(bus, j.id, model, 'minPositionLimit', rangeMin);
    await writeEeprom(bus, j.id, model, 'maxPositionLimit', rangeMax);
    cal.joints[j.name] = {
      id: j.id,
      model: j.model,
      homingOffset: offsets[k],
      rangeMin,
      rangeMax,
      direction: j.invert ? -1 : 1,
    };
    log(`${j.name}: range ${rangeMin}..${rangeMax}`);
  }
  return cal;
}
