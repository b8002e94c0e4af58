/**
 * The request body as the client meant it, verified while it streams.
 *
 * Two body shapes reach the gateway. A plain body is the payload itself; its declared SHA-256
 * (x-amz-content-sha256) and checksums are checked over the bytes as they pass. An aws-chunked
 * body (x-amz-content-sha256 = STREAMING-...) frames the payload in chunks, each optionally signed
 * and the whole optionally followed by trailers carrying a checksum:
 *
 *   signed    (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]):
 *     <hex size>;chunk-signature=<64 hex>\r\n <size bytes> \r\n      (repeated)
 *     0;chunk-signature=<64 hex>\r\n
 *     [x-amz-checksum-crc32:<base64>\r\n x-amz-trailer-signature:<64 hex>\r\n]   (-TRAILER only)
 *     \r\n
 *   unsigned  (STREAMING-UNSIGNED-PAYLOAD-TRAILER):
 *     <hex size>\r\n <size bytes> \r\n   ...   0\r\n  x-amz-checksum-crc32:<base64>\r\n  \r\n
 *
 * Memory stays bounded whatever the chunk size: chunk data is passed through as the pieces of it
 * arrive (hashed on the way), and only framing lines are accumulated, each capped at
 * MAX_LINE_BYTES and the trailer at MAX_TRAILER_BYTES. So a consumer may see bytes of a chunk
 * whose signature turns out wrong: the error is thrown from the read that ends that chunk, before
 * the stream can end cleanly, and the gateway stores an object only after a clean end.
 */
import crypto from 'node:crypto';
import { type ChecksumVerifier, checksumAlgorithmOf } from './checksums.js';
import { s3 } from './errors.js';

/** A framing line (chunk header or one trailer) longer than this is refused: a signed chunk header is under 100 bytes. */
export const MAX_LINE_BYTES = 1024;
/** All trailer lines together. */
export const MAX_TRAILER_BYTES = 8192;

const EMPTY_SHA256 = crypto.createHash('sha256').digest('hex');

/** What chunk signatures chain from: the seed is the request's own (header) signature. */
export interface ChunkSigning {
  signingKey: crypto.KeyObject;
  longDate: string;
  scope: string;
  seedSignature: string;
}

export interface PlainBody {
  kind: 'plain';
  /** x-amz-content-sha256 when it is a hash (not UNSIGNED-PAYLOAD): the body must hash to it. */
  sha256: Buffer | undefined;
}

export interface ChunkedBody {
  kind: 'chunked';
  /** Present when chunks are signed. */
  signing: ChunkSigning | undefined;
  /** Trailer names the client declared in x-amz-trailer (empty when it sends none); the trailer is signed when `signing` is. */
  trailers: string[];
}

/**
 * The decoded, verified payload. `declaredLength` (x-amz-decoded-content-length or Content-Length)
 * must equal the bytes decoded. `checksums` holds the declared header checksums and is given the
 * trailer ones as they arrive.
 */
export async function* verifiedBody(source: AsyncIterable<Uint8Array>, shape: PlainBody | ChunkedBody, checksums: ChecksumVerifier, declaredLength: number | undefined): AsyncGenerator<Uint8Array> {
  let total = 0;
  if (shape.kind === 'plain') {
    const sha = shape.sha256 === undefined ? undefined : crypto.createHash('sha256');
    for await (const piece of source) {
      total += piece.length;
      if (declaredLength !== undefined && total > declaredLength) throw s3.invalidRequest(`the body is longer than its declared length ${declaredLength}`);
      sha?.update(piece);
      checksums.update(piece);
      yield piece;
    }
    if (declaredLength !== undefined && total !== declaredLength) throw s3.incompleteBody(`the body has ${total} bytes, ${declaredLength} declared`);
    if (sha !== undefined && !crypto.timingSafeEqual(sha.digest(), shape.sha256!)) {
      throw s3.sha256Mismatch('the provided x-amz-content-sha256 does not match what was computed');
    }
    checksums.verify();
    return;
  }
  yield* decodeChunked(source, shape, checksums, declaredLength);
}

type State = 'size' | 'data' | 'data-end' | 'trailer' | 'done';

async function* decodeChunked(source: AsyncIterable<Uint8Array>, shape: ChunkedBody, checksums: ChecksumVerifier, declaredLength: number | undefined): AsyncGenerator<Uint8Array> {
  const signing = shape.signing;
  let previousSignature = signing?.seedSignature ?? '';
  let state = 'size' as State; // 'as': onLine changes it, which narrowing cannot see
  let remaining = 0; // data bytes left in the current chunk
  let chunkSignature = ''; // the signature the current chunk's header declared
  let chunkHash: crypto.Hash | undefined;
  let total = 0;
  const trailerLines: string[] = [];
  let trailerBytes = 0;
  // The framing line being read, from pieces that may split it anywhere. Never over MAX_LINE_BYTES.
  let line: Buffer[] = [];
  let lineBytes = 0;

  // Each chunk's signature signs the previous one, so the chunks cannot be reordered, dropped or
  // replayed from another request: the chain starts at the request's own signature.
  const checkChunkSignature = (dataSha256: string): void => {
    if (signing === undefined) return;
    const stringToSign = ['AWS4-HMAC-SHA256-PAYLOAD', signing.longDate, signing.scope, previousSignature, EMPTY_SHA256, dataSha256].join('\n');
    if (!signatureEquals(hmacHex(signing.signingKey, stringToSign), chunkSignature)) {
      throw s3.signatureDoesNotMatch('a chunk signature does not match: the chunk was altered, or signed with another key');
    }
    previousSignature = chunkSignature;
  };

  const onLine = (text: string): void => {
    if (state === 'data-end') {
      if (text !== '') throw s3.invalidRequest('aws-chunked: a chunk is longer than its declared size');
      state = 'size';
      return;
    }
    if (state === 'size') {
      const m = /^([0-9a-fA-F]{1,16})(?:;chunk-signature=([0-9a-f]{64}))?$/.exec(text);
      if (m === null) throw s3.invalidRequest('aws-chunked: malformed chunk header');
      if ((m[2] !== undefined) !== (signing !== undefined)) {
        throw s3.invalidRequest(signing ? 'aws-chunked: a chunk has no chunk-signature in a signed payload' : 'aws-chunked: a chunk-signature in an unsigned payload');
      }
      const size = Number.parseInt(m[1]!, 16);
      if (!Number.isSafeInteger(size) || (declaredLength !== undefined && total + size > declaredLength)) {
        throw s3.invalidRequest(`aws-chunked: a chunk of ${m[1]} (hex) bytes runs past the declared length ${declaredLength}`);
      }
      chunkSignature = m[2] ?? '';
      if (size === 0) {
        // The final, empty chunk is signed too: without it, a truncated stream would verify.
        checkChunkSignature(EMPTY_SHA256);
        state = 'trailer';
      } else {
        remaining = size;
        chunkHash = signing === undefined ? undefined : crypto.createHash('sha256');
        state = 'data';
      }
      return;
    }
    if (state === 'trailer') {
      if (text === '') { finishTrailer(); state = 'done'; return; }
      if (shape.trailers.length === 0) throw s3.malformedTrailer('aws-chunked: a trailer the request did not declare in x-amz-trailer');
      trailerBytes += text.length;
      if (trailerBytes > MAX_TRAILER_BYTES || trailerLines.length >= 16) throw s3.malformedTrailer('aws-chunked: the trailer is too long');
      trailerLines.push(text);
      return;
    }
    throw s3.invalidRequest('aws-chunked: data after the final chunk');
  };

  const finishTrailer = (): void => {
    const seen = new Map<string, string>();
    let trailerSignature: string | undefined;
    for (const t of trailerLines) {
      const colon = t.indexOf(':');
      if (colon <= 0) throw s3.malformedTrailer('aws-chunked: malformed trailer line');
      const name = t.slice(0, colon).trim().toLowerCase();
      const value = t.slice(colon + 1).trim();
      if (name === 'x-amz-trailer-signature') { trailerSignature = value; continue; }
      if (!shape.trailers.includes(name) || seen.has(name)) throw s3.malformedTrailer(`aws-chunked: trailer ${name} was not declared in x-amz-trailer, or came twice`);
      seen.set(name, value);
    }
    for (const name of shape.trailers) if (!seen.has(name)) throw s3.malformedTrailer(`aws-chunked: the declared trailer ${name} is missing`);
    if (signing !== undefined && shape.trailers.length > 0) {
      // The trailer's signature chains from the final chunk's and covers the trailer lines in
      // their canonical form, "name:value\n" each, as they were sent.
      if (trailerSignature === undefined || !/^[0-9a-f]{64}$/.test(trailerSignature)) throw s3.signatureDoesNotMatch('aws-chunked: the trailer has no x-amz-trailer-signature');
      const canonical = [...seen].map(([n, v]) => `${n}:${v}\n`).join('');
      const stringToSign = ['AWS4-HMAC-SHA256-TRAILER', signing.longDate, signing.scope, previousSignature, sha256Hex(canonical)].join('\n');
      if (!signatureEquals(hmacHex(signing.signingKey, stringToSign), trailerSignature)) throw s3.signatureDoesNotMatch('the trailer signature does not match');
    } else if (trailerSignature !== undefined) {
      throw s3.malformedTrailer('aws-chunked: x-amz-trailer-signature in an unsigned payload');
    }
    for (const [name, value] of seen) checksums.declare(checksumAlgorithmOf(name)!, name, value);
  };

  for await (const piece of source) {
    let pos = 0;
    while (pos < piece.length) {
      if (state === 'data') {
        const n = Math.min(remaining, piece.length - pos);
        const data = piece.subarray(pos, pos + n);
        pos += n;
        remaining -= n;
        total += n;
        chunkHash?.update(data);
        checksums.update(data);
        if (remaining === 0) {
          // Checked before the chunk's last bytes are handed on, so a bad chunk never ends cleanly.
          checkChunkSignature(chunkHash === undefined ? '' : chunkHash.digest('hex'));
          state = 'data-end';
        }
        yield data;
        continue;
      }
      if (state === 'done') throw s3.invalidRequest('aws-chunked: data after the end of the body');
      const nl = piece.indexOf(0x0a, pos);
      const end = nl === -1 ? piece.length : nl + 1;
      lineBytes += end - pos;
      if (lineBytes > MAX_LINE_BYTES) throw s3.invalidRequest(`aws-chunked: a framing line is longer than ${MAX_LINE_BYTES} bytes`);
      // Copied, not a view: a view would keep the whole piece it came from alive while a line
      // trickles in a byte per piece, and the cap is on bytes held.
      line.push(Buffer.from(piece.subarray(pos, end)));
      pos = end;
      if (nl === -1) break;
      const text = Buffer.concat(line).toString('latin1');
      line = [];
      lineBytes = 0;
      if (!text.endsWith('\r\n')) throw s3.invalidRequest('aws-chunked: a framing line does not end in CRLF');
      onLine(text.slice(0, -2));
    }
  }
  // Some clients end the body after the last trailer line without the closing empty line; what
  // the trailer says is complete then (whole lines, signed or checked below), so it is accepted.
  if (state === 'trailer' && lineBytes === 0 && trailerLines.length > 0) { finishTrailer(); state = 'done'; }
  if (state !== 'done') throw s3.incompleteBody('aws-chunked: the body ended before its final chunk and trailer');
  if (declaredLength !== undefined && total !== declaredLength) throw s3.incompleteBody(`the decoded body has ${total} bytes, x-amz-decoded-content-length says ${declaredLength}`);
  checksums.verify();
}

/**
 * HMAC-SHA256. A key given as bytes is wrapped in a KeyObject first: Node's createHmac checks a
 * raw Buffer key against every key kind it could be (CryptoKey, KeyObject...) on each call, which
 * costs several times the HMAC itself on short inputs (measured on Node 24: ~12 us with a Buffer,
 * ~4 us wrapped first, ~2 us with a KeyObject made once). Keys used again are kept as KeyObjects.
 */
export function hmac(key: crypto.KeyObject | Uint8Array | string, data: string): Buffer {
  const k = typeof key === 'string' || key instanceof crypto.KeyObject ? key : crypto.createSecretKey(key);
  return crypto.createHmac('sha256', k).update(data, 'utf8').digest();
}

function hmacHex(key: crypto.KeyObject, data: string): string {
  return hmac(key, data).toString('hex');
}

export function sha256Hex(data: string): string {
  return crypto.createHash('sha256').update(data, 'utf8').digest('hex');
}

/**
 * Constant-time equality of two hex signatures: both are decoded to bytes and compared with
 * timingSafeEqual, which needs equal lengths; a length difference is public (the format fixes it).
 */
export function signatureEquals(expectedHex: string, givenHex: string): boolean {
  const a = Buffer.from(expectedHex, 'hex');
  const b = Buffer.from(givenHex, 'hex');
  return a.length === 32 && b.length === 32 && /^[0-9a-f]{64}$/.test(givenHex) && crypto.timingSafeEqual(a, b);
}
