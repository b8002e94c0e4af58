/**
 * Query: the listings of keys, versions, children and objects. Owns no state: each reads the
 * index (one iterator, or one snapshot it opens through Snapshots) and records through Reader.
 * Each runs its own state checks, as the public method did: a generator's checks run at its
 * first step, and lib/db.ts returns these generators and promises as they are.
 */
import { PREFIX_OBJECT, keys } from '../index/keys.js';
import type { IndexStore } from '../index/store.js';
import { HEAD_BYTES, decodeHeads } from '../index/values.js';
import { parseHash, sortHeads } from './args.js';
import { fromHex, toHex } from './bytes.js';
import { ID_BYTES } from './crypto.js';
import { BadArgumentError, CorruptionError } from './errors.js';
import type { ExportedObject, ListEntry, ListOptions, Version } from './types.js';
import { keyBytes, prefixBytes } from './keyname.js';
import type { Landed } from './landed.js';
import type { Lifecycle } from './lifecycle.js';
import type { Reader } from './read.js';
import type { Snapshots } from './snapshots.js';

/**
 * Entries per LevelDB read of a listing. classic-level makes a Buffer for every key and value it
 * hands back (napi_create_buffer_copy: a backing store, an ArrayBuffer and a Uint8Array each),
 * and that, not LevelDB, was most of a listing's time. So list asks OuroDB's binding for each
 * batch packed into ONE Buffer (the iterator option `ourodbPacked`, native/README.md "Packed
 * batches") and cuts keys and heads out of it itself. classic-level's own binding, the fallback
 * where OuroDB's does not load (index/leveldb.ts), ignores the option and returns its entries
 * as usual: the heads keys then come as strings (user keys are well-formed UTF-8,
 * lib/keyname.ts, so the string is exact), the values as Buffers. Either way list reads batches
 * itself with `nextv`, reading the next one while the caller takes the current one.
 */
const LIST_BATCH = 1000;

/**
 * The byte bound of one batch read (classic-level's `highWaterMarkBytes`, keys and values
 * counted). Its default, 16 KiB, cut a batch of one-head entries (~60 bytes) at ~270 entries,
 * so LIST_BATCH was never reached; this lets it be, and still bounds a batch of many-headed
 * values to ~1 MiB.
 */
const LIST_BATCH_BYTES = 1 << 20;

/**
 * The key encoding of a listing's iterator: keys decoded natively to strings (format 'utf8'),
 * but range bounds passed to LevelDB as the Buffers they are (classic-level's binding takes a
 * Buffer or a string for a bound whatever the encoding). A bound such as 'k' + prefix + 0xff is
 * not UTF-8, so the 'utf8' encoding, which would turn it into a string, cannot carry it.
 * One object for the process: abstract-level caches an encoding by its object. A packed batch
 * comes back as the key of a single entry and passes through its decode unchanged.
 */
const HEADS_KEY_TEXT = Object.freeze({
  name: 'ourodb-heads-key-text',
  format: 'utf8' as const,
  encode: (bound: Buffer): Buffer => bound,
  decode: <T>(key: T): T => key,
});

/** What a listing's `nextv` returns: entries (classic-level's own binding), or one entry holding the packed batch (OuroDB's). */
type HeadsBatch = [string, Buffer][] | [[Buffer, undefined]];

/** The part of classic-level's iterator a listing uses, with the key and value types it asks for. */
interface HeadsIterator {
  nextv(size: number): Promise<HeadsBatch>;
  close(): Promise<void>;
}

/** The entry of one heads key ('k' + user key, the 'k' cut off already) and its value `v[from, to)`. */
function headsEntry(key: string, v: Buffer, from: number, to: number): ListEntry {
  if (to - from === 2 + HEAD_BYTES && v[from] === 1 && v[from + 1] === 1) {
    // One head, the usual case: read it in place (a listing of millions spends its time here).
    const hash = v.toString('hex', from + 2, from + 34);
    return { key, hash, heads: [hash], deleted: v[from + 2 + 40] === 1 };
  }
  const heads = sortHeads(decodeHeads(v.subarray(from, to)));
  return { key, hash: toHex(heads[0]!.hash), heads: heads.map((h) => toHex(h.hash)), deleted: heads[0]!.tombstone };
}

/**
 * The entries of one batch, either form. A packed batch is entries one after another, each
 * | key length (u32 LE) | value length (u32 LE) | key | value |; its keys are sliced out as UTF-8.
 */
function headsEntries(batch: HeadsBatch): ListEntry[] {
  const first = batch[0]?.[0];
  if (!Buffer.isBuffer(first)) return (batch as [string, Buffer][]).map(([k, v]) => headsEntry(k.slice(1), v, 0, v.length));
  const out: ListEntry[] = [];
  for (let at = 0; at < first.length;) {
    const keyAt = at + 8;
    if (keyAt > first.length) throw new CorruptionError('a packed LevelDB batch of heads is malformed');
    const valueAt = keyAt + first.readUInt32LE(at);
    at = valueAt + first.readUInt32LE(at + 4);
    if (at > first.length || valueAt === keyAt) throw new CorruptionError('a packed LevelDB batch of heads is malformed');
    out.push(headsEntry(first.toString('utf8', keyAt + 1, valueAt), first, valueAt, at));
  }
  return out;
}

/** `read` with its rejection already handled: it may settle while nobody awaits it (the caller is slow or has stopped). */
function readAhead<T>(read: Promise<T>): Promise<T> {
  read.catch(() => {});
  return read;
}

export class Query {
  readonly #life: Lifecycle;
  readonly #index: IndexStore;
  readonly #reader: Reader;
  readonly #snapshots: Snapshots;
  /** Each listing first waits for the writes queued before it (relaxed ones resolve before they land). */
  readonly #landed: Landed;

  constructor(life: Lifecycle, index: IndexStore, reader: Reader, snapshots: Snapshots, landed: Landed) {
    this.#life = life;
    this.#index = index;
    this.#reader = reader;
    this.#snapshots = snapshots;
    this.#landed = landed;
  }

  /**
   * Keys in byte order of their UTF-8, with their heads. Reads one LevelDB iterator, which sees
   * a single consistent state however long the listing runs (once the keyed writes queued before
   * it have landed); it streams, so a listing of millions of keys holds at most two batches of
   * LIST_BATCH entries.
   */
  async *list(options: ListOptions = {}): AsyncGenerator<ListEntry> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    if (options === null || typeof options !== 'object') throw new BadArgumentError('options must be an object');
    const prefix = prefixBytes(options.prefix);
    const limit = options.limit ?? Infinity;
    if (limit !== Infinity && !(Number.isSafeInteger(limit) && limit >= 0)) throw new BadArgumentError('limit must be a non-negative integer');
    const landing = this.#landed.keys();
    if (landing) await landing;
    const range = { gte: keys.heads(prefix), lt: keys.heads(Buffer.concat([prefix, Buffer.from([0xff])])) };
    if (prefix.length === 0) range.lt = Buffer.from([keys.heads(prefix)[0]! + 1]);
    const opts: { gte?: Buffer; gt?: Buffer; lt: Buffer } = { lt: range.lt };
    const after = options.after === undefined ? undefined : keys.heads(keyBytes(options.after, 'after'));
    if (after && Buffer.compare(after, range.gte) >= 0) opts.gt = after;
    else opts.gte = range.gte;
    if (limit === 0) return;
    let n = 0;
    const it = this.#index.ldb.iterator({ ...opts, keyEncoding: HEADS_KEY_TEXT as never, valueEncoding: 'buffer', ourodbPacked: true, highWaterMarkBytes: LIST_BATCH_BYTES } as never) as unknown as HeadsIterator;
    const batchAfter = (listed: number) => Math.min(LIST_BATCH, Math.max(1, limit - listed));
    let ahead: Promise<HeadsBatch> | undefined;
    try {
      let batch = headsEntries(await it.nextv(batchAfter(0)));
      while (batch.length > 0) {
        // The next batch is read (on LevelDB's thread) while the caller takes this one, unless
        // this one may already hold the rest of a limited listing (a page then reads no more).
        ahead = batch.length < limit - n ? readAhead(it.nextv(batchAfter(n + batch.length))) : undefined;
        for (const entry of batch) {
          if (entry.deleted && !options.includeDeleted) continue;
          yield entry;
          if (++n >= limit) return;
        }
        const next = ahead;
        ahead = undefined;
        batch = headsEntries(await (next ?? it.nextv(batchAfter(n))));
      }
    } finally {
      // A read still in flight (the caller stopped early, or this batch failed) ends before the
      // iterator closes; its outcome no longer matters.
      if (ahead) await ahead.catch(() => {});
      await it.close();
    }
  }

  /**
   * The versions of `key`, newest first (by version number, ties by hash), tombstones included.
   * Reads from one LevelDB snapshot: versions written meanwhile are not seen, and gc keeps the
   * block files this snapshot's locations name until the iteration ends.
   */
  async *history(key: string, options: { limit?: number } = {}): AsyncGenerator<Version> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const k = keyBytes(key);
    const limit = options.limit ?? Infinity;
    const landing = this.#landed.key(key);
    if (landing) await landing;
    const reader = this.#snapshots.open();
    try {
      const it = this.#index.ldb.iterator({ ...keys.versionRange(k), snapshot: reader.snapshot, values: false });
      let n = 0;
      try {
        for await (const [vk] of it) {
          const v = keys.decodeVersion(vk);
          const hash = Buffer.from(v.hash);
          const r = await this.#reader.record(hash, reader.snapshot);
          yield { hash: toHex(hash), version: v.n, type: r.type, size: r.size, created: new Date(r.created), meta: r.meta, prev: r.prev.map(toHex) };
          if (++n >= limit) break;
        }
      } finally {
        await it.close();
      }
    } finally {
      await this.#snapshots.close(reader);
    }
  }

  /** Objects put with `parent: hash`, in hash order, a page at a time. */
  async children(hash: string, options: { after?: string; limit?: number } = {}): Promise<string[]> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const parent = parseHash(hash);
    const limit = options.limit ?? 1000;
    if (!(Number.isSafeInteger(limit) && limit > 0)) throw new BadArgumentError('limit must be a positive integer');
    const range: { gt?: Buffer; gte?: Buffer; lt: Buffer; limit: number } = { ...keys.childRange(parent), limit };
    if (options.after !== undefined) {
      delete range.gte;
      range.gt = keys.child(parent, parseHash(options.after, 'after'));
    }
    // A child's key lands with its record's batch; no index tells which queued writes name this parent.
    const landing = this.#landed.all();
    if (landing) await landing;
    const out: string[] = [];
    for await (const k of this.#index.ldb.keys(range)) out.push(toHex(k.subarray(33)));
    return out;
  }

  /**
   * Every live object (values, tombstones; not purge markers) as of one snapshot, each after its
   * parent and its predecessors, with a reader of its value from the same snapshot: what an
   * export needs to be consistent while writes go on. Holds ~100 bytes per object for the order.
   */
  async *objects(): AsyncGenerator<ExportedObject> {
    this.#life.checkOpen();
    if (this.#life.exclusive) await this.#life.settledIndex();
    const landing = this.#landed.all();
    if (landing) await landing;
    const reader = this.#snapshots.open();
    const snapshot = reader.snapshot;
    try {
      const deps = new Map<string, string[]>();
      for await (const k of this.#index.ldb.keys({ ...keys.range(PREFIX_OBJECT), snapshot })) {
        const hash = Buffer.from(k.subarray(1));
        const r = await this.#reader.record(hash, snapshot);
        if (r.type === 'purge') continue;
        deps.set(toHex(hash), [...(r.parent ? [toHex(r.parent)] : []), ...r.prev.map(toHex)]);
      }
      const done = new Set<string>();
      for (const start of deps.keys()) {
        // Iterative depth-first order: dependencies (present in this snapshot) before dependents.
        const stack = [start];
        const onStack = new Set(stack);
        while (stack.length > 0) {
          const h = stack[stack.length - 1]!;
          if (done.has(h)) {
            onStack.delete(stack.pop()!);
            continue;
          }
          // One dependency at a time, so the stack is always a path of dependents (a node on it
          // is an ancestor; hashes cannot form a cycle, and onStack guards against one anyway).
          const pending = deps.get(h)!.find((d) => deps.has(d) && !done.has(d) && !onStack.has(d));
          if (pending !== undefined) {
            onStack.add(pending);
            stack.push(pending);
            continue;
          }
          onStack.delete(stack.pop()!);
          done.add(h);
          const r = await this.#reader.record(fromHex(h, ID_BYTES)!, snapshot);
          yield {
            hash: h,
            type: r.type as 'value' | 'tombstone',
            key: r.key,
            parent: r.parent ? toHex(r.parent) : null,
            prev: r.prev.map(toHex),
            created: r.created,
            meta: r.meta,
            size: r.size,
            chunkSizes: [...r.chunks.sizes()],
            data: () => {
              if (!reader.open) throw new BadArgumentError("an object's data() must be read while db.objects() is being iterated (its snapshot is closed)");
              return this.#reader.stream(r, snapshot);
            },
          };
        }
      }
    } finally {
      await this.#snapshots.close(reader);
    }
  }
}
