/**
 * A shard removed as surplus is no loss when the placement takes its member back (the ec
 * partition test's failed proof, docs/node.md "Network partitions"). In process: one member's
 * Holders, Shards and Prover over a keyless shelf, the other members faked through the host.
 *
 * After a partition heals, a member drops the shards it held for its side once the block's shard
 * placement over all the members holds them without it. Members then see each other and learn
 * quarantines at different times: a moment later the placement may take it back (here: one of
 * the placed members is quarantined), while the block's writer, which had not asked it since,
 * still counts it a holder of that shard and challenges it. Before the fix the member answered
 * "missing, placed" and failed the proof (twice in one run, with the late verdicts of a loaded
 * machine enough to quarantine it); now it answers "not placed", no verdict, as for a whole
 * block it removed as surplus.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { loadCodec } from '../carrier/ec/codec.js';
import { encodeManifest, makeManifest } from '../carrier/ec/manifest.js';
import type { Ledger } from '../carrier/ledger.js';
import { shardSet } from '../carrier/placement.js';
import { Prover } from '../carrier/proofs.js';
import { Holders, type ReplicationHost, ReplicationContext } from '../carrier/replication-core.js';
import { Shards } from '../carrier/replication-shards.js';
import { DirShelf } from '../carrier/shelf.js';
import { tempDir } from './helpers.js';

const EC = { k: 2, m: 1 };
const SELF = 'self';
const OTHERS = ['alpha', 'bravo', 'charlie'];

/** A block id whose shard placement over every member leaves SELF out. */
function blockNotPlacedHere(): string {
  for (;;) {
    const id = crypto.randomBytes(32).toString('hex');
    if (!shardSet(id, [SELF, ...OTHERS], EC.k, EC.m).includes(SELF)) return id;
  }
}

describe('a shard removed as surplus', () => {
  it('is answered as not placed when the placement takes its member back, and a shard lost meanwhile still fails', async () => {
    const quarantined = new Set<string>();
    let proofHandler: ((m: unknown, ctx: { peer: string; signal: AbortSignal }) => unknown) | undefined;
    let holders: Holders | undefined;
    const views = () => [SELF, ...OTHERS].map((peerId) => ({ peerId, self: peerId === SELF, status: 'member' as const, state: 'alive', since: 0, lastHeard: Date.now(), draining: false, quarantined: quarantined.has(peerId) }));
    const log = pino({ level: 'silent' });
    const shelf = new DirShelf(tempDir());
    const host: ReplicationHost & { metrics: { proof: () => void } } = {
      peerId: SELF,
      replicationFactor: 3,
      ecPolicy: EC,
      log,
      metrics: { replicated: () => {}, ecDegradedRead: () => {}, proof: () => {} },
      memberViews: views,
      served: () => {},
      handle: async (name, handler) => {
        if (name === 'proof') proofHandler = handler;
      },
      handleStream: async () => {},
      // Each placed member holds the shard of its place in the ranking (all K+M, without SELF).
      request: async (peer, name, message): Promise<unknown> => {
        if (name !== 'shard-have') throw new Error(`unexpected ${name}`);
        const ids = (message as { ids: string[] }).ids;
        return { have: ids.map((id) => ({ ...EC, shards: [holders!.shardPlacement(id, EC).indexOf(peer)].filter((i) => i >= 0) })) };
      },
      memberList: () => null,
      learnList: async () => {},
      openStream: async () => {
        throw new Error('no streams here');
      },
      maxFrameBytes: 1 << 20,
      requestTimeoutMs: 5000,
    };
    const ctx = new ReplicationContext(host, shelf, undefined, { deadGraceMs: 1000, repairIntervalMs: 1000, repairBytesPerSec: 1 << 30, repairThreshold: 1 });
    holders = new Holders(ctx, () => {});
    const shards = new Shards(ctx, holders);
    const here = holders;
    const prover = new Prover(
      {
        ...host,
        memberViews: views,
        placement: (id) => here.placement(id),
        holdersOf: () => undefined,
        unconfirm: () => {},
        removedSurplus: () => false,
        shardHolders: () => undefined,
        unconfirmShard: () => {},
        shardPlaced: (id, index) => here.shardPlaced(id, index),
      },
      // Answering a challenge reads no ledger (only a challenger's stock lives there).
      undefined as unknown as Ledger,
      shelf,
      undefined,
      { enabled: true, intervalMs: 1000, perRound: 4, deadlineMs: 1000, stock: 1 },
    );
    await prover.start();

    // Two blocks: this member holds shard 2 of each, kept for its side during a split.
    const codec = await loadCodec();
    const [surplus, lost] = [blockNotPlacedHere(), blockNotPlacedHere()];
    const kept = new Map<string, { manifest: Uint8Array; shard: Uint8Array }>();
    for (const id of [surplus, lost]) {
      const block = crypto.randomBytes(200_000);
      const coded = await codec.encode(block, EC.k, EC.m);
      kept.set(id, { manifest: encodeManifest(makeManifest(id, block, coded, EC.k, EC.m)), shard: coded[2]! });
      await shelf.shards.keep(id, 2, kept.get(id)!.manifest, kept.get(id)!.shard);
    }
    const challenge = (id: string) => proofHandler!({ v: 2, id, index: 2, ...EC, nonce: crypto.randomBytes(32), ranges: [[0, 4096]] }, { peer: OTHERS[0]!, signal: new AbortController().signal });
    expect(await challenge(surplus)).toHaveProperty('answer');

    // Healed: the placement over every member holds all K+M without this one, so both go.
    await shards.dropSurplus();
    expect(await shelf.shards.held(surplus, EC)).toEqual([]);
    expect(await shelf.shards.held(lost, EC)).toEqual([]);
    // A surplus shard asked for while not placed here: no verdict, as before.
    expect(await challenge(surplus)).toEqual({ missing: true, placed: false });

    // The placement takes this member back: the first placed member is quarantined.
    quarantined.add(shardSet(surplus, [SELF, ...OTHERS], EC.k, EC.m)[0]!);
    expect(here.shardPlacement(surplus, EC)).toContain(SELF);
    expect(await challenge(surplus)).toEqual({ missing: true, placed: false });

    // A shard pushed here again (as Shards.onPut keeps it) and then lost, deleted behind the
    // node's back, is a loss: the mark lasts only until the shard is held again.
    quarantined.clear();
    quarantined.add(shardSet(lost, [SELF, ...OTHERS], EC.k, EC.m)[0]!);
    expect(here.shardPlacement(lost, EC)).toContain(SELF);
    await shelf.shards.keep(lost, 2, kept.get(lost)!.manifest, kept.get(lost)!.shard);
    here.keptShard(lost, 2);
    expect(await challenge(lost)).toHaveProperty('answer');
    fs.rmSync(await shelf.shards.path(lost, 2, EC));
    expect(await challenge(lost)).toEqual({ missing: true, placed: true });
    await prover.stop();
  });
});
