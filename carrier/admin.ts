/**
 * The node's admin HTTP API (docs/node.md, "Admin API"), bound to 127.0.0.1 unless configured
 * otherwise. Reads (`/`, the status page, `/health`, `/metrics`, `/members`, `/status`,
 * `/ledger`, `/series`, `/cluster/pending`) are open on
 * loopback so that local scrapers and probes need nothing; every change (`POST /cluster/...`)
 * needs the bearer token, and off loopback every request does. The token is the configured one,
 * or one made at start and written with the address to `<dir>/node.run.json` (owner-only), where
 * the `ouro cluster` commands find it.
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
import { serveDb } from './admin-db.js';
import { isLoopback } from './config.js';
import type { Node } from './node.js';
import { STATUS_PAGE } from './status-page.js';

/** The status page's chart library, served from the installed package (the page works offline). */
const require = createRequire(import.meta.url);
const UI_FILES: Record<string, { file: string; type: string }> = {
  'GET /ui/uplot.js': { file: require.resolve('uplot/dist/uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  'GET /ui/uplot.css': { file: require.resolve('uplot/dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

export const RUN_FILE = 'node.run.json';
const MAX_BODY_BYTES = 64 * 1024;

export interface RunInfo {
  pid: number;
  peerId: string;
  addresses: string[];
  admin: string;
  token: string;
}

const STATUS_OF: Record<string, number> = {
  OURO_BAD_ARGUMENT: 400,
  OURO_NOT_FOUND: 404,
  OURO_REFUSED: 409,
  OURO_CONFLICT: 409,
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class AdminServer {
  readonly #node: Node;
  readonly #server: http.Server;
  readonly #token: string;
  readonly #open: boolean;
  #url = '';

  private constructor(node: Node) {
    this.#node = node;
    this.#token = node.config.admin.token ?? crypto.randomBytes(24).toString('base64url');
    this.#open = isLoopback(node.config.admin.host);
    this.#server = http.createServer((req, res) => void this.#serve(req, res));
  }

  static async start(node: Node): Promise<AdminServer> {
    const admin = new AdminServer(node);
    await new Promise<void>((resolve, reject) => {
      admin.#server.once('error', reject);
      admin.#server.listen(node.config.admin.port, node.config.admin.host, () => resolve());
    });
    const a = admin.#server.address() as AddressInfo;
    admin.#url = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    const info: RunInfo = { pid: process.pid, peerId: node.peerId, addresses: node.carrier.addresses, admin: admin.#url, token: admin.#token };
    await writeFileAtomic(nodeVfs, path.join(node.dir, RUN_FILE), JSON.stringify(info, null, 2) + '\n');
    await fs.chmod(path.join(node.dir, RUN_FILE), 0o600);
    return admin;
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

  #authorized(req: http.IncomingMessage): boolean {
    const given = Buffer.from((req.headers.authorization ?? '').replace(/^Bearer /, ''));
    const want = Buffer.from(this.#token);
    return given.length === want.length && crypto.timingSafeEqual(given, want);
  }

  async #serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const route = `${req.method} ${url.pathname}`;
    try {
      // Database routes return plaintext: they need the token even for reads on loopback.
      const isRead = req.method === 'GET' && !url.pathname.startsWith('/db/');
      if (!(isRead && this.#open) && !this.#authorized(req)) throw new HttpError(401, 'this request needs the admin token (Authorization: Bearer <token>)');
      const node = this.#node;
      if (await serveDb(node.db, route, url, req, res, () => readBody(req), send)) return;
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
        case 'POST /cluster/leave':
          await node.leave();
          return send(res, 200, { left: true });
        default:
          throw new HttpError(404, `no route ${route}`);
      }
    } catch (err) {
      // A failure in the middle of a streamed answer can only cut the connection.
      if (res.headersSent) {
        res.destroy(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      if (err instanceof HttpError) return send(res, err.status, { error: { code: err.status === 401 ? 'UNAUTHORIZED' : 'NOT_FOUND', message: err.message } });
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

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const part of req as AsyncIterable<Buffer>) {
    n += part.length;
    if (n > MAX_BODY_BYTES) throw new BadArgumentError(`request body over ${MAX_BODY_BYTES} bytes`);
    parts.push(part);
  }
  if (n === 0) return {};
  try {
    const v = JSON.parse(Buffer.concat(parts).toString('utf8')) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch (err) {
    throw new BadArgumentError('request body must be a JSON object', { cause: err });
  }
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
