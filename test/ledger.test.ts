/**
 * The node ledger (carrier/ledger.ts) and the proof-of-storage answer (carrier/proofs.ts), on
 * real LevelDB stores and real Ed25519 keys: the ledger is a function of the set of events (any
 * arrival order gives the same figures and digest, and the incremental figures equal a fold from
 * the stored events), quarantine follows failures and clears in event order, bad events are
 * refused and change nothing, and the proof answer matches an independent HMAC over the bytes
 * FORMAT.md names.
 */
import fs from 'node:fs';
import path from 'node:path';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { type EventBody, Ledger, type QuarantinePolicy, type WireEvent } from '../carrier/ledger.js';
import { type FeedHost, LedgerFeed } from '../carrier/ledger-feed.js';
import { PROOF_RANGE_BYTES, makeChallenges, proofAnswer, readRanges } from '../carrier/proofs.js';
import { blockIdBytes } from '../carrier/shelf.js';
import { pseudoRandom, tempDir } from './helpers.js';

const CLUSTER = 'c0ffee';
const POLICY: QuarantinePolicy = { after: 2, windowMs: 10_000 };

interface Member {
  peerId: string;
  ledger: Ledger;
  quarantines: Array<[string, boolean]>;
}

async function members(n: number, cluster = CLUSTER, policy = POLICY): Promise<Member[]> {
  const keys = await Promise.all(Array.from({ length: n }, () => generateKeyPair('Ed25519')));
  const ids = new Set(keys.map((k) => peerIdFromPrivateKey(k).toString()));
  return Promise.all(keys.map((key) => open(key, ids, cluster, policy)));
}

async function open(key: Awaited<ReturnType<typeof generateKeyPair>>, ids: Set<string>, cluster: string, policy: QuarantinePolicy, dir = tempDir()): Promise<Member> {
  const peerId = peerIdFromPrivateKey(key).toString();
  const quarantines: Array<[string, boolean]> = [];
  const ledger = await Ledger.open({ dir: path.join(dir, 'ledger'), key, peerId, clusterId: () => cluster, knownMember: (p) => ids.has(p), policy, onQuarantine: (p, q) => quarantines.push([p, q]) });
  return { peerId, ledger, quarantines };
}

/** Every event `m` holds, in order. */
async function eventsOf(m: Member): Promise<WireEvent[]> {
  return (await m.ledger.since({}, 1 << 30)).events;
}

const BLOCK = 'ab'.repeat(32);

describe('ledger', () => {
  it('gives the same figures and digest for the same events in any arrival order, equal to a fold of the stored events', async () => {
    const [a, b, c] = await members(3);
    const ids = [a!.peerId, b!.peerId, c!.peerId];
    // Observers record a mix of every kind at fixed times.
    let t = 1_000_000;
    const script: Array<[Member, EventBody]> = [];
    for (let i = 0; i < 6; i++) {
      script.push([a!, { k: 'proofs', b: [{ s: b!.peerId, blk: BLOCK, r: i % 3 === 0 ? 'fail' : 'pass', ms: 5 + i }, { s: c!.peerId, blk: BLOCK, r: i === 4 ? 'late' : 'pass', ms: 9 }] }]);
      script.push([b!, { k: 'uptime', b: { p: 1000, a: { [a!.peerId]: 1000, [c!.peerId]: 700 + i } } }]);
      script.push([c!, { k: 'uptime', b: { p: 1000, a: { [a!.peerId]: 900, [b!.peerId]: 1000 } } }]);
    }
    script.push([b!, { k: 'holding', b: { blocks: 3, bytes: 300 } }], [b!, { k: 'holding', b: { blocks: 5, bytes: 512 } }], [c!, { k: 'served', b: { [b!.peerId]: 4096 } }], [a!, { k: 'clear', b: { s: b!.peerId } }]);
    for (const [m, body] of script) await m.ledger.record(body, t++);
    const byObserver = await Promise.all([a!, b!, c!].map(eventsOf));

    for (const m of [b!, c!]) await a!.ledger.accept(await eventsOf(m));
    const reference = a!.ledger.view();
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 10, maxLength: 60 }), async (picks) => {
        const receiver = await open(await generateKeyPair('Ed25519'), new Set(ids), CLUSTER, POLICY);
        // An interleaving of the three observers' sequences (each in its own order, as sync gives them).
        const next = [0, 0, 0];
        for (const p of picks) {
          const e = byObserver[p]![next[p]!];
          if (!e) continue;
          next[p]!++;
          await receiver.ledger.accept([e]);
        }
        for (let p = 0; p < 3; p++) await receiver.ledger.accept(byObserver[p]!.slice(next[p]));
        const view = receiver.ledger.view();
        expect(view).toEqual(reference);
        expect(await receiver.ledger.viewAt(view.observers)).toEqual(view);
        await receiver.ledger.close();
      }),
      { numRuns: 8 },
    );

    const v = a!.ledger.view();
    expect(v.events).toBe(script.length);
    const entry = (p: string) => v.members.find((m) => m.peerId === p)!;
    // b: 2 failures (i = 0, 3), then a clear after them; 4 passes; latest holding wins; c served it 4096 bytes.
    expect(entry(b!.peerId)).toMatchObject({ proofs: { passed: 4, failed: 2, late: 0 }, blocksHeld: 5, bytesHeld: 512, servedForRepairBytes: 4096, quarantined: false, observers: 1 });
    // c: one late; seen alive only by b (a reports no uptime): 700 + ... + 705 ms.
    expect(entry(c!.peerId).proofs).toEqual({ passed: 5, failed: 0, late: 1 });
    expect(entry(c!.peerId).uptimeSeenMs).toBe(700 * 6 + 15);
    // a: seen by b (all 6000 ms) and c (5400): the lower median is c's.
    expect(entry(a!.peerId)).toMatchObject({ uptimeSeenMs: 5400, uptimeRatio: 0.9, observers: 2 });
    for (const m of [a!, b!, c!]) await m.ledger.close();
  });

  it('quarantines a member after repeated failures within the window, in event order, and a clear ends it', async () => {
    const [a, b, x] = await members(3);
    const fail = (r: 'fail' | 'late' = 'fail'): EventBody => ({ k: 'proofs', b: [{ s: x!.peerId, blk: BLOCK, r, ms: 1 }] });
    await a!.ledger.record(fail(), 1000);
    expect(a!.ledger.quarantined(x!.peerId)).toBe(false);
    // A second failure outside the window does not quarantine...
    await a!.ledger.record(fail('late'), 1000 + POLICY.windowMs + 1);
    expect(a!.ledger.quarantined(x!.peerId)).toBe(false);
    // ...a third within the window of the second does; a pass in between forgives nothing.
    await a!.ledger.record({ k: 'proofs', b: [{ s: x!.peerId, blk: BLOCK, r: 'pass', ms: 1 }] }, 12_000);
    await a!.ledger.record(fail(), 13_000);
    expect(a!.ledger.quarantined(x!.peerId)).toBe(true);
    expect(a!.quarantines).toEqual([[x!.peerId, true]]);
    expect(a!.ledger.entry(x!.peerId)!.quarantinedBy).toEqual([13_000, a!.peerId, 4]);
    expect(a!.ledger.entry(x!.peerId)).toMatchObject({ clearedBy: null, failsSinceClear: 3 });

    // b clears x at 20 000; a's later failure at 15 000 (before the clear) arrives after it and counts for nothing.
    await b!.ledger.accept(await eventsOf(a!));
    expect(b!.ledger.quarantined(x!.peerId)).toBe(true);
    await b!.ledger.record({ k: 'clear', b: { s: x!.peerId } }, 20_000);
    expect(b!.ledger.quarantined(x!.peerId)).toBe(false);
    expect(b!.quarantines).toEqual([[x!.peerId, true], [x!.peerId, false]]);
    await a!.ledger.record(fail(), 15_000);
    await b!.ledger.accept(await eventsOf(a!));
    expect(b!.ledger.quarantined(x!.peerId)).toBe(false);
    expect(b!.ledger.entry(x!.peerId)).toMatchObject({ clearedBy: [20_000, b!.peerId, 1], failsSinceClear: 0, quarantinedBy: null });
    // Two new failures after the clear quarantine it again.
    await a!.ledger.record(fail(), 21_000);
    await a!.ledger.record(fail(), 22_000);
    await b!.ledger.accept(await eventsOf(a!));
    expect(b!.ledger.quarantined(x!.peerId)).toBe(true);
    await a!.ledger.accept(await eventsOf(b!));
    expect(a!.ledger.view()).toEqual(b!.ledger.view());
    for (const m of [a!, b!, x!]) await m.ledger.close();
  });

  it('changes a quarantine once per batch of events accepted: failures and the clear that ends them, copied together, never quarantine', async () => {
    const [a, b, c, x] = await members(4);
    const fail: EventBody = { k: 'proofs', b: [{ s: x!.peerId, blk: BLOCK, r: 'fail', ms: 1 }] };
    await a!.ledger.record(fail, 1000);
    await a!.ledger.record(fail, 2000);
    await a!.ledger.record({ k: 'clear', b: { s: x!.peerId } }, 3000);
    const events = await eventsOf(a!);
    // Premise: one event at a time, the failures quarantine x until the clear comes.
    for (const e of events) await b!.ledger.accept([e]);
    expect(b!.quarantines).toEqual([[x!.peerId, true], [x!.peerId, false]]);
    // In one batch (as a sync copies them), x is never quarantined; the figures are the same.
    await c!.ledger.accept(events);
    expect(c!.quarantines).toEqual([]);
    expect(c!.ledger.quarantined(x!.peerId)).toBe(false);
    expect(c!.ledger.view()).toEqual(b!.ledger.view());
    // A batch that ends quarantined tells of it once, also when a later event in it is refused
    // (the events before it are stored).
    await a!.ledger.record(fail, 4000);
    await a!.ledger.record(fail, 5000);
    await a!.ledger.record({ k: 'proofs', b: [{ s: x!.peerId, blk: BLOCK, r: 'pass', ms: 1 }] }, 6000);
    const [f1, f2, pass] = (await eventsOf(a!)).slice(3);
    await expect(c!.ledger.accept([f1!, f2!, { d: pass!.d, s: new Uint8Array(64) }])).rejects.toThrow(/bad signature/);
    expect(c!.quarantines).toEqual([[x!.peerId, true]]);
    expect(c!.ledger.quarantined(x!.peerId)).toBe(true);
    for (const m of [a!, b!, c!, x!]) await m.ledger.close();
  });

  it('reaches the same ledger and quarantines from the same events, whatever the order and grouping they arrive in (failures, late answers and clears by several observers at close times), also across a reopen', async () => {
    const keys = await Promise.all([0, 1, 2, 3].map(() => generateKeyPair('Ed25519')));
    const ids = new Set(keys.map((k) => peerIdFromPrivateKey(k).toString()));
    const x = peerIdFromPrivateKey(keys[3]!).toString();
    const policy: QuarantinePolicy = { after: 3, windowMs: 40 };
    // Per observer, events about x at times in a narrow range: ties and crossings between
    // observers, and within one (a round's time is taken before it waits its turn to be stored).
    const event = fc.record({ k: fc.constantFrom('pass', 'fail', 'late', 'fail', 'late', 'clear'), t: fc.integer({ min: 0, max: 100 }) });
    const scripts = fc.tuple(...[0, 1, 2].map(() => fc.array(event, { minLength: 1, maxLength: 8 })));
    const arrival = fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 1, max: 4 })), { minLength: 40, maxLength: 40 });
    await fc.assert(
      fc.asyncProperty(scripts, arrival, async (perObserver, picks) => {
        const byObserver: WireEvent[][] = [];
        for (let o = 0; o < 3; o++) {
          const m = await open(keys[o]!, ids, CLUSTER, policy);
          for (const e of perObserver[o]!) await m.ledger.record(e.k === 'clear' ? { k: 'clear', b: { s: x } } : { k: 'proofs', b: [{ s: x, blk: BLOCK, r: e.k as 'pass', ms: 1 }] }, 1_000_000 + e.t);
          byObserver.push(await eventsOf(m));
          await m.ledger.close();
        }
        // The reference takes every observer's events in one batch each.
        const reference = await open(keys[3]!, ids, CLUSTER, policy);
        for (const events of byObserver) await reference.ledger.accept(events);
        // The receiver takes them in an interleaving of the observers' sequences (each in its own
        // order, as a sync gives them), grouped into batches of 1 to 4 events.
        const dir = tempDir();
        const receiver = await open(keys[3]!, ids, CLUSTER, policy, dir);
        const next = [0, 0, 0];
        for (const [o, size] of picks) {
          const batch = byObserver[o]!.slice(next[o], next[o]! + size);
          next[o]! += batch.length;
          if (batch.length > 0) await receiver.ledger.accept(batch);
        }
        for (let o = 0; o < 3; o++) await receiver.ledger.accept(byObserver[o]!.slice(next[o]));
        const view = reference.ledger.view();
        expect(receiver.ledger.view()).toEqual(view);
        expect(receiver.ledger.quarantined(x)).toBe(reference.ledger.quarantined(x));
        expect(reference.ledger.quarantined(x)).toBe(view.members.find((m) => m.peerId === x)?.quarantined ?? false);
        expect(await reference.ledger.viewAt(view.observers)).toEqual(view);
        // What it told placement is where the events leave x.
        expect(receiver.quarantines.filter(([p]) => p === x).at(-1)?.[1] ?? false).toBe(reference.ledger.quarantined(x));
        await receiver.ledger.close();
        const reopened = await open(keys[3]!, ids, CLUSTER, policy, dir);
        expect(reopened.ledger.view()).toEqual(view);
        expect(reopened.ledger.quarantined(x)).toBe(reference.ledger.quarantined(x));
        await reopened.ledger.close();
        await reference.ledger.close();
      }),
      { numRuns: 40 },
    );
  });

  it('refuses forged, foreign, unknown-version and oversized events, and stores nothing from them', async () => {
    const [a, b] = await members(2);
    const [stranger] = await members(1);
    const [other] = await members(1, 'another-cluster');
    await a!.ledger.record({ k: 'holding', b: { blocks: 1, bytes: 10 } });
    await stranger!.ledger.record({ k: 'holding', b: { blocks: 1, bytes: 10 } });
    await other!.ledger.record({ k: 'holding', b: { blocks: 1, bytes: 10 } });
    const [good] = await eventsOf(a!);
    const before = b!.ledger.view();
    const forged = { d: good!.d, s: Uint8Array.from(good!.s, (x, i) => (i === 0 ? x ^ 1 : x)) };
    await expect(b!.ledger.accept([forged])).rejects.toMatchObject({ code: 'OURO_PROTOCOL', message: expect.stringContaining('bad signature') });
    await expect(b!.ledger.accept(await eventsOf(stranger!))).rejects.toMatchObject({ code: 'OURO_PROTOCOL', message: expect.stringContaining('not a member') });
    await expect(b!.ledger.accept(await eventsOf(other!))).rejects.toMatchObject({ code: 'OURO_PROTOCOL', message: expect.stringContaining('another cluster') });
    await expect(b!.ledger.accept([{ d: new Uint8Array(70_000), s: good!.s }])).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });
    await expect(b!.ledger.accept([{ d: Buffer.from([0xc1]), s: good!.s }])).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });
    const { Packr } = await import('msgpackr');
    const future = new Packr({ useRecords: false, mapsAsObjects: true }).pack({ v: 2, c: CLUSTER, o: a!.peerId, n: 1, t: 1, k: 'holding', b: { blocks: 1, bytes: 1 } });
    await expect(b!.ledger.accept([{ d: future, s: good!.s }])).rejects.toMatchObject({ code: 'OURO_UNSUPPORTED_VERSION' });
    expect(b!.ledger.view()).toEqual(before);
    // The genuine event still goes in, once.
    expect(await b!.ledger.accept([good!, good!])).toBe(1);
    expect(b!.ledger.view().events).toBe(1);
    for (const m of [a!, b!, stranger!, other!]) await m.ledger.close();
  });

  it('keeps its events and figures across a reopen, and pages what a peer lacks', async () => {
    const key = await generateKeyPair('Ed25519');
    const dir = tempDir();
    const ids = new Set([peerIdFromPrivateKey(key).toString()]);
    const m = await open(key, ids, CLUSTER, POLICY, dir);
    for (let i = 0; i < 20; i++) await m.ledger.record({ k: 'holding', b: { blocks: i, bytes: i * 100 } }, 5000 + i);
    const view = m.ledger.view();
    await m.ledger.close();
    const again = await open(key, ids, CLUSTER, POLICY, dir);
    expect(again.ledger.view()).toEqual(view);
    expect(await again.ledger.viewAt(view.observers)).toEqual(view);
    // Numbering goes on where it stopped.
    await again.ledger.record({ k: 'holding', b: { blocks: 99, bytes: 1 } });
    expect(again.ledger.vector()[again.peerId]).toBe(21);
    const page = await again.ledger.since({ [again.peerId]: 5 }, 300);
    expect(page.more).toBe(true);
    expect(page.events.length).toBeGreaterThan(0);
    expect(page.events.length).toBeLessThan(16);
    await expect(again.ledger.viewAt({ [again.peerId]: 22 })).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
    await again.ledger.close();
  });
});

describe('ledger sync', () => {
  it('takes a round of replies as one: a member lagging behind another cannot put this node through a quarantine the other reply ends, whichever answers first', async () => {
    const [a, stale, fresh, r, x] = await members(5);
    const fail: EventBody = { k: 'proofs', b: [{ s: x!.peerId, blk: BLOCK, r: 'fail', ms: 1 }] };
    await a!.ledger.record(fail, 1000);
    await a!.ledger.record(fail, 2000);
    // `stale` copied the failure run, not yet the clear that ended it; `fresh` holds both.
    await stale!.ledger.accept(await eventsOf(a!));
    await a!.ledger.record({ k: 'clear', b: { s: x!.peerId } }, 3000);
    await fresh!.ledger.accept(await eventsOf(a!));
    expect(stale!.ledger.quarantined(x!.peerId)).toBe(true);
    expect(fresh!.ledger.quarantined(x!.peerId)).toBe(false);

    // r syncs from both; the stale reply comes first and is taken before the fresh one arrives.
    const peers = new Map([stale!, fresh!].map((m) => [m.peerId, m]));
    let staleTaken = false;
    const host: FeedHost = {
      log: pino({ level: 'silent' }),
      member: () => true,
      stopping: () => false,
      others: () => [...peers.keys()],
      alive: () => true,
      held: async () => [],
      memberViews: () => [...peers.keys()].map((peerId) => ({ peerId, self: false, status: 'member' as const, state: 'alive' })),
      request: async (peer, _name, message) => {
        const have = (message as { have: Record<string, number> }).have;
        if (peer === fresh!.peerId) {
          while (r!.ledger.vector()[a!.peerId] !== 2) await new Promise((resolve) => setTimeout(resolve, 5));
          staleTaken = true;
        }
        return peers.get(peer)!.ledger.since(have, 1 << 20);
      },
    };
    await new LedgerFeed(host, r!.ledger, { ledger: { intervalMs: 60_000, syncIntervalMs: 60_000 }, requestTimeoutMs: 5000, maxFrameBytes: 4 << 20 }).sync();
    expect(staleTaken).toBe(true);
    expect(r!.ledger.view()).toEqual(fresh!.ledger.view());
    expect(r!.quarantines).toEqual([]);
    expect(r!.ledger.quarantined(x!.peerId)).toBe(false);

    // A round where only the stale member answers leaves r where those events do: quarantined, told once.
    const r2 = await open(await generateKeyPair('Ed25519'), new Set([a!.peerId, stale!.peerId, fresh!.peerId]), CLUSTER, POLICY);
    const failing: FeedHost = { ...host, request: async (peer, _name, message) => {
      if (peer === fresh!.peerId) throw new Error('no answer');
      return stale!.ledger.since((message as { have: Record<string, number> }).have, 1 << 20);
    } };
    await new LedgerFeed(failing, r2.ledger, { ledger: { intervalMs: 60_000, syncIntervalMs: 60_000 }, requestTimeoutMs: 5000, maxFrameBytes: 4 << 20 }).sync();
    expect(r2.quarantines).toEqual([[x!.peerId, true]]);
    // A writer that records its own verdict on x while the round is open (its proof rounds go on)
    // leaves x to the round's end too.
    const r3 = await open(await generateKeyPair('Ed25519'), new Set([a!.peerId, stale!.peerId, fresh!.peerId]), CLUSTER, POLICY);
    const recording: FeedHost = { ...host, request: async (peer, _name, message) => {
      const have = (message as { have: Record<string, number> }).have;
      if (peer === fresh!.peerId) {
        while (r3.ledger.vector()[a!.peerId] !== 2) await new Promise((resolve) => setTimeout(resolve, 5));
        await r3.ledger.record({ k: 'proofs', b: [{ s: x!.peerId, blk: BLOCK, r: 'pass', ms: 1 }] }, 2500);
      }
      return peers.get(peer)!.ledger.since(have, 1 << 20);
    } };
    await new LedgerFeed(recording, r3.ledger, { ledger: { intervalMs: 60_000, syncIntervalMs: 60_000 }, requestTimeoutMs: 5000, maxFrameBytes: 4 << 20 }).sync();
    expect(r3.ledger.vector()[r3.peerId]).toBe(1);
    expect(r3.quarantines).toEqual([]);
    expect(r3.ledger.quarantined(x!.peerId)).toBe(false);
    for (const m of [a!, stale!, fresh!, r!, x!, r2, r3]) await m.ledger.close();
  });
});

describe('proof of storage answer', () => {
  it('is the HMAC FORMAT.md describes, over the ranges of the block as held, and changes with one altered byte', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'block');
    const bytes = pseudoRandom('proof block', 300_000);
    fs.writeFileSync(file, bytes);
    const id = 'cd'.repeat(32);
    const [challenge] = await makeChallenges(file, id, bytes.length, 1);
    expect(challenge!.ranges).toHaveLength(4);
    for (const [off, len] of challenge!.ranges) {
      expect(len).toBe(PROOF_RANGE_BYTES);
      expect(off + len).toBeLessThanOrEqual(bytes.length);
    }
    // Independently: @noble's HMAC-SHA256 keyed by the nonce over domain, id, then each range's header and bytes.
    const parts = [Buffer.from('ourodb proof v1\0'), blockIdBytes(id)];
    for (const [off, len] of challenge!.ranges) {
      const head = Buffer.alloc(12);
      head.writeBigUInt64BE(BigInt(off));
      head.writeUInt32BE(len, 8);
      parts.push(head, bytes.subarray(off, off + len));
    }
    expect(Buffer.from(challenge!.answer)).toEqual(Buffer.from(hmac(sha256, challenge!.nonce, Buffer.concat(parts))));
    // One byte altered inside the first range: another answer.
    const [off] = challenge!.ranges[0]!;
    const altered = Buffer.from(bytes);
    altered[off + 7]! ^= 0x40;
    fs.writeFileSync(file, altered);
    expect(proofAnswer(blockIdBytes(id), challenge!.nonce, challenge!.ranges, await readRanges(file, challenge!.ranges)).equals(Buffer.from(challenge!.answer))).toBe(false);
    // A truncated file cannot answer at all.
    fs.truncateSync(file, 1000);
    await expect(readRanges(file, [[2000, 10]])).rejects.toMatchObject({ code: 'OURO_CORRUPTION' });
  });
});
