/**
 * The node's admin HTTP API (docs/node.md, "Admin API"), bound to 127.0.0.1 unless configured
 * otherwise. Reads (`/`, the status page, `/health`, `/metrics`, `/members`, `/status`,
 * `/ledger`, `/series`, `/cluster/pending`, `/cluster/status`, `/replication/blocks`) are open on loopback so that
 * local scrapers and probes need nothing; every other request needs `Authorization: Bearer
 * <token>` with a token whose scope covers it (carrier/admin-tokens.ts: read, data for `/db/`,
 * admin for the rest), and off loopback every request does. The admin token is `admin.token` from
 * the config or the stable one in `<dir>/admin-tokens.json`; it is written with the address to
 * `<dir>/node.run.json` (owner-only), where the `ouro cluster` commands find it.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { BadArgumentError, OuroError } from '../lib/errors.js';
import { writeFileAtomic } from '../lib/fsutil.js';
import { nodeVfs } from '../lib/vfs/vfs.js';
import { DB_ROUTES, dbRoute, serveDb } from './admin-db.js';
import { HttpError, MAX_HEADER_BYTES, onlyFields, readBody, send } from './admin-http.js';
import { SCOPES, type Scope, type Tokens, ensureTokens, grants, rotateToken } from './admin-tokens.js';
import { isLoopback } from './config.js';
import { serveS3Admin } from './s3/admin-routes.js';
import { Catalog } from './s3/catalog.js';
import type { Node } from './node.js';
import { STATUS_PAGE } from './status-page.js';

/** The status page's chart library, served from the installed package (the page works offline). */
const require = createRequire(import.meta.url);
const UI_FILES: Record<string, { file: string; type: string }> = {
  'GET /ui/uplot.js': { file: require.resolve('uplot/dist/uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  'GET /ui/uplot.css': { file: require.resolve('uplot/dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

export const RUN_FILE = 'node.run.json';

export interface RunInfo {
  pid: number;
  peerId: string;
  addresses: string[];
  admin: string;
  /** The admin token (scope admin). */
  token: string;
  /** The S3 gateway's address, when it runs (docs/s3.md). */
  s3?: string;
}

const STATUS_OF: Record<string, number> = {
  OURO_BAD_ARGUMENT: 400,
  OURO_NOT_FOUND: 404,
  OURO_REFUSED: 409,
  OURO_CONFLICT: 409,
  OURO_UNAVAILABLE: 503,
  OURO_TIMEOUT: 504,
};

/** The scope a request needs: GETs outside `/db/` are reads, `/db/` is data, the rest admin. */
function scopeNeeded(method: string | undefined, pathname: string): Scope {
  if (pathname.startsWith('/db/')) return 'data';
  // Who may reach which bucket is the admin's business, reads included.
  if (pathname.startsWith('/s3/')) return 'admin';
  return method === 'GET' ? 'read' : 'admin';
}

export class AdminServer {
  readonly #node: Node;
  readonly #server: http.Server;
  /** SHA-256 of each scope's token: compared in constant time whatever the token's length. */
  #tokens = new Map<Scope, Buffer>();
  #adminToken = '';
  readonly #open: boolean;
  #url = '';
  /** The S3 catalog of the node's database (the /s3/ routes), and the gateway's address when it runs. */
  readonly #s3: { catalog: Catalog | undefined; url: string | undefined };

  private constructor(node: Node, s3: { url: string } | undefined) {
    this.#node = node;
    this.#s3 = { catalog: node.db ? new Catalog(node.db, { replicas: node.config.s3.replicas }) : undefined, url: s3?.url };
    this.#open = isLoopback(node.config.admin.host);
    // Request lines and headers over Node's default 16 KiB got a 431 with no body; the limit is
    // raised so that OuroDB's own limits (admin-http.ts) answer first, and beyond it the
    // clientError handler answers in the JSON error form.
    this.#server = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES }, (req, res) => void this.#serve(req, res));
    this.#server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      if (!socket.writable) return socket.destroy();
      const overflow = err.code === 'HPE_HEADER_OVERFLOW';
      const text = JSON.stringify({ error: { code: 'OURO_BAD_ARGUMENT', message: overflow ? `request line and headers over ${MAX_HEADER_BYTES} bytes` : 'malformed HTTP request' } });
      socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
    });
  }

  static async start(node: Node, options: { s3?: { url: string } | undefined } = {}): Promise<AdminServer> {
    const admin = new AdminServer(node, options.s3);
    // A directory prepared before admin-tokens.json existed gets its admin token now, once.
    admin.#useTokens(await ensureTokens(node.dir));
    if (node.db) node.metrics.dbRoutes(Object.entries(DB_ROUTES).map(([route, r]) => ({ route, method: r.method })));
    await new Promise<void>((resolve, reject) => {
      admin.#server.once('error', reject);
      admin.#server.listen(node.config.admin.port, node.config.admin.host, () => resolve());
    });
    const a = admin.#server.address() as AddressInfo;
    admin.#url = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    await admin.#writeRunInfo();
    return admin;
  }

  #useTokens(tokens: Tokens): void {
    const all: Tokens = { ...tokens, ...(this.#node.config.admin.token !== null ? { admin: this.#node.config.admin.token } : {}) };
    this.#adminToken = all.admin!;
    this.#tokens = new Map(SCOPES.filter((s) => all[s] !== undefined).map((s) => [s, sha256(all[s]!)]));
  }

  async #writeRunInfo(): Promise<void> {
    const node = this.#node;
    const info: RunInfo = { pid: process.pid, peerId: node.peerId, addresses: node.carrier.addresses, admin: this.#url, token: this.#adminToken, ...(this.#s3.url !== undefined ? { s3: this.#s3.url } : {}) };
    await writeFileAtomic(nodeVfs, path.join(node.dir, RUN_FILE), JSON.stringify(info, null, 2) + '\n');
    await fs.chmod(path.join(node.dir, RUN_FILE), 0o600);
  }

  /**
   * Replaces the token of `scope` (`ouro node token rotate`): saved first, then in force here at
   * once, the old one refused from the next request; an admin token also goes to node.run.json.
   */
  async rotate(scope: Scope): Promise<string> {
    const { token, tokens } = await rotateToken(this.#node.dir, scope, this.#node.config.admin.token);
    this.#useTokens(tokens);
    if (scope === 'admin') await this.#writeRunInfo();
    return token;
  }

  get url(): string {
    return this.#url;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
    await fs.rm(path.join(this.#node.dir, RUN_FILE), { force: true });
  }

  /** The widest scope of the token the request carries, or undefined. Only `Bearer <token>` counts. */
  #scopeOf(req: http.IncomingMessage): Scope | undefined {
    const m = /^Bearer ([^\s]+)$/.exec(req.headers.authorization ?? '');
    if (!m) return undefined;
    const given = sha256(m[1]!);
    let found: Scope | undefined;
    // Every scope is compared (no early exit), so the time taken does not say which one matched.
    for (const [scope, want] of this.#tokens) if (crypto.timingSafeEqual(given, want)) found = scope;
    return found;
  }

  async #serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const route = `${req.method} ${url.pathname}`;
    const db = url.pathname.startsWith('/db/') ? { route: dbRoute(url.pathname) ?? 'other', started: performance.now() } : undefined;
    if (db) res.once('close', () => this.#node.metrics.dbRequest(db.route, req.method ?? '', res.statusCode, (performance.now() - db.started) / 1000));
    try {
      // Database routes return plaintext: they need a token even for reads on loopback.
      const need = scopeNeeded(req.method, url.pathname);
      if (!(need === 'read' && this.#open)) {
        const have = this.#scopeOf(req);
        if (have === undefined) throw new HttpError(401, 'UNAUTHORIZED', `this request needs a token: Authorization: Bearer <token> (scope ${need} or wider)`);
        if (!grants(have, need)) throw new HttpError(403, 'FORBIDDEN', `this token's scope is ${have}; ${route} needs ${need} or wider`);
      }
      const node = this.#node;
      if (await serveDb(node.db, req.url ?? '/', url, req, res, () => readBody(req))) return;
      const s3 = await serveS3Admin(this.#s3.catalog, route, () => readBody(req));
      if (s3 !== undefined) return send(res, 200, s3);
      const body = req.method === 'POST' ? await readBody(req) : {};
      const peerArg = () => {
        if (typeof body.peerId !== 'string' || body.peerId === '') throw new BadArgumentError('body must name a peerId');
        return body.peerId;
      };
      const asset = UI_FILES[route];
      if (asset) {
        const body = await fs.readFile(asset.file);
        res.writeHead(200, { 'content-type': asset.type, 'content-length': body.length, 'cache-control': 'max-age=3600' });
        res.end(body);
        return;
      }
      switch (route) {
        case 'GET /':
          res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(STATUS_PAGE) });
          res.end(STATUS_PAGE);
          return;
        case 'GET /ledger': {
          // ?at=<observer>:<n>,... gives the ledger of that cut of the events (the same on every member holding them).
          const at = url.searchParams.get('at');
          return send(res, 200, at === null ? node.ledger.view() : await node.ledger.viewAt(parseCut(at)));
        }
        case 'GET /series':
          return send(res, 200, { sampleMs: node.config.series.sampleMs, samples: node.series.samples(Number(url.searchParams.get('since') ?? 0) || 0) });
        case 'POST /cluster/quarantine/clear':
          return send(res, 200, { cleared: peerArg(), ledger: await node.clearQuarantine(peerArg()) });
        case 'POST /proofs/round':
          await node.proofs.kick();
          return send(res, 200, node.metrics.totals().proofs);
        case 'POST /ledger/sync':
          await node.syncLedger();
          return send(res, 200, { events: node.ledger.view().events });
        case 'GET /health':
          return send(res, node.role === 'member' || node.role === 'joining' ? 200 : 503, { status: node.role === 'member' ? 'ok' : node.role, peerId: node.peerId });
        case 'GET /metrics':
          res.writeHead(200, { 'content-type': node.metrics.registry.contentType });
          res.end(await node.metrics.registry.metrics());
          return;
        case 'GET /members':
          return send(res, 200, { clusterId: node.clusterId ?? null, epoch: node.list?.epoch ?? null, signer: node.list?.signer ?? null, members: node.memberViews() });
        case 'GET /status':
          return send(res, 200, await node.status());
        case 'GET /cluster/status': {
          // Every member's own /status, asked over the carrier; one that does not answer within the bound gets an error in its place.
          const given = url.searchParams.get('timeoutMs');
          const timeoutMs = given === null ? undefined : Number(given);
          if (timeoutMs !== undefined && !(Number.isInteger(timeoutMs) && timeoutMs > 0 && timeoutMs <= node.requestTimeoutMs)) throw new BadArgumentError(`timeoutMs must be an integer from 1 to ${node.requestTimeoutMs}`);
          return send(res, 200, await node.cluster.gather(timeoutMs));
        }
        case 'GET /cluster/pending':
          return send(res, 200, { pending: node.pending() });
        case 'POST /cluster/approve':
          return send(res, 200, { approved: peerArg(), epoch: (await node.approve(peerArg())).epoch });
        case 'POST /cluster/reject':
          await node.reject(peerArg());
          return send(res, 200, { rejected: peerArg() });
        case 'POST /cluster/revoke':
          return send(res, 200, { revoked: peerArg(), epoch: (await node.revoke(peerArg())).epoch });
        case 'POST /cluster/token': {
          const ttlSec = body.ttlSec;
          if (typeof ttlSec !== 'number') throw new BadArgumentError('body must give ttlSec');
          return send(res, 200, await node.createToken(ttlSec * 1000));
        }
        case 'GET /replication/blocks':
          return send(res, 200, { blocks: await node.replication.held() });
        case 'POST /replication/repair':
          node.replication.kick({ scrub: true });
          await node.replication.idle();
          return send(res, 200, node.replication.progress);
        case 'POST /cluster/drain':
          await node.drain();
          return send(res, 200, { draining: true, drain: node.replication.drainProgress });
        case 'POST /cluster/replication-factor': {
          if (typeof body.factor !== 'number') throw new BadArgumentError('body must give factor');
          return send(res, 200, { factor: body.factor, epoch: (await node.setReplicationFactor(body.factor)).epoch });
        }
        case 'POST /cluster/redundancy': {
          const ec = body.ec as { k?: unknown; m?: unknown } | undefined;
          if (typeof body.replicas === 'number' && ec === undefined) return send(res, 200, { replicas: body.replicas, epoch: (await node.setRedundancy({ replicas: body.replicas })).epoch });
          if (ec && typeof ec === 'object' && typeof ec.k === 'number' && typeof ec.m === 'number' && body.replicas === undefined) return send(res, 200, { ec: { k: ec.k, m: ec.m }, epoch: (await node.setRedundancy({ ec: { k: ec.k, m: ec.m } })).epoch });
          throw new BadArgumentError('body must give replicas, or ec {k, m}');
        }
        case 'POST /cluster/leave':
          await node.leave();
          return send(res, 200, { left: true });
        case 'POST /admin/token/rotate': {
          onlyFields(body, ['scope'], route);
          const scope = body.scope ?? 'admin';
          if (!(SCOPES as readonly unknown[]).includes(scope)) throw new BadArgumentError(`scope must be one of ${SCOPES.join(', ')}`);
          return send(res, 200, { scope, token: await this.rotate(scope as Scope) });
        }
        default:
          throw new HttpError(404, 'NOT_FOUND', `no route ${route}`);
      }
    } catch (err) {
      // A failure in the middle of a streamed answer can only cut the connection.
      if (res.headersSent) {
        res.destroy(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      if (err instanceof HttpError) return send(res, err.status, { error: { code: err.code, message: err.message } }, err.headers);
      const code = err instanceof OuroError ? err.code : 'OURO_IO_ERROR';
      this.#node.log.warn({ event: 'admin-error', route, code, err: err instanceof Error ? err.message : String(err) }, 'admin request failed');
      return send(res, STATUS_OF[code] ?? 500, { error: { code, message: err instanceof Error ? err.message : String(err) } });
    }
  }
}

function parseCut(text: string): Record<string, number> {
  const cut: Record<string, number> = {};
  for (const part of text.split(',').filter(Boolean)) {
    const m = /^([1-9A-HJ-NP-Za-km-z]+):(\d+)$/.exec(part);
    if (!m) throw new BadArgumentError(`ledger cut: ${part} is not <peer id>:<event number>`);
    cut[m[1]!] = Number(m[2]);
  }
  return cut;
}

function sha256(text: string): Buffer {
  return crypto.createHash('sha256').update(text).digest();
}

/** Reads `<dir>/node.run.json` of a running node (for the `ouro cluster` commands). */
export async function readRunInfo(dir: string): Promise<RunInfo | undefined> {
  try {
    return JSON.parse(await fs.readFile(path.join(dir, RUN_FILE), 'utf8')) as RunInfo;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
