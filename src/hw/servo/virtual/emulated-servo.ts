/**
 * One emulated servo: the model's control table in memory with the rules a real one enforces on
 * it (read-only fields, EEPROM guarded by the Feetech lock or by Dynamixel torque, position
 * limits, homing offset), its present values computed from a physical joint, and fault bits a test
 * can raise (overload, overheat, input voltage).
 */
import { decodeRegister, encodeRegister, type MotorModel, type Register } from '../models.js';

/** The shaft a servo turns: what the physics (or a test) provides. */
export interface ServoJoint {
  /** Absolute encoder counts of the shaft, before any homing offset. */
  counts(): number;
  /** Counts per second. */
  velocityCounts(): number;
  /** Load as a fraction of full effort, signed. */
  load(): number;
  /** The servo drives the shaft toward these absolute counts while torque is on. */
  setGoalCounts(counts: number): void;
  setTorque(on: boolean): void;
}

/** A joint with no physics: the shaft is wherever it was put, and jumps to its goal. */
export class IdealJoint implements ServoJoint {
  torque = false;
  goal: number | null = null;
  constructor(public position = 2048) {}
  counts(): number {
    return this.torque && this.goal !== null ? this.goal : this.position;
  }
  velocityCounts(): number {
    return 0;
  }
  load(): number {
    return 0;
  }
  setGoalCounts(counts: number): void {
    this.goal = counts;
    if (this.torque) this.position = counts;
  }
  setTorque(on: boolean): void {
    this.torque = on;
    if (on && this.goal !== null) this.position = this.goal;
  }
}

/** Dynamixel status error numbers (bits 0-6). */
export const DxlError = {
  InstructionError: 2,
  DataRange: 4,
  DataLength: 5,
  DataLimit: 6,
  Access: 7,
} as const;

export interface EmulatedServoOptions {
  /** Return delay register value at power-on (× 2 µs). Default 0. */
  returnDelay?: number;
  voltage?: number;
  temperature?: number;
}

export class EmulatedServo {
  /** The control table as the servo holds it now. */
  readonly memory = new Uint8Array(256);
  /** What survives a power cycle (the EEPROM area as last saved). */
  private readonly saved = new Uint8Array(256);
  /** Fault bits raised by a test: status error bits (Feetech) or Hardware_Error_Status (Dynamixel). */
  faults = 0;
  temperature: number;
  voltage: number;

  constructor(
    readonly model: MotorModel,
    id: number,
    readonly joint: ServoJoint,
    options: EmulatedServoOptions = {},
  ) {
    this.temperature = options.temperature ?? 32;
    this.voltage = options.voltage ?? (model.protocol === 'feetech' ? 7.4 : 5.0);
    const r = model.registers;
    this.set(r.modelNumber, model.modelNumber);
    this.set(r.id, id);
    this.set(r.baudRate, model.baudRates[1_000_000]);
    this.set(r.returnDelay, options.returnDelay ?? 0);
    this.set(r.statusReturnLevel, model.protocol === 'feetech' ? 1 : 2);
    this.set(r.minPositionLimit, 0);
    this.set(r.maxPositionLimit, model.resolution - 1);
    this.set(r.maxTemperature, model.protocol === 'feetech' ? 70 : 70);
    this.set(r.operatingMode, model.operatingModes.position);
    if (model.lock) this.set(model.lock, 1);
    this.saved.set(this.memory.subarray(0, model.eepromEnd));
  }

  get id(): number {
    return this.get(this.model.registers.id);
  }

  get returnDelayUs(): number {
    return this.get(this.model.registers.returnDelay) * this.model.returnDelayUnitUs;
  }

  get torqueOn(): boolean {
    return this.get(this.model.registers.torqueEnable) !== 0;
  }

  /** Answers every instruction (not just reads and pings). */
  get answersWrites(): boolean {
    const level = this.get(this.model.registers.statusReturnLevel);
    return this.model.protocol === 'feetech' ? level >= 1 : level >= 2;
  }

  get(reg: Register): number {
    return decodeRegister(reg, this.memory, reg.address);
  }

  private set(reg: Register, value: number): void {
    this.memory.set(encodeRegister(reg, value), reg.address);
  }

  /** Power off and on: RAM is lost, the EEPROM area comes back as last saved. */
  powerCycle(): void {
    const eeprom = this.saved.slice(0, this.model.eepromEnd);
    this.memory.fill(0);
    this.memory.set(eeprom, 0);
    if (this.model.lock) this.set(this.model.lock, 1);
    this.joint.setTorque(false);
  }

  /** Present position as this servo reports it: the shaft's counts shifted by the homing offset. */
  presentCounts(): number {
    const offset = this.get(this.model.registers.homingOffset);
    const actual = Math.round(this.joint.counts());
    if (this.model.protocol === 'feetech') {
      // STS: present = actual − offset, within one turn.
      const res = this.model.resolution;
      return (((actual - offset) % res) + res) % res;
    }
    return actual + offset;
  }

  /** Refreshes the read-only present values from the joint before a read. */
  private refresh(): void {
    const r = this.model.registers;
    const m = this.model;
    this.set(r.presentPosition, this.presentCounts());
    const vel = Math.round(this.joint.velocityCounts() / m.velocityCountsPerUnit);
    this.set(r.presentVelocity, clampTo(r.presentVelocity, vel));
    const load = Math.round(this.joint.load() / m.loadPerUnit);
    this.set(r.presentLoad, clampTo(r.presentLoad, load));
    this.set(r.presentVoltage, Math.round(this.voltage / m.voltsPerUnit));
    this.set(r.presentTemperature, Math.round(this.temperature));
    if (m.hardwareError) this.set(m.hardwareError, this.faults);
  }

  /** The error byte of this servo's status packets. */
  statusError(): number {
    if (this.model.protocol === 'feetech') return this.faults & 0x7f;
    return this.faults !== 0 ? 0x80 : 0;
  }

  read(address: number, length: number): { error: number; data: Uint8Array } {
    if (address + length > 256 || length < 1) {
      return { error: this.model.protocol === 'feetech' ? 0 : DxlError.DataLength, data: new Uint8Array(0) };
    }
    this.refresh();
    return { error: this.statusError(), data: this.memory.slice(address, address + length) };
  }

  /** Applies a write; returns the status error (a Dynamixel error number, or the Feetech fault bits). */
  write(address: number, data: Uint8Array): number {
    const m = this.model;
    const r = m.registers;
    const end = address + data.length;
    if (end > 256 || data.length === 0) return m.protocol === 'feetech' ? 0 : DxlError.DataLength;
    const touches = (reg: Register): boolean => address < reg.address + reg.size && end > reg.address;
    const readOnly = [
      r.modelNumber,
      r.presentPosition,
      r.presentVelocity,
      r.presentLoad,
      r.presentVoltage,
      r.presentTemperature,
    ];
    if (readOnly.some(touches)) {
      // Dynamixel refuses the whole write; Feetech ignores it.
      return m.protocol === 'feetech' ? this.statusError() : DxlError.Access;
    }
    const inEeprom = address < m.eepromEnd;
    if (inEeprom && m.protocol === 'dynamixel' && this.torqueOn) return DxlError.Access;
    const next = this.memory.slice();
    next.set(data, address);
    if (touches(r.goalPosition)) {
      const goal = decodeRegister(r.goalPosition, next, r.goalPosition.address);
      const lo = this.get(r.minPositionLimit);
      const hi = this.get(r.maxPositionLimit);
      const positionMode = this.get(r.operatingMode) === m.operatingModes.position;
      if (positionMode && (goal < lo || goal > hi)) {
        // Dynamixel rejects a goal past its limits; Feetech clamps it.
        if (m.protocol === 'dynamixel') return DxlError.DataLimit;
        next.set(encodeRegister(r.goalPosition, Math.max(lo, Math.min(hi, goal))), r.goalPosition.address);
      }
    }
    this.memory.set(next);
    const lockOpen = m.lock ? this.get(m.lock) === 0 : true;
    if (inEeprom && lockOpen) this.saved.set(this.memory.subarray(0, m.eepromEnd));
    if (touches(r.torqueEnable)) this.joint.setTorque(this.torqueOn);
    if (touches(r.goalPosition) || touches(r.torqueEnable)) this.joint.setGoalCounts(this.goalActualCounts());
    return this.statusError();
  }

  /** The goal register in the shaft's absolute counts (undoing the homing offset). */
  goalActualCounts(): number {
    const offset = this.get(this.model.registers.homingOffset);
    const goal = this.get(this.model.registers.goalPosition);
    if (this.model.protocol === 'feetech') {
      // Within one turn of where the shaft is now.
      const res = this.model.resolution;
      const actual = this.joint.counts();
      let target = goal + offset;
      target += res * Math.round((actual - target) / res);
      return target;
    }
    return goal - offset;
  }

  /** Sets the goal register to the present position (what a scene reset does, so nothing jumps). */
  holdHere(): void {
    const r = this.model.registers;
    this.set(r.goalPosition, clampTo(r.goalPosition, this.presentCounts()));
    this.joint.setGoalCounts(this.goalActualCounts());
  }
}

function clampTo(reg: Register, v: number): number {
  const e = reg.encoding;
  const full = 2 ** (8 * reg.size);
  if (e.kind === 'sign-magnitude') {
    const m = 2 ** e.bit - 1;
    return Math.max(-m, Math.min(m, v));
  }
  if (e.kind === 'twos-complement') return Math.max(-full / 2, Math.min(full / 2 - 1, v));
  return Math.max(0, Math.min(full - 1, v));
}
