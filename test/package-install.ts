/**
 * OuroDB as an application installs it: the packed tarball, a fresh application folder, plain
 * `npm install`, on a chosen Node line. Shared by test/package.test.ts and the `embed` benchmark
 * part, so both measure the same install.
 *
 * Node lines other than the one running come from the npm registry's `node` package, installed
 * once into a cache folder under the system's temp dir (~30 MB, a few seconds from npm's cache).
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './paths.js';

/** The Node lines OuroDB supports, each pinned to the release the tests install. */
export const NODE_LINES = { '22': '22.23.3', '24': JSON.parse(fs.readFileSync(path.join(repoRoot, 'node_modules', 'node', 'package.json'), 'utf8')).version as string } as const;
export type NodeLine = keyof typeof NODE_LINES;

function run(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { cwd: options.cwd, env: options.env ?? process.env, encoding: 'utf8', timeout: options.timeoutMs ?? 600_000, maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return r;
}

function mustRun(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): string {
  const r = run(cmd, args, options);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} in ${options.cwd} exited ${r.status ?? r.signal}:\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`);
  return r.stdout;
}

/** npm's own entry scripts (`npm-cli.js`, `npx-cli.js`), to run npm or npx under a chosen Node. */
export function npmCli(which: 'npm' | 'npx' = 'npm'): string {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, 'npm');
    if (fs.existsSync(candidate)) return path.join(path.dirname(fs.realpathSync(candidate)), `${which}-cli.js`);
  }
  throw new Error('npm is not on PATH');
}

/** The `node` binary of a supported line: this process's when it is that release, else one installed from the npm registry. */
export function nodeBinary(line: NodeLine): string {
  const version = NODE_LINES[line];
  if (process.version === `v${version}`) return process.execPath;
  const dir = path.join(os.tmpdir(), `ourodb-node-${version}`);
  const bin = path.join(dir, 'node_modules', 'node', 'bin', 'node');
  if (!fs.existsSync(bin) || run(bin, ['--version'], { cwd: dir }).stdout.trim() !== `v${version}`) {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'package.json'), '{"private":true}\n');
    mustRun(process.execPath, [npmCli(), 'install', '--no-audit', '--no-fund', `node@${version}`], { cwd: dir });
  }
  return bin;
}

/** An environment whose `node` (and so npm's scripts and `npx`) is the given binary. */
export function envFor(node: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${path.dirname(node)}${path.delimiter}${process.env.PATH ?? ''}` };
  // npm, when it ran this process, left settings for its own child processes: not for a fresh application.
  for (const k of Object.keys(env)) if (k.startsWith('npm_')) delete env[k];
  return env;
}

/**
 * Packs the repository as it stands (dist/ must be built: `npm test` builds it first) into
 * `dest` and returns the tarball's path. Scripts are skipped: `prepare` would run tsc again,
 * and the files it ships are checked by the caller.
 */
export function packTarball(dest: string): string {
  const out = mustRun(process.execPath, [npmCli(), 'pack', '--ignore-scripts', '--json', '--pack-destination', dest], { cwd: repoRoot, env: envFor(process.execPath) });
  const [info] = JSON.parse(out) as { filename: string }[];
  return path.join(dest, info!.filename);
}

export interface InstalledApp {
  dir: string;
  node: string;
  env: NodeJS.ProcessEnv;
  /** What `npm install` printed (its postinstall lines among them). */
  output: string;
  /** Seconds the install took. */
  seconds: number;
}

/** A fresh application in `dir` with the tarball installed by plain `npm install` (plus `extraArgs`), npm running under `node`. */
export function installApp(dir: string, tarball: string, node: string, extraArgs: string[] = []): InstalledApp {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify({ name: 'ourodb-embedding-app', version: '1.0.0', private: true, type: 'module' }, null, 2)}\n`);
  const env = envFor(node);
  const started = performance.now();
  const r = run(node, [npmCli(), 'install', ...extraArgs, tarball], { cwd: dir, env });
  const seconds = (performance.now() - started) / 1000;
  if (r.status !== 0) throw new Error(`npm install ${tarball} exited ${r.status ?? r.signal}:\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`);
  return { dir, node, env, output: `${r.stdout}\n${r.stderr}`, seconds };
}

/** Runs `args` under the app's Node in its folder. */
export function runInApp(app: InstalledApp, args: string[], cmd = app.node): SpawnSyncReturns<string> {
  return run(cmd, args, { cwd: app.dir, env: app.env });
}

/** Packages and bytes under the app's node_modules (every package.json one level below a node_modules, scoped or not). */
export function installedSize(app: InstalledApp): { packages: number; bytes: number } {
  let packages = 0;
  let bytes = 0;
  const walk = (d: string, parentIsNodeModules: boolean) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (parentIsNodeModules && !e.name.startsWith('@') && !e.name.startsWith('.') && fs.existsSync(path.join(p, 'package.json'))) packages++;
        walk(p, e.name === 'node_modules' || (parentIsNodeModules && e.name.startsWith('@')));
      } else if (e.isFile()) {
        bytes += fs.statSync(p).size;
      }
    }
  };
  walk(path.join(app.dir, 'node_modules'), true);
  return { packages, bytes };
}
