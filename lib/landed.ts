/**
 * Landed: what a read waits for so that it sees every write that resolved before it started.
 *
 * A 'relaxed' put or delete resolves once its entries are handed to the OS (written to the open
 * block), before its group commit has synced them and written the index batch that names them;
 * until that batch lands, the index, which every read goes through, does not know the write. So
 * a read first waits for the commits of the queued writes it depends on: of one key (its queued
 * versions, lib/heads.ts), of one object (its pending entry, wal/inflight.ts), of every key (a
 * listing) or of everything queued (stats, children, objects). The commit follows the write at
 * once, so the wait is one fsync and one index batch at most. Writes queued after the read
 * started are not waited for (a busy key cannot hold a reader back for ever).
 *
 * Every wait resolves, never rejects: when the commit fails (a full disk, a failed fsync), the
 * read sees the state without that write instead of failing with the write's error. And each
 * is undefined when nothing it depends on is queued, so a read with nothing pending (every read
 * after durable writes) costs a map lookup and no await.
 *
 * Owns no state: it asks Heads and InFlight.
 */
import type { InFlight } from '../wal/inflight.js';
import { toHex } from './bytes.js';
import type { Heads } from './heads.js';

const ignore = (): void => {};

export class Landed {
  readonly #heads: Heads;
  readonly #held: InFlight;

  constructor(heads: Heads, held: InFlight) {
    this.#heads = heads;
    this.#held = held;
  }

  /** The versions of key `name` queued so far (getByKey, head, heads, matchHint, history). */
  key(name: string): Promise<unknown> | undefined {
    return this.#heads.landed(name);
  }

  /** The versions of every key queued so far (list). */
  keys(): Promise<unknown> | undefined {
    return this.#heads.allLanded();
  }

  /** The object `id`'s entry, if it is on its way (get, stream, has, stat). */
  object(id: Buffer): Promise<unknown> | undefined {
    const entry = this.#held.pending(toHex(id));
    return entry && entry.committed.then(ignore, ignore);
  }

  /** Every entry queued so far (stats, children, objects). */
  all(): Promise<unknown> | undefined {
    return this.#held.settled();
  }
}
