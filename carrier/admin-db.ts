/**
 * The database routes of the admin API (docs/node.md, "Database over the admin API"): how an
 * operator or a test puts and reads data on a running node whose database the node owns (the
 * database's LevelDB lock keeps other processes out while it runs). Every route needs a token of
 * scope `data` or `admin`, reads included: they return plaintext.
 *
 *   PUT  /db/objects[?key=K&parent=H&meta=JSON]  body: the value (streamed)  -> {hash, size}
 *        (meta may come in the x-ouro-meta header instead: JSON, ASCII)
 *   GET  /db/objects/<hash>             -> the value (streamed)
 *   GET  /db/value?key=K                -> the value of the key's newest head
 *   GET  /db/heads?key=K                -> {heads}
 *   GET  /db/history?key=K              -> {versions}
 *   GET  /db/keys[?prefix=P&after=K&limit=N&deleted=true]  -> {keys: [{key, hash, heads, deleted}], next}
 *   GET  /db/export                     -> {objects: [{hash, key, parent, prev, meta, created, size, type, sha256}]}
 *   GET  /db/stats                      -> db.stats()
 *   POST /db/delete {key, ifHead?}      -> {key, hash}: a tombstone version
 *   POST /db/flush {replicas?, shards?, timeoutMs?} -> {flushed, replicas | shards} once sealed (and held by
 *                       `replicas` members, or at ec K+M with `shards` shards of each block durable)
 *   POST /db/purge {key}                -> {versions}
 *   POST /db/gc {threshold?, pace?}     -> the gc report
 *   POST /db/check {readData?, sample?} -> JSON lines: {progress} at most once a second, then {report} or {error}
 *
 * Every parameter and body field is checked before anything is stored (carrier/admin-http.ts):
 * what a route does not take, or takes once, or cannot decode is a 400 naming it.
 */
import crypto from 'node:crypto';
import type http from 'node:http';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import type { OuroDB } from '../lib/db.js';
import { BadArgumentError, NotFoundError, OuroError, TimeoutError } from '../lib/errors.js';
import { keyBytes, prefixBytes } from '../lib/keyname.js';
import { HttpError, onlyFields, parseQuery, send } from './admin-http.js';

/** How often a streamed check reports its progress. */
const CHECK_PROGRESS_MS = 1000;

/** The largest metadata taken, as the UTF-8 bytes of its JSON (in the query string or the header). */
export const MAX_META_BYTES = 16 * 1024;
/** The header that carries metadata when it does not fit, or should not sit, in the query string. */
export const META_HEADER = 'x-ouro-meta';
export const DEFAULT_FLUSH_TIMEOUT_MS = 60_000;
const MAX_FLUSH_TIMEOUT_MS = 24 * 3600_000;
export const DEFAULT_KEYS_LIMIT = 1000;
const MAX_KEYS_LIMIT = 10_000;

/** Each route (its path, `<hash>` for an object's) with its one method and what it is for. */
export const DB_ROUTES = {
  '/db/objects': { method: 'PUT', what: 'stores the request body as a value' },
  '/db/objects/<hash>': { method: 'GET', what: 'reads an object (objects are immutable: POST /db/delete {key} writes a tombstone for a key)' },
  '/db/value': { method: 'GET', what: "reads a key's newest value" },
  '/db/heads': { method: 'GET', what: "lists a key's heads" },
  '/db/history': { method: 'GET', what: "lists a key's versions" },
  '/db/keys': { method: 'GET', what: 'lists keys a page at a time' },
  '/db/export': { method: 'GET', what: 'lists every object' },
  '/db/stats': { method: 'GET', what: "answers the database's figures" },
  '/db/delete': { method: 'POST', what: 'writes a tombstone version of a key' },
  '/db/flush': { method: 'POST', what: 'seals, and waits for replicas' },
  '/db/purge': { method: 'POST', what: 'forgets a key and its versions' },
  '/db/gc': { method: 'POST', what: 'reclaims space' },
  '/db/check': { method: 'POST', what: 'checks the database, answering in JSON lines' },
} as const;
export type DbRoute = keyof typeof DB_ROUTES;

/** The route a `/db/` path names (its label in the metrics), or undefined. */
export function dbRoute(pathname: string): DbRoute | undefined {
  if (pathname.startsWith('/db/objects/')) return '/db/objects/<hash>';
  return Object.hasOwn(DB_ROUTES, pathname) ? (pathname as DbRoute) : undefined;
}

type Send = typeof send;

/** Serves `req` if its path is a database route (else false); `rawUrl` is the URL as sent. */
export async function serveDb(db: OuroDB | undefined, rawUrl: string, url: URL, req: http.IncomingMessage, res: http.ServerResponse, body: () => Promise<Record<string, unknown>>, sendJson: Send = send): Promise<boolean> {
  if (!url.pathname.startsWith('/db/')) return false;
  const route = dbRoute(url.pathname);
  const name = `${req.method} ${url.pathname}`;
  if (!route) throw new HttpError(404, 'NOT_FOUND', `no route ${name}; the database routes are ${Object.keys(DB_ROUTES).join(', ')} (docs/node.md)`);
  const { method, what } = DB_ROUTES[route];
  if (req.method !== method) throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${name}: ${route} takes ${method} (it ${what})`, { allow: method });
  if (!db) throw new NotFoundError('this node runs without a database');
  const query = (allowed: readonly string[]) => parseQuery(rawUrl, allowed, `${method} ${route}`);
  const fields = async (allowed: readonly string[]) => {
    const b = await body();
    onlyFields(b, allowed, `${method} ${route}`);
    return b;
  };
  const keyOf = (q: Map<string, string>) => {
    const k = q.get('key');
    if (k === undefined) throw new BadArgumentError('name the key: ?key=K');
    keyBytes(k);
    return k;
  };
  const stream = async (source: AsyncIterable<Uint8Array>) => {
    // The first piece is read before the headers go out, so a missing object is still a 404.
    const it = source[Symbol.asyncIterator]();
    const first = await it.next();
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    await pipeline(
      Readable.from(
        (async function* () {
          if (!first.done) yield first.value;
          for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
        })(),
      ),
      res,
    );
  };
  switch (route) {
    case '/db/objects/<hash>': {
      query([]);
      const hash = url.pathname.slice('/db/objects/'.length);
      if (!/^[0-9a-f]{64}$/.test(hash)) throw new BadArgumentError(`not an object hash: ${JSON.stringify(hash.slice(0, 80))} (an object is named by 64 lowercase hex digits)`);
      await stream(db.stream(hash));
      return true;
    }
    case '/db/objects': {
      const q = query(['key', 'parent', 'meta']);
      const k = q.get('key');
      if (k !== undefined) keyBytes(k);
      const parent = q.get('parent');
      if (parent !== undefined && !/^[0-9a-f]{64}$/.test(parent)) throw new BadArgumentError('parent must be an object hash (64 lowercase hex digits)');
      const meta = metaOf(q.get('meta'), req.headers[META_HEADER]);
      sendJson(res, 200, await db.put(req as AsyncIterable<Uint8Array>, { ...(k !== undefined ? { key: k } : {}), ...(parent !== undefined ? { parent } : {}), ...(meta ? { meta } : {}) }));
      return true;
    }
    case '/db/value': {
      const value = await db.getByKey(keyOf(query(['key'])));
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': value.byteLength });
      res.end(value);
      return true;
    }
    case '/db/heads':
      sendJson(res, 200, { heads: await db.heads(keyOf(query(['key']))) });
      return true;
    case '/db/history': {
      const key = keyOf(query(['key']));
      const versions = [];
      for await (const v of db.history(key)) versions.push(v);
      sendJson(res, 200, { versions });
      return true;
    }
    case '/db/keys': {
      const q = query(['prefix', 'after', 'limit', 'deleted']);
      const prefix = q.get('prefix') ?? '';
      prefixBytes(prefix);
      const after = q.get('after');
      if (after !== undefined) keyBytes(after, 'after');
      const limitText = q.get('limit') ?? String(DEFAULT_KEYS_LIMIT);
      const limit = /^\d{1,9}$/.test(limitText) ? Number(limitText) : Number.NaN;
      if (!(limit >= 1 && limit <= MAX_KEYS_LIMIT)) throw new BadArgumentError(`limit must be a whole number from 1 to ${MAX_KEYS_LIMIT}, not ${limitText}`);
      const deleted = q.get('deleted') ?? 'false';
      if (deleted !== 'true' && deleted !== 'false') throw new BadArgumentError(`deleted must be true or false, not ${deleted}`);
      // One more than the page: `next` is null exactly when nothing follows.
      const keys = [];
      for await (const e of db.list({ prefix, ...(after !== undefined ? { after } : {}), limit: limit + 1, includeDeleted: deleted === 'true' })) keys.push(e);
      const more = keys.length > limit;
      if (more) keys.pop();
      sendJson(res, 200, { keys, next: more ? keys[keys.length - 1]!.key : null });
      return true;
    }
    case '/db/export': {
      query([]);
      const objects = [];
      for await (const o of db.objects()) {
        const h = crypto.createHash('sha256');
        for await (const part of o.data()) h.update(part);
        objects.push({ hash: o.hash, key: o.key, parent: o.parent, prev: o.prev, meta: o.meta, created: o.created, size: o.size, type: o.type, sha256: h.digest('hex') });
      }
      sendJson(res, 200, { objects });
      return true;
    }
    case '/db/stats':
      query([]);
      sendJson(res, 200, await db.stats());
      return true;
    case '/db/delete': {
      query([]);
      const b = await fields(['key', 'ifHead']);
      if (typeof b.key !== 'string') throw new BadArgumentError('body must name a key');
      const ifHead = b.ifHead;
      if (ifHead !== undefined && ifHead !== null && typeof ifHead !== 'string' && !(Array.isArray(ifHead) && ifHead.every((h) => typeof h === 'string'))) throw new BadArgumentError('ifHead must be a hash, a list of hashes, or null');
      const r = await db.delete(b.key, ifHead === undefined ? {} : { ifHead: ifHead as string | string[] | null });
      sendJson(res, 200, { key: b.key, hash: r.hash });
      return true;
    }
    case '/db/flush': {
      query([]);
      const b = await fields(['replicas', 'shards', 'timeoutMs']);
      const replicas = b.replicas ?? 1;
      if (!Number.isSafeInteger(replicas) || (replicas as number) < 1) throw new BadArgumentError('replicas must be a whole number, 1 or more');
      const shards = b.shards;
      if (shards !== undefined && !Number.isSafeInteger(shards)) throw new BadArgumentError('shards must be a whole number');
      const timeoutMs = b.timeoutMs ?? DEFAULT_FLUSH_TIMEOUT_MS;
      if (!Number.isSafeInteger(timeoutMs) || (timeoutMs as number) < 1 || (timeoutMs as number) > MAX_FLUSH_TIMEOUT_MS) throw new BadArgumentError(`timeoutMs must be a whole number of milliseconds from 1 to ${MAX_FLUSH_TIMEOUT_MS}`);
      // A flush waiting for members that do not come answers within its time limit; a client
      // that hangs up stops the wait too (there is no one left to answer).
      const gone = new AbortController();
      res.once('close', () => gone.abort(new Error('the client closed the connection')));
      const timeout = AbortSignal.timeout(timeoutMs as number);
      try {
        const signal = AbortSignal.any([timeout, gone.signal]);
        await db.flush(shards === undefined ? { replicas: replicas as number, signal } : { shards: shards as number, signal });
      } catch (err) {
        const what = shards === undefined ? `held by ${String(replicas)} members` : `held as ${String(shards)} shards`;
        if (timeout.aborted && err === timeout.reason) throw new TimeoutError(`flush: the blocks sealed so far were not ${what} within ${String(timeoutMs)} ms (they stay sealed; replication goes on)`, { cause: err });
        throw err;
      }
      sendJson(res, 200, shards === undefined ? { flushed: true, replicas } : { flushed: true, shards });
      return true;
    }
    case '/db/purge': {
      query([]);
      const b = await fields(['key']);
      if (typeof b.key !== 'string') throw new BadArgumentError('body must name a key');
      sendJson(res, 200, await db.purge(b.key));
      return true;
    }
    case '/db/gc': {
      query([]);
      const b = await fields(['threshold', 'pace']);
      if (b.threshold !== undefined && typeof b.threshold !== 'number') throw new BadArgumentError('threshold must be a number');
      if (b.pace !== undefined && typeof b.pace !== 'number') throw new BadArgumentError('pace must be a number');
      // A node's gc runs beside its writers: `pace` is its share of the time while puts run (GcOptions.pace).
      sendJson(res, 200, await db.gc({ ...(b.threshold === undefined ? {} : { threshold: b.threshold }), ...(b.pace === undefined ? {} : { pace: b.pace }) }));
      return true;
    }
    case '/db/check': {
      // `ouro check NODEDIR` of a running node: the node holds the database's lock, so the check
      // runs here. A check with --read-data reads every entry and may outlast an HTTP client's
      // wait for headers, so the answer starts at once and is JSON lines: progress at most once a
      // second, then the report (or the error) as the last line.
      query([]);
      const b = await fields(['readData', 'sample']);
      if (b.readData !== undefined && typeof b.readData !== 'boolean') throw new BadArgumentError('readData must be true or false');
      const sample = b.sample === undefined ? 1 : b.sample;
      if (typeof sample !== 'number' || !(sample >= 0 && sample <= 1)) throw new BadArgumentError('sample must be a share, 0 to 1');
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      let last = Date.now();
      const line = (v: unknown) => `${JSON.stringify(v)}\n`;
      try {
        const report = await db.check({
          readData: b.readData === true,
          sample,
          onProgress: (entries, bytes) => {
            if (Date.now() - last < CHECK_PROGRESS_MS) return;
            last = Date.now();
            res.write(line({ progress: { entries, bytes } }));
          },
        });
        res.end(line({ report }));
      } catch (err) {
        res.end(line({ error: { code: err instanceof OuroError ? err.code : 'OURO_IO_ERROR', message: err instanceof Error ? err.message : String(err) } }));
      }
      return true;
    }
  }
}

/**
 * Metadata from the query string's `meta` or the x-ouro-meta header (one of them): a JSON object
 * of strings, at most MAX_META_BYTES. The header must be ASCII: HTTP headers have no defined
 * encoding, so other characters are written as JSON's \u escapes (JSON.stringify's output can be
 * made so; the query string is percent-encoded UTF-8 instead).
 */
function metaOf(fromQuery: string | undefined, fromHeader: string | string[] | undefined): Record<string, string> | undefined {
  if (Array.isArray(fromHeader)) throw new BadArgumentError(`the ${META_HEADER} header is given more than once`);
  if (fromQuery !== undefined && fromHeader !== undefined) throw new BadArgumentError(`give meta once: in the query string or the ${META_HEADER} header, not both`);
  const text = fromQuery ?? fromHeader;
  if (text === undefined) return undefined;
  if (fromHeader !== undefined && !/^[\x20-\x7e]*$/.test(fromHeader)) throw new BadArgumentError(`the ${META_HEADER} header must be ASCII: write other characters as JSON \\u escapes`);
  if (Buffer.byteLength(text) > MAX_META_BYTES) throw new BadArgumentError(`meta is ${Buffer.byteLength(text)} bytes of JSON; the maximum is ${MAX_META_BYTES}`);
  let meta: unknown;
  try {
    meta = JSON.parse(text);
  } catch (err) {
    throw new BadArgumentError('meta must be a JSON object whose values are strings', { cause: err });
  }
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) throw new BadArgumentError('meta must be a JSON object whose values are strings');
  for (const [k, v] of Object.entries(meta)) if (typeof v !== 'string') throw new BadArgumentError(`meta.${k} must be a string, not ${v === null ? 'null' : typeof v} (metadata values are strings)`);
  return meta as Record<string, string>;
}
