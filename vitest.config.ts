import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // interface-blockstore-tests imports aegir/chai (aegir is not installed): test/aegir-chai.ts
  // stands in. The suite lives in node_modules, so it is inlined for the alias to reach it.
  resolve: { alias: { 'aegir/chai': fileURLToPath(new URL('./test/aegir-chai.ts', import.meta.url)) } },
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    server: { deps: { inline: ['interface-blockstore-tests'] } },
  },
});
