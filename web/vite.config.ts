import react from '@vitejs/plugin-react';
import { defineConfig } from 'vitest/config';

// The gateway the dev server forwards /ws/ and the HTTP routes to, so that the
// dashboard connects same-origin under `npm run dev` exactly as it does when the
// gateway serves the built files.
const gateway = process.env.REALTIME_GATEWAY ?? 'http://127.0.0.1:8000';

export default defineConfig({
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // Hashed names under assets/ let the gateway cache them for a year.
    assetsDir: 'assets',
    sourcemap: false,
  },
  server: {
    proxy: {
      '/ws/': { target: gateway, ws: true, changeOrigin: true },
      '/health': gateway,
      '/api/': gateway,
    },
  },
  test: {
    environment: 'happy-dom',
    include: ['tests/**/*.test.{ts,tsx}'],
    restoreMocks: true,
    testTimeout: 10_000,
  },
});
