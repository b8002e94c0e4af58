/**
 * `npm run bench -- --only tree`: backing up a real source tree with many small files, version
 * after version, with `ouro put` beside restic and borg (when installed; Debian packages `restic`,
 * `borgbackup`), plus export/import throughput. Versions of the `date-fns` npm package (~4,800
 * files each) are fetched with `npm pack` into bench/.cache and unpacked one after another into
 * the same directory, which every tool then backs up in turn, as a nightly backup of a changing
 * tree would. Figures: wall time of all backups, bytes on disk afterwards (dedup + compression),
 * the median of three unchanged re-backups, and the median of three restores of the last version
 * (each checked byte for byte against the tree).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const TREE_VERSIONS = ['3.3.1', '3.4.0', '3.5.0', '3.6.0'];
const PACKAGE = 'date-fns';
const ouroBin = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'bin', 'ouro.js');

export interface ToolResult {
  tool: string;
  backupSecs: number;
  storedBytes: number;
  restoreSecs: number;
  /** The tree backup only: the last version backed up once more, unchanged (the nightly case); the median of `againRuns`. */
  againSecs?: number;
  againRuns?: number[];
  /** Every restore's seconds (`restoreSecs` is their median). */
  restoreRuns?: number[];
  /** Peak RSS of the tool's process (the largest over its backups), or NaN without GNU time. */
  backupRssMiB: number;
  restoreRssMiB: number;
  /** CPU seconds (user + sys) of the backup process (the large-file backup), or NaN without GNU time. */
  backupCpuSecs?: number;
}

/** One run of a tool's process: wall seconds, its peak RSS and its CPU seconds (user + sys; NaN without GNU time). */
export interface ToolRun {
  secs: number;
  rssMiB: number;
  cpuSecs: number;
}

/** How many turns the unchanged backup and the restore of the tree get (the median is reported). */
const TURNS = 3;

/** Indices 0..n-1 starting at `turn` mod n: turn 0 is 0,1,2; turn 1 is 1,2,0; ... */
function turnOrder(n: number, turn: number): number[] {
  return Array.from({ length: n }, (_, k) => (k + turn) % n);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function fetchVersions(): string[] {
  const cache = path.resolve('bench', '.cache');
  fs.mkdirSync(cache, { recursive: true });
  return TREE_VERSIONS.map((v) => {
    const file = path.join(cache, `${PACKAGE}-${v}.tgz`);
    if (!fs.existsSync(file)) execFileSync('npm', ['pack', `${PACKAGE}@${v}`, '--silent'], { cwd: cache, stdio: ['ignore', 'ignore', 'inherit'] });
    return file;
  });
}

function unpack(tgz: string, into: string): void {
  fs.rmSync(into, { recursive: true, force: true });
  fs.mkdirSync(into, { recursive: true });
  execFileSync('tar', ['xzf', tgz, '-C', into, '--strip-components=1']);
}

function du(dir: string): number {
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).reduce((n, e) => n + fs.statSync(path.join(e.parentPath, e.name)).size, 0);
}

/** SHA-256 over every file's relative path and contents, in path order (read in 1 MiB pieces: a file may be large). */
function treeDigest(dir: string): string {
  const h = crypto.createHash('sha256');
  const files = fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name)).sort();
  const piece = Buffer.allocUnsafe(1 << 20);
  for (const f of files) {
    h.update(path.relative(dir, f)).update('\0');
    const fd = fs.openSync(f, 'r');
    try {
      for (let n; (n = fs.readSync(fd, piece, 0, piece.length, null)) > 0; ) h.update(piece.subarray(0, n));
    } finally {
      fs.closeSync(fd);
    }
  }
  return h.digest('hex');
}

// GNU time reports a process's peak RSS (its own and its children's, waited for); without it the
// figure is NaN and the report leaves it out.
const gnuTime = fs.existsSync('/usr/bin/time') ? '/usr/bin/time' : null;

function timed(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv }): ToolRun {
  const rssFile = path.join(os.tmpdir(), `ouro-bench-rss-${process.pid}`);
  // Peak RSS, user and system CPU seconds, on the last line GNU time writes.
  const [file, argv] = gnuTime ? [gnuTime, ['-f', '%M %U %S', '-o', rssFile, cmd, ...args]] : [cmd, args];
  const t = process.hrtime.bigint();
  const r = spawnSync(file, argv, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 64 << 20 });
  const secs = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  let rssMiB = NaN;
  let cpuSecs = NaN;
  if (gnuTime) {
    const [kib, user, sys] = fs.readFileSync(rssFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
    rssMiB = kib! / 1024;
    cpuSecs = user! + sys!;
    fs.rmSync(rssFile);
  }
  return { secs, rssMiB, cpuSecs };
}

function installed(cmd: string, versionArgs: string[]): boolean {
  return spawnSync(cmd, versionArgs, { stdio: 'ignore' }).status === 0;
}

export interface BackupTool {
  name: string;
  available: boolean;
  repo: string;
  init(): void;
  /** Backs up `<work>/<subject>`. */
  backup(): ToolRun;
  /** Restores the latest backup of the subject to `out`. */
  restore(out: string): ToolRun;
}

/** OuroDB (`ouro put`/`ouro get` as separate processes), restic and borg, each backing up `<work>/<subject>` into a repository of its own. */
export function backupTools(work: string, key: string, subject: string): BackupTool[] {
  const node = process.execPath;
  return [
    {
      name: 'OuroDB (ouro put)',
      available: true,
      repo: path.join(work, `ouro-${subject}`),
      init() {
        timed(node, [ouroBin, '--key-file', key, 'init', this.repo], { cwd: work });
      },
      backup() {
        return timed(node, [ouroBin, '--key-file', key, 'put', this.repo, subject], { cwd: work });
      },
      restore(out) {
        return timed(node, [ouroBin, '--key-file', key, 'get', this.repo, `${subject}/`, '-o', out], { cwd: work });
      },
    },
    {
      name: 'restic',
      available: installed('restic', ['version']),
      repo: path.join(work, `restic-${subject}`),
      init() {
        timed('restic', ['init', '--repo', this.repo], { cwd: work, env: { RESTIC_PASSWORD: 'bench' } });
      },
      backup() {
        return timed('restic', ['--repo', this.repo, 'backup', '--quiet', subject], { cwd: work, env: { RESTIC_PASSWORD: 'bench' } });
      },
      restore(out) {
        const run = timed('restic', ['--repo', this.repo, 'restore', 'latest', '--target', out], { cwd: work, env: { RESTIC_PASSWORD: 'bench' } });
        fs.renameSync(path.join(out, subject), `${out}.tmp`);
        fs.rmSync(out, { recursive: true });
        fs.renameSync(`${out}.tmp`, out);
        return run;
      },
    },
    {
      name: 'borg',
      available: installed('borg', ['--version']),
      repo: path.join(work, `borg-${subject}`),
      init() {
        timed('borg', ['init', '--encryption', 'repokey', this.repo], { cwd: work, env: { BORG_PASSPHRASE: 'bench' } });
      },
      backup() {
        return timed('borg', ['create', `${this.repo}::v${Date.now()}`, subject], { cwd: work, env: { BORG_PASSPHRASE: 'bench' } });
      },
      restore(out) {
        fs.mkdirSync(out, { recursive: true });
        const last = execFileSync('borg', ['list', '--last', '1', '--format', '{archive}', this.repo], { env: { ...process.env, BORG_PASSPHRASE: 'bench' } }).toString().trim();
        const run = timed('borg', ['extract', `${this.repo}::${last}`], { cwd: out, env: { BORG_PASSPHRASE: 'bench' } });
        fs.renameSync(path.join(out, subject), `${out}.tmp`);
        fs.rmSync(out, { recursive: true });
        fs.renameSync(`${out}.tmp`, out);
        return run;
      },
    },
  ];
}

export function treeBench(work: string): { results: ToolResult[]; logicalBytes: number; files: number; exportMiBs: number; importMiBs: number; archiveBytes: number; skipped: string[] } {
  const tgzs = fetchVersions();
  const tree = path.join(work, 'tree');
  const key = path.join(work, 'key');
  fs.writeFileSync(key, crypto.randomBytes(32));
  const results: ToolResult[] = [];
  const skipped: string[] = [];
  let logicalBytes = 0;
  let files = 0;
  for (const t of tgzs) {
    unpack(t, tree);
    logicalBytes += du(tree);
    files += fs.readdirSync(tree, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).length;
  }
  const tools = backupTools(work, key, 'tree').filter((tool) => {
    if (!tool.available) skipped.push(`${tool.name}: not installed`);
    return tool.available;
  });
  for (const tool of tools) tool.init();
  const backupSecs = tools.map(() => 0);
  const backupRssMiB = tools.map(() => 0);
  // The tools take turns, each version unpacked once and backed up by every tool, the order
  // rotated from one turn to the next: a slow spell of this shared machine then lands on every
  // tool alike instead of on whichever tool ran during it.
  tgzs.forEach((t, v) => {
    unpack(t, tree);
    for (const i of turnOrder(tools.length, v)) {
      const run = tools[i]!.backup();
      backupSecs[i]! += run.secs;
      backupRssMiB[i] = Math.max(backupRssMiB[i]!, run.rssMiB);
    }
  });
  const want = treeDigest(tree);
  // The same tree once more, nothing changed (what a nightly backup of a quiet tree costs), then
  // the last version restored: each TURNS times in rotated turns, the median reported. Restores go
  // to fresh directories removed only after the last turn. On this machine's ext4 (no journal)
  // a new file costs far more where many files were deleted recently (ext4's recently_deleted()
  // scan, docs/performance.md), so deleting one tool's restore just before the next tool's would
  // slow the next tool down.
  const againRuns: number[][] = tools.map(() => []);
  const restoreRuns: ToolRun[][] = tools.map(() => []);
  const outs: string[] = [];
  for (let turn = 0; turn < TURNS; turn++) {
    for (const i of turnOrder(tools.length, turn)) againRuns[i]!.push(tools[i]!.backup().secs);
    for (const i of turnOrder(tools.length, turn)) {
      const out = path.join(work, `restore-${i}-${turn}`);
      outs.push(out);
      restoreRuns[i]!.push(tools[i]!.restore(out));
      if (treeDigest(out) !== want) throw new Error(`${tools[i]!.name} restored a different tree`);
    }
  }
  for (const out of outs) fs.rmSync(out, { recursive: true });
  tools.forEach((tool, i) => {
    const restores = restoreRuns[i]!;
    results.push({
      tool: tool.name,
      backupSecs: backupSecs[i]!,
      againSecs: median(againRuns[i]!),
      againRuns: againRuns[i]!,
      storedBytes: du(tool.repo),
      restoreSecs: median(restores.map((r) => r.secs)),
      restoreRuns: restores.map((r) => r.secs),
      backupRssMiB: backupRssMiB[i]!,
      restoreRssMiB: Math.max(...restores.map((r) => r.rssMiB)),
    });
  });
  // Export and import throughput of the OuroDB database holding all versions.
  const node = process.execPath;
  const archive = path.join(work, 'all.ouro');
  const exportSecs = timed(node, [ouroBin, '--key-file', key, 'export', path.join(work, 'ouro-tree'), archive], { cwd: work }).secs;
  timed(node, [ouroBin, '--key-file', key, 'init', path.join(work, 'ouro2')], { cwd: work });
  const importSecs = timed(node, [ouroBin, '--key-file', key, 'import', path.join(work, 'ouro2'), archive], { cwd: work }).secs;
  return { results, logicalBytes, files, exportMiBs: logicalBytes / 2 ** 20 / exportSecs, importMiBs: logicalBytes / 2 ** 20 / importSecs, archiveBytes: fs.statSync(archive).size, skipped };
}

/**
 * One large incompressible file (`sizeMiB`, a ChaCha20 keystream) backed up and restored by each
 * tool, every one a separate process as a user would run it: MiB/s both ways and bytes on disk.
 * Each tool backs up once; then the restores take TURNS turns in rotated order, the median
 * reported (as the tree's are). Every timed run starts with nothing dirty in the page cache
 * (`sync` before it): the subject file just written, a repository or a restore just removed
 * would otherwise be written back while the next run, always the same tool's, was timed.
 */
export function largeFileBench(work: string, sizeMiB: number): { results: ToolResult[]; skipped: string[] } {
  const subject = path.join(work, 'large');
  fs.mkdirSync(subject, { recursive: true });
  const file = path.join(subject, 'value.bin');
  const fd = fs.openSync(file, 'w');
  const cipher = crypto.createCipheriv('chacha20', crypto.randomBytes(32), Buffer.alloc(16));
  const zeros = Buffer.alloc(1 << 20);
  for (let i = 0; i < sizeMiB; i++) fs.writeSync(fd, cipher.update(zeros));
  fs.closeSync(fd);
  const key = path.join(work, 'key-large');
  fs.writeFileSync(key, crypto.randomBytes(32));
  const skipped: string[] = [];
  const want = treeDigest(subject);
  const tools = backupTools(work, key, 'large').filter((tool) => {
    if (!tool.available) skipped.push(`${tool.name}: not installed`);
    return tool.available;
  });
  const backups = tools.map((tool) => {
    tool.init();
    spawnSync('sync');
    return tool.backup();
  });
  const restores: ToolRun[][] = tools.map(() => []);
  for (let turn = 0; turn < TURNS; turn++) {
    for (const i of turnOrder(tools.length, turn)) {
      const out = path.join(work, `restore-large-${i}`);
      spawnSync('sync');
      restores[i]!.push(tools[i]!.restore(out));
      if (treeDigest(out) !== want) throw new Error(`${tools[i]!.name} restored a different file`);
      fs.rmSync(out, { recursive: true });
    }
  }
  const results = tools.map((tool, i): ToolResult => ({
    tool: tool.name,
    backupSecs: backups[i]!.secs,
    storedBytes: du(tool.repo),
    restoreSecs: median(restores[i]!.map((r) => r.secs)),
    restoreRuns: restores[i]!.map((r) => r.secs),
    backupRssMiB: backups[i]!.rssMiB,
    restoreRssMiB: Math.max(...restores[i]!.map((r) => r.rssMiB)),
    backupCpuSecs: backups[i]!.cpuSecs,
  }));
  for (const tool of tools) fs.rmSync(tool.repo, { recursive: true, force: true });
  fs.rmSync(subject, { recursive: true, force: true });
  return { results, skipped };
}
