/** Real-world sessions, actor side: what `resrt actor` calls (see docs/sessions.md). */
export { runActor } from './actor.js';
export type { ActorHandle } from './actor-handle.js';
export type { ActorOptions, ActorRobotOptions, OpenedRobot, RobotOpener } from './actor-options.js';
export { attachTerminalKeys, applyKey, KEY_BINDINGS, type KeyAction } from './keys.js';
export {
  sessionTopics,
  encodePolicyMessage,
  decodePolicyMessage,
  type SessionTopics,
  type ActorStatus,
  type ControlCommand,
  type LearnerStatus,
  type PolicyHeader,
} from './protocol.js';
export { encodeBatch, decodeBatch, type SessionTransition, type TransitionBatch } from './codec.js';
export { Spool } from './spool.js';
