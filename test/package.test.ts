/**
 * OuroDB at the front door: what an application gets from `npm install` of the packed tarball.
 * For each supported Node line (22 and 24), a fresh application installs the tarball with plain
 * `npm install` (npm itself running on that line) and runs test/package/app.mjs: round trips,
 * keys and history, reopen, check, a wrong passphrase, and an index whose every table has a byte
 * flipped, where every read must be right or a typed error, never wrong or missing. Then the
 * fallbacks: without the shipped binding OuroDB warns and `requireVerifiedIndex` refuses, and
 * `npm rebuild ourodb` compiles the binding from source; an install with --omit=optional embeds
 * the database without the cluster stack, and the CLI says what is missing.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { type InstalledApp, NODE_LINES, type NodeLine, installApp, installedSize, nodeBinary, npmCli, packTarball, runInApp } from './package-install.js';
import { repoRoot } from './paths.js';

const DAMAGE_KEYS = 20_000;
let work: string;
let tarball: string;

interface AppReport {
  node: string;
  verified: boolean;
  binding: string;
  indexReadsVerified: boolean;
  wrongKey: string;
  roundTrips: string;
  damage?: { tables: number; right: number; typed: number; wrong: number; openTyped: string | null; rebuilt: boolean };
}

function runApp(app: InstalledApp, args: string[]): AppReport {
  fs.copyFileSync(path.join(repoRoot, 'test', 'package', 'app.mjs'), path.join(app.dir, 'app.mjs'));
  const r = runInApp(app, ['app.mjs', ...args]);
  expect(r.status, `app.mjs ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as AppReport;
}

beforeAll(() => {
  // Not tempDir(): that is emptied after each test, and every test here uses the tarball.
  work = fs.mkdtempSync(path.join(fs.realpathSync(process.env.TMPDIR ?? '/tmp'), 'ourodb-package-'));
  tarball = packTarball(work);
  return () => fs.rmSync(work, { recursive: true, force: true });
}, 120_000);

describe('the packed tarball', () => {
  it('ships the library, the CLI, the docs and the verified LevelDB binding, not tests, benchmarks or source maps', () => {
    const files = execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' }).split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
    for (const needed of ['dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/bin/ouro.js', 'dist/carrier/index.js', 'dist/index/leveldb.js', 'docs/FORMAT.md', 'native/classic-level+3.0.0.patch', 'scripts/postinstall.mjs', 'scripts/leveldb-native.mjs', 'prebuilds/linux-x64-glibc/classic_level.node', 'prebuilds/linux-x64-glibc/ourodb-patch.sha256', 'README.md', 'package.json']) {
      expect(files, needed).toContain(needed);
    }
    expect(files.filter((f) => f.startsWith('dist/test/') || f.startsWith('dist/bench/') || f.endsWith('.map'))).toEqual([]);
    console.log(`tarball: ${files.length} files, ${(fs.statSync(tarball).size / 2 ** 20).toFixed(1)} MiB`);
  });
});

describe.each(Object.keys(NODE_LINES) as NodeLine[])('installed with plain npm install on Node %s', (line) => {
  let app: InstalledApp;
  beforeAll(() => {
    app = installApp(path.join(work, `app-node${line}`), tarball, nodeBinary(line));
  }, 600_000);

  it('works: round trips, keys and history, reopen, check, wrong key; a damaged index reads right or fails typed', () => {
    const r = runApp(app, [path.join(app.dir, 'db'), '--damage', String(DAMAGE_KEYS)]);
    console.log(`Node ${line}: ${JSON.stringify(r)} (install ${app.seconds.toFixed(1)} s, ${JSON.stringify(installedSize(app))})`);
    expect(r.node).toBe(`v${NODE_LINES[line]}`);
    expect(r.verified).toBe(true);
    expect(r.binding).toBe('linux-x64-glibc');
    expect(r.indexReadsVerified).toBe(true);
    expect(r.wrongKey).toBe('OURO_WRONG_KEY');
    expect(r.roundTrips).toBe('ok');
    const d = r.damage!;
    expect(d.tables).toBeGreaterThan(0);
    // The premise: the damage was seen (typed errors, a refused open, or an index set aside and rebuilt).
    expect(d.typed > 0 || d.openTyped !== null || d.rebuilt, JSON.stringify(d)).toBe(true);
    expect(d.wrong, JSON.stringify(d)).toBe(0);
    if (d.openTyped === null) expect(d.right + d.typed).toBe(DAMAGE_KEYS);
  });

  it('runs the CLI with npx, and loads every entry point', () => {
    const help = runInApp(app, [npmCli('npx'), 'ouro', '--help']);
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toContain('Usage: ouro');
    const entries = runInApp(app, ['--input-type=module', '-e', "for (const e of ['ourodb', 'ourodb/node', 'ourodb/blockstore']) await import(e); console.log('loaded')"]);
    expect(entries.status, entries.stderr).toBe(0);
    expect(entries.stdout.trim()).toBe('loaded');
  });
});

describe('fallbacks', () => {
  it('without the shipped binding: warns, refuses with requireVerifiedIndex, and `npm rebuild ourodb` compiles it', () => {
    const app = installApp(path.join(work, 'app-rebuild'), tarball, nodeBinary('24'));
    const prebuilds = path.join(app.dir, 'node_modules', 'ourodb', 'prebuilds');
    fs.rmSync(prebuilds, { recursive: true });
    const probe = `
      import { OuroDB, levelBinding } from 'ourodb';
      const warnings = [];
      process.on('warning', (w) => warnings.push(w.code));
      let refused = null;
      try { await OuroDB.open('strict', { key: new Uint8Array(32), requireVerifiedIndex: true }); } catch (err) { refused = err.code; }
      const db = await OuroDB.open('lenient', { key: new Uint8Array(32) });
      const stats = await db.stats();
      await db.close();
      await new Promise((r) => setImmediate(r));
      console.log(JSON.stringify({ verified: levelBinding.verified, refused, warnings, indexReadsVerified: stats.indexReadsVerified, strictCreated: (await import('node:fs')).existsSync('strict') }));`;
    const before = runInApp(app, ['--input-type=module', '-e', probe]);
    expect(before.status, before.stderr).toBe(0);
    expect(JSON.parse(before.stdout)).toEqual({ verified: false, refused: 'OURO_BAD_CONFIG', warnings: ['OURO_UNVERIFIED_INDEX'], indexReadsVerified: false, strictCreated: false });

    // npm rebuild runs the package's postinstall again: no prebuilt is there, so it compiles the
    // patched source (npm shows a dependency's script output only when it fails, hence the file
    // check rather than its words).
    const rebuild = runInApp(app, [npmCli(), 'rebuild', 'ourodb']);
    expect(rebuild.status, `${rebuild.stdout}\n${rebuild.stderr}`).toBe(0);
    expect(fs.existsSync(path.join(prebuilds, 'linux-x64-glibc', 'classic_level.node'))).toBe(true);
    expect(fs.readFileSync(path.join(prebuilds, 'linux-x64-glibc', 'ourodb-patch.sha256'), 'utf8').trim()).toBe(crypto.createHash('sha256').update(fs.readFileSync(path.join(repoRoot, 'native', 'classic-level+3.0.0.patch'))).digest('hex'));
    const r = runApp(app, [path.join(app.dir, 'db'), '--damage', '5000']);
    expect(r.verified).toBe(true);
    expect(r.damage!.wrong, JSON.stringify(r.damage)).toBe(0);
  }, 300_000);

  it('--omit=optional embeds the database without the cluster stack; the cluster commands say what is missing', () => {
    const full = installedSize(installApp(path.join(work, 'app-full'), tarball, nodeBinary('24')));
    const app = installApp(path.join(work, 'app-lean'), tarball, nodeBinary('24'), ['--omit=optional']);
    const lean = installedSize(app);
    console.log(`installed: full ${full.packages} packages, ${(full.bytes / 2 ** 20).toFixed(1)} MiB; --omit=optional ${lean.packages} packages, ${(lean.bytes / 2 ** 20).toFixed(1)} MiB`);
    expect(fs.existsSync(path.join(app.dir, 'node_modules', 'libp2p'))).toBe(false);
    expect(lean.packages).toBeLessThan(full.packages);
    const r = runApp(app, [path.join(app.dir, 'db')]);
    expect(r.roundTrips).toBe('ok');
    expect(r.verified).toBe(true);
    const node = runInApp(app, [npmCli('npx'), 'ouro', 'node', 'init', 'n', '--new-cluster']);
    expect(node.status).toBe(2);
    expect(node.stderr).toContain("OuroDB's optional dependencies");
    expect(node.stderr).toContain('npm install ourodb --include=optional');
  }, 300_000);
});
