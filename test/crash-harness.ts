/**
 * Kill-and-recover harness shared by test/crash.test.ts and `npm run torture`.
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { OuroDB } from '../lib/index.js';
import { crashValue } from './crash-values.js';
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
export function runWriter(opts: { dir: string; key: Buffer; seed: string; count: number; concurrency: number; failpoint?: string; killAfterMs?: number }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    if (opts.failpoint) env['OURO_FAILPOINT'] = opts.failpoint;
    else delete env['OURO_FAILPOINT'];
    const child = spawn(process.execPath, [writerPath, opts.dir, opts.key.toString('hex'), opts.seed, String(opts.count), String(opts.concurrency)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = opts.killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), opts.killAfterMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const acks: Ack[] = [];
      for (const line of out.split('\n')) {
        const m = /^ack (\S+) (\d+) ([0-9a-f]{64})$/.exec(line);
        if (m) acks.push({ seed: m[1]!, i: Number(m[2]), hash: m[3]! });
      }
      if (code !== 0 && code !== null) reject(new Error(`writer exited with ${code}: ${err}`));
      else resolve({ acks, signal, finished: out.includes('done\n'), stderr: err });
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
    for (const a of acks) {
      const got = Buffer.from(await db.get(a.hash));
      if (!got.equals(crashValue(a.seed, a.i))) throw new Error(`acknowledged put ${a.seed}/${a.i} (${a.hash}) reads back wrong`);
      const st = await db.stat(a.hash);
      if (st.meta['i'] !== String(a.i)) throw new Error(`acknowledged put ${a.seed}/${a.i} lost its metadata`);
    }
    const probe = crypto.randomBytes(5000);
    const r = await db.put(probe);
    if (!Buffer.from(await db.get(r.hash)).equals(probe)) throw new Error('a write after recovery reads back wrong');
    const stats = await db.stats();
    return { verified: acks.length, walRecords: stats.walRecords };
  } finally {
    await db.close();
  }
}
