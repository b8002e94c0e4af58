/**
 * STAND-IN for ec-codec's carrier/ec/manifest.ts (same exports, same contract): the per-block
 * shard manifest, verifiable without the key. Encoded here as msgpack; the ec-codec branch's
 * format (docs/FORMAT.md) replaces it.
 */
import crypto from 'node:crypto';
import { Packr } from 'msgpackr/pack';
import { CorruptionError, ProtocolError } from '../../lib/errors.js';
import { shardSize } from './codec.js';

export interface ShardManifest {
  v: 1;
  block: string;
  size: number;
  k: number;
  m: number;
  shardSize: number;
  shards: string[];
}

const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });
const hash = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

export function makeManifest(blockId: string, block: Uint8Array, shards: Uint8Array[], k: number, m: number): ShardManifest {
  return { v: 1, block: blockId, size: block.length, k, m, shardSize: shardSize(block.length, k), shards: shards.map(hash) };
}

export function encodeManifest(m: ShardManifest): Uint8Array {
  return packr.pack([m.v, m.block, m.size, m.k, m.m, m.shardSize, m.shards]);
}

export function decodeManifest(bytes: Uint8Array): ShardManifest {
  let a: unknown;
  try {
    a = packr.unpack(bytes);
  } catch (err) {
    throw new ProtocolError('shard manifest: not decodable', { cause: err });
  }
  if (!Array.isArray(a) || a.length !== 7) throw new ProtocolError('shard manifest: malformed');
  const [v, block, size, k, m, ss, shards] = a as [unknown, unknown, unknown, unknown, unknown, unknown, unknown];
  if (v !== 1) throw new ProtocolError(`shard manifest: version ${String(v)}`);
  if (typeof block !== 'string' || !/^[0-9a-f]{64}$/.test(block)) throw new ProtocolError('shard manifest: bad block id');
  if (!Number.isSafeInteger(k) || !Number.isSafeInteger(m) || (k as number) < 1 || (m as number) < 1 || (k as number) + (m as number) > 255) throw new ProtocolError('shard manifest: bad K or M');
  if (!Number.isSafeInteger(size) || (size as number) < 1 || (size as number) > 2 ** 30) throw new CorruptionError(`shard manifest of ${block}: impossible block size ${String(size)}`);
  if (ss !== shardSize(size as number, k as number)) throw new CorruptionError(`shard manifest of ${block}: shard size ${String(ss)} does not fit a block of ${String(size)} bytes at K=${String(k)}`);
  if (!Array.isArray(shards) || shards.length !== (k as number) + (m as number) || !shards.every((h) => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h))) throw new ProtocolError('shard manifest: bad shard hashes');
  return { v: 1, block, size: size as number, k: k as number, m: m as number, shardSize: ss as number, shards: shards as string[] };
}

export function verifyShard(m: ShardManifest, index: number, shard: Uint8Array): void {
  if (!Number.isSafeInteger(index) || index < 0 || index >= m.k + m.m) throw new CorruptionError(`shard ${index} of ${m.block}: no such shard at ${m.k}+${m.m}`);
  if (shard.length !== m.shardSize) throw new CorruptionError(`shard ${index} of ${m.block}: ${shard.length} bytes, not ${m.shardSize}`, { location: { id: shardId(m.block, index) } });
  if (hash(shard) !== m.shards[index]) throw new CorruptionError(`shard ${index} of ${m.block}: hash does not match its manifest`, { location: { id: shardId(m.block, index) } });
}

export function shardId(blockId: string, index: number): string {
  return `${blockId}.${index}`;
}
