/**
 * Property test of the key/version model: random sequences of put (plain and compare-and-set),
 * delete, purge, gc, reopen and crash run against a real database and against a plain in-memory
 * model, and every key's value, head, history and listing must agree after every step.
 *
 * "crash" copies the directory while the handle is open and idle and continues on the copy: the
 * image a kill -9 leaves (open block files, WAL records, no clean close). Crashes in the middle
 * of a write are covered by test/crash.test.ts and test/gc-crash.test.ts with real SIGKILLs.
 */
import fs from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OuroDB } from '../lib/index.js';
import { FAST_KDF, pseudoRandom, tempDir } from './helpers.js';

const KEYS = ['a', 'b', 'c', 'd/1', 'd/2'];
const SIZES = [0, 3, 4096, 4097, 30_000, 90_000];
const valueOf = (v: number) => pseudoRandom(`prop${v}`, SIZES[v % SIZES.length]!);

type Op =
  | { op: 'put'; key: string; value: number; cas: 'none' | 'current' | 'stale' | 'absent' }
  | { op: 'delete'; key: string }
  | { op: 'purge'; key: string }
  | { op: 'gc'; threshold: number }
  | { op: 'reopen' }
  | { op: 'crash' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('put' as const), key: fc.constantFrom(...KEYS), value: fc.nat(11), cas: fc.constantFrom('none' as const, 'current' as const, 'stale' as const, 'absent' as const) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), key: fc.constantFrom(...KEYS) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('purge' as const), key: fc.constantFrom(...KEYS) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('gc' as const), threshold: fc.constantFrom(0.5, 1) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'crash' as const }) },
);

interface ModelVersion {
  hash: string;
  value: number | null; // null: tombstone
}

describe('key/version model (fast-check)', () => {
  it('agrees with an in-memory model across random operation sequences', async () => {
    const key = Buffer.alloc(32, 3);
    const open = (dir: string) => OuroDB.open(dir, { key, kdf: FAST_KDF, blockSize: 64 * 1024, chunkSizes: { min: 4096, avg: 8192, max: 32768 } });
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 30 }), async (ops) => {
        let dir = tempDir();
        let db = await open(dir);
        const model = new Map<string, ModelVersion[]>(); // newest first
        try {
          for (const o of ops) {
            const versions = o.op === 'put' || o.op === 'delete' || o.op === 'purge' ? (model.get(o.key) ?? []) : [];
            if (o.op === 'put') {
              const head = versions[0]?.hash;
              const ifHead = o.cas === 'none' ? undefined : o.cas === 'current' ? (head ?? null) : o.cas === 'absent' ? null : 'f'.repeat(64);
              const conflict = (o.cas === 'absent' && head !== undefined) || o.cas === 'stale';
              const attempt = db.put(valueOf(o.value), ifHead === undefined ? { key: o.key } : { key: o.key, ifHead });
              if (conflict) {
                await expect(attempt).rejects.toMatchObject({ code: 'OURO_CONFLICT' });
              } else {
                model.set(o.key, [{ hash: (await attempt).hash, value: o.value }, ...versions]);
              }
            } else if (o.op === 'delete') {
              const r = await db.delete(o.key);
              model.set(o.key, [{ hash: r.hash, value: null }, ...versions]);
            } else if (o.op === 'purge') {
              expect(await db.purge(o.key)).toEqual({ versions: versions.length });
              model.delete(o.key);
            } else if (o.op === 'gc') {
              await db.gc({ threshold: o.threshold });
            } else if (o.op === 'reopen') {
              await db.close();
              db = await open(dir);
            } else {
              const image = tempDir();
              fs.cpSync(dir, image, { recursive: true });
              await db.close();
              dir = image;
              db = await open(dir);
            }
            await expectAgrees(db, model);
          }
          expect((await db.check({ readData: true })).problems).toEqual([]);
        } finally {
          await db.close();
        }
      }),
      { numRuns: 40 },
    );
  });
});

async function expectAgrees(db: OuroDB, model: Map<string, ModelVersion[]>): Promise<void> {
  const listed = await Array.fromAsync(db.list({ includeDeleted: true }));
  expect(listed.map((e) => e.key)).toEqual([...model.keys()].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))));
  for (const [k, versions] of model) {
    expect(await db.head(k)).toBe(versions[0]!.hash);
    const history = await Array.fromAsync(db.history(k));
    expect(history.map((v) => v.hash)).toEqual(versions.map((v) => v.hash));
    expect(history.map((v) => v.type)).toEqual(versions.map((v) => (v.value === null ? 'tombstone' : 'value')));
    const newest = versions[0]!;
    if (newest.value === null) await expect(db.getByKey(k)).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
    else expect(Buffer.from(await db.getByKey(k)).equals(valueOf(newest.value))).toBe(true);
    const oldest = versions[versions.length - 1]!;
    if (oldest.value !== null) expect(Buffer.from(await db.get(oldest.hash)).equals(valueOf(oldest.value))).toBe(true);
  }
  for (const k of KEYS) if (!model.has(k)) expect(await db.head(k)).toBeNull();
}
