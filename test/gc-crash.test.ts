/**
 * Crashes (real SIGKILL of a child process) at every step of gc and of an index rebuild: after
 * each, the database opens, every acknowledged write reads back, purged keys stay purged, and
 * check() finds nothing wrong.
 */
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { OuroDB } from '../lib/index.js';
import { runKeyedWriter, verifyKeyedRun } from './crash-harness.js';
import { gcValue } from './gc-values.js';
import { tempDir } from './helpers.js';

const run = runKeyedWriter;
const verify = verifyKeyedRun;

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
