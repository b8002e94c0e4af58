// Applies patches/ with patch-package (a devDependency) when it is installed, i.e. in this
// repository, then builds classic-level from its (patched) source. Where OuroDB is installed as a
// dependency without its dev tools, the patches are skipped with a note instead of failing the
// install. See patches/README.md for each patch.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
let bin;
try {
  bin = require.resolve('patch-package/dist/index.js');
} catch {
  console.log('ourodb: patch-package is not installed; skipping patches/ (QUIC reads stay at 4 KiB pieces, LevelDB reads unverified)');
  process.exit(0);
}
const r = spawnSync(process.execPath, [bin], { stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);
buildClassicLevel();

/**
 * The classic-level patch turns on LevelDB's checksum verification of every block it reads and
 * writes zeros ahead of its logs (patches/README.md); its prebuilt binary has neither, so the patched source is
 * compiled (~20 s on two cores; needs python3, make and a C++ compiler, as node-gyp does). The
 * Node headers come from the pinned `node` package, so nothing is downloaded. If the build
 * fails, the prebuilt binary stays in use and this says so: reads work, but a damaged index
 * block can then read as a missing key instead of failing as corrupt (test/leveldb.test.ts
 * fails in that case, so CI notices).
 */
function buildClassicLevel() {
  const dir = path.dirname(require.resolve('classic-level/package.json'));
  const options = path.join(dir, 'deps', 'leveldb', 'leveldb-1.20', 'include', 'leveldb', 'options.h');
  if (!fs.readFileSync(options, 'utf8').includes('verify_checksums(true)')) return;
  // A build of an earlier version of the patch is rebuilt: the stamp names the patch it was built from.
  const patch = fs.readFileSync(new URL('../patches/classic-level+3.0.0.patch', import.meta.url));
  const stamp = crypto.createHash('sha256').update(patch).digest('hex');
  const stampFile = path.join(dir, 'build', 'ourodb-patch.sha256');
  if (fs.existsSync(path.join(dir, 'build', 'Release', 'classic_level.node')) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === stamp) return;
  const gyp = process.env.npm_config_node_gyp ?? (process.env.npm_execpath ? path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js') : undefined);
  const args = ['rebuild', '-j', 'max'];
  const nodedir = pinnedNodeDir();
  if (nodedir) args.push(`--nodedir=${nodedir}`);
  console.log(`ourodb: building classic-level with LevelDB block checksums verified (${gyp ?? 'no node-gyp found'})`);
  const built = gyp && fs.existsSync(gyp) ? spawnSync(process.execPath, [gyp, ...args], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', maxBuffer: 64 << 20 }) : undefined;
  if (built?.status !== 0) {
    // The compiler's last words, not its warnings all along.
    if (built?.stderr) console.warn(built.stderr.split('\n').slice(-40).join('\n'));
    fs.rmSync(path.join(dir, 'build'), { recursive: true, force: true });
    console.warn('ourodb: WARNING: building classic-level failed; its prebuilt binary stays in use, and LevelDB reads its blocks without verifying their checksums');
  } else {
    fs.writeFileSync(stampFile, stamp);
  }
}

/** The directory of the pinned Node's own package (node_modules/node/node_modules/node-<os>-<arch>), which carries its headers. */
function pinnedNodeDir() {
  try {
    const inner = path.join(path.dirname(require.resolve('node/package.json')), 'node_modules');
    const found = fs.readdirSync(inner).map((d) => path.join(inner, d)).find((d) => fs.existsSync(path.join(d, 'include', 'node', 'node_api.h')));
    return found;
  } catch {
    return undefined;
  }
}
