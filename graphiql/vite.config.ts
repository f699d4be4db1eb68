import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { defineConfig, type Plugin } from 'vite';

// What the build is made from. Their digest is written beside the build (source.sha256), and
// tests/unit/test_graphiql_build.py computes it again from the committed files: a change here
// that was not rebuilt fails the tests. Same rule on both sides: each file's path relative to
// this folder (with /), a NUL, its bytes, a NUL; files in path order.
const SOURCES = [
  'index.html', 'package.json', 'package-lock.json', 'tsconfig.json', 'vite.config.ts', 'src',
];

function files(path: string): string[] {
  return statSync(path).isDirectory()
    ? readdirSync(path).flatMap((name) => files(join(path, name)))
    : [path];
}

function sourceDigest(): Plugin {
  return {
    name: 'source-digest',
    generateBundle() {
      const root = import.meta.dirname;
      const paths = SOURCES.flatMap((name) => files(join(root, name)))
        .map((path) => relative(root, path).split(sep).join('/'))
        .sort();
      const digest = createHash('sha256');
      for (const path of paths) {
        digest.update(path).update('\0').update(readFileSync(join(root, path))).update('\0');
      }
      this.emitFile({ type: 'asset', fileName: 'source.sha256', source: `${digest.digest('hex')}\n` });
    },
  };
}

// The build lands inside the Python package (app/web/graphiql/), committed to git, so that the
// service serves GraphiQL without npm and without any other host: the page at GET /graphql, its
// files under /graphiql/assets/ (app/web/graphiql.py).
export default defineConfig({
  base: '/graphiql/',
  oxc: { jsx: { runtime: 'automatic' } },
  plugins: [sourceDigest()],
  // Monaco's editor, JSON and GraphQL workers, bundled like the rest (graphiql/setup-workers/vite).
  worker: { format: 'es' },
  build: {
    outDir: '../app/web/graphiql', // relative to this folder
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false, // the output is committed: ≈ 7 MB without maps
    chunkSizeWarningLimit: 6000,
    rolldownOptions: {
      // framer-motion's "use client" lines mean nothing outside React Server Components.
      onwarn(warning, warn) {
        if (warning.code !== 'MODULE_LEVEL_DIRECTIVE') warn(warning);
      },
    },
  },
});
