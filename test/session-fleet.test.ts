// The fleet on the learner's embedded broker (aedes, MQTT 3.1.1). See session-fleet-run.ts.
import { afterEach, describe, it } from 'vitest';
import { runFleet } from './session-fleet-run.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

describe('session over MQTT', () => {
  it('two virtual robots and one learner on its embedded broker: residual versions advance, both actors use them, success rises', async () => {
    await runFleet(undefined, cleanups);
  }, 300_000);
});
