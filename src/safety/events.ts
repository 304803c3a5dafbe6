/** What the safety layer reports: event kinds and the per-tick decision. */
import type { SafetyDecision } from '../types.js';

export const SAFETY_EVENT_KINDS = [
  // Masks that changed the action (one event per mask per tick, not per dimension).
  'clip-base',
  'clip-relevant',
  'clip-accel',
  'clip-velocity',
  'clip-workspace',
  'clip-box',
  /** The workspace or the box overrode the rate limits (the previous state was outside them). */
  'rate-conflict',
  // Guards: the input could not be used; the safe action went out instead.
  'guard-proposal',
  'guard-obs',
  'guard-base',
  'guard-teleop',
  'guard-relevant',
  'teleop-stale',
  // Watchdog.
  'watchdog-stale-obs',
  'watchdog-no-output',
  'watchdog-fault',
  // Latches.
  'estop',
  'estop-active',
  'fault-active',
  'reset',
  'reset-refused',
  // Interventions (edges only; every teleop tick also carries intervention: true).
  'intervention-start',
  'intervention-end',
] as const;

export type SafetyEventKind = (typeof SAFETY_EVENT_KINDS)[number];

export interface SafetyFilterResult extends SafetyDecision {
  /** A teleoperator's command replaced the policy's on this tick: mark the transition. */
  intervention: boolean;
  /** The base-relative mask was in force on this tick (ε-masking drew "apply"). */
  baseMasked: boolean;
  /** An e-stop or latched fault is in force: the action is the safe action, rate limits bypassed. */
  latched: boolean;
}

export interface SafetyState {
  estopped: boolean;
  /** Every source that asserted the e-stop since the last reset, in order. */
  estopSources: string[];
  faulted: boolean;
  faultReason: string | null;
  /** Layer-clock time of the most recent latch, or null when nothing latched yet. */
  latchedAtMs: number | null;
  consecutiveMisses: number;
  intervention: boolean;
  episode: number;
  /** Ticks since construction. */
  ticks: number;
  /** Whether the base-relative mask is in force for the current episode (resample: episode). */
  baseMaskActive: boolean;
}

export type ResetResult = { ok: true } | { ok: false; reason: string };
