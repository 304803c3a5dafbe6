import { defineConfig } from 'vitest/config';

// Files whose pass condition depends on wall-clock pacing: robots in real time, actors that must keep
// their periods. They run after every other file, one at a time.
const paced = [
  'test/session-fleet.test.ts',
  'test/session-fleet-mosquitto.test.ts',
  'test/session-fleet-cameras.test.ts',
];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The CLI tests run bin/resrt.js: dist/ is compiled from the current source once per run.
    globalSetup: ['test/build-cli.ts'],
    // Test files that open onnxruntime sessions without loading a resrt module first (which would
    // set it, src/util/ort-telemetry.ts) must not report to Microsoft or leave files behind either.
    env: { ORT_DISABLE_TELEMETRY: '1' },
    // Two cores: run test files in at most two forks so timing-sensitive loop tests keep a core.
    pool: 'forks',
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: { name: 'main', include: ['test/**/*.test.ts'], exclude: paced, sequence: { groupOrder: 0 } },
      },
      { extends: true, test: { name: 'paced', include: paced, maxWorkers: 1, sequence: { groupOrder: 1 } } },
    ],
  },
});
