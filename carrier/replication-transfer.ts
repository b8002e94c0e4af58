/**
 * Block transfers between members (carrier/replication.ts describes the protocols): pushes
 * (block-put, block-put-small), receiving them, and fetches (block-get), both ways.
 *
 * Owns, and alone changes:
 *   - #receiving: the blocks being received now (a second push of one is told to wait), set and
 *     cleared by #received around each receipt;
 *   - #fetching: the fetches under way (a second fetch of a block joins the first), by fetchBlock;
 *   - #limit: the repair pushes' rate limit (pushes right after a seal are not limited);
 *   - `fetched`: blocks fetched in since start (#fetch).
 * Confirmations of who holds a block go to Holders (confirm(); sealed() for a seal); nothing else
 * here is shared. Callers: Replicator (its seal subscription calls afterSeal; it serves onPut,
 * onPutSmall and onGet; fetchBlock is its ReplicaSource side), and Repair (pushTo, fetchBlock,
 * `receiving`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Stream } from '@libp2p/interface';
import { CorruptionError, OuroError, ProtocolError, TimeoutError, errorText, ioError, syncFailure } from '../lib/errors.js';
import { ensureDir } from '../lib/fsutil.js';
import { nodeVfs } from '../lib/vfs/vfs.js';
import { type SeenEntries, EntryHashStream } from '../blockstore/entry-hashes.js';
import { unwrapReply } from './carrier.js';
import { encodeFrame } from './frames.js';
import { type Holders, type ReplicationContext, type ReplicationHost, MS_PER_MIB, PROTOCOL_VERSION, onTransferStream, transferSignal } from './replication-core.js';
import type { Shards } from './replication-shards.js';
import { send, sendReleasing } from './send.js';
import { type Shelf, blockIdBytes } from './shelf.js';
import { StreamReader } from './stream-reader.js';

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

export class Transfers {
  readonly #ctx: ReplicationContext;
  readonly #host: ReplicationHost;
  readonly #shelf: Shelf;
  readonly #holders: Holders;
  readonly #signal: AbortSignal;
  readonly #limit: RateLimit;
  /** Blocks being received, so a second push of one waits instead of writing it twice. */
  readonly #receiving = new Map<string, Promise<boolean>>();
  readonly #fetching = new Map<string, Promise<void>>();
  #fetched = 0;

  readonly #shards: Shards;

  constructor(ctx: ReplicationContext, holders: Holders, shards: Shards) {
    this.#shards = shards;
    this.#ctx = ctx;
    this.#host = ctx.host;
    this.#shelf = ctx.shelf;
    this.#holders = holders;
    this.#signal = ctx.signal;
    this.#limit = new RateLimit(ctx.config.repairBytesPerSec);
  }

  /** Since start: blocks fetched in. */
  get fetched(): number {
    return this.#fetched;
  }

  /** Waits until `bytes` more repair traffic fits the repair rate limit (shard repairs share it). */
  repairBudget(bytes: number): Promise<void> {
    return this.#limit.take(bytes, this.#signal);
  }

  /** Blocks being received now. */
  get receiving(): number {
    return this.#receiving.size;
  }

  // ------------------------------------------------------------------ writer side

  /**
   * A block this database just sealed: push it to its placement (at ec K+M, from the small-block
   * line up, its shards to their members instead: Shards.push), then tell the keyed members.
   */
  async afterSeal(id: string, size: number): Promise<void> {
    const self = this.#host.peerId;
    this.#holders.sealed(id);
    const ec = this.#holders.codedAs(size);
    const targets = ec ? [] : this.#holders.placement(id).filter((p) => p !== self);
    if (ec) await this.#shards.push(id, size, ec).catch((err: unknown) => this.#ctx.failed('shard-push', self, id, err));
    await Promise.all(targets.map((peer) => this.pushTo(peer, id, size, false).catch((err: unknown) => this.#ctx.failed('push', peer, id, err))));
    const others = this.#host.memberViews().filter((m) => !m.self && m.status === 'member' && m.state !== 'dead' && !targets.includes(m.peerId));
    await Promise.all(
      others.map((m) =>
        this.#host.request(m.peerId, 'block-announce', { v: PROTOCOL_VERSION, blocks: [{ id, size }] }, { signal: this.#signal }).catch((err: unknown) => this.#host.log.debug({ event: 'announce-failed', peer: m.peerId, err: errorText(err) }, 'block announce failed')),
      ),
    );
  }

  // ------------------------------------------------------------------ transfers

  #transferSignal(size: number): AbortSignal {
    return transferSignal(this.#signal, this.#host.requestTimeoutMs, size);
  }

  /** Runs `fn` on a `protocol` stream to `peer` for one block transfer of about `budgetBytes` (onTransferStream). */
  #transfer<T>(peer: string, protocol: 'block-put' | 'block-get', what: string, budgetBytes: number, fn: (stream: Stream, reader: StreamReader, signal: AbortSignal) => Promise<T>): Promise<T> {
    return onTransferStream(this.#host, peer, protocol, what, this.#transferSignal(budgetBytes), fn);
  }

  /** Pushes block `id` to `peer`; true once the peer holds it durably (false: busy receiving it from someone else). */
  async pushTo(peer: string, id: string, size: number, limited: boolean): Promise<boolean> {
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
    if (limited) await this.#limit.take(size, this.#signal);
    let answer: { stored?: unknown; busy?: unknown };
    try {
      answer = (await this.#host.request(peer, 'block-put-small', { v: PROTOCOL_VERSION, id, size, bytes, ...(limited ? { repair: true } : {}) }, { signal: this.#signal })) as typeof answer;
    } catch (err) {
      // A member from before block-put-small answers that it does not serve it: use a stream.
      if (err instanceof OuroError && err.code === 'OURO_PROTOCOL' && /is not served/.test(err.message)) return undefined;
      throw err;
    }
    if (answer?.busy === true) return false;
    if (typeof answer?.stored !== 'boolean') throw new ProtocolError(`block-put-small ${id} to ${peer}: malformed reply`);
    this.#holders.confirm(id, peer);
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
        this.#holders.confirm(id, peer);
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
      this.#holders.confirm(id, peer);
      this.#host.metrics.replicated('out', size);
      return true;
    });
  }

  async onPut(stream: Stream, peer: string): Promise<void> {
    const reader = new StreamReader(stream);
    const max = this.#host.maxFrameBytes;
    const head = (await reader.frame(max)) as { v?: unknown; id?: unknown; size?: unknown; repair?: unknown } | null;
    const reply = (body: unknown) => send(stream, encodeFrame({ ok: true, body }, max), this.#signal);
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
      await send(stream, encodeFrame({ ok: false, code: err instanceof OuroError ? err.code : 'OURO_IO_ERROR', message: err instanceof Error ? err.message : String(err) }, max), this.#signal).catch(() => {});
      throw err;
    }
  }

  /** block-put-small: a whole small block in one request; the same checks and steps as onPut. */
  async onPutSmall(m: unknown, peer: string): Promise<{ stored: boolean } | { busy: true }> {
    const q = m as { v?: unknown; id?: unknown; size?: unknown; bytes?: unknown; repair?: unknown } | null;
    if (q === null || typeof q !== 'object' || q.v !== PROTOCOL_VERSION || typeof q.id !== 'string' || !(q.bytes instanceof Uint8Array) || q.size !== q.bytes.byteLength || q.bytes.byteLength > SMALL_PUSH_MAX_BYTES) {
      throw new ProtocolError(`malformed block-put-small from ${peer}`);
    }
    const { id, bytes } = q as { id: string; bytes: Uint8Array };
    blockIdBytes(id);
    const held = await this.#holdsOrReceives(id);
    if (held === 'busy') return { busy: true };
    if (held === 'held') return { stored: false };
    return { stored: await this.#received(id, bytes.byteLength, peer, q.repair === true, async () => [bytes], bytes) };
  }

  /** Whether block `id` is held (or was released) here, or is being received now; undefined if neither. */
  async #holdsOrReceives(id: string): Promise<'held' | 'busy' | undefined> {
    // Both asked at once: on a busy replica each file-system call waits ~0.3-0.9 ms for its turn,
    // and every push waits for this answer.
    const [has, tombstoned] = await Promise.all([this.#shelf.has(id), this.#shelf.tombstoned(id)]);
    if (has || tombstoned) return 'held';
    return this.#receiving.has(id) ? 'busy' : undefined;
  }

  /**
   * Receives block `id` (`size` bytes from what `start` returns) into staging, fsyncs it, and
   * has the shelf check and keep it; registered in #receiving meanwhile, so a second push of
   * the same block is told to wait. True when the block was kept, false when it was already.
   * `whole`: the block's bytes, when it came whole in one request (the shelf checks them rather
   * than reading the file back).
   */
  async #received(id: string, size: number, peer: string, repair: boolean, start: () => Promise<AsyncIterable<Uint8Array> | Iterable<Uint8Array>>, whole?: Uint8Array): Promise<boolean> {
    const receipt = (async () => {
      const source = await start();
      const signal = this.#transferSignal(size);
      const staging = await this.#shelf.staging(id);
      const seen = await this.#receive(source, staging, size, signal);
      const stored = await this.#shelf.keep(staging, id, seen, whole);
      this.#holders.kept(id);
      return stored;
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
    // The shelf makes its incoming/ directory once per process (shelf.ts, madeDirs): one removed
    // from outside since is made again here.
    const create = () => fs.promises.open(staging, 'wx', 0o600);
    const handle = await create()
      .catch(async (err: unknown) => {
        if ((err as { code?: string }).code !== 'ENOENT') throw err;
        await ensureDir(nodeVfs, path.dirname(staging));
        return create();
      })
      .catch((err: unknown) => {
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

  async onGet(stream: Stream): Promise<void> {
    const reader = new StreamReader(stream);
    const max = this.#host.maxFrameBytes;
    const m = (await reader.frame(max)) as { v?: unknown; id?: unknown } | null;
    if (m === null || typeof m !== 'object' || m.v !== PROTOCOL_VERSION || typeof m.id !== 'string') throw new ProtocolError('malformed block-get');
    blockIdBytes(m.id);
    const file = this.#shelf.path(m.id);
    const handle = await fs.promises.open(file, 'r').catch(() => undefined);
    if (!handle) {
      await send(stream, encodeFrame({ ok: false, code: 'OURO_NOT_FOUND', message: `block ${m.id} is not held here` }, max), this.#signal);
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
    // At ec K+M a block may be stored as shards: read those first (the whole copies, the writer's
    // and any repair made, are the fallback). A block never coded answers no manifest: fetched whole.
    const ec = this.#host.ecPolicy ?? null;
    let shardError: unknown;
    if (ec) {
      try {
        const block = await this.#shards.fetch(id, ec);
        if (block) {
          const staging = await this.#shelf.staging(id);
          const seen = await this.#receive([block], staging, block.length, this.#signal);
          await this.#shelf.keep(staging, id, seen);
          this.#holders.kept(id);
          this.#fetched++;
          return;
        }
      } catch (err) {
        shardError = err;
        this.#host.log.debug({ event: 'shard-read-failed', id, err: errorText(err) }, 'block read from shards failed');
      }
    }
    try {
      await this.#fetchWhole(id);
    } catch (err) {
      // The shards' answer says more (how many of K could be had) than "no member holds it".
      throw shardError ?? err;
    }
  }

  async #fetchWhole(id: string): Promise<void> {
    const self = this.#host.peerId;
    const placed = this.#holders.placement(id);
    const views = this.#host.memberViews();
    const others = views.filter((m) => m.status === 'member' && !placed.includes(m.peerId)).map((m) => m.peerId);
    // Members silent to heartbeats (suspect, then dead) are asked last: a transfer from one waits
    // for its time limit before the next member is tried (placement order otherwise kept).
    const silent: Record<string, number> = { suspect: 1, dead: 2 };
    const rank = (peer: string) => silent[views.find((m) => m.peerId === peer)?.state ?? 'alive'] ?? 0;
    let last: unknown = new OuroError('OURO_NOT_FOUND', `no member holds block ${id}`);
    for (const peer of [...placed, ...others].sort((x, y) => rank(x) - rank(y))) {
      if (peer === self) continue;
      try {
        await this.#fetchFrom(peer, id);
        this.#fetched++;
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
      this.#holders.kept(id);
      this.#host.metrics.replicated('in', head.size as number);
      this.#host.served(peer, head.size as number);
    });
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
