/**
 * A Robot made of bus servos (SO-101 on Feetech STS3215, Koch on Dynamixel XL330/XL430). Every poll
 * tick writes the newest command's goals with one sync write and reads every servo's state block
 * with one sync read, as LeRobot does; the safety layer and the control loop above see only the
 * Robot seam.
 *
 * State (RobotState), per joint i of the config, in order:
 *   positions[i]  present position, normalized through the calibration ([-1, 1] over the range)
 *   velocities[i] present velocity, normalized units per second
 *   efforts[i]    present load (Feetech; XL430) or current over its limit (XL330), signed fraction
 *   sensors       [scene values (when a scene board is configured)...,
 *                  then per joint: temperature °C, input voltage V, fault bits]
 * Commands: normalized goals → raw goals through the calibration, clamped to the calibrated range
 * and to `maxStep` from the present position.
 *
 * Faults — an e-stop, a lost link, a servo raising overload/overheat/voltage bits — set `faulted`
 * and put the servos in the configured state on the next tick: "hold" (goal = present position,
 * torque on) or "torque-off". Commands are refused until resetFault(), which re-enables torque at
 * the present position.
 */
import { BehaviorSubject, ReplaySubject, Subject, type Observable } from 'rxjs';
import type { LinkStatus, Robot, RobotCapabilities, RobotCommand, RobotState } from '../../types.js';
import { ResrtError } from '../../util/errors.js';
import { ServoBus, type BusCounters } from './bus.js';
import {
  countsToNormalized,
  denormalize,
  normalize,
  type Calibration,
  type JointCalibration,
} from './calibration.js';
import { decodeRegister, encodeRegister, MOTOR_MODELS, modelByNumber, type MotorModel } from './models.js';
import { faultNames, readRegister, writeEeprom, writeRegister } from './registers.js';
import { readSceneBoard } from './scene-board.js';
import { sectionProtocol, type ServoSection, type ServoUrl } from './servo-config.js';

export interface ServoRobotOptions {
  name: string;
  section: ServoSection;
  calibration: Calibration;
  /** The config's action.safe (what HardwareEnv sends on a fault). */
  safeAction: number[];
  /** For error messages: how the user reaches this arm. */
  robotUrl?: string;
}

export interface ServoFault {
  reason: string;
  fix: string;
  atMs: number;
}

export interface ServoRobotState extends RobotState {
  /** Per joint: fault bits (status error byte, or Dynamixel Hardware_Error_Status). */
  faultBits: number[];
  /** Joints whose status packet was missing this tick (values repeat the last ones). */
  stale: number[];
}

export interface ServoRobotCounters extends BusCounters {
  ticks: number;
  overruns: number;
  commandsSent: number;
  commandsRefused: number;
  /** Goals cut to the calibrated range or to maxStep from the present position. */
  goalsClamped: number;
  /** Joint readings missing after every retry. */
  staleReadings: number;
  faults: number;
}

interface Joint {
  name: string;
  id: number;
  model: MotorModel;
  cal: JointCalibration;
}

const FIXES: Record<string, string> = {
  overload: 'the joint is blocked or carries too much: free it, then reset the fault',
  overheat: 'let the servo cool down before resetting the fault',
  overheating: 'let the servo cool down before resetting the fault',
  'input voltage': 'check the power supply (voltage and current rating) before resetting the fault',
  'over-current': 'the joint is blocked or shorted: free it and check the wiring',
  'electrical shock': 'check the wiring and the power supply; power-cycle the servo',
  'angle sensor': "the servo's position sensor failed: power-cycle it; replace the servo if it persists",
  'motor encoder': "the servo's encoder failed: power-cycle it; replace the servo if it persists",
};

export class ServoRobot implements Robot {
  readonly capabilities: RobotCapabilities;
  private readonly stateSubject = new ReplaySubject<ServoRobotState>(1);
  private readonly statusSubject = new BehaviorSubject<LinkStatus>('connecting');
  private readonly faultSubject = new Subject<ServoFault>();
  readonly state$: Observable<ServoRobotState> = this.stateSubject.asObservable();
  readonly status$: Observable<LinkStatus> = this.statusSubject.asObservable();
  /** Every fault as it is latched, with the fix. */
  readonly fault$: Observable<ServoFault> = this.faultSubject.asObservable();
  private readonly joints: Joint[];
  private readonly ids: number[];
  private readonly block: MotorModel['stateBlock'];
  private faulted = false;
  private faultActionDue = false;
  private fault: ServoFault | null = null;
  private command: { action: Float32Array; deadline: number; sentAtMs: number } | null = null;
  /** A tick was asked for by send() and has not started yet. */
  private kicked = false;
  private latest: ServoRobotState | null = null;
  private raw: number[];
  private lastAnswerMs = performance.now();
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private lock: Promise<void> = Promise.resolve();
  private closed = false;
  private recovering = false;
  private readonly stats = {
    ticks: 0,
    overruns: 0,
    commandsSent: 0,
    commandsRefused: 0,
    goalsClamped: 0,
    staleReadings: 0,
    faults: 0,
  };

  private constructor(
    private readonly bus: ServoBus,
    private readonly options: ServoRobotOptions,
  ) {
    const s = options.section;
    this.joints = s.joints.map((j) => ({
      name: j.name,
      id: j.id,
      model: MOTOR_MODELS[j.model],
      cal: options.calibration.joints[j.name],
    }));
    this.ids = this.joints.map((j) => j.id);
    this.block = this.joints[0].model.stateBlock;
    if (
      this.joints.some(
        (j) =>
          j.model.stateBlock.address !== this.block.address ||
          j.model.stateBlock.length !== this.block.length,
      )
    ) {
      throw new ResrtError(
        'the servos of this arm have different state layouts and cannot share one sync read',
        'use one servo family per bus (e.g. all XL330 or XL430, or all STS3215)',
      );
    }
    this.raw = this.joints.map(() => 0);
    const n = this.joints.length;
    const sceneValues = s.scene?.values ?? 0;
    this.capabilities = {
      name: options.name,
      actionDim: n,
      actionNames: this.joints.map((j) => j.name),
      jointCount: n,
      sensorCount: sceneValues + 3 * n,
      rateHz: s.pollHz,
      safeAction: [...options.safeAction],
      actionLow: new Array<number>(n).fill(-1),
      actionHigh: new Array<number>(n).fill(1),
      firmwareVersion: `${sectionProtocol(s)} bus: ${[...new Set(this.joints.map((j) => j.model.name))].join(', ')}`,
    };
  }

  /** Opens the bus, checks every servo, writes what the calibration needs, enables torque in place. */
  static async open(url: ServoUrl, options: ServoRobotOptions): Promise<ServoRobot> {
    const s = options.section;
    const protocol = sectionProtocol(s);
    if (url.protocol !== protocol) {
      throw new ResrtError(
        `the robot URL says ${url.protocol} but the configured servos are ${protocol} servos`,
        `connect with ${protocol}:${url.path}`,
      );
    }
    if (options.calibration.protocol !== protocol) {
      throw new ResrtError(
        `the calibration is for a ${options.calibration.protocol} bus`,
        'calibrate this arm',
      );
    }
    const bus = await ServoBus.open(url.path, {
      protocol,
      baudRate: url.baudRate,
      retries: s.retries,
      timeoutMarginMs: s.timeoutMarginMs,
      returnDelayUs: s.returnDelayUs ?? 0,
    });
    const robot = new ServoRobot(bus, {
      ...options,
      robotUrl: options.robotUrl ?? `${protocol}:${url.path}`,
    });
    try {
      await robot.checkServos();
      await robot.setUp();
      robot.publish(await robot.readState());
    } catch (err) {
      await bus.close();
      throw err;
    }
    robot.attach();
    robot.statusSubject.next('connected');
    robot.start();
    return robot;
  }

  // -- the Robot seam ---------------------------------------------------------------------------

  send(command: RobotCommand): boolean {
    const a = command.action;
    const ok =
      !this.faulted &&
      this.statusSubject.value === 'connected' &&
      a.length === this.joints.length &&
      a.every((v) => Number.isFinite(v)) &&
      Number.isFinite(command.validForMs) &&
      command.validForMs >= 0;
    if (!ok) {
      this.stats.commandsRefused++;
      return false;
    }
    const now = performance.now();
    this.command = { action: Float32Array.from(a), deadline: now + command.validForMs, sentAtMs: now };
    this.stats.commandsSent++;
    this.kick();
    return true;
  }

  estop(reason: string): void {
    this.latchFault(`e-stop: ${reason}`, 'check the cell, then reset the fault');
  }

  async resetFault(): Promise<void> {
    if (this.statusSubject.value !== 'connected') {
      throw new ResrtError(
        `cannot reset the arm's fault: its link is ${this.statusSubject.value}`,
        'reconnect the bus first',
      );
    }
    await this.exclusive(async () => {
      // Read the servos now: a state published before the person cleared the cause (or one whose
      // read was already on the wire) would refuse a reset that is safe, or allow one that is not.
      const fresh = await this.readState();
      if (!fresh) {
        throw new ResrtError(
          "cannot reset the arm's fault: no servo answered the status read",
          'check the bus cable and power, then reset again',
        );
      }
      this.publish(fresh);
      const bits = fresh.faultBits;
      const still = this.joints.filter((_, k) => bits[k]);
      if (still.length > 0) {
        const j = still[0];
        const names = faultNames(j.model, bits[this.joints.indexOf(j)]);
        throw new ResrtError(
          `servo ${j.name} (id ${j.id}) still reports ${names.join(', ')}`,
          FIXES[names[0]] ?? 'clear the cause, then reset again',
        );
      }
      this.command = null;
      await this.enableInPlace();
      this.faulted = false;
      this.faultActionDue = false;
      this.fault = null;
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    // After a tick in flight, leave the servos in the configured fault state.
    await this.exclusive(async () => {
      if (this.bus.isUp) await this.applyFaultAction().catch(() => undefined);
    });
    await this.bus.close();
    this.statusSubject.next('closed');
    this.statusSubject.complete();
    this.stateSubject.complete();
    this.faultSubject.complete();
  }

  // -- more than the seam -----------------------------------------------------------------------

  get status(): LinkStatus {
    return this.statusSubject.value;
  }

  get latestState(): ServoRobotState | null {
    return this.latest;
  }

  /** The latched fault, or null. */
  get currentFault(): ServoFault | null {
    return this.fault;
  }

  counters(): ServoRobotCounters {
    return { ...this.bus.counters(), ...this.stats };
  }

  /** The bus under the robot (fault-injection tests, the leader arm). */
  get servoBus(): ServoBus {
    return this.bus;
  }

  // -- setup --------------------------------------------------------------------------------------

  private async checkServos(): Promise<void> {
    const fixScan = `run \`resrt servo scan --robot ${this.options.robotUrl}\` to see which ids answer`;
    for (const j of this.joints) {
      const before = this.bus.counters().checksumErrors;
      const r = await this.bus.ping(j.id);
      if (!r) {
        const corrupt = this.bus.counters().checksumErrors > before;
        throw new ResrtError(
          corrupt
            ? `servo ${j.name} (id ${j.id}) answers only with corrupt packets: two servos may share id ${j.id}`
            : `servo ${j.name} (id ${j.id}) does not answer on ${this.bus.path}`,
          corrupt
            ? `connect the servos one at a time and give each its own id; ${fixScan}`
            : `check its power and cable, the baud rate (${this.bus.baudRate}) and its id; ${fixScan}`,
        );
      }
      if (r.modelNumber !== j.model.modelNumber) {
        const actual = modelByNumber(j.model.protocol, r.modelNumber);
        throw new ResrtError(
          `servo ${j.name} (id ${j.id}) is a ${actual?.name ?? `model ${r.modelNumber}`}, the robot config says ${j.model.name} (model ${j.model.modelNumber})`,
          `fix the model of ${j.name} in the robot config, or check that the servo at id ${j.id} is the one you mean`,
        );
      }
    }
  }

  /** Brings EEPROM settings in line with the config and calibration (written only when they differ). */
  private async setUp(): Promise<void> {
    const s = this.options.section;
    for (const j of this.joints) {
      const jc = s.joints.find((x) => x.name === j.name)!;
      const wanted: [Parameters<typeof writeEeprom>[3], number][] = [
        ['operatingMode', j.model.operatingModes[jc.mode ?? 'position']],
        ['homingOffset', j.cal.homingOffset],
      ];
      if (j.model.protocol === 'feetech' || (jc.mode ?? 'position') === 'position') {
        wanted.push(['minPositionLimit', j.cal.rangeMin], ['maxPositionLimit', j.cal.rangeMax]);
      }
      if (s.returnDelayUs !== undefined) {
        wanted.push(['returnDelay', Math.round(s.returnDelayUs / j.model.returnDelayUnitUs)]);
      }
      for (const [name, value] of wanted) {
        if ((await readRegister(this.bus, j.id, j.model, name)) !== value) {
          await writeEeprom(this.bus, j.id, j.model, name, value);
        }
      }
    }
    await this.enableInPlace();
  }

  /** Goal = present position, then torque on: nothing moves. */
  private async enableInPlace(): Promise<void> {
    for (const j of this.joints) {
      const present = await readRegister(this.bus, j.id, j.model, 'presentPosition');
      await writeRegister(this.bus, j.id, j.model, 'goalPosition', present);
      await writeRegister(this.bus, j.id, j.model, 'torqueEnable', 1);
    }
  }

  // -- the poll loop -------------------------------------------------------------------------------

  private attach(): void {
    this.bus.onDown((reason) => {
      this.statusSubject.next('lost');
      this.latchFault(
        `servo bus link lost (${reason})`,
        'plug the adapter back in and check servo power; the bus reconnects by itself, then reset the fault',
      );
    });
    this.bus.onUp(() => void this.recover());
  }

  private async recover(): Promise<void> {
    this.statusSubject.next('connecting');
    this.recovering = true;
    try {
      await this.exclusive(async () => {
        await this.checkServos();
        // Back, but still faulted: the servos go to the configured fault state first.
        await this.applyFaultAction();
        this.faultActionDue = false;
        this.lastAnswerMs = performance.now();
      });
      if (this.bus.isUp) this.statusSubject.next('connected');
    } catch (err) {
      this.bus.fail(`servos did not come back after reconnecting: ${(err as Error).message.split('\n')[0]}`);
    } finally {
      this.recovering = false;
    }
  }

  private start(): void {
    const periodMs = 1000 / this.options.section.pollHz;
    let next = performance.now() + periodMs;
    const loop = async (): Promise<void> => {
      if (this.closed) return;
      try {
        if (this.bus.isUp && !this.recovering) await this.exclusive(() => this.tick());
      } catch {
        // A transaction that failed is counted by the bus; the next tick tries again.
      }
      if (this.closed) return;
      const now = performance.now();
      next += periodMs;
      if (next < now) {
        this.stats.overruns++;
        next = now + periodMs;
      }
      this.timer = setTimeout(() => void loop(), Math.max(0, next - now));
    };
    this.timer = setTimeout(() => void loop(), periodMs);
  }

  /** A command goes out on the bus at once, not at the next poll tick (a tick in flight takes it). */
  private kick(): void {
    if (this.running || this.kicked || this.closed || this.recovering || !this.bus.isUp) return;
    this.kicked = true;
    void this.exclusive(async () => {
      this.kicked = false;
      if (this.bus.isUp && !this.recovering && !this.closed) await this.tick();
    }).catch(() => undefined);
  }

  /** Runs `fn` with no other bus work of this robot in between (ticks, resets, recovery). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(async () => {
      this.running = true;
      try {
        return await fn();
      } finally {
        this.running = false;
      }
    });
    this.lock = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async tick(): Promise<void> {
    this.stats.ticks++;
    let state: ServoRobotState | null = null;
    // A command (or fault) that arrives while a pass reads is written before the state goes out:
    // whoever sends a command and then waits for a newer state gets one that follows it.
    for (let pass = 0; pass < 2; pass++) {
      const startedMs = performance.now();
      if (this.faultActionDue) {
        this.faultActionDue = false;
        await this.applyFaultAction();
      } else if (this.command && !this.faulted) {
        const cmd = this.command;
        this.command = null;
        if (performance.now() <= cmd.deadline) await this.writeGoals(cmd.action);
      }
      state = (await this.readState()) ?? state;
      const arrived = this.command !== null && this.command.sentAtMs >= startedMs && !this.faulted;
      if (!arrived && !this.faultActionDue) break;
    }
    this.publish(state);
    if (performance.now() - this.lastAnswerMs > this.options.section.linkTimeoutMs && this.bus.isUp) {
      this.bus.fail(`no servo answered for ${Math.round(performance.now() - this.lastAnswerMs)} ms`);
    }
  }

  private async writeGoals(action: Float32Array): Promise<void> {
    const maxStep = this.options.section.maxStep;
    const entries = this.joints.map((j, k) => {
      const c = j.cal;
      const present = this.raw[k];
      let goal = denormalize(c, Math.max(-1, Math.min(1, action[k])));
      const stepCounts = (maxStep / 2) * (c.rangeMax - c.rangeMin);
      const lo = Math.max(c.rangeMin, present - stepCounts);
      const hi = Math.min(c.rangeMax, present + stepCounts);
      const clamped = Math.max(Math.min(lo, hi), Math.min(Math.max(lo, hi), goal));
      if (Math.abs(clamped - goal) > 0.5 || Math.abs(action[k]) > 1) this.stats.goalsClamped++;
      goal = Math.round(clamped);
      return { id: j.id, data: encodeRegister(j.model.registers.goalPosition, goal) };
    });
    const reg = this.joints[0].model.registers.goalPosition;
    await this.bus.syncWrite(reg.address, reg.size, entries);
  }

  private async applyFaultAction(): Promise<void> {
    if (this.options.section.onFault === 'torque-off') {
      const reg = this.joints[0].model.registers.torqueEnable;
      await this.bus.syncWrite(
        reg.address,
        reg.size,
        this.joints.map((j) => ({ id: j.id, data: Uint8Array.of(0) })),
      );
    } else {
      // Hold: the goal becomes where each joint is now.
      const reg = this.joints[0].model.registers.goalPosition;
      const { data } = await this.bus.syncRead(
        this.joints[0].model.registers.presentPosition.address,
        this.joints[0].model.registers.presentPosition.size,
        this.ids,
      );
      const entries = this.joints
        .filter((j) => data.has(j.id))
        .map((j) => ({
          id: j.id,
          data: encodeRegister(
            reg,
            decodeRegister(j.model.registers.presentPosition, data.get(j.id)!.params, 0),
          ),
        }));
      await this.bus.syncWrite(reg.address, reg.size, entries);
    }
  }

  private publish(state: ServoRobotState | null): void {
    if (state) this.stateSubject.next(state);
  }

  /** Reads every servo (and the scene board); null when nothing answered and a state exists. */
  private async readState(): Promise<ServoRobotState | null> {
    const n = this.joints.length;
    const { data } = await this.bus.syncRead(this.block.address, this.block.length, this.ids);
    if (data.size > 0) this.lastAnswerMs = performance.now();
    const prev = this.latest;
    const positions = new Float32Array(n);
    const velocities = new Float32Array(n);
    const efforts = new Float32Array(n);
    const sceneValues = this.options.section.scene?.values ?? 0;
    const sensors = new Float32Array(sceneValues + 3 * n);
    const faultBits: number[] = [];
    const stale: number[] = [];
    for (const [k, j] of this.joints.entries()) {
      const p = data.get(j.id);
      const base = sceneValues + 3 * k;
      if (!p) {
        stale.push(k);
        this.stats.staleReadings++;
        if (prev) {
          positions[k] = prev.positions[k];
          velocities[k] = prev.velocities[k];
          efforts[k] = prev.efforts[k];
          sensors.set(prev.sensors.subarray(base, base + 3), base);
        }
        faultBits.push(prev?.faultBits[k] ?? 0);
        continue;
      }
      const m = j.model;
      const r = m.registers;
      const b = this.block;
      const rawPos = decodeRegister(r.presentPosition, p.params, b.position);
      this.raw[k] = rawPos;
      positions[k] = normalize(j.cal, rawPos);
      const perCount = countsToNormalized(j.cal);
      velocities[k] =
        decodeRegister(r.presentVelocity, p.params, b.velocity) * m.velocityCountsPerUnit * perCount;
      efforts[k] = decodeRegister(r.presentLoad, p.params, b.load) * m.loadPerUnit * j.cal.direction;
      sensors[base] = decodeRegister(r.presentTemperature, p.params, b.temperature);
      sensors[base + 1] = decodeRegister(r.presentVoltage, p.params, b.voltage) * m.voltsPerUnit;
      let bits = 0;
      if (m.protocol === 'feetech') bits = p.error & 0x7f;
      else if (p.error & 0x80 && m.hardwareError) {
        // The alert bit: the cause is in Hardware_Error_Status.
        bits = await this.readHardwareError(j).catch(() => prev?.faultBits[k] ?? 0);
      }
      sensors[base + 2] = bits;
      faultBits.push(bits);
      if (bits && !this.faulted) {
        const names = faultNames(m, bits);
        this.latchFault(
          `servo ${j.name} (id ${j.id}) reports ${names.join(', ') || `fault bits 0x${bits.toString(16)}`} (${sensors[base]} °C, ${sensors[base + 1].toFixed(1)} V)`,
          FIXES[names[0]] ?? 'clear the cause, then reset the fault',
        );
      }
    }
    if (this.options.section.scene) {
      const scene = await readSceneBoard(this.bus, this.options.section.scene.id, sceneValues).catch(
        () => null,
      );
      if (scene) sensors.set(scene, 0);
      else if (prev) sensors.set(prev.sensors.subarray(0, sceneValues), 0);
    }
    const now = performance.now();
    const state: ServoRobotState = {
      deviceTimeUs: Math.round(now * 1000),
      receivedAtMs: now,
      positions,
      velocities,
      efforts,
      sensors,
      // Faulted once the servos are in the fault state (the tick after the fault was latched).
      faulted: this.faulted && !this.faultActionDue,
      faultBits,
      stale,
    };
    if (data.size === 0 && prev) return null;
    this.latest = state;
    return state;
  }

  private async readHardwareError(j: Joint): Promise<number> {
    const reg = j.model.hardwareError!;
    const s = await this.bus.read(j.id, reg.address, reg.size);
    return decodeRegister(reg, s.params, 0);
  }

  private latchFault(reason: string, fix: string): void {
    if (!this.faulted) {
      this.stats.faults++;
      this.fault = { reason, fix, atMs: performance.now() };
      this.faultSubject.next(this.fault);
    }
    this.faulted = true;
    this.faultActionDue = true;
    this.command = null;
  }
}
