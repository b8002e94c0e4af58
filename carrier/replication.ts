/**
 * Replication of sealed blocks between members (issue 7), on a node that holds blocks on a
 * shelf (carrier/shelf.ts). Protocols (docs/FORMAT.md, "Block replication"), members only:
 *
 *   /ouro/block-put/1   stream  -> {v, id, size}   <- reply {send}   -> size raw bytes
 *                                                  <- reply {stored} once the block is durable
 *   /ouro/block-put-small/1 request {v, id, size, bytes} -> {stored} or {busy}   (blocks up to
 *                       SMALL_PUSH_MAX_BYTES, on the peer's session: no stream to open)
 *   /ouro/block-get/1   stream  -> {v, id}         <- reply {size}   <- size raw bytes
 *   /ouro/block-have/1  request {v, ids, list}     -> {have: boolean[]}
 *   /ouro/block-list/1  request {v, after, limit}  -> {blocks: [{id, size}], done}
 *   /ouro/block-announce/1 request {v, blocks}     -> {}   (a writer tells keyed members)
 *   /ouro/descriptor/1  request {v}                -> {descriptor: OURODB.json text | null}
 *   /ouro/block-retire/1 request {v, phase, ids}   -> {done: boolean[]}   (deletion, below)
 *   /ouro/shard-put/1, /ouro/shard-get/1, /ouro/shard-have/1   erasure-coded shards (replication-shards.ts)
 *
 * Who holds what is never stored: each pass of the repair loop asks the members a block is placed
 * on whether they hold it (block-have) and pushes it to those that do not. So the loop is
 * resumable by construction (a restart simply passes again), and the same pass serves a writer's
 * pushes that failed, a dead member's blocks, a corrupt replica, and rebalancing after a join.
 *
 * Placement (carrier/placement.ts) runs over the approved members that are not revoked and not
 * `dead` for longer than `deadGraceMs`: a member that is only briefly away
 * keeps its blocks and none are copied. A copy on a member outside the placement is surplus and
 * is removed by its holder only after every placed member has confirmed holding the block, and
 * every member of its placement with no one left out for being dead (Holders.firmPlacement),
 * under the newest list any asker has shown (Repair: onHave, #dropIfSurplus).
 *
 * Deletion across the cluster: a block the writer's gc compacted away is tombstoned in its
 * database (Tombstone.Retired). Each repair pass of the writer first seals what gc moved (so the
 * live entries sit in blocks every keyed member can adopt), then asks every member to `release`
 * the block: a keyless member tombstones it; a keyed one indexes what the cluster holds, then
 * re-points, copies or drops every entry naming the block (OuroDB.releaseBlock) and tombstones
 * it. Only when every member (revoked ones aside; a member away counts as not done) answered
 * done does the writer ask them to `drop` their copies, and it forgets nothing until every member
 * answered that too. So nothing is deleted while any member still names the block, and a
 * tombstoned block is never listed, adopted or pushed again.
 *
 * The parts, each the one owner of its state (its header says what that is and who changes it):
 *   carrier/replication-core.ts      ReplicationContext (stop signal, background tasks, failure
 *                                    count) and Holders (placement; this database's blocks and the
 *                                    members known to hold each; the waits for replicas)
 *   carrier/replication-transfer.ts  Transfers: push, receive, fetch (blocks being received,
 *                                    fetches under way, the repair pushes' rate limit)
 *   carrier/replication-repair.ts    Repair: the passes, scrub, surplus copies, drain, indexing
 *                                    what the cluster holds (the pass, the block-have lock, the
 *                                    drain's progress)
 *   carrier/replication-shards.ts    Shards: encode and push shards, receive them, read blocks
 *                                    back from them, repair, scrub and move them (the codec);
 *                                    its rules that need no node in replication-shard-rules.ts
 *   carrier/replication-deletion.ts  Deletion: deletion across the cluster (releases under way)
 * This file wires them: it builds them, serves their protocols, subscribes to the database's
 * seals, and is the database's ReplicaSource and the node's one view of replication. The parts
 * import the core and no other part (Repair aside, which imports the types of Transfers and Shards); what one
 * needs of a part built after it, it is given as a callback (Holders' repairSoon, Deletion's
 * indexOnce).
 */
import type { OuroDB, ReplicaSource } from '../lib/db.js';
import { Deletion } from './replication-deletion.js';
import { type ReplicationConfig, type ReplicationHost, Holders, ReplicationContext, heldBlocks } from './replication-core.js';
import { type DrainProgress, type PassProgress, Repair } from './replication-repair.js';
import { Shards } from './replication-shards.js';
import { Transfers } from './replication-transfer.js';
import type { HeldBlock, Shelf } from './shelf.js';

export type { ReplicationConfig, ReplicationHost, ReplicationMetrics } from './replication-core.js';
export type { DrainProgress } from './replication-repair.js';

/** What `progress` reports: the repair passes' counters (PassProgress), with the transfers' and the deletions'. */
export interface RepairProgress extends PassProgress {
  /** Since start: blocks fetched in, and transfers that failed. */
  fetched: number;
  failures: number;
  /** Since start: blocks released here at another member's request, and copies deleted at the end of a deletion. */
  released: number;
  dropped: number;
  /** Blocks this database retired whose deletion across the cluster is not finished (last pass). */
  deleting: number;
}

export class Replicator implements ReplicaSource {
  readonly #db: OuroDB | undefined;
  readonly #ctx: ReplicationContext;
  readonly #holders: Holders;
  readonly #transfers: Transfers;
  readonly #shards: Shards;
  readonly #deletion: Deletion;
  readonly #repair: Repair;
  /** Ends the seal subscription (set by start, called by stop). */
  #unsubscribe: (() => void) | undefined;

  constructor(host: ReplicationHost, shelf: Shelf, db: OuroDB | undefined, config: ReplicationConfig) {
    this.#db = db;
    this.#ctx = new ReplicationContext(host, shelf, db, config);
    this.#holders = new Holders(this.#ctx, () => this.#repair.kick());
    this.#shards = new Shards(this.#ctx, this.#holders);
    this.#transfers = new Transfers(this.#ctx, this.#holders, this.#shards);
    this.#deletion = new Deletion(this.#ctx, { indexOnce: () => this.#repair.indexOnce() });
    this.#repair = new Repair(this.#ctx, this.#holders, this.#transfers, this.#shards, this.#deletion);
  }

  get progress(): RepairProgress {
    const p = this.#repair.progress;
    const d = this.#deletion.progress;
    return { passes: p.passes, running: p.running, lastPassAt: p.lastPassAt, checked: p.checked, underReplicated: p.underReplicated, pushed: p.pushed, pushedBytes: p.pushedBytes, removed: p.removed, fetched: this.#transfers.fetched, failures: this.#ctx.failures, verified: p.verified, corrupt: p.corrupt, released: d.released, dropped: d.dropped, deleting: d.deleting, unsettled: p.unsettled, shardHealth: p.shardHealth, shardsRepaired: p.shardsRepaired, shardsRepairedBytes: p.shardsRepairedBytes, staleShards: p.staleShards };
  }

  /** Progress of this node's drain; null when it is not draining. */
  get drainProgress(): DrainProgress | null {
    return this.#repair.drainProgress;
  }

  async start(): Promise<void> {
    const h = this.#ctx.host;
    // Before any block can arrive: its directories then cost no push a mkdir.
    await this.#ctx.shelf.prepare();
    const transfers = this.#transfers;
    const repair = this.#repair;
    await h.handleStream('block-put', (stream, ctx) => transfers.onPut(stream, ctx.peer));
    await h.handle('block-put-small', (m, ctx) => transfers.onPutSmall(m, ctx.peer));
    await h.handleStream('block-get', (stream) => transfers.onGet(stream));
    await h.handle('block-have', (m, ctx) => repair.onHave(m, ctx.peer));
    await h.handle('block-list', (m) => repair.onList(m));
    await h.handle('block-announce', (m, ctx) => repair.onAnnounce(m, ctx.peer));
    await h.handle('descriptor', () => repair.onDescriptor());
    await h.handle('block-retire', (m) => this.#deletion.onRetire(m));
    await h.handleStream('shard-put', (stream, ctx) => this.#shards.onPut(stream, ctx.peer));
    await h.handleStream('shard-get', (stream) => this.#shards.onGet(stream));
    await h.handle('shard-have', (m) => this.#shards.onHave(m));
    if (this.#db) {
      // Subscribed before the registered blocks are listed, so that no seal falls between the
      // two: one durable before the subscription and registered after the listing began is
      // reported by the subscription itself (OuroDB.onSealedDurable). Listing first left a block
      // sealed meanwhile unknown to Holders (a flush({ replicas }) did not wait for it) and
      // unpushed until a repair pass found it.
      // The push starts as the block is durable under its id, not after its registration: the
      // writer's recovery registers that very file (wal/recover.ts), so a crash between the two
      // cannot leave a replica holding a block the writer then seals differently.
      this.#unsubscribe = this.#db.onSealedDurable((b) => {
        this.#holders.pushStarted(b.id);
        const pushed = transfers.afterSeal(b.id, b.size).finally(() => {
          // A push that failed leaves its block short: settled() now asks for a repair pass.
          this.#holders.pushEnded(b.id);
        });
        this.#ctx.track(pushed);
      });
      // A block reported by the subscription too is known already, with its confirmations.
      for await (const b of this.#db.blocks()) if (!b.adopted && !this.#holders.holdersOf(b.id)) this.#holders.sealed(b.id);
      this.#db.setReplicaSource(this);
    }
    repair.startLoop();
  }

  async stop(): Promise<void> {
    this.#repair.stopLoop();
    this.#unsubscribe?.();
    this.#db?.setReplicaSource(undefined);
    this.#ctx.abort();
    this.#holders.wakeAll();
    await Promise.allSettled([...this.#ctx.tasks(), this.#repair.passing]);
  }

  // ------------------------------------------------------------------ placement and holders (Holders)

  /** Members blocks may be placed on now: approved, not revoked, not draining, not quarantined, not dead past the grace. */
  candidates(): string[] {
    return this.#holders.candidates();
  }

  placement(id: string): string[] {
    return this.#holders.placement(id);
  }

  /** Members known to hold block `id`, a block this database sealed (this node included). */
  holdersOf(id: string): ReadonlySet<string> | undefined {
    return this.#holders.holdersOf(id);
  }

  /**
   * Forgets every confirmation `peer` gave (its quarantine started or ended): until a repair pass
   * or a push confirms a block again, no proof of storage asks it for that block.
   */
  forget(peer: string): void {
    this.#holders.forget(peer);
  }

  /**
   * `peer` answered, to a proof challenge sent at `askedAt` (performance.now()), that it lacks
   * block `id`: like a block-have "no", it is not asked for it again until it has it again.
   */
  unconfirm(id: string, peer: string, askedAt: number): void {
    this.#holders.unconfirm(id, peer, askedAt);
  }

  /**
   * Block `id`, sealed here as shards under the cluster's current K+M: its K+M and which member
   * holds which shard (Holders.shardHolders). Undefined once the policy changed (the block is
   * being re-encoded: its whole copies or new shards are what hold it).
   */
  shardHolders(id: string): { k: number; m: number; byPeer: ReadonlyMap<string, ReadonlySet<number>> } | undefined {
    const ec = this.#ctx.host.ecPolicy ?? null;
    const coded = this.#holders.shardHolders(id);
    return coded && ec && coded.k === ec.k && coded.m === ec.m ? coded : undefined;
  }

  /** `peer` answered a proof challenge that it lacks shard `index` of block `id` (Holders.unconfirmShard). */
  unconfirmShard(id: string, peer: string, index: number): void {
    this.#holders.unconfirmShard(id, peer, index);
  }

  /** Whether shard `index` of block `id`, missing here, is a loss (Holders.shardPlaced). */
  shardPlaced(id: string, index: number): boolean {
    return this.#holders.shardPlaced(id, index);
  }

  /** Whether this node lacks block `id` because it removed its copy as surplus (see Holders.wasRemovedSurplus). */
  wasRemovedSurplus(id: string): boolean {
    return this.#holders.wasRemovedSurplus(id);
  }

  /**
   * Resolves once every block this database sealed so far is held by `replicas` members (this
   * one included). `replicas` may not exceed the replication factor, nor the members there are.
   * Implements ReplicaSource.
   */
  settled(replicas: number, signal?: AbortSignal): Promise<void> {
    return this.#holders.settled(replicas, signal);
  }

  /**
   * Resolves once `shards` shards of every block this database sealed as shards are durable (and
   * the blocks kept whole are on as many copies as survive the same losses: Holders.settledShards).
   * Implements ReplicaSource.
   */
  settledShards(shards: number, signal?: AbortSignal): Promise<void> {
    return this.#holders.settledShards(shards, signal);
  }

  /** Indexes of block `id`'s shards known durable (a block this database sealed as shards). */
  shardsOf(id: string): ReadonlySet<number> | undefined {
    return this.#holders.shardsOf(id);
  }

  // ------------------------------------------------------------------ transfers (Transfers)

  /** Fetches block `id` from a member holding it into the shelf. Implements ReplicaSource. */
  fetchBlock(id: string): Promise<void> {
    return this.#transfers.fetchBlock(id);
  }

  // ------------------------------------------------------------------ repair (Repair)

  /** The blocks this node holds now. */
  held(): Promise<HeldBlock[]> {
    return heldBlocks(this.#ctx.shelf);
  }

  /**
   * Starts a repair pass now (or right after the one running). `scrub`: the pass also scrubs
   * held blocks (see Repair.kick).
   */
  kick(options: { scrub?: boolean } = {}): void {
    this.#repair.kick(options);
  }

  /** Waits for the pass running now, and for one more if one is due (no further: see Repair.idle). */
  idle(): Promise<void> {
    return this.#repair.idle();
  }

  /**
   * The block moves of a drain (Node.drain has put the drain certificate in the member list):
   * repair passes until every block held here is held by every member of its placement (see
   * Repair.drain). Rejects when the replicator stops (a restart resumes the drain).
   */
  drain(): Promise<void> {
    return this.#repair.drain();
  }

  /**
   * Rebuilds this keyed member's database from the cluster (`ouro restore`): every block any
   * live member holds is fetched, verified and adopted (see Repair.restore).
   */
  restore(): Promise<{ blocks: number; adopted: number }> {
    return this.#repair.restore();
  }
}
