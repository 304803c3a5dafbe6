/**
 * Terminal keys for a person next to the robot (what `resrt actor` wires to stdin):
 *
 *   space, e   e-stop            x   reset the e-stop
 *   s          label: success    f   label: failure
 *   p          pause / resume    r   reset done (manual reset)
 *   q, Ctrl-C  stop the actor
 *
 * Single key presses, no Enter: a TTY is put into raw mode while attached.
 */
import type { Readable } from 'node:stream';
import type { ActorHandle } from './actor-handle.js';

export type KeyAction =
  'estop' | 'reset-estop' | 'success' | 'failure' | 'pause-resume' | 'reset-done' | 'stop';

export const KEY_BINDINGS: Readonly<Record<string, KeyAction>> = {
  ' ': 'estop',
  e: 'estop',
  x: 'reset-estop',
  s: 'success',
  f: 'failure',
  p: 'pause-resume',
  r: 'reset-done',
  q: 'stop',
  '\u0003': 'stop',
};

type KeyTarget = Pick<
  ActorHandle,
  'estop' | 'resetEstop' | 'label' | 'pause' | 'resume' | 'confirmReset' | 'stop' | 'status'
>;

/** Runs one key's action; returns what it did, or null for an unbound key. */
export function applyKey(handle: KeyTarget, key: string): KeyAction | null {
  const action = KEY_BINDINGS[key.toLowerCase()] ?? null;
  switch (action) {
    case 'estop':
      handle.estop('terminal-key');
      break;
    case 'reset-estop':
      handle.resetEstop();
      break;
    case 'success':
      handle.label(true);
      break;
    case 'failure':
      handle.label(false);
      break;
    case 'pause-resume':
      if (handle.status().phase === 'paused') handle.resume();
      else handle.pause();
      break;
    case 'reset-done':
      handle.confirmReset();
      break;
    case 'stop':
      void handle.stop();
      break;
    case null:
      break;
  }
  return action;
}

/** Listens for keys on `input` (default stdin) until the returned function is called. */
export function attachTerminalKeys(
  handle: KeyTarget,
  input: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown } = process.stdin,
  onKey: (action: KeyAction) => void = () => {},
): () => void {
  const raw = input.isTTY === true && typeof input.setRawMode === 'function';
  if (raw) input.setRawMode?.(true);
  const listener = (chunk: Buffer | string): void => {
    for (const key of chunk.toString()) {
      const action = applyKey(handle, key);
      if (action) onKey(action);
    }
  };
  input.on('data', listener);
  input.resume();
  return () => {
    input.off('data', listener);
    if (raw) input.setRawMode?.(false);
    input.pause();
  };
}
