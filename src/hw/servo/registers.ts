/**
 * Named register access on top of the bus: values encoded per the model's table, status errors
 * turned into errors that say what to do, and EEPROM writes that handle the guard each vendor puts
 * on EEPROM (Feetech: the Lock register, address 55, must be 0 for a write to be kept; Dynamixel:
 * torque must be off, or the servo answers "access error").
 */
import { ResrtError } from '../../util/errors.js';
import { BusTransactionError, type ServoBus } from './bus.js';
import { DYNAMIXEL_ALERT, DYNAMIXEL_STATUS_ERRORS } from './dynamixel-codec.js';
import {
  decodeRegister,
  encodeRegister,
  type MotorModel,
  type Register,
  type RegisterName,
} from './models.js';

/** A status error byte in words (Feetech fault bits, Dynamixel error number and alert). */
export function describeStatusError(model: MotorModel, error: number): string {
  if (error === 0) return 'no error';
  if (model.protocol === 'feetech') {
    const names = model.faultBits.filter(([bit]) => error & bit).map(([, n]) => n);
    return names.length ? names.join(', ') : `error byte 0x${error.toString(16)}`;
  }
  const parts: string[] = [];
  const number = error & 0x7f;
  if (number) parts.push(DYNAMIXEL_STATUS_ERRORS[number] ?? `error ${number}`);
  if (error & DYNAMIXEL_ALERT) parts.push('hardware error alert');
  return parts.join(', ');
}

/** Names of the fault bits set in `bits` (status error byte or Hardware_Error_Status). */
export function faultNames(model: MotorModel, bits: number): string[] {
  return model.faultBits.filter(([bit]) => bits & bit).map(([, n]) => n);
}

function regOf(model: MotorModel, name: RegisterName | 'lock'): Register {
  const reg = name === 'lock' ? model.lock : model.registers[name];
  if (!reg) throw new ResrtError(`${model.name} has no ${name} register`, 'this is a bug in the motor table');
  return reg;
}

export async function readRegister(
  bus: ServoBus,
  id: number,
  model: MotorModel,
  name: RegisterName | 'lock',
): Promise<number> {
  const reg = regOf(model, name);
  const status = await bus.read(id, reg.address, reg.size);
  return decodeRegister(reg, status.params, 0);
}

/** Writes a RAM register; a Dynamixel error number in the answer becomes an error. */
export async function writeRegister(
  bus: ServoBus,
  id: number,
  model: MotorModel,
  name: RegisterName | 'lock',
  value: number,
): Promise<void> {
  const reg = regOf(model, name);
  let data: Uint8Array;
  try {
    data = encodeRegister(reg, value);
  } catch (err) {
    throw new ResrtError(
      `${name} = ${value} does not fit servo ${id}'s ${model.name} register at ${reg.address}: ${(err as Error).message}`,
      'check the value (calibration file or robot config)',
    );
  }
  const status = await bus.write(id, reg.address, data);
  const number = model.protocol === 'dynamixel' ? status.error & 0x7f : 0;
  if (number !== 0) {
    const access = number === 7;
    throw new ResrtError(
      `servo ${id} refused ${name} = ${value} (${describeStatusError(model, status.error)})`,
      access && reg.address < model.eepromEnd
        ? 'EEPROM fields can only be written with torque off'
        : `check the value against the ${model.name} control table`,
    );
  }
}

/**
 * Writes an EEPROM register so that it is kept, and reads it back. Torque is turned off first (and
 * stays off: the caller decides when to turn it on again).
 */
export async function writeEeprom(
  bus: ServoBus,
  id: number,
  model: MotorModel,
  name: RegisterName,
  value: number,
): Promise<void> {
  if ((await readRegister(bus, id, model, 'torqueEnable')) !== 0) {
    await writeRegister(bus, id, model, 'torqueEnable', 0);
  }
  if (model.lock) await writeRegister(bus, id, model, 'lock', 0);
  try {
    await writeRegister(bus, id, model, name, value);
    const back = await readRegister(bus, id, model, name);
    if (back !== value) {
      throw new ResrtError(
        `servo ${id} did not keep ${name} = ${value} (it reads ${back})`,
        'power the servo off and on, and check that its EEPROM is not locked by another program',
      );
    }
  } finally {
    if (model.lock) await writeRegister(bus, id, model, 'lock', 1).catch(() => undefined);
  }
}

/** True when the error is a transaction that got no answer (rather than a refusal). */
export function isNoAnswer(err: unknown): boolean {
  return err instanceof BusTransactionError;
}
