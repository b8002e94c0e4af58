// The engine's layers, checked in CI (`npm run deps`, run by `npm test` before the tests): imports only go down.
//
//   bin/                    the CLI
//   carrier/                the cluster node (carrier/node.ts wires it; nothing depends back on it)
//   lib/ facade and engine  lib/db.ts (the public API) and the engine modules under it
//   wal/                    the write-ahead log and group commit
//   index/                  the LevelDB index: layout, batches, key model (index/leveldb.ts alone loads classic-level)
//   blockstore/             block files and the seal protocol
//
// lib/db.ts is the facade over lib's engine modules (lib/open.ts wires them); lib/index.ts and
// the public API's users in lib/ stand above it. The small shared helpers of lib/ (LEAVES) may be
// imported from any layer, and import only each other (and two format definitions below). `import type` counts (tsPreCompilationDeps), so a
// type-only import upward is refused too: it is a dependency all the same.
const LEAVES = 'lib/(errors|bytes|fsutil|failpoints|crypto|entry|record|chunk-list|pack|versions|keyname|chunker|gear-wasm|chunk-buffers|vfs/[^/]+)\\.ts$';
const ENGINE = `^lib/(?!${LEAVES.slice(4)})`;
const FACADE_AND_CLIENTS = '(db|index|archive|ipfs-blockstore|inspect)\\.ts$';
const above = {
  blockstore: ['^index/', '^wal/', ENGINE, '^carrier/', '^bin/'],
  index: ['^wal/', ENGINE, '^carrier/', '^bin/'],
  wal: [ENGINE, '^carrier/', '^bin/'],
  lib: ['^carrier/', '^bin/'],
  carrier: ['^bin/'],
};

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'A cycle means two modules own each other: split the shared part out, or pass it in.',
      from: { path: '^(lib|wal|index|blockstore|carrier|bin)/' },
      to: { circular: true },
    },
    ...Object.entries(above).map(([layer, targets]) => ({
      name: `${layer}-imports-down-only`,
      severity: 'error',
      comment: `${layer}/ may import only the layers below it and lib's shared helpers`,
      from: { path: `^${layer}/` },
      to: { path: targets },
    })),
    {
      name: 'leaves-stay-leaves',
      severity: 'error',
      comment: "lib's shared helpers are used from every layer, so they import only each other, and two format definitions of the layers below (an entry's header, a head's shape): data, not engine state",
      from: { path: `^${LEAVES}` },
      to: { path: [ENGINE, '^(wal|index|blockstore|carrier|bin)/'], pathNot: '^(blockstore/format|index/values)\\.ts$' },
    },
    {
      name: 'engine-below-the-facade',
      severity: 'error',
      comment: 'lib/db.ts is the public facade over the engine modules; lib/index.ts and the users of the public API in lib/ (archive, ipfs-blockstore, inspect) stand above it',
      from: { path: ENGINE, pathNot: `^lib/${FACADE_AND_CLIENTS}` },
      to: { path: `^lib/${FACADE_AND_CLIENTS}` },
    },
    {
      name: 'only-index-leveldb-loads-classic-level',
      severity: 'error',
      comment: 'index/leveldb.ts binds classic-level to the verified binding; everything else gets ClassicLevel from it',
      // The isolation fixture is an application loading its own classic-level on purpose.
      from: { path: '^(lib|wal|index|blockstore|carrier|bin|bench|test)/', pathNot: '^(index/leveldb\\.ts|test/fixtures/binding-isolation\\.ts)$' },
      to: { path: 'node_modules/classic-level/' },
    },
    {
      name: 'nothing-depends-on-the-node-wiring',
      severity: 'error',
      comment: 'carrier/node.ts wires the carrier: nothing it wires may import it back. Only what stands above a running node may: the entry point (carrier/index.ts), and the admin API that serves one over HTTP (carrier/admin.ts, started by bin/ like the node itself)',
      from: { path: '^(lib|wal|index|blockstore|carrier)/', pathNot: '^carrier/(index|node|admin)\\.ts$' },
      to: { path: '^carrier/node\\.ts$' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^dist/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'], extensions: ['.ts', '.js', '.mjs', '.cjs', '.d.ts'] },
  },
};
