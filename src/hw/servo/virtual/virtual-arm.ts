/**
 * `resrt virtual-servo-bus`: the SO-101-like arm in MuJoCo behind six emulated servos (Feetech
 * STS3215, or Dynamixel XL330-M288 as on a Koch arm) and a scene board, on a virtual bus behind a
 * pseudo-terminal, with the robot config and the exact calibration a client needs to drive it like
 * the real arm: `resrt eval|run|train|actor --robot feetech:<pty> --robot-config <file> --virtual`.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { JOINTS } from '../../../sim/tasks/so101/model.js';
import { SCENE_NAMES, so101PickPlaceTask, MAX_STEP, normalizeJoint } from '../../../sim/tasks/so101/task.js';
import { parseRobotConfig, type RobotConfig } from '../../robot-config.js';
import type { Calibration } from '../calibration.js';
import { homingOffsetFor } from '../calibration.js';
import { MOTOR_MODELS, type MotorModel } from '../models.js';
import { codecFor } from '../bus.js';
import { Instruction, readField, type ProtocolName } from '../packet.js';
import { ServoArmPlant, SCENE_VALUES, type ArmPlantOptions } from './arm-plant.js';
import { EmulatedServo } from './emulated-servo.js';
import { SceneBoardDevice } from './scene-board-device.js';
import { VirtualServoBus } from './virtual-bus.js';

export const SCENE_BOARD_ID = 20;
const HOME = [0, 1.3, -1.8, -1.07, 0, 0.024];

export interface VirtualArmOptions extends ArmPlantOptions {
  protocol: ProtocolName;
  /** Folder for the pty links (default: a temporary one). */
  dir?: string;
  dropRate?: number;
  corruptRate?: number;
  /** The servos' return delay register at power-on, × 2 µs (default 0). */
  returnDelay?: number;
  /** What the servos do on a fault (written into the robot config; default "hold"). */
  onFault?: 'hold' | 'torque-off';
  pollHz?: number;
}

export interface VirtualArm {
  bus: VirtualServoBus;
  plant: ServoArmPlant;
  servos: EmulatedServo[];
  robotUrl: string;
  /** The calibration that matches the emulated mounting exactly. */
  calibration: Calibration;
  /** Writes `<dir>/<name>.json` and its calibration beside it; returns the config's path. */
  writeConfig(dir: string, name?: string): string;
  config(calibrationFile: string): RobotConfig;
  close(): Promise<void>;
}

export function armModel(protocol: ProtocolName): MotorModel {
  return protocol === 'feetech' ? MOTOR_MODELS.sts3215 : MOTOR_MODELS['xl330-m288'];
}

export async function startVirtualServoArm(options: VirtualArmOptions): Promise<VirtualArm> {
  const model = armModel(options.protocol);
  const plant = await ServoArmPlant.create(options);
  const servos = plant.joints.map(
    (j, k) => new EmulatedServo(model, k + 1, j, { returnDelay: options.returnDelay ?? 0 }),
  );
  plant.onSceneReset = () => {
    for (const s of servos) s.holdHere();
  };
  const codec = codecFor(options.protocol);
  const board = new SceneBoardDevice(options.protocol, SCENE_BOARD_ID, () => plant.sceneValues());
  let bus: VirtualServoBus;
  try {
    bus = await VirtualServoBus.start({
      protocol: options.protocol,
      devices: [...servos, board],
      dir: options.dir,
      dropRate: options.dropRate,
      corruptRate: options.corruptRate,
      seed: options.seed,
      beforeInstruction: () => plant.advance(),
      afterInstruction: (p) => {
        // A sync write of every joint's goal is the host's control step (lockstep physics).
        if (
          p.instruction === Instruction.SyncWrite &&
          p.params.length >= 2 * codec.fieldBytes &&
          readField(p.params, 0, codec.fieldBytes) === model.registers.goalPosition.address
        )
          plant.goalsSyncWritten();
      },
    });
  } catch (err) {
    plant.close();
    throw err;
  }
  const calibration = exactCalibration(options.protocol, model);
  const rateHz = Math.round(1000 / plant.controlPeriodMs);
  const config = (calibrationFile: string): RobotConfig =>
    parseRobotConfig(
      {
        name: options.protocol === 'feetech' ? 'so101-virtual' : 'koch-virtual',
        transport: bus.robotUrl,
        rateHz,
        // In lockstep nothing moves while a command waits, so it cannot go stale.
        commandValidMs: options.lockstep ? 2000 : Math.max(50, Math.round(3 * plant.controlPeriodMs)),
        action: {
          dim: JOINTS.length,
          names: JOINTS.map((j) => j.name),
          low: JOINTS.map(() => -1),
          high: JOINTS.map(() => 1),
          safe: HOME.map((q, k) => Number(normalizeJoint(k, q).toFixed(4))),
        },
        observation: [
          { field: 'positions' },
          { field: 'velocities' },
          { field: 'sensors', indices: SCENE_NAMES.map((_, i) => i) },
        ],
        episode: {
          maxSteps: so101PickPlaceTask.maxEpisodeSteps,
          reset: { mode: 'manual', prompt: 'the virtual arm resets its own scene after each episode' },
          success: { mode: 'sensor', index: SCENE_NAMES.length, threshold: 0.5 },
        },
        servo: {
          joints: JOINTS.map((j, k) => ({
            name: j.name,
            id: k + 1,
            model: model.name,
            ...(j.sign < 0 ? { invert: true } : {}),
          })),
          calibration: calibrationFile,
          onFault: options.onFault ?? 'hold',
          maxStep: MAX_STEP,
          pollHz: options.pollHz ?? Math.max(100, 2 * rateHz),
          // The virtual bus shares the machine with its client: wait long enough for a busy one.
          timeoutMarginMs: 100,
          retries: 3,
          linkTimeoutMs: 3000,
          scene: {
            id: SCENE_BOARD_ID,
            values: SCENE_VALUES,
            ...(options.lockstep ? { lockstep: true } : {}),
          },
        },
      },
      'virtual servo arm config',
    );
  return {
    bus,
    plant,
    servos,
    robotUrl: bus.robotUrl,
    calibration,
    config,
    writeConfig(dir, name = options.protocol === 'feetech' ? 'so101-virtual' : 'koch-virtual') {
      const calFile = `${name}-calibration.json`;
      writeFileSync(join(dir, calFile), JSON.stringify(calibration, null, 2) + '\n');
      const path = join(dir, `${name}.json`);
      writeFileSync(path, JSON.stringify(config(calFile), null, 2) + '\n');
      return path;
    },
    async close() {
      await bus.close();
      plant.close();
    },
  };
}

/** The calibration a careful person would record on the emulated arm: its joint limits, exactly. */
function exactCalibration(protocol: ProtocolName, model: MotorModel): Calibration {
  const joints: Calibration['joints'] = {};
  for (const [k, j] of JOINTS.entries()) {
    const actual = (q: number): number => j.zeroCounts + j.sign * j.countsPerUnit * q;
    const offset = homingOffsetFor(model, Math.round(actual((j.low + j.high) / 2)));
    const present = (q: number): number => Math.round(actual(q)) + model.homingSign * offset;
    const a = present(j.low);
    const b = present(j.high);
    joints[j.name] = {
      id: k + 1,
      model: model.name,
      homingOffset: offset,
      rangeMin: Math.min(a, b),
      rangeMax: Math.max(a, b),
      direction: j.sign,
    };
  }
  return {
    format: 'resrt-servo-calibration',
    version: 1,
    protocol,
    createdAt: new Date(0).toISOString(),
    joints,
  };
}
