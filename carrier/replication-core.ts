/**
 * The core of replication (carrier/replication.ts describes the whole and wires the parts): what
 * every part shares, and the holders and placement of blocks. It imports none of the other parts.
 *
 * ReplicationContext owns what stopping needs and the failure count:
 *   - the stop signal: aborted only by Replicator.stop (abort()); every part reads it;
 *   - the background tasks: any part adds one with track(); it leaves the set when it settles;
 *     Replicator.stop waits for those left;
 *   - `failures`: counted only by failed() (a push, repair, index or release that failed).
 * The host, shelf, database and config it hands to the parts are not its state: they are read.
 *
 * Holders owns placement (computed from the host's member views each time, never stored) and
 * the blocks this node's database sealed with the members known to hold each:
 *   - #own and #confirmedAt change only through sealed() (a seal, or the blocks found at start),
 *     confirm() (a push acknowledged, or a block-have "yes"), unconfirm() (a block-have "no"
 *     newer than the last confirmation) and forget() (a member's quarantine started or ended);
 *   - #pushing: pushStarted()/pushEnded(), called by Replicator's seal subscription around the
 *     push that follows each seal;
 *   - #removedSurplus: this node's copies that Repair removed as surplus (removedSurplus()), until
 *     Transfers keeps the block here again (kept()); the prover reads it (wasRemovedSurplus());
 *   - #removedShards: shards Shards removed here as duplicates or as surplus (removedShard()),
 *     until one is kept here again (keptShard()); the prover reads it (shardPlaced());
 *   - #changed: the waits of settled(); woken by confirm(), pushEnded() and wakeAll() (at stop).
 * It asks the repair loop for a pass through the `repairSoon` callback it is given.
 */
import type { Stream } from '@libp2p/interface';
import type { Logger } from 'pino';
import type { OuroDB } from '../lib/db.js';
import { BadArgumentError, OuroError, TimeoutError, UnavailableError, errorText } from '../lib/errors.js';
import type { EcPolicy } from './membership.js';
import { replicaSet, shardSet, smallBlockLine } from './placement.js';
import type { HeldBlock, Shelf } from './shelf.js';
import { StreamReader } from './stream-reader.js';

export interface ReplicationConfig {
  /** A dead member keeps its placements this long before its blocks are copied elsewhere. */
  deadGraceMs: number;
  /** Pause between repair passes. */
  repairIntervalMs: number;
  /** Bytes per second the repair loop may send (pushes right after a seal are not limited). */
  repairBytesPerSec: number;
  /**
   * At ec K+M, a coded block is repaired once its healthy shards are K + this many or fewer
   * (docs/node.md, "Redundancy"). 0 waits until one more loss would make it unreadable.
   */
  repairThreshold: number;
}

/** Where replication counts the blocks it moves (NodeMetrics implements it). */
export interface ReplicationMetrics {
  replicated(direction: 'in' | 'out', bytes: number): void;
  /** A block read back from its shards by decoding (a data shard missing or corrupt). */
  ecDegradedRead(): void;
}

/** What the replicator needs of its node (carrier/node.ts implements it). */
export interface ReplicationHost {
  readonly peerId: string;
  /** Members each block is placed on (capped by the candidates there are): the cluster's setting. */
  readonly replicationFactor: number;
  /** The cluster's erasure-coding policy (member list), or null/absent: replicas only. */
  readonly ecPolicy?: EcPolicy | null;
  readonly log: Logger;
  readonly metrics: ReplicationMetrics;
  /** Current members with their failure detector state. */
  memberViews(): Array<{ peerId: string; self: boolean; status: 'member' | 'revoked' | 'left'; state: string | null; since: number | null; draining: boolean; quarantined: boolean }>;
  /** `peer` sent this node `bytes` of a block for repair or restore (the ledger's "served"). */
  served(peer: string, bytes: number): void;
  handle(name: string, handler: (message: unknown, ctx: { peer: string; signal: AbortSignal }) => unknown): Promise<void>;
  handleStream(name: string, handler: (stream: Stream, ctx: { peer: string; signal: AbortSignal }) => Promise<void>): Promise<void>;
  request(peer: string, name: string, message: unknown, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<unknown>;
  /** The signed member list this node acts on (sent with block-have, see Repair.onHave). */
  memberList(): unknown;
  /** Merges a member list a member sent (checked like a heartbeat's). */
  learnList(list: unknown, from: string): Promise<void>;
  openStream(peer: string, name: string, signal: AbortSignal): Promise<Stream>;
  readonly maxFrameBytes: number;
  readonly requestTimeoutMs: number;
}

export const PROTOCOL_VERSION = 1;
export const HAVE_BATCH = 512;
export const LIST_PAGE = 1000;

/** The blocks `shelf` holds now. */
export async function heldBlocks(shelf: Shelf): Promise<HeldBlock[]> {
  const out: HeldBlock[] = [];
  for await (const b of shelf.list()) out.push(b);
  return out;
}

/** What every part of replication shares: see the top of this file for who changes what. */
export class ReplicationContext {
  readonly host: ReplicationHost;
  readonly shelf: Shelf;
  readonly db: OuroDB | undefined;
  readonly config: ReplicationConfig;
  readonly #stop = new AbortController();
  readonly #tasks = new Set<Promise<unknown>>();
  #failures = 0;

  constructor(host: ReplicationHost, shelf: Shelf, db: OuroDB | undefined, config: ReplicationConfig) {
    this.host = host;
    this.shelf = shelf;
    this.db = db;
    this.config = config;
  }

  /** Aborted once replication stops. */
  get signal(): AbortSignal {
    return this.#stop.signal;
  }

  /** Since start: pushes, repairs, indexings and releases that failed. */
  get failures(): number {
    return this.#failures;
  }

  /** Replicator.stop's first step: every part sees the signal aborted from now on. */
  abort(): void {
    this.#stop.abort(new Error('replication stopped'));
  }

  track<T>(p: Promise<T>): Promise<T> {
    this.#tasks.add(p);
    void p.finally(() => this.#tasks.delete(p)).catch(() => {});
    return p;
  }

  /** The background tasks not settled yet (stop waits for them). */
  tasks(): Array<Promise<unknown>> {
    return [...this.#tasks];
  }

  /** Options of a repair pass's small requests: a member that does not answer soon is skipped this pass. */
  smallRequest(): { signal: AbortSignal; timeoutMs: number } {
    return { signal: this.#stop.signal, timeoutMs: Math.min(this.host.requestTimeoutMs, 3000) };
  }

  failed(what: string, peer: string, id: string, err: unknown): void {
    if (this.#stop.signal.aborted) return;
    this.#failures++;
    this.host.log.warn({ event: `${what}-failed`, peer, id, err: errorText(err) }, `block ${what} failed`);
  }
}

/** Placement, and who holds this database's blocks: see the top of this file for who changes what. */
export class Holders {
  readonly #host: ReplicationHost;
  readonly #config: ReplicationConfig;
  readonly #signal: AbortSignal;
  readonly #repairSoon: () => void;
  /** Blocks this node's database sealed, with the members known to hold each durably. */
  readonly #own = new Map<string, Set<string>>();
  /** When each `<block> <peer>` of #own was last confirmed (a "no" asked before that is stale). */
  readonly #confirmedAt = new Map<string, number>();
  readonly #changed = new Set<() => void>();
  /** Blocks this database sealed whose push to their placement (Transfers.afterSeal) is under way. */
  readonly #pushing = new Set<string>();
  /**
   * Blocks whose copy this node removed as surplus (not placed on it, in its view when it removed
   * it), not kept here again since. Kept in memory only: after a restart a missing copy is judged
   * by the current placement alone.
   */
  readonly #removedSurplus = new Set<string>();
  /** Shards (`<block id>.<index>`) removed here as duplicates or as surplus (see removedShard); in memory only. */
  readonly #removedShards = new Set<string>();
  /**
   * Blocks this database sealed and stored as shards (Transfers.afterSeal, Shards.push), with
   * their K+M, the indexes of the shards known durable on their member, and which member holds
   * which (`byPeer`: what proofs of storage challenge; a push or a repair pass's shard-have
   * answer confirms, a "no" withdraws). Sealed in memory only, like #own: after a restart the
   * shard wait knows the blocks sealed since, and repair passes fill byPeer again.
   */
  readonly #coded = new Map<string, { k: number; m: number; durable: Set<number>; byPeer: Map<string, Set<number>> }>();

  constructor(ctx: ReplicationContext, repairSoon: () => void) {
    this.#host = ctx.host;
    this.#config = ctx.config;
    this.#signal = ctx.signal;
    this.#repairSoon = repairSoon;
  }

  // ------------------------------------------------------------------ placement

  /** Members blocks may be placed on now: approved, not revoked, not draining, not quarantined, not dead past the grace. */
  candidates(): string[] {
    const now = Date.now();
    return this.#host
      .memberViews()
      .filter((m) => m.status === 'member' && !m.draining && !m.quarantined && (m.self || !(m.state === 'dead' && now - (m.since ?? now) > this.#config.deadGraceMs)))
      .map((m) => m.peerId);
  }

  /** The cluster's ec policy if block `id` of `size` bytes is to be stored as shards: null for a whole block. */
  codedAs(size: number): EcPolicy | null {
    const ec = this.#host.ecPolicy ?? null;
    return ec && size >= smallBlockLine(ec.k) ? ec : null;
  }

  /** Members of block `id`'s shards at K+M, shard i on the i-th (see shardSet). */
  shardPlacement(id: string, ec: EcPolicy): string[] {
    return shardSet(id, this.candidates(), ec.k, ec.m);
  }

  placement(id: string): string[] {
    return replicaSet(id, this.candidates(), this.#host.replicationFactor);
  }

  /**
   * The placement every member computes alike, whatever its failure detector says: over the
   * members not draining or quarantined, with no one left out for being dead. placement() leaves
   * out members dead past the grace, as this node sees them; two members seeing that differently
   * could each count the other's surplus copy and both drop theirs. A copy is dropped only once
   * every member of this placement holds it too, so those copies stay whatever the views (a
   * member away keeps surplus copies in place until it answers again or is revoked).
   */
  firmPlacement(id: string): string[] {
    const members = this.#host.memberViews().filter((m) => m.status === 'member' && !m.draining && !m.quarantined).map((m) => m.peerId);
    return replicaSet(id, members, this.#host.replicationFactor);
  }

  /**
   * The shard placement every member computes alike (see firmPlacement): where a reader looks
   * for block `id`'s shards, a member that is down keeping its place in the ranking.
   */
  firmShardPlacement(id: string, ec: EcPolicy): string[] {
    const members = this.#host.memberViews().filter((m) => m.status === 'member' && !m.draining && !m.quarantined).map((m) => m.peerId);
    return shardSet(id, members, ec.k, ec.m);
  }

  // ------------------------------------------------------------------ holders of this database's blocks

  /** Block `id` was sealed by this node's database: held here, by no one else known yet. */
  sealed(id: string): void {
    this.#own.set(id, new Set([this.#host.peerId]));
  }

  /** Members known to hold block `id`, a block this database sealed (this node included). */
  holdersOf(id: string): ReadonlySet<string> | undefined {
    return this.#own.get(id);
  }

  /**
   * Forgets every confirmation `peer` gave (its quarantine started or ended): until a repair pass
   * or a push confirms a block again, no proof of storage asks it for that block.
   */
  forget(peer: string): void {
    for (const [id, holders] of this.#own) {
      holders.delete(peer);
      this.#confirmedAt.delete(`${id} ${peer}`);
    }
    for (const c of this.#coded.values()) c.byPeer.delete(peer);
  }

  /** Block `id`, sealed here, is being stored as K+M shards: none is known durable yet. */
  coded(id: string, ec: EcPolicy): void {
    this.#coded.set(id, { k: ec.k, m: ec.m, durable: new Set(), byPeer: new Map() });
  }

  /** Shard `index` of block `id` is durable on the member it was pushed to (or here): `peer`, when known. */
  confirmShard(id: string, index: number, peer?: string): void {
    const c = this.#coded.get(id);
    if (!c) return;
    if (peer !== undefined) {
      let held = c.byPeer.get(peer);
      if (!held) c.byPeer.set(peer, (held = new Set()));
      held.add(index);
    }
    if (c.durable.has(index)) return;
    c.durable.add(index);
    for (const wake of this.#changed) wake();
  }

  /**
   * What `peer` answered a repair pass's shard-have for block `id`: the indexes it holds now
   * (none: []). Replaces what was known of it, so a shard it lost is no longer challenged.
   */
  shardsHeldBy(id: string, peer: string, indexes: number[]): void {
    const c = this.#coded.get(id);
    if (!c) return;
    if (indexes.length === 0) c.byPeer.delete(peer);
    else c.byPeer.set(peer, new Set(indexes));
  }

  /** `peer` answered a proof challenge that it lacks shard `index` of block `id`: not asked for it until confirmed again. */
  unconfirmShard(id: string, peer: string, index: number): void {
    this.#coded.get(id)?.byPeer.get(peer)?.delete(index);
  }

  /** Block `id`, sealed here as shards: its K+M and which member holds which of its shards (proofs of storage challenge them). */
  shardHolders(id: string): { k: number; m: number; byPeer: ReadonlyMap<string, ReadonlySet<number>> } | undefined {
    const c = this.#coded.get(id);
    return c && { k: c.k, m: c.m, byPeer: c.byPeer };
  }

  /** Indexes of block `id`'s shards known durable (a block this database sealed as shards). */
  shardsOf(id: string): ReadonlySet<number> | undefined {
    return this.#coded.get(id)?.durable;
  }

  confirm(id: string, peer: string): void {
    const holders = this.#own.get(id);
    if (!holders) return;
    this.#confirmedAt.set(`${id} ${peer}`, performance.now());
    if (holders.has(peer)) return;
    holders.add(peer);
    for (const wake of this.#changed) wake();
  }

  /**
   * `peer` answered, to a question asked at `askedAt`, that it lacks block `id`: it gets the block
   * again from the repair pass, and no proof asks for it meanwhile. A push that completed after
   * the question was asked wins (the answer is stale).
   */
  unconfirm(id: string, peer: string, askedAt: number): void {
    const key = `${id} ${peer}`;
    if ((this.#confirmedAt.get(key) ?? -Infinity) > askedAt) return;
    this.#own.get(id)?.delete(peer);
    this.#confirmedAt.delete(key);
  }

  /**
   * This node is about to remove its copy of block `id` as surplus. Marked before the file goes,
   * so that a proof answered meanwhile already sees it (see wasRemovedSurplus).
   */
  removedSurplus(id: string): void {
    this.#removedSurplus.add(id);
  }

  /**
   * This node is about to remove shard `index` of block `id`: a duplicate of one another placed
   * member holds (Shards.dropDuplicates), or surplus, the block's shard placement leaving this
   * node out and holding all K+M without it (Shards.dropSurplus). A proof asking for it is then
   * answered as not placed, whatever the placement is by then. In memory, until the shard is
   * held here again.
   */
  removedShard(id: string, index: number): void {
    this.#removedShards.add(`${id}.${index}`);
  }

  /** Whether this node removed shard `index` of block `id` as a duplicate or as surplus (and has not held it since). */
  wasRemovedShard(id: string, index: number): boolean {
    return this.#removedShards.has(`${id}.${index}`);
  }

  /**
   * Whether shard `index` of block `id`, missing here, is a loss: this node is among the block's
   * shard placement now and did not remove that shard itself (removedShard). A shard removed as
   * surplus is no loss when the placement takes this node back later: members see each other
   * dead or alive at different times and learn quarantines at different times, so after a
   * partition heals a member may drop a shard it held for its side and be placed on the block
   * again moments later (another member quarantined, or dead past the grace in its view), while
   * the writer, which had not asked it since, still counts it a holder of that shard.
   */
  shardPlaced(id: string, index: number): boolean {
    const ec = this.#host.ecPolicy ?? null;
    return ec !== null && this.shardPlacement(id, ec).includes(this.#host.peerId) && !this.wasRemovedShard(id, index);
  }

  /** Shard `index` of block `id` is held here again (received): a later loss of it is a loss. */
  keptShard(id: string, index: number): void {
    this.#removedShards.delete(`${id}.${index}`);
  }

  /** Block `id` is held here again (received or fetched): a later loss of it is a loss. */
  kept(id: string): void {
    this.#removedSurplus.delete(id);
  }

  /**
   * Whether this node lacks block `id` because it removed its copy as surplus: a placement change
   * in flight, like a block not placed here now. Members learn quarantines and clears at different
   * times (ledger sync), so a writer may confirm a copy here (a push after a clear it applied) that
   * this node then removes as surplus, its ledger still holding it quarantined; once this node
   * applies the clear too, the block is placed here again and the copy is missing. That is not
   * the holder's fault (docs/node.md, "Proofs of storage"): the proof of it gets no verdict.
   */
  wasRemovedSurplus(id: string): boolean {
    return this.#removedSurplus.has(id);
  }

  /** The push that follows the seal of block `id` started. */
  pushStarted(id: string): void {
    this.#pushing.add(id);
  }

  /** Whether the push that follows the seal of block `id` is under way (a repair pass leaves the block to it). */
  pushing(id: string): boolean {
    return this.#pushing.has(id);
  }

  /** That push ended: one that failed leaves its block short, so settled() now asks for a repair pass. */
  pushEnded(id: string): void {
    this.#pushing.delete(id);
    for (const wake of this.#changed) wake();
  }

  /** Wakes every wait of settled() (replication is stopping: they throw). */
  wakeAll(): void {
    for (const wake of this.#changed) wake();
  }

  /**
   * Resolves once every block this database sealed so far is held by `replicas` members (this
   * one included). `replicas` may not exceed the replication factor, nor the members there are.
   * While a block is short of `replicas` holders and fewer members than that are live (not
   * dead, as this node's failure detector sees them), no wait can end well: it rejects at once
   * with UnavailableError rather than waiting for a member that may never come back. Blocks a
   * member confirmed before it died still count: its copy was durable when it acknowledged it.
   */
  async settled(replicas: number, signal?: AbortSignal): Promise<void> {
    const members = this.#host.memberViews().filter((m) => m.status === 'member').length;
    const ec = this.#host.ecPolicy ?? null;
    // Whole copies are not what protects a block at ec K+M: a count of them would mean nothing for
    // the blocks stored as shards, and would wait on the repair of copies the policy does not want.
    if (ec) throw new BadArgumentError(`this cluster stores blocks as ec ${ec.k}+${ec.m} shards: wait with flush({ shards: n }) (n from ${ec.k} to ${ec.k + ec.m}), not flush({ replicas })`);
    if (replicas > this.#host.replicationFactor) throw new BadArgumentError(`replicas ${replicas} is more than the cluster's replication factor (${this.#host.replicationFactor})`);
    if (replicas > members) throw new BadArgumentError(`replicas ${replicas}: the cluster has ${members} member${members === 1 ? '' : 's'}`);
    const ids = [...this.#own.keys()];
    return this.#waitFor(`replicas ${replicas}`, replicas, () => ids.filter((id) => (this.#own.get(id)?.size ?? 0) < replicas), signal);
  }

  /**
   * Resolves once `shards` shards of every block this database sealed as shards so far are
   * durable, each on its own member (`flush({ shards })` at ec K+M, K <= shards <= K+M). A block
   * below the small-block line, kept whole, waits for as many whole copies as survive the same
   * losses: shards - K + 1 (n shards outlive n - K lost members; c copies outlive c - 1), at most
   * the replication factor. Rejects like settled() when too few members are live.
   */
  async settledShards(shards: number, signal?: AbortSignal): Promise<void> {
    const ec = this.#host.ecPolicy ?? null;
    if (!ec) throw new BadArgumentError(`flush({ shards: ${shards} }) needs a cluster at ec K+M (\`ouro cluster redundancy ec K+M\`); this one keeps replicas: wait with flush({ replicas })`);
    if (!Number.isSafeInteger(shards) || shards < ec.k || shards > ec.k + ec.m) throw new BadArgumentError(`shards ${shards}: at ec ${ec.k}+${ec.m} a block is readable from ${ec.k} shards and has ${ec.k + ec.m}`);
    const copies = Math.min(shards - ec.k + 1, this.#host.replicationFactor);
    const ids = [...this.#own.keys()];
    const short = () =>
      ids.filter((id) => {
        const c = this.#coded.get(id);
        return c ? c.durable.size < Math.min(shards, c.k + c.m) : (this.#own.get(id)?.size ?? 0) < copies;
      });
    return this.#waitFor(`shards ${shards}`, Math.max(shards, copies), short, signal);
  }

  /**
   * The wait of settled() and settledShards(): until `short()` is empty, failing at once while
   * fewer than `needed` members are live.
   */
  async #waitFor(what: string, needed: number, shortOf: () => string[], signal?: AbortSignal): Promise<void> {
    for (;;) {
      signal?.throwIfAborted();
      if (this.#signal.aborted) throw new OuroError('OURO_CLOSED', 'the node stopped before the blocks were replicated');
      const short = shortOf();
      if (short.length === 0) return;
      // Checked at every wake, not only at the start: a member dying during the wait ends it too.
      const live = this.#host.memberViews().filter((m) => m.status === 'member' && m.state !== 'dead').length;
      if (live < needed) throw new UnavailableError(`${what}: only ${live} member${live === 1 ? ' is' : 's are'} live (not dead) to hold ${short.length} block${short.length === 1 ? '' : 's'} not yet on ${needed}`);
      // A block still being pushed confirms itself as its targets ack (confirm() wakes this loop).
      // Only a block no push is placing needs a repair pass: a pass lists every block of every
      // member (Repair's indexFromCluster and runPass), so kicking one per wait made each replicated
      // flush cost in proportion to everything the cluster holds, and raced the push it waits for.
      if (short.some((id) => !this.#pushing.has(id))) this.#repairSoon();
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.#changed.delete(wake);
          signal?.removeEventListener('abort', wake);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(wake, 1000);
        this.#changed.add(wake);
        signal?.addEventListener('abort', wake, { once: true });
      });
    }
  }
}

/**
 * Time a transfer is allowed per MiB, on top of the request time limit: a floor of about 34 KiB/s.
 * It was 1 s (a floor of 1 MiB/s) until 2026-12: across a link of 100 ms round trip and 1% loss,
 * where QUIC carries 0.1-0.15 MiB/s (bench/net.ts), every push of a block past a few MiB was cut
 * off at its limit and retried for ever (test/net-links.test.ts). A dead peer does not hold a
 * transfer for this long: QUIC's idle timeout closes its connection, which fails the stream.
 */
export const MS_PER_MIB = 30_000;

/** The signal of one transfer of about `bytes`: aborted when the replicator stops (`stop`) or its time is up. */
export function transferSignal(stop: AbortSignal, requestTimeoutMs: number, bytes: number): AbortSignal {
  return AbortSignal.any([stop, AbortSignal.timeout(requestTimeoutMs + Math.ceil(bytes / 2 ** 20) * MS_PER_MIB)]);
}

/**
 * Opens a `protocol` stream to `peer` for one transfer and runs `fn` on it under `signal`
 * (transferSignal): the time limit aborts the stream, and so does any failure, which is rethrown.
 * The block transfers (replication-transfer.ts) and the shard transfers (replication-shards.ts)
 * both go through it.
 */
export async function onTransferStream<T>(host: Pick<ReplicationHost, 'openStream'>, peer: string, protocol: string, what: string, signal: AbortSignal, fn: (stream: Stream, reader: StreamReader, signal: AbortSignal) => Promise<T>): Promise<T> {
  const stream = await host.openStream(peer, protocol, signal);
  const onAbort = () => stream.abort(new TimeoutError(`${what}: time limit`));
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await fn(stream, new StreamReader(stream), signal);
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)));
    throw err;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
