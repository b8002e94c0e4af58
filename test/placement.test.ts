/**
 * Rendezvous placement (carrier/placement.ts): deterministic whatever the order members are
 * listed in, weights as docs say (recomputed here with @noble/hashes), never more replicas than
 * members, an even spread, and little movement when a member joins or leaves.
 */
import crypto from 'node:crypto';
import { sha256 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { placementWeight, replicaSet } from '../carrier/placement.js';

const peers = Array.from({ length: 10 }, (_, i) => `12D3KooWpeer${i}`);
const blocks = Array.from({ length: 3000 }, (_, i) => crypto.createHash('sha256').update(String(i)).digest('hex'));

describe('placement', () => {
  it('weights are the first 8 bytes of the documented SHA-256', () => {
    const digest = sha256(new TextEncoder().encode(`ourodb placement v1\0${blocks[0]}\0${peers[3]}`));
    expect(placementWeight(blocks[0]!, peers[3]!)).toBe(Buffer.from(digest).readBigUInt64BE(0));
  });

  it('is a function of the set of candidates, not their order; rf is capped by the members', () => {
    fc.assert(
      fc.property(fc.shuffledSubarray(peers, { minLength: 1 }), fc.integer({ min: 1, max: 12 }), fc.constantFrom(...blocks.slice(0, 50)), (subset, rf, block) => {
        const a = replicaSet(block, subset, rf);
        const b = replicaSet(block, [...subset].reverse(), rf);
        expect(a).toEqual(b);
        expect(a).toHaveLength(Math.min(rf, subset.length));
        expect(new Set(a).size).toBe(a.length);
      }),
      { numRuns: 200 },
    );
    expect(() => replicaSet(blocks[0]!, peers, 0)).toThrow(/replication factor/);
  });

  it('spreads blocks evenly and moves about rf/n of them when a member joins', () => {
    const count = new Map(peers.map((p) => [p, 0]));
    for (const b of blocks) for (const p of replicaSet(b, peers, 3)) count.set(p, count.get(p)! + 1);
    const share = (3 * blocks.length) / peers.length; // 900 each
    for (const n of count.values()) expect(Math.abs(n - share) / share).toBeLessThan(0.15);

    const grown = [...peers, '12D3KooWnewcomer'];
    let moved = 0;
    for (const b of blocks) {
      const before = new Set(replicaSet(b, peers, 3));
      const after = replicaSet(b, grown, 3);
      // Only the newcomer enters a set, and it displaces one member at most.
      expect(after.filter((p) => !before.has(p)).every((p) => p === '12D3KooWnewcomer')).toBe(true);
      if (after.includes('12D3KooWnewcomer')) moved++;
    }
    // Expected 3/11 of the blocks gain the newcomer; allow sampling noise.
    expect(Math.abs(moved / blocks.length - 3 / 11)).toBeLessThan(0.03);
  });
});
