/**
 * `embed` part: what an application that embeds OuroDB pays before it stores a byte. The packed
 * tarball is installed into fresh applications with plain `npm install` (everything, the cluster
 * stack included, as every install was before it became optional) and with `--omit=optional`
 * (the database alone); then each entry point is imported cold, in a fresh process, several times.
 * The peer is classic-level imported in the same application: the floor for a LevelDB-backed
 * embedded store. Timing is taken inside the process around the `import()`, so Node's own start
 * is left out.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { type InstalledApp, installApp, installedSize, nodeBinary, packTarball, runInApp } from '../test/package-install.js';

export interface EmbedResult {
  install: { full: { packages: number; mib: number; seconds: number }; lean: { packages: number; mib: number; seconds: number } };
  /** Median cold import time in ms, per entry point, in the lean app (ourodb/node in the full one). */
  importMs: Record<string, number>;
  /** Files and packages each entry point loads (module load hooks; a separate run). */
  loads: Record<string, { files: number; packages: number }>;
  tarball: { files: number; mib: number };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function coldImportMs(app: InstalledApp, specifier: string, runs: number): number {
  const script = `const t = performance.now(); await import(${JSON.stringify(specifier)}); console.log(performance.now() - t);`;
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const r = runInApp(app, ['--input-type=module', '-e', script]);
    if (r.status !== 0) throw new Error(`import ${specifier}: ${r.stderr}`);
    times.push(Number(r.stdout.trim()));
  }
  return median(times);
}

function loads(app: InstalledApp, specifier: string): { files: number; packages: number } {
  const script = `
    import module from 'node:module';
    const files = new Set();
    module.registerHooks({ load(url, context, next) { files.add(url); return next(url, context); } });
    await import(${JSON.stringify(specifier)});
    const packages = new Set([...files].map((f) => /node_modules\\/((@[^/]+\\/)?[^/]+)/.exec(f)?.[1]).filter(Boolean));
    console.log(JSON.stringify({ files: files.size, packages: packages.size }));`;
  const r = runInApp(app, ['--input-type=module', '-e', script]);
  if (r.status !== 0) throw new Error(`loads of ${specifier}: ${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as { files: number; packages: number };
}

export function embedBench(work: string, { runs }: { runs: number }): EmbedResult {
  const dir = path.join(work, 'embed');
  fs.mkdirSync(dir, { recursive: true });
  const tarball = packTarball(dir);
  const listing = spawnSync('tar', ['tzf', tarball], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  const node = nodeBinary('24');
  const full = installApp(path.join(dir, 'full'), tarball, node);
  const lean = installApp(path.join(dir, 'lean'), tarball, node, ['--omit=optional']);
  const size = (app: InstalledApp) => {
    const s = installedSize(app);
    return { packages: s.packages, mib: s.bytes / 2 ** 20, seconds: app.seconds };
  };
  const importMs: Record<string, number> = {};
  const loaded: Record<string, { files: number; packages: number }> = {};
  for (const [specifier, app] of [['ourodb', lean], ['ourodb/blockstore', lean], ['classic-level', lean], ['ourodb/node', full]] as const) {
    // classic-level resolves from the application: npm hoists OuroDB's dependencies next to it.
    importMs[specifier] = coldImportMs(app, specifier, runs);
    loaded[specifier] = loads(app, specifier);
  }
  return { install: { full: size(full), lean: size(lean) }, importMs, loads: loaded, tarball: { files: listing.length, mib: fs.statSync(tarball).size / 2 ** 20 } };
}
