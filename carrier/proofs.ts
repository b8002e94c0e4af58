/**
 * Proofs of storage (docs/node.md, "Proofs of storage"; the answer's bytes in docs/FORMAT.md).
 *
 * The node whose database sealed a block challenges the other members that hold it: a fresh
 * random 32-byte nonce and a few random byte ranges of the block, and the holder answers
 *
 *   HMAC-SHA256(key = nonce, "ourodb proof v1\0" || block id || for each range:
 *               offset u64be || length u32be || the block's bytes in the range)
 *
 * A block stored as erasure-coded shards (docs/node.md, "Redundancy") is challenged per shard: the
 * members holding its shards (Holders.shardHolders: confirmed by the push and by each repair
 * pass's shard-have) are asked for ranges of the shard they hold, and answer
 *
 *   HMAC-SHA256(key = nonce, "ourodb shard proof v1\0" || block id || shard index u8 ||
 *               for each range: offset u64be || length u32be || the shard's bytes in the range)
 *
 * The stock is per shard too (keys `p:<block>/<K>+<M>/<index>:<nonce>`), made from the writer's
 * whole copy coded again (the code is deterministic: the same shards the holders got).
 *
 * The challenger needs no copy of the block to check the answer: it keeps a small stock of
 * challenges per block (nonce, ranges, expected answer; ~100 bytes each), made while it holds the
 * block (right after sealing it, and again from its copy when the stock runs out). A challenge is
 * struck from the stock, durably, before it is sent, so no nonce is ever used twice.
 *
 * Verdicts: the right answer within `deadlineMs` passes; the right answer later, or none before
 * four deadlines, is `late` when the holder was reachable all along (#reachable: the failure
 * detector saw it alive throughout, and heard from it meanwhile when it did not answer), else no
 * verdict (a partition is not a cheat); a wrong answer, an error reading the block, or "missing" from a holder
 * the block is placed on is `fail`. A holder that says it is missing the block because, in its
 * view of the members, the block is not placed on it, or because it removed its copy as surplus
 * (a placement change in flight either way), gets no verdict. Only members that confirmed holding
 * the block (block-have or a push) and are alive are challenged, so a member still receiving a
 * block is never failed for it; one that tells a repair pass or a challenge it lacks a block is
 * not asked for it until it has it again (proofs check claims). Each round's verdicts
 * go into the ledger as one signed event (carrier/ledger.ts), where repeated failures quarantine
 * the holder.
 *
 * Owns, and alone changes: the challenge stock (keys `p:<block>:<nonce>` in the ledger's store,
 * beside its events: made by #restock after a seal or when a block's stock runs out, struck by
 * #take before each challenge), the round-robin cursor and the round under way (#challengeRound,
 * one at a time through kick), and its timer. Who holds a block and where it is placed are the
 * replicator's, read through ProverHost; verdicts are counted through ProofMetrics ({ proof }).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { Logger } from 'pino';
import type { OuroDB } from '../lib/db.js';
import { CorruptionError, OuroError, ProtocolError, errorText, ioError } from '../lib/errors.js';
import type { Ledger, ProofResult } from './ledger.js';
import { loadCodec } from './ec/codec.js';
import { codingOf } from './replication-shard-rules.js';
import { type Coding, type Shelf, blockIdBytes } from './shelf.js';

const PROOF_VERSION = 1;
/**
 * A shard challenge is version 2 (`index` added): a holder of a release before shard proofs
 * refuses it as malformed, which decides nothing, where a version-1 message with an extra field
 * would have been answered for the whole block (missing) and failed.
 */
const SHARD_PROOF_VERSION = 2;
const DOMAIN = Buffer.from('ourodb proof v1\0');
const SHARD_DOMAIN = Buffer.from('ourodb shard proof v1\0');
/** Ranges per challenge, and the bytes of each (fewer for a smaller block). */
export const PROOF_RANGES = 4;
export const PROOF_RANGE_BYTES = 4096;
/** Largest challenge a holder answers: ranges and bytes per range. */
const MAX_RANGES = 16;
const MAX_RANGE_BYTES = 64 * 1024;

export type Range = [offset: number, length: number];

export interface Challenge {
  nonce: Uint8Array;
  ranges: Range[];
  answer: Uint8Array;
}

export interface ProofConfig {
  enabled: boolean;
  intervalMs: number;
  perRound: number;
  deadlineMs: number;
  stock: number;
}

/** The answer to a challenge, over the bytes of its ranges (in the same order). */
export function proofAnswer(blockId: Uint8Array, nonce: Uint8Array, ranges: Range[], bytes: Uint8Array[]): Buffer {
  return answerOver(crypto.createHmac('sha256', nonce).update(DOMAIN).update(blockId), ranges, bytes);
}

/** The answer to a challenge of shard `index` of a block, over the bytes of its ranges in the shard. */
export function shardProofAnswer(blockId: Uint8Array, index: number, nonce: Uint8Array, ranges: Range[], bytes: Uint8Array[]): Buffer {
  return answerOver(crypto.createHmac('sha256', nonce).update(SHARD_DOMAIN).update(blockId).update(Uint8Array.of(index)), ranges, bytes);
}

function answerOver(h: crypto.Hmac, ranges: Range[], bytes: Uint8Array[]): Buffer {
  const head = Buffer.alloc(12);
  ranges.forEach(([offset, length], i) => {
    head.writeBigUInt64BE(BigInt(offset), 0);
    head.writeUInt32BE(length, 8);
    h.update(head).update(bytes[i]!);
  });
  return h.digest();
}

/** Random ranges within a block of `size` bytes. */
export function pickRanges(size: number): Range[] {
  const length = Math.min(PROOF_RANGE_BYTES, size);
  const ranges: Range[] = [];
  for (let i = 0; i < PROOF_RANGES; i++) ranges.push([size > length ? crypto.randomInt(0, size - length + 1) : 0, length]);
  return ranges;
}

/** Reads the ranges of a block file; a range past its end is corruption (the file is not the block). */
export async function readRanges(file: string, ranges: Range[]): Promise<Buffer[]> {
  const handle = await fs.promises.open(file, 'r').catch((err: unknown) => {
    throw ioError(`open ${file}`, err);
  });
  try {
    const out: Buffer[] = [];
    for (const [offset, length] of ranges) {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buf, 0, length, offset);
      if (bytesRead !== length) throw new CorruptionError(`${file} ends before ${offset + length}`, { location: { file } });
      out.push(buf);
    }
    return out;
  } finally {
    await handle.close();
  }
}

/** Fresh challenges for shard `index` of block `id`, from the shard's bytes. */
export function makeShardChallenges(shard: Uint8Array, id: string, index: number, count: number): Challenge[] {
  const idBytes = blockIdBytes(id);
  const out: Challenge[] = [];
  for (let i = 0; i < count; i++) {
    const nonce = crypto.randomBytes(32);
    const ranges = pickRanges(shard.length);
    out.push({ nonce, ranges, answer: shardProofAnswer(idBytes, index, nonce, ranges, ranges.map(([o, l]) => shard.subarray(o, o + l))) });
  }
  return out;
}

/** Fresh challenges for a block from a copy of it that this node holds. */
export async function makeChallenges(file: string, id: string, size: number, count: number): Promise<Challenge[]> {
  const idBytes = blockIdBytes(id);
  const out: Challenge[] = [];
  for (let i = 0; i < count; i++) {
    const nonce = crypto.randomBytes(32);
    const ranges = pickRanges(size);
    out.push({ nonce, ranges, answer: proofAnswer(idBytes, nonce, ranges, await readRanges(file, ranges)) });
  }
  return out;
}

/** How often LoopWatch's timer ticks. */
const WATCH_TICK_MS = 50;
/** How long LoopWatch remembers a late tick (longer than any challenge waits: four deadlines). */
const WATCH_KEEP_MS = 10 * 60_000;

/**
 * How long this process's event loop was held up since a given moment: a timer ticking every
 * WATCH_TICK_MS notes each tick that came late, and by how much. A challenger whose own loop was
 * busy (a loaded machine: coding blocks, collecting garbage, several nodes on two cores) reads an
 * answer late that arrived in time, and every challenge of the round alike; that delay is not the
 * holder's doing, so it is taken off the answer's time before the answer is judged late. A holder
 * that is slow itself is still late: only this process's own hold-ups are taken off.
 */
export class LoopWatch {
  #timer: NodeJS.Timeout | undefined;
  #last = performance.now();
  /** Late ticks: when each came (performance.now()) and how late. */
  readonly #held: Array<{ at: number; ms: number }> = [];

  start(): void {
    this.#last = performance.now();
    this.#timer ??= setInterval(() => {
      const now = performance.now();
      const late = now - this.#last - WATCH_TICK_MS;
      this.#last = now;
      if (late > 0) this.#held.push({ at: now, ms: late });
      while (this.#held.length > 0 && this.#held[0]!.at < now - WATCH_KEEP_MS) this.#held.shift();
    }, WATCH_TICK_MS);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Milliseconds the loop was held up between `from` (performance.now()) and now: the late ticks
   * since, each counted no further back than `from`, and the hold-up under way (a tick overdue
   * now: the callback reading this may run before the timer does).
   */
  heldSince(from: number): number {
    const now = performance.now();
    let ms = 0;
    for (const h of this.#held) if (h.at > from) ms += Math.min(h.ms, h.at - from);
    if (this.#timer) ms += Math.max(0, Math.min(now - Math.max(this.#last, from), now - this.#last - WATCH_TICK_MS));
    return ms;
  }
}

/** Where the prover counts its verdicts (NodeMetrics implements it). */
export interface ProofMetrics {
  proof(result: ProofResult | 'undecided'): void;
}

/** What the prover needs of its node and replicator. */
export interface ProverHost {
  readonly peerId: string;
  readonly log: Logger;
  readonly metrics: ProofMetrics;
  memberViews(): Array<{ peerId: string; self: boolean; status: 'member' | 'revoked' | 'left'; state: string | null; since: number | null; lastHeard: number | null; quarantined: boolean }>;
  handle(name: string, handler: (message: unknown, ctx: { peer: string; signal: AbortSignal }) => unknown): Promise<void>;
  request(peer: string, name: string, message: unknown, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<unknown>;
  /** Members block `id` is placed on now. */
  placement(id: string): string[];
  /** Members known to hold block `id` durably (this node's own blocks). */
  holdersOf(id: string): ReadonlySet<string> | undefined;
  /** `peer` said, to a challenge sent at `askedAt` (performance.now()), that it lacks block `id`: not asked for it until confirmed again. */
  unconfirm(id: string, peer: string, askedAt: number): void;
  /** Whether this node lacks block `id` because it removed its copy as surplus (a placement change in flight). */
  removedSurplus(id: string): boolean;
  /** Block `id`, sealed here as shards: its K+M and which member holds which shard; undefined for a block kept whole. */
  shardHolders(id: string): { k: number; m: number; byPeer: ReadonlyMap<string, ReadonlySet<number>> } | undefined;
  /** `peer` said, to a challenge, that it lacks shard `index` of block `id`: not asked for it until confirmed again. */
  unconfirmShard(id: string, peer: string, index: number): void;
  /** Whether shard `index` of block `id`, missing here, is a loss: placed here now, and not removed here as a duplicate or as surplus. */
  shardPlaced(id: string, index: number): boolean;
}

const stockPrefix = (id: string) => `p:${id}:`;
/** Shard stock: `/` sorts before `:`, so no block's stock range (`p:<id>:` to `p:<id>;`) holds a shard's. */
const shardStockPrefix = (id: string, k: number, m: number, index: number) => `p:${id}/${k}+${m}/${index}:`;

export interface ProofPair {
  id: string;
  size: number;
  peer: string;
}

const byId = (x: { id: string }, y: { id: string }) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0);

/**
 * The next `perRound` (block, holder) pairs after `after`, going round every pair in (block id,
 * holder) order. The position is a pair, not a block: were it a block, a round that filled up
 * half-way through a block's holders would skip the rest, and when every round covered all the
 * blocks (pairs just over perRound) the same holder of the same block would never be asked.
 */
export function nextPairs(blocks: ReadonlyArray<{ id: string; size: number }>, holdersOf: (id: string) => string[], perRound: number, after?: ProofPair): ProofPair[] {
  const sorted = [...blocks].sort(byId);
  const out: ProofPair[] = [];
  if (sorted.length === 0 || perRound < 1) return out;
  const found = after ? sorted.findIndex((b) => b.id >= after.id) : 0;
  const first = found < 0 ? 0 : found;
  // Visits the first block twice: its holders after the cursor first, those up to it last.
  for (let k = 0; k <= sorted.length && out.length < perRound; k++) {
    const b = sorted[(first + k) % sorted.length]!;
    const atCursor = after !== undefined && b.id === after.id;
    if (k === sorted.length && !atCursor) break;
    for (const peer of [...holdersOf(b.id)].sort()) {
      if (atCursor && (k === 0 ? peer <= after.peer : peer > after.peer)) continue;
      out.push({ id: b.id, size: b.size, peer });
      if (out.length >= perRound) break;
    }
  }
  return out;
}

export class Prover {
  readonly #host: ProverHost;
  readonly #ledger: Ledger;
  readonly #shelf: Shelf;
  readonly #db: OuroDB | undefined;
  readonly #config: ProofConfig;
  readonly #stop = new AbortController();
  readonly #tasks = new Set<Promise<unknown>>();
  #timer: NodeJS.Timeout | undefined;
  #round: Promise<void> | undefined;
  /** This process's own hold-ups, taken off an answer's time (see LoopWatch). */
  readonly #watch = new LoopWatch();
  #unsubscribe: (() => void) | undefined;
  /** Round-robin position: the last (block, holder) pair challenged. */
  #cursor: ProofPair | undefined;

  constructor(host: ProverHost, ledger: Ledger, shelf: Shelf, db: OuroDB | undefined, config: ProofConfig) {
    this.#host = host;
    this.#ledger = ledger;
    this.#shelf = shelf;
    this.#db = db;
    this.#config = config;
  }

  async start(): Promise<void> {
    await this.#host.handle('proof', (m) => this.#answer(m));
    if (!this.#db || !this.#config.enabled) return;
    // Stock is made while the freshly sealed block is at hand (and in the page cache).
    this.#unsubscribe = this.#db.onSealed((b) => this.#track(this.#restock(b.id, b.size)).catch((err: unknown) => this.#host.log.warn({ event: 'proof-stock-failed', id: b.id, err: errorText(err) }, 'could not make proof challenges for a block')));
    this.#watch.start();
    this.#timer = setInterval(() => this.kick(), this.#config.intervalMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#watch.stop();
    this.#unsubscribe?.();
    this.#stop.abort(new Error('proofs stopped'));
    await Promise.allSettled([...this.#tasks, this.#round]);
  }

  /** Starts a challenge round unless one is running; resolves when it ends. */
  kick(): Promise<void> {
    if (this.#stop.signal.aborted) return Promise.resolve();
    this.#round ??= this.#challengeRound()
      .catch((err: unknown) => this.#host.log.warn({ event: 'proof-round-failed', err: errorText(err) }, 'proof round failed'))
      .finally(() => (this.#round = undefined));
    return this.#round;
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#tasks.add(p);
    void p.finally(() => this.#tasks.delete(p)).catch(() => {});
    return p;
  }

  async #restock(id: string, size: number): Promise<void> {
    const file = this.#shelf.path(id);
    const challenges = await makeChallenges(file, id, size, this.#config.stock);
    const batch = this.#ledger.store.batch();
    for (const c of challenges) batch.put(stockPrefix(id) + Buffer.from(c.nonce).toString('hex'), Buffer.from(JSON.stringify({ r: c.ranges, a: Buffer.from(c.answer).toString('hex') })));
    await batch.write({ sync: true });
  }

  /**
   * Stock for every shard of coded block `id` at K+M, from the whole copy here coded again (one
   * encode serves all K+M shards' stock).
   */
  async #restockShards(id: string, size: number, k: number, m: number): Promise<void> {
    const file = this.#shelf.path(id);
    const block = await fs.promises.readFile(file).catch((err: unknown) => {
      throw ioError(`read ${file}`, err);
    });
    if (block.length !== size) throw new CorruptionError(`${file} has ${block.length} bytes, not ${size}`, { location: { file } });
    const shards = await (await loadCodec()).encode(block, k, m);
    const batch = this.#ledger.store.batch();
    shards.forEach((shard, index) => {
      for (const c of makeShardChallenges(shard, id, index, this.#config.stock)) batch.put(shardStockPrefix(id, k, m, index) + Buffer.from(c.nonce).toString('hex'), Buffer.from(JSON.stringify({ r: c.ranges, a: Buffer.from(c.answer).toString('hex') })));
    });
    await batch.write({ sync: true });
  }

  /**
   * Takes one challenge out of the stock under `prefix` (made first by `restock` if there is none
   * and the block is here): block `id`'s, or one of its shards'.
   */
  async #take(id: string, prefix: string, restock: () => Promise<void>): Promise<Challenge | undefined> {
    const store = this.#ledger.store;
    const range = { gte: prefix, lt: `${prefix.slice(0, -1)};`, limit: 1 };
    let entry: [string, Buffer] | undefined;
    for await (const e of store.iterator(range)) entry = e;
    if (!entry) {
      if (!(await this.#shelf.has(id))) return undefined;
      await restock();
      for await (const e of store.iterator(range)) entry = e;
      if (!entry) return undefined;
    }
    const [key, value] = entry;
    // Struck out durably before it is sent: a crash never makes a nonce serve twice.
    await store.del(key, { sync: true });
    const v = JSON.parse(value.toString('utf8')) as { r: Range[]; a: string };
    return { nonce: Buffer.from(key.slice(prefix.length), 'hex'), ranges: v.r, answer: Buffer.from(v.a, 'hex') };
  }

  /** One round: up to perRound (block, holder) pairs, going round this database's blocks. */
  async #challengeRound(): Promise<void> {
    const db = this.#db!;
    const self = this.#host.peerId;
    const views = new Map(this.#host.memberViews().map((m) => [m.peerId, m]));
    const eligible = (p: string) => {
      const m = views.get(p);
      return p !== self && m !== undefined && m.status === 'member' && m.state === 'alive' && !m.quarantined;
    };
    const holdersHere = (id: string) => {
      // A coded block: the members holding its shards, by what they confirmed (whatever their
      // place in the ranking now: a shard repair put elsewhere is challenged where it is).
      const coded = this.#host.shardHolders(id);
      if (coded) return [...coded.byPeer].filter(([peer, held]) => held.size > 0 && eligible(peer)).map(([peer]) => peer);
      const holders = this.#host.holdersOf(id);
      return this.#host.placement(id).filter((peer) => eligible(peer) && holders?.has(peer) === true);
    };
    const own: Array<{ id: string; size: number }> = [];
    for await (const b of db.blocks()) if (!b.adopted) own.push(b);
    const pairs = nextPairs(own, holdersHere, this.#config.perRound, this.#cursor);
    this.#cursor = pairs.at(-1) ?? this.#cursor;
    if (pairs.length === 0) return;
    const results = await Promise.all(pairs.map((p) => this.#challenge(p.id, p.size, p.peer)));
    const verdicts = results.filter((r): r is { s: string; blk: string; r: ProofResult; ms: number } => r !== undefined);
    if (verdicts.length > 0 && !this.#stop.signal.aborted) await this.#ledger.record({ k: 'proofs', b: verdicts });
  }

  async #challenge(id: string, size: number, peer: string): Promise<{ s: string; blk: string; r: ProofResult; ms: number } | undefined> {
    // A coded block: one shard the peer holds (the lowest index; a member holds one shard of a
    // block unless the cluster is short of K+M members).
    const coded = this.#host.shardHolders(id);
    const index = coded && [...(coded.byPeer.get(peer) ?? [])].sort((x, y) => x - y)[0];
    if (coded && index === undefined) return undefined;
    const c = coded ? await this.#take(id, shardStockPrefix(id, coded.k, coded.m, index!), () => this.#restockShards(id, size, coded.k, coded.m)) : await this.#take(id, stockPrefix(id), () => this.#restock(id, size));
    if (!c) return undefined;
    const deadline = this.#config.deadlineMs;
    const started = performance.now();
    const sentAt = Date.now();
    let result: ProofResult | undefined;
    try {
      const reply = (await this.#host.request(peer, 'proof', index !== undefined ? { v: SHARD_PROOF_VERSION, id, index, k: coded!.k, m: coded!.m, nonce: c.nonce, ranges: c.ranges } : { v: PROOF_VERSION, id, nonce: c.nonce, ranges: c.ranges }, { timeoutMs: deadline * 4, signal: this.#stop.signal })) as { answer?: unknown; missing?: unknown; placed?: unknown } | null;
      // The holder's time: this process's own hold-ups meanwhile are not its doing.
      const ms = performance.now() - started - this.#watch.heldSince(started);
      if (reply?.missing === true) {
        result = reply.placed === false ? undefined : 'fail';
        // Its claim is withdrawn, as by a block-have "no": one loss is one failure, not one per
        // round, and no copy removed by a placement change is asked for again (proofs check claims).
        if (index !== undefined) this.#host.unconfirmShard(id, peer, index);
        else this.#host.unconfirm(id, peer, started);
      } else if (!(reply?.answer instanceof Uint8Array)) result = 'fail';
      else if (!Buffer.from(reply.answer).equals(Buffer.from(c.answer))) result = 'fail';
      else result = ms > deadline ? (this.#reachable(peer, sentAt, false) ? 'late' : this.#unreachable(peer, id)) : 'pass';
    } catch (err) {
      if (this.#stop.signal.aborted) return undefined;
      const code = err instanceof OuroError ? err.code : undefined;
      // No answer in time is late, from a holder that was reachable; an error the holder sent
      // about the block is a failure; anything else (a connection lost, a refusal during a list
      // change) decides nothing.
      result = code === 'OURO_TIMEOUT' ? (this.#reachable(peer, sentAt, true) ? 'late' : this.#unreachable(peer, id)) : code === 'OURO_CORRUPTION' || code === 'OURO_IO_ERROR' || code === 'OURO_NOT_FOUND' ? 'fail' : undefined;
      if (result === undefined && code !== 'OURO_TIMEOUT') this.#host.log.debug({ event: 'proof-undecided', peer, id, err: errorText(err) }, 'proof challenge got no verdict');
    }
    const ms = Math.round(performance.now() - started);
    const heldMs = Math.round(this.#watch.heldSince(started));
    this.#host.metrics.proof(result ?? 'undecided');
    if (result === undefined) return undefined;
    const level = result === 'pass' ? 'debug' : 'warn';
    this.#host.log[level]({ event: `proof-${result}`, peer, id, ...(index !== undefined ? { index } : {}), ms, ...(heldMs > 0 ? { heldMs } : {}) }, `proof of storage: ${result}`);
    return { s: peer, blk: id, r: result, ms };
  }

  /**
   * Whether a slow or missing answer from `peer` to a challenge sent at `sentAt` (ms since the
   * epoch) is the holder's doing: the failure detector has seen it alive without a break since
   * before the challenge went out and, when no answer came at all, heard from it after that (it
   * answered heartbeats, not the challenge). A partition, a link down, or a holder stalled past
   * the detector's suspect time silences the heartbeats too: the holder went suspect (its state
   * changed after sentAt) or was not heard from since, and the challenge decides nothing. A
   * partition must not look like a cheat, and a holder that stores nothing and fetches what it is
   * asked for from elsewhere still answers heartbeats: that one is late.
   */
  #reachable(peer: string, sentAt: number, noAnswer: boolean): boolean {
    const m = this.#host.memberViews().find((v) => v.peerId === peer);
    if (m?.state !== 'alive' || m.since === null || m.since > sentAt) return false;
    return !noAnswer || (m.lastHeard !== null && m.lastHeard > sentAt);
  }

  /** No verdict for a challenge its holder could not be reached for (logged and counted as undecided). */
  #unreachable(peer: string, id: string): undefined {
    this.#host.log.info({ event: 'proof-unreachable', peer, id }, 'proof challenge unanswered while the holder was unreachable: no verdict');
    return undefined;
  }

  /** The holder's side: the answer over the ranges of the block as held here. */
  async #answer(m: unknown): Promise<{ answer: Uint8Array } | { missing: true; placed: boolean }> {
    const q = m as { v?: unknown; id?: unknown; index?: unknown; nonce?: unknown; ranges?: unknown } | null;
    if (q === null || typeof q !== 'object' || (q.v !== PROOF_VERSION && q.v !== SHARD_PROOF_VERSION) || typeof q.id !== 'string' || !(q.nonce instanceof Uint8Array) || q.nonce.length !== 32 || !Array.isArray(q.ranges) || q.ranges.length === 0 || q.ranges.length > MAX_RANGES) throw new ProtocolError('malformed proof challenge');
    const ranges = q.ranges.map((r: unknown) => {
      if (!Array.isArray(r) || r.length !== 2 || !Number.isSafeInteger(r[0]) || r[0] < 0 || !Number.isSafeInteger(r[1]) || r[1] < 1 || r[1] > MAX_RANGE_BYTES) throw new ProtocolError('malformed proof range');
      return [r[0], r[1]] as Range;
    });
    const id = q.id;
    const idBytes = blockIdBytes(id);
    if (q.v === SHARD_PROOF_VERSION) {
      if (!Number.isSafeInteger(q.index) || (q.index as number) < 0 || (q.index as number) > 255) throw new ProtocolError('malformed proof challenge: shard index');
      // The challenger's K+M (since the re-coding to another K+M): the set of that coding. A
      // challenge without it means the block's default set.
      return this.#answerShard(idBytes, id, q.index as number, q.nonce, ranges, codingOf(q));
    }
    if (!(await this.#shelf.has(id))) return this.#missing(id);
    try {
      return { answer: proofAnswer(idBytes, q.nonce, ranges, await readRanges(this.#shelf.path(id), ranges)) };
    } catch (err) {
      // Removed between the check and the read (a surplus removal, a deletion): missing, not an I/O error.
      if (!(await this.#shelf.has(id))) return this.#missing(id);
      throw err;
    }
  }

  /**
   * The answer for shard `index` of block `id` as held here. A shard not held here is missing;
   * placed (a failure) when this node is among the block's shard placement now and did not
   * remove it itself, as a duplicate of another member's or as surplus (the challenger learns
   * that at its next pass, or from this answer).
   */
  async #answerShard(idBytes: Uint8Array, id: string, index: number, nonce: Uint8Array, ranges: Range[], coding: Coding | undefined): Promise<{ answer: Uint8Array } | { missing: true; placed: boolean }> {
    const file = await this.#shelf.shards.path(id, index, coding);
    try {
      return { answer: shardProofAnswer(idBytes, index, nonce, ranges, await readRanges(file, ranges)) };
    } catch (err) {
      if ((err as { cause?: { code?: string } }).cause?.code !== 'ENOENT') throw err;
      return { missing: true, placed: this.#host.shardPlaced(id, index) };
    }
  }

  /**
   * The answer for a block not held here. `placed: false` (no verdict) when the block is not
   * placed here now, or when this node removed its copy as surplus: a placement change either way.
   * The second covers a member whose view changed back since (it removed the copy while its
   * ledger held it quarantined, and applied the clear after), which the writer would otherwise
   * fail for a copy it confirmed before that removal.
   */
  #missing(id: string): { missing: true; placed: boolean } {
    return { missing: true, placed: this.#host.placement(id).includes(this.#host.peerId) && !this.#host.removedSurplus(id) };
  }
}
