/**
 * Deletion across the cluster (carrier/replication.ts, "Deletion across the cluster"): the
 * writer's side, which asks every member to release, then to drop, each block its gc retired
 * (deleteRetired, run by each repair pass), and every member's side of block-retire (onRetire).
 *
 * Owns, and alone changes:
 *   - #releasing: the releases started here and whether each finished, changed by onRetire (a
 *     `release` starts one, a `drop` forgets it) and by the release's own ending;
 *   - `released`, `dropped`, `deleting`: its counters (RepairProgress shows them).
 * The tombstones are the database's: deleteRetired moves them on with setTombstone only once
 * every member answered. A keyed member indexes what the cluster holds before releasing (the
 * moved entries are there): it asks for that through the `indexOnce` it is given (Repair's), so
 * this module needs none of the others.
 */
import type { OuroDB } from '../lib/db.js';
import { Tombstone } from '../lib/db.js';
import { ProtocolError, errorText } from '../lib/errors.js';
import { type ReplicationContext, type ReplicationHost, HAVE_BATCH, PROTOCOL_VERSION } from './replication-core.js';
import { type Shelf, blockIdBytes } from './shelf.js';

/** What a release needs of the rest of replication. */
export interface ReleaseNeeds {
  /** Indexes the blocks the cluster holds that this keyed member does not know (shared by callers while one runs). */
  indexOnce(): Promise<unknown>;
}

export class Deletion {
  readonly #ctx: ReplicationContext;
  readonly #host: ReplicationHost;
  readonly #shelf: Shelf;
  readonly #db: OuroDB | undefined;
  readonly #signal: AbortSignal;
  readonly #cluster: ReleaseNeeds;
  /** Releases started here, and whether each finished (a keyed release may copy entries: it outlives one request). */
  readonly #releasing = new Map<string, { done: boolean }>();
  readonly #progress = { released: 0, dropped: 0, deleting: 0 };

  constructor(ctx: ReplicationContext, cluster: ReleaseNeeds) {
    this.#ctx = ctx;
    this.#host = ctx.host;
    this.#shelf = ctx.shelf;
    this.#db = ctx.db;
    this.#signal = ctx.signal;
    this.#cluster = cluster;
  }

  /**
   * Since start: blocks released here at another member's request, and copies deleted at the end
   * of a deletion; and the blocks this database retired whose deletion across the cluster is not
   * finished (last pass).
   */
  get progress(): { released: number; dropped: number; deleting: number } {
    return { ...this.#progress };
  }

  /**
   * A writer's deletions across the cluster (see carrier/replication.ts): each block its gc
   * retired is released by every member, then dropped by every member, then forgotten.
   */
  async deleteRetired(): Promise<void> {
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
        if (this.#signal.aborted) return;
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
              const r = (await this.#host.request(m.peerId, 'block-retire', { v: PROTOCOL_VERSION, phase, ids: batch }, this.#ctx.smallRequest())) as { done?: unknown };
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
          if (next === Tombstone.Released) {
            this.#progress.deleting--;
            // The writer's own shard, last: every other member dropped its copies and shards.
            await this.#dropShards(id);
          }
          this.#host.log.info({ event: phase === 'release' ? 'block-released-everywhere' : 'block-deleted-everywhere', id }, phase === 'release' ? 'every member released a deleted block; its copies go next' : 'every copy of a deleted block is gone');
        }
      }
    }
  }

  async onRetire(m: unknown): Promise<{ done: boolean[] }> {
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
            // An erasure-coded block's shards go with it (this member released the block, so
            // nothing here names it); a member may hold shards and no whole copy.
            if (dropped) await this.#dropShards(id);
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
          this.#ctx.track(this.#release(id)).then(
            (ok) => {
              if (ok) started.done = true;
              else this.#releasing.delete(id);
            },
            (err: unknown) => {
              this.#releasing.delete(id);
              this.#ctx.failed('release', this.#host.peerId, id, err);
            },
          );
        }
        return state.done;
      }),
    };
  }

  async #dropShards(id: string): Promise<void> {
    const removed = await this.#shelf.shards.removeAll(id);
    if (removed > 0) this.#host.log.info({ event: 'shards-dropped', id, shards: removed }, 'shards of a block deleted across the cluster removed');
  }

  /** Releases a block here: a keyed member first indexes what the cluster holds (where the moved entries are). */
  async #release(id: string): Promise<boolean> {
    if (this.#db?.block(id)) await this.#cluster.indexOnce();
    const r = await this.#shelf.release(id);
    if (r.released) {
      this.#progress.released++;
      this.#host.log.info({ event: 'block-released', id, repointed: r.repointed, copied: r.copied, dropped: r.dropped }, 'a block deleted across the cluster is released here');
    }
    return r.released;
  }
}
