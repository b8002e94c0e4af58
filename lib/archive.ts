/**
 * The export archive: a portable, versioned, streaming, encrypted copy of a database's objects
 * (values, versions with their predecessors, parents, metadata, creation times). Part of the
 * on-disk format (docs/FORMAT.md, "Archive"). All integers little-endian.
 *
 * Header, 64 bytes, in the clear:
 *   0   8  magic "OUROARC\0"
 *   8   2  archive format version (1)
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
 *   1 object: MessagePack array [hash, type (0 value, 1 tombstone), key|nil, parent|nil,
 *     prev (array of hex), created (ms), meta (array of [k, v] pairs), size] (hashes as the
 *     exporting database named them, 64 lowercase hex characters)
 *   2 data: the next bytes of the current object's value (frames of at most 1 MiB)
 *   5 compressed data: the same, as one zstd frame (written when zstd saves at least 1/32)
 *   3 object end: SHA-256 of the whole value (32 bytes)
 *   4 archive end: object count (u64)
 * Objects come in dependency order: each after its parent and its predecessors.
 *
 * Hashes are keyed per database, so an import gives every object a new hash and maps the old
 * ones. Import is idempotent: a record is the same bytes when imported again (same value, key,
 * mapped predecessors and parent, creation time, metadata), so it dedups to the same hash. An
 * interrupted import is resumed by running it again; nothing is ever half-imported, because every
 * put is atomic.
 */
import crypto from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import zlib from 'node:zlib';
import { Packr } from 'msgpackr/pack';
import { AeadKey, deriveKey, nextNonce, xchachaOpen, xchachaSeal } from './crypto.js';
import { maybeCompress } from './entry.js';
import type { OuroDB } from './db.js';
import { BadArgumentError, CorruptionError, UnsupportedVersionError, WrongKeyError } from './errors.js';
import { type Argon2Cost, type Credentials, DEFAULT_ARGON2, argon2id } from './keyring.js';

export const ARCHIVE_VERSION = 1;
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
/** Objects imported at once (their puts share group commits); larger values go one at a time. */
const IMPORT_WINDOW = 64;
// int64AsType 'auto': another writer may put `created` as a uint 64, which msgpackr would decode
// as a BigInt (refused below as malformed); safe integers come back as numbers.
const packr = new Packr({ useRecords: false, moreTypes: false, int64AsType: 'auto' });

export interface ArchiveProgress {
  objects: number;
  bytes: number;
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

/** Streams every object of `db` (one consistent snapshot) into `out` as an archive. */
export async function exportArchive(db: OuroDB, out: Writable, creds: Credentials, onProgress?: (p: ArchiveProgress) => void): Promise<ArchiveProgress> {
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
  const progress: ArchiveProgress = { objects: 0, bytes: 0 };
  for await (const o of db.objects()) {
    const meta = Object.entries(o.meta).sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    await emit(T_OBJECT, packr.pack([o.hash, o.type === 'tombstone' ? 1 : 0, o.key, o.parent, o.prev, o.created, meta, o.size]));
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
  return progress;
}

type ObjectFrame = [hash: string, type: 0 | 1, key: string | null, parent: string | null, prev: string[], created: number, meta: [string, string][], size: number];

/**
 * An object frame's fields, checked: a frame authenticates only under the archive key, but whoever
 * holds that key could still write a malformed one, and that must be a typed error too.
 */
function decodeObjectFrame(body: Buffer, frame: bigint): ObjectFrame {
  const bad = (why: string, cause?: unknown) => new CorruptionError(`archive frame ${frame}: malformed object (${why})`, cause === undefined ? undefined : { cause });
  let a: unknown;
  try {
    a = packr.unpack(body);
  } catch (err) {
    throw bad('not MessagePack', err);
  }
  const hex = (v: unknown) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
  if (!Array.isArray(a) || a.length !== 8) throw bad('not an 8-field array');
  const [hash, type, key, parent, prev, created, meta, size] = a as unknown[];
  if (!hex(hash)) throw bad('hash');
  if (type !== 0 && type !== 1) throw bad('type');
  if (key !== null && typeof key !== 'string') throw bad('key');
  if (parent !== null && !hex(parent)) throw bad('parent');
  if (!Array.isArray(prev) || !prev.every(hex)) throw bad('prev');
  if (!Number.isSafeInteger(created) || (created as number) < 0) throw bad('created');
  if (!Array.isArray(meta) || !meta.every((m) => Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string')) throw bad('meta');
  if (!Number.isSafeInteger(size) || (size as number) < 0) throw bad('size');
  if (type === 1 && key === null) throw bad('a tombstone without a key');
  return a as ObjectFrame;
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

export interface ImportResult extends ArchiveProgress {
  /** Old hash (as the exporting database named it) -> new hash, for every object imported. */
  hashes: Map<string, string>;
}

/**
 * Imports an archive into `db` (empty or not), deduplicating against what it holds. Throws
 * CorruptionError on a damaged or truncated archive (after importing the objects before the
 * damage, whole), WrongKeyError when the credentials do not open it.
 */
export async function importArchive(db: OuroDB, input: Readable, creds: Credentials, onProgress?: (p: ArchiveProgress & { archiveBytes: number }) => void): Promise<ImportResult> {
  const r = new ExactReader(input);
  const header = await r.read(HEADER_BYTES);
  if (header.length < HEADER_BYTES || !header.subarray(0, 8).equals(MAGIC)) throw new CorruptionError('not an OuroDB archive (bad magic)');
  const version = header.readUInt16LE(8);
  if (version !== ARCHIVE_VERSION) throw new UnsupportedVersionError(`archive format version ${version}; this release reads ${ARCHIVE_VERSION}`);
  if (header.readUInt32LE(60) !== zlib.crc32(header.subarray(0, 60)) || header.readUInt16LE(10) !== HEADER_BYTES) throw new CorruptionError('archive header checksum mismatch');
  const id = Buffer.from(header.subarray(12, 28));
  const method = header[28];
  if (method === 1 && 'key' in creds) throw new BadArgumentError('this archive was made with a passphrase; give the passphrase');
  if (method === 2 && !('key' in creds)) throw new BadArgumentError('this archive was made with a key file; give the key');
  if (method !== 1 && method !== 2) throw new UnsupportedVersionError(`archive key derivation ${method}`);
  const kdf = method === 1 ? { m: header.readUInt32LE(48), t: header.readUInt32LE(52), p: header.readUInt32LE(56) } : undefined;
  const key = await archiveKey(creds, Buffer.from(header.subarray(32, 48)), kdf);

  let frame = 0n;
  const next = async (): Promise<{ type: number; body: Buffer }> => {
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
  const dataOf = (d: { type: number; body: Buffer }, hash: string): Buffer => {
    if (d.type === T_DATA) return d.body;
    if (d.type === T_DATA_ZSTD) {
      try {
        return zlib.zstdDecompressSync(d.body, { maxOutputLength: DATA_PIECE });
      } catch (err) {
        throw new CorruptionError(`archive object ${hash}: a data frame does not decompress`, { cause: err });
      }
    }
    throw new CorruptionError(`archive frame ${frame - 1n}: expected data of object ${hash}`);
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
        for (const [k, v] of hashes) resolved.set(k, await v);
        return { ...progress, hashes: resolved };
      }
      if (f.type !== T_OBJECT) throw new CorruptionError(`archive frame ${frame - 1n} has type ${f.type}, expected an object`);
      const [hash, type, objKey, parent, prev, created, meta, size] = decodeObjectFrame(f.body, frame - 1n);
      const sha = crypto.createHash('sha256');
      let received = 0;
      const checkEnd = (d: { type: number; body: Buffer }) => {
        if (!sha.digest().equals(d.body) || received !== size) throw new CorruptionError(`archive object ${hash}: value does not match its digest`);
      };
      // Looked up now: the archive lists every object after those it names.
      const parentDep = parent !== null ? mapped(parent) : undefined;
      const prevDeps = prev.map(mapped);
      const store = async (value: AsyncIterable<Uint8Array> | Uint8Array): Promise<string> => {
        const parentTo = await parentDep;
        const prevTo = await Promise.all(prevDeps);
        const common = { created, ...(objKey !== null ? { key: objKey, prev: prevTo } : {}) };
        if (type === 1) return (await db.delete(objKey!, common)).hash;
        return (await db.put(value, { ...common, meta: Object.fromEntries(meta), ...(parent !== null ? { parent: parentTo! } : {}) })).hash;
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
