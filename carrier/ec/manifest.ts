/**
 * The per-block shard manifest: what any member needs to check a shard it holds, without the key.
 * Part of the wire and file format (docs/FORMAT.md "Erasure-coded blocks"); never change a layout
 * in place, add a version.
 *
 *   offset  bytes        field
 *   0       7            magic "OURO-EC" (ASCII)
 *   7       1            version (1)
 *   8       1            K, data shards (1..254)
 *   9       1            M, parity shards (1..254; K+M <= 255)
 *   10      8            block size in bytes, u64 LE (1 .. 2^53-1)
 *   18      4            shard size in bytes, u32 LE: must equal shardSize(size, K)
 *   22      32           block id (the block file's SHA-256, docs/FORMAT.md "Block replication")
 *   54      32 x (K+M)   SHA-256 of each shard, in shard index order (data 0..K-1, parity K..K+M-1)
 *   54+32(K+M)  32       SHA-256 of all the bytes before it
 *
 * A manifest is 86 + 32(K+M) bytes: 278 at 4+2, 438 at 8+3. The trailing hash catches a damaged
 * manifest; it does not prove who made it (anyone can make a consistent manifest for a block id).
 * What does: the data shards concatenated and cut to `size` hash to the block id, which a keyed
 * reader checks, and a shard's own hash ties it to the manifest.
 *
 * A shard travels and is stored as its raw bytes, with no header: its index comes from its name
 * (shardId), its expected hash from the manifest, so verifyShard needs nothing else, and a header
 * would only repeat what the manifest says, with a chance to disagree with it.
 */
import { createHash } from 'node:crypto';
import { BadArgumentError, CorruptionError, UnsupportedVersionError } from '../../lib/errors.js';
import { MAX_SHARDS, checkShape, shardSize } from './codec.js';

export interface ShardManifest { v: 1; block: string /* block id hex */; size: number; k: number; m: number; shardSize: number; shards: string[] /* hash hex of each shard, index order */ }

/** Part of the format, never change. */
export const MANIFEST_MAGIC = 'OURO-EC';
export const MANIFEST_VERSION = 1;
const HEAD = 54;
const HASH = 32;

/** The length of a manifest for K+M shards. */
export function manifestLength(k: number, m: number): number { return HEAD + HASH * (k + m) + HASH; }

const HEX64 = /^[0-9a-f]{64}$/;

function sha256(...parts: Uint8Array[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** The manifest of `block` (id `blockId`) cut into `shards` by a codec at k+m. */
export function makeManifest(blockId: string, block: Uint8Array, shards: Uint8Array[], k: number, m: number): ShardManifest {
  checkShape(k, m);
  if (!HEX64.test(blockId)) throw new BadArgumentError(`erasure coding: a block id is 64 lowercase hex digits, not ${JSON.stringify(blockId)}`);
  const size = shardSize(block.length, k);
  if (shards.length !== k + m || shards.some((s) => s.length !== size)) throw new BadArgumentError(`erasure coding: ${k}+${m} shards of ${size} bytes expected`);
  return { v: 1, block: blockId, size: block.length, k, m, shardSize: size, shards: shards.map((s) => sha256(s).toString('hex')) };
}

export function encodeManifest(manifest: ShardManifest): Uint8Array {
  const { k, m } = manifest;
  checkShape(k, m);
  if (manifest.v !== MANIFEST_VERSION) throw new BadArgumentError(`erasure coding: manifest version ${manifest.v} is not ${MANIFEST_VERSION}`);
  if (!Number.isSafeInteger(manifest.size) || manifest.size < 1 || manifest.shardSize !== shardSize(manifest.size, k) || manifest.shardSize > 0xffffffff) throw new BadArgumentError(`erasure coding: shard size ${manifest.shardSize} does not fit ${manifest.size} bytes at K=${k}`);
  if (!HEX64.test(manifest.block) || manifest.shards.length !== k + m || !manifest.shards.every((h) => HEX64.test(h))) {
    throw new BadArgumentError('erasure coding: a manifest names a 64-hex block id and one 64-hex hash per shard');
  }
  const out = Buffer.alloc(manifestLength(k, m));
  out.write(MANIFEST_MAGIC, 0, 'latin1');
  out[7] = MANIFEST_VERSION;
  out[8] = k;
  out[9] = m;
  out.writeBigUInt64LE(BigInt(manifest.size), 10);
  out.writeUInt32LE(manifest.shardSize, 18);
  out.write(manifest.block, 22, 'hex');
  manifest.shards.forEach((h, i) => out.write(h, HEAD + HASH * i, 'hex'));
  sha256(out.subarray(0, out.length - HASH)).copy(out, out.length - HASH);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/**
 * Reads and checks a manifest: OURO_CORRUPTION for any malformed one (short, long, wrong magic,
 * wrong trailing hash, K/M out of range, a size and shard size that do not fit), and
 * OURO_UNSUPPORTED_VERSION for a version this release does not know.
 */
export function decodeManifest(bytes: Uint8Array): ShardManifest {
  const bad = (why: string) => new CorruptionError(`erasure coding: malformed shard manifest: ${why}`);
  if (!(bytes instanceof Uint8Array)) throw new BadArgumentError('erasure coding: a manifest is bytes');
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (b.length < manifestLength(1, 1)) throw bad(`${b.length} bytes, shorter than any manifest`);
  if (b.toString('latin1', 0, 7) !== MANIFEST_MAGIC) throw bad('no OURO-EC magic');
  if (b[7] !== MANIFEST_VERSION) throw new UnsupportedVersionError(`erasure coding: shard manifest version ${b[7]} (this release reads ${MANIFEST_VERSION})`);
  const k = b[8]!;
  const m = b[9]!;
  if (k < 1 || m < 1 || k + m > MAX_SHARDS) throw bad(`K+M ${k}+${m} out of range`);
  if (b.length !== manifestLength(k, m)) throw bad(`${b.length} bytes, a ${k}+${m} manifest has ${manifestLength(k, m)}`);
  if (!sha256(b.subarray(0, b.length - HASH)).equals(b.subarray(b.length - HASH))) throw bad('its SHA-256 does not match');
  const size = b.readBigUInt64LE(10);
  if (size < 1n || size > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`block size ${size}`);
  const per = b.readUInt32LE(18);
  if (per !== shardSize(Number(size), k)) throw bad(`shard size ${per} does not fit a ${size}-byte block at K=${k}`);
  const shards = Array.from({ length: k + m }, (_, i) => b.toString('hex', HEAD + HASH * i, HEAD + HASH * (i + 1)));
  return { v: 1, block: b.toString('hex', 22, 54), size: Number(size), k, m, shardSize: per, shards };
}

/** Throws CorruptionError unless `shard` is shard `index` of the manifest's block. */
export function verifyShard(manifest: ShardManifest, index: number, shard: Uint8Array): void {
  if (!Number.isInteger(index) || index < 0 || index >= manifest.k + manifest.m) throw new BadArgumentError(`erasure coding: shard index ${index} outside 0..${manifest.k + manifest.m - 1}`);
  const id = shardId(manifest.block, index);
  if (shard.length !== manifest.shardSize) throw new CorruptionError(`erasure coding: shard ${id} is ${shard.length} bytes, the manifest says ${manifest.shardSize}`, { location: { id } });
  if (sha256(shard).toString('hex') !== manifest.shards[index]) throw new CorruptionError(`erasure coding: shard ${id} does not match its hash in the manifest`, { location: { id } });
}

/**
 * The name shard `index` of block `blockId` is stored and addressed under: `<block id>.<index>`,
 * the index in decimal without leading zeros ("ab12….0" .. "ab12….5" at 4+2). It names the block,
 * so placement (which ranks members by block id) and a member's files both derive from it, and
 * its index, which verifyShard needs.
 */
export function shardId(blockId: string, index: number): string {
  if (!HEX64.test(blockId)) throw new BadArgumentError(`erasure coding: a block id is 64 lowercase hex digits, not ${JSON.stringify(blockId)}`);
  if (!Number.isInteger(index) || index < 0 || index >= MAX_SHARDS) throw new BadArgumentError(`erasure coding: shard index ${index} outside 0..${MAX_SHARDS - 1}`);
  return `${blockId}.${index}`;
}

/** shardId's inverse; throws BadArgumentError for a name that is not one. */
export function parseShardId(id: string): { block: string; index: number } {
  const match = /^([0-9a-f]{64})\.(0|[1-9][0-9]{0,2})$/.exec(id);
  if (match === null || Number(match[2]) >= MAX_SHARDS) throw new BadArgumentError(`erasure coding: ${JSON.stringify(id)} is not a shard id`);
  return { block: match[1]!, index: Number(match[2]) };
}
