/**
 * Cryptography of OuroDB.
 *
 * AEAD: XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03, byte-identical to libsodium's
 * crypto_aead_xchacha20poly1305_ietf_*). The hot path runs it natively: the 24-byte nonce is split
 * into a 16-byte prefix, which HChaCha20 (from @noble/ciphers) mixes with the key into a one-time
 * subkey, and an 8-byte suffix, which becomes the last 8 bytes of the 12-byte IETF nonce of
 * node:crypto's chacha20-poly1305 (first 4 bytes zero). That is exactly the XChaCha construction,
 * so the output equals @noble's xchacha20poly1305 and the libsodium vectors (test/crypto.test.ts
 * checks both). Native ChaCha is ~10x faster than the JS one here (see ../docs/design.md).
 *
 * Nonces (see nextNonce): a 16-byte prefix drawn from the OS CSPRNG once per thread, followed by
 * an 8-byte counter. Every nonce a thread hands out is distinct by the counter; two threads,
 * processes or cluster members collide only if they draw the same 128-bit prefix (probability
 * ~n^2/2^129 for n prefixes ever drawn), so nothing has to survive a crash or be coordinated.
 * The extended nonce is what makes a random prefix safe: a 96-bit IETF nonce leaves no room for
 * one. And because HChaCha20 sees only the prefix, all entries a thread seals share one subkey:
 * AeadKey caches it as a KeyObject, which removes the per-entry HChaCha and key import (Node 24
 * spends ~27 us importing a raw key Buffer per call, ~3 us with a KeyObject, per the founders' brief; a 1 KiB put
 * spent about a quarter of its crypto time there in a CPU profile, see docs/design.md).
 */
import crypto, { type KeyObject } from 'node:crypto';
import { hchacha, xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { WrongKeyError } from './errors.js';

export const KEY_BYTES = 32;
export const NONCE_BYTES = 24;
export const TAG_BYTES = 16;
export const ID_BYTES = 32;
/** Bytes of a keyed tag (DatabaseKeys.tag; not the AEAD's TAG_BYTES). */
export const KEYED_TAG_BYTES = 16;
/** DatabaseKeys.tag domains: a key's hint, and the compared fields of its head (index/values.ts). */
export const TAG_HINT = 1;
export const TAG_CONTENT = 2;

// "expand 32-byte k" as four little-endian words: the ChaCha constants.
const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);

/** Subkeys kept per AeadKey: one per nonce prefix, i.e. per writing thread whose entries are read. */
const SUBKEY_CACHE_SIZE = 64;

/** A 32-byte AEAD key kept as the eight little-endian words HChaCha consumes. */
export class AeadKey {
  readonly #words: Uint32Array;
  readonly #subkeys = new Map<string, KeyObject>();
  constructor(key: Uint8Array) {
    if (key.byteLength !== KEY_BYTES) throw new RangeError('AEAD key must be 32 bytes');
    this.#words = wordsLE(key);
  }
  /** HChaCha20(key, nonce[0..16]) as a KeyObject for node:crypto, cached by prefix. */
  subkey(nonce: Uint8Array): KeyObject {
    const prefix = Buffer.from(nonce.buffer, nonce.byteOffset, 16).toString('latin1');
    let key = this.#subkeys.get(prefix);
    if (key === undefined) {
      const out = new Uint32Array(8);
      hchacha(SIGMA, this.#words, wordsLE(nonce.subarray(0, 16)), out);
      const bytes = Buffer.alloc(32);
      for (let i = 0; i < 8; i++) bytes.writeUInt32LE(out[i]!, i * 4);
      key = crypto.createSecretKey(bytes);
      bytes.fill(0);
      if (this.#subkeys.size >= SUBKEY_CACHE_SIZE) this.#subkeys.delete(this.#subkeys.keys().next().value!);
      this.#subkeys.set(prefix, key);
    }
    return key;
  }
}

function wordsLE(bytes: Uint8Array): Uint32Array {
  const words = new Uint32Array(bytes.byteLength / 4);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < words.length; i++) words[i] = view.getUint32(i * 4, true);
  return words;
}

function ietfNonce(nonce: Uint8Array): Buffer {
  const n = Buffer.alloc(12);
  n.set(nonce.subarray(16, 24), 4);
  return n;
}

/**
 * Encrypts `plaintext` and writes ciphertext || tag (plaintext.length + 16 bytes) into `out`
 * at `outOffset`. Returns the number of bytes written.
 */
export function xchachaSealInto(key: AeadKey, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array, out: Buffer, outOffset: number): number {
  if (nonce.byteLength !== NONCE_BYTES) throw new RangeError('nonce must be 24 bytes');
  const cipher = crypto.createCipheriv('chacha20-poly1305', key.subkey(nonce), ietfNonce(nonce), { authTagLength: TAG_BYTES });
  cipher.setAAD(aad, { plaintextLength: plaintext.byteLength });
  let n = 0;
  const body = cipher.update(plaintext);
  body.copy(out, outOffset);
  n += body.length;
  freeNow(body);
  const fin = cipher.final();
  fin.copy(out, outOffset + n);
  n += fin.length;
  cipher.getAuthTag().copy(out, outOffset + n);
  return n + TAG_BYTES;
}

/** Buffers at least this large are handed back to the allocator by freeNow (see there). */
export const FREE_NOW_MIN_BYTES = 16 * 1024;

/**
 * Gives a buffer nobody else will read back to the allocator now instead of at the next full
 * garbage collection: detaching its ArrayBuffer (transfer to length 0) frees the backing store
 * and takes it off V8's count of external memory. node:crypto returns the ciphertext in a fresh
 * buffer, which xchachaSealInto copies into the caller's at once; left to the collector, a seal
 * worker sealing 1 MiB chunks kept ~64 MiB of them (V8 runs a full collection when external
 * memory has grown by about that much) in its allocator arena, which a 1 GiB `ouro put` showed as
 * RSS (docs/performance.md, "Cost per byte"). Only a buffer that owns its whole ArrayBuffer is
 * detached (never a slice of Node's shared pool); one that cannot be is left to the collector.
 */
export function freeNow(buf: Uint8Array): void {
  const ab = buf.buffer;
  if (buf.byteLength < FREE_NOW_MIN_BYTES || buf.byteOffset !== 0 || ab.byteLength !== buf.byteLength || !(ab instanceof ArrayBuffer)) return;
  try {
    ab.transfer(0);
  } catch {
    // Not detachable (a buffer V8 or Node pinned): the collector frees it as before.
  }
}

export function xchachaSeal(key: AeadKey, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(plaintext.byteLength + TAG_BYTES);
  xchachaSealInto(key, nonce, plaintext, aad, out, 0);
  return out;
}

/**
 * Authenticates and decrypts ciphertext || tag. Throws WrongKeyError when authentication fails:
 * the caller decides whether that means a wrong key or corruption (it knows whether other data
 * authenticated under the same key).
 */
export function xchachaOpen(key: AeadKey, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Buffer {
  if (nonce.byteLength !== NONCE_BYTES) throw new RangeError('nonce must be 24 bytes');
  if (sealed.byteLength < TAG_BYTES) throw new WrongKeyError('sealed data shorter than its tag');
  const bodyLen = sealed.byteLength - TAG_BYTES;
  const decipher = crypto.createDecipheriv('chacha20-poly1305', key.subkey(nonce), ietfNonce(nonce), { authTagLength: TAG_BYTES });
  decipher.setAAD(aad, { plaintextLength: bodyLen });
  decipher.setAuthTag(sealed.subarray(bodyLen));
  try {
    const body = decipher.update(sealed.subarray(0, bodyLen));
    const fin = decipher.final();
    return fin.length === 0 ? body : Buffer.concat([body, fin]);
  } catch (err) {
    throw new WrongKeyError('authentication failed', { cause: err });
  }
}

/**
 * Decrypts `data`, the ciphertext of plaintext bytes [position, position + data.length) of an
 * XChaCha20-Poly1305 message, WITHOUT authenticating it: the caller must authenticate what it
 * gets by other means (a packed record is checked against its keyed hash, lib/db.ts). The AEAD
 * encrypts with ChaCha20 from block counter 1 (block 0 makes the Poly1305 key), so plaintext
 * byte p is at counter 1 + floor(p / 64), offset p mod 64.
 */
export function xchachaDecryptRange(key: AeadKey, nonce: Uint8Array, position: number, data: Uint8Array): Buffer {
  if (nonce.byteLength !== NONCE_BYTES) throw new RangeError('nonce must be 24 bytes');
  // node's chacha20 takes a 16-byte IV: the 32-bit little-endian block counter, then the 12-byte IETF nonce.
  const iv = Buffer.allocUnsafe(16);
  iv.writeUInt32LE(1 + Math.floor(position / 64), 0);
  iv.writeUInt32LE(0, 4);
  iv.set(nonce.subarray(16, 24), 8);
  const decipher = crypto.createDecipheriv('chacha20', key.subkey(nonce), iv);
  const skip = position % 64;
  if (skip > 0) decipher.update(Buffer.alloc(skip));
  return decipher.update(data);
}

/** The @noble reference implementation, used by tests to check the native path byte for byte. */
export function xchachaSealReference(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  return xchacha20poly1305(key, nonce, aad).encrypt(plaintext);
}

// This thread's nonce prefix and counter (see the header comment). Module state is per thread:
// each worker_threads Worker and each process loads the module anew and draws its own prefix.
const noncePrefix = crypto.randomBytes(16);
let nonceLow = 0;
let nonceHigh = 0;

/** The next nonce of this thread: random 16-byte prefix || 64-bit little-endian counter. */
export function nextNonce(): Buffer {
  const nonce = Buffer.allocUnsafe(NONCE_BYTES);
  noncePrefix.copy(nonce, 0);
  nonce.writeUInt32LE(nonceLow, 16);
  nonce.writeUInt32LE(nonceHigh, 20);
  if (++nonceLow === 0x1_0000_0000) {
    nonceLow = 0;
    nonceHigh++; // 2^64 entries from one thread would take centuries: no wrap handling needed
  }
  return nonce;
}

/** HKDF-SHA256 (RFC 5869). Used once per open to derive the purpose keys below. */
export function deriveKey(ikm: Uint8Array, salt: Uint8Array, info: string, length = KEY_BYTES): Uint8Array {
  return hkdf(sha256, ikm, salt, new TextEncoder().encode(info), length);
}

/**
 * The keys one database uses, all derived from its 32-byte master key with HKDF and a distinct
 * label so that no key ever serves two purposes:
 * - chunk ids: HMAC-SHA256(chunkIdKey, plaintext). Keyed, so that someone holding only ciphertext
 *   (a replica) cannot confirm a guess about content by hashing it.
 * - object hashes: HMAC-SHA256(objectIdKey, canonical record). A different key from chunk ids so a
 *   chunk id can never be mistaken for an object hash.
 * - data: the XChaCha20-Poly1305 key for every sealed entry.
 * - tags: SHA-256(tagKey || domain || parts) truncated (tag()), kept in key hint rows of the index
 *   in place of what they stand for (index/values.ts), so that it can be matched but not read.
 * The salt is the database id, so two databases under the same master key still differ.
 */
export class DatabaseKeys {
  readonly data: AeadKey;
  /** What a worker thread of this process needs to derive the same keys (lib/seal-pool.ts). */
  readonly material: { masterKey: Uint8Array; databaseId: Uint8Array };
  readonly #chunkIdKey: HmacSha256;
  readonly #objectIdKey: HmacSha256;
  readonly #tagKey: Buffer;

  constructor(masterKey: Uint8Array, databaseId: Uint8Array) {
    this.material = { masterKey, databaseId };
    this.data = new AeadKey(deriveKey(masterKey, databaseId, 'ourodb/v1/data'));
    this.#chunkIdKey = new HmacSha256(deriveKey(masterKey, databaseId, 'ourodb/v1/chunk-id'));
    this.#objectIdKey = new HmacSha256(deriveKey(masterKey, databaseId, 'ourodb/v1/object-id'));
    this.#tagKey = Buffer.from(deriveKey(masterKey, databaseId, 'ourodb/v1/key-hint'));
  }

  /**
   * A 16-byte keyed tag of `parts` (each length-prefixed) in domain `domain`: SHA-256 over the
   * secret key, the domain and the parts, truncated, whose output gives away too little of the
   * state for a length extension. Not HMAC: a Hmac object is a stream, and making one per file
   * cost ~12 us of the main thread against ~2 us for one crypto.hash call (`ouro put` makes two
   * tags per file it reads). Domains: TAG_HINT, TAG_CONTENT (index/values.ts, key hint rows).
   */
  tag(domain: number, ...parts: Uint8Array[]): Buffer {
    const input = Buffer.allocUnsafe(KEY_BYTES + 1 + parts.reduce((n, p) => n + 4 + p.byteLength, 0));
    this.#tagKey.copy(input, 0);
    input[KEY_BYTES] = domain;
    let at = KEY_BYTES + 1;
    for (const p of parts) {
      input.writeUInt32LE(p.byteLength, at);
      input.set(p, at + 4);
      at += 4 + p.byteLength;
    }
    const tag = sha256Native(input).subarray(0, KEYED_TAG_BYTES);
    input.fill(0, 0, KEY_BYTES);
    return tag;
  }

  chunkId(plaintext: Uint8Array): Buffer {
    return this.#chunkIdKey.mac(plaintext);
  }

  objectId(canonicalRecord: Uint8Array): Buffer {
    return this.#objectIdKey.mac(canonicalRecord);
  }
}

/** Messages up to this size take HmacSha256's two-hash path; larger ones a Hmac object. */
const HMAC_ONE_SHOT_MAX_BYTES = 16 * 1024;
const SHA256_BLOCK_BYTES = 64;

/**
 * HMAC-SHA256 (RFC 2104) under one key, byte-identical to crypto.createHmac (tested against it
 * and @noble/hashes). For small messages it is computed as its definition reads, with two
 * one-shot crypto.hash calls: SHA-256((K ^ opad) || SHA-256((K ^ ipad) || m)), K zero-padded to
 * the 64-byte block. The pads and a scratch buffer are kept, so a call allocates only its
 * digests. In a profile of `ouro put` storing a version of new files, object ids took 62 ms of
 * the main thread with a Hmac object per call and 30 ms this way; in a hot loop the gain is
 * smaller (300 B: 2.6-3.2 against 3.0-3.7 us). Larger messages go through a Hmac object, which
 * hashes them where they are instead of copying them behind the pad.
 */
export class HmacSha256 {
  readonly #key: KeyObject;
  /** K ^ ipad, then room for a message of up to HMAC_ONE_SHOT_MAX_BYTES. */
  readonly #inner = Buffer.alloc(SHA256_BLOCK_BYTES + HMAC_ONE_SHOT_MAX_BYTES);
  /** K ^ opad, then the inner digest. */
  readonly #outer = Buffer.alloc(SHA256_BLOCK_BYTES + 32);

  constructor(key: Uint8Array) {
    if (key.byteLength > SHA256_BLOCK_BYTES) throw new RangeError('an HMAC key longer than a block would be hashed first; not needed here');
    this.#key = crypto.createSecretKey(key);
    for (let i = 0; i < SHA256_BLOCK_BYTES; i++) {
      const k = i < key.byteLength ? key[i]! : 0;
      this.#inner[i] = k ^ 0x36;
      this.#outer[i] = k ^ 0x5c;
    }
  }

  mac(message: Uint8Array): Buffer {
    if (message.byteLength > HMAC_ONE_SHOT_MAX_BYTES) return crypto.createHmac('sha256', this.#key).update(message).digest();
    this.#inner.set(message, SHA256_BLOCK_BYTES);
    this.#outer.write(crypto.hash('sha256', this.#inner.subarray(0, SHA256_BLOCK_BYTES + message.byteLength), 'binary'), SHA256_BLOCK_BYTES, 32, 'latin1');
    return sha256Native(this.#outer);
  }
}

/**
 * SHA-256 in one call. crypto.hash skips the Hash object (~1.7 vs ~2.6 us for 1 KiB here), and
 * asking it for a 'binary' (latin1) string, which maps each byte to one character and back
 * exactly, skips the slow way it makes a Buffer result: for a 1-byte input, 0.41-0.70 us for the
 * string against 1.43-2.16 us for a Buffer (Node 24, this machine), and 0.67-1.15 us with the
 * string turned back into a Buffer. Tested against @noble/hashes.
 */
export function sha256Native(data: Uint8Array): Buffer {
  return Buffer.from(crypto.hash('sha256', data, 'binary'), 'latin1');
}

/** The chunker's gear table: 256 words derived from the master key (see lib/chunker.ts for why). */
export function gearTable(masterKey: Uint8Array, databaseId: Uint8Array): Uint32Array {
  const bytes = deriveKey(masterKey, databaseId, 'ourodb/v1/gear', 1024);
  const table = new Uint32Array(256);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < 256; i++) table[i] = view.getUint32(i * 4, true);
  return table;
}
