/**
 * The rules of shard transfers and shard repair that need no node (docs/node.md, "Redundancy"):
 * what a receiver checks of a pushed shard, where a block's missing shards go, how a shard-have
 * answer and a held manifest are read, and how a block is joined from its data shards. Apart from
 * Shards (replication-shards.ts), which asks, pushes and stores, so each reads and tests alone.
 */
import { ProtocolError } from '../lib/errors.js';
import { type ShardManifest, decodeManifest, verifyShard } from './ec/manifest.js';
import type { EcPolicy } from './membership.js';

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
