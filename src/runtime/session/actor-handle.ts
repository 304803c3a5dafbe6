/**
 * What a person (or a program) does to a running actor: the handle `runActor` returns, the control
 * commands that reach it from MQTT and the dashboards, and the actor's own dashboard.
 */
import { startDashboard, type Dashboard } from '../dashboard/server.js';
import type { EpisodeCurve } from '../dashboard/episode-curve.js';
import type { ActorStatus, ControlCommand } from './protocol.js';

export interface ActorHandle {
  readonly robotId: string;
  readonly dashboardUrl: string | null;
  status(): ActorStatus;
  estop(source?: string): void;
  /** Clears an e-stop (the operator's heartbeat is now); false when the layer refused. */
  resetEstop(): boolean;
  pause(): void;
  resume(): void;
  /** A person's verdict on the running (or just finished) episode. */
  label(success: boolean): void;
  /** A person confirms a manual reset. */
  confirmReset(): void;
  /** Teleoperation: a normalized action takes over through the safety layer; null releases. */
  setTeleop(action: number[] | null): void;
  stop(): Promise<ActorStatus>;
  /** Resolves when the actor stops (episodes done, stop(), or a fatal error). */
  readonly done: Promise<ActorStatus>;
}

/** Carries out a control command (dashboard button or MQTT) on the actor. */
export function applyControl(handle: ActorHandle, c: ControlCommand): void {
  switch (c.cmd) {
    case 'estop':
      handle.estop(c.source);
      break;
    case 'reset-estop':
      handle.resetEstop();
      break;
    case 'pause':
      handle.pause();
      break;
    case 'resume':
      handle.resume();
      break;
    case 'label':
      handle.label(c.success);
      break;
    case 'confirm-reset':
      handle.confirmReset();
      break;
  }
}

export interface ActorDashboardOptions {
  port: number;
  host?: string;
  token?: string;
  actionDim: number;
  /** This robot's episodes as the dashboard charts them. */
  curve: EpisodeCurve;
  /** A camera's latest frame as JPEG, null before one. */
  frame: (camera: string) => Uint8Array | null;
}

/** The actor's dashboard: this robot alone (robot id '' addresses it too). */
export function startActorDashboard(handle: ActorHandle, o: ActorDashboardOptions): Promise<Dashboard> {
  const robotId = handle.robotId;
  return startDashboard({
    title: `resrt actor ${robotId}`,
    port: o.port,
    host: o.host,
    token: o.token,
    snapshot: () => ({
      role: 'actor',
      actionDim: o.actionDim,
      robots: { [robotId]: handle.status() },
      ...o.curve.snapshot(),
    }),
    frame: (robot, camera) => (robot === robotId ? o.frame(camera) : null),
    command: (robot, c) => {
      if (robot !== robotId && robot !== '') return false;
      applyControl(handle, c);
      return true;
    },
    teleop: (robot, a) => {
      if (robot !== robotId && robot !== '') return false;
      handle.setTeleop(a);
      return true;
    },
  });
}
