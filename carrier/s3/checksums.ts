/**
 * The checksums an S3 client may declare for a request body, and their incremental verification.
 *
 * S3 carries each as base64 of the big-endian digest: `x-amz-checksum-crc32` (4 bytes),
 * `-crc32c` (4), `-crc64nvme` (8), `-sha1` (20), `-sha256` (32), `-sha512` (64), `-md5` (16) in a
 * header or an aws-chunked trailer, and `Content-MD5` (16, RFC 1864). The xxhash family S3 added
 * later is refused as NotImplemented. They are computed over the payload as the client
 * meant it (after aws-chunked decoding), so the verifier is fed decoded bytes.
 */
import crypto from 'node:crypto';
import zlib from 'node:zlib';
import { Crc32c } from '@aws-crypto/crc32c';
import { s3 } from './errors.js';

export type ChecksumAlgorithm = 'crc32' | 'crc32c' | 'crc64nvme' | 'sha1' | 'sha256' | 'sha512' | 'md5';

/** Digest length in bytes, by algorithm: a declared value of another length is malformed. */
const DIGEST_BYTES: Record<ChecksumAlgorithm, number> = { crc32: 4, crc32c: 4, crc64nvme: 8, sha1: 20, sha256: 32, sha512: 64, md5: 16 };

/**
 * `x-amz-checksum-*` header names that are not checksum values: the algorithm a multipart upload
 * will use, its type (FULL_OBJECT/COMPOSITE), and GetObject's request to return checksums.
 */
const NOT_A_CHECKSUM = new Set(['x-amz-checksum-algorithm', 'x-amz-checksum-type', 'x-amz-checksum-mode']);

export interface Hasher {
  update(data: Uint8Array): void;
  /** The digest as bytes, big-endian for the CRCs (how S3 encodes them). */
  digest(): Buffer;
}

class Crc32Hasher implements Hasher {
  #crc = 0;
  update(data: Uint8Array): void { this.#crc = zlib.crc32(data, this.#crc); }
  digest(): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(this.#crc >>> 0); return b; }
}

class Crc32cHasher implements Hasher {
  #crc = new Crc32c();
  update(data: Uint8Array): void { this.#crc.update(data); }
  digest(): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(this.#crc.digest() >>> 0); return b; }
}

/**
 * CRC-64/NVME (reflected polynomial 0x9A6C9329AC4BC9B5, initial value and final xor all ones;
 * check value of "123456789" = 0xAE8B14860A799888). Node has no 64-bit CRC, and BigInt arithmetic
 * per byte would be two orders of magnitude slower, so the 64-bit register is kept as two 32-bit
 * halves with one table per half: the same table-driven byte step, split.
 */
const CRC64_TABLE_LO = new Uint32Array(256);
const CRC64_TABLE_HI = new Uint32Array(256);
{
  const POLY_LO = 0xac4bc9b5, POLY_HI = 0x9a6c9329;
  for (let i = 0; i < 256; i++) {
    let lo = i, hi = 0;
    for (let bit = 0; bit < 8; bit++) {
      const lsb = lo & 1;
      lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
      hi = hi >>> 1;
      if (lsb) { lo = (lo ^ POLY_LO) >>> 0; hi = (hi ^ POLY_HI) >>> 0; }
    }
    CRC64_TABLE_LO[i] = lo;
    CRC64_TABLE_HI[i] = hi;
  }
}

class Crc64NvmeHasher implements Hasher {
  #lo = 0xffffffff;
  #hi = 0xffffffff;
  update(data: Uint8Array): void {
    let lo = this.#lo, hi = this.#hi;
    for (let i = 0; i < data.length; i++) {
      const idx = (lo ^ data[i]!) & 0xff;
      lo = (((lo >>> 8) | (hi << 24)) ^ CRC64_TABLE_LO[idx]!) >>> 0;
      hi = ((hi >>> 8) ^ CRC64_TABLE_HI[idx]!) >>> 0;
    }
    this.#lo = lo;
    this.#hi = hi;
  }
  digest(): Buffer {
    const b = Buffer.alloc(8);
    b.writeUInt32BE((this.#hi ^ 0xffffffff) >>> 0, 0);
    b.writeUInt32BE((this.#lo ^ 0xffffffff) >>> 0, 4);
    return b;
  }
}

class NodeHasher implements Hasher {
  #hash: crypto.Hash;
  constructor(algorithm: 'sha1' | 'sha256' | 'sha512' | 'md5') { this.#hash = crypto.createHash(algorithm); }
  update(data: Uint8Array): void { this.#hash.update(data); }
  digest(): Buffer { return this.#hash.digest(); }
}

export function newHasher(algorithm: ChecksumAlgorithm): Hasher {
  switch (algorithm) {
    case 'crc32': return new Crc32Hasher();
    case 'crc32c': return new Crc32cHasher();
    case 'crc64nvme': return new Crc64NvmeHasher();
    default: return new NodeHasher(algorithm);
  }
}

/**
 * The algorithm a checksum header or trailer names (`x-amz-checksum-NAME`, or `Content-MD5`, which
 * the SDK also sends as a trailer when asked for MD5), undefined for any other header, and
 * NotImplemented for an `x-amz-checksum-*` S3 knows and this gateway does not (the xxhash family).
 */
export function checksumAlgorithmOf(headerName: string): ChecksumAlgorithm | undefined {
  const name = headerName.toLowerCase();
  if (name === 'content-md5') return 'md5';
  if (!name.startsWith('x-amz-checksum-') || NOT_A_CHECKSUM.has(name)) return undefined;
  const algorithm = name.slice('x-amz-checksum-'.length);
  if (algorithm === 'crc32' || algorithm === 'crc32c' || algorithm === 'crc64nvme' || algorithm === 'sha1' || algorithm === 'sha256' || algorithm === 'sha512' || algorithm === 'md5') return algorithm;
  throw s3.notImplemented(`checksum algorithm ${algorithm} (${headerName}) is not supported; use crc32, crc32c, crc64nvme, sha1, sha256, sha512 or md5`);
}

/** Decodes a declared base64 digest, refusing one of the wrong length for its algorithm. */
export function decodeDigest(algorithm: ChecksumAlgorithm, source: string, value: string): Buffer {
  const bytes = /^[A-Za-z0-9+/]*={0,2}$/.test(value.trim()) ? Buffer.from(value.trim(), 'base64') : Buffer.alloc(0);
  if (bytes.length !== DIGEST_BYTES[algorithm]) {
    if (algorithm === 'md5') throw s3.invalidDigest(`${source} is not the base64 of a 16-byte MD5`);
    throw s3.invalidRequest(`${source} is not the base64 of a ${DIGEST_BYTES[algorithm]}-byte ${algorithm} digest`);
  }
  return bytes;
}

/**
 * Digests declared for one body, fed as the decoded bytes stream by; `verify()` at the end throws
 * BadDigest naming the first that does not match. A digest may be declared late (an aws-chunked
 * trailer arrives after the data), so an algorithm is hashed from the start when it is expected
 * (`expect`) and its value supplied later (`declare`).
 */
export class ChecksumVerifier {
  readonly #hashers = new Map<ChecksumAlgorithm, Hasher>();
  readonly #expected: Array<{ algorithm: ChecksumAlgorithm; source: string; digest: Buffer }> = [];

  /** Starts hashing with `algorithm` (idempotent). */
  expect(algorithm: ChecksumAlgorithm): void {
    if (!this.#hashers.has(algorithm)) this.#hashers.set(algorithm, newHasher(algorithm));
  }

  /** Declares the value `source` (a header or trailer name) gives for `algorithm`. */
  declare(algorithm: ChecksumAlgorithm, source: string, value: string): void {
    const digest = decodeDigest(algorithm, source, value);
    this.expect(algorithm);
    this.#expected.push({ algorithm, source, digest });
  }

  get empty(): boolean { return this.#hashers.size === 0; }

  update(data: Uint8Array): void {
    for (const h of this.#hashers.values()) h.update(data);
  }

  verify(): void {
    const digests = new Map<ChecksumAlgorithm, Buffer>();
    for (const [algorithm, h] of this.#hashers) digests.set(algorithm, h.digest());
    for (const e of this.#expected) {
      const actual = digests.get(e.algorithm)!;
      // Digests are public values of public data, so timing does not leak a secret here; the
      // constant-time compare is kept anyway so that every comparison in the gateway is one kind.
      if (!crypto.timingSafeEqual(actual, e.digest)) {
        throw s3.badDigest(`the ${e.source} you specified did not match the calculated checksum (${actual.toString('base64')})`);
      }
    }
  }
}
