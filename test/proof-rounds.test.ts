/**
 * Which (block, holder) pairs each proof round challenges (carrier/proofs.ts nextPairs): rounds
 * go round every pair in turn, whatever the round size, so no holder of any block is left out.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type ProofPair, nextPairs } from '../carrier/proofs.js';

const key = (p: ProofPair) => `${p.id}/${p.peer}`;

/** The pairs `rounds` rounds pick one after another, each starting where the last stopped. */
function run(blocks: Array<{ id: string; size: number }>, holders: Map<string, string[]>, perRound: number, rounds: number): ProofPair[] {
  const picked: ProofPair[] = [];
  let cursor: ProofPair | undefined;
  for (let r = 0; r < rounds; r++) {
    const pairs = nextPairs(blocks, (id) => holders.get(id) ?? [], perRound, cursor);
    expect(pairs.length).toBeLessThanOrEqual(perRound);
    picked.push(...pairs);
    cursor = pairs.at(-1) ?? cursor;
  }
  return picked;
}

describe('proof rounds', () => {
  it('asks every holder of every block, also when the pairs are just over a round (a block cursor never asked one of them)', () => {
    // Six blocks, nine pairs, eight a round: every round reached the last block, filled up on
    // its first holder, and the next round began again at the first block.
    const blocks = ['a', 'b', 'c', 'd', 'e', 'f'].map((id) => ({ id, size: 100 }));
    const holders = new Map([
      ['a', ['p1', 'p2']],
      ['b', ['p2']],
      ['c', ['p3']],
      ['d', ['p1', 'p3']],
      ['e', ['p2']],
      ['f', ['p1', 'p2']],
    ]);
    const picked = run(blocks, holders, 8, 2).map(key);
    expect(new Set(picked.slice(0, 9))).toEqual(new Set(['a/p1', 'a/p2', 'b/p2', 'c/p3', 'd/p1', 'd/p3', 'e/p2', 'f/p1', 'f/p2']));
  });

  it('goes round all pairs in order, each once per turn, for any blocks, holders and round size', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.stringMatching(/^[0-9a-f]{2}$/), { minLength: 1, maxLength: 12 }),
        fc.array(fc.subarray(['p1', 'p2', 'p3', 'p4']), { minLength: 12, maxLength: 12 }),
        fc.integer({ min: 1, max: 10 }),
        (ids, holderSets, perRound) => {
          const blocks = ids.map((id) => ({ id, size: 1 }));
          const holders = new Map(ids.map((id, i) => [id, [...holderSets[i]!].reverse()]));
          const all = [...ids].sort().flatMap((id) => [...holders.get(id)!].sort().map((peer) => `${id}/${peer}`));
          const picked = run(blocks, holders, perRound, Math.ceil((2 * all.length) / perRound) + 1).map(key);
          // Two whole turns: the pairs in (block, holder) order, twice (none when no block has a holder).
          expect(picked.slice(0, 2 * all.length)).toEqual([...all, ...all]);
          if (all.length === 0) expect(picked).toEqual([]);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('carries on after the block it stopped at is gone', () => {
    const holders = new Map([
      ['a', ['p1']],
      ['b', ['p1', 'p2']],
      ['c', ['p2']],
    ]);
    const first = nextPairs([{ id: 'a', size: 1 }, { id: 'b', size: 1 }, { id: 'c', size: 1 }], (id) => holders.get(id)!, 2);
    expect(first.map(key)).toEqual(['a/p1', 'b/p1']);
    // b was deleted (gc) before the next round: it goes on at c, then round to a.
    const next = nextPairs([{ id: 'a', size: 1 }, { id: 'c', size: 1 }], (id) => holders.get(id)!, 2, first.at(-1));
    expect(next.map(key)).toEqual(['c/p2', 'a/p1']);
  });
});
