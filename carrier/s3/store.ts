/**
 * How an S3 object sits in the database (docs/s3.md, "Data model"): the value under
 * objectKey(bucket, name), its S3 metadata in the record's meta:
 *
 *   etag            MD5 of the content (hex), or MD5 of the parts' MD5s then "-<parts>"
 *   parts           the part count of a multipart object
 *   content-type, content-encoding, content-disposition, content-language, cache-control, expires
 *   x-amz-meta-*    user metadata (names lower-cased, as HTTP gives them)
 *
 * The ETag is known only once the whole body went through MD5, but a record's meta is fixed when
 * its write starts. A body of at most INLINE_BODY_BYTES is therefore read first and put in one
 * go; a larger one is streamed into a staging version (keys.ts, \x01s3/t/...), then filed under
 * its key with its meta by db.concat, which references the staged chunks (nothing is copied),
 * and the staging key is purged. If the body fails (a signature or checksum that does not match,
 * a cut connection), the staging put rejects and writes no record: no object, no version.
 * Staging keys a crash left behind are purged when the gateway starts (sweepStaging).
 */
import crypto from 'node:crypto';
import type { OuroDB, ObjectStat, PutResult } from '../../lib/db.js';
import { S3Error } from './errors.js';
import { stagingPrefix } from './keys.js';

/** Bodies up to this size are held in memory to be put with their ETag at once (one version, no staging). */
export const INLINE_BODY_BYTES = 256 * 1024;

/** The headers kept as an object's metadata (with x-amz-meta-*). */
export const STORED_HEADERS = ['content-type', 'content-encoding', 'content-disposition', 'content-language', 'cache-control', 'expires'] as const;
/** S3's limit on user metadata (names and values of x-amz-meta-*). */
export const MAX_USER_META_BYTES = 2048;

/** The object metadata a request gives in its headers. */
export function metaOfHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const meta: Record<string, string> = {};
  let user = 0;
  for (const [name, raw] of Object.entries(headers)) {
    if (raw === undefined) continue;
    const value = Array.isArray(raw) ? raw.join(',') : raw;
    if (name.startsWith('x-amz-meta-')) {
      user += Buffer.byteLength(name) - 'x-amz-meta-'.length + Buffer.byteLength(value);
      meta[name] = value;
    } else if ((STORED_HEADERS as readonly string[]).includes(name)) meta[name] = value;
  }
  if (user > MAX_USER_META_BYTES) throw new S3Error('MetadataTooLarge', 400, `user metadata is ${user} bytes; the maximum is ${MAX_USER_META_BYTES}`);
  return meta;
}

export interface Stored extends PutResult {
  etag: string;
}

/**
 * Puts `body` under `key` with `meta` and its MD5 as `etag`; resolves once durable. Nothing is
 * filed under `key` unless the body ended cleanly.
 */
export async function storeWithEtag(db: OuroDB, writer: string, key: string, body: AsyncIterable<Uint8Array>, meta: Record<string, string>): Promise<Stored> {
  const md5 = crypto.createHash('md5');
  const it = body[Symbol.asyncIterator]();
  const held: Uint8Array[] = [];
  let n = 0;
  let r = await it.next();
  while (!r.done && n + r.value.length <= INLINE_BODY_BYTES) {
    md5.update(r.value);
    held.push(r.value);
    n += r.value.length;
    r = await it.next();
  }
  if (r.done) {
    const etag = md5.digest('hex');
    return { ...(await db.put(Buffer.concat(held), { key, meta: { ...meta, etag } })), etag };
  }
  const first = r.value;
  // The body's own failure (an S3Error from the authenticated stream) is what the client is
  // told, whatever the put wraps it in.
  let failure: unknown;
  async function* rest(): AsyncGenerator<Uint8Array> {
    yield* held;
    md5.update(first);
    yield first;
    try {
      for (let next = await it.next(); !next.done; next = await it.next()) {
        md5.update(next.value);
        yield next.value;
      }
    } catch (err) {
      failure = err;
      throw err;
    }
  }
  const staging = stagingPrefix(writer) + crypto.randomUUID();
  let staged: PutResult;
  try {
    staged = await db.put(rest(), { key: staging });
  } catch (err) {
    throw failure ?? err;
  }
  try {
    const etag = md5.digest('hex');
    return { ...(await db.concat([staged.hash], { key, meta: { ...meta, etag } })), etag };
  } finally {
    await db.purge(staging);
  }
}

/** Purges the staging keys of `writer` (left by a crash between a staged put and its filing). */
export async function sweepStaging(db: OuroDB, writer: string): Promise<number> {
  const keys: string[] = [];
  for await (const e of db.list({ prefix: stagingPrefix(writer), includeDeleted: true })) keys.push(e.key);
  for (const k of keys) await db.purge(k);
  return keys.length;
}

/** The live value under `key` (its record's stat), or undefined when there is none or it is deleted. */
export async function liveObject(db: OuroDB, key: string): Promise<ObjectStat | undefined> {
  const hash = await db.head(key);
  if (hash === null) return undefined;
  const stat = await db.stat(hash);
  return stat.type === 'value' ? stat : undefined;
}
