/**
 * A leader arm: a second servo arm on its own bus, torque off, moved by a person. Its calibrated
 * joint positions are the follower's goals (normalized, joint for joint by name), as in LeRobot's
 * leader/follower teleoperation. While engaged, each reading is handed to `onAction` (the actor's
 * setTeleop: through the safety layer, flagged as an intervention); disengaging hands back null.
 */
import { ResrtError } from '../../util/errors.js';
import { ServoBus } from './bus.js';
import { normalize, type Calibration } from './calibration.js';
import { decodeRegister, MOTOR_MODELS } from './models.js';
import { writeRegister } from './registers.js';
import { sectionProtocol, type ServoSection, type ServoUrl } from './servo-config.js';

export interface LeaderArmOptions {
  section: ServoSection;
  calibration: Calibration;
  /** The follower's joint names, in its action order. */
  followerJoints: readonly string[];
  /** Readings per second (default 50). */
  rateHz?: number;
  onAction: (action: number[] | null) => void;
}

export class LeaderArm {
  private engaged = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly order: number[];
  readings = 0;
  missed = 0;

  private constructor(
    private readonly bus: ServoBus,
    private readonly options: LeaderArmOptions,
  ) {
    const names = options.section.joints.map((j) => j.name);
    this.order = options.followerJoints.map((n) => names.indexOf(n));
    const missing = options.followerJoints.filter((_, k) => this.order[k] < 0);
    if (missing.length > 0) {
      throw new ResrtError(
        `the leader arm has no joint named ${missing.join(', ')}`,
        "name the leader's joints in its robot config as the follower's are named",
      );
    }
  }

  static async open(url: ServoUrl, options: LeaderArmOptions): Promise<LeaderArm> {
    const s = options.section;
    if (url.protocol !== sectionProtocol(s)) {
      throw new ResrtError(
        `the leader URL says ${url.protocol}, its servos are ${sectionProtocol(s)}`,
        `use ${sectionProtocol(s)}:${url.path}`,
      );
    }
    const bus = await ServoBus.open(url.path, {
      protocol: url.protocol,
      baudRate: url.baudRate,
      retries: s.retries,
      timeoutMarginMs: s.timeoutMarginMs,
    });
    try {
      for (const j of s.joints) {
        const model = MOTOR_MODELS[j.model];
        const r = await bus.ping(j.id);
        if (!r || r.modelNumber !== model.modelNumber) {
          throw new ResrtError(
            `leader servo ${j.name} (id ${j.id}) ${r ? `is model ${r.modelNumber}, not ${model.name}` : 'does not answer'}`,
            `check the leader arm's wiring and config; run resrt servo scan --robot ${url.protocol}:${url.path}`,
          );
        }
        // A person moves the leader: no torque.
        await writeRegister(bus, j.id, model, 'torqueEnable', 0);
      }
    } catch (err) {
      await bus.close();
      throw err;
    }
    const leader = new LeaderArm(bus, options);
    leader.start();
    return leader;
  }

  get isEngaged(): boolean {
    return this.engaged;
  }

  /** Start (true) or stop (false) handing the leader's pose to the follower. */
  engage(on: boolean): void {
    if (this.engaged && !on) this.options.onAction(null);
    this.engaged = on;
  }

  /** The follower action the leader's pose asks for now, or null when a servo did not answer. */
  async read(): Promise<number[] | null> {
    const s = this.options.section;
    const model = MOTOR_MODELS[s.joints[0].model];
    const reg = model.registers.presentPosition;
    const { data, missing } = await this.bus.syncRead(
      reg.address,
      reg.size,
      s.joints.map((j) => j.id),
    );
    if (missing.length > 0) {
      this.missed++;
      return null;
    }
    this.readings++;
    return this.order.map((k) => {
      const j = s.joints[k];
      const raw = decodeRegister(reg, data.get(j.id)!.params, 0);
      return Math.max(-1, Math.min(1, normalize(this.options.calibration.joints[j.name], raw)));
    });
  }

  private start(): void {
    const period = 1000 / (this.options.rateHz ?? 50);
    const loop = async (): Promise<void> => {
      if (this.closed) return;
      if (this.engaged && this.bus.isUp) {
        const action = await this.read().catch(() => null);
        // A missed reading sends nothing: the safety layer's teleop timeout takes over if it lasts.
        if (action && this.engaged && !this.closed) this.options.onAction(action);
      }
      if (!this.closed) this.timer = setTimeout(() => void loop(), period);
    };
    this.timer = setTimeout(() => void loop(), period);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.engage(false);
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.bus.close();
  }
}
