/**
 * Placement of sealed blocks (issue 7): each block's replica set is chosen by rendezvous
 * (highest-random-weight) hashing of its id over the candidate members. Every member that holds
 * the same member list computes the same set: the inputs are the block id, the list's members
 * and the replication factor, never local observations such as liveness (repair acts on those).
 *
 * Weight of a member for a block: the first 8 bytes, big-endian, of
 * SHA-256(UTF-8 "ourodb placement v1" | 0x00 | block id | 0x00 | peer id). The replica set is the
 * RF members of highest weight (ties, which need a SHA-256 collision on 64 bits, go to the lower
 * peer id). Adding or removing one member moves only the blocks whose set it enters or leaves:
 * about RF/n of them.
 */
import crypto from 'node:crypto';
import { BadArgumentError } from '../lib/errors.js';

export const DEFAULT_REPLICATION_FACTOR = 3;

export function placementWeight(blockId: string, peerId: string): bigint {
  return crypto.createHash('sha256').update('ourodb placement v1\0').update(blockId).update('\0').update(peerId).digest().readBigUInt64BE(0);
}

/** The replica set of `blockId`: min(rf, candidates) peer ids, highest weight first. */
export function replicaSet(blockId: string, candidates: readonly string[], rf = DEFAULT_REPLICATION_FACTOR): string[] {
  if (!Number.isSafeInteger(rf) || rf < 1) throw new BadArgumentError('the replication factor must be a positive integer');
  return [...new Set(candidates)]
    .map((peer) => ({ peer, w: placementWeight(blockId, peer) }))
    .sort((a, b) => (a.w > b.w ? -1 : a.w < b.w ? 1 : a.peer < b.peer ? -1 : 1))
    .slice(0, rf)
    .map((x) => x.peer);
}

/**
 * Where the shards of an erasure-coded block go (`ouro cluster redundancy ec K+M`): the top K+M
 * members of the same ranking, shard i on the i-th, so every shard sits on a member of its own
 * and every member holding the list computes the same places. Fewer candidates than K+M give a
 * shorter list (the policy is refused below K+M placeable members; a member lost later leaves
 * its shards to repair).
 */
export function shardSet(blockId: string, candidates: readonly string[], k: number, m: number): string[] {
  return replicaSet(blockId, candidates, k + m);
}

/**
 * Blocks smaller than this stay whole (replicated by the factor) on a cluster at ec K+M: every
 * shard of a block costs each of K+M members a transfer, a manifest and an fsync of its own, so
 * below 64 KiB a shard that work outweighs its bytes, and parity saves nothing a replica of so
 * small a block would cost. MinIO keeps objects under 128 KiB whole (inlined in their metadata)
 * for the same reason. At 4+2 the line is 256 KiB; at 8+3, 512 KiB.
 */
export const MIN_SHARD_BYTES = 64 * 1024;

export function smallBlockLine(k: number): number {
  return k * MIN_SHARD_BYTES;
}
