import { defineConfig } from 'vite';

// Where `npm run dev` sends /graphql (HTTP and websockets). Override with API_URL=http://host:port.
const api = process.env.API_URL ?? 'http://127.0.0.1:8000';
// The API refuses cross-origin websockets (CSRF protection), so the dev proxy presents the
// API's own origin. The dev server listens on localhost only, unless you pass --host.
// GraphiQL (the "GraphiQL" link) is the API's page at /graphql, with its files under /graphiql/.
const proxy = {
  '/graphql': { target: api, changeOrigin: true, ws: true, rewriteWsOrigin: true },
  '/graphiql': { target: api, changeOrigin: true },
};

export default defineConfig({
  // JSX compiles to Preact's automatic runtime (no React, no Babel).
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  server: { proxy },
  preview: { proxy },
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
});
