/**
 * A Robot that stays on the main thread, seen from the control loop's thread through shared
 * memory: its latest state (as an observation) in, the loop's commands out. For links whose
 * native bindings cannot live in a worker thread (servo buses: serialport 13's poller aborts the
 * process when a worker opens a port; serial robots use an fd there instead) and for Robot
 * objects a program built itself.
 *
 * The loop thread reads the latest observation with no message and no event-loop turn (a seqlock
 * over a SharedArrayBuffer). Its commands go out through a second seqlock plus Atomics.notify;
 * the main thread's Atomics.waitAsync wakes and calls robot.send, so a command costs one turn of
 * the main thread's event loop: a busy main thread delays commands (never ticks), and the device's
 * validForMs bounds how stale an applied command can be.
 */
import type { Subscription } from 'rxjs';
import type { LinkStatus, Robot, RobotState } from '../types.js';
import { ResrtError } from '../util/errors.js';
import type { HostedSource, PlainData, SourceSpec } from './loop-plan.js';
import {
  defaultRobotObs,
  linkDownReason,
  type ObservationSample,
  type ObservationSource,
} from './sources.js';

// Header words (Int32) of both slots: [0] sequence (odd while written), then slot-specific.
const SEQ = 0;
const STATE_FAULTED = 1;
const STATE_STATUS = 2;
const COMMAND_CLOSED = 1;
// Float64 words after the header: [0] timestamp or validity, then the vector (as Float64).
const HEADER_BYTES = 16;

/** Atomics.waitAsync (Node >= 16; not in TypeScript's ES2023 lib). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      array: Int32Array,
      index: number,
      value: number,
    ): { async: false; value: string } | { async: true; value: Promise<string> };
  }
).waitAsync;

const statusCodes: LinkStatus[] = ['connecting', 'connected', 'lost', 'closed'];

/** One seqlock-protected vector with a timestamp: a single writer, any number of readers. */
class SeqSlot {
  readonly words: Int32Array;
  readonly values: Float64Array;
  constructor(
    readonly buffer: SharedArrayBuffer,
    readonly width: number,
  ) {
    this.words = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.values = new Float64Array(buffer, HEADER_BYTES, width + 1);
  }

  static create(width: number): SharedArrayBuffer {
    return new SharedArrayBuffer(HEADER_BYTES + 8 * (width + 1));
  }

  write(stamp: number, vector: ArrayLike<number>): void {
    const seq = Atomics.load(this.words, SEQ);
    Atomics.store(this.words, SEQ, seq + 1);
    this.values[0] = stamp;
    for (let i = 0; i < this.width; i++) this.values[i + 1] = vector[i];
    Atomics.store(this.words, SEQ, seq + 2);
  }

  /** Copies a consistent snapshot into `out`; returns its sequence and stamp (seq 0: never written). */
  read(out: Float32Array | Float64Array): { seq: number; stamp: number } {
    for (;;) {
      const before = Atomics.load(this.words, SEQ);
      if (before & 1) continue; // the writer is mid-way: a few nanoseconds
      const stamp = this.values[0];
      for (let i = 0; i < this.width; i++) out[i] = this.values[i + 1];
      if (Atomics.load(this.words, SEQ) === before) return { seq: before, stamp };
    }
  }
}

/** What the loop thread's source needs: plain data plus the two shared buffers. */
export interface SharedRobotArgs {
  kind: string;
  obsDim: number;
  actionDim: number;
  validForMs: number;
  state: SharedArrayBuffer;
  command: SharedArrayBuffer;
}

export interface SharedRobotOptions {
  /** State -> observation; default [positions, velocities, sensors]. */
  toObs?: (state: RobotState) => Float32Array;
  /** Width of toObs's result; required with a custom toObs. */
  obsDim?: number;
  /** RobotCommand.validForMs of every command. Default 3 periods of the robot's rate. */
  validForMs?: number;
}

/**
 * The main-thread half: subscribes to the robot, publishes states into shared memory, forwards
 * the loop's commands to robot.send. Give `sourceSpec` to the LoopPlan and the bridge to
 * WorkerControlLoop.create, which starts and stops it with the loop.
 */
export class SharedRobotBridge {
  readonly sourceSpec: SourceSpec;
  private readonly state: SeqSlot;
  private readonly command: SeqSlot;
  private readonly toObs: (state: RobotState) => Float32Array;
  private readonly commandBuffer: Float64Array;
  private subscriptions: Subscription[] = [];
  private pumping: Promise<void> | null = null;
  private closed = false;
  /** Commands forwarded and commands robot.send refused, for reports. */
  readonly counters = { forwarded: 0, refused: 0 };

  constructor(
    readonly robot: Robot,
    options: SharedRobotOptions = {},
  ) {
    const caps = robot.capabilities;
    if (options.toObs && options.obsDim === undefined) {
      throw new ResrtError('SharedRobotBridge: a custom toObs needs obsDim', 'pass { toObs, obsDim }');
    }
    this.toObs = options.toObs ?? defaultRobotObs;
    const obsDim = options.obsDim ?? 2 * caps.jointCount + caps.sensorCount;
    this.state = new SeqSlot(SeqSlot.create(obsDim), obsDim);
    this.command = new SeqSlot(SeqSlot.create(caps.actionDim), caps.actionDim);
    this.commandBuffer = new Float64Array(caps.actionDim);
    const args: SharedRobotArgs = {
      kind: `robot:${caps.name}`,
      obsDim,
      actionDim: caps.actionDim,
      validForMs: options.validForMs ?? 3000 / caps.rateHz,
      state: this.state.buffer,
      command: this.command.buffer,
    };
    this.sourceSpec = {
      module: import.meta.url,
      export: 'sharedRobotSource',
      args: args as unknown as PlainData,
    };
  }

  /** Starts publishing states and forwarding commands. */
  start(): void {
    if (this.pumping || this.closed) return;
    const width = this.state.width;
    this.subscriptions.push(
      this.robot.state$.subscribe((s) => {
        const obs = this.toObs(s);
        if (obs.length !== width) return; // the loop side reports no fresh observation
        Atomics.store(this.state.words, STATE_FAULTED, s.faulted ? 1 : 0);
        // Absolute time: the loop thread's performance.now() has another origin.
        this.state.write(performance.timeOrigin + s.receivedAtMs, obs);
      }),
      this.robot.status$.subscribe((status) => {
        Atomics.store(this.state.words, STATE_STATUS, statusCodes.indexOf(status));
      }),
    );
    this.pumping = this.pump();
  }

  /** Latching e-stop on the device, from this thread (the loop's own e-stop goes through the host). */
  estop(reason: string): void {
    this.robot.estop(reason);
  }

  /** Forwards the last command (the loop's final safe action), then stops. The robot stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.command.words, COMMAND_CLOSED, 1);
    Atomics.notify(this.command.words, SEQ);
    await this.pumping;
    for (const s of this.subscriptions) s.unsubscribe();
    this.subscriptions = [];
  }

  private async pump(): Promise<void> {
    let seen = 0;
    const action = new Float32Array(this.command.width);
    for (;;) {
      const waited = waitAsync(this.command.words, SEQ, seen);
      if (waited.async) await waited.value;
      const { seq, stamp } = this.command.read(this.commandBuffer);
      if (seq !== seen && seq !== 0) {
        seen = seq;
        action.set(this.commandBuffer);
        if (this.robot.send({ action: Float32Array.from(action), validForMs: stamp }))
          this.counters.forwarded++;
        else this.counters.refused++;
      }
      if (Atomics.load(this.command.words, COMMAND_CLOSED) === 1) return;
    }
  }
}

/** The loop-thread half: a source over the shared state and command slots (LoopPlan factory). */
export function sharedRobotSource(raw: PlainData | undefined): HostedSource {
  const args = raw as unknown as SharedRobotArgs;
  if (!args || !(args.state instanceof SharedArrayBuffer) || !(args.command instanceof SharedArrayBuffer)) {
    throw new ResrtError(
      'sharedRobotSource needs the shared buffers of a SharedRobotBridge',
      'build the source with new SharedRobotBridge(robot).sourceSpec',
    );
  }
  const state = new SeqSlot(args.state, args.obsDim);
  const command = new SeqSlot(args.command, args.actionDim);
  let sample: ObservationSample | null = null;
  let sampleSeq = 0;
  const send = (action: Float32Array): void => {
    command.write(args.validForMs, action);
    Atomics.notify(command.words, SEQ);
  };
  const source: ObservationSource = {
    kind: args.kind,
    obsDim: args.obsDim,
    actionDim: args.actionDim,
    open: async () => {},
    latest() {
      if (Atomics.load(state.words, SEQ) === sampleSeq) return sample;
      const obs = new Float32Array(args.obsDim);
      const { seq, stamp } = state.read(obs);
      if (seq === 0) return null;
      sampleSeq = seq;
      sample = { obs, atMs: stamp - performance.timeOrigin };
      return sample;
    },
    fault() {
      if (Atomics.load(state.words, STATE_FAULTED) === 1)
        return 'the device reports a latched fault or e-stop';
      return linkDownReason(statusCodes[Atomics.load(state.words, STATE_STATUS)]);
    },
    actuate(action) {
      const down = linkDownReason(statusCodes[Atomics.load(state.words, STATE_STATUS)]);
      send(action);
      if (down) return { ok: false, detail: `${down}; the command may not reach the device` };
      return { ok: true };
    },
    async close(safeAction) {
      send(safeAction);
    },
  };
  return { source, close: async () => {} };
}
