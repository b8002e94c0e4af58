/**
 * Chunk ids and sealing (compress, encrypt, hash) of large entries on worker threads, so that
 * ingest uses every core: the main thread cuts chunks and does the I/O and index work while
 * workers do the per-byte crypto. Small entries are handled inline by the caller: a round trip
 * to a worker (tens of microseconds) costs more than hashing and sealing a few KiB.
 *
 * A chunk goes to a worker once and stays there for two steps, so dedup still happens before
 * any sealing work: identify() hashes it and returns its id; the caller looks the id up and
 * then calls seal() (new chunk) or drop() (already stored). The plaintext crosses to the worker
 * once, by transfer when the caller owns it, and the sealed entry comes back by transfer.
 *
 * Workers derive the database keys once, at start, from what they get through workerData (same
 * process; keys never leave memory). Each worker thread draws its own nonce prefix (lib/crypto.ts), so nonces
 * stay unique across threads without coordination.
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { EntryKind } from '../blockstore/format.js';
import type { SealedEntry } from './entry.js';
import { FailedError } from './errors.js';

/** Chunks at least this large are hashed and sealed on a worker. */
export const OFFLOAD_MIN_BYTES = 32 * 1024;

/** Messages to a worker. */
export type PoolRequest =
  | { op: 'identify'; job: number; plain: Uint8Array }
  | { op: 'seal'; job: number; kind: EntryKind; compress: boolean }
  | { op: 'drop'; job: number };

/** Messages from a worker: an id, a sealed entry (bytes transferred), or an error. */
export type PoolReply =
  | { job: number; id: Uint8Array }
  | { job: number; bytes: Uint8Array; flags: number; plainLength: number; hash: Uint8Array }
  | { job: number; error: string };

/** From which a worker derives the database's keys, exactly as DatabaseKeys does. */
export interface WorkerKeys {
  masterKey: Uint8Array;
  databaseId: Uint8Array;
}

/** A chunk held by one worker between identify() and seal()/drop(). */
export interface Ticket {
  readonly id: Buffer;
  readonly slot: Slot;
  readonly job: number;
}

interface Slot {
  worker: Worker;
  waiting: Map<number, { resolve: (reply: PoolReply) => void; reject: (err: unknown) => void }>;
  held: number;
}

export class SealPool {
  readonly #keys: WorkerKeys;
  readonly #size: number;
  readonly #slots: Slot[] = [];
  #nextJob = 0;
  #closed = false;

  constructor(keys: WorkerKeys, size = defaultPoolSize()) {
    this.#keys = keys;
    this.#size = size;
  }

  /**
   * Sends a chunk to the least busy worker and resolves to its chunk id. When `transfer` is true
   * the plaintext's ArrayBuffer is handed over (detached here): only for buffers nobody else holds.
   */
  async identify(plain: Uint8Array, transfer: boolean): Promise<Ticket> {
    const slot = this.#pick();
    const job = this.#nextJob++;
    // Structured clone copies a view's whole ArrayBuffer: send exactly the plaintext.
    const own = transfer && plain.byteOffset === 0 && plain.byteLength === plain.buffer.byteLength ? plain : Uint8Array.prototype.slice.call(plain);
    slot.held++;
    try {
      const reply = await this.#call(slot, { op: 'identify', job, plain: own }, [own.buffer as ArrayBuffer]);
      if (!('id' in reply)) throw new FailedError('seal worker answered identify with something else');
      return { id: Buffer.from(reply.id.buffer, reply.id.byteOffset, reply.id.byteLength), slot, job };
    } catch (err) {
      slot.held--;
      throw err;
    }
  }

  /** Seals a chunk identify() sent, on the worker holding it. */
  async seal(ticket: Ticket, kind: EntryKind, compress: boolean): Promise<SealedEntry> {
    ticket.slot.held--;
    const reply = await this.#call(ticket.slot, { op: 'seal', job: ticket.job, kind, compress });
    if (!('bytes' in reply)) throw new FailedError('seal worker answered seal with something else');
    const bytes = Buffer.from(reply.bytes.buffer, reply.bytes.byteOffset, reply.bytes.byteLength);
    const hash = Buffer.from(reply.hash.buffer, reply.hash.byteOffset, reply.hash.byteLength);
    return { bytes, kind, id: ticket.id, flags: reply.flags, plainLength: reply.plainLength, hash };
  }

  /** Releases a chunk identify() sent that turned out to be stored already. */
  drop(ticket: Ticket): void {
    ticket.slot.held--;
    if (this.#slots.includes(ticket.slot)) ticket.slot.worker.postMessage({ op: 'drop', job: ticket.job } satisfies PoolRequest);
  }

  async close(): Promise<void> {
    this.#closed = true;
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
    const worker = new Worker(WORKER_FILE, { workerData: this.#keys });
    const slot: Slot = { worker, waiting: new Map(), held: 0 };
    worker.unref();
    worker.on('message', (reply: PoolReply) => {
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
