/**
 * The export archive: a portable, versioned, streaming, encrypted copy of a database's objects
 * (values, versions with their predecessors, parents, metadata, creation times) and, from format
 * version 2, of the database's identity, so that an import can keep every hash. Part of the
 * on-disk format (docs/FORMAT.md, "Export archive"). All integers little-endian.
 *
 * Header, 64 bytes, in the clear:
 *   0   8  magic "OUROARC\0"
 *   8   2  archive format version (2; 1 is still read)
 *   10  2  header length (64)
 *   12  16 archive id (random): bound into every frame's associated data
 *   28  1  key derivation: 1 = argon2id(passphrase), 2 = HKDF-SHA256(32-byte key, "ourodb/v1/archive")
 *   29  3  reserved, zero
 *   32  16 salt
 *   48  4  argon2id memory (KiB), 52 4 passes, 56 4 lanes (zero for HKDF)
 *   60  4  CRC-32 of bytes [0, 60)
 * Then frames, each:
 *   0   4  plaintext length L (at most MAX_FRAME_BYTES)
 *   4   24 XChaCha20-Poly1305 nonce
 *   28  L + 16 ciphertext and tag; associated data = archive id || frame number (u64) || L (u32)
 * Frame numbers count from 0, so a reordered, dropped or spliced frame fails authentication.
 * Plaintext of a frame: a type byte, then
 *   6 identity (version 2: frame 0, and only there): MessagePack array [descriptor, keyCheck]:
 *     descriptor: str, the source's OURODB.json as JSON ({format, version, databaseId, createdAt,
 *       keySlots}: the master key wrapped under each of the source's credentials, never
 *       unwrapped), or nil;
 *     keyCheck: bin 32, HKDF-SHA256(master key, database id, "ourodb/v1/derived/archive-identity")
 *       (what OuroDB.deriveKey('archive-identity') gives), or nil; both nil or both set.
 *     Set only when the archive's credentials unlock one of those slots (then whoever can read
 *     the archive could already unlock the source's OURODB.json, and learns nothing new from it);
 *     an archive made under other credentials carries nil, as if it were version 1.
 *   1 object: MessagePack array [hash, type (0 value, 1 tombstone), key|nil, parent|nil,
 *     prev (array of hex), created (ms), meta (array of [k, v] pairs), size] (hashes as the
 *     exporting database named them, 64 lowercase hex characters); version 2 adds a 9th field,
 *     chunkSizes: the plaintext size of each chunk the source stored the value as (empty for an
 *     inline value or a tombstone), or nil when the archive carries no identity
 *   2 data: the next bytes of the current object's value (frames of at most 1 MiB)
 *   5 compressed data: the same, as one zstd frame (written when zstd saves at least 1/32)
 *   3 object end: SHA-256 of the whole value (32 bytes)
 *   4 archive end: object count (u64)
 * Objects come in dependency order: each after its parent and its predecessors.
 *
 * Hashes are keyed per database (its master key and id). An import into the database the
 * archive's identity names (same id and keyCheck: the source itself, or one importArchiveNew
 * made from the archive) keeps every hash: each value is put cut into the chunks the source cut
 * it into (OuroDB.putCut), which makes the same record and so the same hash, and each hash is
 * checked (CorruptionError if one differs). An import into any other database, or of an archive
 * without identity, gives every object a new hash and maps the old ones (ImportResult.hashes,
 * `remapped: true`; `map` writes the map).
 *
 * Import is idempotent: a record is the same bytes when imported again (same value, key,
 * mapped predecessors and parent, creation time, metadata), so it dedups to the same hash. An
 * interrupted import is resumed by running it again; nothing is ever half-imported, because every
 * put is atomic.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import zlib from 'node:zlib';
import { Packr } from 'msgpackr/pack';
import { AeadKey, deriveKey, nextNonce, xchachaOpen, xchachaSeal } from './crypto.js';
import { maybeCompress } from './entry.js';
import { OuroDB, type OpenOptions } from './db.js';
import { BadArgumentError, CorruptionError, UnsupportedVersionError, WrongKeyError } from './errors.js';
import { ensureDir } from './fsutil.js';
import { type Argon2Cost, type Credentials, DEFAULT_ARGON2, DESCRIPTOR_FILE, type Descriptor, argon2id, checkKeySlots, derivedKey, parseDescriptor, readDescriptor, unlock, validateCredentials, writeDescriptor } from './keyring.js';
import { INLINE_MAX_BYTES } from './record.js';
import { nodeVfs } from './vfs/vfs.js';

/** The version this release writes. Version 2 added the identity frame and chunk sizes. */
export const ARCHIVE_VERSION = 2;
const VERSIONS_READ = [1, 2];
const MAGIC = Buffer.from('OUROARC\0', 'latin1');
const HEADER_BYTES = 64;
const FRAME_HEAD_BYTES = 28;
const DATA_PIECE = 1 << 20;
/** Frames larger than this are refused as malformed before anything is allocated for them. */
export const MAX_FRAME_BYTES = 4 << 20;
const T_OBJECT = 1;
const T_DATA = 2;
const T_OBJECT_END = 3;
const T_END = 4;
const T_DATA_ZSTD = 5;
const T_IDENTITY = 6;
/** The purpose (OuroDB.deriveKey) of an identity frame's keyCheck. */
const IDENTITY_PURPOSE = 'archive-identity';
/** Objects imported at once (their puts share group commits); larger values go one at a time. */
const IMPORT_WINDOW = 64;
// int64AsType 'auto': another writer may put `created` as a uint 64, which msgpackr would decode
// as a BigInt (refused below as malformed); safe integers come back as numbers.
const packr = new Packr({ useRecords: false, moreTypes: false, int64AsType: 'auto' });

export interface ArchiveProgress {
  objects: number;
  bytes: number;
}

export interface ExportResult extends ArchiveProgress {
  /**
   * True when the archive carries the database's identity (its descriptor): the archive's
   * credentials unlock one of its key slots. An import can then keep every hash. False when
   * they do not (an archive made under credentials of its own): every import remaps.
   */
  identity: boolean;
}

async function archiveKey(creds: Credentials, salt: Buffer, kdf: Argon2Cost | undefined): Promise<AeadKey> {
  if ('key' in creds) return new AeadKey(deriveKey(creds.key, salt, 'ourodb/v1/archive'));
  const cost = kdf ?? creds.kdf ?? DEFAULT_ARGON2;
  return new AeadKey(await argon2id(creds.passphrase, salt, cost));
}

/** Writes `chunk` and waits for the stream to take more when it asks to (bounded memory). */
async function write(out: Writable, chunk: Buffer): Promise<void> {
  if (!out.write(chunk)) await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    out.once('error', onError);
    out.once('drain', () => {
      out.off('error', onError);
      resolve();
    });
  });
}

/**
 * The identity frame's fields for `db`, or null when `creds` unlock none of its key slots (the
 * archive is then made under credentials of its own, and must not carry the slots: they would
 * give whoever holds those credentials something to test guesses of the database's passphrase
 * against, and the chunk sizes something about its chunker's secret table).
 */
async function identityOf(db: OuroDB, creds: Credentials): Promise<{ descriptor: string; keyCheck: Uint8Array } | null> {
  const d = db.descriptor;
  let master: Uint8Array;
  try {
    master = await unlock(d, creds);
  } catch (err) {
    if (err instanceof WrongKeyError) return null;
    throw err;
  }
  const check = db.deriveKey(IDENTITY_PURPOSE);
  const same = Buffer.from(derivedKey(master, d.databaseId, IDENTITY_PURPOSE)).equals(check);
  master.fill(0);
  if (!same) return null;
  const { format, version, databaseId, createdAt, keySlots } = d;
  return { descriptor: JSON.stringify({ format, version, databaseId, createdAt, keySlots }), keyCheck: check };
}

/**
 * Streams every object of `db` (one consistent snapshot) into `out` as an archive, with the
 * database's identity when `creds` unlock one of its key slots (`identity` in the result).
 */
export async function exportArchive(db: OuroDB, out: Writable, creds: Credentials, onProgress?: (p: ArchiveProgress) => void): Promise<ExportResult> {
  const identity = await identityOf(db, creds);
  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header, 0);
  header.writeUInt16LE(ARCHIVE_VERSION, 8);
  header.writeUInt16LE(HEADER_BYTES, 10);
  const id = crypto.randomBytes(16);
  id.copy(header, 12);
  const salt = crypto.randomBytes(16);
  salt.copy(header, 32);
  if ('key' in creds) header[28] = 2;
  else {
    const cost = creds.kdf ?? DEFAULT_ARGON2;
    header[28] = 1;
    header.writeUInt32LE(cost.m, 48);
    header.writeUInt32LE(cost.t, 52);
    header.writeUInt32LE(cost.p, 56);
  }
  header.writeUInt32LE(zlib.crc32(header.subarray(0, 60)), 60);
  const key = await archiveKey(creds, salt, undefined);
  await write(out, header);
  let frame = 0n;
  const emit = async (type: number, body: Uint8Array) => {
    const plain = Buffer.allocUnsafe(1 + body.byteLength);
    plain[0] = type;
    plain.set(body, 1);
    const head = Buffer.allocUnsafe(FRAME_HEAD_BYTES);
    head.writeUInt32LE(plain.length, 0);
    const nonce = nextNonce();
    nonce.copy(head, 4);
    await write(out, Buffer.concat([head, xchachaSeal(key, nonce, plain, frameAad(id, frame++, plain.length))]));
  };
  await emit(T_IDENTITY, packr.pack([identity?.descriptor ?? null, identity ? Buffer.from(identity.keyCheck) : null]));
  const progress: ArchiveProgress = { objects: 0, bytes: 0 };
  for await (const o of db.objects()) {
    const meta = Object.entries(o.meta).sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    await emit(T_OBJECT, packr.pack([o.hash, o.type === 'tombstone' ? 1 : 0, o.key, o.parent, o.prev, o.created, meta, o.size, identity ? o.chunkSizes : null]));
    const sha = crypto.createHash('sha256');
    for await (const part of o.data()) {
      for (let at = 0; at < part.byteLength; at += DATA_PIECE) {
        const piece = part.subarray(at, at + DATA_PIECE);
        sha.update(piece);
        const packed = maybeCompress(piece);
        await emit(packed ? T_DATA_ZSTD : T_DATA, packed ?? piece);
        progress.bytes += piece.byteLength;
      }
    }
    await emit(T_OBJECT_END, sha.digest());
    progress.objects++;
    onProgress?.(progress);
  }
  const end = Buffer.alloc(8);
  end.writeBigUInt64LE(BigInt(progress.objects));
  await emit(T_END, end);
  return { ...progress, identity: identity !== null };
}

type ObjectFrame = [hash: string, type: 0 | 1, key: string | null, parent: string | null, prev: string[], created: number, meta: [string, string][], size: number, chunkSizes: number[] | null];

/**
 * An object frame's fields, checked: a frame authenticates only under the archive key, but whoever
 * holds that key could still write a malformed one, and that must be a typed error too.
 */
function decodeObjectFrame(body: Buffer, frame: bigint, version: number): ObjectFrame {
  const bad = (why: string, cause?: unknown) => new CorruptionError(`archive frame ${frame}: malformed object (${why})`, cause === undefined ? undefined : { cause });
  let a: unknown;
  try {
    a = packr.unpack(body);
  } catch (err) {
    throw bad('not MessagePack', err);
  }
  const hex = (v: unknown) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
  const fields = version === 1 ? 8 : 9;
  if (!Array.isArray(a) || a.length !== fields) throw bad(`not a ${fields}-field array`);
  const [hash, type, key, parent, prev, created, meta, size, chunkSizes] = a as unknown[];
  if (!hex(hash)) throw bad('hash');
  if (type !== 0 && type !== 1) throw bad('type');
  if (key !== null && typeof key !== 'string') throw bad('key');
  if (parent !== null && !hex(parent)) throw bad('parent');
  if (!Array.isArray(prev) || !prev.every(hex)) throw bad('prev');
  if (!Number.isSafeInteger(created) || (created as number) < 0) throw bad('created');
  if (!Array.isArray(meta) || !meta.every((m) => Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string')) throw bad('meta');
  if (!Number.isSafeInteger(size) || (size as number) < 0) throw bad('size');
  if (type === 1 && key === null) throw bad('a tombstone without a key');
  if (version === 1) return [...(a as ObjectFrame).slice(0, 8), null] as ObjectFrame;
  if (chunkSizes !== null) {
    if (!Array.isArray(chunkSizes) || !chunkSizes.every((n) => Number.isSafeInteger(n) && n > 0)) throw bad('chunk sizes');
    if (chunkSizes.length === 0 ? type === 0 && (size as number) > INLINE_MAX_BYTES : type === 1 || chunkSizes.reduce((x, y) => x + y, 0) !== size) throw bad('chunk sizes do not fit the value');
  }
  return a as ObjectFrame;
}

/** The source's identity an archive carries: its descriptor, and the check of its master key. */
export interface ArchiveIdentity {
  descriptor: Descriptor;
  keyCheck: Buffer;
}

function decodeIdentityFrame(body: Buffer): ArchiveIdentity | null {
  const bad = (why: string, cause?: unknown) => new CorruptionError(`archive frame 0: malformed identity (${why})`, cause === undefined ? undefined : { cause });
  let a: unknown;
  try {
    a = packr.unpack(body);
  } catch (err) {
    throw bad('not MessagePack', err);
  }
  if (!Array.isArray(a) || a.length !== 2) throw bad('not a 2-field array');
  const [text, check] = a as unknown[];
  if (text === null && check === null) return null;
  if (typeof text !== 'string' || !(check instanceof Uint8Array) || check.byteLength !== 32) throw bad('descriptor and key check');
  const descriptor = parseDescriptor(text, 'the archive\'s descriptor');
  checkKeySlots(descriptor, 'the archive\'s descriptor');
  return { descriptor, keyCheck: Buffer.from(check) };
}

function frameAad(id: Buffer, frame: bigint, length: number): Buffer {
  const aad = Buffer.allocUnsafe(28);
  id.copy(aad, 0);
  aad.writeBigUInt64LE(frame, 16);
  aad.writeUInt32LE(length, 24);
  return aad;
}

/** Reads exact byte counts from a stream, holding at most one piece of it beyond what was asked. */
class ExactReader {
  readonly #it: AsyncIterator<Buffer>;
  #buf: Buffer = Buffer.alloc(0);
  consumed = 0;
  constructor(input: Readable) {
    this.#it = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }
  /** Exactly n bytes, or fewer only at the end of the stream. */
  async read(n: number): Promise<Buffer> {
    while (this.#buf.length < n) {
      const next = await this.#it.next();
      if (next.done) break;
      this.#buf = this.#buf.length === 0 ? next.value : Buffer.concat([this.#buf, next.value]);
    }
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(out.length);
    this.consumed += out.length;
    return out;
  }
}

interface Frame {
  type: number;
  body: Buffer;
}

/** An archive whose header and first frame were read and authenticated. */
interface OpenedArchive {
  version: number;
  identity: ArchiveIdentity | null;
  reader: ExactReader;
  next(): Promise<Frame>;
  /** The number of the frame `next` returned last. */
  readonly last: bigint;
}

/**
 * Reads the header and the first frame, which proves the credentials (WrongKeyError if that
 * frame does not authenticate) and, in version 2, holds the identity. Nothing else is read.
 */
async function openArchive(input: Readable, creds: Credentials): Promise<OpenedArchive> {
  const r = new ExactReader(input);
  const header = await r.read(HEADER_BYTES);
  if (header.length < HEADER_BYTES || !header.subarray(0, 8).equals(MAGIC)) throw new CorruptionError('not an OuroDB archive (bad magic)');
  const version = header.readUInt16LE(8);
  if (!VERSIONS_READ.includes(version)) throw new UnsupportedVersionError(`archive format version ${version}; this release reads ${VERSIONS_READ.join(' and ')}`);
  if (header.readUInt32LE(60) !== zlib.crc32(header.subarray(0, 60)) || header.readUInt16LE(10) !== HEADER_BYTES) throw new CorruptionError('archive header checksum mismatch');
  const id = Buffer.from(header.subarray(12, 28));
  const method = header[28];
  if (method === 1 && 'key' in creds) throw new BadArgumentError('this archive was made with a passphrase; give the passphrase');
  if (method === 2 && !('key' in creds)) throw new BadArgumentError('this archive was made with a key file; give the key');
  if (method !== 1 && method !== 2) throw new UnsupportedVersionError(`archive key derivation ${method}`);
  const kdf = method === 1 ? { m: header.readUInt32LE(48), t: header.readUInt32LE(52), p: header.readUInt32LE(56) } : undefined;
  const key = await archiveKey(creds, Buffer.from(header.subarray(32, 48)), kdf);

  let frame = 0n;
  const read = async (): Promise<Frame> => {
    const head = await r.read(FRAME_HEAD_BYTES);
    if (head.length < FRAME_HEAD_BYTES) throw new CorruptionError(`archive truncated at byte ${r.consumed} (frame ${frame})`);
    const length = head.readUInt32LE(0);
    if (length < 1 || length > MAX_FRAME_BYTES) throw new CorruptionError(`archive frame ${frame} claims ${length} bytes; the maximum is ${MAX_FRAME_BYTES}`);
    const sealed = await r.read(length + 16);
    if (sealed.length < length + 16) throw new CorruptionError(`archive truncated at byte ${r.consumed} (frame ${frame})`);
    let plain: Buffer;
    try {
      plain = xchachaOpen(key, head.subarray(4, 28), sealed, frameAad(id, frame, length));
    } catch (err) {
      if (frame === 0n) throw new WrongKeyError('the archive does not open with these credentials', { cause: err });
      throw new CorruptionError(`archive frame ${frame} failed authentication`, { cause: err });
    }
    frame++;
    return { type: plain[0]!, body: plain.subarray(1) };
  };
  let first: Frame | undefined = await read();
  let identity: ArchiveIdentity | null = null;
  if (version >= 2) {
    if (first.type !== T_IDENTITY) throw new CorruptionError(`archive frame 0 has type ${first.type}, expected the identity`);
    identity = decodeIdentityFrame(first.body);
    first = undefined;
  }
  return {
    version,
    identity,
    reader: r,
    next: async () => {
      if (first) {
        const f = first;
        first = undefined;
        return f;
      }
      return read();
    },
    get last() {
      return frame - 1n;
    },
  };
}

/** A value's bytes cut into pieces of exactly `sizes` (an identity import's chunks). */
async function* cutInto(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, sizes: readonly number[], hash: string): AsyncGenerator<Uint8Array> {
  const mismatch = () => new CorruptionError(`archive object ${hash}: its chunk sizes do not add up to its value`);
  let i = 0;
  let parts: Uint8Array[] = [];
  let have = 0;
  for await (const bytes of source) {
    for (let at = 0; at < bytes.byteLength; ) {
      if (i >= sizes.length) throw mismatch();
      const take = bytes.subarray(at, at + sizes[i]! - have);
      parts.push(take);
      have += take.byteLength;
      at += take.byteLength;
      if (have === sizes[i]) {
        yield parts.length === 1 ? parts[0]! : Buffer.concat(parts);
        parts = [];
        have = 0;
        i++;
      }
    }
  }
  if (i !== sizes.length) throw mismatch();
}

export type ImportProgress = ArchiveProgress & { archiveBytes: number };

export interface ImportOptions {
  onProgress?: (p: ImportProgress) => void;
  /**
   * Once the import completes, the old-to-new hash map is written here, one JSON line per object
   * in archive order: `{"old":"<hex>","new":"<hex>"}\n` (old equals new when nothing was
   * remapped). The stream is not ended.
   */
  map?: Writable;
}

export interface ImportResult extends ArchiveProgress {
  /** Old hash (as the exporting database named it) -> new hash, for every object imported. */
  hashes: Map<string, string>;
  /** The archive's format version. */
  archiveVersion: number;
  /** The source's database id (hex) when the archive carries its identity, else null. */
  sourceDatabaseId: string | null;
  /**
   * True when objects got hashes of this database's own: the archive carries no identity
   * (`remapReason` 'no-identity': format version 1, or made under credentials that unlock none of
   * the source's key slots) or is of another database ('other-database'). `hashes` maps them.
   * False: every hash is the one the source gave (each was checked).
   */
  remapped: boolean;
  /** Objects whose hash is not the source's (0 unless remapped). */
  remappedObjects: number;
  remapReason?: 'no-identity' | 'other-database';
}

/**
 * Imports an archive into `db` (empty or not), deduplicating against what it holds. Keeps every
 * hash when `db` has the identity the archive carries, else remaps (see ImportResult.remapped).
 * Throws CorruptionError on a damaged or truncated archive (after importing the objects before the
 * damage, whole), WrongKeyError when the credentials do not open it. `options` may be the
 * progress callback alone (the signature of format version 1's releases).
 */
export async function importArchive(db: OuroDB, input: Readable, creds: Credentials, options: ImportOptions | ImportOptions['onProgress'] = {}): Promise<ImportResult> {
  const o: ImportOptions = typeof options === 'function' ? { onProgress: options } : (options ?? {});
  return importObjects(db, await openArchive(input, creds), o);
}

export interface ImportNewOptions extends OpenOptions, ImportOptions {
  /** The archive's credentials, when they are not the database's (`passphrase` or `key`). */
  archive?: Credentials;
}

/**
 * Creates a database at `dir` from an archive. When the archive carries its source's identity
 * (version 2, exported under one of the source's credentials), the new database has that
 * identity: the source's id, creation time and key slots, so the source's credentials (the
 * `passphrase` or `key` in `options`) open it and every hash the source gave names the same
 * object, version, parent and metadata. They must unlock the source's key slots: if they do not,
 * WrongKeyError, and nothing is created. Without an identity (version 1, or an archive made
 * under credentials of its own) a new database is made with these credentials and objects are
 * remapped, as `importArchive` does (`remapped: true`).
 *
 * Nothing is written before the archive's header and first frame authenticate and the
 * credentials unlock the identity. After that, an error or a crash leaves a database in `dir`
 * holding the objects imported before it, each whole; calling importArchiveNew again with the same
 * archive (or `ouro import`) opens it and completes the import, with the same hashes. A database
 * already in `dir` is imported into in that way; one of another identity than the archive's is
 * refused (BadArgumentError): open it and use importArchive, which remaps.
 *
 * Resolves to the import's result and the open database (the caller closes it).
 */
export async function importArchiveNew(dir: string, input: Readable, options: ImportNewOptions): Promise<ImportResult & { db: OuroDB; created: boolean }> {
  if (typeof dir !== 'string' || dir.length === 0) throw new BadArgumentError('dir must be a non-empty path');
  if (options === null || typeof options !== 'object') throw new BadArgumentError('importArchiveNew needs options with { passphrase } or { key }');
  const creds = validateCredentials(options);
  const archiveCreds = options.archive !== undefined ? validateCredentials(options.archive) : creds;
  const { archive: _a, onProgress, map, ...openOptions } = options;
  const root = path.resolve(dir);
  const vfs = options.fs ?? nodeVfs;
  const descriptorFile = path.join(root, DESCRIPTOR_FILE);
  const arc = await openArchive(input, archiveCreds);
  const identity = arc.identity;
  let created = false;
  if (await vfs.exists(descriptorFile)) {
    const there = await readDescriptor(descriptorFile, vfs);
    if (identity && there.databaseId !== identity.descriptor.databaseId) {
      throw new BadArgumentError(`${root} holds another database (${there.databaseId}) than the archive's (${identity.descriptor.databaseId}): open it and use importArchive, which gives the objects new hashes`);
    }
  } else {
    // As OuroDB.open: never put a descriptor over data whose own descriptor was lost.
    if ((await exists(path.join(root, 'index'))) || (await vfs.exists(path.join(root, 'blocks')))) {
      throw new CorruptionError(`${root} holds OuroDB data but no ${DESCRIPTOR_FILE}`, { location: { file: descriptorFile } });
    }
    if (identity) {
      const master = await unlock(identity.descriptor, creds);
      const same = Buffer.from(derivedKey(master, identity.descriptor.databaseId, IDENTITY_PURPOSE)).equals(identity.keyCheck);
      master.fill(0);
      if (!same) throw new CorruptionError("the archive's key slots do not hold the key its hashes were made with");
      await ensureDir(vfs, root);
      await writeDescriptor(descriptorFile, identity.descriptor, vfs);
    }
    created = true;
  }
  const db = await OuroDB.open(root, { ...openOptions, create: !identity });
  try {
    return { ...(await importObjects(db, arc, { ...(onProgress ? { onProgress } : {}), ...(map ? { map } : {}) })), db, created };
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.stat(p);
    return true;
  } catch {
    return false;
  }
}

async function importObjects(db: OuroDB, arc: OpenedArchive, options: ImportOptions): Promise<ImportResult> {
  const { reader: r, next, identity } = arc;
  const onProgress = options.onProgress;
  // Same database (or one made from this archive): keep every hash, and check each.
  const keep = identity !== null && db.databaseId === identity.descriptor.databaseId && Buffer.from(db.deriveKey(IDENTITY_PURPOSE)).equals(identity.keyCheck);
  const hashes = new Map<string, Promise<string>>();
  const progress: ArchiveProgress = { objects: 0, bytes: 0 };
  const mapped = (h: string) => {
    const to = hashes.get(h);
    if (!to) throw new CorruptionError(`archive names object ${h} before it was imported`);
    return to;
  };
  // Puts in flight: each object's put waits only for the objects it names (parent, prev), so
  // independent objects are imported together and share group commits.
  const inflight = new Set<Promise<unknown>>();
  const settle = async (limit: number) => {
    while (inflight.size > limit) await Promise.race(inflight);
  };
  let failure: unknown;
  const dataOf = (d: Frame, hash: string): Buffer => {
    if (d.type === T_DATA) return d.body;
    if (d.type === T_DATA_ZSTD) {
      try {
        return zlib.zstdDecompressSync(d.body, { maxOutputLength: DATA_PIECE });
      } catch (err) {
        throw new CorruptionError(`archive object ${hash}: a data frame does not decompress`, { cause: err });
      }
    }
    throw new CorruptionError(`archive frame ${arc.last}: expected data of object ${hash}`);
  };
  try {
    for (;;) {
      if (failure) throw failure;
      const f = await next();
      if (f.type === T_END) {
        await settle(0);
        if (failure) throw failure;
        if (Number(f.body.readBigUInt64LE(0)) !== progress.objects) throw new CorruptionError('archive end frame counts a different number of objects');
        if ((await r.read(1)).length !== 0) throw new CorruptionError('bytes after the archive end frame');
        const resolved = new Map<string, string>();
        let remappedObjects = 0;
        for (const [k, v] of hashes) {
          const to = await v;
          resolved.set(k, to);
          if (to !== k) remappedObjects++;
        }
        if (options.map) await writeMap(options.map, resolved);
        return {
          ...progress,
          hashes: resolved,
          archiveVersion: arc.version,
          sourceDatabaseId: identity?.descriptor.databaseId ?? null,
          remapped: !keep,
          remappedObjects,
          ...(keep ? {} : { remapReason: identity ? ('other-database' as const) : ('no-identity' as const) }),
        };
      }
      if (f.type !== T_OBJECT) throw new CorruptionError(`archive frame ${arc.last} has type ${f.type}, expected an object`);
      const [hash, type, objKey, parent, prev, created, meta, size, chunkSizes] = decodeObjectFrame(f.body, arc.last, arc.version);
      if (keep && chunkSizes === null) throw new CorruptionError(`archive frame ${arc.last}: an archive with an identity lists every object's chunk sizes`);
      const sha = crypto.createHash('sha256');
      let received = 0;
      const checkEnd = (d: Frame) => {
        if (!sha.digest().equals(d.body) || received !== size) throw new CorruptionError(`archive object ${hash}: value does not match its digest`);
      };
      // Looked up now: the archive lists every object after those it names.
      const parentDep = parent !== null ? mapped(parent) : undefined;
      const prevDeps = prev.map(mapped);
      const store = async (value: AsyncIterable<Uint8Array> | Uint8Array): Promise<string> => {
        const parentTo = await parentDep;
        const prevTo = await Promise.all(prevDeps);
        const common = { created, ...(objKey !== null ? { key: objKey, prev: prevTo } : {}), ...(keep ? { expectHash: hash } : {}) };
        let to: string;
        try {
          if (type === 1) to = (await db.delete(objKey!, common)).hash;
          else {
            const options = { ...common, meta: Object.fromEntries(meta), ...(parent !== null ? { parent: parentTo! } : {}) };
            // Kept hashes need the source's chunks: this database's chunker may cut otherwise.
            const cut = keep && chunkSizes!.length > 0;
            to = (cut ? await db.putCut(cutInto(value instanceof Uint8Array ? [value] : value, chunkSizes!, hash), options) : await db.put(value, options)).hash;
          }
        } catch (err) {
          if (err instanceof CorruptionError) throw new CorruptionError(`archive object ${hash}: ${err.message}`, { cause: err });
          throw err;
        }
        if (keep && to !== hash) throw new CorruptionError(`archive object ${hash} came out as ${to}`);
        return to;
      };
      let done: Promise<string>;
      if (size <= DATA_PIECE) {
        // Small: read the whole value now, put it in the background.
        const parts: Buffer[] = [];
        for (let d = await next(); ; d = await next()) {
          if (d.type === T_OBJECT_END) {
            checkEnd(d);
            break;
          }
          const bytes = dataOf(d, hash);
          sha.update(bytes);
          received += bytes.length;
          parts.push(bytes);
        }
        if (type === 1 && received > 0) throw new CorruptionError(`archive tombstone ${hash} carries data`);
        done = store(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
      } else {
        // Large: stream it from the archive straight into put (bounded memory), then go on.
        let ended = false;
        const value = async function* (): AsyncGenerator<Uint8Array> {
          for (;;) {
            const d = await next();
            if (d.type === T_OBJECT_END) {
              checkEnd(d);
              ended = true;
              return;
            }
            const bytes = dataOf(d, hash);
            sha.update(bytes);
            received += bytes.length;
            yield bytes;
          }
        };
        done = store(value());
        await done;
        if (!ended) throw new CorruptionError(`archive object ${hash} has no end frame`);
      }
      hashes.set(hash, done);
      const tracked = done.then(
        () => {
          progress.objects++;
          progress.bytes += received;
          onProgress?.({ ...progress, archiveBytes: r.consumed });
        },
        (err: unknown) => {
          failure ??= err;
        },
      );
      inflight.add(tracked);
      void tracked.finally(() => inflight.delete(tracked));
      await settle(IMPORT_WINDOW);
    }
  } catch (err) {
    // Let the puts already started finish (each is atomic), then report the first failure.
    await Promise.allSettled(inflight);
    throw failure ?? err;
  }
}

/** The hash map as JSON lines, in pieces of about 64 KiB. */
async function writeMap(out: Writable, hashes: ReadonlyMap<string, string>): Promise<void> {
  let lines: string[] = [];
  for (const [from, to] of hashes) {
    lines.push(`{"old":"${from}","new":"${to}"}\n`);
    if (lines.length >= 512) {
      await write(out, Buffer.from(lines.join('')));
      lines = [];
    }
  }
  if (lines.length > 0) await write(out, Buffer.from(lines.join('')));
}
