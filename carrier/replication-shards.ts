/**
 * Erasure-coded blocks between members (docs/node.md, "Redundancy"; docs/FORMAT.md, "Shard
 * transfers"): at ec K+M, a block from the small-block line up is stored as K data + M parity
 * shards, shard i on the i-th member of the block's ranking (placement.ts shardSet).
 *
 *   /ouro/shard-put/1  stream  -> {v, id, index, manifest}  -> shardSize raw bytes
 *                              <- reply {stored} once the shard is durable (verified first)
 *   /ouro/shard-get/1  stream  -> {v, id, index}  <- reply {manifest, size}  <- size raw bytes
 *
 * Writer: after the seal, push() encodes the block and sends each shard with the block's manifest
 * to its member (its own shard it keeps itself); Holders counts each shard acknowledged, which is
 * what flush({ shards }) waits for. The writer keeps its whole block as well (docs/node.md).
 * Receiver: onPut() keeps a shard only once it matches the manifest that came with it, and the
 * manifest only once it is well formed and names the block pushed (checkShardPush).
 * Reader: fetch() gathers the K data shards (no decoding when all verify) and, when one is
 * missing or fails its hash, the parity shards too, decoding from any K verified ones (a degraded
 * read, counted in ouro_ec_degraded_reads_total). The block it returns is checked against its id
 * by the shelf that keeps it, so a member lying with a manifest and shards that match each other
 * still cannot pass off another block.
 *
 *   /ouro/shard-have/1 request -> {v, ids}                <- {have: [{k, m, shards} | null]}
 *
 * Repair (repairWhole, run by Repair's passes on the coded blocks held whole here): counts each
 * block's healthy shards on its current placement and rebuilds the missing ones at K +
 * repairThreshold or fewer. repairFromShards does the same for the blocks held here as shards
 * only, when no live member holds them whole (the writer lost): one member per block rebuilds it
 * from K verified shards, checked against the block id. dropSurplus removes shards no longer placed here once the placement
 * holds them all (drain, rebalance) and shards of an old policy once the block's new form is
 * complete; scrub verifies held shards against their manifest. Deletion removes
 * shards through the shelf (ShardFiles.removeAll).
 *
 * Re-coding to another K+M: a block's shards at the policy's K+M are asked for by that K+M
 * (shard-have, shard-get `{k, m}`), so a whole-copy holder's repairWhole finds none of a block
 * coded at an old K+M and pushes the new set, which members keep beside the old one (ShardFiles'
 * second set); dropSurplus removes the old set once the new one is complete on its placement;
 * fetch reads the new set first, else each holder's default set.
 *
 * Owns only the codec, loaded once. Shard holders are Holders' (coded, confirmShard); shard files
 * the shelf's (ShardFiles). Nothing about who holds which shard is stored: each pass asks.
 */
import fs from 'node:fs';
import type { Stream } from '@libp2p/interface';
import { verifyBlockFile } from '../blockstore/store.js';
import { CorruptionError, OuroError, ProtocolError, UnavailableError, errorText, ioError } from '../lib/errors.js';
import { nodeVfs } from '../lib/vfs/vfs.js';
import { unwrapReply } from './carrier.js';
import { type ErasureCodec, loadCodec } from './ec/codec.js';
import { type ShardManifest, decodeManifest, encodeManifest, makeManifest, verifyShard } from './ec/manifest.js';
import { encodeFrame } from './frames.js';
import type { EcPolicy } from './membership.js';
import { type Holders, type ReplicationContext, type ReplicationHost, HAVE_BATCH, PROTOCOL_VERSION, onTransferStream, transferSignal } from './replication-core.js';
import { type ShardsHeld, assignMissing, checkShardPush, codingOf, collect, decodeOrUndefined, join, parseHeld, scrubShards } from './replication-shard-rules.js';
import { send } from './send.js';
import { type Coding, blockIdBytes } from './shelf.js';
import { StreamReader } from './stream-reader.js';

export class Shards {
  readonly #ctx: ReplicationContext;
  readonly #host: ReplicationHost;
  readonly #holders: Holders;
  #codec: Promise<ErasureCodec> | undefined;

  constructor(ctx: ReplicationContext, holders: Holders) {
    this.#ctx = ctx;
    this.#host = ctx.host;
    this.#holders = holders;
  }

  #loadCodec(): Promise<ErasureCodec> {
    this.#codec ??= loadCodec();
    return this.#codec;
  }

  #signal(bytes: number): AbortSignal {
    return transferSignal(this.#ctx.signal, this.#host.requestTimeoutMs, bytes);
  }

  /** Runs `fn` on a new `protocol` stream to `peer` (onTransferStream, with this part's time limit, and `also` if given). */
  #exchange<T>(peer: string, protocol: string, what: string, bytes: number, fn: (stream: Stream, reader: StreamReader, signal: AbortSignal) => Promise<T>, also?: AbortSignal): Promise<T> {
    return onTransferStream(this.#host, peer, protocol, what, also ? AbortSignal.any([this.#signal(bytes), also]) : this.#signal(bytes), fn);
  }

  /**
   * A signal that aborts once `peer` turns suspect or dead (checked every 250 ms), for a shard
   * read that other members' shards can stand in for: a holder that went silent mid-read (a
   * partition beginning) would otherwise hold it until the connection's idle limit (10 s).
   * `done` stops the watch.
   */
  #whileHeard(peer: string): { signal: AbortSignal; done: () => void } {
    const ac = new AbortController();
    const timer = setInterval(() => {
      const state = this.#host.memberViews().find((m) => m.peerId === peer)?.state;
      if (state === 'suspect' || state === 'dead') ac.abort(new UnavailableError(`${peer} went silent to heartbeats (${state}) during the read`));
    }, 250);
    timer.unref();
    return { signal: ac.signal, done: () => clearInterval(timer) };
  }

  // ------------------------------------------------------------------ writer side

  /**
   * Block `id` (`size` bytes, sealed here) at `ec`: encodes it and stores shard i on the i-th
   * member of its shard placement, this node's own shard in its own shelf. A shard whose push
   * fails is counted (failures) and left short: the shard wait then does not end by itself.
   */
  async push(id: string, size: number, ec: EcPolicy): Promise<void> {
    this.#holders.coded(id, ec);
    const file = this.#ctx.shelf.path(id);
    const block = await fs.promises.readFile(file).catch((err: unknown) => {
      throw ioError(`read ${file}`, err);
    });
    if (block.length !== size) throw new CorruptionError(`${file} has ${block.length} bytes, not ${size}`, { location: { file } });
    const shards = await (await this.#loadCodec()).encode(block, ec.k, ec.m);
    const manifest = encodeManifest(makeManifest(id, block, shards, ec.k, ec.m));
    const placed = this.#holders.shardPlacement(id, ec);
    await Promise.all(
      placed.map(async (peer, index) => {
        try {
          if (peer === this.#host.peerId) await this.#ctx.shelf.shards.keep(id, index, manifest, shards[index]!);
          else await this.#pushTo(peer, id, index, manifest, shards[index]!);
          this.#holders.confirmShard(id, index, peer);
        } catch (err) {
          this.#ctx.failed('shard-push', peer, `${id}.${index}`, err);
        }
      }),
    );
  }

  #pushTo(peer: string, id: string, index: number, manifest: Uint8Array, shard: Uint8Array): Promise<void> {
    const what = `shard-put ${id}.${index} to ${peer}`;
    return this.#exchange(peer, 'shard-put', what, shard.length, async (stream, reader, signal) => {
      await send(stream, encodeFrame({ v: PROTOCOL_VERSION, id, index, manifest }, this.#host.maxFrameBytes), signal);
      await send(stream, shard, signal);
      await stream.close({ signal });
      const done = unwrapReply(await reader.frame(this.#host.maxFrameBytes), what) as { stored?: unknown };
      if (typeof done.stored !== 'boolean') throw new ProtocolError(`${what}: malformed reply`);
      this.#host.metrics.replicated('out', shard.length);
    });
  }

  // ------------------------------------------------------------------ receiver side

  async onPut(stream: Stream, peer: string): Promise<void> {
    const reader = new StreamReader(stream);
    const max = this.#host.maxFrameBytes;
    try {
      const head = (await reader.frame(max)) as { v?: unknown; id?: unknown; index?: unknown; manifest?: unknown } | null;
      if (head === null || typeof head !== 'object' || head.v !== PROTOCOL_VERSION || typeof head.id !== 'string' || !Number.isSafeInteger(head.index) || !(head.manifest instanceof Uint8Array)) {
        throw new ProtocolError(`malformed shard-put from ${peer}`);
      }
      blockIdBytes(head.id);
      // The manifest says how many bytes follow: checked before they are read.
      const manifest = decodeManifest(head.manifest);
      const shard = await collect(reader.bytes(manifest.shardSize), manifest.shardSize);
      checkShardPush(head.id, head.index as number, head.manifest, shard);
      const stored = await this.#ctx.shelf.shards.keep(head.id, head.index as number, head.manifest, shard);
      this.#holders.keptShard(head.id, head.index as number);
      this.#host.metrics.replicated('in', shard.length);
      await send(stream, encodeFrame({ ok: true, body: { stored } }, max), this.#ctx.signal);
      await stream.close();
    } catch (err) {
      this.#host.log.warn({ event: 'shard-refused', peer, err: errorText(err) }, 'shard push refused');
      await send(stream, encodeFrame({ ok: false, code: err instanceof OuroError ? err.code : 'OURO_IO_ERROR', message: err instanceof Error ? err.message : String(err) }, max), this.#ctx.signal).catch(() => {});
      await stream.close().catch(() => {});
    }
  }

  async onGet(stream: Stream): Promise<void> {
    const reader = new StreamReader(stream);
    const max = this.#host.maxFrameBytes;
    const m = (await reader.frame(max)) as { v?: unknown; id?: unknown; index?: unknown } | null;
    if (m === null || typeof m !== 'object' || m.v !== PROTOCOL_VERSION || typeof m.id !== 'string' || !Number.isSafeInteger(m.index)) throw new ProtocolError('malformed shard-get');
    blockIdBytes(m.id);
    const shelf = this.#ctx.shelf.shards;
    const coding = codingOf(m);
    const [manifest, shard] = await Promise.all([shelf.manifest(m.id, coding), shelf.read(m.id, m.index as number, coding)]);
    if (!manifest || !shard) {
      await send(stream, encodeFrame({ ok: false, code: 'OURO_NOT_FOUND', message: `shard ${m.id}.${String(m.index)} is not held here` }, max), this.#ctx.signal);
      await stream.close();
      return;
    }
    const signal = this.#signal(shard.length);
    await send(stream, encodeFrame({ ok: true, body: { manifest, size: shard.length } }, max), signal);
    await send(stream, shard, signal);
    await stream.close({ signal });
  }

  /**
   * shard-have: for each of `ids`, the K and M of the manifest held here and the indexes of the
   * shards held here, or null when none is: of the set of the K+M asked for (`k`, `m`), else of
   * the block's default set. What a repairer counts a block's healthy shards by.
   */
  async onHave(m: unknown): Promise<{ have: Array<ShardsHeld | null> }> {
    const q = m as { v?: unknown; ids?: unknown } | null;
    const ids = q?.ids;
    if (q?.v !== PROTOCOL_VERSION || !Array.isArray(ids) || ids.length > HAVE_BATCH * 4) throw new ProtocolError('malformed shard-have');
    const coding = codingOf(q);
    return { have: await Promise.all(ids.map((id) => (typeof id === 'string' && /^[0-9a-f]{64}$/.test(id) ? this.#heldHere(id, coding) : null))) };
  }

  async #heldHere(id: string, coding: Coding | undefined): Promise<ShardsHeld | null> {
    const shelf = this.#ctx.shelf.shards;
    const [bytes, shards] = await Promise.all([shelf.manifest(id, coding), shelf.held(id, coding)]);
    if (!bytes || shards.length === 0) return null;
    const manifest = decodeManifest(bytes);
    return { k: manifest.k, m: manifest.m, shards: shards.filter((i) => i < manifest.k + manifest.m) };
  }

  // ------------------------------------------------------------------ repair

  /**
   * One repair pass over `blocks`, coded blocks held whole here (the writer's copy, or a keyed
   * member's before it drops it): asks each member of each block's shard placement which shards
   * it holds (shard-have), counts the block's healthy shards (the distinct indexes held by placed
   * members that answered; a shard on a member no longer placed does not count), and when they
   * are K + `threshold` or fewer, encodes the block again and pushes each missing shard to a
   * placed member holding none of the block's shards (with fewer placeable members than K+M,
   * to the one holding fewest: a smaller cluster still gets every shard back, some members then
   * holding two). Nothing is stored about who holds what, so a pass after a restart simply finds
   * the same shortfall again; a push that failed is retried by the next pass. Of several members
   * holding a short block whole, only the one with the smallest peer id pushes (asked with
   * block-have, for the short blocks only). `take` is the
   * repair rate limit. Returns, per block, its healthy shard count before and after.
   */
  async repairWhole(blocks: Array<{ id: string; size: number }>, ec: EcPolicy, threshold: number, take: (bytes: number) => Promise<void>): Promise<Map<string, ShardHealth>> {
    const placements = new Map(blocks.map((b) => [b.id, this.#holders.shardPlacement(b.id, ec)]));
    // The shards of the policy's K+M only: a block coded under another K+M is re-coded beside
    // its old shards, which stay until the new set is complete (dropSurplus).
    const answers = await this.#askHolders(placements, ec);
    const draining = this.#host.memberViews().some((m) => m.status === 'member' && m.draining);
    const out = new Map<string, ShardHealth>();
    const short = new Map<string, { size: number; targets: Map<number, string>; health: ShardHealth }>();
    for (const b of blocks) {
      if (this.#ctx.signal.aborted) break;
      const placed = placements.get(b.id)!;
      const held = new Map<string, number[]>();
      let foreign = false;
      for (const peer of placed) {
        const a = answers.get(peer);
        if (a === undefined) continue;
        const h = a.get(b.id) ?? null;
        // A member from before re-coding answers with its default set whatever K+M was asked:
        // one of another K+M is left alone there (new shards beside it would mix two codings).
        if (h && (h.k !== ec.k || h.m !== ec.m)) foreign = true;
        held.set(peer, h?.shards ?? []);
      }
      const healthy = new Set([...held.values()].flat());
      const health: ShardHealth = { k: ec.k, m: ec.m, before: healthy.size, after: healthy.size, reachable: held.size === placed.length, pushed: 0, pushedBytes: 0 };
      out.set(b.id, health);
      // The writer's record of who holds which shard starts again at a new K+M (what proofs challenge).
      const was = this.#holders.shardHolders(b.id);
      if ((was === undefined && this.#holders.holdersOf(b.id)) || (was && (was.k !== ec.k || was.m !== ec.m))) this.#holders.coded(b.id, ec);
      for (const i of healthy) this.#holders.confirmShard(b.id, i);
      for (const [peer, indexes] of held) this.#holders.shardsHeldBy(b.id, peer, indexes);
      // A block whose first push is still under way is short only of the shards in flight.
      if (this.#holders.pushing(b.id)) health.reachable = false;
      // While a member drains, every short block is mended at once: the drainer's shards stop
      // counting (it is not placed) and stay until the placement holds all K+M without them, so
      // the threshold would otherwise hold the drain up without protecting anything.
      const line = draining ? ec.k + ec.m - 1 : ec.k + threshold;
      if (foreign || this.#holders.pushing(b.id) || healthy.size >= ec.k + ec.m || healthy.size > line) continue;
      const targets = assignMissing(ec, placed, held);
      if (targets.size > 0) short.set(b.id, { size: b.size, targets, health });
    }
    // Several members may hold a short block whole (the writer; replica holders after a switch
    // to ec; a keyed member before it drops its adopted copy): the one with the smallest peer id
    // among them rebuilds it, the others leave it (they count it all the same).
    const whole = short.size > 0 ? await this.#heldWholeElsewhere([...short.keys()]) : new Map<string, string[]>();
    for (const [id, { size, targets, health }] of short) {
      if (this.#ctx.signal.aborted) break;
      if ((whole.get(id) ?? []).some((peer) => peer < this.#host.peerId)) continue;
      const { shards, manifest } = await this.#encodeHeld(id, size, ec);
      await this.#pushMissing(id, targets, shards, manifest, take, health);
    }
    return out;
  }

  /** Pushes shard `index` of `shards` to each target (this node: its own shelf), counting into `health`. */
  async #pushMissing(id: string, targets: Map<number, string>, shards: Uint8Array[], manifest: Uint8Array, take: (bytes: number) => Promise<void>, health: ShardHealth): Promise<void> {
    const self = this.#host.peerId;
    for (const [index, peer] of targets) {
      if (this.#ctx.signal.aborted) break;
      try {
        await take(shards[index]!.length);
        if (peer === self) {
          await this.#ctx.shelf.shards.keep(id, index, manifest, shards[index]!);
          this.#holders.keptShard(id, index);
        } else await this.#pushTo(peer, id, index, manifest, shards[index]!);
        this.#holders.confirmShard(id, index, peer);
        health.after++;
        health.pushed++;
        health.pushedBytes += shards[index]!.length;
        this.#host.log.info({ event: 'shard-repaired', id, index, to: peer }, 'shard rebuilt on its placement');
      } catch (err) {
        this.#ctx.failed('shard-repair', peer, `${id}.${index}`, err);
      }
    }
  }

  /**
   * One repair pass over the coded blocks this node holds shards of but not whole: the blocks
   * no whole copy may be left of (their writer lost). For each, the placed members are asked
   * which shards they hold (as in repairWhole); a block at K + `threshold` or fewer healthy
   * shards is rebuilt by one member only, the first placed member holding a shard of it (this
   * node when no placed member holds one), and only when no live member holds it whole (that
   * member's repairWhole encodes from its copy, reading nothing back). The rebuilder reads K
   * verified shards (fetch: degraded when it must), checks the block they make against its id
   * (a manifest and shards that agree with each other but are not the block are refused),
   * encodes it again and pushes the missing shards to the placement, like repairWhole. The
   * same member also reports these blocks' health (returned, keyed by block id), so that the
   * cluster's members together count each coded block once: its whole-copy holder, or its
   * rebuilder. Blocks it is not the rebuilder of are left out.
   */
  async repairFromShards(ec: EcPolicy, threshold: number, take: (bytes: number) => Promise<void>): Promise<Map<string, ShardHealth>> {
    const self = this.#host.peerId;
    const files = this.#ctx.shelf.shards;
    const out = new Map<string, ShardHealth>();
    const sizes = new Map<string, number>();
    for (const id of await files.blocks()) {
      const bytes = await files.manifest(id, ec);
      const manifest = bytes && decodeOrUndefined(bytes);
      if (!manifest || (await this.#ctx.shelf.has(id))) continue;
      sizes.set(id, manifest.size);
    }
    if (sizes.size === 0) return out;
    const placements = new Map([...sizes.keys()].map((id) => [id, this.#holders.shardPlacement(id, ec)]));
    const answers = await this.#askHolders(placements, ec);
    const draining = this.#host.memberViews().some((m) => m.status === 'member' && m.draining);
    const mine = new Map<string, { placed: string[]; held: Map<string, number[]>; health: ShardHealth }>();
    for (const [id, placed] of placements) {
      const held = new Map<string, number[]>();
      let foreign = false;
      for (const peer of placed) {
        const a = answers.get(peer);
        if (a === undefined) continue;
        const h = a.get(id) ?? null;
        if (h && (h.k !== ec.k || h.m !== ec.m)) foreign = true;
        held.set(peer, h?.shards ?? []);
      }
      // Shards of another K+M beside these: not this pass's to mend (as in repairWhole).
      if (foreign) continue;
      // One rebuilder per block, by the same rule on every member: the first placed member
      // holding a shard. Members whose views differ may both rebuild; the shards they push are
      // the same bytes to the same places (assignMissing is deterministic from the answers).
      const rebuilder = placed.find((p) => (held.get(p)?.length ?? 0) > 0) ?? self;
      if (rebuilder !== self) continue;
      const healthy = new Set([...held.values()].flat());
      mine.set(id, { placed, held, health: { k: ec.k, m: ec.m, before: healthy.size, after: healthy.size, reachable: held.size === placed.length, pushed: 0, pushedBytes: 0 } });
    }
    if (mine.size === 0) return out;
    // Blocks some live member holds whole are that member's to mend and to count.
    const whole = await this.#heldWholeElsewhere([...mine.keys()]);
    const line = draining ? ec.k + ec.m - 1 : ec.k + threshold;
    for (const [id, { placed, held, health }] of mine) {
      if (this.#ctx.signal.aborted) break;
      if (whole.has(id)) continue;
      out.set(id, health);
      if (health.before >= ec.k + ec.m || health.before > line) continue;
      const targets = assignMissing(ec, placed, held);
      if (targets.size === 0) continue;
      try {
        const { shards, manifest } = await this.#rebuild(id, sizes.get(id)!, ec);
        await this.#pushMissing(id, targets, shards, manifest, take, health);
      } catch (err) {
        this.#ctx.failed('shard-rebuild', self, id, err);
      }
    }
    return out;
  }

  /** Which live members other than this one hold each of `ids` whole (block-have); a member that does not answer holds none. */
  async #heldWholeElsewhere(ids: string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    const peers = this.#host.memberViews().filter((m) => !m.self && m.status === 'member' && m.state === 'alive').map((m) => m.peerId);
    await Promise.all(
      peers.map(async (peer) => {
        for (let i = 0; i < ids.length; i += HAVE_BATCH) {
          const asked = ids.slice(i, i + HAVE_BATCH);
          const r = (await this.#host.request(peer, 'block-have', { v: PROTOCOL_VERSION, ids: asked, list: this.#host.memberList() }, this.#ctx.smallRequest()).catch(() => null)) as { have?: unknown } | null;
          if (Array.isArray(r?.have) && r.have.length === asked.length) asked.forEach((id, j) => (r.have as unknown[])[j] === true && out.set(id, [...(out.get(id) ?? []), peer]));
        }
      }),
    );
    return out;
  }

  /**
   * Block `id` rebuilt from K verified shards (no whole copy at hand), checked against its id, and
   * coded again: its shards and manifest. Throws UnavailableError with fewer than K shards to be
   * had, CorruptionError when the shards make a block that is not `id`.
   */
  async #rebuild(id: string, size: number, ec: EcPolicy): Promise<{ shards: Uint8Array[]; manifest: Uint8Array }> {
    const block = await this.fetch(id, ec);
    if (!block) throw new UnavailableError(`block ${id}: no member answered with its shards`);
    if (block.length !== size) throw new CorruptionError(`block ${id} rebuilt from its shards has ${block.length} bytes, its manifest says ${size}`);
    // The manifest only binds the shards to each other: the block id is what binds them to the
    // block. Checked on a staging file, as a replica checks a block it receives.
    const staging = await this.#ctx.shelf.staging(id);
    try {
      await fs.promises.writeFile(staging, block, { mode: 0o600 }).catch((err: unknown) => {
        throw ioError(`write ${staging}`, err);
      });
      await verifyBlockFile(nodeVfs, staging, blockIdBytes(id));
    } finally {
      await fs.promises.rm(staging, { force: true }).catch(() => {});
    }
    const shards = await (await this.#loadCodec()).encode(block, ec.k, ec.m);
    return { shards, manifest: encodeManifest(makeManifest(id, block, shards, ec.k, ec.m)) };
  }

  /** Every placed member's shard-have answer for the blocks placed on it; a member that did not answer is left out. */
  async #askHolders(placements: Map<string, string[]>, coding?: Coding): Promise<Map<string, Map<string, ShardsHeld | null>>> {
    const asks = new Map<string, string[]>();
    for (const [id, placed] of placements) for (const peer of placed) asks.set(peer, [...(asks.get(peer) ?? []), id]);
    const answers = new Map<string, Map<string, ShardsHeld | null>>();
    await Promise.all(
      [...asks].map(async ([peer, ids]) => {
        try {
          let have: unknown;
          const ask = { v: PROTOCOL_VERSION, ids, ...(coding ? { k: coding.k, m: coding.m } : {}) };
          if (peer === this.#host.peerId) have = (await this.onHave(ask)).have;
          else have = ((await this.#host.request(peer, 'shard-have', ask, this.#ctx.smallRequest())) as { have?: unknown } | null)?.have;
          if (!Array.isArray(have) || have.length !== ids.length) throw new ProtocolError('malformed shard-have reply');
          answers.set(peer, new Map(ids.map((id, i) => [id, parseHeld(have[i])])));
        } catch (err) {
          this.#host.log.debug({ event: 'shard-have-failed', peer, err: errorText(err) }, 'shard-have failed');
        }
      }),
    );
    return answers;
  }

  /** Block `id` held whole here, coded again: the same shards and manifest as at the write (the code is deterministic). */
  async #encodeHeld(id: string, size: number, ec: EcPolicy): Promise<{ shards: Uint8Array[]; manifest: Uint8Array }> {
    const file = this.#ctx.shelf.path(id);
    const block = await fs.promises.readFile(file).catch((err: unknown) => {
      throw ioError(`read ${file}`, err);
    });
    if (block.length !== size) throw new CorruptionError(`${file} has ${block.length} bytes, not ${size}`, { location: { file } });
    const shards = await (await this.#loadCodec()).encode(block, ec.k, ec.m);
    return { shards, manifest: encodeManifest(makeManifest(id, block, shards, ec.k, ec.m)) };
  }

  /**
   * Shards held here of blocks whose current shard placement leaves this node out (it drains, is
   * quarantined, or a member joined above it): removed once the placed members hold all K+M of
   * the block's shards without this node's (a drain never takes a block below what it had), and
   * kept meanwhile, so a read or repair can still use them. Shards held under another K+M than
   * the cluster's policy are left alone. Returns how many blocks' shards are still here though
   * not placed here (a drain waits for none).
   */
  async dropSurplus(): Promise<{ left: number; stale: number }> {
    const ec = this.#host.ecPolicy ?? null;
    const self = this.#host.peerId;
    const files = this.#ctx.shelf.shards;
    const surplus = new Map<string, string[]>();
    const doubled = new Map<string, string[]>();
    const stale: Array<{ id: string; coding: Coding; size: number }> = [];
    for (const id of await files.blocks()) {
      for (const coding of await files.codings(id)) {
        const bytes = await files.manifest(id, coding);
        const manifest = bytes && decodeOrUndefined(bytes);
        if (!manifest) continue;
        if (!ec || coding.k !== ec.k || coding.m !== ec.m) {
          stale.push({ id, coding, size: manifest.size });
          continue;
        }
        const placed = this.#holders.shardPlacement(id, ec);
        if (placed.includes(self)) {
          if ((await files.held(id, ec)).length > 1) doubled.set(id, placed);
          continue;
        }
        if (this.#holders.firmShardPlacement(id, ec).includes(self)) continue;
        surplus.set(id, placed);
      }
    }
    if (doubled.size > 0) await this.#dropDuplicates(doubled, ec!);
    const staleLeft = stale.length > 0 ? await this.#dropStale(stale, ec) : 0;
    if (surplus.size === 0) return { left: 0, stale: staleLeft };
    const answers = await this.#askHolders(surplus, ec!);
    let left = 0;
    for (const [id, placed] of surplus) {
      const healthy = new Set(placed.flatMap((p) => answers.get(p)?.get(id)?.shards ?? []));
      if (healthy.size < ec!.k + ec!.m) {
        left++;
        continue;
      }
      // Marked before the files go, so that a proof answered meanwhile, or after this node is
      // placed on the block again, already sees them removed rather than lost.
      for (const index of await files.held(id, ec!)) this.#holders.removedShard(id, index);
      const removed = await files.removeAll(id, ec!);
      this.#host.log.info({ event: 'surplus-shards-removed', id, shards: removed }, 'shards not placed here removed: the placed members hold all of them');
    }
    return { left, stale: staleLeft };
  }

  /**
   * Blocks placed here of which this node holds more than one shard: repair put a second shard
   * here while the cluster had fewer placeable members than K+M, and the member it stood in for
   * came back (or one joined), holding or being given that index. A shard is removed here once
   * another placed member holds the same index and the placed members together hold all K+M, so
   * the block never drops below K+M; this node keeps at least one. Two members holding the same
   * extra index decide alike from the same answers: the one holding more shards of the block
   * drops it, and between equals the one with the greater peer id, so the index is never dropped
   * by both.
   */
  async #dropDuplicates(blocks: Map<string, string[]>, ec: EcPolicy): Promise<void> {
    const self = this.#host.peerId;
    const answers = await this.#askHolders(blocks, ec);
    for (const [id, placed] of blocks) {
      const held = new Map<string, number[]>();
      for (const peer of placed) {
        const h = answers.get(peer)?.get(id);
        if (h && h.k === ec.k && h.m === ec.m) held.set(peer, h.shards);
      }
      const mine = held.get(self) ?? [];
      if (new Set([...held.values()].flat()).size < ec.k + ec.m) continue;
      let kept = mine.length;
      for (const index of [...mine].reverse()) {
        if (kept <= 1) break;
        const others = [...held].filter(([peer, s]) => peer !== self && s.includes(index));
        // Another placed member holds it and will not drop it: it holds fewer shards than this
        // node, or as many with a smaller peer id (it then leaves the index to this node).
        if (!others.some(([peer, s]) => s.length < kept || (s.length === kept && peer < self))) continue;
        this.#holders.removedShard(id, index);
        await this.#ctx.shelf.shards.remove(id, index, ec);
        kept--;
        this.#host.log.info({ event: 'duplicate-shard-removed', id, index }, 'a second shard of a block removed: another placed member holds the same one');
      }
    }
  }

  /**
   * Shards held here of blocks coded under a K+M the cluster no longer has (`stale`), removed
   * once the block's new form is complete, so that it is never without its old or its new one:
   * at ec K'+M' and above its small-block line, all K'+M' shards of the new coding on its shard
   * placement (the whole-copy holders' repair passes push them: repairWhole); else (back at
   * replicas, or below the new line) whole on every member of its replica placement. Returns how
   * many stale sets are still here.
   */
  async #dropStale(stale: Array<{ id: string; coding: Coding; size: number }>, ec: EcPolicy | null): Promise<number> {
    const self = this.#host.peerId;
    const recoded = stale.filter((s) => ec && this.#holders.codedAs(s.size));
    const whole = stale.filter((s) => !recoded.includes(s));
    const complete = new Set<string>();
    if (recoded.length > 0) {
      const placements = new Map(recoded.map((s) => [s.id, this.#holders.shardPlacement(s.id, ec!)]));
      const answers = await this.#askHolders(placements, ec!);
      for (const [id, placed] of placements) {
        const held = placed.flatMap((p) => {
          const h = answers.get(p)?.get(id);
          return h && h.k === ec!.k && h.m === ec!.m ? h.shards : [];
        });
        if (new Set(held).size >= ec!.k + ec!.m) complete.add(id);
      }
    }
    const placements = new Map(whole.map((s) => [s.id, this.#holders.placement(s.id)]));
    const asks = new Map<string, string[]>();
    for (const [id, placed] of placements) for (const peer of placed) if (peer !== self) asks.set(peer, [...(asks.get(peer) ?? []), id]);
    const holding = new Map<string, Set<string>>();
    await Promise.all(
      [...asks].map(async ([peer, asked]) => {
        const r = (await this.#host.request(peer, 'block-have', { v: PROTOCOL_VERSION, ids: asked, list: this.#host.memberList() }, this.#ctx.smallRequest()).catch(() => null)) as { have?: unknown } | null;
        if (Array.isArray(r?.have) && r.have.length === asked.length) holding.set(peer, new Set(asked.filter((_, i) => (r.have as unknown[])[i] === true)));
      }),
    );
    for (const [id, placed] of placements) {
      const held = await Promise.all(placed.map((p) => (p === self ? this.#ctx.shelf.has(id) : holding.get(p)?.has(id) === true)));
      if (placed.length > 0 && held.every(Boolean)) complete.add(id);
    }
    let left = 0;
    for (const { id, coding } of stale) {
      if (!complete.has(id)) {
        left++;
        continue;
      }
      const removed = await this.#ctx.shelf.shards.removeAll(id, coding);
      this.#host.log.info({ event: 'stale-shards-removed', id, k: coding.k, m: coding.m, shards: removed }, 'shards of an old coding removed: the block is complete in its new form');
    }
    return left;
  }

  // ------------------------------------------------------------------ scrub

  /** Verifies about `budget` bytes of the shards held here, from the block after `after` (scrubShards). */
  scrub(budget: number, after: string): Promise<{ verified: number; corrupt: number; last: string }> {
    return scrubShards(this.#ctx.shelf.shards, this.#host.log, this.#ctx.signal, budget, after);
  }

  // ------------------------------------------------------------------ reader side

  /**
   * fetch()'s last resort: the shards of block `id` wherever the members of its placements (the
   * firm one, and the one over live candidates that repair fills), but those in `skip` (dead or
   * suspect), say they hold them; each verified against the manifest like the rest.
   */
  async #gatherMoved(id: string, ec: EcPolicy, coding: Coding | undefined, skip: Set<string>, verified: Map<number, Uint8Array>, problems: string[], first: (m: ShardManifest) => ShardManifest): Promise<void> {
    const peers = [...new Set([...this.#holders.firmShardPlacement(id, ec), ...this.#holders.shardPlacement(id, ec)])].filter((p) => !skip.has(p));
    const answers = await this.#askHolders(new Map([[id, peers]]), coding);
    for (const [peer, a] of answers) {
      for (const index of a.get(id)?.shards ?? []) {
        if (verified.has(index)) continue;
        const watch = this.#whileHeard(peer);
        try {
          const got = await this.#get(peer, id, index, watch.signal, coding);
          if (!got) continue;
          const decoded = decodeManifest(got.manifest);
          if (decoded.block !== id) throw new CorruptionError(`the manifest from ${peer} names block ${decoded.block}`);
          const manifest = first(decoded);
          verifyShard(manifest, index, got.shard);
          verified.set(index, got.shard);
        } catch (err) {
          problems.push(`${index} on ${peer}: ${errorText(watch.signal.aborted ? watch.signal.reason : err)}`);
        } finally {
          watch.done();
        }
      }
    }
  }

  /** Shard `index` of block `id` (of its `coding` set, else its default one) with the manifest it came with, from `peer` (this node: its shelf); undefined if not held there. */
  async #get(peer: string, id: string, index: number, also?: AbortSignal, coding?: Coding): Promise<{ manifest: Uint8Array; shard: Uint8Array } | undefined> {
    if (peer === this.#host.peerId) {
      const shelf = this.#ctx.shelf.shards;
      const [manifest, shard] = await Promise.all([shelf.manifest(id, coding), shelf.read(id, index, coding)]);
      return manifest && shard ? { manifest, shard } : undefined;
    }
    const what = `shard-get ${id}.${index} from ${peer}`;
    // The size arrives with the answer: the budget allows a shard of a large block.
    return this.#exchange(peer, 'shard-get', what, 64 * 2 ** 20, async (stream, reader, signal) => {
      await send(stream, encodeFrame({ v: PROTOCOL_VERSION, id, index, ...(coding ? { k: coding.k, m: coding.m } : {}) }, this.#host.maxFrameBytes), signal);
      await stream.close({ signal });
      let head: { manifest?: unknown; size?: unknown };
      try {
        head = unwrapReply(await reader.frame(this.#host.maxFrameBytes), what) as typeof head;
      } catch (err) {
        if (err instanceof OuroError && err.code === 'OURO_NOT_FOUND') return undefined;
        throw err;
      }
      if (!(head.manifest instanceof Uint8Array) || !Number.isSafeInteger(head.size) || (head.size as number) < 0) throw new ProtocolError(`${what}: malformed reply`);
      return { manifest: head.manifest, shard: await collect(reader.bytes(head.size as number), head.size as number) };
    }, also);
  }

  /**
   * Block `id` read back from its shards: the data shards alone when all are there and verify,
   * else decoded from any K verified shards (a degraded read). Undefined when no member answered
   * with a manifest (the block is not stored as shards: the caller fetches it whole). Throws
   * UnavailableError when it is, but fewer than K shards could be had and verified.
   */
  async fetch(id: string, ec: EcPolicy): Promise<Uint8Array | undefined> {
    // The policy's K+M first; a block not yet re-coded to it (or only partly) from its default
    // set, whatever K+M that is.
    let first: unknown;
    try {
      const block = await this.#fetchAs(id, ec, ec);
      if (block) return block;
    } catch (err) {
      first = err;
    }
    const block = await this.#fetchAs(id, ec, undefined).catch((err: unknown) => {
      throw first ?? err;
    });
    if (!block && first) throw first;
    return block;
  }

  /** fetch() from the shard sets of `coding` (undefined: each holder's default set). */
  async #fetchAs(id: string, ec: EcPolicy, coding: Coding | undefined): Promise<Uint8Array | undefined> {
    const placed = this.#holders.firmShardPlacement(id, ec);
    const states = new Map(this.#host.memberViews().filter((m) => !m.self).map((m) => [m.peerId, m.state]));
    const dead = new Set([...states].filter(([, state]) => state === 'dead').map(([peer]) => peer));
    // A suspect holder (silent to heartbeats, not yet dead: the first seconds of a partition, a
    // stopped or overloaded process) is asked last, only when the others do not give K: a stream
    // to it waits for the connection's idle limit or the transfer's time limit, and a read (or a
    // keyed member's adoption, holding its keys' locks meanwhile) would wait with it, where a
    // parity shard from a live member does instead.
    const suspect = new Set([...states].filter(([, state]) => state === 'suspect').map(([peer]) => peer));
    const deferred: number[] = [];
    let manifest: ShardManifest | undefined;
    const verified = new Map<number, Uint8Array>();
    const problems: string[] = [];
    const gather = (indexes: number[], late = false) =>
      Promise.all(
        indexes.map(async (index) => {
          const peer = placed[index];
          if (peer === undefined || dead.has(peer)) return void problems.push(`${index}: holder ${peer ?? 'none'} is down`);
          if (!late && suspect.has(peer)) return void deferred.push(index);
          // A holder going silent mid-read is given up on, as one silent before it (not when it
          // is asked last, already suspect: then it is all that is left).
          const watch = late ? undefined : this.#whileHeard(peer);
          try {
            const got = await this.#get(peer, id, index, watch?.signal, coding);
            if (!got) return void problems.push(`${index}: not held by ${peer}`);
            const m = decodeManifest(got.manifest);
            if (m.block !== id) throw new CorruptionError(`the manifest from ${peer} names block ${m.block}`);
            manifest ??= m;
            verifyShard(manifest, index, got.shard);
            verified.set(index, got.shard);
          } catch (err) {
            const why = errorText(watch?.signal.aborted ? watch.signal.reason : err);
            problems.push(`${index}: ${why}`);
            this.#host.log.debug({ event: 'shard-fetch-failed', id, index, peer, err: why }, 'shard fetch failed');
          } finally {
            watch?.done();
          }
        }),
      );
    const data = Array.from({ length: ec.k }, (_, i) => i);
    await gather(data);
    const k = manifest?.k ?? ec.k;
    const m = manifest?.m ?? ec.m;
    if (manifest && data.every((i) => verified.has(i)) && k === ec.k) return join(manifest, data.map((i) => verified.get(i)!));
    // Degraded: the remaining shards of the block's K+M (the manifest's, when it differs from the policy).
    await gather(Array.from({ length: k + m }, (_, i) => i).filter((i) => !verified.has(i) && !deferred.includes(i) && (i >= ec.k || k !== ec.k)));
    // Repair puts a lost shard on whichever placed member holds none (or, on a cluster left with
    // fewer than K+M placeable members, on one holding another already): when the ranking's
    // places do not give K, ask the live members of both placements which shards they hold.
    const enough = () => verified.size >= (manifest?.k ?? ec.k);
    if (!enough()) await this.#gatherMoved(id, ec, coding, new Set([...dead, ...suspect]), verified, problems, (got) => (manifest ??= got));
    // Last, the suspect holders, which may only be slow.
    if (!enough() && deferred.length > 0) await gather(deferred.filter((i) => !verified.has(i)), true);
    if (!manifest) return undefined;
    if (verified.size < manifest.k) throw new UnavailableError(`block ${id}: ${verified.size} of the ${manifest.k} shards needed could be read and verified (${problems.join('; ')})`);
    const all = await (await this.#loadCodec()).reconstruct(Array.from({ length: manifest.k + manifest.m }, (_, i) => verified.get(i)), manifest.k, manifest.m);
    if (!Array.from({ length: manifest.k }, (_, i) => i).every((i) => verified.has(i))) this.#host.metrics.ecDegradedRead();
    return join(manifest, all.slice(0, manifest.k));
  }
}

/** A coded block's healthy shards at the start and the end of a repair pass's look at it. */
export interface ShardHealth {
  k: number;
  m: number;
  before: number;
  after: number;
  /** Every placed member answered (one not answering may hold its shard) and no first push of the block is under way: else not settled. */
  reachable: boolean;
  pushed: number;
  pushedBytes: number;
}
