import { fileURLToPath } from 'node:url';
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vitest/config';

const src = fileURLToPath(new URL('./src', import.meta.url));

// The gateway the dev server forwards /ws/ and the HTTP routes to, so that the
// dashboard connects same-origin under `npm run dev` exactly as it does when the
// gateway serves the built files.
const gateway = process.env.REALTIME_GATEWAY ?? 'http://127.0.0.1:8000';

export default defineConfig({
  plugins: [react()],
  // `@/` is web/src, as the spec's samples import it (`@/hooks/useWebSocket`); the
  // same mapping is in tsconfig.json's `paths`. Vitest resolves through this too.
  resolve: {
    alias: [{ find: /^@\//, replacement: `${src}/` }],
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // Hashed names under assets/ let the gateway cache them for a year.
    assetsDir: 'assets',
    sourcemap: false,
    // Two pages: the dashboard, and the spec's front-end samples as written.
    rollupOptions: {
      input: {
        main: fileURLToPath(new URL('./index.html', import.meta.url)),
        samples: fileURLToPath(new URL('./samples.html', import.meta.url)),
      },
    },
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
