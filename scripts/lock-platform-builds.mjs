// Restores the lockfile entries of optional, platform-specific builds that the registry reachable
// from this machine does not serve (msgpackr-extract's darwin/win32/arm builds).
//
// Why: `npm install` drops optional packages it cannot fetch from the lockfile, and `npm ci` then
// refuses the lockfile as out of sync with package.json. An entry with `os`/`cpu` and no tarball is
// what npm itself writes for a build of another platform; `npm ci` skips it on this platform.
// Run after any `npm install` that rewrites package-lock.json: `node scripts/lock-platform-builds.mjs`.
import { readFileSync, writeFileSync } from 'node:fs';

const lockPath = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(lockPath, 'utf8'));
const packages = lock.packages;
let added = 0;

for (const [path, entry] of Object.entries(packages)) {
  for (const [name, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const target = `node_modules/${name}`;
    if (packages[target] !== undefined) continue;
    // name-<os>-<cpu>, optionally with a libc or toolchain suffix (@chainsafe/libp2p-quic-linux-x64-gnu).
    const platform = /-(darwin|linux|win32|freebsd)-(x64|arm64|arm|ia32)(?:-(gnu|musl|msvc))?$/.exec(name);
    if (platform === null) throw new Error(`${path}: optional ${name} is missing and is not a platform build`);
    packages[target] = { version, cpu: [platform[2]], license: entry.license, optional: true, os: [platform[1]], ...(platform[3] === 'gnu' || platform[3] === 'musl' ? { libc: [platform[3] === 'gnu' ? 'glibc' : 'musl'] } : {}) };
    added++;
  }
}

const sorted = Object.fromEntries(
  Object.entries(packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : a > b ? 1 : 0)),
);
lock.packages = sorted;
writeFileSync(lockPath, JSON.stringify(lock, null, 2) + '\n');
console.log(`lockfile: ${added} platform build entr${added === 1 ? 'y' : 'ies'} restored`);
