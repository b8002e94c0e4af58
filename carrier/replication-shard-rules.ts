/**
 * The rules of shard transfers and shard repair that need no node (docs/node.md, "Redundancy"):
 * what a receiver checks of a pushed shard, where a block's missing shards go, how a shard-have
 * answer and a held manifest are read, and how a block is joined from its data shards. Apart from
 * Shards (replication-shards.ts), which asks, pushes and stores, so each reads and tests alone;
 * and the scrub of the shard files, which needs nothing but the files.
 */
import type { Logger } from 'pino';
import { CorruptionError, ProtocolError, errorText } from '../lib/errors.js';
import { type ShardManifest, decodeManifest, verifyShard } from './ec/manifest.js';
import type { EcPolicy } from './membership.js';
import type { Coding, ShardFiles } from './shelf.js';

/**
 * The checks a receiver makes of a shard pushed to it, before anything is kept: the manifest is
 * well formed (decodeManifest: sizes consistent with K, M and the block size, hash lengths) and
 * names the block pushed, the index is one of its K+M, and the shard's bytes hash to the
 * manifest's entry for that index. Throws ProtocolError or CorruptionError.
 */
export function checkShardPush(id: string, index: number, manifestBytes: Uint8Array, shard: Uint8Array): ShardManifest {
  const manifest = decodeManifest(manifestBytes);
  if (manifest.block !== id) throw new ProtocolError(`shard of ${id} pushed with the manifest of ${manifest.block}`);
  if (!Number.isSafeInteger(index) || index < 0 || index >= manifest.k + manifest.m) throw new ProtocolError(`shard ${index} of ${id} pushed: the block has ${manifest.k + manifest.m} shards`);
  verifyShard(manifest, index, shard);
  return manifest;
}

/** The `size` bytes of `source`, gathered into one buffer. */
export async function collect(source: AsyncIterable<Uint8Array>, size: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for await (const piece of source) {
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}

/** What a member holds of a coded block (shard-have). */
export interface ShardsHeld {
  k: number;
  m: number;
  shards: number[];
}

/** One shard-have answer entry, checked. */
export function parseHeld(v: unknown): ShardsHeld | null {
  if (v === null) return null;
  const h = v as { k?: unknown; m?: unknown; shards?: unknown };
  if (typeof h !== 'object' || !Number.isSafeInteger(h.k) || !Number.isSafeInteger(h.m) || !Array.isArray(h.shards) || !h.shards.every((i) => Number.isSafeInteger(i) && i >= 0 && i < (h.k as number) + (h.m as number))) {
    throw new ProtocolError('malformed shard-have reply');
  }
  return { k: h.k as number, m: h.m as number, shards: h.shards as number[] };
}

/**
 * Where the shards missing from a block go: index -> member. Placed members that answered and
 * hold none of its shards first, in ranking order; when the placement is short of K+M members
 * (fewer placeable members than that), the members holding fewest, so the block still gets back
 * all K+M shards. Members that did not answer get nothing (they may be away with their shard).
 */
export function assignMissing(ec: EcPolicy, placed: string[], held: Map<string, number[]>): Map<number, string> {
  const present = new Set([...held.values()].flat());
  const missing = Array.from({ length: ec.k + ec.m }, (_, i) => i).filter((i) => !present.has(i));
  const load = new Map([...held].map(([peer, s]) => [peer, s.length]));
  const out = new Map<number, string>();
  for (const index of missing) {
    const free = placed.find((p) => load.get(p) === 0);
    const peer = free ?? (placed.length < ec.k + ec.m ? [...load].sort((a, b) => a[1] - b[1])[0]?.[0] : undefined);
    if (peer === undefined) break;
    out.set(index, peer);
    load.set(peer, load.get(peer)! + 1);
  }
  return out;
}

/** The block from its K data shards: concatenated, cut to the block's size (the code is systematic). */
export function join(manifest: ShardManifest, data: Uint8Array[]): Uint8Array {
  return Buffer.concat(data).subarray(0, manifest.size);
}

/** A held manifest decoded, or undefined when it no longer decodes (scrub quarantines it). */
export function decodeOrUndefined(bytes: Uint8Array): ShardManifest | undefined {
  try {
    return decodeManifest(bytes);
  } catch {
    return undefined;
  }
}

/** The K+M a shard-get, shard-have or proof request names (`k`, `m`), or undefined: the block's default set. */
export function codingOf(q: unknown): Coding | undefined {
  const c = q as { k?: unknown; m?: unknown } | null;
  if (c?.k === undefined && c?.m === undefined) return undefined;
  if (!Number.isSafeInteger(c.k) || !Number.isSafeInteger(c.m) || (c.k as number) < 1 || (c.m as number) < 1 || (c.k as number) + (c.m as number) > 255) throw new ProtocolError('malformed K+M in a shard request');
  return { k: c.k as number, m: c.m as number };
}

/**
 * Verifies the shards held in `files` against their block's manifest (each K+M set of a block
 * against its own), about `budget` bytes of them, going round from the block after `after`. A
 * shard that fails (or a manifest that no longer decodes, with every shard it describes) is
 * moved to `shards/quarantine/`: shard-have stops reporting it, so the next repair pass of the
 * block's writer rebuilds it on its placement. Returns the counts and the last block looked at
 * (the next call's `after`).
 */
export async function scrubShards(files: ShardFiles, log: Logger, signal: AbortSignal, budget: number, after: string): Promise<{ verified: number; corrupt: number; last: string }> {
  const ids = await files.blocks();
  const start = ids.findIndex((id) => id > after);
  const order = start < 0 ? ids : [...ids.slice(start), ...ids.slice(0, start)];
  const out = { verified: 0, corrupt: 0, last: after };
  for (const id of order) {
    if (budget <= 0 || signal.aborted) break;
    out.last = id;
    for (const coding of await files.codings(id)) {
      const bytes = await files.manifest(id, coding);
      if (!bytes) continue;
      let manifest: ShardManifest | undefined;
      try {
        manifest = decodeManifest(bytes);
      } catch (err) {
        log.error({ event: 'shard-corrupt', id, err: errorText(err) }, 'a held manifest failed to decode; its shards are quarantined');
      }
      for (const index of await files.held(id, coding)) {
        const shard = await files.read(id, index, coding);
        if (!shard) continue;
        budget -= shard.length;
        try {
          if (!manifest) throw new CorruptionError(`the manifest of ${id} does not decode`);
          verifyShard(manifest, index, shard);
          out.verified++;
        } catch (err) {
          out.corrupt++;
          log.error({ event: 'shard-corrupt', id, index, err: errorText(err) }, 'a held shard failed verification; quarantined, to be rebuilt by repair');
          await files.quarantine(id, index, coding);
        }
      }
    }
  }
  return out;
}
