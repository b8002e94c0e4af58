/**
 * Kill-and-recover harness shared by test/crash.test.ts and `npm run torture`.
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { OuroDB } from '../lib/index.js';
import { crashValue } from './crash-values.js';
import { gcValue } from './gc-values.js';
import { fixture } from './paths.js';

export interface Ack {
  seed: string;
  i: number;
  hash: string;
}

const writerPath = fixture('crash-writer.js');

export interface RunResult {
  acks: Ack[];
  signal: NodeJS.Signals | null;
  finished: boolean;
  stderr: string;
}

/**
 * Runs the writer until it finishes, dies at its failpoint (env OURO_FAILPOINT), or is killed
 * with SIGKILL after `killAfterMs`.
 */
export async function runWriter(opts: { dir: string; key: Buffer; seed: string; count: number; concurrency: number; failpoint?: string; killAfterMs?: number; killAtLine?: number; stream?: boolean }): Promise<RunResult> {
  const { out, err, signal } = await runChild(writerPath, [opts.dir, opts.key.toString('hex'), opts.seed, String(opts.count), String(opts.concurrency), opts.stream ? 'stream' : 'array'], opts);
  const acks: Ack[] = [];
  for (const line of out.split('\n')) {
    const m = /^ack (\S+) (\d+) ([0-9a-f]{64})$/.exec(line);
    if (m) acks.push({ seed: m[1]!, i: Number(m[2]), hash: m[3]! });
  }
  return { acks, signal, finished: out.includes('done\n'), stderr: err };
}

/**
 * Runs a fixture script in a child process until it exits, dies at its failpoint (env
 * OURO_FAILPOINT), or is killed with SIGKILL after `killAfterMs` or as soon as it has printed
 * `killAtLine` lines (the child goes on working until the signal lands). A non-zero exit is an
 * error.
 */
function runChild(script: string, args: string[], opts: { failpoint?: string | undefined; killAfterMs?: number | undefined; killAtLine?: number | undefined }): Promise<{ out: string; err: string; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    if (opts.failpoint) env['OURO_FAILPOINT'] = opts.failpoint;
    else delete env['OURO_FAILPOINT'];
    const child = spawn(process.execPath, [script, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let lines = 0;
    child.stdout.on('data', (d: Buffer) => {
      const text = d.toString();
      out += text;
      if (opts.killAtLine === undefined || lines >= opts.killAtLine) return;
      for (const c of text) if (c === '\n') lines++;
      if (lines >= opts.killAtLine) child.kill('SIGKILL');
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = opts.killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), opts.killAfterMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (code !== 0 && code !== null) reject(new Error(`${script} exited with ${code}: ${err}`));
      else resolve({ out, err, signal });
    });
  });
}

/**
 * Reopens the database and checks the promise: every acknowledged put reads back byte-identical
 * with its metadata, and the database accepts a new write. Returns the stats after recovery.
 */
export async function verifyAfterCrash(dir: string, key: Buffer, acks: Ack[]): Promise<{ verified: number; walRecords: number }> {
  const db = await OuroDB.open(dir, { key, blockSize: 96 * 1024 });
  try {
    // Counted as each one is read back and compared, not taken from acks.length: a caller that
    // expects every ack verified learns it if any was skipped.
    let verified = 0;
    for (const a of acks) {
      const got = Buffer.from(await db.get(a.hash));
      if (!got.equals(crashValue(a.seed, a.i))) throw new Error(`acknowledged put ${a.seed}/${a.i} (${a.hash}) reads back wrong`);
      const st = await db.stat(a.hash);
      if (st.meta['i'] !== String(a.i)) throw new Error(`acknowledged put ${a.seed}/${a.i} lost its metadata`);
      verified++;
    }
    const probe = crypto.randomBytes(5000);
    const r = await db.put(probe);
    if (!Buffer.from(await db.get(r.hash)).equals(probe)) throw new Error('a write after recovery reads back wrong');
    const stats = await db.stats();
    return { verified, walRecords: stats.walRecords };
  } finally {
    await db.close();
  }
}

/** A run of a keyed-workload writer (gc-writer: puts under keys, purges, gc; rebuild-writer). */
export interface KeyedRun {
  acks: Map<string, string>;
  purged: Set<string>;
  /** A key whose purge may have completed without its acknowledgement being printed. */
  inFlightPurge?: string;
  lines: string[];
  signal: NodeJS.Signals | null;
}

export async function runKeyedWriter(script: string, dir: string, key: Buffer, count: number, opts: { failpoint?: string; killAfterMs?: number; killAtLine?: number }): Promise<KeyedRun> {
  const { out, signal } = await runChild(fixture(script), [dir, key.toString('hex'), String(count)], opts);
  const acks = new Map<string, string>();
  const purged = new Set<string>();
  const lines = out.split('\n');
  for (const line of lines) {
    const a = /^ack (\S+) ([0-9a-f]{64})$/.exec(line);
    if (a) {
      acks.set(a[1]!, a[2]!);
      purged.delete(a[1]!);
    }
    const p = /^purged (\S+)$/.exec(line);
    if (p) purged.add(p[1]!);
  }
  // gc-writer purges k<i> (i % 4 != 3) in order once every k<i> is acknowledged: the first one
  // not acknowledged as purged may have been purged just before the kill.
  let inFlightPurge: string | undefined;
  if (script === 'gc-writer.js' && Array.from({ length: count }, (_, i) => `k${i}`).every((k) => lines.includes(`ack ${k} ${acks.get(k)}`))) {
    for (let i = 0; i < count && !inFlightPurge; i++) if (i % 4 !== 3 && !lines.includes(`purged k${i}`)) inFlightPurge = `k${i}`;
  }
  return { acks, purged, lines, signal, ...(inFlightPurge ? { inFlightPurge } : {}) };
}

/** The value gc-writer stored under `name` (n<i> keys hold k<i>'s value). */
export const keyedValueOf = (name: string): Buffer => gcValue(name.startsWith('n') ? `k${name.slice(1)}` : name);

/**
 * Reopens after a keyed run and checks its promises: every acknowledged put reads back, every
 * acknowledged purge stays purged, check({ readData }) is clean, and a new write works. Throws
 * an Error naming the first violation.
 */
export async function verifyKeyedRun(dir: string, key: Buffer, r: KeyedRun, valueOf: (name: string, hash: string) => Buffer = keyedValueOf): Promise<void> {
  const db = await OuroDB.open(dir, { key });
  try {
    for (const [name, hash] of r.acks) {
      if (name === r.inFlightPurge && !(await db.has(hash))) continue;
      if (r.purged.has(name)) {
        const code = await db.getByKey(name).then(() => 'read', (err: { code?: string }) => err.code);
        if (code !== 'OURO_NOT_FOUND') throw new Error(`purged key ${name} reads back (${code})`);
        continue;
      }
      if (!Buffer.from(await db.get(hash)).equals(valueOf(name, hash))) throw new Error(`acknowledged put ${name} (${hash}) reads back wrong`);
    }
    const report = await db.check({ readData: true });
    if (report.problems.length > 0) throw new Error(`check after the crash: ${JSON.stringify(report.problems)}`);
    const probe = await db.put('after the crash', { key: 'probe' });
    if ((await db.head('probe')) !== probe.hash) throw new Error('a write after recovery did not become the head');
  } finally {
    await db.close();
  }
}
