import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    reporters: ['default', ['json', { outputFile: 'reports/vitest.json' }]],
    testTimeout: 20_000,
    globalSetup: ['test/global-setup.ts'],
    // Two files at a time (vitest takes one on two cores). Only test/kernel.test.ts uses the test
    // namespace's ruleset (it flushes it); the others use fakes, dry-run, or namespaces of their own.
    maxWorkers: 2,
  },
});
