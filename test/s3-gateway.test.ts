/**
 * The S3 gateway (docs/s3.md) against a real `ouro node start` process, driven by the AWS SDK
 * (@aws-sdk/client-s3, lib-storage, s3-request-presigner): buckets, objects, ranges, multipart,
 * copy, listings, presigned URLs, grants, and the gateway's own view (/metrics).
 */
import crypto from 'node:crypto';
import { CopyObjectCommand, CreateBucketCommand, CreateMultipartUploadCommand, CompleteMultipartUploadCommand, DeleteBucketCommand, DeleteObjectCommand, DeleteObjectsCommand, GetBucketLocationCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, ListBucketsCommand, ListMultipartUploadsCommand, ListObjectsCommand, ListObjectsV2Command, ListPartsCommand, AbortMultipartUploadCommand, PutObjectCommand, UploadPartCommand, UploadPartCopyCommand, type S3Client, GetBucketVersioningCommand } from '@aws-sdk/client-s3';
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
});
