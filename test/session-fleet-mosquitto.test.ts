// The same fleet over mosquitto (MQTT 5), where installed; CI requires it. See session-fleet-run.ts.
import { afterEach, describe, it } from 'vitest';
import { findMosquitto, startMosquitto } from '../src/util/mqtt-broker.js';
import { runFleet } from './session-fleet-run.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

describe('session over MQTT', () => {
  const mosquitto = findMosquitto();
  const required = process.env.RESRT_REQUIRE_MOSQUITTO === '1';
  it.skipIf(!mosquitto && !required)(
    'the same fleet over mosquitto',
    async () => {
      if (!mosquitto)
        throw new Error('mosquitto is not installed (RESRT_REQUIRE_MOSQUITTO=1): apt-get install mosquitto');
      const broker = await startMosquitto();
      cleanups.push(() => broker.close());
      await runFleet(broker.url, cleanups);
    },
    300_000,
  );
});
