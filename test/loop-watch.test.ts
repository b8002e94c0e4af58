/**
 * The prover's LoopWatch (carrier/proofs.ts): how long this process's own event loop was held up
 * since a moment, which a challenger takes off an answer's time before judging it late (a
 * loaded challenger read answers that came in time as late, and three such verdicts quarantined
 * an honest member in the ec partition test).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { Ledger } from '../carrier/ledger.js';
import { LoopWatch, Prover, type Range, proofAnswer, readRanges } from '../carrier/proofs.js';
import type { Shelf } from '../carrier/shelf.js';
import { ClassicLevel } from '../index/leveldb.js';
import type { OuroDB } from '../lib/db.js';
import { tempDir } from './helpers.js';

/** Holds this process's loop for `ms` (a synchronous stretch of work, as coding a large block is). */
function hold(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // busy
  }
}

const tick = () => new Promise((r) => setTimeout(r, 120));

describe('LoopWatch', () => {
  it("counts the loop's hold-ups since a moment, also one whose late tick has not run yet, and none before it", async () => {
    const watch = new LoopWatch();
    watch.start();
    try {
      await tick();
      const before = performance.now();
      hold(400);
      // Read at once, as a reply's callback may be before the watch's timer runs.
      expect(watch.heldSince(before)).toBeGreaterThanOrEqual(400 - 50);
      await tick();
      expect(watch.heldSince(before)).toBeGreaterThanOrEqual(400 - 50);
      // A moment after the hold-up counts none of it (only what the loop did since).
      const after = performance.now();
      await tick();
      expect(watch.heldSince(before) - watch.heldSince(after)).toBeGreaterThanOrEqual(400 - 50);
    } finally {
      watch.stop();
    }
  });

  it('counts nothing once stopped', () => {
    const watch = new LoopWatch();
    const before = performance.now();
    hold(200);
    expect(watch.heldSince(before)).toBe(0);
  });
});

describe('a challenger held up by its own work', () => {
  it('passes an answer that came in time, and still finds a slow holder late', async () => {
    const dir = tempDir();
    const store = new ClassicLevel<string, Buffer>(path.join(dir, 'ledger'), { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    await store.open();
    const id = crypto.randomBytes(32).toString('hex');
    const file = path.join(dir, `${id}.blk`);
    fs.writeFileSync(file, crypto.randomBytes(64 * 1024));
    const rounds: unknown[] = [];
    let holdHere = 0;
    let holdThere = 0;
    const log = pino({ level: 'silent' });
    const prover = new Prover(
      {
        peerId: 'self',
        log,
        metrics: { proof: () => {} },
        memberViews: () => ['self', 'holder'].map((peerId) => ({ peerId, self: peerId === 'self', status: 'member' as const, state: 'alive', since: 0, lastHeard: Date.now(), quarantined: false })),
        handle: async () => {},
        // The holder answers right; this process is held up meanwhile (holdHere) or the holder is (holdThere).
        request: async (_peer, _name, message) => {
          const q = message as { nonce: Uint8Array; ranges: Range[] };
          const answer = proofAnswer(Buffer.from(id, 'hex'), q.nonce, q.ranges, await readRanges(file, q.ranges));
          await new Promise((r) => setTimeout(r, holdThere));
          hold(holdHere);
          return { answer };
        },
        placement: () => ['self', 'holder'],
        holdersOf: () => new Set(['self', 'holder']),
        unconfirm: () => {},
        removedSurplus: () => false,
        shardHolders: () => undefined,
        unconfirmShard: () => {},
        shardPlaced: () => false,
      },
      { store, record: async (body: unknown) => void rounds.push(body) } as unknown as Ledger,
      { has: async () => true, path: () => file } as unknown as Shelf,
      { onSealed: () => () => {}, blocks: async function* () { yield { id, size: 64 * 1024, adopted: false }; } } as unknown as OuroDB,
      { enabled: true, intervalMs: 3_600_000, perRound: 1, deadlineMs: 500, stock: 4 },
    );
    await prover.start();
    try {
      const verdicts = () => (rounds.at(-1) as { b: Array<{ r: string }> }).b.map((v) => v.r);
      // The premise: an answer on time passes.
      await prover.kick();
      expect(verdicts()).toEqual(['pass']);
      // This process busy for twice the deadline while the answer came: not the holder's doing.
      holdHere = 1200;
      await prover.kick();
      expect(verdicts()).toEqual(['pass']);
      // The holder slow (this process idle meanwhile): late.
      holdHere = 0;
      holdThere = 1200;
      await prover.kick();
      expect(verdicts()).toEqual(['late']);
    } finally {
      await prover.stop();
      await store.close();
    }
  });
});
