/**
 * What every S3 handler is given (one request: who it is, what it names) and the answer forms
 * they share. The server (server.ts) builds a Ctx once the request is authenticated; handlers in
 * buckets.ts, objects.ts, listing.ts and multipart.ts answer through it.
 */
import type http from 'node:http';
import type { OuroDB } from '../../lib/db.js';
import { type AccessKey, type Catalog, grantOf } from './catalog.js';
import { S3Error } from './errors.js';
import { type XmlTree, xmlDocument } from './xml.js';

export interface Ctx {
  db: OuroDB;
  catalog: Catalog;
  region: string;
  /** s3.replicas: a write answers once this many members hold it (undefined: this one, durably). */
  replicas: number | undefined;
  /** This node's id: names its staging keys (keys.ts). */
  writer: string;
  req: http.IncomingMessage;
  res: http.ServerResponse;
  /** The bucket and object name the path names (decoded), when it names them. */
  bucket: string | undefined;
  name: string | undefined;
  /** Query parameters, decoded; the first of a repeated name. */
  query: Map<string, string>;
  key: AccessKey;
  /** The authenticated payload (s3-auth's Authenticated.body): throws from its last read if it does not verify. */
  body: AsyncIterable<Uint8Array>;
  contentLength: number | undefined;
  /** Object bytes sent in the answer, for the metrics. */
  bytesOut: number;
}

/** The header's value (the first when repeated). */
export function header(ctx: Ctx, name: string): string | undefined {
  const v = ctx.req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export function sendXml(ctx: Ctx, status: number, root: string, tree: XmlTree, headers: Record<string, string> = {}): void {
  const text = xmlDocument(root, tree);
  ctx.res.writeHead(status, { ...headers, 'content-type': 'application/xml', 'content-length': Buffer.byteLength(text) });
  ctx.res.end(text);
}

export function sendEmpty(ctx: Ctx, status: number, headers: Record<string, string | number> = {}): void {
  ctx.res.writeHead(status, { ...headers, 'content-length': 0 });
  ctx.res.end();
}

/**
 * Writes `source` as the answer's body and ends it. The next piece is already being read (from
 * disk, decrypted) while the current one is written, and no further piece is read while the socket
 * is over its high-water mark: at most two pieces (chunks of at most 1 MiB) are held per request
 * beyond what the socket buffers. (stream.pipeline over Readable.from, used before, cost an
 * AbortController, a DOMException and several stream objects per request, which showed in the
 * profile of 1 KiB GETs, and rejected with "Premature close" when a client went away.) If the
 * client goes away, reading stops and `source` is closed, and this resolves; a failure of
 * `source` is thrown after the headers were sent, so the server cuts the connection
 * (S3Gateway#fail).
 */
export async function sendBody(ctx: Ctx, source: AsyncIterable<Uint8Array>): Promise<void> {
  const res = ctx.res;
  const it = source[Symbol.asyncIterator]();
  // Marked handled at once: it may fail while the loop waits for a drain, and is awaited after.
  const read = () => {
    const p = it.next();
    p.catch(() => undefined);
    return p;
  };
  let next = read();
  try {
    for (;;) {
      const r = await next;
      if (r.done) break;
      if (res.destroyed) return;
      next = read();
      ctx.bytesOut += r.value.length;
      if (!res.write(r.value)) await drainedOrClosed(res);
    }
  } finally {
    // A read still under way when the loop left early settles first; then the source is closed.
    if (res.destroyed) {
      await next.catch(() => undefined);
      await it.return?.();
    }
  }
  res.end();
}

function drainedOrClosed(res: http.ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

export const quoted = (etag: string) => `"${etag}"`;
export const httpDate = (ms: number) => new Date(ms).toUTCString();
export const isoDate = (ms: number) => new Date(ms).toISOString();

/** The bucket of the request, which must exist, and the key's grant on it must cover `need`. */
export async function needBucket(ctx: Ctx, need: 'read' | 'write' | 'owner', bucket = ctx.bucket!): Promise<void> {
  const grant = grantOf(ctx.key, bucket);
  if (!grant[need]) {
    // A bucket the key has no grant on is not said to exist or not (as S3 answers a stranger).
    throw new S3Error('AccessDenied', 403, `access key ${ctx.key.id} has no ${need} grant on bucket ${bucket}`, { resource: `/${bucket}` });
  }
  if (!(await ctx.catalog.bucket(bucket))) throw new S3Error('NoSuchBucket', 404, `no bucket ${bucket}`, { resource: `/${bucket}` });
}

/** The request body counted against `max` bytes (EntityTooLarge past it, as soon as it is). */
export async function* capped(body: AsyncIterable<Uint8Array>, max: number): AsyncGenerator<Uint8Array> {
  let n = 0;
  for await (const piece of body) {
    n += piece.length;
    if (n > max) throw new S3Error('EntityTooLarge', 400, `the body is over ${max} bytes`);
    yield piece;
  }
}
