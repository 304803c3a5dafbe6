/**
 * Motor models: control-table addresses, field widths and encodings, model numbers, units. The
 * addresses are the vendors' (Feetech STS/SMS series memory table; ROBOTIS e-Manual control tables
 * of the XL330-M288, XL330-M077 and XL430-W250), the same LeRobot's motor tables use.
 */
import type { ProtocolName } from './packet.js';

/** How a register stores a signed value. */
export type Encoding =
  | { kind: 'unsigned' }
  /** Feetech: the magnitude in the low bits, the sign in bit `bit` (e.g. Homing_Offset, bit 11). */
  | { kind: 'sign-magnitude'; bit: number }
  /** Dynamixel: two's complement over the register's width. */
  | { kind: 'twos-complement' };

export interface Register {
  address: number;
  size: 1 | 2 | 4;
  encoding: Encoding;
}

export type RegisterName =
  | 'modelNumber'
  | 'id'
  | 'baudRate'
  | 'returnDelay'
  | 'statusReturnLevel'
  | 'minPositionLimit'
  | 'maxPositionLimit'
  | 'maxTemperature'
  | 'homingOffset'
  | 'operatingMode'
  | 'torqueEnable'
  | 'goalPosition'
  | 'presentPosition'
  | 'presentVelocity'
  | 'presentLoad'
  | 'presentVoltage'
  | 'presentTemperature';

export interface MotorModel {
  readonly name: string;
  readonly protocol: ProtocolName;
  readonly modelNumber: number;
  /** Encoder counts per turn. */
  readonly resolution: number;
  readonly registers: Readonly<Record<RegisterName, Register>>;
  /** Feetech only: the EEPROM write lock (address 55; 1 = locked). */
  readonly lock?: Register;
  /** Dynamixel only: Hardware_Error_Status (address 70), read when a status packet raises the alert bit. */
  readonly hardwareError?: Register;
  /** Addresses below this are EEPROM (kept at power-off; guarded by the lock or by torque). */
  readonly eepromEnd: number;
  /** Operating_Mode values: position control, and the others this model offers. */
  readonly operatingModes: Readonly<Record<string, number>>;
  /** present = actual − offset (Feetech) or actual + offset (Dynamixel). */
  readonly homingSign: -1 | 1;
  /** Largest homing offset magnitude the register holds. */
  readonly homingLimit: number;
  /** Encoder counts per second per velocity unit. */
  readonly velocityCountsPerUnit: number;
  /** Fraction of full effort per load/current unit (the load field's full scale). */
  readonly loadPerUnit: number;
  readonly voltsPerUnit: number;
  /** Return delay unit, µs. */
  readonly returnDelayUnitUs: number;
  /** Baud_Rate register value per baud rate. */
  readonly baudRates: Readonly<Record<number, number>>;
  /**
   * The contiguous block read every control tick (one sync read per tick), with the offsets of
   * the fields inside it.
   */
  readonly stateBlock: {
    address: number;
    length: number;
    position: number;
    velocity: number;
    load: number;
    voltage: number;
    temperature: number;
  };
  /** Bits of the status error byte (Feetech) or of Hardware_Error_Status (Dynamixel), named. */
  readonly faultBits: readonly [number, string][];
}

const u = (address: number, size: 1 | 2 | 4): Register => ({ address, size, encoding: { kind: 'unsigned' } });
const sm = (address: number, size: 1 | 2 | 4, bit: number): Register => ({
  address,
  size,
  encoding: { kind: 'sign-magnitude', bit },
});
const tc = (address: number, size: 1 | 2 | 4): Register => ({
  address,
  size,
  encoding: { kind: 'twos-complement' },
});

/** Feetech STS3215 (SO-100/SO-101), protocol 0, 4096 counts per turn. */
export const STS3215: MotorModel = {
  name: 'sts3215',
  protocol: 'feetech',
  modelNumber: 777,
  resolution: 4096,
  registers: {
    modelNumber: u(3, 2),
    id: u(5, 1),
    baudRate: u(6, 1),
    returnDelay: u(7, 1),
    statusReturnLevel: u(8, 1), // Response_Status_Level: 1 = answer every instruction
    minPositionLimit: u(9, 2),
    maxPositionLimit: u(11, 2),
    maxTemperature: u(13, 1),
    homingOffset: sm(31, 2, 11),
    operatingMode: u(33, 1),
    torqueEnable: u(40, 1),
    goalPosition: u(42, 2),
    presentPosition: u(56, 2),
    presentVelocity: sm(58, 2, 15),
    presentLoad: sm(60, 2, 10), // 0.1 % of full torque, direction in bit 10
    presentVoltage: u(62, 1), // 0.1 V
    presentTemperature: u(63, 1), // °C
  },
  lock: u(55, 1),
  eepromEnd: 40,
  operatingModes: { position: 0, velocity: 1, pwm: 2, step: 3 },
  homingSign: -1,
  homingLimit: 2047,
  velocityCountsPerUnit: 1, // steps per second
  loadPerUnit: 0.001,
  voltsPerUnit: 0.1,
  returnDelayUnitUs: 2,
  baudRates: {
    1_000_000: 0,
    500_000: 1,
    250_000: 2,
    128_000: 3,
    115_200: 4,
    57_600: 5,
    38_400: 6,
    19_200: 7,
  },
  // Present_Position 56 .. Present_Temperature 63.
  stateBlock: { address: 56, length: 8, position: 0, velocity: 2, load: 4, voltage: 6, temperature: 7 },
  faultBits: [
    [0x01, 'input voltage'],
    [0x02, 'angle sensor'],
    [0x04, 'overheat'],
    [0x08, 'over-current'],
    [0x20, 'overload'],
  ],
};

const X_SERIES_REGISTERS = {
  modelNumber: u(0, 2),
  id: u(7, 1),
  baudRate: u(8, 1),
  returnDelay: u(9, 1),
  statusReturnLevel: u(68, 1), // 2 = answer every instruction
  minPositionLimit: u(52, 4),
  maxPositionLimit: u(48, 4),
  maxTemperature: u(31, 1),
  homingOffset: tc(20, 4),
  operatingMode: u(11, 1),
  torqueEnable: u(64, 1),
  goalPosition: tc(116, 4),
  presentPosition: tc(132, 4),
  presentVelocity: tc(128, 4), // 0.229 rpm
  presentLoad: tc(126, 2), // XL330: Present_Current (mA); XL430: Present_Load (0.1 %)
  presentVoltage: u(144, 2), // Present_Input_Voltage, 0.1 V
  presentTemperature: u(146, 1),
} satisfies Record<RegisterName, Register>;

const xSeries = (
  name: string,
  modelNumber: number,
  loadPerUnit: number,
  operatingModes: Record<string, number>,
): MotorModel => ({
  name,
  protocol: 'dynamixel',
  modelNumber,
  resolution: 4096,
  registers: X_SERIES_REGISTERS,
  hardwareError: u(70, 1),
  eepromEnd: 64,
  operatingModes,
  homingSign: 1,
  homingLimit: 1_044_479,
  velocityCountsPerUnit: (0.229 * 4096) / 60,
  loadPerUnit,
  voltsPerUnit: 0.1,
  returnDelayUnitUs: 2,
  baudRates: { 9600: 0, 57_600: 1, 115_200: 2, 1_000_000: 3, 2_000_000: 4, 3_000_000: 5, 4_000_000: 6 },
  // Present_Current/Load 126 .. Present_Temperature 146.
  stateBlock: { address: 126, length: 21, position: 6, velocity: 2, load: 0, voltage: 18, temperature: 20 },
  // Hardware_Error_Status bits.
  faultBits: [
    [0x01, 'input voltage'],
    [0x04, 'overheating'],
    [0x08, 'motor encoder'],
    [0x10, 'electrical shock'],
    [0x20, 'overload'],
  ],
});

const XL330_MODES = {
  current: 0,
  velocity: 1,
  position: 3,
  'extended-position': 4,
  'current-position': 5,
  pwm: 16,
};

/** Dynamixel XL330-M288 (Koch follower/leader), Protocol 2.0; Present_Current in mA of a 1750 mA limit. */
export const XL330_M288 = xSeries('xl330-m288', 1200, 1 / 1750, XL330_MODES);
/** Dynamixel XL330-M077. */
export const XL330_M077 = xSeries('xl330-m077', 1190, 1 / 1750, XL330_MODES);
/** Dynamixel XL430-W250 (Koch follower), Protocol 2.0; Present_Load in 0.1 %. */
export const XL430_W250 = xSeries('xl430-w250', 1060, 0.001, {
  velocity: 1,
  position: 3,
  'extended-position': 4,
  pwm: 16,
});

export const MOTOR_MODELS: Readonly<Record<string, MotorModel>> = {
  sts3215: STS3215,
  'xl330-m288': XL330_M288,
  'xl330-m077': XL330_M077,
  'xl430-w250': XL430_W250,
};

export function modelsFor(protocol: ProtocolName): string[] {
  return Object.values(MOTOR_MODELS)
    .filter((m) => m.protocol === protocol)
    .map((m) => m.name);
}

export function modelByNumber(protocol: ProtocolName, modelNumber: number): MotorModel | undefined {
  return Object.values(MOTOR_MODELS).find((m) => m.protocol === protocol && m.modelNumber === modelNumber);
}

/** Raw register bytes (little-endian) → signed or unsigned integer. */
export function decodeRegister(reg: Register, bytes: Uint8Array, offset = 0): number {
  let raw = 0;
  for (let i = reg.size - 1; i >= 0; i--) raw = raw * 256 + bytes[offset + i];
  const e = reg.encoding;
  if (e.kind === 'sign-magnitude') {
    const sign = 2 ** e.bit;
    const magnitude = raw % sign;
    return Math.floor(raw / sign) % 2 === 1 ? -magnitude : magnitude;
  }
  if (e.kind === 'twos-complement') {
    const full = 2 ** (8 * reg.size);
    return raw >= full / 2 ? raw - full : raw;
  }
  return raw;
}

/** Integer → register bytes (little-endian); throws when the value does not fit. */
export function encodeRegister(reg: Register, value: number): Uint8Array {
  if (!Number.isInteger(value)) throw new RangeError(`register value ${value} is not an integer`);
  const full = 2 ** (8 * reg.size);
  const e = reg.encoding;
  let raw: number;
  if (e.kind === 'sign-magnitude') {
    const sign = 2 ** e.bit;
    if (Math.abs(value) >= sign)
      throw new RangeError(`${value} does not fit a sign-magnitude field with sign bit ${e.bit}`);
    raw = value < 0 ? sign + -value : value;
  } else if (e.kind === 'twos-complement') {
    if (value < -full / 2 || value >= full / 2)
      throw new RangeError(`${value} does not fit ${reg.size} signed bytes`);
    raw = value < 0 ? value + full : value;
  } else {
    if (value < 0 || value >= full) throw new RangeError(`${value} does not fit ${reg.size} unsigned bytes`);
    raw = value;
  }
  const out = new Uint8Array(reg.size);
  for (let i = 0; i < reg.size; i++) {
    out[i] = raw % 256;
    raw = Math.floor(raw / 256);
  }
  return out;
}
