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
 * every member of its placement with no one left out for being dead (#firmPlacement), under the
 * newest list any asker has shown (#onHave, #dropIfSurplus).
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
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Stream } from '@libp2p/interface';
import type { Logger } from 'pino';
import fs from 'node:fs';
import { type OuroDB, type ReplicaSource, Tombstone } from '../lib/db.js';
import { BadArgumentError, CorruptionError, OuroError, ProtocolError, TimeoutError, errorText, ioError, syncFailure } from '../lib/errors.js';
import { nodeVfs } from '../lib/vfs/vfs.js';
import { unwrapReply } from './carrier.js';
import { send, sendReleasing } from './send.js';
import { encodeFrame } from './frames.js';
import type { NodeMetrics } from './metrics.js';
import { replicaSet } from './placement.js';
import { SharedLock } from './shared-lock.js';
import { type HeldBlock, type Shelf, blockIdBytes } from './shelf.js';
import { verifyBlockFile } from '../blockstore/store.js';
import { EntryHashStream, type SeenEntries } from '../blockstore/entry-hashes.js';
import { StreamReader } from './stream-reader.js';

export interface ReplicationConfig {
  /** A dead member keeps its placements this long before its blocks are copied elsewhere. */
  deadGraceMs: number;
  /** Pause between repair passes. */
  repairIntervalMs: number;
  /** Bytes per second the repair loop may send (pushes right after a seal are not limited). */
  repairBytesPerSec: number;
}

/** What the replicator needs of its node (carrier/node.ts implements it). */
export interface ReplicationHost {
  readonly peerId: string;
  /** Members each block is placed on (capped by the candidates there are): the cluster's setting. */
  readonly replicationFactor: number;
  readonly log: Logger;
  readonly metrics: NodeMetrics;
  /** Current members with their failure detector state. */
  memberViews(): Array<{ peerId: string; self: boolean; status: 'member' | 'revoked'; state: string | null; since: number | null; draining: boolean; quarantined: boolean }>;
  /** `peer` sent this node `bytes` of a block for repair or restore (the ledger's "served"). */
  served(peer: string, bytes: number): void;
  handle(name: string, handler: (message: unknown, ctx: { peer: string; signal: AbortSignal }) => unknown): Promise<void>;
  handleStream(name: string, handler: (stream: Stream, ctx: { peer: string; signal: AbortSignal }) => Promise<void>): Promise<void>;
  request(peer: string, name: string, message: unknown, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<unknown>;
  /** The signed member list this node acts on (sent with block-have, see #onHave). */
  memberList(): unknown;
  /** Merges a member list a member sent (checked like a heartbeat's). */
  learnList(list: unknown, from: string): Promise<void>;
  openStream(peer: string, name: string, signal: AbortSignal): Promise<Stream>;
  readonly maxFrameBytes: number;
  readonly requestTimeoutMs: number;
}

export interface RepairProgress {
  passes: number;
  running: boolean;
  lastPassAt: number | null;
  /** Blocks checked, and of them below their placement, in the last finished pass. */
  checked: number;
  underReplicated: number;
  /** Since start: blocks and bytes pushed, surplus copies removed, blocks fetched in. */
  pushed: number;
  pushedBytes: number;
  removed: number;
  fetched: number;
  failures: number;
  /** Since start: blocks verified by scrubbing, and found corrupt (then quarantined). */
  verified: number;
  corrupt: number;
  /** Since start: blocks released here at another member's request, and copies deleted at the end of a deletion. */
  released: number;
  dropped: number;
  /** Blocks this database retired whose deletion across the cluster is not finished (last pass). */
  deleting: number;
  /** Blocks held here whose placement members did not all confirm holding them, in the last finished pass. */
  unsettled: number;
}

export interface DrainProgress {
  startedAt: number;
  /** Blocks held here, and of them the ones not yet held by every member of their placement, in the last finished pass. */
  held: number;
  unsettled: number;
  passes: number;
  done: boolean;
}

const PROTOCOL_VERSION = 1;
const HAVE_BATCH = 512;
const LIST_PAGE = 1000;
/** Time allowed per MiB of a block transfer on top of the request time limit. */
const MS_PER_MIB = 1000;
/** Time budget of a fetch, as bytes at MS_PER_MIB: a default-size block several times over. */
const FETCH_BUDGET_BYTES = 64 * 2 ** 20;
/**
 * Blocks up to this size are pushed as one request on the peer's session (block-put-small)
 * rather than on a block-put stream of their own: opening a stream negotiates its protocol
 * (~2-3 ms here against ~0.5 ms for a request on the open session, docs/performance.md,
 * "Carrier"), which was most of the push of the small block a put made durable on two members
 * waits for. The request, with its framing, stays under the carrier's session limit (64 KiB).
 */
const SMALL_PUSH_MAX_BYTES = 60 * 1024;
/** Received bytes gathered into one write. */
const WRITE_GATHER_BYTES = 1 << 20;
/** Block files are sent in pieces of this size (see sendFile). */
const SEND_PIECE_BYTES = 256 * 1024;
/** A received block is datasynced in the background every this many bytes (see #receive). */
const EARLY_SYNC_BYTES = 8 << 20;
/** Bytes of held blocks each repair pass verifies (round-robin across passes). */
const SCRUB_BYTES_PER_PASS = 256 * 2 ** 20;

/** A token bucket over bytes: take() waits until the bytes fit the rate. */
class RateLimit {
  readonly #rate: number;
  #allowance: number;
  #at = performance.now();

  constructor(bytesPerSec: number) {
    this.#rate = bytesPerSec;
    this.#allowance = bytesPerSec;
  }

  async take(bytes: number, signal: AbortSignal): Promise<void> {
    const now = performance.now();
    this.#allowance = Math.min(this.#rate, this.#allowance + ((now - this.#at) / 1000) * this.#rate);
    this.#at = now;
    this.#allowance -= bytes;
    if (this.#allowance < 0) await sleep((-this.#allowance / this.#rate) * 1000, undefined, { signal });
  }
}

export class Replicator implements ReplicaSource {
  readonly #host: ReplicationHost;
  readonly #shelf: Shelf;
  readonly #db: OuroDB | undefined;
  readonly #config: ReplicationConfig;
  readonly #stop = new AbortController();
  readonly #limit: RateLimit;
  /** Blocks this node's database sealed, with the members known to hold each durably. */
  readonly #own = new Map<string, Set<string>>();
  /** When each `<block> <peer>` of #own was last confirmed (a "no" asked before that is stale). */
  readonly #confirmedAt = new Map<string, number>();
  /** block-have's checks (shared) against surplus removals (exclusive): see #onHave. */
  readonly #haveLock = new SharedLock();
  readonly #changed = new Set<() => void>();
  /** Blocks this database sealed whose push to their placement (#afterSeal) is under way. */
  readonly #pushing = new Set<string>();
  /** Blocks being received, so a second push of one waits instead of writing it twice. */
  readonly #receiving = new Map<string, Promise<boolean>>();
  readonly #fetching = new Map<string, Promise<void>>();
  readonly #tasks = new Set<Promise<unknown>>();
  readonly #progress: RepairProgress = { passes: 0, running: false, lastPassAt: null, checked: 0, underReplicated: 0, pushed: 0, pushedBytes: 0, removed: 0, fetched: 0, failures: 0, verified: 0, corrupt: 0, released: 0, dropped: 0, deleting: 0, unsettled: 0 };
  /** Releases started here, and whether each finished (a keyed release may copy entries: it outlives one request). */
  readonly #releasing = new Map<string, { done: boolean }>();
  #indexing: Promise<unknown> | undefined;
  #drain: DrainProgress | null = null;
  #unsubscribe: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #pass: Promise<void> | undefined;
  #again = false;
  /** The next pass scrubs (set by the repair timer and by operators, see kick). */
  #scrubDue = false;
  #scrubCursor = '';

  constructor(host: ReplicationHost, shelf: Shelf, db: OuroDB | undefined, config: ReplicationConfig) {
    this.#host = host;
    this.#shelf = shelf;
    this.#db = db;
    this.#config = config;
    this.#limit = new RateLimit(config.repairBytesPerSec);
  }

  get progress(): RepairProgress {
    return { ...this.#progress };
  }

  /** Progress of this node's drain; null when it is not draining. */
  get drainProgress(): DrainProgress | null {
    return this.#drain && { ...this.#drain };
  }

  async start(): Promise<void> {
    const h = this.#host;
    await h.handleStream('block-put', (stream, ctx) => this.#onPut(stream, ctx.peer));
    await h.handle('block-put-small', (m, ctx) => this.#onPutSmall(m, ctx.peer));
    await h.handleStream('block-get', (stream) => this.#onGet(stream));
    await h.handle('block-have', (m, ctx) => this.#onHave(m, ctx.peer));
    await h.handle('block-list', (m) => this.#onList(m));
    await h.handle('block-announce', (m, ctx) => this.#onAnnounce(m, ctx.peer));
    await h.handle('descriptor', () => this.#onDescriptor());
    await h.handle('block-retire', (m) => this.#onRetire(m));
    if (this.#db) {
      for await (const b of this.#db.blocks()) if (!b.adopted) this.#own.set(b.id, new Set([h.peerId]));
      this.#unsubscribe = this.#db.onSealed((b) => {
        this.#pushing.add(b.id);
        const pushed = this.#afterSeal(b.id, b.size).finally(() => {
          this.#pushing.delete(b.id);
          // A push that failed leaves its block short: settled() now asks for a repair pass.
          for (const wake of this.#changed) wake();
        });
        this.#track(pushed);
      });
      this.#db.setReplicaSource(this);
    }
    this.#timer = setInterval(() => this.kick({ scrub: true }), this.#config.repairIntervalMs);
    this.#timer.unref();
    this.kick({ scrub: true });
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#unsubscribe?.();
    this.#db?.setReplicaSource(undefined);
    this.#stop.abort(new Error('replication stopped'));
    for (const wake of this.#changed) wake();
    await Promise.allSettled([...this.#tasks, this.#pass]);
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#tasks.add(p);
    void p.finally(() => this.#tasks.delete(p)).catch(() => {});
    return p;
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

  placement(id: string): string[] {
    return replicaSet(id, this.candidates(), this.#host.replicationFactor);
  }

  // ------------------------------------------------------------------ writer side

  /** A block this database just sealed: push it to its placement, then tell the keyed members. */
  async #afterSeal(id: string, size: number): Promise<void> {
    const self = this.#host.peerId;
    this.#own.set(id, new Set([self]));
    const targets = this.placement(id).filter((p) => p !== self);
    await Promise.all(targets.map((peer) => this.#pushTo(peer, id, size, false).catch((err: unknown) => this.#failed('push', peer, id, err))));
    const others = this.#host.memberViews().filter((m) => !m.self && m.status === 'member' && m.state !== 'dead' && !targets.includes(m.peerId));
    await Promise.all(
      others.map((m) =>
        this.#host.request(m.peerId, 'block-announce', { v: PROTOCOL_VERSION, blocks: [{ id, size }] }, { signal: this.#stop.signal }).catch((err: unknown) => this.#host.log.debug({ event: 'announce-failed', peer: m.peerId, err: errorText(err) }, 'block announce failed')),
      ),
    );
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
  }

  #confirm(id: string, peer: string): void {
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
  #unconfirm(id: string, peer: string, askedAt: number): void {
    const key = `${id} ${peer}`;
    if ((this.#confirmedAt.get(key) ?? -Infinity) > askedAt) return;
    this.#own.get(id)?.delete(peer);
    this.#confirmedAt.delete(key);
  }

  /**
   * Resolves once every block this database sealed so far is held by `replicas` members (this
   * one included). `replicas` may not exceed the replication factor, nor the members there are.
   */
  async settled(replicas: number, signal?: AbortSignal): Promise<void> {
    const members = this.#host.memberViews().filter((m) => m.status === 'member').length;
    if (replicas > this.#host.replicationFactor) throw new BadArgumentError(`replicas ${replicas} is more than the cluster's replication factor (${this.#host.replicationFactor})`);
    if (replicas > members) throw new BadArgumentError(`replicas ${replicas}: the cluster has ${members} member${members === 1 ? '' : 's'}`);
    const ids = [...this.#own.keys()];
    for (;;) {
      signal?.throwIfAborted();
      if (this.#stop.signal.aborted) throw new OuroError('OURO_CLOSED', 'the node stopped before the blocks were replicated');
      const short = ids.filter((id) => (this.#own.get(id)?.size ?? 0) < replicas);
      if (short.length === 0) return;
      // A block still being pushed confirms itself as its targets ack (#confirm wakes this loop).
      // Only a block no push is placing needs a repair pass: a pass lists every block of every
      // member (#indexFromCluster, #runPass), so kicking one per wait made each replicated
      // flush cost in proportion to everything the cluster holds, and raced the push it waits for.
      if (short.some((id) => !this.#pushing.has(id))) this.kick();
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

  // ------------------------------------------------------------------ transfers

  #transferSignal(size: number): AbortSignal {
    return AbortSignal.any([this.#stop.signal, AbortSignal.timeout(this.#host.requestTimeoutMs + Math.ceil(size / 2 ** 20) * MS_PER_MIB)]);
  }

  /**
   * Opens a `protocol` stream to `peer` for one block transfer of about `budgetBytes` and runs
   * `fn` on it: the time limit aborts the stream, and so does any failure, which is rethrown.
   */
  async #transfer<T>(peer: string, protocol: 'block-put' | 'block-get', what: string, budgetBytes: number, fn: (stream: Stream, reader: StreamReader, signal: AbortSignal) => Promise<T>): Promise<T> {
    const signal = this.#transferSignal(budgetBytes);
    const stream = await this.#host.openStream(peer, protocol, signal);
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

  /** Pushes block `id` to `peer`; true once the peer holds it durably (false: busy receiving it from someone else). */
  async #pushTo(peer: string, id: string, size: number, limited: boolean): Promise<boolean> {
    if (size <= SMALL_PUSH_MAX_BYTES) {
      const pushed = await this.#pushSmall(peer, id, size, limited);
      if (pushed !== undefined) return pushed;
    }
    return this.#pushOnStream(peer, id, size, limited);
  }

  /** #pushTo for a small block: one block-put-small request. Undefined when `peer` does not serve it. */
  async #pushSmall(peer: string, id: string, size: number, limited: boolean): Promise<boolean | undefined> {
    const file = this.#shelf.path(id);
    const bytes = await fs.promises.readFile(file).catch((err: unknown) => {
      throw ioError(`read ${file}`, err);
    });
    if (bytes.length !== size) throw new CorruptionError(`${file} has ${bytes.length} bytes, not ${size}`, { location: { file } });
    if (limited) await this.#limit.take(size, this.#stop.signal);
    let answer: { stored?: unknown; busy?: unknown };
    try {
      answer = (await this.#host.request(peer, 'block-put-small', { v: PROTOCOL_VERSION, id, size, bytes, ...(limited ? { repair: true } : {}) }, { signal: this.#stop.signal })) as typeof answer;
    } catch (err) {
      // A member from before block-put-small answers that it does not serve it: use a stream.
      if (err instanceof OuroError && err.code === 'OURO_PROTOCOL' && /is not served/.test(err.message)) return undefined;
      throw err;
    }
    if (answer?.busy === true) return false;
    if (typeof answer?.stored !== 'boolean') throw new ProtocolError(`block-put-small ${id} to ${peer}: malformed reply`);
    this.#confirm(id, peer);
    this.#host.metrics.replicated('out', size);
    return true;
  }

  #pushOnStream(peer: string, id: string, size: number, limited: boolean): Promise<boolean> {
    const what = `block-put ${id} to ${peer}`;
    return this.#transfer(peer, 'block-put', what, size, async (stream, reader, signal) => {
      await send(stream, encodeFrame({ v: PROTOCOL_VERSION, id, size, ...(limited ? { repair: true } : {}) }, this.#host.maxFrameBytes), signal);
      const go = unwrapReply(await reader.frame(this.#host.maxFrameBytes), what) as { send?: unknown; busy?: unknown };
      if (go.send !== true) {
        await stream.close({ signal }).catch(() => {});
        if (go.busy === true) return false;
        this.#confirm(id, peer);
        return true;
      }
      const file = this.#shelf.path(id);
      const handle = await fs.promises.open(file, 'r').catch((err: unknown) => {
        throw ioError(`open ${file}`, err);
      });
      try {
        await sendFile(stream, handle, file, size, signal, limited ? (n) => this.#limit.take(n, signal) : undefined);
      } finally {
        await handle.close();
      }
      await stream.close({ signal });
      const done = unwrapReply(await reader.frame(this.#host.maxFrameBytes), what) as { stored?: unknown };
      if (typeof done.stored !== 'boolean') throw new ProtocolError(`${what}: malformed reply`);
      this.#confirm(id, peer);
      this.#host.metrics.replicated('out', size);
      return true;
    });
  }

  async #onPut(stream: Stream, peer: string): Promise<void> {
    const reader = new StreamReader(stream);
    const max = this.#host.maxFrameBytes;
    const head = (await reader.frame(max)) as { v?: unknown; id?: unknown; size?: unknown; repair?: unknown } | null;
    const reply = (body: unknown) => send(stream, encodeFrame({ ok: true, body }, max), this.#stop.signal);
    if (head === null || typeof head !== 'object' || head.v !== PROTOCOL_VERSION || typeof head.id !== 'string' || !Number.isSafeInteger(head.size) || (head.size as number) < 0) {
      throw new ProtocolError(`malformed block-put from ${peer}`);
    }
    const id = head.id;
    const size = head.size as number;
    blockIdBytes(id);
    const held = await this.#holdsOrReceives(id);
    if (held !== undefined) {
      await reply({ send: false, ...(held === 'busy' ? { busy: true } : {}) });
      await stream.close();
      return;
    }
    try {
      const stored = await this.#received(id, size, peer, head.repair === true, async () => {
        await reply({ send: true });
        return reader.bytes(size);
      });
      await reply({ stored });
      await stream.close();
    } catch (err) {
      await send(stream, encodeFrame({ ok: false, code: err instanceof OuroError ? err.code : 'OURO_IO_ERROR', message: err instanceof Error ? err.message : String(err) }, max), this.#stop.signal).catch(() => {});
      throw err;
    }
  }

  /** block-put-small: a whole small block in one request; the same checks and steps as #onPut. */
  async #onPutSmall(m: unknown, peer: string): Promise<{ stored: boolean } | { busy: true }> {
    const q = m as { v?: unknown; id?: unknown; size?: unknown; bytes?: unknown; repair?: unknown } | null;
    if (q === null || typeof q !== 'object' || q.v !== PROTOCOL_VERSION || typeof q.id !== 'string' || !(q.bytes instanceof Uint8Array) || q.size !== q.bytes.byteLength || q.bytes.byteLength > SMALL_PUSH_MAX_BYTES) {
      throw new ProtocolError(`malformed block-put-small from ${peer}`);
    }
    const { id, bytes } = q as { id: string; bytes: Uint8Array };
    blockIdBytes(id);
    const held = await this.#holdsOrReceives(id);
    if (held === 'busy') return { busy: true };
    if (held === 'held') return { stored: false };
    return { stored: await this.#received(id, bytes.byteLength, peer, q.repair === true, async () => [bytes]) };
  }

  /** Whether block `id` is held (or was released) here, or is being received now; undefined if neither. */
  async #holdsOrReceives(id: string): Promise<'held' | 'busy' | undefined> {
    if ((await this.#shelf.has(id)) || (await this.#shelf.tombstoned(id))) return 'held';
    return this.#receiving.has(id) ? 'busy' : undefined;
  }

  /**
   * Receives block `id` (`size` bytes from what `start` returns) into staging, fsyncs it, and
   * has the shelf check and keep it; registered in #receiving meanwhile, so a second push of
   * the same block is told to wait. True when the block was kept, false when it was already.
   */
  async #received(id: string, size: number, peer: string, repair: boolean, start: () => Promise<AsyncIterable<Uint8Array> | Iterable<Uint8Array>>): Promise<boolean> {
    const receipt = (async () => {
      const source = await start();
      const signal = this.#transferSignal(size);
      const staging = await this.#shelf.staging(id);
      const seen = await this.#receive(source, staging, size, signal);
      return this.#shelf.keep(staging, id, seen);
    })();
    this.#receiving.set(id, receipt);
    try {
      const stored = await receipt;
      this.#host.metrics.replicated('in', size);
      if (stored && repair) this.#host.served(peer, size);
      this.#host.log.debug({ event: 'block-received', id, from: peer, size, stored }, 'block received');
      return stored;
    } finally {
      this.#receiving.delete(id);
    }
  }

  /**
   * Writes the `size` bytes of `source` to a new file `staging` and fsyncs it; the shelf then
   * checks and places it. Three things overlap the transfer so that little is left after the last
   * byte: each entry is hashed as it passes (the returned hashes spare the shelf reading the file
   * back), the write of one gathered run proceeds while the next arrives, and every
   * EARLY_SYNC_BYTES written a datasync starts in the background, so the disk drains while the
   * network delivers and the closing fsync has only the tail to flush.
   */
  async #receive(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, staging: string, size: number, signal: AbortSignal): Promise<SeenEntries> {
    const handle = await fs.promises.open(staging, 'wx', 0o600).catch((err: unknown) => {
      throw ioError(`create ${staging}`, err);
    });
    const seen = new EntryHashStream(size);
    let writing: Promise<unknown> = Promise.resolve();
    // Background datasyncs, one at a time; a failure is fatal, reported by the wait after the
    // last write (an fsync error is never retried: the kernel may have dropped the dirty pages).
    const early: Promise<void>[] = [];
    let syncInFlight = false;
    try {
      // QUIC hands over pieces of a few KiB: they are copied into one of two gather buffers of up
      // to 1 MiB, one filling while the other is written (one syscall each). Copying costs less
      // than keeping the pieces: held until their write, they outlived the young generation and
      // were collected by full GCs (a 256 MiB push: 0.45 s of main-thread GC, against 0.19 s for
      // a raw stream that drops each piece at once).
      // Sized to the block: two 1 MiB buffers for every small block (a 1 KiB put made durable on
      // two members pushes one) made the replica's GC run after every few pushes, as V8 counts
      // external memory. The second buffer is needed only once the first has been filled.
      const gatherBytes = Math.max(1, Math.min(WRITE_GATHER_BYTES, size));
      let at = 0;
      let syncedMark = 0;
      const gather = [Buffer.allocUnsafeSlow(gatherBytes)];
      let filling = 0;
      let pendingBytes = 0;
      const write = async () => {
        // One write in flight: wait for the previous one (and its error) before the next, which
        // also frees the other gather buffer.
        await writing;
        writing = handle.write(gather[filling]!, 0, pendingBytes, at);
        // Its error is thrown by the next wait; until then it must not count as unhandled
        // (Node would end the process over a disk error).
        writing.catch(() => {});
        at += pendingBytes;
        filling = 1 - filling;
        gather[filling] ??= Buffer.allocUnsafeSlow(gatherBytes);
        pendingBytes = 0;
        if (at - syncedMark >= EARLY_SYNC_BYTES && !syncInFlight) {
          syncedMark = at;
          syncInFlight = true;
          const run = writing.then(() => handle.datasync()).finally(() => (syncInFlight = false));
          run.catch(() => {});
          early.push(run);
        }
      };
      for await (const piece of source) {
        signal.throwIfAborted();
        seen.update(piece);
        for (let from = 0; from < piece.length; ) {
          const n = Math.min(piece.length - from, gatherBytes - pendingBytes);
          gather[filling]!.set(piece.subarray(from, from + n), pendingBytes);
          pendingBytes += n;
          from += n;
          if (pendingBytes === gatherBytes) await write();
        }
      }
      if (pendingBytes > 0) await write();
      await writing;
      await Promise.all(early).catch((err: unknown) => {
        throw syncFailure(`fdatasync ${staging}`, err);
      });
      await handle.sync().catch((err: unknown) => {
        throw syncFailure(`fsync ${staging}`, err);
      });
    } catch (err) {
      // Nothing may still touch the file when it is closed and removed.
      await Promise.allSettled([writing, ...early]);
      await handle.close().catch(() => {});
      await nodeVfs.remove(staging).catch(() => {});
      throw err;
    }
    await handle.close();
    return seen;
  }

  async #onGet(stream: Stream): Promise<void> {
    const reader = new StreamReader(stream);
    const max = this.#host.maxFrameBytes;
    const m = (await reader.frame(max)) as { v?: unknown; id?: unknown } | null;
    if (m === null || typeof m !== 'object' || m.v !== PROTOCOL_VERSION || typeof m.id !== 'string') throw new ProtocolError('malformed block-get');
    blockIdBytes(m.id);
    const file = this.#shelf.path(m.id);
    const handle = await fs.promises.open(file, 'r').catch(() => undefined);
    if (!handle) {
      await send(stream, encodeFrame({ ok: false, code: 'OURO_NOT_FOUND', message: `block ${m.id} is not held here` }, max), this.#stop.signal);
      await stream.close();
      return;
    }
    try {
      const size = (await handle.stat()).size;
      const signal = this.#transferSignal(size);
      await send(stream, encodeFrame({ ok: true, body: { size } }, max), signal);
      await sendFile(stream, handle, file, size, signal);
      await stream.close({ signal });
    } finally {
      await handle.close();
    }
  }

  /** Fetches block `id` from a member holding it into the shelf. Implements ReplicaSource. */
  fetchBlock(id: string): Promise<void> {
    let run = this.#fetching.get(id);
    if (!run) {
      run = this.#fetch(id).finally(() => this.#fetching.delete(id));
      this.#fetching.set(id, run);
    }
    return run;
  }

  async #fetch(id: string): Promise<void> {
    const self = this.#host.peerId;
    const placed = this.placement(id);
    const others = this.#host.memberViews().filter((m) => m.status === 'member' && !placed.includes(m.peerId)).map((m) => m.peerId);
    let last: unknown = new OuroError('OURO_NOT_FOUND', `no member holds block ${id}`);
    for (const peer of [...placed, ...others]) {
      if (peer === self) continue;
      try {
        await this.#fetchFrom(peer, id);
        this.#progress.fetched++;
        return;
      } catch (err) {
        last = err;
        this.#host.log.debug({ event: 'fetch-failed', id, peer, err: errorText(err) }, 'block fetch failed');
      }
    }
    throw last;
  }

  #fetchFrom(peer: string, id: string): Promise<void> {
    const what = `block-get ${id} from ${peer}`;
    // The size arrives with the answer: allow for a block as large as blocks are made (1 GiB at most).
    return this.#transfer(peer, 'block-get', what, FETCH_BUDGET_BYTES, async (stream, reader, signal) => {
      await send(stream, encodeFrame({ v: PROTOCOL_VERSION, id }, this.#host.maxFrameBytes), signal);
      await stream.close({ signal });
      const head = unwrapReply(await reader.frame(this.#host.maxFrameBytes), what) as { size?: unknown };
      if (!Number.isSafeInteger(head.size)) throw new ProtocolError(`${what}: malformed reply`);
      const staging = await this.#shelf.staging(id);
      const seen = await this.#receive(reader.bytes(head.size as number), staging, head.size as number, signal);
      await this.#shelf.keep(staging, id, seen);
      this.#host.metrics.replicated('in', head.size as number);
      this.#host.served(peer, head.size as number);
    });
  }

  // ------------------------------------------------------------------ small requests

  /**
   * Which of `ids` this node holds. A "yes" may let the asker drop its own copy, so two rules keep
   * two holders from each dropping theirs on the strength of the other's (a member dropping a
   * surplus copy under an old list while a drainer, under the new one, counts that copy):
   * the asker's list is merged before the checks, and a removal (its placement check and the
   * delete) never overlaps the checks. So a removal either ends before the checks (a "no") or
   * starts after them, deciding on a list at least as new as the asker's.
   */
  async #onHave(m: unknown, peer: string): Promise<{ have: boolean[] }> {
    const q = m as { v?: unknown; ids?: unknown; list?: unknown } | null;
    const ids = q?.ids;
    if (q?.v !== PROTOCOL_VERSION || !Array.isArray(ids) || ids.length > HAVE_BATCH * 4) throw new ProtocolError('malformed block-have');
    if (q.list !== undefined) await this.#host.learnList(q.list, peer);
    const have = await this.#haveLock.shared(() => Promise.all(ids.map((id) => (typeof id === 'string' && /^[0-9a-f]{64}$/.test(id) ? this.#shelf.has(id) : false))));
    return { have };
  }

  async #onList(m: unknown): Promise<{ blocks: HeldBlock[]; done: boolean }> {
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

  #onAnnounce(m: unknown, peer: string): Record<string, never> {
    const blocks = (m as { blocks?: unknown } | null)?.blocks;
    if ((m as { v?: unknown } | null)?.v !== PROTOCOL_VERSION || !Array.isArray(blocks)) throw new ProtocolError('malformed block-announce');
    // Only a member with the key indexes blocks it is not placed on.
    if (this.#db) {
      for (const b of blocks as Array<{ id?: unknown }>) {
        if (typeof b?.id !== 'string' || !/^[0-9a-f]{64}$/.test(b.id) || this.#db.block(b.id) || this.#db.tombstone(b.id) !== undefined) continue;
        this.#track(this.#index(b.id)).catch((err: unknown) => this.#failed('index', peer, b.id as string, err));
      }
    }
    return {};
  }

  /** Fetches and adopts a block this keyed member does not know, then drops the file if it is not placed here. */
  async #index(id: string): Promise<void> {
    if (!this.#db || this.#db.block(id) || this.#db.tombstone(id) !== undefined) return;
    await this.fetchBlock(id);
    await this.#dropIfSurplus(id, this.placement(id));
  }

  async #onDescriptor(): Promise<{ descriptor: string | null }> {
    if (!this.#db) return { descriptor: null };
    return { descriptor: await fs.promises.readFile(`${this.#db.dir}/OURODB.json`, 'utf8') };
  }

  // ------------------------------------------------------------------ deletion

  /**
   * A writer's deletions across the cluster (see the top of this file): each block its gc
   * retired is released by every member, then dropped by every member, then forgotten.
   */
  async #deleteRetired(): Promise<void> {
    const db = this.#db!;
    const pending: Array<{ id: string; state: number }> = [];
    for await (const t of db.tombstones([Tombstone.Retired, Tombstone.Dropping])) pending.push(t);
    this.#progress.deleting = pending.length;
    if (pending.length === 0) return;
    // What gc moved out of these blocks is sealed (and so adoptable) before anyone releases them.
    if (pending.some((t) => t.state === Tombstone.Retired)) await db.flush();
    const others = this.#host.memberViews().filter((m) => !m.self && m.status === 'member');
    for (const [state, phase, next] of [
      [Tombstone.Retired, 'release', Tombstone.Dropping],
      [Tombstone.Dropping, 'drop', Tombstone.Released],
    ] as const) {
      const ids = pending.filter((t) => t.state === state).map((t) => t.id);
      for (let i = 0; i < ids.length; i += HAVE_BATCH) {
        if (this.#stop.signal.aborted) return;
        const batch = ids.slice(i, i + HAVE_BATCH);
        const done = batch.map(() => true);
        await Promise.all(
          others.map(async (m) => {
            // A member away may still name the block: the deletion waits for it.
            if (m.state !== 'alive') {
              done.fill(false);
              return;
            }
            try {
              const r = (await this.#host.request(m.peerId, 'block-retire', { v: PROTOCOL_VERSION, phase, ids: batch }, this.#smallRequest())) as { done?: unknown };
              if (!Array.isArray(r?.done) || r.done.length !== batch.length) throw new ProtocolError('malformed block-retire reply');
              r.done.forEach((d, j) => {
                if (d !== true) done[j] = false;
              });
            } catch (err) {
              done.fill(false);
              this.#host.log.debug({ event: 'retire-failed', peer: m.peerId, phase, err: errorText(err) }, 'block-retire failed');
            }
          }),
        );
        for (const [j, id] of batch.entries()) {
          if (!done[j]) continue;
          await db.setTombstone(id, next);
          if (next === Tombstone.Released) this.#progress.deleting--;
          this.#host.log.info({ event: phase === 'release' ? 'block-released-everywhere' : 'block-deleted-everywhere', id }, phase === 'release' ? 'every member released a deleted block; its copies go next' : 'every copy of a deleted block is gone');
        }
      }
    }
  }

  async #onRetire(m: unknown): Promise<{ done: boolean[] }> {
    const q = m as { v?: unknown; phase?: unknown; ids?: unknown } | null;
    if (q === null || typeof q !== 'object' || q.v !== PROTOCOL_VERSION || (q.phase !== 'release' && q.phase !== 'drop') || !Array.isArray(q.ids) || q.ids.length > HAVE_BATCH) throw new ProtocolError('malformed block-retire');
    const ids = q.ids.map((id) => {
      blockIdBytes(id);
      return id as string;
    });
    if (q.phase === 'drop') {
      return {
        done: await Promise.all(
          ids.map(async (id) => {
            this.#releasing.delete(id);
            const had = await this.#shelf.has(id);
            const dropped = await this.#shelf.drop(id);
            if (dropped && had) {
              this.#progress.dropped++;
              this.#host.log.info({ event: 'block-dropped', id }, 'copy of a block deleted across the cluster removed');
            }
            return dropped;
          }),
        ),
      };
    }
    // A release may take longer than one request (it can copy entries): it goes on in the
    // background and the writer asks again on its next pass.
    return {
      done: ids.map((id) => {
        let state = this.#releasing.get(id);
        if (!state) {
          const started: { done: boolean } = (state = { done: false });
          this.#releasing.set(id, started);
          // Not released (a write raced it) or failed: forgotten, so the next ask starts again.
          this.#track(this.#release(id)).then(
            (ok) => {
              if (ok) started.done = true;
              else this.#releasing.delete(id);
            },
            (err: unknown) => {
              this.#releasing.delete(id);
              this.#failed('release', this.#host.peerId, id, err);
            },
          );
        }
        return state.done;
      }),
    };
  }

  /** Releases a block here: a keyed member first indexes what the cluster holds (where the moved entries are). */
  async #release(id: string): Promise<boolean> {
    if (this.#db?.block(id)) await this.#indexOnce();
    const r = await this.#shelf.release(id);
    if (r.released) {
      this.#progress.released++;
      this.#host.log.info({ event: 'block-released', id, repointed: r.repointed, copied: r.copied, dropped: r.dropped }, 'a block deleted across the cluster is released here');
    }
    return r.released;
  }

  /** #indexFromCluster, shared by callers that come while one runs. */
  #indexOnce(): Promise<unknown> {
    this.#indexing ??= this.#indexFromCluster().finally(() => (this.#indexing = undefined));
    return this.#indexing;
  }

  // ------------------------------------------------------------------ repair

  /** The blocks this node holds now. */
  async held(): Promise<HeldBlock[]> {
    const out: HeldBlock[] = [];
    for await (const b of this.#shelf.list()) out.push(b);
    return out;
  }

  /**
   * Starts a repair pass now (or right after the one running). `scrub`: the pass also scrubs
   * held blocks. Only the repair timer and an operator's request scrub: the passes kicked by
   * seals, waits for replicas and membership changes would otherwise read back the very block
   * being pushed, competing with the push for disk and CPU.
   */
  kick(options: { scrub?: boolean } = {}): void {
    if (this.#stop.signal.aborted) return;
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

  /** Waits for the pass running now, and for one more if one is due. */
  async idle(): Promise<void> {
    while (this.#pass) await this.#pass;
  }

  async #runPass(): Promise<void> {
    const p = this.#progress;
    p.running = true;
    const pass = { checked: 0, under: 0, unsettled: 0 };
    try {
      if (this.#scrubDue) {
        this.#scrubDue = false;
        await this.#scrub();
      }
      if (this.#db) await this.#indexOnce();
      if (this.#db) await this.#deleteRetired();
      let batch: HeldBlock[] = [];
      const flushBatch = async () => {
        const r = await this.#repairBatch(batch);
        pass.checked += batch.length;
        pass.under += r.under;
        pass.unsettled += r.unsettled;
        batch = [];
      };
      for await (const b of this.#shelf.list()) {
        if (this.#stop.signal.aborted) return;
        batch.push(b);
        if (batch.length >= HAVE_BATCH) await flushBatch();
      }
      if (batch.length > 0) await flushBatch();
      p.passes++;
      p.lastPassAt = Date.now();
      p.checked = pass.checked;
      p.underReplicated = pass.under;
      p.unsettled = pass.unsettled;
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
      this.#stop.signal.throwIfAborted();
      const before = this.#progress.passes;
      this.kick();
      await this.idle();
      if (this.#progress.passes > before) {
        d.passes++;
        d.held = this.#progress.checked;
        d.unsettled = this.#progress.unsettled;
        if (d.unsettled === 0 && this.#receiving.size === 0 && !this.candidates().includes(this.#host.peerId)) {
          d.done = true;
          return;
        }
      }
      await sleep(this.#config.repairIntervalMs, undefined, { signal: this.#stop.signal });
    }
  }

  /**
   * Verifies held blocks against their ids (every byte: structure, footer, each entry's hash),
   * up to SCRUB_BYTES_PER_PASS per pass, going round from where the last pass stopped. A block
   * that fails is moved to `quarantine/` beside it (kept for inspection, no longer served or
   * counted as held), so the repair passes copy a good one back from another holder.
   */
  async #scrub(): Promise<void> {
    let budget = SCRUB_BYTES_PER_PASS;
    const blocks = await this.held();
    blocks.sort((x, y) => (x.id < y.id ? -1 : 1));
    const start = blocks.findIndex((b) => b.id > this.#scrubCursor);
    const order = start < 0 ? blocks : [...blocks.slice(start), ...blocks.slice(0, start)];
    for (const b of order) {
      if (budget <= 0 || this.#stop.signal.aborted) return;
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
  async #repairBatch(blocks: HeldBlock[]): Promise<{ under: number; unsettled: number }> {
    const self = this.#host.peerId;
    const placements = new Map(blocks.map((b) => [b.id, this.placement(b.id)]));
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
          const r = (await this.#host.request(peer, 'block-have', { v: PROTOCOL_VERSION, ids, list: this.#host.memberList() }, this.#smallRequest())) as { have?: unknown };
          const have = r?.have;
          if (!Array.isArray(have) || have.length !== ids.length) throw new ProtocolError('malformed block-have reply');
          ids.forEach((id, i) => {
            if (have[i] === true) {
              holders.get(id)!.add(peer);
              this.#confirm(id, peer);
            } else {
              this.#unconfirm(id, peer, askedAt);
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
      if (this.#stop.signal.aborted) break;
      const placed = placements.get(b.id)!;
      const held = holders.get(b.id)!;
      const missing = placed.filter((p) => p !== self && !held.has(p) && !unreachable.has(p));
      if (missing.length > 0 || placed.some((p) => unreachable.has(p))) under++;
      for (const peer of missing) {
        try {
          if (await this.#pushTo(peer, b.id, b.size, true)) {
            held.add(peer);
            this.#progress.pushed++;
            this.#progress.pushedBytes += b.size;
            this.#host.log.info({ event: 'block-repaired', id: b.id, to: peer, size: b.size }, 'block copied to its placement');
          }
        } catch (err) {
          this.#failed('repair', peer, b.id, err);
        }
      }
      if (!placed.every((p) => p === self || held.has(p))) unsettled++;
      else if (!placed.includes(self)) await this.#dropIfSurplus(b.id, placed, held);
    }
    return { under, unsettled };
  }

  /**
   * The placement every member computes alike, whatever its failure detector says: over the
   * members not draining or quarantined, with no one left out for being dead. placement() leaves
   * out members dead past the grace, as this node sees them; two members seeing that differently
   * could each count the other's surplus copy and both drop theirs. A copy is dropped only once
   * every member of this placement holds it too, so those copies stay whatever the views (a
   * member away keeps surplus copies in place until it answers again or is revoked).
   */
  #firmPlacement(id: string): string[] {
    const members = this.#host.memberViews().filter((m) => m.status === 'member' && !m.draining && !m.quarantined).map((m) => m.peerId);
    return replicaSet(id, members, this.#host.replicationFactor);
  }

  /**
   * Asks each of `peers` not yet in `held` whether it holds block `id`; adds those that do. A
   * member not seen alive is not asked (it stays unconfirmed): waiting out a request's time limit
   * for every surplus copy would stall repair passes while a member is away.
   */
  async #confirmHolders(id: string, peers: string[], held: Set<string>): Promise<void> {
    const alive = new Set(this.#host.memberViews().filter((m) => m.self || m.state === 'alive').map((m) => m.peerId));
    for (const peer of peers) {
      if (held.has(peer) || !alive.has(peer)) continue;
      const r = (await this.#host.request(peer, 'block-have', { v: PROTOCOL_VERSION, ids: [id], list: this.#host.memberList() }, this.#smallRequest()).catch(() => null)) as { have?: unknown[] } | null;
      if (r?.have?.[0] === true) held.add(peer);
    }
  }

  /** Removes this node's copy of a block placed elsewhere once every placed member holds it. */
  async #dropIfSurplus(id: string, placed: string[], known?: Set<string>): Promise<void> {
    const self = this.#host.peerId;
    if (placed.length === 0 || placed.includes(self) || placed.length < Math.min(this.#host.replicationFactor, this.candidates().length)) return;
    if (!(await this.#shelf.removable(id))) return;
    const held = known ?? new Set<string>();
    await this.#confirmHolders(id, placed, held);
    if (!placed.every((p) => held.has(p))) return;
    const firm = this.#firmPlacement(id);
    if (firm.includes(self)) return;
    await this.#confirmHolders(id, firm, held);
    // The list may have changed while we asked (a drain, a join): decide on the placements as they
    // are now, where no block-have check can run between the decision and the delete (see #onHave).
    const removed = await this.#haveLock.exclusive(async () => {
      const now = this.placement(id);
      const firmNow = this.#firmPlacement(id);
      if (now.includes(self) || firmNow.includes(self) || now.length < Math.min(this.#host.replicationFactor, this.candidates().length)) return null;
      if (!now.every((p) => held.has(p)) || !firmNow.every((p) => held.has(p))) return null;
      await this.#shelf.remove(id);
      return now;
    });
    if (!removed) return;
    this.#progress.removed++;
    this.#host.log.info({ event: 'surplus-removed', id, placed: removed }, 'surplus copy removed');
  }

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
      if (m.self || m.status !== 'member' || m.state !== 'alive') continue;
      let after = '';
      for (;;) {
        if (this.#stop.signal.aborted) return round;
        let page: { blocks: HeldBlock[]; done: boolean };
        try {
          page = (await this.#host.request(m.peerId, 'block-list', { v: PROTOCOL_VERSION, after, limit: LIST_PAGE }, this.#smallRequest())) as typeof page;
        } catch (err) {
          this.#host.log.debug({ event: 'list-failed', peer: m.peerId, err: errorText(err) }, 'block-list failed');
          break;
        }
        for (const b of page.blocks) {
          if (typeof b?.id !== 'string' || !/^[0-9a-f]{64}$/.test(b.id) || db.block(b.id) || db.tombstone(b.id) !== undefined) continue;
          try {
            await this.#index(b.id);
            round.adopted++;
          } catch (err) {
            round.failed++;
            this.#failed('index', m.peerId, b.id, err);
          }
        }
        if (page.done || page.blocks.length === 0) break;
        after = page.blocks[page.blocks.length - 1]!.id;
      }
    }
    return round;
  }

  /** Options of a repair pass's small requests: a member that does not answer soon is skipped this pass. */
  #smallRequest(): { signal: AbortSignal; timeoutMs: number } {
    return { signal: this.#stop.signal, timeoutMs: Math.min(this.#host.requestTimeoutMs, 3000) };
  }

  #failed(what: string, peer: string, id: string, err: unknown): void {
    if (this.#stop.signal.aborted) return;
    this.#progress.failures++;
    this.#host.log.warn({ event: `${what}-failed`, peer, id, err: errorText(err) }, `block ${what} failed`);
  }
}

/**
 * Sends the first `size` bytes of an open file in 256 KiB pieces; `pace` may hold each piece back
 * (rate limit). The next piece is read while the current one is sent. A piece's buffer is read
 * into again only when sendReleasing() says the stream has let go of it (its write completed);
 * otherwise it is left to the collector and a fresh one taken. Reusing them took a 256 MiB push
 * from 155-159 to 175-177 MiB/s (GC of a fresh 256 KiB buffer per piece).
 */
async function sendFile(stream: Stream, handle: fs.promises.FileHandle, file: string, size: number, signal: AbortSignal, pace?: (bytes: number) => Promise<void>): Promise<void> {
  const spare: Buffer[] = [];
  const readAt = async (at: number): Promise<{ buffer: Buffer; piece: Buffer }> => {
    const n = Math.min(SEND_PIECE_BYTES, size - at);
    await pace?.(n);
    const buffer = spare.pop() ?? Buffer.allocUnsafeSlow(SEND_PIECE_BYTES);
    const piece = buffer.subarray(0, n);
    const { bytesRead } = await handle.read(piece, 0, n, at);
    if (bytesRead !== n) throw new CorruptionError(`${file} is shorter than its ${size} bytes`, { location: { file } });
    return { buffer, piece };
  };
  // A read ahead fails while the current piece is being sent: its error waits for the loop
  // (marked handled meanwhile, or Node would end the process over it).
  const ahead = (at: number) => {
    const p = readAt(at);
    p.catch(() => {});
    return p;
  };
  let next = size > 0 ? ahead(0) : undefined;
  try {
    for (let at = 0; at < size; ) {
      const { buffer, piece } = await next!;
      at += piece.length;
      next = at < size ? ahead(at) : undefined;
      if (await sendReleasing(stream, piece, signal)) spare.push(buffer);
    }
  } finally {
    // A failed send leaves a read running: let it finish before the caller closes the file.
    await next?.catch(() => {});
  }
}
