/**
 * The repair loop (carrier/replication.ts describes what it is for): passes over the blocks held
 * here that ask their placement who holds each (block-have) and push to those that do not, scrub
 * held blocks, drop surplus copies, drain this node, and on a keyed member index the blocks the
 * cluster holds that its database does not know (each pass, an announce, `ouro restore`). It
 * serves the requests that go with those: block-have, block-list, block-announce, descriptor.
 *
 * Owns, and alone changes:
 *   - the pass: #pass (the one running), #again (one more is due), #timer (the interval that
 *     kicks scrubbing passes), #scrubDue and #scrubCursor: changed by kick(), #runPass(),
 *     #scrub(), startLoop() and stopLoop(); #shardScrubCursor, by #scrub (Shards.scrub does the work);
 *   - #haveLock: block-have's checks hold it shared (onHave), a surplus removal exclusive
 *     (#dropIfSurplus), so that no check runs between a removal's last placement check and its
 *     delete;
 *   - #indexing: the index-from-cluster round under way (indexOnce shares it);
 *   - #drain: this node's drain progress, set by drain();
 *   - #progress: the pass counters (RepairProgress shows them with the other parts').
 * Placement and confirmations are Holders' (this loop confirms and unconfirms through it);
 * pushes and fetches are Transfers'; a pass's deletions are Deletion's (deleteRetired).
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { OuroDB } from '../lib/db.js';
import { BadArgumentError, CorruptionError, OuroError, ProtocolError, errorText } from '../lib/errors.js';
import { ensureDir, writeFileAtomic } from '../lib/fsutil.js';
import { nodeVfs } from '../lib/vfs/vfs.js';
import { verifyBlockFile } from '../blockstore/store.js';
import { type Holders, type ReplicationConfig, type ReplicationContext, type ReplicationHost, HAVE_BATCH, LIST_PAGE, PROTOCOL_VERSION, heldBlocks } from './replication-core.js';
import type { ShardHealth, Shards } from './replication-shards.js';
import type { Transfers } from './replication-transfer.js';
import { SharedLock } from './shared-lock.js';
import { type HeldBlock, type Shelf, blockIdBytes } from './shelf.js';

export interface DrainProgress {
  startedAt: number;
  /** Blocks held here, and of them the ones not yet held by every member of their placement, in the last finished pass. */
  held: number;
  unsettled: number;
  passes: number;
  done: boolean;
}

/** Blocks a keyed member fetches and adopts at once while it indexes what the cluster holds (#indexFromCluster). */
const INDEX_AT_ONCE = 4;

/** Bytes of held blocks each repair pass verifies (round-robin across passes). */
const SCRUB_BYTES_PER_PASS = 256 * 2 ** 20;

/** What a pass needs of deletion (Deletion implements it). */
export interface RetiredBlocks {
  /** A writer's deletions across the cluster: one round of asks for the blocks its gc retired. */
  deleteRetired(): Promise<void>;
}

/** The counters of the repair passes (part of RepairProgress). */
export interface PassProgress {
  passes: number;
  running: boolean;
  lastPassAt: number | null;
  /** Blocks checked, and of them below their placement, in the last finished pass. */
  checked: number;
  underReplicated: number;
  /** Since start: blocks and bytes pushed, and surplus copies removed. */
  pushed: number;
  pushedBytes: number;
  removed: number;
  /** Since start: blocks verified by scrubbing, and found corrupt (then quarantined). */
  verified: number;
  corrupt: number;
  /** Blocks held here whose placement members did not all confirm holding them, in the last finished pass. */
  unsettled: number;
  /** Coded blocks held whole here, by healthy shards, in the last finished pass (see ShardCounts). */
  shardHealth: ShardCounts;
  /**
   * Blocks whose shards this node holds though the cluster's policy is no longer their K+M (back
   * at replicas: kept until the replica placement holds the block whole), in the last pass: the
   * re-encoding still to finish here.
   */
  staleShards: number;
  /** Since start: shards rebuilt and pushed to their placement, and their bytes. */
  shardsRepaired: number;
  shardsRepairedBytes: number;
}

/**
 * Coded blocks by their healthy shards (held by placed members that answered): `full` at K+M,
 * `atThreshold` at K + repairThreshold or fewer but still readable (repaired), `unreadable` under K;
 * the rest are between (short, not yet at the repair line).
 */
export interface ShardCounts {
  blocks: number;
  full: number;
  atThreshold: number;
  unreadable: number;
}

export class Repair {
  readonly #ctx: ReplicationContext;
  readonly #host: ReplicationHost;
  readonly #shelf: Shelf;
  readonly #db: OuroDB | undefined;
  readonly #config: ReplicationConfig;
  readonly #signal: AbortSignal;
  readonly #holders: Holders;
  readonly #transfers: Transfers;
  readonly #shards: Shards;
  readonly #deletion: RetiredBlocks;
  /** block-have's checks (shared) against surplus removals (exclusive): see onHave. */
  readonly #haveLock = new SharedLock();
  readonly #progress: PassProgress = { passes: 0, running: false, lastPassAt: null, checked: 0, underReplicated: 0, pushed: 0, pushedBytes: 0, removed: 0, verified: 0, corrupt: 0, unsettled: 0, shardHealth: { blocks: 0, full: 0, atThreshold: 0, unreadable: 0 }, shardsRepaired: 0, shardsRepairedBytes: 0, staleShards: 0 };
  #indexing: Promise<unknown> | undefined;
  #drain: DrainProgress | null = null;
  #timer: NodeJS.Timeout | undefined;
  #pass: Promise<void> | undefined;
  #again = false;
  /** The next pass scrubs (set by the repair timer and by operators, see kick). */
  #scrubDue = false;
  #scrubCursor = '';
  #shardScrubCursor = '';

  constructor(ctx: ReplicationContext, holders: Holders, transfers: Transfers, shards: Shards, deletion: RetiredBlocks) {
    this.#shards = shards;
    this.#ctx = ctx;
    this.#host = ctx.host;
    this.#shelf = ctx.shelf;
    this.#db = ctx.db;
    this.#config = ctx.config;
    this.#signal = ctx.signal;
    this.#holders = holders;
    this.#transfers = transfers;
    this.#deletion = deletion;
  }

  get progress(): PassProgress {
    return { ...this.#progress, shardHealth: { ...this.#progress.shardHealth } };
  }

  /** Progress of this node's drain; null when it is not draining. */
  get drainProgress(): DrainProgress | null {
    return this.#drain && { ...this.#drain };
  }

  /** The pass running now, if one is (stop waits for it). */
  get passing(): Promise<void> | undefined {
    return this.#pass;
  }

  /** Starts the repair timer, and a first pass that scrubs. */
  startLoop(): void {
    this.#timer = setInterval(() => this.kick({ scrub: true }), this.#config.repairIntervalMs);
    this.#timer.unref();
    this.kick({ scrub: true });
  }

  /** Stops the repair timer (the stop signal ends the pass running). */
  stopLoop(): void {
    clearInterval(this.#timer);
  }

  // ------------------------------------------------------------------ passes

  /**
   * Starts a repair pass now (or right after the one running). `scrub`: the pass also scrubs
   * held blocks. Only the repair timer and an operator's request scrub: the passes kicked by
   * seals, waits for replicas and membership changes would otherwise read back the very block
   * being pushed, competing with the push for disk and CPU.
   */
  kick(options: { scrub?: boolean } = {}): void {
    if (this.#signal.aborted) return;
    if (options.scrub) this.#scrubDue = true;
    if (this.#pass) {
      this.#again = true;
      return;
    }
    this.#pass = this.#runPass()
      .catch((err: unknown) => this.#host.log.warn({ event: 'repair-failed', err: errorText(err) }, 'repair pass failed'))
      .finally(() => {
        this.#pass = undefined;
        if (this.#again) {
          this.#again = false;
          this.kick();
        }
      });
  }

  /**
   * Waits for the pass running now, and for one more if one is due (the pass after it, which
   * starts before the first one's promise settles). No more: when passes take longer than the
   * repair interval the timer's kicks keep one due at all times, and waiting until none runs
   * never ended (POST /replication/repair answered nothing for minutes after a partition).
   */
  async idle(): Promise<void> {
    for (let n = 0; n < 2 && this.#pass; n++) await this.#pass;
  }

  async #runPass(): Promise<void> {
    const p = this.#progress;
    p.running = true;
    const pass = { checked: 0, under: 0, unsettled: 0, shards: { blocks: 0, full: 0, atThreshold: 0, unreadable: 0 } };
    try {
      if (this.#scrubDue) {
        this.#scrubDue = false;
        await this.#scrub();
        await this.#copyDescriptor();
      }
      if (this.#db) await this.indexOnce();
      if (this.#db) await this.#deletion.deleteRetired();
      let batch: HeldBlock[] = [];
      const flushBatch = async () => {
        const r = await this.#repairBatch(batch, pass.shards);
        pass.checked += batch.length;
        pass.under += r.under;
        pass.unsettled += r.unsettled;
        batch = [];
      };
      for await (const b of this.#shelf.list()) {
        if (this.#signal.aborted) return;
        batch.push(b);
        if (batch.length >= HAVE_BATCH) await flushBatch();
      }
      if (batch.length > 0) await flushBatch();
      // Coded blocks held here as shards only, whose writer may be lost: rebuilt from K shards.
      const ec = this.#host.ecPolicy ?? null;
      if (ec) {
        const health = await this.#shards.repairFromShards(ec, this.#config.repairThreshold, (n) => this.#transfers.repairBudget(n));
        for (const h of health.values()) {
          const r = this.#countHealth(h, pass.shards);
          if (r.under) pass.under++;
          if (r.unsettled) pass.unsettled++;
        }
      }
      // Shards held here that are no longer placed here (a drain, a join above this node): they
      // count as unsettled until the placement holds every shard without them.
      const shardsLeft = await this.#shards.dropSurplus();
      pass.unsettled += shardsLeft.left + shardsLeft.stale;
      p.staleShards = shardsLeft.stale;
      p.passes++;
      p.lastPassAt = Date.now();
      p.checked = pass.checked;
      p.underReplicated = pass.under;
      p.unsettled = pass.unsettled;
      p.shardHealth = pass.shards;
    } finally {
      p.running = false;
    }
  }

  /**
   * The block moves of a drain (Node.drain has put the drain certificate in the member list, so
   * this node is no candidate any more): repair passes until one finds every block held here
   * held by every member of its placement, with none being received. Rejects when the
   * replicator stops (a restart resumes the drain).
   */
  async drain(): Promise<void> {
    const d = (this.#drain ??= { startedAt: Date.now(), held: 0, unsettled: 0, passes: 0, done: false });
    for (;;) {
      this.#signal.throwIfAborted();
      const before = this.#progress.passes;
      this.kick();
      await this.idle();
      if (this.#progress.passes > before) {
        d.passes++;
        d.held = this.#progress.checked;
        d.unsettled = this.#progress.unsettled;
        if (d.unsettled === 0 && this.#transfers.receiving === 0 && !this.#holders.candidates().includes(this.#host.peerId)) {
          d.done = true;
          return;
        }
      }
      await sleep(this.#config.repairIntervalMs, undefined, { signal: this.#signal });
    }
  }

  /**
   * Verifies held blocks against their ids (every byte: structure, footer, each entry's hash),
   * up to SCRUB_BYTES_PER_PASS per pass, going round from where the last pass stopped. A block
   * that fails is moved to `quarantine/` beside it (kept for inspection, no longer served or
   * counted as held), so the repair passes copy a good one back from another holder.
   */
  async #scrub(): Promise<void> {
    // Shards first (a share of the budget), so a node holding many whole blocks still gets round
    // its shards; they are verified against their manifests, not their block's id.
    const shards = await this.#shards.scrub(SCRUB_BYTES_PER_PASS / 4, this.#shardScrubCursor);
    this.#shardScrubCursor = shards.last;
    this.#progress.verified += shards.verified;
    this.#progress.corrupt += shards.corrupt;
    let budget = SCRUB_BYTES_PER_PASS;
    const blocks = await heldBlocks(this.#shelf);
    blocks.sort((x, y) => (x.id < y.id ? -1 : 1));
    const start = blocks.findIndex((b) => b.id > this.#scrubCursor);
    const order = start < 0 ? blocks : [...blocks.slice(start), ...blocks.slice(0, start)];
    for (const b of order) {
      if (budget <= 0 || this.#signal.aborted) return;
      budget -= b.size;
      this.#scrubCursor = b.id;
      try {
        await verifyBlockFile(nodeVfs, this.#shelf.path(b.id), blockIdBytes(b.id));
        this.#progress.verified++;
      } catch (err) {
        if (!(err instanceof CorruptionError) && (err as { cause?: { code?: string } }).cause?.code === 'ENOENT') continue;
        this.#progress.corrupt++;
        this.#host.log.error({ event: 'replica-corrupt', id: b.id, err: err instanceof Error ? err.message : String(err) }, 'a held block failed verification; quarantined, to be copied back from another holder');
        await this.#shelf.quarantine(b.id);
      }
    }
  }

  /**
   * One batch of held blocks: which placed members lack each, push to them, drop surplus copies.
   * Returns how many were below placement at the start, and how many are still not held by every
   * placed member (this one aside) at the end.
   */
  async #repairBatch(all: HeldBlock[], counts: ShardCounts): Promise<{ under: number; unsettled: number }> {
    const self = this.#host.peerId;
    // At ec K+M a block from the small-block line up is protected by its shards: no whole copy is
    // placed anywhere (the writer keeps its own, which is not removable), so those blocks go to
    // the shard repair, and only the blocks below the line are replicated by the factor.
    const ec = this.#host.ecPolicy ?? null;
    const coded = ec ? all.filter((b) => this.#holders.codedAs(b.size) !== null) : [];
    const blocks = coded.length > 0 ? all.filter((b) => !coded.includes(b)) : all;
    const shardPass = coded.length > 0 ? await this.#repairCoded(coded, ec!, counts) : { under: 0, unsettled: 0 };
    const placements = new Map(blocks.map((b) => [b.id, this.#holders.placement(b.id)]));
    const holders = new Map<string, Set<string>>(blocks.map((b) => [b.id, new Set([self])]));
    const asks = new Map<string, string[]>();
    for (const [id, placed] of placements) {
      for (const peer of placed) {
        if (peer === self) continue;
        let ids = asks.get(peer);
        if (!ids) asks.set(peer, (ids = []));
        ids.push(id);
      }
    }
    const unreachable = new Set<string>();
    await Promise.all(
      [...asks].map(async ([peer, ids]) => {
        try {
          const askedAt = performance.now();
          const r = (await this.#host.request(peer, 'block-have', { v: PROTOCOL_VERSION, ids, list: this.#host.memberList() }, this.#ctx.smallRequest())) as { have?: unknown };
          const have = r?.have;
          if (!Array.isArray(have) || have.length !== ids.length) throw new ProtocolError('malformed block-have reply');
          ids.forEach((id, i) => {
            if (have[i] === true) {
              holders.get(id)!.add(peer);
              this.#holders.confirm(id, peer);
            } else {
              this.#holders.unconfirm(id, peer, askedAt);
            }
          });
        } catch (err) {
          unreachable.add(peer);
          this.#host.log.debug({ event: 'have-failed', peer, err: errorText(err) }, 'block-have failed');
        }
      }),
    );
    let under = 0;
    let unsettled = 0;
    for (const b of blocks) {
      if (this.#signal.aborted) break;
      const placed = placements.get(b.id)!;
      const held = holders.get(b.id)!;
      const missing = placed.filter((p) => p !== self && !held.has(p) && !unreachable.has(p));
      if (missing.length > 0 || placed.some((p) => unreachable.has(p))) under++;
      for (const peer of missing) {
        try {
          if (await this.#transfers.pushTo(peer, b.id, b.size, true)) {
            held.add(peer);
            this.#progress.pushed++;
            this.#progress.pushedBytes += b.size;
            this.#host.log.info({ event: 'block-repaired', id: b.id, to: peer, size: b.size }, 'block copied to its placement');
          }
        } catch (err) {
          this.#ctx.failed('repair', peer, b.id, err);
        }
      }
      if (!placed.every((p) => p === self || held.has(p))) unsettled++;
      else if (!placed.includes(self)) await this.#dropIfSurplus(b.id, placed, held);
    }
    return { under: under + shardPass.under, unsettled: unsettled + shardPass.unsettled };
  }

  /**
   * The coded blocks of a batch, held whole here: their shards repaired (Shards.repairWhole), then
   * a whole copy that is not the writer's (a keyed member's, adopted when it indexed the block)
   * removed once every shard is back on its placement.
   */
  async #repairCoded(blocks: HeldBlock[], ec: { k: number; m: number }, counts: ShardCounts): Promise<{ under: number; unsettled: number }> {
    const threshold = this.#config.repairThreshold;
    const health = await this.#shards.repairWhole(blocks, ec, threshold, (n) => this.#transfers.repairBudget(n));
    let under = 0;
    let unsettled = 0;
    for (const [id, h] of health) {
      const r = this.#countHealth(h, counts);
      if (r.under) under++;
      if (r.unsettled) unsettled++;
      else if (await this.#shelf.removable(id)) {
        this.#holders.removedSurplus(id);
        await this.#shelf.remove(id);
        this.#progress.removed++;
        this.#host.log.info({ event: 'surplus-removed', id, shards: h.after }, 'whole copy of a coded block removed: its shards are complete');
      }
    }
    return { under, unsettled };
  }

  /**
   * Counts one coded block's health from a repair pass's look at it (into `counts` and the
   * progress): whether it was short at the start (`under`), and still short or not settled at the
   * end (`unsettled`).
   */
  #countHealth(h: ShardHealth, counts: ShardCounts): { under: boolean; unsettled: boolean } {
    counts.blocks++;
    if (h.before >= h.k + h.m) counts.full++;
    else if (h.before < h.k) counts.unreadable++;
    else if (h.before <= h.k + this.#config.repairThreshold) counts.atThreshold++;
    this.#progress.shardsRepaired += h.pushed;
    this.#progress.shardsRepairedBytes += h.pushedBytes;
    return { under: h.before < h.k + h.m || !h.reachable, unsettled: h.after < h.k + h.m || !h.reachable };
  }

  // ------------------------------------------------------------------ surplus copies

  /**
   * Asks each of `peers` not yet in `held` whether it holds block `id`; adds those that do. A
   * member not seen alive is not asked (it stays unconfirmed): waiting out a request's time limit
   * for every surplus copy would stall repair passes while a member is away.
   */
  async #confirmHolders(id: string, peers: string[], held: Set<string>): Promise<void> {
    const alive = new Set(this.#host.memberViews().filter((m) => m.self || m.state === 'alive').map((m) => m.peerId));
    // Asked at once: one after the other, each round trip waited for the last (see INDEX_AT_ONCE).
    const ask = peers.filter((peer) => !held.has(peer) && alive.has(peer));
    const answers = await Promise.all(ask.map((peer) => this.#host.request(peer, 'block-have', { v: PROTOCOL_VERSION, ids: [id], list: this.#host.memberList() }, this.#ctx.smallRequest()).catch(() => null) as Promise<{ have?: unknown[] } | null>));
    ask.forEach((peer, i) => {
      if (answers[i]?.have?.[0] === true) held.add(peer);
    });
  }

  /** Removes this node's copy of a block placed elsewhere once every placed member holds it. */
  async #dropIfSurplus(id: string, placed: string[], known?: Set<string>): Promise<void> {
    const self = this.#host.peerId;
    if (placed.length === 0 || placed.includes(self) || placed.length < Math.min(this.#host.replicationFactor, this.#holders.candidates().length)) return;
    if (!(await this.#shelf.removable(id))) return;
    const held = known ?? new Set<string>();
    await this.#confirmHolders(id, placed, held);
    if (!placed.every((p) => held.has(p))) return;
    const firm = this.#holders.firmPlacement(id);
    if (firm.includes(self)) return;
    await this.#confirmHolders(id, firm, held);
    // The list may have changed while we asked (a drain, a join): decide on the placements as they
    // are now, where no block-have check can run between the decision and the delete (see onHave).
    const removed = await this.#haveLock.exclusive(async () => {
      const now = this.#holders.placement(id);
      const firmNow = this.#holders.firmPlacement(id);
      if (now.includes(self) || firmNow.includes(self) || now.length < Math.min(this.#host.replicationFactor, this.#holders.candidates().length)) return null;
      if (!now.every((p) => held.has(p)) || !firmNow.every((p) => held.has(p))) return null;
      this.#holders.removedSurplus(id);
      await this.#shelf.remove(id);
      return now;
    });
    if (!removed) return;
    this.#progress.removed++;
    this.#host.log.info({ event: 'surplus-removed', id, placed: removed }, 'surplus copy removed');
  }

  /**
   * Which of `ids` this node holds. A "yes" may let the asker drop its own copy, so two rules keep
   * two holders from each dropping theirs on the strength of the other's (a member dropping a
   * surplus copy under an old list while a drainer, under the new one, counts that copy):
   * the asker's list is merged before the checks, and a removal (its placement check and the
   * delete) never overlaps the checks. So a removal either ends before the checks (a "no") or
   * starts after them, deciding on a list at least as new as the asker's.
   */
  async onHave(m: unknown, peer: string): Promise<{ have: boolean[] }> {
    const q = m as { v?: unknown; ids?: unknown; list?: unknown } | null;
    const ids = q?.ids;
    if (q?.v !== PROTOCOL_VERSION || !Array.isArray(ids) || ids.length > HAVE_BATCH * 4) throw new ProtocolError('malformed block-have');
    if (q.list !== undefined) await this.#host.learnList(q.list, peer);
    const have = await this.#haveLock.shared(() => Promise.all(ids.map((id) => (typeof id === 'string' && /^[0-9a-f]{64}$/.test(id) ? this.#shelf.has(id) : false))));
    return { have };
  }

  // ------------------------------------------------------------------ indexing what the cluster holds

  /**
   * Rebuilds this keyed member's database from the cluster (`ouro restore`): every block any
   * live member holds is fetched, verified and adopted. Resolves with the counts once a full
   * round over the members found nothing new; throws if a block could not be had.
   */
  async restore(): Promise<{ blocks: number; adopted: number }> {
    if (!this.#db) throw new BadArgumentError('restore needs the database (start the node with --database and the key)');
    let adopted = 0;
    for (;;) {
      const round = await this.#indexFromCluster();
      adopted += round.adopted;
      if (round.failed > 0) throw new OuroError('OURO_NOT_FOUND', `${round.failed} blocks could not be fetched from the cluster; run restore again once their holders are back`);
      if (round.adopted === 0) break;
    }
    let blocks = 0;
    for await (const _ of this.#db.blocks()) blocks++;
    return { blocks, adopted };
  }

  /** A keyed member learns every block the others hold and indexes the ones it does not know. */
  async #indexFromCluster(): Promise<{ adopted: number; failed: number }> {
    const db = this.#db!;
    const round = { adopted: 0, failed: 0 };
    for (const m of this.#host.memberViews()) {
      // `unknown` too: a restore runs right after its node starts, before any member has answered
      // a heartbeat; a member that is down fails its request and is skipped.
      if (m.self || m.status !== 'member' || (m.state !== 'alive' && m.state !== 'unknown')) continue;
      let after = '';
      for (;;) {
        if (this.#signal.aborted) return round;
        let page: { blocks: HeldBlock[]; done: boolean };
        try {
          page = (await this.#host.request(m.peerId, 'block-list', { v: PROTOCOL_VERSION, after, limit: LIST_PAGE }, this.#ctx.smallRequest())) as typeof page;
        } catch (err) {
          // A warning: nothing that member holds is indexed here until a later pass lists it
          // (a keyed member outside a block's placement learns of it from these lists alone,
          // once the writer's announce is missed), and only members seen alive are asked.
          if (!this.#signal.aborted) this.#host.log.warn({ event: 'list-failed', peer: m.peerId, err: errorText(err) }, 'block-list failed: its blocks are not indexed this pass');
          break;
        }
        // INDEX_AT_ONCE blocks at a time: one at a time, a keyed member outside the placement of
        // the blocks the other side of a healed partition wrote took 1-6 s per block on a loaded
        // machine (a fetch, the adoption, the block-have round trips of the surplus check), and
        // a minute after the heal had not reached the ones a reader asked for (test/partition.test.ts).
        const unknown = page.blocks.filter((b) => typeof b?.id === 'string' && /^[0-9a-f]{64}$/.test(b.id) && !db.block(b.id) && db.tombstone(b.id) === undefined);
        let next = 0;
        const worker = async () => {
          while (next < unknown.length && !this.#signal.aborted) {
            const id = unknown[next++]!.id;
            try {
              await this.#index(id);
              round.adopted++;
            } catch (err) {
              round.failed++;
              this.#ctx.failed('index', m.peerId, id, err);
            }
          }
        };
        await Promise.all(Array.from({ length: Math.min(INDEX_AT_ONCE, unknown.length) }, worker));
        if (page.done || page.blocks.length === 0) break;
        after = page.blocks[page.blocks.length - 1]!.id;
      }
    }
    return round;
  }

  /** #indexFromCluster, shared by callers that come while one runs. */
  indexOnce(): Promise<unknown> {
    this.#indexing ??= this.#indexFromCluster().finally(() => (this.#indexing = undefined));
    return this.#indexing;
  }

  async onList(m: unknown): Promise<{ blocks: HeldBlock[]; done: boolean }> {
    const q = m as { v?: unknown; after?: unknown; limit?: unknown } | null;
    if (q === null || typeof q !== 'object' || q.v !== PROTOCOL_VERSION) throw new ProtocolError('malformed block-list');
    const after = typeof q.after === 'string' ? q.after : '';
    const limit = Math.min(LIST_PAGE, Number.isSafeInteger(q.limit) ? (q.limit as number) : LIST_PAGE);
    const blocks: HeldBlock[] = [];
    for await (const b of this.#shelf.list(after)) {
      if (blocks.length === limit) return { blocks, done: false };
      blocks.push(b);
    }
    return { blocks, done: true };
  }

  onAnnounce(m: unknown, peer: string): Record<string, never> {
    const blocks = (m as { blocks?: unknown } | null)?.blocks;
    if ((m as { v?: unknown } | null)?.v !== PROTOCOL_VERSION || !Array.isArray(blocks)) throw new ProtocolError('malformed block-announce');
    // Only a member with the key indexes blocks it is not placed on.
    if (this.#db) {
      for (const b of blocks as Array<{ id?: unknown }>) {
        if (typeof b?.id !== 'string' || !/^[0-9a-f]{64}$/.test(b.id) || this.#db.block(b.id) || this.#db.tombstone(b.id) !== undefined) continue;
        this.#ctx.track(this.#index(b.id)).catch((err: unknown) => this.#ctx.failed('index', peer, b.id as string, err));
      }
    }
    return {};
  }

  /** Fetches and adopts a block this keyed member does not know, then drops the file if it is not placed here. */
  async #index(id: string): Promise<void> {
    if (!this.#db || this.#db.block(id) || this.#db.tombstone(id) !== undefined) return;
    await this.#transfers.fetchBlock(id);
    await this.#dropIfSurplus(id, this.#holders.placement(id));
  }

  async onDescriptor(): Promise<{ descriptor: string | null }> {
    const file = this.#db ? `${this.#db.dir}/OURODB.json` : this.#shelf.descriptorCopy();
    if (file === undefined) return { descriptor: null };
    return { descriptor: await fs.promises.readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? null : Promise.reject(err))) };
  }

  /**
   * On a keyless member, keeps a copy of the cluster's database descriptor (OURODB.json: the
   * database id and its key slots, nothing readable without the key), taken from the first live
   * member that has one. `ouro node join --database` takes the descriptor from the member it
   * joins through, so without these copies a cluster whose keyed members all lost their disks
   * could not be restored (docs/operations.md, "Restoring from the cluster"). Run by the timed
   * passes only, so it costs one small request per repair interval; a copy is rewritten when the
   * member asked has a different one (a key slot added), and a joining node proves the copy
   * it gets by opening the database with its key.
   */
  async #copyDescriptor(): Promise<void> {
    const file = this.#shelf.descriptorCopy();
    if (this.#db || file === undefined) return;
    for (const m of this.#host.memberViews()) {
      if (m.self || m.status !== 'member' || m.state !== 'alive') continue;
      const r = (await this.#host.request(m.peerId, 'descriptor', { v: PROTOCOL_VERSION }, { signal: this.#signal }).catch(() => undefined)) as { descriptor?: unknown } | undefined;
      if (typeof r?.descriptor !== 'string' || !isDescriptor(r.descriptor)) continue;
      const current = await fs.promises.readFile(file, 'utf8').catch(() => null);
      if (current !== r.descriptor) {
        await ensureDir(nodeVfs, path.dirname(file));
        await writeFileAtomic(nodeVfs, file, r.descriptor);
      }
      return;
    }
  }
}

/** Whether `text` is a database descriptor (OURODB.json), as far as a keyless member can tell. */
function isDescriptor(text: string): boolean {
  try {
    return (JSON.parse(text) as { format?: unknown } | null)?.format === 'ourodb';
  } catch {
    return false;
  }
}
