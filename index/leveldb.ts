/**
 * The one place OuroDB gets LevelDB from: classic-level's JavaScript over OuroDB's own build of
 * its native binding, compiled from native/classic-level+3.0.0.patch.
 *
 * Why its own binding: classic-level's LevelDB reads table blocks without verifying their
 * checksums (`ReadOptions::verify_checksums` defaults to false and classic-level exposes no
 * option), so a flipped bit in an index table can read back as a missing key, another key's
 * value or an older head, with no error. The patched build verifies every block it reads (damage
 * then fails as LEVEL_CORRUPTION, which OuroDB reports as OURO_CORRUPTION), zero-fills its
 * write-ahead logs ahead, and hands an iterator asked for it (`ourodbPacked`) each batch as one
 * Buffer, which `list` reads (native/README.md). The package ships it prebuilt for linux-x64 (glibc);
 * scripts/postinstall.mjs compiles it where that does not load.
 *
 * How it is wired in without touching node_modules: classic-level's index.js, iterator.js and
 * chained-batch.js each `require('./binding')`. While this module loads them, it puts the
 * patched binding in the require cache under classic-level's binding.js, then takes its copies
 * back out and restores whatever the cache held before. OuroDB so gets a private copy of
 * classic-level bound to the verified binding, and an application that loads classic-level itself,
 * before or after OuroDB, keeps getting its own: neither sees the other's binding. That relies on
 * classic-level 3.0.0 exactly (package.json pins it, the binding is built from its source).
 *
 * Where no verified binding loads, this falls back to classic-level's own and says so in
 * `levelBinding`; OuroDB.open warns once per process, or refuses with `requireVerifiedIndex`.
 */
import fs from 'node:fs';
import { Module, createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ClassicLevel as ClassicLevelClass } from 'classic-level';

const require = createRequire(import.meta.url);

/** The revision of native/classic-level+3.0.0.patch that this code expects its binding to report (`ourodb_patch`). */
export const NATIVE_PATCH_REVISION = 2;

export interface LevelBindingInfo {
  /** True when LevelDB verifies the checksum of every block it reads. */
  readonly verified: boolean;
  /** The native file in use. */
  readonly path: string;
  /** Why the verified binding is not in use (only when `verified` is false). */
  readonly reason?: string;
}

/** The folder under prebuilds/ for this machine; scripts/leveldb-native.mjs names it the same way. */
export function nativeTarget(): string {
  let target = `${process.platform}-${process.arch}`;
  if (process.platform === 'linux') {
    const header = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header;
    target += header?.glibcVersionRuntime ? '-glibc' : '-musl';
  }
  return target;
}

/** The folder of OuroDB's package.json: two levels up from dist/index/leveldb.js, one from the source (tests run it as is). */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  return dir;
}

function load(): { ClassicLevel: typeof ClassicLevelClass; info: LevelBindingInfo } {
  const file = path.join(packageRoot(), 'prebuilds', nativeTarget(), 'classic_level.node');
  let binding: { ourodb_patch?: unknown } | undefined;
  let reason: string | undefined;
  if (!fs.existsSync(file)) {
    reason = `no verified LevelDB binding at ${file} (scripts/postinstall.mjs builds one)`;
  } else {
    try {
      binding = require(file) as { ourodb_patch?: unknown };
      if (binding.ourodb_patch !== NATIVE_PATCH_REVISION) {
        reason = `${file} reports patch revision ${String(binding.ourodb_patch)}, expected ${NATIVE_PATCH_REVISION} (rebuild: node scripts/leveldb-native.mjs --force)`;
        binding = undefined;
      }
    } catch (err) {
      reason = `${file} does not load here: ${(err as Error).message}`;
    }
  }
  if (binding === undefined) {
    const { ClassicLevel } = require('classic-level') as typeof import('classic-level');
    return { ClassicLevel, info: { verified: false, path: require.resolve('classic-level'), reason: reason! } };
  }
  return { ClassicLevel: withBinding(binding), info: { verified: true, path: file } };
}

/** A private copy of classic-level's JavaScript whose `require('./binding')` returns `binding`. */
function withBinding(binding: object): typeof ClassicLevelClass {
  const dir = path.dirname(require.resolve('classic-level/package.json'));
  // classic-level's own files, not those of packages nested under it.
  const own = (f: string) => f.startsWith(dir + path.sep) && !f.slice(dir.length).includes(`${path.sep}node_modules${path.sep}`);
  const cache = require.cache;
  const saved = Object.keys(cache).filter(own).map((f) => [f, cache[f]] as const);
  for (const [f] of saved) delete cache[f];
  const bindingFile = path.join(dir, 'binding.js');
  const stub = new Module(bindingFile);
  stub.filename = bindingFile;
  stub.loaded = true;
  stub.exports = binding;
  cache[bindingFile] = stub;
  try {
    return (require(dir) as typeof import('classic-level')).ClassicLevel;
  } finally {
    for (const f of Object.keys(cache)) if (own(f)) delete cache[f];
    for (const [f, m] of saved) cache[f] = m;
  }
}

const loaded = load();

/** classic-level's ClassicLevel, over the verified binding where there is one: every LevelDB OuroDB opens is made with it. */
export const ClassicLevel = loaded.ClassicLevel;
export type ClassicLevel<K = string, V = string> = ClassicLevelClass<K, V>;

/** Which LevelDB binding this process uses, and whether its reads are verified. */
export const levelBinding: LevelBindingInfo = Object.freeze(loaded.info);

let warned = false;

/**
 * Says once per process, as a Node warning with code OURO_UNVERIFIED_INDEX, that index reads go
 * unverified here (OuroDB.open calls it). A warning rather than a refusal: the data itself stays
 * authenticated, and `requireVerifiedIndex` turns it into a refusal for those who want one.
 */
export function warnUnverifiedIndex(): void {
  if (levelBinding.verified || warned) return;
  warned = true;
  process.emitWarning('OuroDB: LevelDB here does not verify index block checksums, so a damaged index table can read as a missing key or an old version instead of an error. Install python3, make and a C++ compiler and run `npm rebuild ourodb` (docs/design.md, "Verified index reads").', { code: 'OURO_UNVERIFIED_INDEX', detail: levelBinding.reason });
}
