/**
 * Hostile input over HTTP against a real `ouro node start` with the gateway (docs/s3.md): each
 * request gets S3's error code and status in S3's XML form, the node keeps serving (a request
 * afterwards works), and nothing is stored (the bucket's listing, the object's history and the
 * staging keys unchanged). Cases the AWS SDK can produce go through @aws-sdk/client-s3; the rest
 * are raw `http.request`s signed with @smithy/signature-v4, as the SDK signs.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SignatureV4 } from '@smithy/signature-v4';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dbApi, waitFor } from './cluster-procs.js';
import { type S3Credentials, type S3Node, keyWithBuckets, s3Client, startS3Node, stopS3Node } from './s3-harness.js';

const BUCKET = 'hostile';
const REGION = 'us-east-1';
let s: S3Node;
let creds: S3Credentials;
let c: S3Client;

beforeAll(async () => {
  s = await startS3Node();
  creds = await keyWithBuckets(s.node, 'owner', [BUCKET]);
  c = s3Client(s.url, creds);
  await c.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'kept', Body: 'there before' }));
}, 60_000);
afterAll(async () => {
  c?.destroy();
  if (s) await stopS3Node(s);
});

const sha256hex = (b: Buffer | string) => crypto.createHash('sha256').update(b).digest('hex');
const EMPTY = sha256hex('');

/** node:crypto as the SDK signer's hash (what @smithy/hash-node does). */
class Sha256 {
  readonly #h: crypto.Hash | crypto.Hmac;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.#h = secret === undefined ? crypto.createHash('sha256') : crypto.createHmac('sha256', Buffer.from(secret as Uint8Array));
  }
  update(data: Uint8Array): void {
    this.#h.update(data);
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(this.#h.digest());
  }
}
const signer = (secretAccessKey = creds.secretAccessKey) => new SignatureV4({ service: 's3', region: REGION, credentials: { accessKeyId: creds.accessKeyId, secretAccessKey }, sha256: Sha256, uriEscapePath: false });

interface Raw {
  method: string;
  /** The path as sent (already escaped). */
  path: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  /** The payload hash to sign (default: the body's SHA-256). */
  contentSha256?: string;
}
/** Signs `r` as an S3 client would (Authorization header); returns the headers to send. */
async function sign(r: Raw, body: Buffer): Promise<{ headers: Record<string, string>; signature: string; longDate: string }> {
  const url = new URL(s.url);
  const signed = await signer().sign({ method: r.method, protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: r.path, query: r.query ?? {}, headers: { host: url.host, 'x-amz-content-sha256': r.contentSha256 ?? sha256hex(body), ...r.headers } });
  const headers = Object.fromEntries(Object.entries(signed.headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
  return { headers, signature: /Signature=([0-9a-f]{64})/.exec(headers.authorization!)![1]!, longDate: headers['x-amz-date']! };
}

interface Answer {
  status: number;
  code: string | undefined;
  body: string;
}
/** Sends a request and reads the answer; `write` sends the body (default: `body` whole). */
function send(r: Raw, headers: Record<string, string>, body: Buffer | undefined, write?: (req: http.ClientRequest) => void): Promise<Answer> {
  const qs = new URLSearchParams(r.query ?? {}).toString().replaceAll('+', '%20');
  return new Promise((resolve, reject) => {
    const req = http.request(`${s.url}${r.path}${qs ? `?${qs}` : ''}`, { method: r.method, headers: { 'content-length': String(body?.length ?? 0), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode!, code: /<Code>([^<]*)<\/Code>/.exec(text)?.[1], body: text });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (write) write(req);
    else req.end(body);
  });
}
/** Signs and sends. */
async function raw(r: Raw, body = Buffer.alloc(0)): Promise<Answer> {
  return send(r, (await sign(r, body)).headers, body);
}

/** The code and status of a rejected SDK call. */
async function sdkFailure(p: Promise<unknown>): Promise<{ code: string; status: number | undefined }> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; Code?: string; $metadata?: { httpStatusCode?: number } };
    return { code: e.Code ?? e.name, status: e.$metadata?.httpStatusCode };
  }
  throw new Error('the call succeeded');
}

/** What the database holds for the bucket: live objects, the history of `name`, staging keys. */
async function stored(name: string): Promise<{ listed: string[]; history: unknown[]; staging: unknown[] }> {
  const listed = ((await c.send(new ListObjectsV2Command({ Bucket: BUCKET }))).Contents ?? []).map((o) => o.Key!);
  const history = (await dbApi.json<{ versions: unknown[] }>(s.node, `/db/history?key=${encodeURIComponent(`\x01s3/o/${BUCKET}/${name}`)}`)).versions;
  const staging = (await dbApi.json<{ keys: unknown[] }>(s.node, `/db/keys?deleted=true&prefix=${encodeURIComponent('\x01s3/t/')}`)).keys;
  return { listed, history, staging };
}
/**
 * Runs `attempt` (which must be refused with `code` and `status` in S3's XML form when `xml`),
 * then checks the node still serves and nothing of `name` was stored.
 */
async function refusedCleanly(name: string, attempt: () => Promise<Answer | { code: string; status: number | undefined }>, code: string, status: number): Promise<void> {
  const before = await stored(name);
  expect(before.history).toEqual([]);
  const got = await attempt();
  expect({ code: got.code, status: got.status }).toEqual({ code, status });
  if ('body' in got) expect(got.body).toMatch(new RegExp(`^<\\?xml[^>]*\\?>\\s*<Error><Code>${code}</Code><Message>[^<]+</Message><Resource>[^<]*</Resource><RequestId>[0-9A-F]+</RequestId></Error>$`));
  // Still up, and nothing stored.
  expect(Buffer.from(await (await c.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'kept' }))).Body!.transformToByteArray()).toString()).toBe('there before');
  expect(await stored(name)).toEqual(before);
}

describe('hostile input over HTTP', () => {
  it('a wrong secret: SignatureDoesNotMatch', async () => {
    const bad = s3Client(s.url, { accessKeyId: creds.accessKeyId, secretAccessKey: `${creds.secretAccessKey}x` });
    await refusedCleanly('wrong-secret', () => sdkFailure(bad.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'wrong-secret', Body: 'x' }))), 'SignatureDoesNotMatch', 403);
    // The raw answer is S3's XML.
    await refusedCleanly('wrong-secret', async () => {
      const r: Raw = { method: 'PUT', path: `/${BUCKET}/wrong-secret` };
      const body = Buffer.from('x');
      const url = new URL(s.url);
      const signed = await signer(`${creds.secretAccessKey}x`).sign({ method: 'PUT', protocol: 'http:', hostname: url.hostname, path: r.path, query: {}, headers: { host: url.host, 'x-amz-content-sha256': sha256hex(body) } });
      return send(r, Object.fromEntries(Object.entries(signed.headers).map(([k, v]) => [k, String(v)])), body);
    }, 'SignatureDoesNotMatch', 403);
    bad.destroy();
  });

  it('an unknown access key id: InvalidAccessKeyId', async () => {
    const stranger = s3Client(s.url, { accessKeyId: 'OURO00000000000000000000', secretAccessKey: creds.secretAccessKey });
    await refusedCleanly('unknown-key', () => sdkFailure(stranger.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'unknown-key', Body: 'x' }))), 'InvalidAccessKeyId', 403);
    stranger.destroy();
  });

  it('a stale date (20 minutes behind): RequestTimeTooSkewed', async () => {
    const late = new S3Client({ endpoint: s.url, region: REGION, forcePathStyle: true, credentials: creds, maxAttempts: 1, systemClockOffset: -20 * 60_000 });
    await refusedCleanly('stale', () => sdkFailure(late.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'stale', Body: 'x' }))), 'RequestTimeTooSkewed', 403);
    late.destroy();
  });

  it('a tampered chunk signature (STREAMING-AWS4-HMAC-SHA256-PAYLOAD): SignatureDoesNotMatch, for a small and a staged body', async () => {
    for (const [name, size] of [['chunked-small', 9000], ['chunked-staged', 600 * 1024]] as const) {
      const chunks = [crypto.randomBytes(size), crypto.randomBytes(100)];
      const r: Raw = { method: 'PUT', path: `/${BUCKET}/${name}`, contentSha256: 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD', headers: { 'content-encoding': 'aws-chunked', 'x-amz-decoded-content-length': String(size + 100) } };
      const seed = await sign(r, Buffer.alloc(0));
      const scope = `${seed.longDate.slice(0, 8)}/${REGION}/s3/aws4_request`;
      const date = new Date(`${seed.longDate.slice(0, 4)}-${seed.longDate.slice(4, 6)}-${seed.longDate.slice(6, 8)}T${seed.longDate.slice(9, 11)}:${seed.longDate.slice(11, 13)}:${seed.longDate.slice(13, 15)}Z`);
      let previous = seed.signature;
      const framed: Buffer[] = [];
      for (const data of [...chunks, Buffer.alloc(0)]) {
        let signature = await signer().sign(['AWS4-HMAC-SHA256-PAYLOAD', seed.longDate, scope, previous, EMPTY, sha256hex(data)].join('\n'), { signingDate: date });
        previous = signature;
        // The second chunk's signature has one digit changed.
        if (data === chunks[1]) signature = (signature[0] === '0' ? '1' : '0') + signature.slice(1);
        framed.push(Buffer.from(`${data.length.toString(16)};chunk-signature=${signature}\r\n`), data, Buffer.from('\r\n'));
      }
      const body = Buffer.concat(framed);
      await refusedCleanly(name, () => send(r, seed.headers, body), 'SignatureDoesNotMatch', 403);
    }
  });

  it('a body that does not match its checksum, Content-MD5 or payload hash: BadDigest / XAmzContentSHA256Mismatch', async () => {
    const body = Buffer.from('the bytes sent');
    const other = Buffer.from('other bytes');
    const b64 = (alg: string, b: Buffer) => crypto.createHash(alg).update(b).digest('base64');
    await refusedCleanly('bad-sha256', () => raw({ method: 'PUT', path: `/${BUCKET}/bad-sha256`, headers: { 'x-amz-checksum-sha256': b64('sha256', other) } }, body), 'BadDigest', 400);
    await refusedCleanly('bad-md5', () => raw({ method: 'PUT', path: `/${BUCKET}/bad-md5`, contentSha256: 'UNSIGNED-PAYLOAD', headers: { 'content-md5': b64('md5', other) } }, body), 'BadDigest', 400);
    await refusedCleanly('bad-payload', () => raw({ method: 'PUT', path: `/${BUCKET}/bad-payload`, contentSha256: sha256hex(other) }, body), 'XAmzContentSHA256Mismatch', 400);
    // A staged body (over 256 KiB) with a wrong CRC32: found only at its end, after it was streamed.
    const big = crypto.randomBytes(700 * 1024);
    await refusedCleanly('bad-crc-big', () => raw({ method: 'PUT', path: `/${BUCKET}/bad-crc-big`, contentSha256: 'UNSIGNED-PAYLOAD', headers: { 'x-amz-checksum-crc32': 'AAAAAA==' } }, big), 'BadDigest', 400);
  });

  it('malformed and oversized XML bodies: MalformedXML, and nothing deleted or completed', async () => {
    const del = (xml: string) => () => raw({ method: 'POST', path: `/${BUCKET}`, query: { delete: '' }, headers: { 'content-md5': crypto.createHash('md5').update(xml).digest('base64') } }, Buffer.from(xml));
    await refusedCleanly('kept-xml', del('<Delete><Object><Key>kept</Key></Object>'), 'MalformedXML', 400);
    await refusedCleanly('kept-xml', del('<NotDelete><Object><Key>kept</Key></Object></NotDelete>'), 'MalformedXML', 400);
    await refusedCleanly('kept-xml', del(`<Delete>${'<Object><Key>kept</Key></Object>'.repeat(1001)}</Delete>`), 'MalformedXML', 400);
    // Over the 2 MiB an XML body may have (carrier/s3/xml.ts MAX_XML_BYTES).
    await refusedCleanly('kept-xml', del(`<Delete><Object><Key>kept</Key></Object><!--${'x'.repeat(2 * 1024 * 1024)}--></Delete>`), 'MalformedXML', 400);

    const create = await raw({ method: 'POST', path: `/${BUCKET}/mpu`, query: { uploads: '' } });
    const uploadId = /<UploadId>([0-9a-f]+)<\/UploadId>/.exec(create.body)![1]!;
    const part = await raw({ method: 'PUT', path: `/${BUCKET}/mpu`, query: { partNumber: '1', uploadId } }, Buffer.from('part one'));
    expect(part.status).toBe(200);
    const complete = (xml: string) => () => raw({ method: 'POST', path: `/${BUCKET}/mpu`, query: { uploadId } }, Buffer.from(xml));
    await refusedCleanly('mpu', complete('<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>'), 'MalformedXML', 400);
    await refusedCleanly('mpu', complete('<CompleteMultipartUpload></CompleteMultipartUpload>'), 'MalformedXML', 400);
    await refusedCleanly('mpu', complete('not xml at all <<<'), 'MalformedXML', 400);
    // The upload is still there, its part intact.
    const parts = await raw({ method: 'GET', path: `/${BUCKET}/mpu`, query: { uploadId } });
    expect(parts.body).toContain('<PartNumber>1</PartNumber>');
  });

  it('an oversized object (over 5 GiB declared): EntityTooLarge before the body is read', async () => {
    const r: Raw = { method: 'PUT', path: `/${BUCKET}/huge`, contentSha256: 'UNSIGNED-PAYLOAD' };
    await refusedCleanly('huge', async () => {
      const { headers } = await sign(r, Buffer.alloc(0));
      // Only the headers and 1 MiB are sent: the answer comes without the rest.
      return send(r, { ...headers, 'content-length': String(5 * 1024 ** 3 + 1) }, undefined, (req) => {
        req.flushHeaders();
        req.write(crypto.randomBytes(1024 * 1024));
        req.on('response', (res) => res.on('end', () => req.destroy()));
      });
    }, 'EntityTooLarge', 400);
  });

  it('a grant that does not cover the bucket: AccessDenied, to write and to read', async () => {
    const otherCreds = await keyWithBuckets(s.node, 'other', ['elsewhere']);
    const other = s3Client(s.url, otherCreds);
    await refusedCleanly('not-granted', () => sdkFailure(other.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'not-granted', Body: 'x' }))), 'AccessDenied', 403);
    await refusedCleanly('not-granted', () => sdkFailure(other.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'kept' }))), 'AccessDenied', 403);
    other.destroy();
  });

  it('a huge or invalid object name: KeyTooLongError, InvalidArgument, InvalidURI', async () => {
    const long = 'k'.repeat(1100);
    await refusedCleanly(long.slice(0, 1000), () => raw({ method: 'PUT', path: `/${BUCKET}/${long}` }, Buffer.from('x')), 'KeyTooLongError', 400);
    // (A name with NUL has no database key to look up; the bucket's listing shows nothing new.)
    await refusedCleanly('a', () => raw({ method: 'PUT', path: `/${BUCKET}/a%00b` }, Buffer.from('x')), 'InvalidArgument', 400);
    // Not UTF-8 once decoded.
    const notUtf8 = await raw({ method: 'PUT', path: `/${BUCKET}/a%FFb` }, Buffer.from('x'));
    expect([notUtf8.code, notUtf8.status]).toEqual(['InvalidURI', 400]);
    expect((await stored('kept')).listed).toEqual(['kept']);
  });

  it('a cut-off upload (connection closed mid-body) leaves no object, no version, no staging key, no part', async () => {
    for (const [name, size] of [['cut-small', 200 * 1024], ['cut-staged', 3 * 1024 * 1024]] as const) {
      const r: Raw = { method: 'PUT', path: `/${BUCKET}/${name}`, contentSha256: 'UNSIGNED-PAYLOAD' };
      const before = await stored(name);
      const { headers } = await sign(r, Buffer.alloc(0));
      await new Promise<void>((resolve) => {
        const req = http.request(`${s.url}${r.path}`, { method: 'PUT', headers: { ...headers, 'content-length': String(size) } });
        req.on('error', () => resolve());
        req.on('close', () => resolve());
        req.write(crypto.randomBytes(Math.floor(size / 2)), () => setTimeout(() => req.destroy(), 100));
      });
      // The gateway sees the cut as it happens; wait until it has counted it (499) before looking.
      await waitForCutOff();
      // The handler may still be purging what it staged when the socket closed: the state settles
      // back to what it was, and stays so (checked again below by every later case).
      await waitFor(async () => JSON.stringify(await stored(name)) === JSON.stringify(before), 10_000, `nothing of ${name} stored`);
      expect(await stored(name)).toEqual(before);
    }
    // A part cut off: the upload lists no part.
    const create = await raw({ method: 'POST', path: `/${BUCKET}/cut-mpu`, query: { uploads: '' } });
    const uploadId = /<UploadId>([0-9a-f]+)<\/UploadId>/.exec(create.body)![1]!;
    const r: Raw = { method: 'PUT', path: `/${BUCKET}/cut-mpu`, query: { partNumber: '1', uploadId }, contentSha256: 'UNSIGNED-PAYLOAD' };
    const { headers } = await sign(r, Buffer.alloc(0));
    await new Promise<void>((resolve) => {
      const req = http.request(`${s.url}${r.path}?partNumber=1&uploadId=${uploadId}`, { method: 'PUT', headers: { ...headers, 'content-length': String(6 * 1024 * 1024) } });
      req.on('error', () => resolve());
      req.on('close', () => resolve());
      req.write(crypto.randomBytes(1024 * 1024), () => setTimeout(() => req.destroy(), 100));
    });
    await waitForCutOff();
    const parts = await raw({ method: 'GET', path: `/${BUCKET}/cut-mpu`, query: { uploadId } });
    expect(parts.status).toBe(200);
    expect(parts.body).not.toContain('<Part>');
    expect((await dbApi.json<{ keys: unknown[] }>(s.node, `/db/keys?deleted=true&prefix=${encodeURIComponent(`\x01s3/p/${uploadId}/`)}`)).keys).toEqual([]);
  });
});

let cutOffsSeen = 0;
/** Waits until /metrics counts one more request cut off by the client (status 499) than before. */
async function waitForCutOff(): Promise<void> {
  const want = cutOffsSeen + 1;
  await waitFor(async () => {
    const metrics = await (await fetch(`${s.node.run.admin}/metrics`)).text();
    const n = [...metrics.matchAll(/^ouro_s3_requests_total\{[^}]*status="499"[^}]*\} (\d+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
    return n >= want;
  }, 10_000, 'the cut-off request counted');
  cutOffsSeen = want;
}
