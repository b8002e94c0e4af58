/**
 * SigV4 authentication of the S3 gateway (carrier/s3/), against what real clients send: requests
 * made by the AWS SDK (`@aws-sdk/client-s3`) against a local server that captures them raw, URLs
 * from `@aws-sdk/s3-request-presigner`, requests and aws-chunked bodies signed by the SDK's own
 * signer (`@smithy/signature-v4`), and AWS's published chunked-upload example. Then every hostile
 * variant, each refused with S3's code and status.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { type ChecksumAlgorithm as SdkChecksumAlgorithm, PutObjectCommand, GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { SignatureV4 } from '@smithy/signature-v4';
import { XMLParser } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newHasher } from '../carrier/s3/checksums.js';
import { S3Error, errorXml } from '../carrier/s3/errors.js';
import { MAX_LINE_BYTES } from '../carrier/s3/payload.js';
import { type Authenticated, type S3Request, authenticate, signingKeys } from '../carrier/s3/sigv4.js';

const KEY_ID = 'OUROTESTKEYID';
const SECRET = 'ouro/test+secret=with-odd-chars';
const REGION = 'us-east-1';
const lookup = async (id: string): Promise<string | undefined> => (id === KEY_ID ? SECRET : undefined);
const options = { region: REGION };

interface Captured { method: string; url: string; headers: http.IncomingHttpHeaders; body: Buffer }

let server: http.Server;
let endpoint: string;
let captured: Captured[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      captured.push({ method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(200, { etag: '"0"', 'content-length': '2' });
      res.end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(async () => { await new Promise((resolve) => server.close(resolve)); });

function client(secretAccessKey = SECRET): S3Client {
  return new S3Client({ endpoint, region: REGION, forcePathStyle: true, maxAttempts: 1, credentials: { accessKeyId: KEY_ID, secretAccessKey } });
}

/** Runs `send` and returns the one request it made, as the server received it. */
async function capture(send: () => Promise<unknown>): Promise<Captured> {
  captured = [];
  await send();
  expect(captured).toHaveLength(1);
  return captured[0]!;
}

/** Hands `body` over in irregular pieces, so framing lines and chunks are split at every kind of place. */
async function* pieces(body: Buffer, sizes = [1, 7, 13, 300, 4096, 65_537]): AsyncGenerator<Uint8Array> {
  let pos = 0;
  for (let i = 0; pos < body.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield body.subarray(pos, pos + n);
    pos += n;
  }
}

/** The query as the gateway hands it over: decoded pairs in wire order, `+` kept a plus sign. */
function parseQuery(raw: string): Array<[string, string]> {
  return raw.split('&').filter((p) => p !== '').map((p) => {
    const eq = p.indexOf('=');
    return [decodeURIComponent(eq < 0 ? p : p.slice(0, eq)), decodeURIComponent(eq < 0 ? '' : p.slice(eq + 1))];
  });
}

function toRequest(c: Captured, body: Buffer = c.body): S3Request {
  const q = c.url.indexOf('?');
  return { method: c.method, rawPath: q === -1 ? c.url : c.url.slice(0, q), query: parseQuery(q === -1 ? '' : c.url.slice(q + 1)), headers: { ...c.headers }, body: pieces(body) };
}

async function read(auth: Authenticated): Promise<Buffer> {
  const out: Uint8Array[] = [];
  for await (const piece of auth.body) out.push(piece);
  return Buffer.concat(out);
}

/** Authenticates and reads the whole body, as the gateway does before it stores anything. */
async function accept(req: S3Request, opts: Parameters<typeof authenticate>[2] = options): Promise<Buffer> {
  return read(await authenticate(req, lookup, opts));
}

async function refusal(work: Promise<unknown>, s3Code: string, status: number): Promise<S3Error> {
  const err = await work.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(S3Error);
  expect(err).toMatchObject({ s3Code, status, code: 'OURO_S3' });
  return err as S3Error;
}

/** node:crypto as the SDK signer's hash (what @smithy/hash-node does). */
class Sha256 {
  readonly #h: crypto.Hash | crypto.Hmac;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) { this.#h = secret === undefined ? crypto.createHash('sha256') : crypto.createHmac('sha256', Buffer.from(secret as Uint8Array)); }
  update(data: Uint8Array): void { this.#h.update(data); }
  digest(): Promise<Uint8Array> { return Promise.resolve(this.#h.digest()); }
}

function signer(secretAccessKey = SECRET, region = REGION): SignatureV4 {
  return new SignatureV4({ service: 's3', region, credentials: { accessKeyId: KEY_ID, secretAccessKey }, sha256: Sha256, uriEscapePath: false });
}

const HOST = 's3.example.test';

/** A request signed by the SDK's signer in the Authorization header, as S3 clients send it. */
async function signedRequest(init: { method?: string; path?: string; query?: Record<string, string>; headers: Record<string, string>; signingDate?: Date; secret?: string }): Promise<{ headers: Record<string, string>; signature: string; longDate: string }> {
  const signingDate = init.signingDate ?? new Date();
  const signed = await signer(init.secret).sign({ method: init.method ?? 'PUT', protocol: 'https:', hostname: HOST, path: init.path ?? '/bucket/key', query: init.query ?? {}, headers: { host: HOST, ...init.headers } }, { signingDate });
  const headers = Object.fromEntries(Object.entries(signed.headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
  return { headers, signature: /Signature=([0-9a-f]{64})/.exec(headers.authorization!)![1]!, longDate: headers['x-amz-date']! };
}

function req(method: string, path: string, headers: Record<string, string>, body: Buffer | AsyncIterable<Uint8Array> = Buffer.alloc(0), query: Array<[string, string]> = []): S3Request {
  return { method, rawPath: path, query, headers, body: Buffer.isBuffer(body) ? pieces(body) : body };
}

const sha256 = (b: Buffer | string): string => crypto.createHash('sha256').update(b).digest('hex');
const EMPTY = sha256('');

/**
 * An aws-chunked body signed chunk by chunk, each HMAC computed by the SDK signer from the string to
 * sign AWS documents (checked against AWS's own example below); with `trailer`, the signed trailer.
 */
async function signedChunks(seed: { signature: string; longDate: string }, chunks: Buffer[], trailer?: string): Promise<Buffer> {
  const s = signer();
  const date = new Date(Date.UTC(+seed.longDate.slice(0, 4), +seed.longDate.slice(4, 6) - 1, +seed.longDate.slice(6, 8), +seed.longDate.slice(9, 11), +seed.longDate.slice(11, 13), +seed.longDate.slice(13, 15)));
  const scope = `${seed.longDate.slice(0, 8)}/${REGION}/s3/aws4_request`;
  let previous = seed.signature;
  const out: Buffer[] = [];
  for (const data of [...chunks, Buffer.alloc(0)]) {
    const signature = await s.sign(['AWS4-HMAC-SHA256-PAYLOAD', seed.longDate, scope, previous, EMPTY, sha256(data)].join('\n'), { signingDate: date });
    out.push(Buffer.from(`${data.length.toString(16)};chunk-signature=${signature}\r\n`), data, data.length > 0 ? Buffer.from('\r\n') : Buffer.alloc(0));
    previous = signature;
  }
  if (trailer !== undefined) {
    const signature = await s.sign(['AWS4-HMAC-SHA256-TRAILER', seed.longDate, scope, previous, sha256(`${trailer}\n`)].join('\n'), { signingDate: date });
    out.push(Buffer.from(`${trailer}\r\nx-amz-trailer-signature:${signature}\r\n`));
  }
  out.push(Buffer.from('\r\n'));
  return Buffer.concat(out);
}

const b64 = (algorithm: Parameters<typeof newHasher>[0], data: Buffer): string => { const h = newHasher(algorithm); h.update(data); return h.digest().toString('base64'); };

describe('requests the AWS SDK sends', () => {
  it('accepts a PutObject with a signed payload and the SDK\'s default CRC32 header, keys with spaces, &, é, + and %', async () => {
    const c = await capture(() => client().send(new PutObjectCommand({ Bucket: 'b', Key: 'dir/a b&é+%.txt', Body: 'hello world' })));
    expect(c.headers['x-amz-content-sha256']).toBe(sha256('hello world'));
    expect(c.headers['x-amz-checksum-crc32']).toBeDefined();
    const auth = await authenticate(toRequest(c), lookup, options);
    expect(auth.accessKeyId).toBe(KEY_ID);
    expect(auth.contentLength).toBe(11);
    expect((await read(auth)).toString()).toBe('hello world');
  });

  it('accepts a streamed PutObject: aws-chunked, STREAMING-UNSIGNED-PAYLOAD-TRAILER with the default CRC32 trailer', async () => {
    const data = crypto.randomBytes(300_000);
    const c = await capture(() => client().send(new PutObjectCommand({ Bucket: 'b', Key: 'big', Body: Readable.from([data.subarray(0, 100_000), data.subarray(100_000)]), ContentLength: data.length })));
    expect(c.headers['x-amz-content-sha256']).toBe('STREAMING-UNSIGNED-PAYLOAD-TRAILER');
    expect(c.headers['x-amz-trailer']).toBe('x-amz-checksum-crc32');
    const auth = await authenticate(toRequest(c), lookup, options);
    expect(auth.contentLength).toBe(data.length);
    expect((await read(auth)).equals(data)).toBe(true);
  });

  it('accepts a GetObject (empty body)', async () => {
    const c = await capture(() => client().send(new GetObjectCommand({ Bucket: 'b', Key: 'k', Range: 'bytes=0-9' })));
    expect((await accept(toRequest(c))).length).toBe(0);
  });

  const algorithms: Array<[SdkChecksumAlgorithm, string]> = [['CRC32', 'crc32'], ['CRC32C', 'crc32c'], ['CRC64NVME', 'crc64nvme'], ['SHA1', 'sha1'], ['SHA256', 'sha256']];
  for (const [sdkName, name] of algorithms) {
    it(`verifies x-amz-checksum-${name} as the SDK computes it, in a header and in a trailer, and refuses a body that does not match with BadDigest`, async () => {
      const header = await capture(() => client().send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: 'checksummed body', ChecksumAlgorithm: sdkName })));
      expect(header.headers[`x-amz-checksum-${name}`]).toBeDefined();
      expect((await accept(toRequest(header))).toString()).toBe('checksummed body');

      const data = Buffer.from('a streamed body, checksummed in the trailer '.repeat(100));
      const trailer = await capture(() => client().send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: Readable.from([data]), ContentLength: data.length, ChecksumAlgorithm: sdkName })));
      expect(trailer.headers['x-amz-trailer']).toBe(`x-amz-checksum-${name}`);
      expect((await accept(toRequest(trailer))).equals(data)).toBe(true);

      // The trailer mode's data is not signed: only its checksum protects it.
      const tampered = Buffer.from(trailer.body);
      const at = tampered.indexOf('streamed');
      tampered[at] = tampered[at]! ^ 1;
      await refusal(accept(toRequest(trailer, tampered)), 'BadDigest', 400);
    });
  }

  it('verifies MD5 as the SDK sends it when asked for one: a Content-MD5 trailer', async () => {
    for (const sdkName of ['MD5'] as SdkChecksumAlgorithm[]) {
      const data = Buffer.from(`body for ${sdkName} `.repeat(50));
      const c = await capture(() => client().send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: Readable.from([data]), ContentLength: data.length, ChecksumAlgorithm: sdkName })));
      expect(c.headers['x-amz-trailer']).toBe('content-md5');
      expect((await accept(toRequest(c))).equals(data)).toBe(true);
      const tampered = Buffer.from(c.body);
      tampered[tampered.indexOf('body for')] = 'B'.charCodeAt(0);
      await refusal(accept(toRequest(c, tampered)), 'BadDigest', 400);
    }
  });

  it('refuses a signed-payload body that does not hash to its x-amz-content-sha256 (XAmzContentSHA256Mismatch)', async () => {
    const c = await capture(() => client().send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: 'the body that was signed' })));
    await refusal(accept(toRequest(c, Buffer.from('the body that was Signed'))), 'XAmzContentSHA256Mismatch', 400);
  });

  it('refuses a body cut short of its Content-Length (IncompleteBody)', async () => {
    const c = await capture(() => client().send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: 'twelve bytes' })));
    await refusal(accept(toRequest(c, Buffer.from('twelve'))), 'IncompleteBody', 400);
    const s = await capture(() => client().send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: Readable.from([Buffer.from('abcdef')]), ContentLength: 6 })));
    await refusal(accept(toRequest(s, s.body.subarray(0, 8))), 'IncompleteBody', 400);
  });

  it('refuses a wrong secret (SignatureDoesNotMatch), an unknown key id (InvalidAccessKeyId), a wrong region', async () => {
    const wrong = await capture(() => client('not the secret').send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: 'x' })));
    await refusal(accept(toRequest(wrong)), 'SignatureDoesNotMatch', 403);
    const good = await capture(() => client().send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: 'x' })));
    await refusal(authenticate(toRequest(good), async () => undefined, options), 'InvalidAccessKeyId', 403);
    const err = await refusal(authenticate(toRequest(good), lookup, { region: 'eu-west-1' }), 'AuthorizationHeaderMalformed', 400);
    expect(err.message).toContain("expecting 'eu-west-1'");
  });

  it('refuses a request dated more than 15 minutes from the server clock either way (RequestTimeTooSkewed), and accepts one within', async () => {
    const c = await capture(() => client().send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: 'x' })));
    const signedAt = Date.parse(String(c.headers['x-amz-date']).replace(/(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/, '$1-$2-$3T$4:$5:$6Z'));
    await refusal(accept(toRequest(c), { region: REGION, now: () => signedAt + 16 * 60_000 }), 'RequestTimeTooSkewed', 403);
    await refusal(accept(toRequest(c), { region: REGION, now: () => signedAt - 16 * 60_000 }), 'RequestTimeTooSkewed', 403);
    expect((await accept(toRequest(c), { region: REGION, now: () => signedAt + 14 * 60_000 })).toString()).toBe('x');
  });

  it('refuses an x-amz-* header the client did not sign (AccessDenied), and one changed after signing (SignatureDoesNotMatch)', async () => {
    const c = await capture(() => client().send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: 'x', Metadata: { owner: 'alice' } })));
    expect(c.headers['x-amz-meta-owner']).toBe('alice');
    const added = toRequest(c);
    added.headers['x-amz-copy-source'] = '/other/secret';
    const err = await refusal(accept(added), 'AccessDenied', 403);
    expect(err.message).toContain('x-amz-copy-source');
    const changed = toRequest(c);
    changed.headers['x-amz-meta-owner'] = 'mallory';
    await refusal(accept(changed), 'SignatureDoesNotMatch', 403);
  });

  it('refuses a request for another path or query than the one signed', async () => {
    const c = await capture(() => client().send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: 'x' })));
    await refusal(accept({ ...toRequest(c), rawPath: '/b/other' }), 'SignatureDoesNotMatch', 403);
    await refusal(accept({ ...toRequest(c), query: [['x-id', 'DeleteObject']] }), 'SignatureDoesNotMatch', 403);
  });
});

describe('signing keys', () => {
  it('derives the signing key once per access key, secret and day, and never verifies with a key derived from another secret', async () => {
    const id = 'OUROCACHEKEYID';
    let secret = 'first secret';
    const lookupNow = async (k: string) => (k === id ? secret : undefined);
    const signed = (s: string) => capture(() => new S3Client({ endpoint, region: REGION, forcePathStyle: true, maxAttempts: 1, credentials: { accessKeyId: id, secretAccessKey: s } }).send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: 'x' })));
    const first = await signed('first secret');
    const before = signingKeys.derivations;
    for (let i = 0; i < 3; i++) expect((await read(await authenticate(toRequest(first), lookupNow, options))).toString()).toBe('x');
    expect(signingKeys.derivations - before).toBe(1);
    // The catalog now says another secret for the id: the request signed with the first no longer
    // verifies (the cached key is not used for it), and one signed with the new secret does.
    secret = 'second secret';
    await refusal(authenticate(toRequest(first), lookupNow, options), 'SignatureDoesNotMatch', 403);
    expect((await read(await authenticate(toRequest(await signed('second secret')), lookupNow, options))).toString()).toBe('x');
    expect(signingKeys.derivations - before).toBe(2);
  });
});

describe('presigned URLs (@aws-sdk/s3-request-presigner)', () => {
  async function presigned(url: string, init?: { method: string; body: Buffer }): Promise<Captured> {
    return capture(() => fetch(url, init).then((r) => r.arrayBuffer()));
  }

  it('accepts a presigned GET and PUT, and refuses the same URL after it expired (AccessDenied)', async () => {
    const get = await presigned(await getSignedUrl(client(), new GetObjectCommand({ Bucket: 'b', Key: 'dir/a b&é+%.txt' }), { expiresIn: 600 }));
    expect(get.url).toContain('X-Amz-Signature=');
    await accept(toRequest(get));
    await refusal(accept(toRequest(get), { region: REGION, now: () => Date.now() + 601_000 }), 'AccessDenied', 403);

    const body = Buffer.from('uploaded through a presigned URL');
    const put = await presigned(await getSignedUrl(client(), new PutObjectCommand({ Bucket: 'b', Key: 'up' }), { expiresIn: 600 }), { method: 'PUT', body });
    expect((await accept(toRequest(put))).equals(body)).toBe(true);
  });

  it('accepts a URL presigned hours ago for 7 days, and refuses X-Amz-Expires over 7 days and a tampered signature', async () => {
    const old = await presigned(await getSignedUrl(client(), new GetObjectCommand({ Bucket: 'b', Key: 'k' }), { expiresIn: 7 * 24 * 3600, signingDate: new Date(Date.now() - 3 * 3600_000) }));
    await accept(toRequest(old));
    const r = toRequest(old);
    await refusal(accept({ ...r, query: r.query.map(([k, v]) => [k, k === 'X-Amz-Expires' ? '604801' : v]) }), 'AuthorizationQueryParametersError', 400);
    await refusal(accept({ ...r, query: r.query.map(([k, v]) => [k, k === 'X-Amz-Signature' ? v.replace(/^./, (ch) => (ch === '0' ? '1' : '0')) : v]) }), 'SignatureDoesNotMatch', 403);
    await refusal(accept({ ...r, query: r.query.map(([k, v]) => [k, k === 'X-Amz-Expires' ? '604000' : v]) }), 'SignatureDoesNotMatch', 403);
  });

  it('refuses a presigned URL also carrying an Authorization header (InvalidArgument)', async () => {
    const get = await presigned(await getSignedUrl(client(), new GetObjectCommand({ Bucket: 'b', Key: 'k' }), { expiresIn: 60 }));
    const r = toRequest(get);
    r.headers.authorization = 'AWS4-HMAC-SHA256 Credential=x';
    await refusal(accept(r), 'InvalidArgument', 400);
  });
});

describe('STREAMING-AWS4-HMAC-SHA256-PAYLOAD: signed chunks', () => {
  it("verifies AWS's published example (sigv4-streaming: 64 KiB + 1 KiB of 'a', REDUCED_REDUNDANCY)", async () => {
    // https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html: its credentials,
    // its request, its seed and chunk signatures.
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
    const sigs = ['ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648', '0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497', 'b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9'];
    const body = Buffer.concat([
      Buffer.from(`10000;chunk-signature=${sigs[0]}\r\n`), Buffer.alloc(65536, 'a'), Buffer.from('\r\n'),
      Buffer.from(`400;chunk-signature=${sigs[1]}\r\n`), Buffer.alloc(1024, 'a'), Buffer.from('\r\n'),
      Buffer.from(`0;chunk-signature=${sigs[2]}\r\n\r\n`),
    ]);
    expect(body.length).toBe(66824);
    const headers = {
      host: 's3.amazonaws.com',
      'x-amz-date': '20130524T000000Z',
      'x-amz-storage-class': 'REDUCED_REDUNDANCY',
      authorization: 'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9',
      'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
      'content-encoding': 'aws-chunked',
      'x-amz-decoded-content-length': '66560',
      'content-length': '66824',
    };
    const opts = { region: 'us-east-1', now: () => Date.parse('2013-05-24T00:05:00Z') };
    const awsLookup = async (id: string) => (id === 'AKIAIOSFODNN7EXAMPLE' ? secret : undefined);
    const auth = await authenticate(req('PUT', '/examplebucket/chunkObject.txt', headers, body), awsLookup, opts);
    expect(auth.contentLength).toBe(66560);
    expect((await read(auth)).equals(Buffer.alloc(66560, 'a'))).toBe(true);

    // One bit of the second chunk changed: its signature no longer matches.
    const tampered = Buffer.from(body);
    tampered[65626 + 86 + 10] = 'b'.charCodeAt(0);
    await refusal(authenticate(req('PUT', '/examplebucket/chunkObject.txt', headers, tampered), awsLookup, opts).then(read), 'SignatureDoesNotMatch', 403);
  });

  async function streamingRequest(chunks: Buffer[], extra: Record<string, string> = {}, mode = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD') {
    const length = chunks.reduce((n, c) => n + c.length, 0);
    return signedRequest({ headers: { 'x-amz-content-sha256': mode, 'content-encoding': 'aws-chunked', 'x-amz-decoded-content-length': String(length), ...extra } });
  }

  it('decodes chunks signed by the SDK signer, a 4 MiB chunk included, without holding a chunk in memory', async () => {
    const chunks = [crypto.randomBytes(8192), crypto.randomBytes(4 * 1024 * 1024), crypto.randomBytes(100)];
    const seed = await streamingRequest(chunks);
    const body = await signedChunks(seed, chunks);
    // Fed in 64 KiB pieces: each decoded piece is at most one input piece, and output starts long
    // before the 4 MiB chunk has all arrived, so no chunk is ever buffered whole.
    let pulled = 0;
    async function* source() { for (let i = 0; i < body.length; i += 65536) { pulled++; yield body.subarray(i, i + 65536); } }
    const auth = await authenticate(req('PUT', '/bucket/key', seed.headers, source()), lookup, options);
    let largest = 0;
    let pulledAtSecondChunk = -1;
    const out: Uint8Array[] = [];
    for await (const piece of auth.body) {
      largest = Math.max(largest, piece.length);
      out.push(piece);
      if (pulledAtSecondChunk === -1 && out.reduce((n, p) => n + p.length, 0) > 8192) pulledAtSecondChunk = pulled;
    }
    expect(Buffer.concat(out).equals(Buffer.concat(chunks))).toBe(true);
    expect(largest).toBeLessThanOrEqual(65536);
    expect(pulledAtSecondChunk).toBeGreaterThan(0);
    expect(pulledAtSecondChunk).toBeLessThan(pulled / 2);
  });

  it('refuses a tampered chunk signature, tampered chunk data, a dropped chunk, a truncated stream', async () => {
    const chunks = [Buffer.alloc(9000, 'x'), Buffer.alloc(9000, 'y'), Buffer.alloc(10, 'z')];
    const seed = await streamingRequest(chunks);
    const body = await signedChunks(seed, chunks);
    expect((await accept(req('PUT', '/bucket/key', seed.headers, body))).equals(Buffer.concat(chunks))).toBe(true);

    const badSig = Buffer.from(body);
    const sigAt = body.indexOf('chunk-signature=', body.indexOf('\r\ny') ) + 'chunk-signature='.length;
    badSig[sigAt] = badSig[sigAt] === 0x30 ? 0x31 : 0x30;
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, badSig)), 'SignatureDoesNotMatch', 403);

    const badData = Buffer.from(body);
    badData[body.indexOf('yyyy')] = 'Y'.charCodeAt(0);
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, badData)), 'SignatureDoesNotMatch', 403);

    // The second chunk removed whole, its header and CRLF included: the third's signature chains
    // from the second's, so the gap shows.
    const second = body.indexOf('2328;chunk-signature=');
    const third = body.indexOf('a;chunk-signature=');
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, Buffer.concat([body.subarray(0, second), body.subarray(third)]))), 'SignatureDoesNotMatch', 403);

    await refusal(accept(req('PUT', '/bucket/key', seed.headers, body.subarray(0, body.indexOf('0;chunk-signature=')))), 'IncompleteBody', 400);
  });

  it('refuses malformed framing, an oversized chunk header (reading no further than the cap), a chunk past the declared length', async () => {
    const chunks = [Buffer.from('hello')];
    const seed = await streamingRequest(chunks);
    const body = await signedChunks(seed, chunks);
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, Buffer.from(body.toString('latin1').replace(/^5;/, 'zz;'), 'latin1'))), 'InvalidRequest', 400);
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, Buffer.from(body.toString('latin1').replace('hello\r\n', 'hello!!'), 'latin1'))), 'InvalidRequest', 400);

    let served = 0;
    // 1 MiB of one unterminated line, far past the cap: refused once the cap is passed, not at its end.
    async function* endless() { while (served < 1 << 20) { served += 100; yield Buffer.alloc(100, '1'); } }
    const err = await refusal(accept(req('PUT', '/bucket/key', seed.headers, endless())), 'InvalidRequest', 400);
    expect(err.message).toContain(`${MAX_LINE_BYTES}`);
    expect(served).toBeLessThanOrEqual(MAX_LINE_BYTES + 100);

    const longer = await signedChunks(seed, [Buffer.from('hello, and more')]);
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, longer)), 'InvalidRequest', 400);
  });

  it('STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: verifies the signed trailer and its checksum', async () => {
    const chunks = [Buffer.alloc(70_000, 'q'), Buffer.from('tail')];
    const data = Buffer.concat(chunks);
    const crc = b64('crc32', data);
    expect(Buffer.from(crc, 'base64').readUInt32BE()).toBe(zlib.crc32(data));
    const seed = await streamingRequest(chunks, { 'x-amz-trailer': 'x-amz-checksum-crc32' }, 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER');
    const good = await signedChunks(seed, chunks, `x-amz-checksum-crc32:${crc}`);
    expect((await accept(req('PUT', '/bucket/key', seed.headers, good))).equals(data)).toBe(true);

    // A checksum changed in flight: the trailer signature covers it.
    const swapped = Buffer.from(good.toString('latin1').replace(crc, b64('crc32', Buffer.from('other'))), 'latin1');
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, swapped)), 'SignatureDoesNotMatch', 403);
    // A wrong checksum the client itself signed: the data does not match it.
    const wrong = await signedChunks(seed, chunks, `x-amz-checksum-crc32:${b64('crc32', Buffer.from('other'))}`);
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, wrong)), 'BadDigest', 400);
    // No trailer signature at all.
    const unsigned = Buffer.from(good.toString('latin1').replace(/x-amz-trailer-signature:[0-9a-f]+\r\n/, ''), 'latin1');
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, unsigned)), 'SignatureDoesNotMatch', 403);
  });
});

describe('STREAMING-UNSIGNED-PAYLOAD-TRAILER framing', () => {
  async function unsignedTrailerRequest(data: Buffer) {
    return signedRequest({ headers: { 'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'content-encoding': 'aws-chunked', 'x-amz-decoded-content-length': String(data.length), 'x-amz-trailer': 'x-amz-checksum-crc32c' } });
  }
  const frame = (data: Buffer, trailer: string) => Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from(`\r\n0\r\n${trailer}\r\n\r\n`)]);

  it('refuses a missing trailer, an undeclared trailer, an oversized trailer, a chunk signature where none belongs', async () => {
    const data = Buffer.from('some data');
    const seed = await unsignedTrailerRequest(data);
    const crc = b64('crc32c', data);
    expect((await accept(req('PUT', '/bucket/key', seed.headers, frame(data, `x-amz-checksum-crc32c:${crc}`)))).equals(data)).toBe(true);
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, Buffer.concat([Buffer.from('9\r\n'), data, Buffer.from('\r\n0\r\n\r\n')]))), 'MalformedTrailerError', 400);
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, frame(data, `x-amz-checksum-crc32:${b64('crc32', data)}`))), 'MalformedTrailerError', 400);
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, frame(data, Array.from({ length: 20 }, () => `x-amz-checksum-crc32c:${crc}`).join('\r\n')))), 'MalformedTrailerError', 400);
    await refusal(accept(req('PUT', '/bucket/key', seed.headers, Buffer.from(frame(data, `x-amz-checksum-crc32c:${crc}`).toString('latin1').replace(/^9/, `9;chunk-signature=${'0'.repeat(64)}`), 'latin1'))), 'InvalidRequest', 400);
  });
});

describe('header checksums and Content-MD5 with UNSIGNED-PAYLOAD', () => {
  const data = Buffer.from('the body as sent');
  const other = Buffer.from('another body');
  for (const algorithm of ['crc32', 'crc32c', 'crc64nvme', 'sha1', 'sha256', 'sha512', 'md5'] as const) {
    it(`x-amz-checksum-${algorithm}: the matching body passes, another gets BadDigest`, async () => {
      const ok = await signedRequest({ headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', [`x-amz-checksum-${algorithm}`]: b64(algorithm, data) } });
      expect((await accept(req('PUT', '/bucket/key', ok.headers, data))).equals(data)).toBe(true);
      const bad = await signedRequest({ headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', [`x-amz-checksum-${algorithm}`]: b64(algorithm, other) } });
      await refusal(accept(req('PUT', '/bucket/key', bad.headers, data)), 'BadDigest', 400);
    });
  }

  it('CRC-64/NVME gives its check value, the SDK\'s value for "hello"', () => {
    const h = newHasher('crc64nvme');
    h.update(Buffer.from('12345'));
    h.update(Buffer.from('6789'));
    expect(h.digest().toString('hex')).toBe('ae8b14860a799888');
    expect(b64('crc64nvme', Buffer.from('hello'))).toBe('M3eFcAZSQlc=');
  });

  it('Content-MD5: verified when present; a malformed one is InvalidDigest; unknown checksum algorithms are NotImplemented', async () => {
    const md5 = crypto.createHash('md5').update(data).digest('base64');
    const ok = await signedRequest({ headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-md5': md5 } });
    expect((await accept(req('PUT', '/bucket/key', ok.headers, data))).equals(data)).toBe(true);
    await refusal(accept(req('PUT', '/bucket/key', ok.headers, other)), 'BadDigest', 400);
    const malformed = await signedRequest({ headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-md5': 'not-md5' } });
    await refusal(accept(req('PUT', '/bucket/key', malformed.headers, data)), 'InvalidDigest', 400);
    const xx = await signedRequest({ headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'x-amz-checksum-xxhash64': 'AAAAAAAAAAA=' } });
    await refusal(accept(req('PUT', '/bucket/key', xx.headers, data)), 'NotImplemented', 501);
  });

  it("CompleteMultipartUpload's x-amz-checksum-* name the object, not the XML body, so they are not checked against it", async () => {
    const xml = Buffer.from('<CompleteMultipartUpload></CompleteMultipartUpload>');
    const s = await signedRequest({ method: 'POST', query: { uploadId: 'u1' }, headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'x-amz-checksum-crc32': `${b64('crc32', other)}` } });
    expect((await accept(req('POST', '/bucket/key', s.headers, xml, [['uploadId', 'u1']]))).equals(xml)).toBe(true);
  });
});

describe('malformed and anonymous authentication', () => {
  it('anonymous is AccessDenied; SigV2 and unknown schemes InvalidArgument; a malformed header AuthorizationHeaderMalformed; no x-amz-content-sha256 InvalidRequest', async () => {
    await refusal(accept(req('GET', '/bucket/key', { host: HOST })), 'AccessDenied', 403);
    await refusal(accept(req('GET', '/bucket/key', { host: HOST, authorization: `AWS ${KEY_ID}:c2lnbmF0dXJl` })), 'InvalidArgument', 400);
    const good = await signedRequest({ method: 'GET', headers: { 'x-amz-content-sha256': EMPTY } });
    for (const bad of [
      good.headers.authorization!.replace('SignedHeaders=', 'Signedheaders='),
      good.headers.authorization!.replace(/Signature=[0-9a-f]+/, 'Signature=abc'),
      good.headers.authorization!.replace('/s3/aws4_request', '/aws4_request'),
      good.headers.authorization!.replace(/SignedHeaders=[^,]+/, 'SignedHeaders=x-amz-date;host'),
      `${good.headers.authorization!}, Extra=1`,
    ]) {
      await refusal(accept(req('GET', '/bucket/key', { ...good.headers, authorization: bad })), 'AuthorizationHeaderMalformed', 400);
    }
    const service = await signedRequest({ method: 'GET', headers: { 'x-amz-content-sha256': EMPTY } });
    await refusal(accept(req('GET', '/bucket/key', { ...service.headers, authorization: service.headers.authorization!.replace('/s3/', '/iam/') })), 'AuthorizationHeaderMalformed', 400);
    const { 'x-amz-date': _date, ...undated } = good.headers;
    await refusal(accept(req('GET', '/bucket/key', { ...undated, date: new Date().toUTCString() })), 'AccessDenied', 403);
    const noHash = await signedRequest({ method: 'GET', headers: {} });
    delete noHash.headers['x-amz-content-sha256'];
    await refusal(accept(req('GET', '/bucket/key', noHash.headers)), 'InvalidRequest', 400);
    expect((await accept(req('GET', '/bucket/key', good.headers))).length).toBe(0);
  });

  it('host must be signed (AccessDenied)', async () => {
    const s = await signer().sign({ method: 'GET', protocol: 'https:', hostname: HOST, path: '/bucket/key', query: {}, headers: { 'x-amz-content-sha256': EMPTY } }, { signingDate: new Date() });
    const headers = Object.fromEntries(Object.entries(s.headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
    await refusal(accept(req('GET', '/bucket/key', { ...headers, host: HOST })), 'AccessDenied', 403);
  });

  it("a path signed in SigV4's canonical escaping verifies when the client sent it less escaped", async () => {
    const s = await signedRequest({ method: 'GET', path: "/bucket/it%27s%20%281%29", headers: { 'x-amz-content-sha256': EMPTY } });
    await accept(req('GET', "/bucket/it's%20(1)", s.headers));
    await refusal(accept(req('GET', "/bucket/its%20(1)", s.headers)), 'SignatureDoesNotMatch', 403);
  });
});

describe('errorXml', () => {
  it("renders S3's XML error body, escaping what the request named", () => {
    const err = new S3Error('NoSuchKey', 404, 'The specified key <a&b> does not exist.', { resource: '/bucket/a&b<c>' });
    const xml = errorXml(err, 'req-1');
    expect(xml.startsWith('<?xml')).toBe(true);
    expect(xml).toContain('&amp;');
    expect(new XMLParser().parse(xml)).toEqual({ '?xml': '', Error: { Code: 'NoSuchKey', Message: 'The specified key <a&b> does not exist.', Resource: '/bucket/a&b<c>', RequestId: 'req-1' } });
    expect(new XMLParser().parse(errorXml(new S3Error('AccessDenied', 403, 'no'), 'r2')).Error).toEqual({ Code: 'AccessDenied', Message: 'no', RequestId: 'r2' });
  });
});
