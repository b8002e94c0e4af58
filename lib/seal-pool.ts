/**
 * Chunk ids and sealing (compress, encrypt, hash) of large entries on worker threads, so that
 * ingest uses every core: the main thread cuts chunks and does the I/O and index work while
 * workers do the per-byte crypto. A lone small entry is handled inline by the caller: a round trip
 * to a worker (tens of microseconds) costs more than hashing and sealing a few KiB.
 *
 * Small entries written while other puts are in flight are the exception (sealSmall): object
 * records too large for a pack (over 16 KiB; smaller ones are packed, lib/pack.ts), and chunks
 * under OFFLOAD_MIN_BYTES (the single chunk of a 4-32 KiB value, or a large value's last one).
 * They cross to a worker in batches, one message each way per batch, so the round trip is
 * shared. That moves the entry's id (HMAC) and its sealing to another core: about 40% of a
 * 1 KiB put's main-thread CPU for a record, and for the chunks of the 4-32 KiB files of a source
 * tree, compressed text, a sixth of the main thread's time. A batch goes as soon as it holds 16
 * entries, so the worker seals it while the main thread builds the next one; batches of a whole
 * event-loop turn made each entry wait for all of them (docs/design.md has the measurements).
 * Such a chunk is sealed before the caller knows whether it is stored already (the id comes
 * back with the sealed bytes): a duplicate costs the worker a seal for nothing, not the main
 * thread a round trip.
 *
 * A chunk goes to a worker once and stays there for two steps, so dedup still happens before
 * any sealing work: identify() hashes it and returns its id; the caller looks the id up and
 * then calls seal() (new chunk) or drop() (already stored). A chunk lies in a slot of `slab`
 * (lib/chunk-slab.ts: memory shared with the workers, so only its offset crosses, and the worker
 * seals it in place there) or, when the slab is full, crosses once, by transfer, in a buffer from
 * `buffers` (lib/chunk-buffers.ts) unless the caller owns one already; the worker seals it in place and moves it back, and the sealed entry's release()
 * returns the buffer to `buffers` once the block has written it. A dropped chunk's buffer comes
 * back the same way. So a streamed put allocates no memory per chunk on either thread beyond
 * what node:crypto allocates for the ciphertext.
 *
 * Workers derive the database keys once, at start, from what they get through workerData (same
 * process; keys never leave memory). Each worker thread draws its own nonce prefix (lib/crypto.ts), so nonces
 * stay unique across threads without coordination.
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { EntryKind } from '../blockstore/format.js';
import { ChunkBuffers } from './chunk-buffers.js';
import { ChunkSlab } from './chunk-slab.js';
import { DEFAULT_CHUNK_SIZES } from './chunker.js';
import { SEAL_OVERHEAD_BYTES, type SealedEntry } from './entry.js';
import { FailedError } from './errors.js';

/** Chunks at least this large are hashed and sealed on a worker. */
export const OFFLOAD_MIN_BYTES = 32 * 1024;

/** Messages to a worker. */
export type PoolRequest =
  | { op: 'identify'; job: number; plain: Uint8Array }
  /** A chunk in the slab: `length` bytes at `at`, with room for its sealed entry up to `capacity`. */
  | { op: 'identify'; job: number; at: number; length: number; capacity: number; seal?: { kind: EntryKind; compress: boolean } }
  | { op: 'seal'; job: number; kind: EntryKind; compress: boolean }
  | { op: 'drop'; job: number }
  /** Entries of one kind (object records or chunks) back to back in `plain`, their lengths in `lengths`: id and seal each. */
  | { op: 'small'; job: number; kind: SmallKind; plain: Uint8Array; lengths: Uint32Array; compress: boolean };

/**
 * Messages from a worker: an id, a sealed entry (bytes transferred; in the chunk's own buffer
 * when it fit), a dropped chunk's buffer handed back (`spare`), or an error.
 */
export type PoolReply =
  | { job: number; id: Uint8Array }
  | { job: number; bytes: Uint8Array; flags: number; plainLength: number; hash: Uint8Array; spare?: ArrayBuffer; id?: Uint8Array }
  /** A chunk sealed in place in the slab: the entry is `length` bytes at `at` (and its id, when identified and sealed at once). */
  | { job: number; at: number; length: number; flags: number; plainLength: number; hash: Uint8Array; id?: Uint8Array }
  | { job: number; spare: ArrayBuffer }
  | { job: number; error: string }
  /** Sealed entries back to back in `bytes`; per entry its length, id, footer hash and flags. */
  | { job: number; small: { bytes: Uint8Array; lengths: Uint32Array; ids: Uint8Array; hashes: Uint8Array; flags: Uint8Array } };

/** What sealSmall takes: an object record (its id is an object id) or a chunk (a chunk id). */
export type SmallKind = EntryKind.Object | EntryKind.Chunk;

/** An entry sealed on a worker: its id and the sealed entry. */
export interface SealedSmall {
  id: Buffer;
  sealed: SealedEntry;
}

/**
 * Bytes of sealing work a handle does on its own thread before it starts a worker (OpenOptions
 * `sealInlineBytes`). A worker is a second V8 isolate with its own heap, young generation and
 * allocator arena: ~40 MiB of RSS in a `ouro put` of a source tree (173-188 MiB with it,
 * 134 MiB without, docs/performance.md "Cost per byte, third round"), while sealing 64 MiB on the
 * main thread costs it ~0.15-0.3 s once (chunk id, zstd probe, ChaCha20-Poly1305, entry hash).
 * So work that stays small (a tree of small files, a few puts) never pays for a worker, and a
 * large ingest starts one after its first 64 MiB, as before.
 */
export const SEAL_INLINE_BYTES = 64 * 1024 * 1024;

/** Spare chunk buffers kept for reuse: about what a streamed put has in flight (SEAL_AHEAD chunks and their writes). */
const IDLE_BUFFER_BYTES = 16 * 1024 * 1024;

/** Entries above this size do not go through sealSmall: a batch should stay a few hundred KiB. */
export const SMALL_BATCH_MAX_BYTES = 64 * 1024;
/** A batch is sent once it holds this many entries or bytes, without waiting for the turn's end. */
const BATCH_ENTRIES = 16;
const BATCH_BYTES = 1024 * 1024;

interface SmallBatch {
  kind: SmallKind;
  compress: boolean;
  plains: Uint8Array[];
  bytes: number;
  waiters: Array<{ resolve: (r: SealedSmall) => void; reject: (err: unknown) => void }>;
}

/** From which a worker derives the database's keys, exactly as DatabaseKeys does. */
export interface WorkerKeys {
  masterKey: Uint8Array;
  databaseId: Uint8Array;
}

/** What a worker starts with: the keys and the pool's slab (lib/chunk-slab.ts). */
export interface WorkerStart extends WorkerKeys {
  slab: SharedArrayBuffer;
}

/**
 * Bytes of the slab chunks share with the workers: SEAL_AHEAD chunks of the default average
 * (256 KiB) being sealed, and a few behind them on their way to disk. A chunk that finds no room
 * takes a buffer of its own from `buffers` instead. A put fills and touches the whole slab, so
 * its size is resident for the process's life: 16 MiB was measured against 8, 4, 2 and 0 on
 * `ouro put` of 1 GiB (GNU time, alternated): peak RSS 128.5-129.3 MiB at 16 (four runs),
 * 120.7-121.4 at 8, 117.0-119.8 at 4, 119.8-121.0 at 2, 123.2-123.8 at 0 (every chunk a buffer
 * of its own, garbage until a collection), CPU and time the same within the noise
 * (docs/performance.md, "The slab's size").
 */
export const SLAB_BYTES = 4 * 1024 * 1024;

/** A chunk held by one worker between identify() and seal()/drop(). */
export interface Ticket {
  readonly id: Buffer;
  readonly slot: Slot;
  readonly job: number;
  /** Where the chunk lies in the slab, or -1 when it went in a buffer of its own. */
  readonly at: number;
}

interface Slot {
  worker: Worker;
  waiting: Map<number, { resolve: (reply: PoolReply) => void; reject: (err: unknown) => void }>;
  held: number;
}

export class SealPool {
  /** Buffers for chunks on their way to a worker and back (see the top of this file). */
  readonly buffers: ChunkBuffers;
  /** The memory streamed chunks are cut into first (lib/chunk-slab.ts). */
  readonly slab: ChunkSlab;
  readonly #keys: WorkerKeys;
  readonly #size: number;
  readonly #slots: Slot[] = [];
  #nextJob = 0;
  #closed = false;
  #batch: SmallBatch | undefined;
  /** Sealing work still to be done inline before a worker is started (see `offload`). */
  #inlineLeft: number;

  /**
   * `chunkMax`: the largest chunk the caller's chunker cuts (sizes the buffers lent).
   * `inlineBytes`: sealing work left to the caller before the first worker (SEAL_INLINE_BYTES).
   * `slabBytes`: the shared slab's size (SLAB_BYTES; 0: every chunk a buffer of its own).
   */
  constructor(keys: WorkerKeys, options: { size?: number; chunkMax?: number; slabBytes?: number; inlineBytes?: number } = {}) {
    this.#keys = keys;
    this.#size = options.size ?? defaultPoolSize();
    this.#inlineLeft = options.inlineBytes ?? SEAL_INLINE_BYTES;
    this.buffers = new ChunkBuffers(OFFLOAD_MIN_BYTES, options.chunkMax ?? DEFAULT_CHUNK_SIZES.max, IDLE_BUFFER_BYTES);
    this.slab = new ChunkSlab(options.slabBytes ?? SLAB_BYTES);
  }

  /**
   * Memory for a chunk of `length` bytes about to be cut: a slot of the slab with room for its
   * sealed entry when the chunk goes to a worker (OFFLOAD_MIN_BYTES and up) and the ring has
   * room, else a buffer of its own (`buffers`). Either is the caller's alone, to pass to
   * identify() with `transfer` true, or to giveBack() if it will not be.
   */
  takeChunk(length: number): Buffer {
    if (length >= OFFLOAD_MIN_BYTES && !this.#closed) {
      const at = this.slab.take(length + SEAL_OVERHEAD_BYTES);
      if (at >= 0) return this.slab.view(at, length);
    }
    return this.buffers.take(length);
  }

  /**
   * Hands back memory from takeChunk() that will not go to identify(): a put that failed first, or
   * a chunk sealed on the caller's thread (Writer, before the first worker). A slot returns to
   * the slab; a buffer of its own to `buffers` (which keeps it only if it is of a size it lends).
   */
  giveBack(chunk: Uint8Array): void {
    if (chunk.buffer === this.slab.memory) this.slab.give(chunk.byteOffset);
    else this.buffers.give(chunk.buffer as ArrayBuffer);
  }

  /**
   * Whether an entry of `bytes` should be sealed on a worker (identify, sealSmall) or by the
   * caller on its own thread (false). Once a worker is running, always true. Before that, the
   * first `inlineBytes` of work are the caller's, counted entry by entry; the entry that would
   * go past them starts the worker (the pool spawns on its first call). A worker that failed
   * and left is replaced the same way, at once (the inline allowance is spent by then).
   */
  offload(bytes: number): boolean {
    if (this.#slots.length > 0) return true;
    if (bytes <= this.#inlineLeft) {
      this.#inlineLeft -= bytes;
      return false;
    }
    this.#inlineLeft = 0;
    return true;
  }

  /** Workers running now (0 until the first entry goes to one). */
  get workers(): number {
    return this.#slots.length;
  }

  /**
   * Sends a chunk to the least busy worker and resolves to its chunk id. When `transfer` is true
   * the plaintext's whole ArrayBuffer is handed over (detached here): only for a buffer nobody
   * else holds, such as one from `buffers`. Otherwise the chunk is copied into one.
   */
  async identify(plain: Uint8Array, transfer: boolean): Promise<Ticket> {
    return (await this.#identify(plain, transfer)) as Ticket;
  }

  /**
   * identify() and seal() in one round trip, for a chunk most likely not stored yet (the caller
   * keeps score): the worker seals it right after hashing it, so a chunk that turns out to be
   * stored costs a seal for nothing (release() the entry then), and a new one two messages
   * instead of four. Only a chunk in the slab goes this way; one that found no room there takes
   * the two steps.
   */
  async identifyAndSeal(plain: Uint8Array, transfer: boolean, kind: EntryKind, compress: boolean): Promise<SealedEntry> {
    const r = await this.#identify(plain, transfer, { kind, compress });
    return 'bytes' in r ? r : this.seal(r, kind, compress);
  }

  async #identify(plain: Uint8Array, transfer: boolean, sealAs?: { kind: EntryKind; compress: boolean }): Promise<Ticket | SealedEntry> {
    let own = plain;
    if (!transfer) {
      own = this.takeChunk(plain.byteLength);
      own.set(plain);
    }
    // A chunk in the slab crosses as its offset; the worker sees the same memory.
    const at = own.buffer === this.slab.memory ? own.byteOffset : -1;
    let slot: Slot;
    try {
      slot = this.#pick();
    } catch (err) {
      if (at >= 0) this.slab.give(at);
      throw err;
    }
    const job = this.#nextJob++;
    // A chunk identified and sealed at once is not held by the worker between two calls.
    const holds = !(at >= 0 && sealAs);
    if (holds) slot.held++;
    let reply: PoolReply;
    try {
      reply = at >= 0
        ? await this.#call(slot, { op: 'identify', job, at, length: own.byteLength, capacity: own.byteLength + SEAL_OVERHEAD_BYTES, ...(sealAs ? { seal: sealAs } : {}) })
        : await this.#call(slot, { op: 'identify', job, plain: own }, [own.buffer as ArrayBuffer]);
      if (!('id' in reply) || !reply.id) throw new FailedError('seal worker answered identify with something else');
    } catch (err) {
      // The worker answered (with an error) or is gone: it holds the slot no more.
      if (at >= 0) this.slab.give(at);
      if (holds) slot.held--;
      throw err;
    }
    // Copied into Node's pool of small buffers rather than kept as a view: the reply's id came
    // through structured clone in an ArrayBuffer of its own, and a put keeps every chunk's id
    // until its record commits. An ArrayBuffer each was ~125 B of V8's old space per chunk
    // besides its malloc'ed backing store: 2 MiB at the end of a 4 GiB put (16,384 chunks).
    const id = Buffer.from(reply.id);
    const ticket: Ticket = { id, slot, job, at };
    return holds ? ticket : this.#sealed(reply, ticket, sealAs!.kind);
  }

  /** Seals a chunk identify() sent, on the worker holding it. */
  async seal(ticket: Ticket, kind: EntryKind, compress: boolean): Promise<SealedEntry> {
    ticket.slot.held--;
    let reply: PoolReply;
    try {
      reply = await this.#call(ticket.slot, { op: 'seal', job: ticket.job, kind, compress });
    } catch (err) {
      if (ticket.at >= 0) this.slab.give(ticket.at);
      throw err;
    }
    return this.#sealed(reply, ticket, kind);
  }

  /** The sealed entry a worker answered with, for the chunk `ticket` names. */
  #sealed(reply: PoolReply, ticket: Ticket, kind: EntryKind): SealedEntry {
    if ('at' in reply) {
      // Sealed in place: the slot is the entry's until its write has finished.
      const bytes = this.slab.view(reply.at, reply.length);
      const hash = Buffer.from(reply.hash.buffer, reply.hash.byteOffset, reply.hash.byteLength);
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        this.slab.give(reply.at);
      };
      return { bytes, kind, id: ticket.id, flags: reply.flags, plainLength: reply.plainLength, hash, release };
    }
    // Sealed into a buffer of the worker's own (or failed): a slab chunk's slot is free now.
    if (ticket.at >= 0) this.slab.give(ticket.at);
    if (!('bytes' in reply)) throw new FailedError('seal worker answered seal with something else');
    const memory = reply.bytes.buffer as ArrayBuffer;
    const bytes = Buffer.from(memory, reply.bytes.byteOffset, reply.bytes.byteLength);
    const hash = Buffer.from(reply.hash.buffer, reply.hash.byteOffset, reply.hash.byteLength);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.buffers.give(memory);
    };
    return { bytes, kind, id: ticket.id, flags: reply.flags, plainLength: reply.plainLength, hash, release };
  }

  /**
   * Computes a small entry's id (an object id for a record, a chunk id for a chunk) and seals it
   * on a worker, batched with the entries of the same kind submitted just before and after it:
   * a batch is sent when it holds BATCH_ENTRIES entries or BATCH_BYTES, or else when the current
   * turn of the event loop ends (setImmediate runs after every microtask, so by then no entry of
   * this turn is left behind). Results come back in submission order. The sealed entries of one
   * batch are views of one buffer.
   */
  sealSmall(kind: SmallKind, plain: Uint8Array, compress: boolean): Promise<SealedSmall> {
    if (this.#closed) return Promise.reject(new FailedError('the seal pool is closed'));
    let batch = this.#batch;
    if (batch && (batch.kind !== kind || batch.compress !== compress)) {
      this.#sendBatch(batch);
      batch = undefined;
    }
    if (!batch) {
      const fresh: SmallBatch = { kind, compress, plains: [], bytes: 0, waiters: [] };
      this.#batch = batch = fresh;
      setImmediate(() => {
        if (this.#batch === fresh) this.#sendBatch(fresh);
      });
    }
    const sealed = new Promise<SealedSmall>((resolve, reject) => batch.waiters.push({ resolve, reject }));
    batch.plains.push(plain);
    batch.bytes += plain.byteLength;
    if (batch.plains.length >= BATCH_ENTRIES || batch.bytes >= BATCH_BYTES) this.#sendBatch(batch);
    return sealed;
  }

  #sendBatch(batch: SmallBatch): void {
    if (this.#batch === batch) this.#batch = undefined;
    const fail = (err: unknown) => {
      for (const w of batch.waiters) w.reject(err);
    };
    let slot: Slot;
    try {
      slot = this.#pick();
    } catch (err) {
      return fail(err);
    }
    const plain = new Uint8Array(batch.bytes);
    const lengths = new Uint32Array(batch.plains.length);
    let at = 0;
    batch.plains.forEach((p, i) => {
      plain.set(p, at);
      at += p.byteLength;
      lengths[i] = p.byteLength;
    });
    const job = this.#nextJob++;
    // Both arrays move to the worker (they are detached here after the call).
    this.#call(slot, { op: 'small', job, kind: batch.kind, plain, lengths, compress: batch.compress }, [plain.buffer, lengths.buffer]).then((reply) => {
      if (!('small' in reply) || reply.small.lengths.length !== batch.waiters.length) throw new FailedError('seal worker answered a batch with something else');
      const { bytes, lengths: sealedLengths, ids, hashes, flags } = reply.small;
      const view = (from: Uint8Array, start: number, length: number) => Buffer.from(from.buffer, from.byteOffset + start, length);
      let offset = 0;
      batch.waiters.forEach((w, i) => {
        const id = view(ids, i * 32, 32);
        const length = sealedLengths[i]!;
        const sealed: SealedEntry = { bytes: view(bytes, offset, length), kind: batch.kind, id, flags: flags[i]!, plainLength: batch.plains[i]!.byteLength, hash: view(hashes, i * 32, 32) };
        offset += length;
        w.resolve({ id, sealed });
      });
    }).catch(fail);
  }

  /** Releases a chunk identify() sent that turned out to be stored already. */
  drop(ticket: Ticket): void {
    ticket.slot.held--;
    // The worker is done with the chunk since it answered identify: the slot is free at once.
    if (ticket.at >= 0) this.slab.give(ticket.at);
    if (this.#slots.includes(ticket.slot)) ticket.slot.worker.postMessage({ op: 'drop', job: ticket.job } satisfies PoolRequest);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.buffers.clear();
    if (this.#batch) this.#sendBatch(this.#batch);
    const slots = this.#slots.splice(0);
    await Promise.all(slots.map((s) => s.worker.terminate()));
    for (const s of slots) this.#fail(s, new FailedError('the seal pool was closed with work in flight'));
  }

  #call(slot: Slot, request: PoolRequest, transfer: ArrayBuffer[] = []): Promise<PoolReply> {
    if (this.#closed || !this.#slots.includes(slot)) return Promise.reject(new FailedError('the seal pool is closed or its worker failed'));
    return new Promise<PoolReply>((resolve, reject) => {
      slot.waiting.set(request.job, { resolve, reject });
      // An idle worker must not keep the process alive; one we wait on must.
      if (slot.waiting.size === 1) slot.worker.ref();
      slot.worker.postMessage(request, transfer);
    });
  }

  #pick(): Slot {
    if (this.#closed) throw new FailedError('the seal pool is closed');
    const load = (s: Slot) => s.waiting.size + s.held;
    let best: Slot | undefined;
    for (const s of this.#slots) if (!best || load(s) < load(best)) best = s;
    if (best && (load(best) === 0 || this.#slots.length >= this.#size)) return best;
    return this.#spawn();
  }

  #spawn(): Slot {
    const worker = new Worker(WORKER_FILE, { workerData: { ...this.#keys, slab: this.slab.memory } satisfies WorkerStart });
    const slot: Slot = { worker, waiting: new Map(), held: 0 };
    worker.unref();
    worker.on('message', (reply: PoolReply) => {
      if ('spare' in reply && reply.spare && !this.#closed) this.buffers.give(reply.spare);
      const waiter = slot.waiting.get(reply.job);
      if (!waiter) return;
      slot.waiting.delete(reply.job);
      if (slot.waiting.size === 0) worker.unref();
      if ('error' in reply) waiter.reject(new FailedError(`seal worker: ${reply.error}`));
      else waiter.resolve(reply);
    });
    worker.on('error', (err) => this.#fail(slot, new FailedError('a seal worker failed', { cause: err })));
    worker.on('exit', (code) => this.#fail(slot, new FailedError(`a seal worker exited with code ${code}`)));
    this.#slots.push(slot);
    return slot;
  }

  #fail(slot: Slot, err: FailedError): void {
    const i = this.#slots.indexOf(slot);
    if (i >= 0) this.#slots.splice(i, 1);
    for (const w of slot.waiting.values()) w.reject(err);
    slot.waiting.clear();
  }
}

// The worker runs compiled JavaScript. When this module itself runs from TypeScript source (the
// test runner transpiles lib/*.ts on the fly), the compiled worker is the one `npm run build` put
// in dist/, since a worker thread gets no transpiler.
const WORKER_FILE = import.meta.url.endsWith('.ts') ? new URL('../dist/lib/seal-worker.js', import.meta.url) : new URL('./seal-worker.js', import.meta.url);

/** One worker per core beyond the main thread's, at least one, at most four. */
function defaultPoolSize(): number {
  return Math.min(4, Math.max(1, os.availableParallelism() - 1));
}
