/**
 * The plant an actor drives: a robot (any transport, wrapped as an Env) or a simulated Env, and
 * what differs between the two around the episodes — the explicit safe command at a stop, the
 * virtual scene kept running through its own reset, and a simulator's pacing.
 */
import type { Env, Robot } from '../../types.js';
import type { ActorOptions } from './actor-options.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class ActorPlant {
  /** Next real-time deadline of a paced simulator step. */
  private simNextAt = 0;

  private constructor(
    readonly env: Env,
    /** The device behind env, or null for a simulator. */
    readonly robot: Robot | null,
    private readonly options: ActorOptions,
    /** Where a person's reset confirmation goes (the robot's env), if anywhere. */
    private readonly onConfirmReset?: () => void,
  ) {}

  /** Opens the robot (options.robot.open) or takes the simulator (options.env). */
  static async open(options: ActorOptions, log: (line: string) => void): Promise<ActorPlant> {
    if (!options.robot) return new ActorPlant(options.env as Env, null, options);
    const { robot, env, confirmReset } = await options.robot.open(log);
    return new ActorPlant(env, robot, options, confirmReset);
  }

  /** Hands the safe action to the device once, explicitly; a simulator needs nothing. */
  sendSafe(action: Float32Array): void {
    // Nothing more goes to the device: its watchdog holds the safe state; say it once explicitly.
    if (!this.robot) return;
    this.options.onCommand?.(action);
    this.robot.send({ action, validForMs: this.options.robot?.commandValidMs ?? 100 });
  }

  /**
   * A virtual scene ends its episode on its own clock and brakes when commands stop; if this actor
   * counted its time limit a step or two early (a stalled event loop), the scene would wait forever
   * mid-episode. Holding the last safe command while the reset is pending lets it run out its
   * clock and reset itself, which is the scripted reset of a virtual robot. `safeAction` gives
   * null while nothing may be sent (an e-stop).
   */
  async keepSceneRunning<T>(reset: Promise<T>, safeAction: () => Float32Array | null): Promise<T> {
    const virtual = this.options.robot?.virtualScene;
    const robot = this.robot;
    if (!virtual || !robot) return reset;
    const periodMs = 1000 / (this.options.robot?.rateHz ?? 50);
    const hold = setInterval(() => {
      const action = safeAction();
      if (!action) return;
      this.options.onCommand?.(action);
      robot.send({ action, validForMs: 3 * periodMs });
    }, periodMs);
    try {
      return await reset;
    } finally {
      clearInterval(hold);
    }
  }

  /**
   * After a step: a simulator answers at once, so without a turn of the event loop here MQTT and
   * timers would never run between steps; with rateHz it also keeps real time. A robot paces itself.
   */
  async afterStep(): Promise<void> {
    if (this.robot) return;
    const hz = this.options.rateHz;
    if (!hz) return new Promise<void>((resolve) => setImmediate(resolve));
    const now = performance.now();
    this.simNextAt = Math.max(this.simNextAt + 1000 / hz, now - 1000 / hz);
    await sleep(Math.max(0, this.simNextAt - now));
  }

  /** A person confirms a manual reset: only a robot's env waits for one (a virtual scene resets itself). */
  confirmReset(): void {
    this.onConfirmReset?.();
  }

  /** Closes what this plant opened: the robot and its env (a given simulator stays its owner's). */
  async close(): Promise<void> {
    if (!this.robot) return;
    await this.env.close();
    await this.robot.close();
  }
}
