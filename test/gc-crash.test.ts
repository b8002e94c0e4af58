/**
 * Crashes (real SIGKILL of a child process) at every step of gc and of an index rebuild: after
 * each, the database opens, every acknowledged write reads back, purged keys stay purged, and
 * check() finds nothing wrong.
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { OuroDB } from '../lib/index.js';
import { gcValue } from './gc-values.js';
import { tempDir } from './helpers.js';
import { fixture } from './paths.js';

interface Run {
  acks: Map<string, string>;
  purged: Set<string>;
  /** A key whose purge may have completed without its acknowledgement being printed. */
  inFlightPurge?: string;
  lines: string[];
  signal: NodeJS.Signals | null;
}

function run(script: string, dir: string, key: Buffer, count: number, opts: { failpoint?: string; killAfterMs?: number }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env['OURO_FAILPOINT'];
    if (opts.failpoint) env['OURO_FAILPOINT'] = opts.failpoint;
    const child = spawn(process.execPath, [fixture(script), dir, key.toString('hex'), String(count)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = opts.killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), opts.killAfterMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (code !== 0 && code !== null) return reject(new Error(`${script} exited with ${code}: ${err}`));
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
      // The writer purges k<i> (i % 4 != 3) in order once every k<i> is acknowledged: the first one
      // not acknowledged as purged may have been purged just before the kill.
      let inFlightPurge: string | undefined;
      if (script === 'gc-writer.js' && Array.from({ length: count }, (_, i) => `k${i}`).every((k) => lines.includes(`ack ${k} ${acks.get(k)}`))) {
        for (let i = 0; i < count && !inFlightPurge; i++) if (i % 4 !== 3 && !lines.includes(`purged k${i}`)) inFlightPurge = `k${i}`;
      }
      resolve({ acks, purged, lines, signal, ...(inFlightPurge ? { inFlightPurge } : {}) });
    });
  });
}

async function verify(dir: string, key: Buffer, r: Run, valueOf: (name: string, hash: string) => Buffer): Promise<void> {
  const db = await OuroDB.open(dir, { key });
  try {
    for (const [name, hash] of r.acks) {
      if (name === r.inFlightPurge && !(await db.has(hash))) continue;
      if (r.purged.has(name)) {
        await expect(db.getByKey(name)).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
        continue;
      }
      const want = valueOf(name, hash);
      expect(Buffer.from(await db.get(hash)).equals(want), `${name} ${hash}`).toBe(true);
    }
    const report = await db.check({ readData: true });
    expect(report.problems).toEqual([]);
    const probe = await db.put('after the crash', { key: 'probe' });
    expect(await db.head('probe')).toBe(probe.hash);
  } finally {
    await db.close();
  }
}

const gcValueOf = (name: string) => gcValue(name.startsWith('n') ? `k${name.slice(1)}` : name);

describe('crash during gc', () => {
  for (const failpoint of ['gc.after-drop', 'gc.after-copy', 'gc.after-unregister:2', 'gc.after-remove:2']) {
    it(`survives SIGKILL at ${failpoint}`, async () => {
      const dir = tempDir();
      const key = crypto.randomBytes(32);
      const r = await run('gc-writer.js', dir, key, 24, { failpoint });
      expect(r.signal).toBe('SIGKILL');
      expect(r.lines).not.toContain('done');
      await verify(dir, key, r, gcValueOf);
    });
  }

  it('survives SIGKILL at random moments, repeatedly on one database', async () => {
    const dir = tempDir();
    const key = crypto.randomBytes(32);
    // Each run starts over on the same directory (k<i> are put again) and is killed somewhere
    // in its writes, purges or gc rounds; the acknowledgements of every run must all hold.
    for (let i = 0; i < 4; i++) {
      const r = await run('gc-writer.js', dir, key, 20, { killAfterMs: 300 + Math.floor(Math.random() * 1200) });
      await verify(dir, key, r, gcValueOf);
    }
  });
});

describe('crash during rebuildIndex', () => {
  for (const failpoint of ['rebuild.after-clear', 'rebuild.before-done']) {
    it(`restarts the rebuild on open after SIGKILL at ${failpoint}`, async () => {
      const dir = tempDir();
      const key = crypto.randomBytes(32);
      const r = await run('rebuild-writer.js', dir, key, 30, { failpoint });
      expect(r.signal).toBe('SIGKILL');
      expect(r.lines).not.toContain('rebuilt');
      const hashes = new Map<string, number>();
      for (const line of r.lines) {
        const m = /^ack (\S+) ([0-9a-f]{64})$/.exec(line);
        if (m) hashes.set(m[2]!, hashes.size);
      }
      await verify(dir, key, r, (_name, hash) => gcValue(`k${hashes.get(hash)}`));
      const db = await OuroDB.open(dir, { key });
      try {
        expect((await Array.fromAsync(db.list())).map((e) => e.key)).toEqual(['k0', 'k1', 'k2', 'k4', 'k5', 'k6', 'probe']);
        expect(await Array.fromAsync(db.history('k0'))).toHaveLength(5);
      } finally {
        await db.close();
      }
    });
  }
});
