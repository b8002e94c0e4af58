/**
 * Packer: small object records gathered for the next group commit, to be sealed together as
 * one pack (lib/pack.ts).
 *
 * Owns, and is the only code that changes: the open pack and the packs that reached
 * PACK_MAX_BYTES. Records join through `add` (CommitPipeline.joinPack); the commit loop `take`s
 * every pack at the start of a group, `seal`s each and appends it, or `reject`s it. A record's
 * entry is pending (InFlight) from the moment it joins, so equal records deduplicate against
 * it; its block, row and slot come when its pack is appended.
 */
import { EntryKind } from '../blockstore/format.js';
import { type Deferred, deferred } from '../blockstore/store.js';
import { toHex } from '../lib/bytes.js';
import type { DatabaseKeys } from '../lib/crypto.js';
import { type SealedEntry, sealEntry } from '../lib/entry.js';
import { encodePack } from '../lib/pack.js';
import type { InFlight, PendingEntry } from './inflight.js';

/**
 * A random read of a record in a compressed pack decrypts and decompresses the whole pack, so
 * packs stay small. Measured (20,000 keyed 1 KiB text values, random getByKey, one run each):
 * packs up to 256 KiB stored 1.67 MB and read 5,050 gets/s, 32 KiB 2.00 MB and 5,369, 16 KiB
 * 2.39 MB and 6,562, 8 KiB 2.88 MB and 9,287 (the same values one record per entry: 10.3 MB,
 * 10,403-15,024 gets/s). The four-version source tree: 6.17, 6.22 and 6.32 MB at 256, 32 and
 * 16 KiB. Uncompressed packs are read record by record (lib/read.ts) whatever their size.
 */
const PACK_MAX_BYTES = 16 * 1024;

/**
 * Records waiting for the next group commit, to be sealed together as one pack. Their entries
 * are pending from the start and get their block, row and slot when the commit loop seals the
 * pack and appends it.
 */
export interface OpenPack {
  members: PendingEntry[];
  plains: Uint8Array[];
  bytes: number;
  written: Deferred;
}

export class Packer {
  readonly #keys: DatabaseKeys;
  readonly #compression: boolean;
  readonly #inflight: InFlight;
  /** Records gathered for the next pack. */
  #open: OpenPack | undefined;
  /** Packs that reached PACK_MAX_BYTES, waiting for the commit loop to append them. */
  #ready: OpenPack[] = [];

  constructor(keys: DatabaseKeys, compression: boolean, inflight: InFlight) {
    this.#keys = keys;
    this.#compression = compression;
    this.#inflight = inflight;
  }

  /** Whether records wait in a pack. */
  get waiting(): boolean {
    return this.#open !== undefined || this.#ready.length > 0;
  }

  /**
   * Adds a record to the open pack: `make` builds its entry given the pack's written promise.
   * The entry is pending from now on.
   */
  add(idHex: string, bytes: Uint8Array, make: (written: Promise<void>) => PendingEntry): PendingEntry {
    const pack = (this.#open ??= { members: [], plains: [], bytes: 0, written: deferred() });
    const entry = make(pack.written.promise);
    pack.members.push(entry);
    pack.plains.push(bytes);
    pack.bytes += bytes.byteLength;
    this.#inflight.setPending(idHex, entry);
    if (pack.bytes >= PACK_MAX_BYTES) {
      this.#ready.push(pack);
      this.#open = undefined;
    }
    return entry;
  }

  /** Every pack gathered so far, full ones first; none waits afterwards. */
  take(): OpenPack[] {
    const packs = this.#ready;
    this.#ready = [];
    if (this.#open) packs.push(this.#open);
    this.#open = undefined;
    return packs;
  }

  /**
   * Seals one pack. A pack of one record is sealed as an ordinary object entry: nothing to share,
   * and a reader needs no pack to find it.
   */
  seal(pack: OpenPack): SealedEntry {
    let sealed: SealedEntry;
    if (pack.members.length === 1) {
      sealed = sealEntry(this.#keys.data, EntryKind.Object, pack.members[0]!.id, pack.plains[0]!, this.#compression);
    } else {
      const { plain, id, slots } = encodePack(pack.members.map((m, i) => ({ hash: m.id, bytes: pack.plains[i]! })));
      sealed = sealEntry(this.#keys.data, EntryKind.Pack, id, plain, this.#compression);
      pack.members.forEach((m, i) => (m.slot = slots[i]));
    }
    return sealed;
  }

  /** A pack that could not be appended: its records fail (newest first, as rejectFrom does). */
  reject(pack: OpenPack, reason: unknown): void {
    pack.written.reject(reason);
    for (const m of [...pack.members].reverse()) {
      this.#inflight.rejected(toHex(m.id), m);
      m.reject(reason);
    }
  }
}
