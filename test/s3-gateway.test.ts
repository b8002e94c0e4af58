/**
 * The S3 gateway (docs/s3.md) against a real `ouro node start` process, driven by the AWS SDK
 * (@aws-sdk/client-s3, lib-storage, s3-request-presigner): buckets, objects, ranges, multipart,
 * copy, listings, presigned URLs, grants, and the gateway's own view (/metrics).
 */
import crypto from 'node:crypto';
import { CopyObjectCommand, CreateBucketCommand, CreateMultipartUploadCommand, CompleteMultipartUploadCommand, DeleteBucketCommand, DeleteObjectCommand, DeleteObjectsCommand, GetBucketLocationCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, ListBucketsCommand, ListMultipartUploadsCommand, ListObjectsCommand, ListObjectsV2Command, type ListObjectsV2CommandOutput, ListPartsCommand, AbortMultipartUploadCommand, PutObjectCommand, UploadPartCommand, UploadPartCopyCommand, type S3Client, GetBucketVersioningCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dbApi } from './cluster-procs.js';
import { type S3Credentials, type S3Node, keyWithBuckets, s3Cli, s3Client, startS3Node, stopS3Node } from './s3-harness.js';

let s: S3Node;
let creds: S3Credentials;
let c: S3Client;

beforeAll(async () => {
  s = await startS3Node();
  creds = await keyWithBuckets(s.node, 'tester', ['alpha']);
  c = s3Client(s.url, creds);
}, 60_000);
afterAll(async () => {
  c?.destroy();
  if (s) await stopS3Node(s);
});

const text = async (body: unknown) => Buffer.from(await (body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
const md5 = (b: Uint8Array) => crypto.createHash('md5').update(b).digest('hex');
/** The S3 error code and HTTP status of a rejected SDK call. */
async function s3Failure(p: Promise<unknown>): Promise<{ code: string; status: number | undefined }> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; Code?: string; $metadata?: { httpStatusCode?: number } };
    return { code: e.Code ?? e.name, status: e.$metadata?.httpStatusCode };
  }
  throw new Error('the call succeeded');
}

describe('S3 gateway', () => {
  it('puts, gets, heads and deletes objects; ETag is the MD5; keys with spaces, & + % and UTF-8', async () => {
    for (const [name, body] of [
      ['hello.txt', Buffer.from('hello world')],
      ['dir/a b&é+%.txt', Buffer.from('odd name')],
      ['big.bin', crypto.randomBytes(3 * 1024 * 1024 + 17)],
      ['empty', Buffer.alloc(0)],
    ] as const) {
      const put = await c.send(new PutObjectCommand({ Bucket: 'alpha', Key: name, Body: body, ContentType: 'text/x-test', Metadata: { colour: 'blue' } }));
      expect(put.ETag).toBe(`"${md5(body)}"`);
      const got = await c.send(new GetObjectCommand({ Bucket: 'alpha', Key: name }));
      expect((await text(got.Body)).equals(body)).toBe(true);
      expect(got.ETag).toBe(`"${md5(body)}"`);
      expect(got.ContentType).toBe('text/x-test');
      expect(got.Metadata).toEqual({ colour: 'blue' });
      const head = await c.send(new HeadObjectCommand({ Bucket: 'alpha', Key: name }));
      expect(head.ContentLength).toBe(body.length);
    }
    await c.send(new DeleteObjectCommand({ Bucket: 'alpha', Key: 'hello.txt' }));
    expect(await s3Failure(c.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'hello.txt' })))).toEqual({ code: 'NoSuchKey', status: 404 });
    // The delete is a tombstone version: the object's history keeps the value.
    const history = await dbApi.json<{ versions: Array<{ type: string }> }>(s.node, `/db/history?key=${encodeURIComponent('\x01s3/o/alpha/hello.txt')}`);
    expect(history.versions.map((v) => v.type)).toEqual(['tombstone', 'value']);
  });

  it('answers byte ranges, and InvalidRange past the end', async () => {
    const body = crypto.randomBytes(2 * 1024 * 1024 + 5);
    await c.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'ranged', Body: body }));
    for (const [range, from, to] of [
      ['bytes=0-0', 0, 1],
      ['bytes=100-1048675', 100, 1048676],
      ['bytes=2097000-', 2097000, body.length],
      ['bytes=-10', body.length - 10, body.length],
      ['bytes=5-99999999', 5, body.length],
    ] as const) {
      const got = await c.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'ranged', Range: range }));
      expect(got.ContentRange).toBe(`bytes ${from}-${to - 1}/${body.length}`);
      expect((await text(got.Body)).equals(body.subarray(from, to))).toBe(true);
    }
    expect(await s3Failure(c.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'ranged', Range: `bytes=${body.length}-` })))).toEqual({ code: 'InvalidRange', status: 416 });
  });

  it('uploads 64 MiB in parts sent concurrently (lib-storage), and parts sent out of order; ETag is the MD5 of the MD5s', async () => {
    const body = crypto.randomBytes(64 * 1024 * 1024);
    const up = new Upload({ client: c, params: { Bucket: 'alpha', Key: 'multi/big', Body: body, ContentType: 'application/x-big' }, partSize: 8 * 1024 * 1024, queueSize: 4 });
    const done = await up.done();
    const partMd5s = Array.from({ length: 8 }, (_, i) => crypto.createHash('md5').update(body.subarray(i * 8 * 1024 * 1024, (i + 1) * 8 * 1024 * 1024)).digest());
    const want = `"${md5(Buffer.concat(partMd5s))}-8"`;
    expect(done.ETag).toBe(want);
    const got = await c.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'multi/big' }));
    expect(got.ETag).toBe(want);
    expect(got.ContentType).toBe('application/x-big');
    expect(md5(await text(got.Body))).toBe(md5(body));

    // By hand: parts 3, 1, 2 at once, the last one short; listed, then completed.
    const { UploadId } = await c.send(new CreateMultipartUploadCommand({ Bucket: 'alpha', Key: 'multi/by-hand' }));
    const parts = [crypto.randomBytes(5 * 1024 * 1024), crypto.randomBytes(5 * 1024 * 1024), Buffer.from('tail')];
    const etags = await Promise.all([3, 1, 2].map(async (n) => [n, (await c.send(new UploadPartCommand({ Bucket: 'alpha', Key: 'multi/by-hand', UploadId, PartNumber: n, Body: parts[n - 1] }))).ETag!] as const));
    const listed = await c.send(new ListPartsCommand({ Bucket: 'alpha', Key: 'multi/by-hand', UploadId }));
    expect(listed.Parts!.map((p) => [p.PartNumber, p.Size])).toEqual([[1, parts[0]!.length], [2, parts[1]!.length], [3, 4]]);
    const uploads = await c.send(new ListMultipartUploadsCommand({ Bucket: 'alpha' }));
    expect(uploads.Uploads!.map((u) => u.UploadId)).toContain(UploadId);
    const sorted = [...etags].sort((a, b) => a[0] - b[0]).map(([PartNumber, ETag]) => ({ PartNumber, ETag }));
    // Listed out of order, the parts are refused.
    expect(await s3Failure(c.send(new CompleteMultipartUploadCommand({ Bucket: 'alpha', Key: 'multi/by-hand', UploadId, MultipartUpload: { Parts: [sorted[1]!, sorted[0]!, sorted[2]!] } })))).toEqual({ code: 'InvalidPartOrder', status: 400 });
    await c.send(new CompleteMultipartUploadCommand({ Bucket: 'alpha', Key: 'multi/by-hand', UploadId, MultipartUpload: { Parts: sorted } }));
    const whole = await text((await c.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'multi/by-hand' }))).Body);
    expect(whole.equals(Buffer.concat(parts))).toBe(true);
    // The parts and the upload are gone with the completion.
    expect(await s3Failure(c.send(new ListPartsCommand({ Bucket: 'alpha', Key: 'multi/by-hand', UploadId })))).toEqual({ code: 'NoSuchUpload', status: 404 });
    const keys = await dbApi.json<{ keys: Array<{ key: string }> }>(s.node, `/db/keys?prefix=${encodeURIComponent('\x01s3/p/')}`);
    expect(keys.keys).toEqual([]);
  }, 120_000);

  it('aborts an upload (its parts are purged) and copies parts with UploadPartCopy', async () => {
    const { UploadId } = await c.send(new CreateMultipartUploadCommand({ Bucket: 'alpha', Key: 'multi/aborted' }));
    await c.send(new UploadPartCommand({ Bucket: 'alpha', Key: 'multi/aborted', UploadId, PartNumber: 1, Body: Buffer.from('x') }));
    await c.send(new AbortMultipartUploadCommand({ Bucket: 'alpha', Key: 'multi/aborted', UploadId }));
    expect(await s3Failure(c.send(new ListPartsCommand({ Bucket: 'alpha', Key: 'multi/aborted', UploadId })))).toEqual({ code: 'NoSuchUpload', status: 404 });
    expect((await dbApi.json<{ keys: unknown[] }>(s.node, `/db/keys?prefix=${encodeURIComponent(`\x01s3/p/${UploadId}/`)}`)).keys).toEqual([]);

    const source = crypto.randomBytes(6 * 1024 * 1024);
    await c.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'copy/source', Body: source }));
    const u = await c.send(new CreateMultipartUploadCommand({ Bucket: 'alpha', Key: 'copy/assembled' }));
    const p1 = await c.send(new UploadPartCopyCommand({ Bucket: 'alpha', Key: 'copy/assembled', UploadId: u.UploadId, PartNumber: 1, CopySource: 'alpha/copy/source', CopySourceRange: 'bytes=0-5242879' }));
    const p2 = await c.send(new UploadPartCopyCommand({ Bucket: 'alpha', Key: 'copy/assembled', UploadId: u.UploadId, PartNumber: 2, CopySource: 'alpha/copy/source', CopySourceRange: `bytes=5242880-${source.length - 1}` }));
    await c.send(new CompleteMultipartUploadCommand({ Bucket: 'alpha', Key: 'copy/assembled', UploadId: u.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p1.CopyPartResult!.ETag }, { PartNumber: 2, ETag: p2.CopyPartResult!.ETag }] } }));
    expect((await text((await c.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'copy/assembled' }))).Body)).equals(source)).toBe(true);
  }, 60_000);

  it('copies an object (metadata copied or replaced), across buckets the key may use', async () => {
    await keyWithBuckets(s.node, 'copier', ['beta']);
    await s3Cli(s.node, ['allow', 'tester', 'beta', '--read', '--write']);
    const body = crypto.randomBytes(700 * 1024);
    await c.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'orig', Body: body, ContentType: 'a/b', Metadata: { m: '1' } }));
    const copied = await c.send(new CopyObjectCommand({ Bucket: 'beta', Key: 'copy of orig', CopySource: 'alpha/orig' }));
    expect(copied.CopyObjectResult!.ETag).toBe(`"${md5(body)}"`);
    const got = await c.send(new GetObjectCommand({ Bucket: 'beta', Key: 'copy of orig' }));
    expect(got.ContentType).toBe('a/b');
    expect(got.Metadata).toEqual({ m: '1' });
    expect((await text(got.Body)).equals(body)).toBe(true);
    await c.send(new CopyObjectCommand({ Bucket: 'alpha', Key: 'orig', CopySource: 'alpha/orig', MetadataDirective: 'REPLACE', ContentType: 'c/d', Metadata: { n: '2' } }));
    const head = await c.send(new HeadObjectCommand({ Bucket: 'alpha', Key: 'orig' }));
    expect([head.ContentType, head.Metadata, head.ETag]).toEqual(['c/d', { n: '2' }, `"${md5(body)}"`]);
  });

  it('lists a few thousand keys in order with prefixes, delimiters, pages, start-after and url encoding (V1 and V2)', async () => {
    await c.send(new CreateBucketCommand({ Bucket: 'listing' }));
    const names: string[] = [];
    for (let d = 0; d < 30; d++) for (let f = 0; f < 70; f++) names.push(`d${String(d).padStart(2, '0')}/f${String(f).padStart(3, '0')}`);
    names.push('top-1', 'top 2 é', 'z&z');
    for (let i = 0; i < names.length; i += 64) await Promise.all(names.slice(i, i + 64).map((Key) => c.send(new PutObjectCommand({ Bucket: 'listing', Key, Body: Key }))));
    const sorted = [...names].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));

    // Every key, 1000 a page (V2 continuation tokens).
    const all: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const r = await c.send(new ListObjectsV2Command({ Bucket: 'listing', ContinuationToken: token }));
      all.push(...(r.Contents ?? []).map((o) => o.Key!));
      token = r.NextContinuationToken;
      pages++;
    } while (token);
    expect(all).toEqual(sorted);
    expect(pages).toBe(3);

    // Delimiter: the 30 directories as common prefixes plus the top-level keys, in small pages.
    const seen: string[] = [];
    token = undefined;
    do {
      const r: ListObjectsV2CommandOutput = await c.send(new ListObjectsV2Command({ Bucket: 'listing', Delimiter: '/', MaxKeys: 7, ContinuationToken: token }));
      seen.push(...(r.CommonPrefixes ?? []).map((p) => `P:${p.Prefix}`), ...(r.Contents ?? []).map((o) => `K:${o.Key}`));
      expect(r.KeyCount).toBeLessThanOrEqual(7);
      token = r.NextContinuationToken;
    } while (token);
    expect(seen.filter((x) => x.startsWith('P:'))).toEqual(Array.from({ length: 30 }, (_, d) => `P:d${String(d).padStart(2, '0')}/`));
    expect(seen.filter((x) => x.startsWith('K:')).sort()).toEqual(['K:top 2 é', 'K:top-1', 'K:z&z'].sort());

    const inDir = await c.send(new ListObjectsV2Command({ Bucket: 'listing', Prefix: 'd07/', StartAfter: 'd07/f059' }));
    expect(inDir.Contents!.map((o) => o.Key)).toEqual(Array.from({ length: 10 }, (_, f) => `d07/f0${60 + f}`));
    expect(inDir.Contents![0]!.ETag).toBe(`"${md5(Buffer.from('d07/f060'))}"`);

    // V1 with markers.
    const v1 = await c.send(new ListObjectsCommand({ Bucket: 'listing', Prefix: 'd1', Delimiter: '/', MaxKeys: 4 }));
    expect([v1.CommonPrefixes!.map((p) => p.Prefix), v1.IsTruncated, v1.NextMarker]).toEqual([['d10/', 'd11/', 'd12/', 'd13/'], true, 'd13/']);
    const v1next = await c.send(new ListObjectsCommand({ Bucket: 'listing', Prefix: 'd1', Delimiter: '/', Marker: v1.NextMarker }));
    expect(v1next.CommonPrefixes!.map((p) => p.Prefix)).toEqual(['d14/', 'd15/', 'd16/', 'd17/', 'd18/', 'd19/']);

    // encoding-type=url (the SDK asks for it and decodes): odd names come back intact.
    const odd = await c.send(new ListObjectsV2Command({ Bucket: 'listing', Prefix: 't', EncodingType: 'url' }));
    expect(odd.Contents!.map((o) => decodeURIComponent(o.Key!))).toEqual(['top 2 é', 'top-1']);
  }, 120_000);

  it('serves presigned GET and PUT URLs', async () => {
    const url = await getSignedUrl(c, new PutObjectCommand({ Bucket: 'alpha', Key: 'presigned/a b.txt' }), { expiresIn: 300 });
    const put = await fetch(url, { method: 'PUT', body: 'by a presigned URL' });
    expect(put.status).toBe(200);
    const get = await fetch(await getSignedUrl(c, new GetObjectCommand({ Bucket: 'alpha', Key: 'presigned/a b.txt' }), { expiresIn: 300 }));
    expect([get.status, await get.text()]).toEqual([200, 'by a presigned URL']);
  });

  it('manages buckets: create, head, location, list, delete only when empty', async () => {
    await c.send(new CreateBucketCommand({ Bucket: 'gamma' }));
    expect(await s3Failure(c.send(new CreateBucketCommand({ Bucket: 'gamma' })))).toEqual({ code: 'BucketAlreadyOwnedByYou', status: 409 });
    await c.send(new HeadBucketCommand({ Bucket: 'gamma' }));
    expect((await c.send(new GetBucketLocationCommand({ Bucket: 'gamma' }))).LocationConstraint).toBeUndefined();
    expect((await c.send(new ListBucketsCommand({}))).Buckets!.map((b) => b.Name)).toContain('gamma');
    await c.send(new PutObjectCommand({ Bucket: 'gamma', Key: 'k', Body: 'v' }));
    expect(await s3Failure(c.send(new DeleteBucketCommand({ Bucket: 'gamma' })))).toEqual({ code: 'BucketNotEmpty', status: 409 });
    await c.send(new DeleteObjectsCommand({ Bucket: 'gamma', Delete: { Objects: [{ Key: 'k' }, { Key: 'never-was' }] } }));
    await c.send(new DeleteBucketCommand({ Bucket: 'gamma' }));
    expect(await s3Failure(c.send(new HeadBucketCommand({ Bucket: 'gamma' })))).toMatchObject({ status: 403 });
    expect(await s3Failure(c.send(new CreateBucketCommand({ Bucket: 'Bad_Name' })))).toEqual({ code: 'InvalidBucketName', status: 400 });
  });

  it('refuses a bucket the key has no grant on, and what the grant does not cover', async () => {
    const other = await s3Cli<S3Credentials>(s.node, ['key', 'create', 'reader']);
    await s3Cli(s.node, ['allow', 'reader', 'alpha', '--read']);
    const r = s3Client(s.url, other);
    try {
      await c.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'readable', Body: 'yes' }));
      expect(await text((await r.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'readable' }))).Body)).toEqual(Buffer.from('yes'));
      expect(await s3Failure(r.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'not-allowed', Body: 'no' })))).toEqual({ code: 'AccessDenied', status: 403 });
      expect(await s3Failure(r.send(new GetObjectCommand({ Bucket: 'listing', Key: 'top-1' })))).toEqual({ code: 'AccessDenied', status: 403 });
      expect(await s3Failure(r.send(new ListObjectsV2Command({ Bucket: 'beta' })))).toEqual({ code: 'AccessDenied', status: 403 });
      expect((await r.send(new ListBucketsCommand({}))).Buckets!.map((b) => b.Name)).toEqual(['alpha']);
      await s3Cli(s.node, ['deny', 'reader', 'alpha']);
      expect(await s3Failure(r.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'readable' })))).toEqual({ code: 'AccessDenied', status: 403 });
      // Nothing was stored by the refused put.
      expect(await s3Failure(c.send(new HeadObjectCommand({ Bucket: 'alpha', Key: 'not-allowed' })))).toMatchObject({ status: 404 });
      // A deleted key is refused outright.
      await s3Cli(s.node, ['key', 'delete', 'reader']);
      expect(await s3Failure(r.send(new ListBucketsCommand({})))).toEqual({ code: 'InvalidAccessKeyId', status: 403 });
    } finally {
      r.destroy();
    }
  });

  it('answers 501 NotImplemented in S3 XML for operations it does not implement', async () => {
    expect(await s3Failure(c.send(new GetBucketVersioningCommand({ Bucket: 'alpha' })))).toEqual({ code: 'NotImplemented', status: 501 });
  });

  it('refuses invalid object names and keeps nothing of a PUT whose body is cut off', async () => {
    const long = 'n'.repeat(1024);
    expect(await s3Failure(c.send(new PutObjectCommand({ Bucket: 'alpha', Key: long, Body: 'x' })))).toEqual({ code: 'KeyTooLongError', status: 400 });
    // A body promised at 4 MiB, cut after 1 MiB: the connection ends, nothing is filed.
    const url = new URL(await getSignedUrl(c, new PutObjectCommand({ Bucket: 'alpha', Key: 'cut-off' }), { expiresIn: 300 }));
    const net = await import('node:net');
    await new Promise<void>((resolve) => {
      const sock = net.connect(Number(url.port), url.hostname, () => {
        sock.write(`PUT ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Length: ${4 * 1024 * 1024}\r\n\r\n`);
        sock.write(crypto.randomBytes(1024 * 1024), () => setTimeout(() => sock.destroy(), 200));
      });
      sock.on('close', () => resolve());
      sock.on('error', () => {});
    });
    await new Promise((r) => setTimeout(r, 500));
    expect(await s3Failure(c.send(new HeadObjectCommand({ Bucket: 'alpha', Key: 'cut-off' })))).toMatchObject({ status: 404 });
    expect((await dbApi.json<{ versions: unknown[] }>(s.node, `/db/history?key=${encodeURIComponent('\x01s3/o/alpha/cut-off')}`)).versions).toEqual([]);
    expect((await dbApi.json<{ keys: unknown[] }>(s.node, `/db/keys?deleted=true&prefix=${encodeURIComponent('\x01s3/t/')}`)).keys).toEqual([]);
  });

  it('counts requests by operation and status, and bytes in and out, in /metrics', async () => {
    await c.send(new PutObjectCommand({ Bucket: 'alpha', Key: 'metered', Body: Buffer.alloc(1000, 1) }));
    await text((await c.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'metered' }))).Body);
    await s3Failure(c.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'not-there' })));
    const metrics = await (await fetch(`${s.node.run.admin}/metrics`)).text();
    const value = (line: string) => Number(new RegExp(`^${line.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(metrics)?.[1]);
    expect(value('ouro_s3_requests_total{operation="PutObject",status="200"}')).toBeGreaterThan(0);
    expect(value('ouro_s3_requests_total{operation="GetObject",status="404"}')).toBeGreaterThan(0);
    expect(value('ouro_s3_requests_total{operation="ListParts",status="500"}')).toBe(0);
    // The cut-off PUT of the test before reached the gateway, and is counted as cut off.
    expect(value('ouro_s3_requests_total{operation="PutObject",status="499"}')).toBeGreaterThan(0);
    expect(value('ouro_s3_bytes_total{direction="in"}')).toBeGreaterThanOrEqual(1000);
    expect(value('ouro_s3_bytes_total{direction="out"}')).toBeGreaterThanOrEqual(1000);
    expect(metrics).toMatch(/^ouro_s3_request_seconds_bucket\{le="0\.1",operation="GetObject"\} [1-9]/m);
  });
});
