/**
 * Multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy, CompleteMultipartUpload,
 * AbortMultipartUpload, ListParts, ListMultipartUploads.
 *
 * An upload is a small JSON value under uploadKey(bucket, id) (its object name, the metadata the
 * create gave); each part a value under partKey(id, number) with its MD5 as `etag` in the meta
 * (store.ts puts it). Completion files the new object with db.concat over the parts' values:
 * the object's record names the parts' chunks, so no byte is copied; the parts' keys and the
 * upload's are then purged (their chunks stay, referenced by the object). Abort purges them too.
 * Parts may arrive in any order and at once; a part sent twice keeps the later one.
 */
import crypto from 'node:crypto';
import { type Ctx, capped, header, isoDate, needBucket, quoted, sendEmpty, sendXml } from './context.js';
import { S3Error } from './errors.js';
import { checkObjectName, objectKey, partKey, partPrefix, uploadKey, uploadPrefix } from './keys.js';
import { MAX_PUT_BYTES, copySourceObject, parseRange, settle } from './objects.js';
import { liveObject, metaOfHeaders, storeWithEtag } from './store.js';
import { parseXml, readXml, textOf } from './xml.js';

const MAX_PART_NUMBER = 10_000;
/** S3's smallest part but the last. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
const MAX_LISTED = 1000;

interface Upload {
  v: 1;
  name: string;
  meta: Record<string, string>;
  created: number;
}

async function upload(ctx: Ctx, need: 'read' | 'write'): Promise<{ id: string; upload: Upload }> {
  await needBucket(ctx, need);
  checkObjectName(ctx.bucket!, ctx.name!);
  const id = ctx.query.get('uploadId') ?? '';
  const noSuch = () => new S3Error('NoSuchUpload', 404, `no multipart upload ${id} of ${ctx.name} in bucket ${ctx.bucket}`, { resource: `/${ctx.bucket}/${ctx.name}` });
  if (!/^[0-9a-f]{32}$/.test(id)) throw noSuch();
  const stat = await liveObject(ctx.db, uploadKey(ctx.bucket!, id));
  if (!stat) throw noSuch();
  const u = JSON.parse(Buffer.from(await ctx.db.get(stat.hash)).toString('utf8')) as Upload;
  if (u.name !== ctx.name) throw noSuch();
  return { id, upload: u };
}

function partNumber(ctx: Ctx): number {
  const given = ctx.query.get('partNumber') ?? '';
  const n = /^\d{1,5}$/.test(given) ? Number(given) : NaN;
  if (!(n >= 1 && n <= MAX_PART_NUMBER)) throw new S3Error('InvalidArgument', 400, `partNumber is a whole number from 1 to ${MAX_PART_NUMBER}`);
  return n;
}

export async function createMultipartUpload(ctx: Ctx): Promise<void> {
  await needBucket(ctx, 'write');
  checkObjectName(ctx.bucket!, ctx.name!);
  const id = crypto.randomBytes(16).toString('hex');
  const record: Upload = { v: 1, name: ctx.name!, meta: metaOfHeaders(ctx.req.headers), created: Date.now() };
  await ctx.db.put(JSON.stringify(record), { key: uploadKey(ctx.bucket!, id), ifHead: null });
  sendXml(ctx, 200, 'InitiateMultipartUploadResult', { Bucket: ctx.bucket!, Key: ctx.name!, UploadId: id });
}

export async function uploadPart(ctx: Ctx): Promise<void> {
  const n = partNumber(ctx);
  const { id } = await upload(ctx, 'write');
  if (ctx.contentLength !== undefined && ctx.contentLength > MAX_PUT_BYTES) throw new S3Error('EntityTooLarge', 400, `a part has at most ${MAX_PUT_BYTES} bytes`);
  const stored = await storeWithEtag(ctx.db, ctx.writer, partKey(id, n), capped(ctx.body, MAX_PUT_BYTES), {});
  sendEmpty(ctx, 200, { etag: quoted(stored.etag) });
}

export async function uploadPartCopy(ctx: Ctx): Promise<void> {
  const n = partNumber(ctx);
  const source = await copySourceObject(ctx);
  const { id } = await upload(ctx, 'write');
  const rangeHeader = header(ctx, 'x-amz-copy-source-range');
  const range = rangeHeader === undefined ? undefined : parseRange(rangeHeader, source.size);
  if (rangeHeader !== undefined && !range) throw new S3Error('InvalidArgument', 400, 'x-amz-copy-source-range takes bytes=first-last');
  // The body is read, so that a signed (empty) payload is still verified.
  for await (const _ of ctx.body);
  const body = range ? ctx.db.stream(source.hash, range) : ctx.db.stream(source.hash);
  const stored = await storeWithEtag(ctx.db, ctx.writer, partKey(id, n), body, {});
  const created = (await ctx.db.stat(stored.hash)).created.getTime();
  sendXml(ctx, 200, 'CopyPartResult', { ETag: quoted(stored.etag), LastModified: isoDate(created) });
}

export async function completeMultipartUpload(ctx: Ctx): Promise<void> {
  const { id, upload: u } = await upload(ctx, 'write');
  const tree = parseXml(await readXml(ctx.body), 'CompleteMultipartUpload', ['Part']);
  const given = (tree.Part ?? []) as Array<Record<string, unknown>>;
  if (given.length === 0) throw new S3Error('MalformedXML', 400, 'CompleteMultipartUpload names no Part');
  const hashes: string[] = [];
  const md5s: Buffer[] = [];
  let previous = 0;
  for (const [i, p] of given.entries()) {
    const n = Number(textOf(p, 'PartNumber'));
    const etag = (textOf(p, 'ETag') ?? '').replaceAll('"', '');
    if (!Number.isInteger(n) || n <= previous) throw new S3Error('InvalidPartOrder', 400, 'the parts must be listed in ascending order of PartNumber, each once');
    previous = n;
    const stat = await liveObject(ctx.db, partKey(id, n));
    if (!stat || stat.meta.etag !== etag) throw new S3Error('InvalidPart', 400, `part ${n} was not uploaded, or its ETag is not ${etag}`);
    if (i < given.length - 1 && stat.size < MIN_PART_BYTES) throw new S3Error('EntityTooSmall', 400, `part ${n} has ${stat.size} bytes; every part but the last has at least ${MIN_PART_BYTES}`);
    hashes.push(stat.hash);
    md5s.push(Buffer.from(etag, 'hex'));
  }
  const etag = `${crypto.createHash('md5').update(Buffer.concat(md5s)).digest('hex')}-${given.length}`;
  await ctx.db.concat(hashes, { key: objectKey(ctx.bucket!, u.name), meta: { ...u.meta, etag, parts: String(given.length) } });
  await forget(ctx, id);
  await settle(ctx);
  sendXml(ctx, 200, 'CompleteMultipartUploadResult', { Location: `/${ctx.bucket}/${u.name}`, Bucket: ctx.bucket!, Key: u.name, ETag: quoted(etag) });
}

/** Purges every part of upload `id` and the upload itself. */
async function forget(ctx: Ctx, id: string): Promise<void> {
  const parts: string[] = [];
  for await (const e of ctx.db.list({ prefix: partPrefix(id), includeDeleted: true })) parts.push(e.key);
  for (const k of parts) await ctx.db.purge(k);
  await ctx.db.purge(uploadKey(ctx.bucket!, id));
}

export async function abortMultipartUpload(ctx: Ctx): Promise<void> {
  const { id } = await upload(ctx, 'write');
  await forget(ctx, id);
  sendEmpty(ctx, 204);
}

export async function listParts(ctx: Ctx): Promise<void> {
  const { id } = await upload(ctx, 'read');
  const markerText = ctx.query.get('part-number-marker') ?? '0';
  const marker = /^\d+$/.test(markerText) ? Number(markerText) : 0;
  const maxParts = Math.min(Number(ctx.query.get('max-parts') ?? MAX_LISTED) || MAX_LISTED, MAX_LISTED);
  const parts: Array<{ PartNumber: number; LastModified: string; ETag: string; Size: number }> = [];
  let truncated = false;
  const after = marker > 0 ? partKey(id, marker) : undefined;
  for await (const e of ctx.db.list({ prefix: partPrefix(id), ...(after ? { after } : {}) })) {
    if (parts.length === maxParts) {
      truncated = true;
      break;
    }
    const stat = await ctx.db.stat(e.hash);
    parts.push({ PartNumber: Number(e.key.slice(partPrefix(id).length)), LastModified: isoDate(stat.created.getTime()), ETag: quoted(stat.meta.etag ?? ''), Size: stat.size });
  }
  sendXml(ctx, 200, 'ListPartsResult', {
    Bucket: ctx.bucket!,
    Key: ctx.name!,
    UploadId: id,
    PartNumberMarker: marker,
    NextPartNumberMarker: parts.at(-1)?.PartNumber ?? marker,
    MaxParts: maxParts,
    IsTruncated: truncated,
    Part: parts,
    StorageClass: 'STANDARD',
  });
}

/**
 * The bucket's uploads under way, by object name then upload id. All of the bucket's uploads
 * are read to sort them (their records are small, and an upload lives until completed or
 * aborted): a bucket with very many uploads under way lists slowly (docs/s3.md).
 */
export async function listMultipartUploads(ctx: Ctx): Promise<void> {
  await needBucket(ctx, 'read');
  const prefix = ctx.query.get('prefix') ?? '';
  const keyMarker = ctx.query.get('key-marker') ?? '';
  const idMarker = ctx.query.get('upload-id-marker') ?? '';
  const max = Math.min(Number(ctx.query.get('max-uploads') ?? MAX_LISTED) || MAX_LISTED, MAX_LISTED);
  const all: Array<{ name: string; id: string; created: number }> = [];
  const base = uploadPrefix(ctx.bucket!);
  for await (const e of ctx.db.list({ prefix: base })) {
    const u = JSON.parse(Buffer.from(await ctx.db.get(e.hash)).toString('utf8')) as Upload;
    if (u.name.startsWith(prefix)) all.push({ name: u.name, id: e.key.slice(base.length), created: u.created });
  }
  const cmp = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));
  all.sort((a, b) => cmp(a.name, b.name) || cmp(a.id, b.id));
  const after = all.filter((u) => keyMarker === '' || cmp(u.name, keyMarker) > 0 || (u.name === keyMarker && idMarker !== '' && cmp(u.id, idMarker) > 0));
  const shown = after.slice(0, max);
  const truncated = after.length > max;
  sendXml(ctx, 200, 'ListMultipartUploadsResult', {
    Bucket: ctx.bucket!,
    KeyMarker: keyMarker,
    UploadIdMarker: idMarker,
    NextKeyMarker: truncated ? shown.at(-1)!.name : undefined,
    NextUploadIdMarker: truncated ? shown.at(-1)!.id : undefined,
    Prefix: prefix,
    MaxUploads: max,
    IsTruncated: truncated,
    Upload: shown.map((u) => ({ Key: u.name, UploadId: u.id, Initiated: isoDate(u.created), StorageClass: 'STANDARD' })),
  });
}
