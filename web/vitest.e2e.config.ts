import { defineConfig } from 'vitest/config';

// End-to-end: a real gateway subprocess and Debian's Chromium through playwright-core.
export default defineConfig({
  test: {
    environment: 'node',
    include: ['e2e/**/*.e2e.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
