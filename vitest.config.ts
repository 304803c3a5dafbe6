import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: run test files in at most two forks so timing-sensitive loop tests keep a core.
    pool: 'forks',
    maxWorkers: 2,
  },
});
