/**
 * Crashes (real SIGKILL of a child process) at every step of gc and of an index rebuild: after
 * each, the database opens, every acknowledged write reads back, purged keys stay purged, and
 * check() finds nothing wrong.
 */
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { OuroDB } from '../lib/index.js';
import { runKeyedWriter, verifyKeyedRun } from './crash-harness.js';
import { concatParts, gcValue } from './gc-values.js';
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
    // The kill is placed by what the writer printed, not by a clock: gc-writer prints `count`
    // acks of k<i>, then one line per purge (i % 4 != 3), then `count` acks of n<i> while gc runs,
    // and is SIGKILLed right after a random line of the phase the run is given (runs 0-2: puts,
    // purges, puts during gc; run 3: anywhere), never among the last `MARGIN` lines, so the kill
    // lands while it still has work to do. (A kill 0.3-1.5 s after the start never landed here:
    // the whole run takes about 0.25 s.)
    const count = 60;
    const purges = Array.from({ length: count }, (_, i) => i).filter((i) => i % 4 !== 3).length;
    const MARGIN = 20;
    const last = 2 * count + purges - MARGIN;
    const phases: Array<[number, number]> = [[1, count], [count + 1, count + purges], [count + purges + 1, last], [1, last]];
    for (let i = 0; i < 4; i++) {
      const [from, to] = phases[i]!;
      const killAtLine = from + crypto.randomInt(0, to - from + 1);
      const r = await run('gc-writer.js', dir, key, count, { killAtLine });
      // The kill must have landed before the writer finished, or this run proved nothing.
      expect(r.signal, `run ${i}: killed after line ${killAtLine}`).toBe('SIGKILL');
      expect(r.lines).not.toContain('done');
      expect(r.lines.filter((l) => l !== '').length).toBeGreaterThanOrEqual(killAtLine);
      await verify(dir, key, r, gcValueOf);
    }
  });
});

describe('crash during concat', () => {
  // concat.before-record: the third concatenation's inline tail is queued as a chunk, its record
  // not yet; the commit steps' 12th time falls in the puts, concatenations and purges of the
  // first rounds; gc.after-copy in the first gc, which moves the chunks only a concatenation names.
  for (const failpoint of ['concat.before-record:3', 'commit.after-write:12', 'commit.after-datasync:12', 'commit.after-wal:12', 'gc.after-copy']) {
    it(`survives SIGKILL at ${failpoint}: every acknowledged concatenation reads back whole`, async () => {
      const dir = tempDir();
      const key = crypto.randomBytes(32);
      const r = await run('concat-writer.js', dir, key, 8, { failpoint });
      expect(r.signal).toBe('SIGKILL');
      expect(r.lines).not.toContain('done');
      // The premise: the kill came after at least one concatenation was acknowledged.
      expect(r.acks.size).toBeGreaterThan(0);
      if (failpoint.startsWith('concat.')) expect([...r.acks.keys()]).toEqual(['c0', 'c1']);
      await verify(dir, key, r, (name) => Buffer.concat(concatParts(Number(name.slice(1)))));
    });
  }
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
