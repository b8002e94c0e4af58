/**
 * The database routes of the admin API (docs/node.md, "Database over the admin API"): how an
 * operator or a test puts and reads data on a running node whose database the node owns (the
 * database's LevelDB lock keeps other processes out while it runs). Every route needs the admin
 * token, reads included: they return plaintext.
 *
 *   PUT  /db/objects[?key=K&parent=H&meta=JSON]  body: the value (streamed)  -> {hash, size}
 *   GET  /db/objects/<hash>             -> the value (streamed)
 *   GET  /db/value?key=K                -> the value of the key's newest head
 *   GET  /db/heads?key=K                -> {heads}
 *   GET  /db/history?key=K              -> {versions}
 *   GET  /db/export                     -> {objects: [{hash, key, parent, prev, meta, created, size, type, sha256}]}
 *   GET  /db/stats                      -> db.stats()
 *   POST /db/flush {replicas?}          -> {} once sealed (and held by `replicas` members)
 *   POST /db/check {readData?, sample?} -> JSON lines: {progress} at most once a second, then {report} or {error}
 */
import crypto from 'node:crypto';
import type http from 'node:http';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import type { OuroDB } from '../lib/db.js';
import { BadArgumentError, NotFoundError, OuroError } from '../lib/errors.js';

/** How often a streamed check reports its progress. */
const CHECK_PROGRESS_MS = 1000;

type Send = (res: http.ServerResponse, status: number, body: unknown) => void;

/** Serves `route` if it is a database route; false if it is not one. */
export async function serveDb(db: OuroDB | undefined, route: string, url: URL, req: http.IncomingMessage, res: http.ServerResponse, body: () => Promise<Record<string, unknown>>, send: Send): Promise<boolean> {
  if (!url.pathname.startsWith('/db/')) return false;
  if (!db) throw new NotFoundError('this node runs without a database');
  const key = () => {
    const k = url.searchParams.get('key');
    if (k === null) throw new BadArgumentError('name the key: ?key=K');
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
  const objectHash = /^\/db\/objects\/([0-9a-f]{64})$/.exec(url.pathname)?.[1];
  if (req.method === 'GET' && objectHash) {
    await stream(db.stream(objectHash));
    return true;
  }
  switch (route) {
    case 'PUT /db/objects': {
      const k = url.searchParams.get('key');
      const parent = url.searchParams.get('parent');
      const metaText = url.searchParams.get('meta');
      let meta: Record<string, string> | undefined;
      try {
        meta = metaText === null ? undefined : (JSON.parse(metaText) as Record<string, string>);
      } catch (err) {
        throw new BadArgumentError('meta must be a JSON object of strings', { cause: err });
      }
      send(res, 200, await db.put(req as AsyncIterable<Uint8Array>, { ...(k !== null ? { key: k } : {}), ...(parent !== null ? { parent } : {}), ...(meta ? { meta } : {}) }));
      return true;
    }
    case 'GET /db/value': {
      const value = await db.getByKey(key());
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': value.byteLength });
      res.end(value);
      return true;
    }
    case 'GET /db/heads':
      send(res, 200, { heads: await db.heads(key()) });
      return true;
    case 'GET /db/history': {
      const versions = [];
      for await (const v of db.history(key())) versions.push(v);
      send(res, 200, { versions });
      return true;
    }
    case 'GET /db/export': {
      const objects = [];
      for await (const o of db.objects()) {
        const h = crypto.createHash('sha256');
        for await (const part of o.data()) h.update(part);
        objects.push({ hash: o.hash, key: o.key, parent: o.parent, prev: o.prev, meta: o.meta, created: o.created, size: o.size, type: o.type, sha256: h.digest('hex') });
      }
      send(res, 200, { objects });
      return true;
    }
    case 'GET /db/stats':
      send(res, 200, await db.stats());
      return true;
    case 'POST /db/flush': {
      const b = await body();
      const replicas = b.replicas === undefined ? 1 : b.replicas;
      if (typeof replicas !== 'number') throw new BadArgumentError('replicas must be a number');
      await db.flush({ replicas });
      send(res, 200, { flushed: true, replicas });
      return true;
    }
    case 'POST /db/purge': {
      const b = await body();
      if (typeof b.key !== 'string') throw new BadArgumentError('body must name a key');
      send(res, 200, await db.purge(b.key));
      return true;
    }
    case 'POST /db/gc': {
      const b = await body();
      if (b.threshold !== undefined && typeof b.threshold !== 'number') throw new BadArgumentError('threshold must be a number');
      send(res, 200, await db.gc(b.threshold === undefined ? {} : { threshold: b.threshold }));
      return true;
    }
    case 'POST /db/check': {
      // `ouro check NODEDIR` of a running node: the node holds the database's lock, so the check
      // runs here. A check with --read-data reads every entry and may outlast an HTTP client's
      // wait for headers, so the answer starts at once and is JSON lines: progress at most once a
      // second, then the report (or the error) as the last line.
      const b = await body();
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
    default:
      return false;
  }
}
