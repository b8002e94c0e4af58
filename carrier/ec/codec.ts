/**
 * The erasure codec: a block cut into K data shards and M parity shards, systematic Reed-Solomon
 * over GF(2^8) (the construction is in carrier/ec/rs-js.ts and is part of the shard format).
 *
 * The codec every member uses is `ourodb-rs-js` (rs-js.ts, plain JavaScript, no dependency, so
 * every install has it). The WASM build of the Rust `reed-solomon-erasure` crate computes the same
 * bytes and is ~20% faster, but the only npm builds of it (@digitaldefiance/... 1.0.2 and
 * @subspace/... 0.2.5 ship the same 2019 .wasm, linked with wee_alloc) corrupt their own heap:
 * after a reconstruct at 1+1 or 2+1 the next call traps ("memory access out of bounds"). It is a
 * devDependency, loaded by loadWasmCodec() only for the tests' cross-check and the benchmark.
 * docs/design.md ("Erasure coding: the codec") has the measurements and why not the native
 * `@ronomon/reed-solomon` either. The codec runs synchronously on the calling thread: a 16 MiB
 * block at 4+2 takes ~30 ms here; the Promise in the interface leaves room for a worker.
 *
 * The public methods check everything before any library call (the WASM build panics on an empty
 * buffer, which traps and leaves the instance unusable), so a bad call is a typed error, never a
 * trap.
 */
import { createRequire } from 'node:module';
import { BadArgumentError, CorruptionError } from '../../lib/errors.js';
import { encodeParity, reconstructInPlace } from './rs-js.js';

export interface ErasureCodec {
  readonly name: string;
  /** K data shards + M parity shards of `block`: systematic (the K data shards concatenated, cut
   *  to block.length, are the block); every shard is shardSize(block.length, k) bytes (the last data
   *  shard zero-padded). */
  encode(block: Uint8Array, k: number, m: number): Promise<Uint8Array[]>;
  /** Given k+m slots with at least k present (undefined = missing), returns all k+m shards. Throws
   *  a typed error (OuroError, code OURO_CORRUPTION or OURO_BAD_ARGUMENT) if fewer than k. */
  reconstruct(shards: Array<Uint8Array | undefined>, k: number, m: number): Promise<Uint8Array[]>;
}

/** GF(2^8) has 256 elements, and a Vandermonde row per shard needs a distinct one: K+M <= 256. We
 *  keep one back so that K and M each fit a byte of the manifest with K+M one too. */
export const MAX_SHARDS = 255;

/** Shards are cut at multiples of 8 bytes: word-at-a-time codecs (rs-js.ts uses 32-bit words) need
 *  aligned, whole-word shards, and a 64-bit one could use the same sizes. */
export const SHARD_ALIGN = 8;

/**
 * Bytes in each shard of a `blockSize`-byte block cut into `k` data shards: ceil(blockSize / k)
 * rounded up to a multiple of 8. Part of the shard format (the manifest stores it and a reader
 * checks it against this).
 */
export function shardSize(blockSize: number, k: number): number {
  if (!Number.isSafeInteger(blockSize) || blockSize < 1) throw new BadArgumentError(`erasure coding: block size must be a positive integer, not ${blockSize}`);
  if (!Number.isInteger(k) || k < 1 || k >= MAX_SHARDS) throw new BadArgumentError(`erasure coding: k must be 1 to ${MAX_SHARDS - 1}, not ${k}`);
  return Math.ceil(Math.ceil(blockSize / k) / SHARD_ALIGN) * SHARD_ALIGN;
}

/** Throws BadArgumentError unless 1 <= k, 1 <= m and k + m <= MAX_SHARDS. */
export function checkShape(k: number, m: number): void {
  if (!Number.isInteger(k) || !Number.isInteger(m) || k < 1 || m < 1 || k + m > MAX_SHARDS) {
    throw new BadArgumentError(`erasure coding: K+M must have K >= 1, M >= 1 and K+M <= ${MAX_SHARDS}, not ${k}+${m}`);
  }
}

/** The k+m shards of `block` in one contiguous, 8-byte aligned buffer; data shards filled. */
function layOut(block: Uint8Array, k: number, m: number): { all: Uint8Array; size: number } {
  checkShape(k, m);
  if (!(block instanceof Uint8Array) || block.length === 0) throw new BadArgumentError('erasure coding: the block is empty (a sealed block never is)');
  const size = shardSize(block.length, k);
  const all = new Uint8Array(size * (k + m));
  all.set(block);
  return { all, size };
}

function split(all: Uint8Array, size: number, n: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => all.subarray(i * size, (i + 1) * size));
}

/**
 * Checks the slots of a reconstruct call: k+m of them, at least k present, all of one non-zero
 * length that is a multiple of 8. Returns the shard size and which slots are present.
 */
function checkSlots(shards: Array<Uint8Array | undefined>, k: number, m: number): { size: number; present: boolean[] } {
  checkShape(k, m);
  if (!Array.isArray(shards) || shards.length !== k + m) throw new BadArgumentError(`erasure coding: reconstruct takes ${k + m} slots for ${k}+${m}, not ${Array.isArray(shards) ? shards.length : typeof shards}`);
  const present = shards.map((s) => s !== undefined);
  const have = present.filter(Boolean).length;
  if (have < k) throw new CorruptionError(`erasure coding: ${have} of ${k + m} shards present, ${k} needed to rebuild the block`);
  let size = -1;
  for (const s of shards) {
    if (s === undefined) continue;
    if (!(s instanceof Uint8Array)) throw new BadArgumentError('erasure coding: a shard must be a Uint8Array');
    if (size === -1) size = s.length;
    else if (s.length !== size) throw new BadArgumentError(`erasure coding: shards differ in size (${size} and ${s.length} bytes)`);
  }
  if (size === 0 || size % SHARD_ALIGN !== 0) throw new BadArgumentError(`erasure coding: a shard is a non-zero multiple of ${SHARD_ALIGN} bytes, not ${size}`);
  return { size, present };
}

/** The same k+m slots in one contiguous buffer, missing ones zero. */
function gather(shards: Array<Uint8Array | undefined>, size: number): Uint8Array {
  const all = new Uint8Array(size * shards.length);
  shards.forEach((s, i) => { if (s !== undefined) all.set(s, i * size); });
  return all;
}

/** rs-js.ts behind the interface. */
export const jsCodec: ErasureCodec = {
  name: 'ourodb-rs-js',
  async encode(block, k, m) {
    const { all, size } = layOut(block, k, m);
    const shards = split(all, size, k + m);
    encodeParity(shards, k, m);
    return shards;
  },
  async reconstruct(slots, k, m) {
    const { size, present } = checkSlots(slots, k, m);
    const shards = split(gather(slots, size), size, k + m);
    reconstructInPlace(shards, present, k, m);
    return shards;
  },
};

/** What we use of `@digitaldefiance/reed-solomon-erasure.wasm` (its CommonJS build: its ES module
 *  build reads `__dirname`, which ES modules lack, so it cannot find its .wasm). */
export interface RawWasmCodec {
  encode(shards: Uint8Array, dataShards: number, parityShards: number): number;
  reconstruct(shards: Uint8Array, dataShards: number, parityShards: number, shardsAvailable: boolean[]): number;
}
export const WASM_PACKAGE = '@digitaldefiance/reed-solomon-erasure.wasm';

let raw: RawWasmCodec | null | undefined;

/** The WASM library itself, for the benchmark's raw figures; undefined when it is not installed. */
export function loadRawWasm(): RawWasmCodec | undefined {
  if (raw === undefined) {
    try {
      const mod = createRequire(import.meta.url)(WASM_PACKAGE) as { ReedSolomonErasure: { fromCurrentDirectorySync(): RawWasmCodec } };
      raw = mod.ReedSolomonErasure.fromCurrentDirectorySync();
    } catch {
      raw = null;
    }
  }
  return raw ?? undefined;
}

function wasmCodec(lib: RawWasmCodec): ErasureCodec {
  const check = (what: string, rc: number) => {
    // Every input was checked first, so a failure here is the library's, not the caller's.
    if (rc !== 0) throw new CorruptionError(`erasure coding: ${WASM_PACKAGE} ${what} failed with result ${rc}`);
  };
  return {
    name: 'reed-solomon-erasure (wasm)',
    async encode(block, k, m) {
      const { all, size } = layOut(block, k, m);
      check('encode', lib.encode(all, k, m));
      return split(all, size, k + m);
    },
    async reconstruct(slots, k, m) {
      const { size, present } = checkSlots(slots, k, m);
      const all = gather(slots, size);
      // The library rebuilds data shards only; missing parity is then encoded from the data.
      if (present.slice(0, k).some((p) => !p)) check('reconstruct', lib.reconstruct(all, k, m, present));
      if (present.slice(k).some((p) => !p)) check('encode', lib.encode(all, k, m));
      return split(all, size, k + m);
    },
  };
}

/** The WASM codec (tests and benchmarks only) when its package is installed, else undefined. */
export function loadWasmCodec(): ErasureCodec | undefined {
  const lib = loadRawWasm();
  return lib === undefined ? undefined : wasmCodec(lib);
}

/** The codec to use: the JS one (see the top of this file for why not the WASM build). */
export async function loadCodec(): Promise<ErasureCodec> {
  return jsCodec;
}
