import crypto from 'node:crypto';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { describe, expect, it } from 'vitest';
import { AeadKey, DatabaseKeys, deriveKey, HmacSha256, nextNonce, sha256Native, xchachaOpen, xchachaSeal, xchachaSealReference } from '../lib/crypto.js';
import { WrongKeyError } from '../lib/errors.js';

interface Vector { source: string; key: string; nonce: string; aad: string; plaintext: string; ciphertext_and_tag: string }
// Vectors from independent implementations (libsodium, the XChaCha draft): test/vectors/README.md.
const vectorsPath = fileURLToPath(new URL('./vectors/xchacha20poly1305.json', import.meta.url));
const vectors: Vector[] = JSON.parse(fs.readFileSync(vectorsPath, 'utf8'));
const hex = (s: string) => Buffer.from(s, 'hex');

describe('XChaCha20-Poly1305', () => {
  it('has vectors to check against', () => {
    expect(vectors.length).toBeGreaterThanOrEqual(10);
  });

  it.each(vectors.map((v, i) => [i, v] as const))('matches libsodium vector %i byte for byte (native path)', (_i, v) => {
    const sealed = xchachaSeal(new AeadKey(hex(v.key)), hex(v.nonce), hex(v.plaintext), hex(v.aad));
    expect(sealed.toString('hex')).toBe(v.ciphertext_and_tag);
    expect(xchachaOpen(new AeadKey(hex(v.key)), hex(v.nonce), sealed, hex(v.aad)).toString('hex')).toBe(v.plaintext);
  });

  it.each(vectors.map((v, i) => [i, v] as const))('matches libsodium vector %i byte for byte (@noble reference)', (_i, v) => {
    expect(Buffer.from(xchachaSealReference(hex(v.key), hex(v.nonce), hex(v.plaintext), hex(v.aad))).toString('hex')).toBe(v.ciphertext_and_tag);
  });

  it('native output equals @noble on 500 random cases of varied length', () => {
    for (let i = 0; i < 500; i++) {
      const key = crypto.randomBytes(32);
      const nonce = crypto.randomBytes(24);
      const pt = crypto.randomBytes(crypto.randomInt(0, i < 20 ? 70_000 : 300));
      const aad = crypto.randomBytes(crypto.randomInt(0, 60));
      const native = xchachaSeal(new AeadKey(key), nonce, pt, aad);
      expect(native.equals(Buffer.from(xchachaSealReference(key, nonce, pt, aad)))).toBe(true);
    }
  });

  it('nonces of one thread share a random prefix and never repeat; the cached subkey stays exact', () => {
    const key = crypto.randomBytes(32);
    const aead = new AeadKey(key);
    const seen = new Set<string>();
    const nonces = Array.from({ length: 2000 }, () => nextNonce());
    for (const n of nonces) {
      expect(n.length).toBe(24);
      expect(n.subarray(0, 16).equals(nonces[0]!.subarray(0, 16))).toBe(true);
      seen.add(n.toString('hex'));
    }
    expect(seen.size).toBe(nonces.length);
    // Interleave this thread's prefix with foreign ones (as reads of other writers' entries do), so
    // the subkey cache is hit, missed and evicted; every output must still equal @noble's.
    for (let i = 0; i < 300; i++) {
      const nonce = i % 3 === 0 ? crypto.randomBytes(24) : nonces[i]!;
      const pt = crypto.randomBytes(i);
      expect(xchachaSeal(aead, nonce, pt, nonce).equals(Buffer.from(xchachaSealReference(key, nonce, pt, nonce)))).toBe(true);
    }
  });

  it('rejects a flipped bit, a wrong key and wrong associated data', () => {
    const key = crypto.randomBytes(32);
    const nonce = crypto.randomBytes(24);
    const sealed = xchachaSeal(new AeadKey(key), nonce, Buffer.from('attack at dawn'), Buffer.from('id'));
    const flipped = Buffer.from(sealed);
    flipped[3]! ^= 1;
    expect(() => xchachaOpen(new AeadKey(key), nonce, flipped, Buffer.from('id'))).toThrow(WrongKeyError);
    expect(() => xchachaOpen(new AeadKey(crypto.randomBytes(32)), nonce, sealed, Buffer.from('id'))).toThrow(WrongKeyError);
    expect(() => xchachaOpen(new AeadKey(key), nonce, sealed, Buffer.from('other'))).toThrow(WrongKeyError);
  });
});

describe('keyed ids', () => {
  it('chunk ids are HMAC-SHA256 and equal @noble hmac; object ids use a different key', () => {
    const keys = new DatabaseKeys(crypto.randomBytes(32), crypto.randomBytes(16));
    const data = crypto.randomBytes(1000);
    const id = keys.chunkId(data);
    expect(id).toHaveLength(32);
    expect(keys.objectId(data).equals(id)).toBe(false);
    expect(id.equals(crypto.createHash('sha256').update(data).digest())).toBe(false);
    // same master key, same database id: same ids; another database id: different ids
    const k1 = crypto.randomBytes(32);
    const dbId = crypto.randomBytes(16);
    expect(new DatabaseKeys(k1, dbId).chunkId(data).equals(new DatabaseKeys(k1, dbId).chunkId(data))).toBe(true);
    expect(new DatabaseKeys(k1, crypto.randomBytes(16)).chunkId(data).equals(new DatabaseKeys(k1, dbId).chunkId(data))).toBe(false);
    // Native HMAC against the @noble reference with a known key.
    const key = crypto.randomBytes(32);
    expect(crypto.createHmac('sha256', key).update(data).digest().equals(Buffer.from(hmac(sha256, key, data)))).toBe(true);
  });

  it('sha256Native (a latin1 string made a Buffer) equals @noble sha256, every byte value included', () => {
    const every = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    for (const data of [Buffer.alloc(0), every, ...[1, 55, 56, 64, 1000, 70000].map((n) => crypto.randomBytes(n)), ...Array.from({ length: 200 }, (_, i) => crypto.randomBytes(i))]) {
      const got = sha256Native(data);
      expect(got.length).toBe(32);
      expect(got.equals(Buffer.from(sha256(data)))).toBe(true);
    }
  });

  it('HmacSha256 equals createHmac and @noble hmac at every size that matters, in any order of calls', () => {
    // Sizes around SHA-256's 64-byte block and padding boundary (55/56), and around the
    // one-shot limit (16 KiB) where it switches to a Hmac object; the long message first, so a
    // short one after it would show any of its bytes left behind in the scratch buffer.
    const sizes = [20000, 16385, 16384, 16383, 0, 1, 31, 32, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000, 4096, 100000, 3];
    for (const keyLength of [0, 1, 32, 64]) {
      const key = crypto.randomBytes(keyLength);
      const mac = new HmacSha256(key);
      for (const n of sizes) {
        const m = crypto.randomBytes(n);
        const want = crypto.createHmac('sha256', key).update(m).digest();
        expect(mac.mac(m).equals(want), `key ${keyLength} B, message ${n} B`).toBe(true);
        expect(Buffer.from(hmac(sha256, key, m)).equals(want)).toBe(true);
      }
    }
    expect(() => new HmacSha256(crypto.randomBytes(65))).toThrow(RangeError);
  });

  it('chunk and object ids are HMAC-SHA256 under their HKDF-derived keys (the format FORMAT.md gives)', () => {
    const master = crypto.randomBytes(32);
    const dbId = crypto.randomBytes(16);
    const keys = new DatabaseKeys(master, dbId);
    for (const n of [0, 5, 4096, 70000]) {
      const m = crypto.randomBytes(n);
      expect(keys.chunkId(m).equals(Buffer.from(hmac(sha256, deriveKey(master, dbId, 'ourodb/v1/chunk-id'), m)))).toBe(true);
      expect(keys.objectId(m).equals(Buffer.from(hmac(sha256, deriveKey(master, dbId, 'ourodb/v1/object-id'), m)))).toBe(true);
    }
  });
});
