/**
 * The block file: an immutable file of sealed entries (chunks and object records) with a footer
 * index. Part of the on-disk format: every constant and offset here is frozen for version 1;
 * a change means a new BLOCK_FORMAT_VERSION, and readers refuse versions they do not know.
 * Version 2 only adds entry kind 3, the pack (lib/pack.ts); a version 1 block reads as before.
 * All integers are little-endian. CRC-32 is the IEEE polynomial (zlib.crc32).
 *
 *   +--------------------+  offset 0
 *   | header (40 B)      |
 *   +--------------------+  offset 40
 *   | entry 0            |  entries tile [40, footerOffset) with no gaps
 *   | entry 1            |
 *   | ...                |
 *   +--------------------+  footerOffset
 *   | footer rows        |  count x 84 B, in entry order
 *   +--------------------+
 *   | trailer (32 B)     |  last 32 bytes of the file
 *   +--------------------+
 *
 * Header (40 B):
 *   0   8  magic "OUROBLK\0"
 *   8   2  format version (2 written; 1 and 2 read)
 *   10  2  header length (40)
 *   12  8  sequence number this file was written under while open (recovery maps WAL records by it)
 *   20  16 database id (a block from another database is refused)
 *   36  4  CRC-32 of bytes [0, 36)
 *
 * Entry (72 B header + payload):
 *   0   1  kind: 1 = chunk, 2 = object record, 3 = pack of object records (version 2 only;
 *          layout in lib/pack.ts)
 *   1   1  flags: bit 0 = plaintext was zstd-compressed before encryption; other bits zero
 *   2   2  reserved, zero
 *   4   4  payload length P (ciphertext including the 16-byte Poly1305 tag)
 *   8   4  plaintext length (after decompression: the chunk's or record's size)
 *   12  32 id: chunk id or object hash (keyed HMAC-SHA256 of the plaintext / record)
 *   44  24 XChaCha20-Poly1305 nonce
 *   68  4  CRC-32 of bytes [0, 68)
 *   72  P  payload: XChaCha20-Poly1305(dataKey, nonce, plaintext', aad = bytes [0, 44))
 *          where plaintext' is the zstd frame when flag bit 0 is set, else the plaintext.
 *   Binding bytes [0, 44) as associated data means an entry served under another id, kind,
 *   flag or length fails authentication instead of decrypting to wrong data.
 *
 * Footer row (84 B), one per entry:
 *   0   32 id
 *   32  1  kind
 *   33  1  flags
 *   34  2  reserved, zero
 *   36  8  entry offset in the file
 *   44  4  entry length (72 + P)
 *   48  4  plaintext length
 *   52  32 SHA-256 of the entry's bytes (header and payload)
 *
 * Trailer (32 B):
 *   0   8  footer offset
 *   8   4  entry count
 *   12  4  CRC-32 of the footer rows
 *   16  2  format version (as in the header)
 *   18  6  reserved, zero
 *   24  8  magic "OUROEND\0"
 *
 * Block id = SHA-256(header || footer rows || trailer). Since every footer row carries the
 * SHA-256 of its entry, the id commits to every byte of the file (a two-level hash tree), and a
 * holder without the key can verify the whole block or any single entry against it.
 */
import zlib from 'node:zlib';
import { CorruptionError, UnsupportedVersionError } from '../lib/errors.js';

/**
 * The version this release writes. Version 2 added the pack entry (kind 3); otherwise the layout
 * is version 1's, and a version 1 block (no packs) is read as before.
 */
export const BLOCK_FORMAT_VERSION = 2;
/** Every block format version this release reads. */
export const BLOCK_FORMAT_VERSIONS_READ: readonly number[] = [1, 2];
export const BLOCK_MAGIC = Buffer.from('OUROBLK\0', 'latin1');
export const END_MAGIC = Buffer.from('OUROEND\0', 'latin1');
export const HEADER_BYTES = 40;
export const ENTRY_HEADER_BYTES = 72;
export const ENTRY_AAD_BYTES = 44;
export const FOOTER_ROW_BYTES = 84;
export const TRAILER_BYTES = 32;
export const ID_BYTES = 32;

export const enum EntryKind {
  Chunk = 1,
  Object = 2,
  /** Several object records sealed as one entry (lib/pack.ts); block format version 2. */
  Pack = 3,
}
export const FLAG_ZSTD = 1;

export interface BlockHeader {
  seq: number;
  databaseId: Buffer;
}

/** What the footer (and the WAL) knows about one entry. */
export interface EntryRow {
  id: Buffer;
  kind: EntryKind;
  flags: number;
  offset: number;
  length: number;
  plainLength: number;
  hash: Buffer;
}

export interface EntryHeader {
  kind: EntryKind;
  flags: number;
  payloadLength: number;
  plainLength: number;
  id: Buffer;
  nonce: Buffer;
}

export function encodeHeader(h: BlockHeader): Buffer {
  const b = Buffer.alloc(HEADER_BYTES);
  BLOCK_MAGIC.copy(b, 0);
  b.writeUInt16LE(BLOCK_FORMAT_VERSION, 8);
  b.writeUInt16LE(HEADER_BYTES, 10);
  b.writeBigUInt64LE(BigInt(h.seq), 12);
  h.databaseId.copy(b, 20);
  b.writeUInt32LE(zlib.crc32(b.subarray(0, 36)), 36);
  return b;
}

export function decodeHeader(b: Buffer, file: string): BlockHeader {
  if (b.length < HEADER_BYTES || !b.subarray(0, 8).equals(BLOCK_MAGIC)) throw new CorruptionError(`${file}: not a block file (bad magic)`, { location: { file, offset: 0 } });
  const version = b.readUInt16LE(8);
  if (!BLOCK_FORMAT_VERSIONS_READ.includes(version)) throw new UnsupportedVersionError(`${file}: block format version ${version}; this release reads ${BLOCK_FORMAT_VERSIONS_READ.join(' and ')}`);
  if (b.readUInt32LE(36) !== zlib.crc32(b.subarray(0, 36)) || b.readUInt16LE(10) !== HEADER_BYTES) throw new CorruptionError(`${file}: header checksum mismatch`, { location: { file, offset: 0 } });
  return { seq: Number(b.readBigUInt64LE(12)), databaseId: Buffer.from(b.subarray(20, 36)) };
}

/** Writes the 72-byte entry header into `out` at `at`. The payload follows it. */
export function writeEntryHeader(out: Buffer, at: number, h: EntryHeader): void {
  out.writeUInt8(h.kind, at);
  out.writeUInt8(h.flags, at + 1);
  out.writeUInt16LE(0, at + 2);
  out.writeUInt32LE(h.payloadLength, at + 4);
  out.writeUInt32LE(h.plainLength, at + 8);
  h.id.copy(out, at + 12);
  h.nonce.copy(out, at + 44);
  out.writeUInt32LE(zlib.crc32(out.subarray(at, at + 68)), at + 68);
}

/** Parses and checks an entry header. `where` names the file and offset for error reports. */
export function readEntryHeader(b: Buffer, at: number, file: string, offset: number): EntryHeader {
  if (b.length - at < ENTRY_HEADER_BYTES) throw new CorruptionError(`${file}@${offset}: entry header truncated`, { location: { file, offset } });
  if (b.readUInt32LE(at + 68) !== zlib.crc32(b.subarray(at, at + 68))) throw new CorruptionError(`${file}@${offset}: entry header checksum mismatch`, { location: { file, offset } });
  const kind = b.readUInt8(at);
  const flags = b.readUInt8(at + 1);
  if ((kind !== EntryKind.Chunk && kind !== EntryKind.Object && kind !== EntryKind.Pack) || (flags & ~FLAG_ZSTD) !== 0 || b.readUInt16LE(at + 2) !== 0) {
    throw new CorruptionError(`${file}@${offset}: unknown entry kind ${kind} or flags ${flags}`, { location: { file, offset } });
  }
  return {
    kind,
    flags,
    payloadLength: b.readUInt32LE(at + 4),
    plainLength: b.readUInt32LE(at + 8),
    id: Buffer.from(b.subarray(at + 12, at + 44)),
    nonce: Buffer.from(b.subarray(at + 44, at + 68)),
  };
}

export function encodeFooterRow(r: EntryRow, out: Buffer, at: number): void {
  r.id.copy(out, at);
  out.writeUInt8(r.kind, at + 32);
  out.writeUInt8(r.flags, at + 33);
  out.writeUInt16LE(0, at + 34);
  out.writeBigUInt64LE(BigInt(r.offset), at + 36);
  out.writeUInt32LE(r.length, at + 44);
  out.writeUInt32LE(r.plainLength, at + 48);
  r.hash.copy(out, at + 52);
}

export function decodeFooterRow(b: Buffer, at: number): EntryRow {
  return {
    id: Buffer.from(b.subarray(at, at + 32)),
    kind: b.readUInt8(at + 32) as EntryKind,
    flags: b.readUInt8(at + 33),
    offset: Number(b.readBigUInt64LE(at + 36)),
    length: b.readUInt32LE(at + 44),
    plainLength: b.readUInt32LE(at + 48),
    hash: Buffer.from(b.subarray(at + 52, at + 84)),
  };
}

/** Footer rows followed by the trailer, ready to append at `footerOffset`. */
export function encodeFooter(rows: readonly EntryRow[], footerOffset: number): Buffer {
  const rowsBytes = rows.length * FOOTER_ROW_BYTES;
  const b = Buffer.alloc(rowsBytes + TRAILER_BYTES);
  rows.forEach((r, i) => encodeFooterRow(r, b, i * FOOTER_ROW_BYTES));
  const t = rowsBytes;
  b.writeBigUInt64LE(BigInt(footerOffset), t);
  b.writeUInt32LE(rows.length, t + 8);
  b.writeUInt32LE(zlib.crc32(b.subarray(0, rowsBytes)), t + 12);
  b.writeUInt16LE(BLOCK_FORMAT_VERSION, t + 16);
  END_MAGIC.copy(b, t + 24);
  return b;
}

export interface Trailer {
  footerOffset: number;
  count: number;
  footerCrc: number;
}

export function decodeTrailer(b: Buffer, fileSize: number, file: string): Trailer {
  const at = fileSize - TRAILER_BYTES;
  if (b.length !== TRAILER_BYTES || !b.subarray(24, 32).equals(END_MAGIC)) throw new CorruptionError(`${file}: bad trailer magic (torn or not sealed)`, { location: { file, offset: at } });
  const version = b.readUInt16LE(16);
  if (!BLOCK_FORMAT_VERSIONS_READ.includes(version)) throw new UnsupportedVersionError(`${file}: block trailer version ${version}`);
  const footerOffset = Number(b.readBigUInt64LE(0));
  const count = b.readUInt32LE(8);
  if (footerOffset < HEADER_BYTES || footerOffset + count * FOOTER_ROW_BYTES !== at) throw new CorruptionError(`${file}: trailer does not match file size`, { location: { file, offset: at } });
  return { footerOffset, count, footerCrc: b.readUInt32LE(12) };
}
