// Runs after `npm install` / `npm ci`, both in this repository and in an application that
// installs the package. It never fails the install: where something cannot be done it says what
// that means and goes on.
//
// 1. In this repository only (patch-package is a devDependency): patches/ (the QUIC read size).
// 2. Everywhere: a verified LevelDB binding for this machine (scripts/leveldb-native.mjs). The
//    package ships one prebuilt for linux-x64 (glibc); when it loads, nothing is compiled. Where
//    none loads (another platform, an older glibc), the patched source is compiled if a compiler
//    is there; if that fails too, OuroDB still works but reads its index without checksums, warns
//    when a database is opened, and refuses to open one with `requireVerifiedIndex: true`.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { ensureBinding } from './leveldb-native.mjs';

const require = createRequire(import.meta.url);
let patchPackage;
try {
  patchPackage = require.resolve('patch-package/dist/index.js');
} catch {}
if (patchPackage) {
  const r = spawnSync(process.execPath, [patchPackage], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const problem = ensureBinding();
if (problem) {
  console.warn(`ourodb: WARNING: no LevelDB binding with verified block checksums could be made for this machine: ${problem}`);
  console.warn('ourodb: WARNING: OuroDB works, but a damaged index table can then read as a missing key or an old version instead of an error.');
  console.warn('ourodb: WARNING: install python3, make and a C++ compiler and run `npm rebuild ourodb`; docs/design.md ("Verified index reads") says more.');
  // In this repository a missing binding fails the install: the tests and the package need it.
  if (patchPackage) process.exit(1);
}
