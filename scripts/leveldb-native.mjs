// Builds OuroDB's own LevelDB binding: classic-level's native source with
// native/classic-level+3.0.0.patch applied (block checksums verified on every read, logs zeroed
// ahead, iterator batches packed into one Buffer, a revision marker), compiled with node-gyp into
// prebuilds/<target>/classic_level.node beside a stamp of the patch it was built from.
// index/leveldb.ts loads that file and nothing else as a verified binding.
//
// Run by scripts/postinstall.mjs (in this repository and, where no shipped prebuilt loads, in an
// application) and by hand: `node scripts/leveldb-native.mjs [--force]`. Exits 0 when a verified
// binding for this machine is in place, 1 when none could be built.
//
// Why not patch node_modules/classic-level in place: an application that installs OuroDB gets a
// pristine classic-level (and may share it with other packages), and no patch tool runs there.
// The patch is applied here, strictly (every context line must match), to a copy of the source.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const patchFile = path.join(root, 'native', 'classic-level+3.0.0.patch');

/** Must equal the `ourodb_patch` the patch exports and NATIVE_PATCH_REVISION in index/leveldb.ts. */
export const PATCH_REVISION = 2;

/** The folder under prebuilds/ for this machine; index/leveldb.ts names it the same way. */
export function nativeTarget() {
  let target = `${process.platform}-${process.arch}`;
  if (process.platform === 'linux') target += process.report.getReport().header.glibcVersionRuntime ? '-glibc' : '-musl';
  return target;
}

export function bindingPath(target = nativeTarget()) {
  return path.join(root, 'prebuilds', target, 'classic_level.node');
}

function patchStamp() {
  return crypto.createHash('sha256').update(fs.readFileSync(patchFile)).digest('hex');
}

/**
 * Why the binding at `file` is not usable here, or undefined when it is: present, built from this
 * very patch (stamp), and loading in a fresh process with the expected revision marker. A fresh
 * process, because a failed dlopen or a wrong binary must not take this one down.
 */
export function bindingProblem(file = bindingPath()) {
  if (!fs.existsSync(file)) return 'not built';
  const stampFile = path.join(path.dirname(file), 'ourodb-patch.sha256');
  if (!fs.existsSync(stampFile) || fs.readFileSync(stampFile, 'utf8').trim() !== patchStamp()) return 'built from another version of the patch';
  const probe = spawnSync(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(file)}).ourodb_patch))`], { encoding: 'utf8' });
  if (probe.status !== 0) return `does not load: ${(probe.stderr || '').trim().split('\n').find((l) => /Error/.test(l)) ?? `exit ${probe.status}`}`;
  if (probe.stdout !== String(PATCH_REVISION)) return `reports patch revision ${probe.stdout}, expected ${PATCH_REVISION}`;
  return undefined;
}

/**
 * Applies a unified diff (as `git diff` writes it) under `dir`, refusing any hunk whose context or
 * removed lines differ from the file: the patch is for one exact classic-level release, so a
 * mismatch means the wrong source, and a fuzzy apply could compile something nobody reviewed.
 */
export function applyPatch(dir, patchText) {
  const lines = patchText.split('\n');
  let i = 0;
  let applied = 0;
  while (i < lines.length) {
    if (!lines[i].startsWith('--- ')) { i++; continue; }
    const target = lines[i + 1]?.match(/^\+\+\+ b\/(.+)$/)?.[1];
    if (!target) throw new Error(`patch: no "+++ b/" line after line ${i + 1}`);
    const file = path.join(dir, target);
    const src = fs.readFileSync(file, 'utf8').split('\n');
    const out = [];
    let at = 0; // next unconsumed line of src (0-based)
    i += 2;
    while (i < lines.length && lines[i].startsWith('@@')) {
      const h = lines[i].match(/^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@/);
      if (!h) throw new Error(`patch: bad hunk header ${lines[i]}`);
      const start = Number(h[1]) - (h[2] === '0' ? 0 : 1);
      if (start < at) throw new Error(`patch: overlapping hunks in ${target}`);
      out.push(...src.slice(at, start));
      at = start;
      i++;
      for (; i < lines.length && /^[ +\-\\]/.test(lines[i]) && !lines[i].startsWith('--- '); i++) {
        const l = lines[i];
        if (l.startsWith('\\')) continue; // "\ No newline at end of file"
        if (l[0] === '+') { out.push(l.slice(1)); continue; }
        if (src[at] !== l.slice(1)) throw new Error(`patch: ${target} line ${at + 1} is ${JSON.stringify(src[at])}, the patch expects ${JSON.stringify(l.slice(1))}`);
        if (l[0] === ' ') out.push(src[at]);
        at++;
      }
      applied++;
    }
    out.push(...src.slice(at));
    fs.writeFileSync(file, out.join('\n'));
  }
  if (applied === 0) throw new Error('patch: no hunks');
  return applied;
}

/** The headers of the Node that runs this, so node-gyp downloads nothing: the pinned `node` package here, the installation's own include/ elsewhere. */
function nodeHeadersDir() {
  const candidates = [];
  try {
    const inner = path.join(path.dirname(require.resolve('node/package.json')), 'node_modules');
    for (const d of fs.readdirSync(inner)) candidates.push(path.join(inner, d));
  } catch {}
  candidates.push(path.resolve(path.dirname(process.execPath), '..'));
  return candidates.find((d) => fs.existsSync(path.join(d, 'include', 'node', 'node_api.h')));
}

function nodeGyp() {
  const candidates = [process.env.npm_config_node_gyp];
  if (process.env.npm_execpath) candidates.push(path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  try { candidates.push(require.resolve('node-gyp/bin/node-gyp.js')); } catch {}
  // The npm on PATH (…/npm/bin/npm-cli.js -> …/npm/node_modules/node-gyp), for a run by hand.
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    try {
      candidates.push(path.join(path.dirname(fs.realpathSync(path.join(dir, 'npm'))), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
    } catch {}
  }
  return candidates.find((c) => c && fs.existsSync(c));
}

/** Compiles the patched source; returns undefined on success, else what went wrong. ~20 s on two cores. */
export function buildBinding({ log = console.log } = {}) {
  const classicDir = path.dirname(require.resolve('classic-level/package.json'));
  const version = JSON.parse(fs.readFileSync(path.join(classicDir, 'package.json'), 'utf8')).version;
  if (version !== '3.0.0') return `classic-level ${version} is installed; native/ holds a patch for 3.0.0`;
  const gyp = nodeGyp();
  if (!gyp) return 'node-gyp not found (it comes with npm)';
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ourodb-leveldb-'));
  try {
    for (const entry of ['binding.cc', 'binding.gyp', 'deps']) fs.cpSync(path.join(classicDir, entry), path.join(work, entry), { recursive: true });
    applyPatch(work, fs.readFileSync(patchFile, 'utf8'));
    const args = [gyp, 'rebuild', '-j', 'max'];
    const headers = nodeHeadersDir();
    if (headers) args.push(`--nodedir=${headers}`);
    log(`ourodb: compiling LevelDB with block checksums verified (${path.relative(root, patchFile)}; node-gyp, headers ${headers ?? 'downloaded by node-gyp'})`);
    // binding.gyp finds napi-macros with `node -e "require('napi-macros')"` from the build folder.
    const nodePath = [path.join(classicDir, 'node_modules'), path.dirname(classicDir), process.env.NODE_PATH].filter(Boolean).join(path.delimiter);
    const built = spawnSync(process.execPath, args, { cwd: work, env: { ...process.env, NODE_PATH: nodePath }, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', maxBuffer: 64 << 20 });
    if (built.status !== 0) return `node-gyp failed (exit ${built.status ?? built.signal}):\n${(built.stderr ?? String(built.error)).split('\n').slice(-30).join('\n')}`;
    const file = bindingPath();
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const out = path.join(work, 'build', 'Release', 'classic_level.node');
    // Debug symbols are most of the file (~630 KiB -> ~400 KiB); strip when the tool is there.
    spawnSync('strip', ['--strip-unneeded', out], { stdio: 'ignore' });
    fs.copyFileSync(out, `${file}.tmp`);
    fs.renameSync(`${file}.tmp`, file);
    fs.writeFileSync(path.join(path.dirname(file), 'ourodb-patch.sha256'), `${patchStamp()}\n`);
    return bindingProblem(file);
  } catch (err) {
    return String(err?.message ?? err);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** A verified binding for this machine: kept if it is already in place, else built. Returns what went wrong, or undefined. */
export function ensureBinding({ force = false, log = console.log } = {}) {
  const problem = force ? 'rebuild asked for' : bindingProblem();
  if (problem === undefined) return undefined;
  log(`ourodb: verified LevelDB binding for ${nativeTarget()}: ${problem}`);
  return buildBinding({ log });
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const problem = ensureBinding({ force: process.argv.includes('--force') });
  if (problem) {
    console.error(`ourodb: no verified LevelDB binding: ${problem}`);
    process.exit(1);
  }
  console.log(`ourodb: verified LevelDB binding in place: ${path.relative(root, bindingPath())}`);
}
