/**
 * The S3 gateway (docs/s3.md): an HTTP server on `s3.host`:`s3.port` (127.0.0.1:3900 unless set
 * otherwise) that `ouro node start` runs beside the admin API on a node with the database, when
 * `s3.enabled`. Each request: the path and query are split as sent (path-style addressing), the
 * request is authenticated (sigv4.ts; nothing is anonymous), the operation found (routes.ts) and
 * its handler run with the authenticated body. Errors are S3's XML error form.
 *
 * Every request is counted in /metrics (metrics.ts) and logged as one JSON line at debug level.
 * The server owns nothing but its sockets: buckets, keys and objects are in the database.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { OuroDB } from '../../lib/db.js';
import { OuroError, errorText } from '../../lib/errors.js';
import { type AccessKey, Catalog } from './catalog.js';
import type { Ctx } from './context.js';
import { S3Error, errorXml } from './errors.js';
import { S3Metrics } from './metrics.js';
import { OPERATIONS, type Operation, operationOf } from './routes.js';
import { authenticate } from './sigv4.js';
import { sweepStaging } from './store.js';

export interface S3Settings {
  host: string;
  port: number;
  region: string;
  replicas?: number | undefined;
}

/** Status and S3 code of an OuroError that reaches the top of a request (not an S3Error). */
const S3_CODE_OF: Partial<Record<string, [number, string]>> = {
  OURO_BAD_ARGUMENT: [400, 'InvalidArgument'],
  OURO_NOT_FOUND: [404, 'NoSuchKey'],
  OURO_CONFLICT: [409, 'OperationAborted'],
  OURO_UNAVAILABLE: [503, 'ServiceUnavailable'],
  OURO_TIMEOUT: [503, 'ServiceUnavailable'],
  OURO_CLOSED: [503, 'ServiceUnavailable'],
};

export class S3Gateway {
  readonly catalog: Catalog;
  readonly metrics: S3Metrics;
  readonly #db: OuroDB;
  readonly #settings: S3Settings;
  readonly #log: Logger;
  readonly #writer: string;
  readonly #server: http.Server;
  #url = '';

  private constructor(args: { db: OuroDB; settings: S3Settings; log: Logger; registry: Registry; writer: string }) {
    this.#db = args.db;
    this.#settings = args.settings;
    this.#log = args.log;
    this.#writer = args.writer;
    this.catalog = new Catalog(args.db, { replicas: args.settings.replicas });
    this.metrics = new S3Metrics(args.registry);
    // requestTimeout 0: an upload of gigabytes over a slow link may take longer than Node's
    // default 5 minutes; the headers still have to arrive within headersTimeout.
    this.#server = http.createServer({ requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => void this.#serve(req, res));
  }

  /** Starts the gateway (after purging staging versions a crash of this node left). */
  static async start(args: { db: OuroDB; settings: S3Settings; log: Logger; registry: Registry; writer: string }): Promise<S3Gateway> {
    const gateway = new S3Gateway(args);
    const swept = await sweepStaging(args.db, args.writer);
    if (swept > 0) args.log.info({ event: 's3-staging-swept', keys: swept }, 'purged the staging versions of uploads cut off by a stop');
    await new Promise<void>((resolve, reject) => {
      gateway.#server.once('error', reject);
      gateway.#server.listen(args.settings.port, args.settings.host, () => resolve());
    });
    const a = gateway.#server.address() as AddressInfo;
    gateway.#url = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    return gateway;
  }

  get url(): string {
    return this.#url;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  async #serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    const requestId = crypto.randomBytes(8).toString('hex').toUpperCase();
    res.setHeader('x-amz-request-id', requestId);
    res.setHeader('server', 'OuroDB');
    let operation: Operation | 'unknown' = 'unknown';
    let ctx: Ctx | undefined;
    let bytesIn = 0;
    let accessKeyId: string | undefined;
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const rawPath = q < 0 ? rawUrl : rawUrl.slice(0, q);
    res.once('close', () => {
      const seconds = (performance.now() - started) / 1000;
      // A request cut off before its answer was sent is not counted under the status it never got.
      const status = res.writableFinished ? res.statusCode : 499;
      this.metrics.request(operation, status, seconds, bytesIn, ctx?.bytesOut ?? 0);
      this.#log.debug({ event: 's3-request', requestId, operation, method: req.method, path: rawPath.slice(0, 256), status, accessKeyId, bytesIn, bytesOut: ctx?.bytesOut ?? 0, ms: Math.round(seconds * 1000) }, 's3 request');
    });
    try {
      const pairs = parseQuery(q < 0 ? '' : rawUrl.slice(q + 1));
      const { bucket, name } = namesOf(rawPath);
      let key: AccessKey | undefined;
      const auth = await authenticate({ method: req.method ?? 'GET', rawPath, query: pairs, headers: req.headers, body: req }, async (id) => {
        key = await this.catalog.keyById(id);
        return key?.secret;
      }, { region: this.#settings.region });
      accessKeyId = auth.accessKeyId;
      if (!key || key.id !== auth.accessKeyId) throw new S3Error('InvalidAccessKeyId', 403, 'the access key id is not known here');
      const query = new Map<string, string>();
      for (const [k, v] of pairs) if (!query.has(k)) query.set(k, v);
      operation = operationOf(req.method ?? 'GET', bucket, name, query, req.headers);
      if (operation === 'NotImplemented') throw new S3Error('NotImplemented', 501, 'this gateway does not implement that operation (docs/s3.md lists those it does)');
      const body = (async function* () {
        for await (const piece of auth.body) {
          bytesIn += piece.length;
          yield piece;
        }
      })();
      ctx = { db: this.#db, catalog: this.catalog, region: this.#settings.region, replicas: this.#settings.replicas, writer: this.#writer, req, res, bucket, name, query, key, body, contentLength: auth.contentLength, bytesOut: 0 };
      await OPERATIONS[operation](ctx);
    } catch (err) {
      this.#fail(req, res, err, rawPath, requestId, operation);
    }
  }

  #fail(req: http.IncomingMessage, res: http.ServerResponse, err: unknown, rawPath: string, requestId: string, operation: string): void {
    // A failure in the middle of a streamed answer can only cut the connection.
    if (res.headersSent) {
      res.destroy(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    let s3err: S3Error;
    if (err instanceof S3Error) s3err = err;
    else {
      const [status, code] = (err instanceof OuroError && S3_CODE_OF[err.code]) || [500, 'InternalError'];
      s3err = new S3Error(code, status, err instanceof Error ? err.message : String(err), { cause: err });
      this.#log.warn({ event: 's3-error', requestId, operation, err: errorText(err) }, 's3 request failed');
    }
    const headers: Record<string, string> = { ...(s3err as S3Error & { headers?: Record<string, string> }).headers };
    const text = req.method === 'HEAD' ? '' : errorXml(s3err.resource === undefined ? Object.assign(s3err, { resource: safeDecode(rawPath) }) : s3err, requestId);
    // A body the handler did not read is not read now: the connection closes after the answer.
    if (!req.complete) headers.connection = 'close';
    res.writeHead(s3err.status, { ...headers, 'content-type': 'application/xml', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function decode(text: string, what: string): string {
  try {
    return decodeURIComponent(text);
  } catch (err) {
    throw new S3Error('InvalidURI', 400, `${what} is not valid percent-encoded UTF-8`, { cause: err });
  }
}

/**
 * The query string's pairs in wire order, decoded, as S3Request.query wants them. "+" stays "+":
 * SigV4 clients escape a space as %20, and form decoding of "+" would change what they signed.
 */
export function parseQuery(raw: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const part of raw.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    out.push([decode(eq < 0 ? part : part.slice(0, eq), 'a query parameter'), decode(eq < 0 ? '' : part.slice(eq + 1), 'a query parameter')]);
  }
  return out;
}

/** The bucket and object name of a path-style path: /bucket/name (the name may hold "/"). */
export function namesOf(rawPath: string): { bucket: string | undefined; name: string | undefined } {
  const path = rawPath.startsWith('/') ? rawPath.slice(1) : rawPath;
  if (path === '') return { bucket: undefined, name: undefined };
  const slash = path.indexOf('/');
  const bucket = decode(slash < 0 ? path : path.slice(0, slash), 'the bucket name');
  const rest = slash < 0 ? '' : path.slice(slash + 1);
  return { bucket, name: rest === '' ? undefined : decode(rest, 'the object name') };
}

