/**
 * The learner's training loop inside the service's event loop: slices of updates (as many as the
 * logged data allows), a publish every `publishEvery` actor updates, the status once a second and a
 * checkpoint every `checkpointEverySec`. A diverged learner stops training; logging goes on.
 */
import type { ResidualConfig } from '../config.js';
import type { ResidualLearner, UpdateStats } from '../td3.js';

export interface TrainingPumpOptions {
  learner: ResidualLearner;
  cfg: ResidualConfig;
  /** Updates the data allows so far (learning starts, then utd per ingested transition). */
  allowed: () => number;
  publishEvery: number;
  checkpointEverySec: number;
  /** Publishes the residual (then or after a refusal: see published()). */
  publish: () => void;
  /** Writes a checkpoint; throws when the disk refuses it. */
  checkpoint: () => void;
  publishStatus: () => void;
  log: (line: string) => void;
}

export class TrainingPump {
  last: UpdateStats | null = null;
  /** Updates per second over the last second or so. */
  rate = 0;
  /** Why training stopped (divergence), while logging goes on; null while it runs. */
  trainingError: string | null = null;
  private lastPublishedActor: number;
  private window: { t: number; updates: number };
  private lastCheckpointAt = performance.now();
  private stopped = false;
  private cancelPump: (() => void) | null = null;
  /** The slice of updates running now: checkpoints and shutdown wait for it, never cut into it. */
  private slice: Promise<void> | null = null;

  constructor(private readonly o: TrainingPumpOptions) {
    this.lastPublishedActor = o.learner.actorUpdates;
    this.window = { t: performance.now(), updates: o.learner.updates };
  }

  start(): void {
    this.schedule(true);
  }

  /** A publish went out or was refused: the next one is publishEvery actor updates from now. */
  published(): void {
    this.lastPublishedActor = this.o.learner.actorUpdates;
  }

  /** Checkpoints now, after the slice in flight. */
  async checkpoint(): Promise<void> {
    await this.slice;
    this.checkpointNow();
  }

  /** No slice starts any more; resolves when the one in flight is done. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelPump?.();
    this.cancelPump = null;
    await this.slice;
  }

  /** Writes a checkpoint (throws when the disk refuses it); the next timed one is an interval away. */
  checkpointNow(): void {
    this.o.checkpoint();
    this.lastCheckpointAt = performance.now();
  }

  /** Soon: after pending I/O (setImmediate, no setTimeout ≥ 1 ms floor); otherwise in 20 ms. */
  private schedule(soon: boolean): void {
    if (soon) {
      const immediate = setImmediate(() => this.pump());
      this.cancelPump = () => clearImmediate(immediate);
    } else {
      const timeout = setTimeout(() => this.pump(), 20);
      this.cancelPump = () => clearTimeout(timeout);
    }
  }

  private pump(): void {
    this.cancelPump = null;
    if (this.stopped) return;
    this.slice = this.runSlice().finally(() => (this.slice = null));
  }

  private async runSlice(): Promise<void> {
    const { learner, cfg } = this.o;
    const t0 = performance.now();
    const target = this.o.allowed();
    try {
      // Slices of ~5 ms keep MQTT, acknowledgements and the dashboard responsive between updates,
      // and actors sharing this process (one-laptop sessions, tests) on time: with 25 ms slices two
      // 50 Hz actors missed their periods, their robots held commands for uneven times, and a
      // fleet that otherwise learned the puck task to 100% ended at 39–73%. An update longer than
      // the slice (2×256 networks) still runs whole, so large learners lose nothing.
      while (!this.stopped && learner.updates < target && performance.now() - t0 < 5) {
        if (cfg.normalizeObs && !learner.obsMean) {
          const { mean, std } = learner.computeObsNormalization();
          learner.setObsNormalization(mean, std);
        }
        this.last = await learner.update();
        if (learner.actorUpdates - this.lastPublishedActor >= this.o.publishEvery) this.o.publish();
      }
    } catch (err) {
      // Training stops (a diverged learner keeps its last checkpoint); logging and acknowledging
      // go on, so the actors lose nothing while a person looks at it.
      this.trainingError = (err as Error).message.split('\n')[0];
      this.o.log(`training stopped: ${(err as Error).message}`);
      return;
    }
    if (this.stopped) return;
    const now = performance.now();
    if (now - this.window.t >= 1000) {
      this.rate = ((learner.updates - this.window.updates) * 1000) / (now - this.window.t);
      this.window = { t: now, updates: learner.updates };
      this.o.publishStatus();
    }
    if (now - this.lastCheckpointAt >= this.o.checkpointEverySec * 1000) {
      try {
        this.checkpointNow();
      } catch (err) {
        // The previous checkpoint stays whole (written atomically) and the log holds everything
        // since: try again at the next interval.
        this.lastCheckpointAt = now;
        this.o.log(
          `checkpoint failed: ${(err as Error).message.split('\n')[0]}; the last one and the log are kept`,
        );
      }
    }
    this.schedule(learner.updates < this.o.allowed());
  }
}
