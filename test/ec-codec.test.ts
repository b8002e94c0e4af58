/**
 * The erasure codec and the shard manifest (carrier/ec/): round trips, every loss of up to M
 * shards, too few shards, corrupt shards, malformed manifests, and the two codecs computing the
 * same bytes (the WASM build of the Rust crate against our JS one), pinned by a frozen vector.
 */
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { jsCodec, loadCodec, loadWasmCodec, shardSize, type ErasureCodec } from '../carrier/ec/codec.js';
import { decodeManifest, encodeManifest, makeManifest, manifestLength, parseShardId, shardId, verifyShard, type ShardManifest } from '../carrier/ec/manifest.js';
import { OuroError } from '../lib/errors.js';

const wasm = loadWasmCodec();
// The WASM build is a devDependency: the cross-check below must not pass by skipping.
it('the WASM reference codec loads here; loadCodec picks the JS one', async () => {
  expect(wasm).toBeDefined();
  expect(await loadCodec()).toBe(jsCodec);
});

const codecs: ErasureCodec[] = [jsCodec, wasm!];
// The WASM build corrupts its heap after a reconstruct at 1+1 or 2+1 (codec.ts says more), so
// it runs the shapes with K+M >= 4 only.
const shapes = (c: ErasureCodec): Array<[number, number]> => (c === jsCodec ? [[4, 2], [8, 3], [1, 1], [2, 1], [5, 2]] : [[4, 2], [8, 3], [5, 2]]);

/** A deterministic pseudo-random block (SHA-256 in counter mode), so failures reproduce. */
function block(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0, n = 0; i < size; i += 32, n++) out.set(crypto.createHash('sha256').update(`${seed}:${n}`).digest().subarray(0, Math.min(32, size - i)), i);
  return out;
}
const id = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');
const concat = (shards: Uint8Array[], k: number, size: number) => Buffer.concat(shards.slice(0, k)).subarray(0, size);

async function expectCode(p: Promise<unknown> | (() => unknown), code: string) {
  const run = typeof p === 'function' ? async () => p() : () => p;
  const err = await run().then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(OuroError);
  expect((err as OuroError).code).toBe(code);
}

/** Every subset of 0..n-1 with at most `max` members. */
function subsets(n: number, max: number): number[][] {
  const out: number[][] = [];
  for (let mask = 0; mask < 1 << n; mask++) {
    const s = [...Array(n).keys()].filter((i) => mask & (1 << i));
    if (s.length <= max) out.push(s);
  }
  return out;
}

describe.each(codecs.map((c) => [c.name, c] as const))('codec %s', (_name, codec) => {
  it('round trips many sizes, systematically', async () => {
    for (const [k, m] of shapes(codec)) for (const size of [1, 7, 8, k * 8 - 1, k * 8 + 1, 1000, 65_537, 1_000_003]) {
      const b = block(size, size);
      const shards = await codec.encode(b, k, m);
      expect(shards.length).toBe(k + m);
      for (const s of shards) expect(s.length).toBe(shardSize(size, k));
      // Systematic: the data shards are the block, then zeros.
      expect(Buffer.from(concat(shards, k, size)).equals(Buffer.from(b))).toBe(true);
      expect(Buffer.concat(shards.slice(0, k)).subarray(size).every((x) => x === 0)).toBe(true);
      const lost = shards.map((s, i) => (i < m ? undefined : s));
      const back = await codec.reconstruct(lost, k, m);
      back.forEach((s, i) => expect(Buffer.from(s).equals(Buffer.from(shards[i]!))).toBe(true));
    }
  });

  // The WASM build fails some of these with its TooFewShardsPresent (10) while K are present, one
  // more sign of its damaged heap: the JS codec alone runs them.
  it.runIf(codec === jsCodec).each([[4, 2], [8, 3]])('rebuilds every shard, byte-identical, after every loss of up to M at %i+%i', async (k, m) => {
    const b = block(10_000 + k, k);
    const shards = await codec.encode(b, k, m);
    const losses = subsets(k + m, m);
    expect(losses.length).toBe(k === 4 ? 1 + 6 + 15 : 1 + 11 + 55 + 165);
    for (const lost of losses) {
      const back = await codec.reconstruct(shards.map((s, i) => (lost.includes(i) ? undefined : s)), k, m);
      for (let i = 0; i < k + m; i++) expect(Buffer.from(back[i]!).equals(Buffer.from(shards[i]!)), `lost ${lost}, shard ${i}`).toBe(true);
    }
  });

  it('round trips a 16 MiB block at 4+2 and 8+3', async () => {
    const b = block(16 << 20, 16);
    for (const [k, m] of [[4, 2], [8, 3]] as const) {
      const shards = await codec.encode(b, k, m);
      const back = await codec.reconstruct(shards.map((s, i) => (i === 0 || i === k ? undefined : s)), k, m);
      expect(id(concat(back, k, b.length))).toBe(id(b));
    }
  });

  it('refuses K-1 shards, mismatched shards and impossible shapes with typed errors', async () => {
    const shards = await codec.encode(block(4096), 4, 2);
    await expectCode(codec.reconstruct([shards[0], undefined, shards[2], undefined, undefined, shards[5]], 4, 2), 'OURO_CORRUPTION');
    await expectCode(codec.reconstruct(shards.slice(0, 5), 4, 2), 'OURO_BAD_ARGUMENT');
    await expectCode(codec.reconstruct([shards[0]!.subarray(8), ...shards.slice(1)], 4, 2), 'OURO_BAD_ARGUMENT');
    await expectCode(codec.reconstruct(shards.map((s) => s.subarray(0, 0)), 4, 2), 'OURO_BAD_ARGUMENT');
    // A zero-length block would panic the WASM build (a trap): refused before the call.
    await expectCode(codec.encode(new Uint8Array(0), 4, 2), 'OURO_BAD_ARGUMENT');
    await expectCode(codec.encode(block(10), 200, 56), 'OURO_BAD_ARGUMENT');
    await expectCode(codec.encode(block(10), 4, 0), 'OURO_BAD_ARGUMENT');
    await expectCode(codec.encode(block(10), 0, 2), 'OURO_BAD_ARGUMENT');
    // Still usable after the refusals.
    expect((await codec.encode(block(10), 4, 2)).length).toBe(6);
  });
});

describe('the codecs agree', () => {
  it('the WASM and JS codecs compute the same parity bytes (one construction), and JS decodes the WASM shards', async () => {
    for (const [k, m, size] of [[4, 2, 1_000_001], [8, 3, 77_777], [10, 4, 12_345], [200, 55, 100_000]] as const) {
      const b = block(size, k);
      const a = await jsCodec.encode(b, k, m);
      const w = await wasm!.encode(b, k, m);
      a.forEach((s, i) => expect(Buffer.from(s).equals(Buffer.from(w[i]!)), `${k}+${m} shard ${i}`).toBe(true));
      const fromW = await jsCodec.reconstruct(w.map((s, i) => (i < m ? undefined : s)), k, m);
      expect(id(concat(fromW, k, size))).toBe(id(b));
    }
  });

  it('a frozen vector: the parity of a fixed block is what this construction gave when the format was set', async () => {
    // Catches a change of construction even where the WASM codec is not installed.
    const shards = await jsCodec.encode(block(100_000, 7), 4, 2);
    expect(shards.map((s) => id(s).slice(0, 16))).toMatchSnapshot();
  });
});

describe('shard manifest', () => {
  const b = block(100_003, 3);
  const blockId = id(b);
  const k = 4;
  const m = 2;
  let manifest: ShardManifest;
  let bytes: Uint8Array;

  it('round trips through its bytes, at the documented length', async () => {
    const shards = await jsCodec.encode(b, k, m);
    manifest = makeManifest(blockId, b, shards, k, m);
    bytes = encodeManifest(manifest);
    expect(bytes.length).toBe(manifestLength(k, m));
    expect(bytes.length).toBe(86 + 32 * 6);
    expect(Buffer.from(bytes.subarray(0, 7)).toString('latin1')).toBe('OURO-EC');
    expect(decodeManifest(bytes)).toEqual(manifest);
    expect(manifest).toMatchObject({ v: 1, block: blockId, size: b.length, k, m, shardSize: shardSize(b.length, k) });
    for (let i = 0; i < k + m; i++) verifyShard(manifest, i, shards[i]!);
  });

  it('verifyShard refuses a corrupt, short or misplaced shard', async () => {
    const shards = await jsCodec.encode(b, k, m);
    const flipped = shards[5]!.slice();
    flipped[1234]! ^= 1;
    expect(() => verifyShard(manifest, 5, flipped)).toThrow(expect.objectContaining({ code: 'OURO_CORRUPTION' }));
    expect(() => verifyShard(manifest, 0, shards[0]!.subarray(8))).toThrow(expect.objectContaining({ code: 'OURO_CORRUPTION' }));
    expect(() => verifyShard(manifest, 1, shards[0]!)).toThrow(expect.objectContaining({ code: 'OURO_CORRUPTION' }));
    expect(() => verifyShard(manifest, 6, shards[0]!)).toThrow(expect.objectContaining({ code: 'OURO_BAD_ARGUMENT' }));
  });

  /** The manifest's bytes with `edit` applied and its trailing hash made right again. */
  function forged(edit: (b: Buffer) => Buffer | void): Uint8Array {
    let out: Buffer = Buffer.from(bytes);
    out = edit(out) ?? out;
    crypto.createHash('sha256').update(out.subarray(0, out.length - 32)).digest().copy(out, out.length - 32);
    return out;
  }

  it('refuses every malformed manifest with a typed error', () => {
    const corrupt = (x: Uint8Array, why: string) => expect(() => decodeManifest(x), why).toThrow(expect.objectContaining({ code: 'OURO_CORRUPTION' }));
    // The premise: forged() alone keeps a manifest valid.
    expect(decodeManifest(forged(() => {}))).toEqual(manifest);
    for (let n = 0; n < bytes.length; n++) corrupt(bytes.subarray(0, n), `truncated to ${n}`);
    corrupt(Buffer.concat([bytes, Buffer.alloc(1)]), 'one byte too many');
    const flipped = Buffer.from(bytes);
    flipped[60]! ^= 1;
    corrupt(flipped, 'a shard hash changed under the trailing hash');
    corrupt(forged((x) => { x[0] = 0x58; }), 'bad magic');
    corrupt(forged((x) => { x.writeBigUInt64LE(0n, 10); }), 'size 0');
    corrupt(forged((x) => { x.writeBigUInt64LE(2n ** 60n, 10); }), 'size beyond 2^53');
    corrupt(forged((x) => { x.writeBigUInt64LE(BigInt(b.length + 1000), 10); }), 'size not fitting the shard size');
    corrupt(forged((x) => { x.writeUInt32LE(manifest.shardSize + 8, 18); }), 'shard size too big');
    corrupt(forged((x) => { x.writeUInt32LE(0, 18); }), 'shard size 0');
    corrupt(forged((x) => { x[8] = 0; }), 'K = 0');
    corrupt(forged((x) => { x[9] = 0; }), 'M = 0');
    corrupt(forged((x) => { x[8] = 200; x[9] = 56; }), 'K+M = 256');
    corrupt(forged((x) => { x[8] = 5; }), 'K+M not matching the length');
    expect(() => decodeManifest(forged((x) => { x[7] = 2; }))).toThrow(expect.objectContaining({ code: 'OURO_UNSUPPORTED_VERSION' }));
  });

  it('refuses to encode an inconsistent manifest', () => {
    expect(() => encodeManifest({ ...manifest, shardSize: manifest.shardSize + 8 })).toThrow(expect.objectContaining({ code: 'OURO_BAD_ARGUMENT' }));
    expect(() => encodeManifest({ ...manifest, shards: manifest.shards.slice(1) })).toThrow(expect.objectContaining({ code: 'OURO_BAD_ARGUMENT' }));
    expect(() => encodeManifest({ ...manifest, k: 200, m: 56 })).toThrow(expect.objectContaining({ code: 'OURO_BAD_ARGUMENT' }));
  });

  it('names shards <block id>.<index> and reads the names back', () => {
    expect(shardId(blockId, 0)).toBe(`${blockId}.0`);
    expect(shardId(blockId, 254)).toBe(`${blockId}.254`);
    expect(parseShardId(shardId(blockId, 17))).toEqual({ block: blockId, index: 17 });
    for (const bad of [`${blockId}.01`, `${blockId}.255`, `${blockId}`, `${blockId.toUpperCase()}.1`, `${blockId}.-1`, 'x.1']) {
      expect(() => parseShardId(bad), bad).toThrow(expect.objectContaining({ code: 'OURO_BAD_ARGUMENT' }));
    }
    expect(() => shardId(blockId, 255)).toThrow(expect.objectContaining({ code: 'OURO_BAD_ARGUMENT' }));
  });
});
