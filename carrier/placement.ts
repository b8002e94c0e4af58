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
