/** Erasure coding: the codec (Reed-Solomon K+M) and the per-block shard manifest (docs/FORMAT.md). */
export { MAX_SHARDS, SHARD_ALIGN, jsCodec, loadCodec, loadWasmCodec, shardSize } from './codec.js';
export type { ErasureCodec } from './codec.js';
export { MANIFEST_MAGIC, MANIFEST_VERSION, decodeManifest, encodeManifest, makeManifest, manifestLength, parseShardId, shardId, verifyShard } from './manifest.js';
export type { ShardManifest } from './manifest.js';
