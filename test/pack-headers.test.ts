/**
 * The pack entry headers a Reader keeps (lib/pack-headers.ts): a ring of fixed slots, first in
 * first out, that gives back exactly what was kept.
 */
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { EntryKind } from '../blockstore/format.js';
import { type KeptHeader, PackHeaders } from '../lib/pack-headers.js';

const header = (n: number): KeptHeader => ({ kind: EntryKind.Pack, flags: n % 2, payloadLength: 1000 + n, plainLength: 900 + n, nonce: crypto.randomBytes(24) });

describe('PackHeaders', () => {
  it('gives back each field of a kept header', () => {
    const kept = new PackHeaders(4);
    const h = header(7);
    kept.set('3@128', h);
    const got = kept.get('3@128')!;
    expect({ ...got, nonce: Buffer.from(got.nonce) }).toEqual(h);
    expect(kept.get('3@129')).toBeUndefined();
  });

  it('keeps the last `max` headers, dropping the oldest first', () => {
    const kept = new PackHeaders(3);
    const hs = [0, 1, 2, 3, 4].map(header);
    hs.forEach((h, i) => kept.set(`1@${i}`, h));
    expect(kept.size).toBe(3);
    expect(kept.get('1@0')).toBeUndefined();
    expect(kept.get('1@1')).toBeUndefined();
    for (const i of [2, 3, 4]) expect(Buffer.from(kept.get(`1@${i}`)!.nonce).equals(hs[i]!.nonce)).toBe(true);
  });

  it('forgets one header (delete) or all (clear), and a key kept twice takes one slot', () => {
    const kept = new PackHeaders(3);
    kept.set('a', header(1));
    kept.set('a', header(2));
    kept.set('b', header(3));
    expect(kept.size).toBe(2);
    expect(kept.get('a')!.payloadLength).toBe(1001);
    kept.delete('a');
    expect(kept.get('a')).toBeUndefined();
    expect(kept.get('b')!.payloadLength).toBe(1003);
    kept.clear();
    expect(kept.size).toBe(0);
    expect(kept.get('b')).toBeUndefined();
    kept.set('c', header(4));
    expect(kept.get('c')!.plainLength).toBe(904);
  });

  it('keeps nothing when its bound is 0', () => {
    const kept = new PackHeaders(0);
    kept.set('a', header(1));
    expect(kept.get('a')).toBeUndefined();
  });
});
