/**
 * AWS Signature Version 4 as S3 servers verify it: in the Authorization header and in presigned
 * URLs, with every payload mode current S3 clients send.
 *
 * The server recomputes the signature the client made and compares. The canonical request (the
 * part where implementations drift: query encoding and ordering, header folding) is built by
 * AWS's own signer, `@smithy/signature-v4`, the code the JavaScript SDK signs with; the rules a
 * signer never needs and a verifier does are written here: parsing and bounding what the client
 * claims (credential scope, date, signed header list), the clock-skew and expiry windows, which
 * headers must have been signed, and the payload modes (carrier/s3/payload.ts).
 *
 * Reference: https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html
 */
import crypto from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { ChecksumVerifier, checksumAlgorithmOf } from './checksums.js';
import { s3 } from './errors.js';
import { type ChunkSigning, type ChunkedBody, type PlainBody, hmac, sha256Hex, signatureEquals, verifiedBody } from './payload.js';

export interface S3Request {
  method: string;
  /** The path exactly as it came on the wire (still %-encoded). */
  rawPath: string;
  /** Decoded pairs in wire order. Decode with decodeURIComponent, not as a form: `+` is a plus
   *  sign to SigV4 clients (they escape a space as %20), and reading it as a space would change the
   *  canonical query they signed. */
  query: Array<[string, string]>;
  /** Node's IncomingHttpHeaders (lower-case names). */
  headers: Record<string, string | string[] | undefined>;
  /** The raw request body. */
  body: AsyncIterable<Uint8Array>;
}

export interface Authenticated {
  accessKeyId: string;
  /** The payload as the client meant it: aws-chunked decoded, every chunk signature checked, the
   *  declared checksums (x-amz-checksum-*, Content-MD5, x-amz-content-sha256) verified. It throws an
   *  S3Error (SignatureDoesNotMatch, BadDigest, XAmzContentSHA256Mismatch, IncompleteBody...) from
   *  its last read if anything does not match, so a consumer that stores only after a clean end
   *  stores nothing bad. */
  body: AsyncIterable<Uint8Array>;
  /** The decoded content length when the request declared one (x-amz-decoded-content-length or Content-Length). */
  contentLength: number | undefined;
}

export interface AuthOptions {
  /** The region the credential scope must name (S3 clients default to us-east-1). */
  region: string;
  now?: () => number;
  /** How far the request's date may be from the server's clock: 15 minutes, as S3. */
  maxSkewMs?: number;
}

export const ALGORITHM = 'AWS4-HMAC-SHA256';
export const DEFAULT_MAX_SKEW_MS = 15 * 60 * 1000;
/** A presigned URL lives at most 7 days (X-Amz-Expires 604800), as S3. */
export const MAX_PRESIGNED_SECONDS = 7 * 24 * 3600;

const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
const STREAMING_SIGNED = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD';
const STREAMING_SIGNED_TRAILER = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER';
const STREAMING_UNSIGNED_TRAILER = 'STREAMING-UNSIGNED-PAYLOAD-TRAILER';

/** Parsed from the Authorization header or the X-Amz-* query parameters. */
interface Claim {
  presigned: boolean;
  accessKeyId: string;
  scopeDate: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
  /** X-Amz-Date (header or query), basic ISO 8601: 20130524T000000Z. */
  longDate: string;
  expiresSeconds: number | undefined;
}

/**
 * Verifies the request's signature and returns who made it and its verified body. Rejects with an
 * S3Error: AccessDenied for an anonymous request, an expired presigned URL or an unsigned x-amz-*
 * header; InvalidAccessKeyId; SignatureDoesNotMatch; RequestTimeTooSkewed;
 * AuthorizationHeaderMalformed / AuthorizationQueryParametersError / InvalidArgument for malformed
 * authentication; NotImplemented for SigV4a and checksum algorithms not supported.
 */
export async function authenticate(req: S3Request, lookupSecret: (accessKeyId: string) => Promise<string | undefined>, options: AuthOptions): Promise<Authenticated> {
  const headers = req.headers;
  const authorization = header(headers, 'authorization');
  const presigned = req.query.some(([k]) => k === 'X-Amz-Signature' || k === 'X-Amz-Algorithm' || k === 'X-Amz-Credential');
  if (authorization !== undefined && presigned) throw s3.invalidArgument('only one authentication mechanism is allowed: the Authorization header or X-Amz-* query parameters');
  if (authorization === undefined && !presigned) throw s3.accessDenied('anonymous requests are not allowed: sign the request (AWS Signature Version 4)');
  const claim = authorization !== undefined ? parseAuthorization(authorization, headers) : parsePresigned(req.query);
  const malformed = claim.presigned ? s3.authorizationQueryParametersError : s3.authorizationHeaderMalformed;

  if (claim.longDate.slice(0, 8) !== claim.scopeDate) throw malformed(`the credential scope date ${claim.scopeDate} is not the request's date ${claim.longDate.slice(0, 8)}`);
  if (claim.region !== options.region) throw malformed(`the region '${claim.region}' is wrong; expecting '${options.region}'`);
  if (claim.service !== 's3') throw malformed(`the credential scope names service '${claim.service}'; expecting 's3'`);
  checkTime(claim, options);

  // What the signature covers must include the host (else a request could be replayed to another
  // endpoint sharing the credentials) and every x-amz-* header, since S3 gives those meaning
  // (checksums, copy sources, metadata): an unsigned one could be added in flight.
  const signed = new Set(claim.signedHeaders);
  if (!signed.has('host')) throw s3.accessDenied('the host header must be signed');
  for (const name of Object.keys(headers)) {
    if (name.startsWith('x-amz-') && headers[name] !== undefined && !signed.has(name)) throw s3.accessDenied(`the header ${name} is not signed; every x-amz-* header must be`);
  }

  const payloadHash = claim.presigned ? (queryValue(req.query, 'X-Amz-Content-Sha256') ?? header(headers, 'x-amz-content-sha256') ?? UNSIGNED_PAYLOAD) : header(headers, 'x-amz-content-sha256');
  if (payloadHash === undefined) throw s3.invalidRequest('missing required header for this request: x-amz-content-sha256');
  const mode = payloadMode(payloadHash, claim.presigned);

  const secret = await lookupSecret(claim.accessKeyId);
  if (secret === undefined) throw s3.invalidAccessKeyId('the AWS access key id you provided does not exist in our records');

  const scope = `${claim.scopeDate}/${claim.region}/${claim.service}/aws4_request`;
  const signingKey = signingKeys.get(claim.accessKeyId, secret, claim.scopeDate, claim.region, claim.service);
  const canonicalHeaders: Record<string, string> = {};
  for (const name of claim.signedHeaders) canonicalHeaders[name] = canonicalHeaderValue(headers[name]);
  const query = queryRecord(req.query);
  let matched = false;
  for (const path of canonicalPaths(req.rawPath)) {
    const canonicalRequest = canonicalizer.canonicalRequest(req.method.toUpperCase(), path, query, canonicalHeaders, payloadHash);
    const stringToSign = [ALGORITHM, claim.longDate, scope, sha256Hex(canonicalRequest)].join('\n');
    if (signatureEquals(hmac(signingKey, stringToSign).toString('hex'), claim.signature)) { matched = true; break; }
  }
  if (!matched) throw s3.signatureDoesNotMatch('the request signature we calculated does not match the signature you provided; check your key and signing method');

  const checksums = declaredChecksums(req, mode);
  const declaredLength = contentLength(headers, mode.kind === 'chunked');
  let shape: PlainBody | ChunkedBody;
  if (mode.kind === 'plain') {
    shape = { kind: 'plain', sha256: mode.sha256 };
  } else {
    const signing: ChunkSigning | undefined = mode.signed ? { signingKey, longDate: claim.longDate, scope, seedSignature: claim.signature } : undefined;
    shape = { kind: 'chunked', signing, trailers: mode.trailers };
  }
  return { accessKeyId: claim.accessKeyId, body: verifiedBody(req.body, shape, checksums, declaredLength), contentLength: declaredLength };

  function payloadMode(value: string, isPresigned: boolean): { kind: 'plain'; sha256: Buffer | undefined } | { kind: 'chunked'; signed: boolean; trailers: string[] } {
    if (value === UNSIGNED_PAYLOAD) return { kind: 'plain', sha256: undefined };
    if (/^[0-9a-fA-F]{64}$/.test(value)) return { kind: 'plain', sha256: Buffer.from(value, 'hex') };
    if (value.startsWith('STREAMING-') && isPresigned) throw s3.invalidRequest(`${value} is not allowed in a presigned URL`);
    if (value === STREAMING_SIGNED || value === STREAMING_SIGNED_TRAILER || value === STREAMING_UNSIGNED_TRAILER) {
      const withTrailer = value !== STREAMING_SIGNED;
      const trailers = (header(headers, 'x-amz-trailer') ?? '').split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== '');
      if (withTrailer && trailers.length === 0) throw s3.invalidRequest(`${value} needs an x-amz-trailer header naming the trailer`);
      if (!withTrailer && trailers.length > 0) throw s3.invalidRequest(`x-amz-trailer with ${value}: use ${STREAMING_SIGNED_TRAILER}`);
      for (const t of trailers) if (checksumAlgorithmOf(t) === undefined) throw s3.invalidRequest(`x-amz-trailer names ${t}; only checksum trailers (x-amz-checksum-*, Content-MD5) are supported`);
      return { kind: 'chunked', signed: value !== STREAMING_UNSIGNED_TRAILER, trailers };
    }
    if (value.startsWith('STREAMING-AWS4-ECDSA-P256-SHA256')) throw s3.notImplemented(`${value} (Signature Version 4A) is not supported`);
    throw s3.invalidArgument(`x-amz-content-sha256 must be ${UNSIGNED_PAYLOAD}, ${STREAMING_SIGNED}, ${STREAMING_SIGNED_TRAILER}, ${STREAMING_UNSIGNED_TRAILER} or a hex SHA-256`);
  }
}

/** `AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=<64 hex>` */
function parseAuthorization(value: string, headers: S3Request['headers']): Claim {
  const space = value.indexOf(' ');
  const algorithm = space === -1 ? value : value.slice(0, space);
  if (algorithm !== ALGORITHM) {
    if (algorithm === 'AWS4-ECDSA-P256-SHA256') throw s3.notImplemented('Signature Version 4A is not supported; sign with AWS4-HMAC-SHA256');
    throw s3.invalidArgument(`unsupported Authorization type ${algorithm.slice(0, 32)}: only AWS Signature Version 4 (AWS4-HMAC-SHA256) is accepted`);
  }
  const fields = new Map<string, string>();
  for (const part of value.slice(space + 1).split(',')) {
    const eq = part.indexOf('=');
    const name = part.slice(0, Math.max(eq, 0)).trim();
    if (eq === -1 || fields.has(name)) throw s3.authorizationHeaderMalformed('the Authorization header is malformed');
    fields.set(name, part.slice(eq + 1).trim());
  }
  const credential = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (credential === undefined || signedHeaders === undefined || signature === undefined || fields.size !== 3) {
    throw s3.authorizationHeaderMalformed('the Authorization header must have exactly Credential, SignedHeaders and Signature');
  }
  // SigV4 also allows the Date header in place of X-Amz-Date; every S3 client sends X-Amz-Date
  // (and signs it), so only that is accepted: one date format, one source.
  const longDate = header(headers, 'x-amz-date');
  if (longDate === undefined) throw s3.accessDenied('AWS authentication requires a valid x-amz-date header');
  return { presigned: false, ...parseCredential(credential, s3.authorizationHeaderMalformed), signedHeaders: parseSignedHeaders(signedHeaders, s3.authorizationHeaderMalformed), signature: parseSignature(signature, s3.authorizationHeaderMalformed), longDate: parseLongDate(longDate, s3.accessDenied), expiresSeconds: undefined };
}

function parsePresigned(query: S3Request['query']): Claim {
  const bad = s3.authorizationQueryParametersError;
  const get = (name: string): string => {
    const values = query.filter(([k]) => k === name);
    if (values.length !== 1) throw bad(`a presigned URL needs exactly one ${name} query parameter`);
    return values[0]![1];
  };
  const algorithm = get('X-Amz-Algorithm');
  if (algorithm !== ALGORITHM) throw bad(`X-Amz-Algorithm must be ${ALGORITHM}`);
  const expires = get('X-Amz-Expires');
  if (!/^\d{1,7}$/.test(expires) || Number(expires) < 1 || Number(expires) > MAX_PRESIGNED_SECONDS) throw bad(`X-Amz-Expires must be a number of seconds from 1 to ${MAX_PRESIGNED_SECONDS} (7 days)`);
  return { presigned: true, ...parseCredential(get('X-Amz-Credential'), bad), signedHeaders: parseSignedHeaders(get('X-Amz-SignedHeaders'), bad), signature: parseSignature(get('X-Amz-Signature'), bad), longDate: parseLongDate(get('X-Amz-Date'), bad), expiresSeconds: Number(expires) };
}

function parseCredential(value: string, bad: (m: string) => Error): Pick<Claim, 'accessKeyId' | 'scopeDate' | 'region' | 'service'> {
  const parts = value.split('/');
  if (parts.length !== 5 || parts[0] === '' || !/^\d{8}$/.test(parts[1]!) || parts[2] === '' || parts[4] !== 'aws4_request') {
    throw bad('the credential must be ACCESS_KEY_ID/YYYYMMDD/REGION/s3/aws4_request');
  }
  return { accessKeyId: parts[0]!, scopeDate: parts[1]!, region: parts[2]!, service: parts[3]! };
}

function parseSignedHeaders(value: string, bad: (m: string) => Error): string[] {
  const names = value.split(';');
  // Canonical form: lower-case, sorted, no duplicates. A client that sent otherwise did not sign
  // this list, and accepting it would let two spellings denote one signature.
  if (names.some((n) => !/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(n)) || names.some((n, i) => i > 0 && n <= names[i - 1]!)) {
    throw bad('SignedHeaders must be lower-case header names, sorted, separated by ;');
  }
  return names;
}

function parseSignature(value: string, bad: (m: string) => Error): string {
  if (!/^[0-9a-f]{64}$/.test(value)) throw bad('the signature must be 64 lower-case hex digits');
  return value;
}

function parseLongDate(value: string, bad: (m: string) => Error): string {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (m === null || Number.isNaN(Date.parse(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z`))) throw bad('the date must be in the form YYYYMMDDTHHMMSSZ');
  return value;
}

function dateMs(longDate: string): number {
  return Date.parse(`${longDate.slice(0, 4)}-${longDate.slice(4, 6)}-${longDate.slice(6, 8)}T${longDate.slice(9, 11)}:${longDate.slice(11, 13)}:${longDate.slice(13, 15)}Z`);
}

/**
 * A header-signed request must be dated within the skew window either way, which bounds how long a
 * captured request can be replayed. A presigned URL is valid from its date (less the skew, for
 * clocks behind) until date + X-Amz-Expires.
 */
function checkTime(claim: Claim, options: AuthOptions): void {
  const now = options.now?.() ?? Date.now();
  const maxSkew = options.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
  const at = dateMs(claim.longDate);
  if (at - now > maxSkew) throw s3.requestTimeTooSkewed('the difference between the request time and the server time is too large');
  if (claim.expiresSeconds !== undefined) {
    if (now > at + claim.expiresSeconds * 1000) throw s3.accessDenied('request has expired');
  } else if (now - at > maxSkew) {
    throw s3.requestTimeTooSkewed('the difference between the request time and the server time is too large');
  }
}

function header(headers: S3Request['headers'], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

function queryValue(query: S3Request['query'], name: string): string | undefined {
  return query.find(([k]) => k === name)?.[1];
}

/** SigV4 header value canonical form: trimmed, runs of spaces folded, repeated headers joined by commas. */
function canonicalHeaderValue(v: string | string[] | undefined): string {
  const values = Array.isArray(v) ? v : [v ?? ''];
  return values.map((x) => x.replace(/[ \t]+/g, ' ').trim()).join(',');
}

function queryRecord(pairs: S3Request['query']): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
  for (const [k, v] of pairs) {
    const prev = out[k];
    out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return out;
}

/**
 * S3 signs the path as the client encoded it (no normalisation, no double encoding): that is
 * tried first. Clients disagree on which characters to escape (`!`, `'`, `*`, `(`, `)`, `~`, a
 * literal `+`), so if the path as sent does not verify, its canonical encoding (each segment
 * decoded, then escaped as SigV4 prescribes) is tried too: both denote the same resource, and the
 * signature still has to match one of them.
 */
function canonicalPaths(rawPath: string): string[] {
  const paths = [rawPath === '' ? '/' : rawPath];
  try {
    const reencoded = rawPath.split('/').map((seg) => uriEscape(decodeURIComponent(seg))).join('/');
    if (reencoded !== paths[0] && reencoded !== '') paths.push(reencoded);
  } catch {
    // A malformed %-escape has no canonical form: only the path as sent can match.
  }
  return paths;
}

/** SigV4's URI encoding: everything but A-Z a-z 0-9 - _ . ~ is %XX-escaped (upper-case hex, UTF-8). */
function uriEscape(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Checksums the request declares in its headers (and announces as trailers), verified over the decoded body. */
function declaredChecksums(req: S3Request, mode: { kind: 'plain' } | { kind: 'chunked'; trailers: string[] }): ChecksumVerifier {
  const v = new ChecksumVerifier();
  // CompleteMultipartUpload (POST ?uploadId=) sends x-amz-checksum-* of the whole object, not of
  // its XML body: those are the gateway's to check against the parts, not ours against the body.
  // Its Content-MD5, when sent, is of the body as everywhere.
  const completesUpload = req.method.toUpperCase() === 'POST' && req.query.some(([k]) => k === 'uploadId');
  for (const name of Object.keys(req.headers)) {
    const algorithm = checksumAlgorithmOf(name);
    const value = header(req.headers, name);
    if (algorithm === undefined || value === undefined || (completesUpload && name !== 'content-md5')) continue;
    v.declare(algorithm, name, value);
  }
  if (mode.kind === 'chunked') for (const t of mode.trailers) v.expect(checksumAlgorithmOf(t)!);
  return v;
}

function contentLength(headers: S3Request['headers'], chunked: boolean): number | undefined {
  const value = header(headers, chunked ? 'x-amz-decoded-content-length' : 'content-length');
  if (value === undefined) return undefined;
  if (!/^\d{1,16}$/.test(value)) throw s3.invalidArgument(`${chunked ? 'x-amz-decoded-content-length' : 'Content-Length'} must be a number of bytes`);
  return Number(value);
}

/**
 * The signing keys derived lately, by access key and scope. A key is derived from the secret
 * through the scope (date, region, service), so a key leaked from one scope signs nothing in
 * another; the derivation is four HMACs, the same for every request of one access key on one day,
 * so it is done once per key and day rather than per request.
 *
 * An entry is used only for the very secret it was derived from (compared on each lookup), so a
 * cached key never outlives a change of what the catalog says the secret is: a deleted access
 * key is refused by the lookup before this is reached, and another secret under the same id
 * derives afresh. At most MAX_ENTRIES are kept, the oldest dropped first.
 */
export class SigningKeys {
  static readonly MAX_ENTRIES = 1024;
  readonly #entries = new Map<string, { secret: string; key: crypto.KeyObject }>();
  /** How many keys were derived (not found here): what tests observe. */
  derivations = 0;

  get(accessKeyId: string, secret: string, scopeDate: string, region: string, service: string): crypto.KeyObject {
    const id = `${accessKeyId}/${scopeDate}/${region}/${service}`;
    const hit = this.#entries.get(id);
    if (hit !== undefined && hit.secret === secret) return hit.key;
    this.derivations++;
    const key = crypto.createSecretKey(hmac(hmac(hmac(hmac(`AWS4${secret}`, scopeDate), region), service), 'aws4_request'));
    this.#entries.delete(id);
    if (this.#entries.size >= SigningKeys.MAX_ENTRIES) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.set(id, { secret, key });
    return key;
  }
}

/** The gateway's signing keys: one per process, shared by every request. */
export const signingKeys = new SigningKeys();

/** A hash for the SDK signer's constructor; only the canonical request is taken from the signer. */
class NodeSha256 {
  readonly #hash: crypto.Hash | crypto.Hmac;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.#hash = secret === undefined ? crypto.createHash('sha256') : crypto.createHmac('sha256', Buffer.from(secret as Uint8Array));
  }
  update(data: Uint8Array): void { this.#hash.update(data); }
  digest(): Promise<Uint8Array> { return Promise.resolve(this.#hash.digest()); }
}

/**
 * The SDK signer's canonical request builder (method, path as given since S3 signs it without
 * re-escaping, sorted and escaped query without X-Amz-Signature, headers, signed header list,
 * payload hash), reached through a subclass because it is protected.
 */
class Canonicalizer extends SignatureV4 {
  constructor() {
    super({ service: 's3', region: 'unused', credentials: { accessKeyId: '', secretAccessKey: '' }, sha256: NodeSha256, uriEscapePath: false });
  }
  canonicalRequest(method: string, path: string, query: Record<string, string | string[]>, headers: Record<string, string>, payloadHash: string): string {
    return this.createCanonicalRequest({ method, protocol: 'https:', hostname: '', path, query, headers: {} }, headers, payloadHash);
  }
}
const canonicalizer = new Canonicalizer();
