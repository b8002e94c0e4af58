/**
 * The admin API in this process (issue 30, "An operator's day"): the `/db/` routes refuse what
 * they cannot take (unknown, repeated, badly encoded or over-limit input) with a 400 in the JSON
 * error form and store nothing; metadata travels in the query or the x-ouro-meta header; keys
 * are listed a page at a time and deleted with a tombstone; the admin token is made once and kept,
 * only `Bearer` counts, scoped tokens grant what their scope says, and rotation takes effect at
 * once; `/metrics` counts the `/db/` requests.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AdminServer, type RunInfo } from '../carrier/admin.js';
import { TOKENS_FILE } from '../carrier/admin-tokens.js';
import { Node } from '../carrier/node.js';
import { OuroDB } from '../lib/index.js';
import { tempDir } from './helpers.js';

const stops: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

interface Served {
  dir: string;
  node: Node;
  db: OuroDB;
  admin: AdminServer;
  url: string;
  token: string;
}

/** A founder with its database and the admin API, in this process. */
async function served(config: Record<string, unknown> = {}): Promise<Served> {
  const dir = path.join(tempDir(), 'node');
  await Node.init(dir, { newCluster: true, config });
  const db = await OuroDB.open(path.join(dir, 'db'), { key: crypto.randomBytes(32) });
  stops.push(() => db.close());
  const node = await Node.start({ dir, db, config });
  stops.push(() => node.stop());
  const admin = await AdminServer.start(node);
  stops.push(() => admin.stop());
  const run = JSON.parse(fs.readFileSync(path.join(dir, 'node.run.json'), 'utf8')) as RunInfo;
  return { dir, node, db, admin, url: admin.url, token: run.token };
}

async function call(s: { url: string; token: string }, route: string, init: RequestInit & { headers?: Record<string, string> } = {}): Promise<{ status: number; body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await fetch(`${s.url}${route}`, { ...init, headers: { authorization: `Bearer ${s.token}`, ...init.headers } });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // a value, not JSON
  }
  return { status: res.status, body };
}

/** A raw request (fetch would re-encode what the test means to send as is). */
function raw(s: { url: string; token: string }, method: string, pathAndQuery: string, body = '', headers: Record<string, string> = {}): Promise<{ status: number; body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const u = new URL(s.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path: pathAndQuery, headers: { authorization: `Bearer ${s.token}`, 'content-length': Buffer.byteLength(body), ...headers } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        resolve({ status: res.statusCode!, body: text === '' ? '' : JSON.parse(text) });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function keysOf(db: OuroDB): Promise<string[]> {
  const out = [];
  for await (const e of db.list({ includeDeleted: true })) out.push(e.key);
  return out;
}

describe('admin API /db/ input', () => {
  it('refuses unknown, repeated, badly encoded and over-limit input with a JSON 400, storing nothing', async () => {
    const s = await served();
    const bad: Array<[string, string, Record<string, string>?]> = [
      ['/db/objects?kee=typo', 'no parameter "kee"'],
      ['/db/objects?key=a&key=b', 'key is given more than once'],
      ['/db/objects?key=%E0%A4%A', 'not valid percent-encoded UTF-8'],
      [`/db/objects?key=k&meta=${encodeURIComponent(JSON.stringify({ note: 'x'.repeat(20_000) }))}`, 'query string is'],
      [`/db/objects?key=k&meta=${encodeURIComponent(JSON.stringify({ n: 1 }))}`, 'meta.n must be a string'],
      ['/db/objects?key=k', 'over 65536 bytes', { 'x-ouro-meta': JSON.stringify({ note: 'x'.repeat(70_000) }) }],
      ['/db/objects?key=k', 'meta is 17', { 'x-ouro-meta': JSON.stringify({ note: 'x'.repeat(17_000) }) }],
      [`/db/objects?key=k&meta=${encodeURIComponent('{}')}`, 'not both', { 'x-ouro-meta': '{}' }],
      [`/db/objects?key=${'k'.repeat(1025)}`, 'the maximum is 1024'],
      ['/db/objects?parent=xyz', 'parent must be an object hash'],
    ];
    for (const [route, message, headers] of bad) {
      const r = await raw(s, 'PUT', route, 'value', headers);
      expect(r, route.slice(0, 60)).toMatchObject({ status: 400, body: { error: { code: 'OURO_BAD_ARGUMENT' } } });
      expect(r.body.error.message).toContain(message);
    }
    expect(await keysOf(s.db)).toEqual([]);
    expect((await s.db.stats()).objects).toBe(0);
    // The premise: the same route stores a value given correctly.
    expect(await raw(s, 'PUT', '/db/objects?key=k', 'value')).toMatchObject({ status: 200 });
    expect(await keysOf(s.db)).toEqual(['k']);
  });

  it('takes metadata in the query or the x-ouro-meta header, non-ASCII as \\u escapes', async () => {
    const s = await served();
    const meta = { title: 'café ✓', kind: 'note' };
    const viaHeader = await call(s, '/db/objects?key=h', { method: 'PUT', body: 'one', headers: { 'x-ouro-meta': JSON.stringify(meta).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) } });
    expect(viaHeader.status).toBe(200);
    expect((await s.db.stat(viaHeader.body.hash)).meta).toEqual(meta);
    const viaQuery = await call(s, `/db/objects?key=q&meta=${encodeURIComponent(JSON.stringify(meta))}`, { method: 'PUT', body: 'two' });
    expect((await s.db.stat(viaQuery.body.hash)).meta).toEqual(meta);
    // A header in raw UTF-8 has no defined encoding: refused, not stored as mojibake.
    const utf8 = await raw(s, 'PUT', '/db/objects?key=u', 'three', { 'x-ouro-meta': Buffer.from(JSON.stringify(meta)).toString('latin1') });
    expect(utf8).toMatchObject({ status: 400, body: { error: { message: expect.stringContaining('must be ASCII') } } });
    expect((await keysOf(s.db)).sort()).toEqual(['h', 'q']);
  });

  it('names the real problem of a wrong method or a malformed hash', async () => {
    const s = await served();
    const post = await call(s, '/db/objects?key=k', { method: 'POST', body: 'v' });
    expect(post).toMatchObject({ status: 405, body: { error: { code: 'METHOD_NOT_ALLOWED', message: expect.stringContaining('takes PUT') } } });
    const hash = await call(s, '/db/objects/xyz');
    expect(hash).toMatchObject({ status: 400, body: { error: { code: 'OURO_BAD_ARGUMENT', message: expect.stringContaining('not an object hash') } } });
    const del = await call(s, `/db/objects/${'0'.repeat(64)}`, { method: 'DELETE' });
    expect(del).toMatchObject({ status: 405, body: { error: { message: expect.stringContaining('POST /db/delete') } } });
    expect(await call(s, '/db/nothing')).toMatchObject({ status: 404, body: { error: { message: expect.stringContaining('/db/keys') } } });
    expect(await call(s, '/db/flush', { method: 'POST', body: JSON.stringify({ replica: 2 }) })).toMatchObject({ status: 400, body: { error: { message: expect.stringContaining('no body field "replica"') } } });
    expect(await call(s, '/db/stats?verbose=1')).toMatchObject({ status: 400 });
    expect(await keysOf(s.db)).toEqual([]);
  });

  it('lists keys a page at a time and deletes with a tombstone', async () => {
    const s = await served();
    for (const k of ['a/1', 'a/2', 'a/3', 'b/1']) expect((await call(s, `/db/objects?key=${k}`, { method: 'PUT', body: k })).status).toBe(200);
    const page1 = await call(s, '/db/keys?prefix=a%2F&limit=2');
    expect(page1.body.keys.map((e: { key: string }) => e.key)).toEqual(['a/1', 'a/2']);
    expect(page1.body.next).toBe('a/2');
    const page2 = await call(s, `/db/keys?prefix=a%2F&limit=2&after=${encodeURIComponent(page1.body.next)}`);
    expect(page2.body).toMatchObject({ keys: [{ key: 'a/3', deleted: false }], next: null });
    expect((await call(s, '/db/keys?limit=0')).status).toBe(400);

    const del = await call(s, '/db/delete', { method: 'POST', body: JSON.stringify({ key: 'a/2' }) });
    expect(del).toMatchObject({ status: 200, body: { key: 'a/2' } });
    expect((await call(s, '/db/value?key=a%2F2')).body).toMatchObject({ error: { code: 'OURO_NOT_FOUND' } });
    expect((await call(s, '/db/keys')).body.keys.map((e: { key: string }) => e.key)).toEqual(['a/1', 'a/3', 'b/1']);
    const all = (await call(s, '/db/keys?deleted=true')).body.keys as Array<{ key: string; deleted: boolean; hash: string }>;
    expect(all.find((e) => e.key === 'a/2')).toMatchObject({ deleted: true, hash: del.body.hash });
    // The history keeps every version, the tombstone on top.
    expect((await call(s, '/db/history?key=a%2F2')).body.versions.map((v: { type: string }) => v.type)).toEqual(['tombstone', 'value']);
  });

  it('counts /db/ requests in /metrics by route, method and status, every route starting at 0', async () => {
    const s = await served();
    const scrape = async () => (await call(s, '/metrics')).body as string;
    const before = await scrape();
    expect(before).toContain('ouro_admin_db_requests_total{route="/db/keys",method="GET",status="200"} 0');
    expect(before).toContain('ouro_admin_db_requests_total{route="/db/flush",method="POST",status="504"} 0');
    expect(before).toContain('ouro_admin_db_request_seconds_count{route="/db/objects",method="PUT"} 0');
    await call(s, '/db/keys');
    await call(s, '/db/keys?limit=x');
    const after = await scrape();
    expect(after).toContain('ouro_admin_db_requests_total{route="/db/keys",method="GET",status="200"} 1');
    expect(after).toContain('ouro_admin_db_requests_total{route="/db/keys",method="GET",status="400"} 1');
    expect(after).toContain('ouro_admin_db_request_seconds_count{route="/db/keys",method="GET"} 2');
  });
});

describe('admin tokens', () => {
  it('are made at init, owner-only, the same at every start; only Bearer counts', async () => {
    const s = await served();
    const file = path.join(s.dir, TOKENS_FILE);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const saved = JSON.parse(fs.readFileSync(file, 'utf8')) as { tokens: { admin: string } };
    expect(s.token).toBe(saved.tokens.admin);
    // Restarted, the API keeps the token.
    await s.admin.stop();
    const again = await AdminServer.start(s.node);
    stops.push(() => again.stop());
    const run = JSON.parse(fs.readFileSync(path.join(s.dir, 'node.run.json'), 'utf8')) as RunInfo;
    expect(run.token).toBe(s.token);
    const t = { url: again.url, token: s.token };
    expect((await call(t, '/db/stats')).status).toBe(200);
    const bare = await fetch(`${again.url}/db/stats`, { headers: { authorization: s.token } });
    expect(bare.status).toBe(401);
  });

  it('grant by scope (read, data, admin), and a rotated token replaces the old one at once', async () => {
    const s = await served();
    const read = { url: s.url, token: await s.admin.rotate('read') };
    const data = { url: s.url, token: await s.admin.rotate('data') };
    expect((await call(read, '/status')).status).toBe(200);
    expect(await call(read, '/db/stats')).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
    expect((await call(data, '/db/stats')).status).toBe(200);
    expect((await call(data, '/cluster/token', { method: 'POST', body: JSON.stringify({ ttlSec: 60 }) })).status).toBe(403);
    expect((await call(s, '/cluster/token', { method: 'POST', body: JSON.stringify({ ttlSec: 60 }) })).status).toBe(200);

    const rotated = await call(s, '/admin/token/rotate', { method: 'POST', body: JSON.stringify({ scope: 'admin' }) });
    expect(rotated).toMatchObject({ status: 200, body: { scope: 'admin' } });
    expect((await call(s, '/db/stats')).status).toBe(401);
    expect((await call({ url: s.url, token: rotated.body.token }, '/db/stats')).status).toBe(200);
    expect((JSON.parse(fs.readFileSync(path.join(s.dir, 'node.run.json'), 'utf8')) as RunInfo).token).toBe(rotated.body.token);
    // The other scopes' tokens are untouched.
    expect((await call(data, '/db/stats')).status).toBe(200);
  });

  it('admin.token in the config wins, and is not rotated behind its back', async () => {
    const s = await served({ admin: { token: 'a-configured-admin-token' } });
    expect(s.token).toBe('a-configured-admin-token');
    expect((await call(s, '/db/stats')).status).toBe(200);
    expect(await call(s, '/admin/token/rotate', { method: 'POST', body: '{}' })).toMatchObject({ status: 400, body: { error: { message: expect.stringContaining('admin.token') } } });
  });
});
