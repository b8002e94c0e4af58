/**
 * Heads: what writes of one key see of each other.
 *
 * Owns, and is the only code that changes:
 *   - the key locks (`withKey`, `withKeys`): the tail of each key's chain of waiting writes;
 *     several keys are taken in sorted order, so no two writers wait on each other;
 *   - the overlay of queued heads (`overlay`): the heads a key will have once its queued,
 *     uncommitted versions land. A version's heads are taken back when it is rejected, which
 *     relies on the commit pipeline rejecting newest first (wal/commit.ts). Reads do not use
 *     these heads (a queued version may not be written yet); they wait for `landed` (lib/landed.ts).
 * It reads the index and writes to it only by the ops it hands back to a put (heads, history,
 * hint rows), except kept heads' hint rows, which ride on the next batch (`keepHint`).
 */
import { keys } from '../index/keys.js';
import type { IndexStore } from '../index/store.js';
import { type Head, decodeHeads, decodeHintRow, encodeHintRow } from '../index/values.js';
import type { PendingEntry } from '../wal/inflight.js';
import crypto from 'node:crypto';
import { sortHeads } from './args.js';
import { toHex } from './bytes.js';
import { type DatabaseKeys, TAG_CONTENT, TAG_HINT } from './crypto.js';
import { NotFoundError } from './errors.js';

export interface KeyName {
  name: string;
  bytes: Buffer;
}

/** The queued, uncommitted versions of one key. */
interface Overlay {
  /** The heads the key will have once they land. */
  heads: Head[];
  /** How many are queued. */
  refs: number;
  /** The newest one's commit (rejects when it fails): what a new write of the key waits for. */
  settled: Promise<void>;
  /**
   * Resolves once every one of them has landed or failed, never rejects: what a read waits for
   * (lib/landed.ts). Commits land in queue order, so the newest one landing means every older
   * one has; when it fails, older ones may still land, so its `landed` waits for theirs.
   */
  landed: Promise<unknown>;
}

/** Hints of puts that kept their head waiting for an index batch before they get one of their own (keepHint). */
const HINTS_PENDING_MAX = 1024;

export class Heads {
  readonly #index: IndexStore;
  readonly #keys: DatabaseKeys;
  /** Per-key write locks: the tail of each key's chain of waiting writes. */
  readonly #keyLocks = new Map<string, Promise<void>>();
  /** Heads of keys with queued, uncommitted versions: what the index will say once they land. */
  readonly #headOverlay = new Map<string, Overlay>();

  constructor(index: IndexStore, keys: DatabaseKeys) {
    this.#index = index;
    this.#keys = keys;
  }

  /** Whether the key has queued, uncommitted versions. */
  queued(name: string): boolean {
    return this.#headOverlay.has(name);
  }

  /** Runs `fn` with no other write of the same key between its start and end. */
  async withKey<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prior = this.#keyLocks.get(name);
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    this.#keyLocks.set(name, mine);
    if (prior) await prior;
    try {
      return await fn();
    } finally {
      if (this.#keyLocks.get(name) === mine) this.#keyLocks.delete(name);
      release();
    }
  }

  /** The heads a new write of the key builds on: queued but uncommitted versions included. */
  headsOf(key: KeyName): Head[] {
    const pending = this.#headOverlay.get(key.name);
    if (pending) return pending.heads;
    const stored = this.#index.get(keys.heads(key.bytes));
    return stored ? decodeHeads(stored) : [];
  }

  overlay(name: string, heads: Head[], before: Head[], entry: PendingEntry): void {
    let o = this.#headOverlay.get(name);
    const older = o?.landed;
    if (!o) this.#headOverlay.set(name, (o = { heads, refs: 0, settled: entry.committed, landed: entry.committed }));
    o.heads = heads;
    o.settled = entry.committed;
    o.refs++;
    const state = o;
    const release = () => {
      if (--state.refs === 0 && this.#headOverlay.get(name) === state) this.#headOverlay.delete(name);
    };
    // A rejected version (a full disk; the commit pipeline rejects newest first) takes its heads back.
    // It then waits for the older versions' commits (see Overlay.landed).
    const unwind = () => {
      if (state.heads === heads) state.heads = before;
      release();
      return older;
    };
    o.landed = entry.committed.then(release, unwind);
  }

  /** Resolves once the key's versions queued so far have landed or failed; undefined when none is queued. */
  landed(name: string): Promise<unknown> | undefined {
    return this.#headOverlay.get(name)?.landed;
  }

  /** landed() for every key with queued versions; undefined when there are none. */
  allLanded(): Promise<unknown> | undefined {
    if (this.#headOverlay.size === 0) return undefined;
    return Promise.all(Array.from(this.#headOverlay.values(), (o) => o.landed));
  }

  /** Waits until every queued write of the key has committed (so the index alone is current). */
  async keySettled(name: string): Promise<void> {
    for (let o = this.#headOverlay.get(name); o; o = this.#headOverlay.get(name)) await o.settled;
  }

  /** The versions of `key` named by `hashes`, with their numbers; each must exist. */
  async versionsNamed(key: KeyName, hashes: Buffer[]): Promise<Head[]> {
    if (hashes.length === 0) return [];
    await this.keySettled(key.name);
    const wanted = new Map(hashes.map((h) => [toHex(h), h]));
    const found: Head[] = [];
    for await (const k of this.#index.ldb.keys(keys.versionRange(key.bytes))) {
      const v = keys.decodeVersion(k);
      if (wanted.delete(toHex(v.hash))) found.push({ hash: Buffer.from(v.hash), n: v.n, tombstone: false });
      if (wanted.size === 0) break;
    }
    if (wanted.size > 0) throw new NotFoundError(`prev names ${[...wanted.keys()][0]}, which is not a version of key ${JSON.stringify(key.name)}`);
    return found;
  }

  /**
   * The hint check of matchHint and putHinted: the key's heads (queued versions included), and
   * when they are one value head, its hint row, the tag `hint` has for that head, and whether the
   * row carries that tag.
   */
  checkHint(key: KeyName, hint: Uint8Array): { heads: Head[]; row?: Buffer | undefined; tag?: Buffer; match: boolean } {
    const heads = this.headsOf(key);
    if (heads.length !== 1 || heads[0]!.tombstone) return { heads, match: false };
    const row = this.#index.get(keys.hint(key.bytes));
    const tag = this.#keys.tag(TAG_HINT, key.bytes, heads[0]!.hash, hint);
    return { heads, row, tag, match: row !== undefined && crypto.timingSafeEqual(decodeHintRow(row).hintTag, tag) };
  }

  /** The content tag of a hint row: head `head` of `key` has these compared fields (comparedFields). */
  contentTag(key: Buffer, head: Buffer, compared: Buffer): Buffer {
    return this.#keys.tag(TAG_CONTENT, key, head, compared);
  }

  /** `hintTag`: the tag of (key, head, hint) when the caller has it already. */
  hintRow(key: Buffer, head: Buffer, hint: Buffer, contentTag: Buffer, hintTag = this.#keys.tag(TAG_HINT, key, head, hint)): Buffer {
    return encodeHintRow(hintTag, contentTag);
  }

  /**
   * The hint of a put that kept its head (ifChanged) and so writes no batch of its own: it rides
   * in the next index batch (IndexStore.ride), or in one of its own once HINTS_PENDING_MAX wait, and
   * flush() and close() write what is left. One batch is asked for as the count reaches the
   * limit: it takes every hint pending when it runs. (Asked for at every hint past the limit
   * while earlier batches were still queued, 4,400 kept heads made 2,354 synced batches.) Until
   * then matchHint does not see it, and a crash loses it: a hint is a cache, and a lost one costs
   * one more read of the file. (Written at once, one
   * LevelDB write each, they queued behind the group commits' synced batches and held every put
   * of an unchanged file up for an fsync.) A batch that lands after a newer head's own hint row
   * overwrites it with a tag of the old head, which matches nothing: a miss, never a false match.
   */
  keepHint(key: Buffer, head: Buffer, hint: Buffer, contentTag: Buffer, hintTag?: Buffer): void {
    const riding = this.#index.ride({ type: 'put', key: keys.hint(key), value: this.hintRow(key, head, hint, contentTag, hintTag) });
    if (riding === HINTS_PENDING_MAX) this.#index.write([], {}).catch(() => {}); // a failure fails the database (IndexStore.fail)
  }

  newestHead(key: Buffer): Head | undefined {
    const stored = this.#index.get(keys.heads(key));
    return stored ? sortHeads(decodeHeads(stored))[0] : undefined;
  }

  /** withKey for several keys, taken in sorted order (puts take one, so no two wait on each other). */
  withKeys<T>(names: readonly string[], fn: () => Promise<T>): Promise<T> {
    return names.reduceRight<() => Promise<T>>((inner, name) => () => this.withKey(name, inner), fn)();
  }
}
