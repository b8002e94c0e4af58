/**
 * The object operations: PutObject, GetObject (with Range), HeadObject, DeleteObject,
 * DeleteObjects, CopyObject. Data streams both ways with backpressure: a PUT's body is pulled by
 * the database's chunker as it stores, a GET's value is piped to the socket chunk by chunk.
 * A delete writes a tombstone version, so the object's history stays (S3 versioning stays off).
 */
import type { ObjectStat } from '../../lib/db.js';
import { type Ctx, capped, header, httpDate, sendBody, isoDate, needBucket, quoted, sendEmpty, sendXml } from './context.js';
import { S3Error } from './errors.js';
import { checkObjectName, objectKey } from './keys.js';
import { STORED_HEADERS, liveObject, metaOfHeaders, storeWithEtag } from './store.js';
import { parseXml, readXml, textOf } from './xml.js';

/** S3's largest single PUT (and part). */
export const MAX_PUT_BYTES = 5 * 1024 ** 3;
/** Keys one DeleteObjects may name. */
const MAX_DELETE_KEYS = 1000;

export async function putObject(ctx: Ctx): Promise<void> {
  await needBucket(ctx, 'write');
  checkObjectName(ctx.bucket!, ctx.name!);
  if (ctx.contentLength !== undefined && ctx.contentLength > MAX_PUT_BYTES) throw new S3Error('EntityTooLarge', 400, `an object put in one request has at most ${MAX_PUT_BYTES} bytes; use a multipart upload`);
  const meta = metaOfHeaders(ctx.req.headers);
  const stored = await storeWithEtag(ctx.db, ctx.writer, objectKey(ctx.bucket!, ctx.name!), capped(ctx.body, MAX_PUT_BYTES), meta);
  await settle(ctx);
  sendEmpty(ctx, 200, { etag: quoted(stored.etag) });
}

/** With s3.replicas: waits until that many members hold what was written (the PUT answers after). */
export async function settle(ctx: Ctx): Promise<void> {
  if (ctx.replicas !== undefined && ctx.replicas > 1) await ctx.db.flush({ replicas: ctx.replicas });
}

/** The object named by the request, readable by the key (NoSuchKey when there is none). */
async function readable(ctx: Ctx, bucket = ctx.bucket!, name = ctx.name!): Promise<ObjectStat> {
  await needBucket(ctx, 'read', bucket);
  checkObjectName(bucket, name);
  const stat = await liveObject(ctx.db, objectKey(bucket, name));
  if (!stat) throw new S3Error('NoSuchKey', 404, `no object ${name} in bucket ${bucket}`, { resource: `/${bucket}/${name}` });
  return stat;
}

/** The headers that describe an object (GET and HEAD). */
function objectHeaders(ctx: Ctx, stat: ObjectStat): Record<string, string | number> {
  const h: Record<string, string | number> = { etag: quoted(stat.meta.etag ?? ''), 'last-modified': httpDate(stat.created.getTime()), 'accept-ranges': 'bytes', 'content-type': stat.meta['content-type'] ?? 'binary/octet-stream' };
  for (const [k, v] of Object.entries(stat.meta)) if (k.startsWith('x-amz-meta-') || (STORED_HEADERS as readonly string[]).includes(k)) h[k] = v;
  if (stat.meta.parts !== undefined) h['x-amz-mp-parts-count'] = stat.meta.parts;
  // response-content-type and the like (a presigned URL's way to set the answer's headers).
  for (const name of ['content-type', 'content-language', 'expires', 'cache-control', 'content-disposition', 'content-encoding']) {
    const given = ctx.query.get(`response-${name}`);
    if (given !== undefined) h[name] = given;
  }
  return h;
}

/** If-Match and friends: 412 or 304 when the object does not meet them. */
function preconditions(ctx: Ctx, stat: ObjectStat): number | undefined {
  const etag = quoted(stat.meta.etag ?? '');
  const match = (list: string) => list.split(',').some((t) => t.trim() === '*' || t.trim() === etag);
  const ifMatch = header(ctx, 'if-match');
  const ifNone = header(ctx, 'if-none-match');
  const modified = stat.created.getTime();
  const since = (h: string | undefined) => (h === undefined ? undefined : Date.parse(h));
  if (ifMatch !== undefined && !match(ifMatch)) return 412;
  const unmodified = since(header(ctx, 'if-unmodified-since'));
  if (ifMatch === undefined && unmodified !== undefined && !Number.isNaN(unmodified) && Math.floor(modified / 1000) * 1000 > unmodified) return 412;
  if (ifNone !== undefined && match(ifNone)) return 304;
  const modifiedSince = since(header(ctx, 'if-modified-since'));
  if (ifNone === undefined && modifiedSince !== undefined && !Number.isNaN(modifiedSince) && Math.floor(modified / 1000) * 1000 <= modifiedSince) return 304;
  return undefined;
}

/** A Range header as [start, end) within `size`; undefined for none (or one S3 ignores). */
export function parseRange(text: string | undefined, size: number): { start: number; end: number } | undefined {
  if (text === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(text.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined; // several ranges, or another unit: the whole object, as S3 does
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    start = Math.max(size - suffix, 0);
    end = size;
    if (suffix === 0) start = size;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size : Math.min(Number(m[2]) + 1, size);
    if (m[2] !== '' && Number(m[2]) < start) return undefined;
  }
  if (start >= size || start >= end) throw Object.assign(new S3Error('InvalidRange', 416, `the range ${text} is not satisfiable for an object of ${size} bytes`), { headers: { 'content-range': `bytes */${size}` } });
  return { start, end };
}

export async function headObject(ctx: Ctx): Promise<void> {
  if ((await answerHead(ctx)) !== undefined) ctx.res.end();
}

export async function getObject(ctx: Ctx): Promise<void> {
  const sent = await answerHead(ctx);
  if (sent === undefined) return;
  const { hash, start, end, ranged } = sent;
  if (end === start) return void ctx.res.end();
  await sendBody(ctx, ranged ? ctx.db.stream(hash, { start, end }) : ctx.db.stream(hash));
}

/**
 * What HEAD and GET answer before the body: a precondition's 304/412 (then undefined: the answer
 * is complete), or the status and headers of the object or its range, written, with the bytes to
 * send.
 */
async function answerHead(ctx: Ctx): Promise<{ hash: string; start: number; end: number; ranged: boolean } | undefined> {
  const stat = await readable(ctx);
  const pre = preconditions(ctx, stat);
  if (pre !== undefined) return void sendEmpty(ctx, pre, pre === 304 ? { etag: quoted(stat.meta.etag ?? '') } : {});
  const range = parseRange(header(ctx, 'range'), stat.size);
  const h = objectHeaders(ctx, stat);
  const { start, end } = range ?? { start: 0, end: stat.size };
  ctx.res.writeHead(range ? 206 : 200, { ...h, 'content-length': end - start, ...(range ? { 'content-range': `bytes ${start}-${end - 1}/${stat.size}` } : {}) });
  return { hash: stat.hash, start, end, ranged: range !== undefined };
}

export async function deleteObject(ctx: Ctx): Promise<void> {
  await needBucket(ctx, 'write');
  checkObjectName(ctx.bucket!, ctx.name!);
  await removeObject(ctx, ctx.name!);
  await settle(ctx);
  sendEmpty(ctx, 204);
}

/** A tombstone version when the object exists (S3 answers the same whether it did or not). */
async function removeObject(ctx: Ctx, name: string): Promise<void> {
  const key = objectKey(ctx.bucket!, name);
  if (await liveObject(ctx.db, key)) await ctx.db.delete(key);
}

export async function deleteObjects(ctx: Ctx): Promise<void> {
  await needBucket(ctx, 'write');
  const tree = parseXml(await readXml(ctx.body), 'Delete', ['Object']);
  const objects = (tree.Object ?? []) as Array<Record<string, unknown>>;
  if (!Array.isArray(objects) || objects.length === 0 || objects.length > MAX_DELETE_KEYS) throw new S3Error('MalformedXML', 400, `a Delete names 1 to ${MAX_DELETE_KEYS} objects`);
  const quiet = textOf(tree, 'Quiet') === 'true';
  const deleted: Array<{ Key: string }> = [];
  const errors: Array<{ Key: string; Code: string; Message: string }> = [];
  for (const o of objects) {
    const name = typeof o === 'object' && o !== null ? textOf(o, 'Key') : undefined;
    if (name === undefined) throw new S3Error('MalformedXML', 400, 'each Object names its Key');
    try {
      checkObjectName(ctx.bucket!, name);
      await removeObject(ctx, name);
      deleted.push({ Key: name });
    } catch (err) {
      if (!(err instanceof S3Error)) throw err;
      errors.push({ Key: name, Code: err.s3Code, Message: err.message });
    }
  }
  await settle(ctx);
  sendXml(ctx, 200, 'DeleteResult', { Deleted: quiet ? undefined : deleted, Error: errors });
}

/** x-amz-copy-source: "bucket/name" or "/bucket/name", percent-encoded, maybe with ?versionId. */
export function copySource(ctx: Ctx): { bucket: string; name: string } {
  const raw = header(ctx, 'x-amz-copy-source')!;
  const path = raw.split('?')[0]!.replace(/^\//, '');
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch (err) {
    throw new S3Error('InvalidArgument', 400, 'x-amz-copy-source is not valid percent-encoded UTF-8', { cause: err });
  }
  const slash = decoded.indexOf('/');
  if (slash <= 0 || slash === decoded.length - 1) throw new S3Error('InvalidArgument', 400, 'x-amz-copy-source must name bucket/object');
  return { bucket: decoded.slice(0, slash), name: decoded.slice(slash + 1) };
}

/** The source object of a copy (read grant on its bucket). */
export async function copySourceObject(ctx: Ctx): Promise<ObjectStat> {
  const src = copySource(ctx);
  return readable(ctx, src.bucket, src.name);
}

export async function copyObject(ctx: Ctx): Promise<void> {
  const source = await copySourceObject(ctx);
  await needBucket(ctx, 'write');
  checkObjectName(ctx.bucket!, ctx.name!);
  const directive = header(ctx, 'x-amz-metadata-directive') ?? 'COPY';
  if (directive !== 'COPY' && directive !== 'REPLACE') throw new S3Error('InvalidArgument', 400, 'x-amz-metadata-directive is COPY or REPLACE');
  const { etag, parts } = source.meta;
  const meta = directive === 'COPY' ? source.meta : { ...metaOfHeaders(ctx.req.headers), etag: etag ?? '', ...(parts !== undefined ? { parts } : {}) };
  const key = objectKey(ctx.bucket!, ctx.name!);
  // The copy references the source's chunks (db.concat): no byte is read or written again. A
  // value stored inside its record (at most 4 KiB) is simply put again.
  const r = source.inline ? await ctx.db.put(await ctx.db.get(source.hash), { key, meta }) : await ctx.db.concat([source.hash], { key, meta });
  await settle(ctx);
  const created = (await ctx.db.stat(r.hash)).created.getTime();
  sendXml(ctx, 200, 'CopyObjectResult', { ETag: quoted(meta.etag ?? ''), LastModified: isoDate(created) });
}
