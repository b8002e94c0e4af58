/**
 * Sealing and opening one block entry: compress when it pays, encrypt with the entry header's
 * first 44 bytes as associated data, hash the result for the footer. Layout: blockstore/format.ts.
 */
import zlib from 'node:zlib';
import { ENTRY_AAD_BYTES, ENTRY_HEADER_BYTES, type EntryKind, FLAG_ZSTD, readEntryHeader, writeEntryHeader } from '../blockstore/format.js';
import { type AeadKey, TAG_BYTES, nextNonce, sha256Native, xchachaOpen, xchachaSealInto } from './crypto.js';
import { CorruptionError, UnsupportedVersionError, WrongKeyError } from './errors.js';

export interface SealedEntry {
  bytes: Buffer;
  kind: EntryKind;
  id: Buffer;
  flags: number;
  plainLength: number;
  /** SHA-256 of `bytes`, for the footer row and the WAL record. */
  hash: Buffer;
  /**
   * Set when `bytes` lies in a buffer lent by the seal pool: hands it back for reuse. Call it at
   * most once, and only when nothing will read `bytes` again (its write has finished, or it will
   * not be written); not calling it only leaves the buffer to the garbage collector.
   */
  release?: () => void;
}

const HAS_ZSTD = typeof zlib.zstdCompressSync === 'function';
const SAMPLE_BYTES = 16 * 1024;
/** Below this, zstd cannot save enough to pay for its frame header and per-call set-up. */
const MIN_COMPRESS_BYTES = 256;
/**
 * Up to this size, a byte histogram decides whether zstd is worth calling at all: one window
 * of PROBE_SAMPLE bytes per 2 KiB, spread over the input (for 16 KiB, 8 windows with 1.7 KiB
 * between them). It covers every pack of records (a pack closes once it passes 16 KiB, so with
 * its last record, up to 16 KiB itself, and its table it stays under 40 KiB); above it, the zstd
 * sample below decides.
 */
const PROBE_MAX_BYTES = 40 * 1024;
const PROBE_SAMPLE = 512;
const PROBE_WINDOWS = PROBE_MAX_BYTES / 2048;
const seen = new Uint32Array(256);
let epoch = 0;

/**
 * Whether a value looks compressible, from how many distinct byte values windows of it use.
 * Uniformly random (or encrypted, or already compressed) bytes use nearly all the values n draws
 * can reach, 256 * (1 - (255/256)^n): ~221 of 256 for 512 bytes; text and code use well under
 * half of that. A window that looks compressible is enough. Random 1 KiB (one window) costs
 * 0.57 us a call and random 16 KiB (eight) 4.3 us (100,000 calls in one process), where zstd on
 * 16 KiB took 77-180 us, a zstd call that saves nothing cost ~8% of a 1 KiB put's CPU and an
 * entropy histogram ~5 us (measured on the small-put benchmark), so incompressible small values
 * skip zstd and text gets it. Packs of records are probed too: when only values of at most 4 KiB were
 * (one window), packs of random 1 KiB values went through zstd for nothing, 11% of the small-put
 * benchmark's main-thread time. Text the windows miss (a stretch under ~2.3 KiB between two
 * windows, in a pack of random values) stays uncompressed: a few hundred bytes.
 */
function looksCompressible(plain: Uint8Array): boolean {
  const windows = Math.min(PROBE_WINDOWS, Math.ceil(plain.length / 2048));
  const n = Math.min(plain.length, PROBE_SAMPLE);
  const threshold = 0.75 * 256 * (1 - Math.pow(255 / 256, n));
  const stride = windows > 1 ? Math.floor((plain.length - n) / (windows - 1)) : 0;
  for (let w = 0; w < windows; w++) {
    if (++epoch === 0xffffffff) {
      seen.fill(0);
      epoch = 1;
    }
    const start = w * stride;
    let distinct = 0;
    // A window is random-looking as soon as it reaches the threshold: random bytes get there
    // after ~270 of its 512 bytes.
    for (let i = start; i < start + n && distinct < threshold; i++) {
      const b = plain[i]!;
      if (seen[b] !== epoch) {
        seen[b] = epoch;
        distinct++;
      }
    }
    if (distinct < threshold) return true;
  }
  return false;
}

/**
 * zstd level 3 when it saves at least 1/32 of the bytes. To keep incompressible data (media,
 * archives, already-encrypted files) cheap, every entry is probed first
 * (looksCompressible: a large one in PROBE_WINDOWS windows spread over it); of one larger than
 * PROBE_MAX_BYTES that looks compressible the first 16 KiB are compressed first as a sample, and
 * the whole chunk only when the sample saved 1/16 or more. (Random-looking bytes that repeat, a
 * random block stored twice inside one chunk, are no longer found compressible; dedup still finds
 * repeats of whole chunks.) zstd runs at ~1.4 GiB/s on random
 * data here, so the sample costs ~5% of a 1 MiB chunk's encryption (docs/design.md).
 */
export function maybeCompress(plain: Uint8Array): Buffer | undefined {
  if (!HAS_ZSTD || plain.byteLength < MIN_COMPRESS_BYTES) return undefined;
  // Every entry is probed first, large ones too: zstd on random data saves nothing, and each
  // zstdCompressSync call (even of a 16 KiB sample) allocated fresh native and output buffers that
  // waited for a full collection: ~90 MiB of RSS over 4,096 sample calls (one per chunk of a 1 GiB
  // random file) in a bare loop, and ~0.1 ms of CPU a call (docs/performance.md, "Cost per byte").
  if (!looksCompressible(plain)) return undefined;
  if (plain.byteLength > PROBE_MAX_BYTES) {
    const sample = zlib.zstdCompressSync(plain.subarray(0, SAMPLE_BYTES), { params: { [zlib.constants.ZSTD_c_compressionLevel]: 1 } });
    if (sample.length > SAMPLE_BYTES - SAMPLE_BYTES / 16) return undefined;
  }
  const packed = zlib.zstdCompressSync(plain, { params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } });
  return packed.length <= plain.byteLength - plain.byteLength / 32 ? packed : undefined;
}

/** Bytes a sealed entry adds to its (possibly compressed) plaintext: the header and the tag. */
export const SEAL_OVERHEAD_BYTES = ENTRY_HEADER_BYTES + TAG_BYTES;

/**
 * Compresses (when it pays), encrypts and hashes one entry. The entry is written into `into`
 * when that buffer is large enough (plaintext length + SEAL_OVERHEAD_BYTES; the seal pool
 * recycles buffers this way), else into a buffer of its own. `into` may be the very memory
 * `plain` lies in, starting at the same offset: every byte of the plaintext has been read (by
 * zstd and by the cipher, which returns the ciphertext in a buffer of its own) before the first
 * byte is written to `into`, which is why the header is built aside and copied in last.
 */
export function sealEntry(key: AeadKey, kind: EntryKind, id: Buffer, plain: Uint8Array, compress = true, into?: Buffer): SealedEntry {
  const plainLength = plain.byteLength;
  const packed = compress ? maybeCompress(plain) : undefined;
  const body = packed ?? plain;
  const flags = packed ? FLAG_ZSTD : 0;
  const payloadLength = body.byteLength + TAG_BYTES;
  const nonce = nextNonce();
  const header = Buffer.allocUnsafe(ENTRY_HEADER_BYTES);
  writeEntryHeader(header, 0, { kind, flags, payloadLength, plainLength, id, nonce });
  const length = ENTRY_HEADER_BYTES + payloadLength;
  const bytes = into && into.byteLength >= length ? into.subarray(0, length) : Buffer.allocUnsafeSlow(length);
  xchachaSealInto(key, nonce, body, header.subarray(0, ENTRY_AAD_BYTES), bytes, ENTRY_HEADER_BYTES);
  header.copy(bytes, 0);
  return { bytes, kind, id, flags, plainLength, hash: sha256Native(bytes) };
}

/**
 * Authenticates and decrypts one entry read from `file` at `offset`. Any mismatch (header checksum,
 * id, kind, lengths, authentication, decompression) is a CorruptionError: a database that has
 * already unlocked with its key cannot see an authentication failure for any other reason.
 */
export function openEntry(key: AeadKey, bytes: Buffer, expect: { id: Buffer | null; kind: EntryKind }, file: string, offset: number): Buffer {
  const h = readEntryHeader(bytes, 0, file, offset);
  // A pack is located by where it is, not by its id (the index names its records instead):
  // `id: null` accepts the id in the header, which the authentication below still binds.
  const where = { file, offset, id: (expect.id ?? h.id).toString('hex') };
  if (h.kind !== expect.kind || (expect.id !== null && !h.id.equals(expect.id)) || ENTRY_HEADER_BYTES + h.payloadLength !== bytes.length) {
    throw new CorruptionError(`${file}@${offset}: entry is not ${where.id}`, { location: where });
  }
  let body: Buffer;
  try {
    body = xchachaOpen(key, h.nonce, bytes.subarray(ENTRY_HEADER_BYTES), bytes.subarray(0, ENTRY_AAD_BYTES));
  } catch (err) {
    const cause = err instanceof WrongKeyError ? err.cause : err;
    throw new CorruptionError(`${file}@${offset}: entry ${where.id} failed authentication`, { cause, location: where });
  }
  if ((h.flags & FLAG_ZSTD) !== 0) {
    if (!HAS_ZSTD) throw new UnsupportedVersionError('entry is zstd-compressed and this Node.js has no zstd');
    try {
      body = zlib.zstdDecompressSync(body, { maxOutputLength: Math.max(h.plainLength, 1) });
    } catch (err) {
      throw new CorruptionError(`${file}@${offset}: entry ${where.id} does not decompress`, { cause: err, location: where });
    }
  }
  if (body.length !== h.plainLength) throw new CorruptionError(`${file}@${offset}: entry ${where.id} has the wrong length`, { location: where });
  return body;
}
