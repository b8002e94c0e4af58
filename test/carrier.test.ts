/**
 * The carrier between real processes over real QUIC on loopback: request/response, typed errors
 * from handlers, time limits and aborts, refused peers, unknown protocols, and malformed or
 * oversized frames from a raw libp2p node, none of which may take the serving process down.
 * Identity: persistent, owner-only, sealed under a key when one is given.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { Carrier, IDENTITY_FILE, decodeFrames, encodeFrame, loadIdentity, protocolId } from '../carrier/index.js';
import { fixture } from './paths.js';
import { HOSTILE_FRAMES, rawExchange } from './raw-frames.js';
import { tempDir } from './helpers.js';

const children = new Set<ChildProcess>();
const carriers = new Set<Carrier>();
afterEach(async () => {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
  await Promise.all([...carriers].map((c) => c.stop().catch(() => {})));
  carriers.clear();
});

async function startServer(env: Record<string, string> = {}): Promise<{ child: ChildProcess; address: string; peerId: string }> {
  const child = spawn(process.execPath, [fixture('carrier-server.js'), tempDir()], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  const line = await new Promise<string>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`carrier server exited with ${code}`)));
  });
  return { child, ...(JSON.parse(line) as { address: string; peerId: string }) };
}

async function client(options: { maxFrameBytes?: number } = {}): Promise<Carrier> {
  const c = await Carrier.start({ dir: tempDir(), ...options });
  carriers.add(c);
  return c;
}

describe('carrier over QUIC between processes', () => {
  it('answers requests, passes typed errors back, and stops cleanly on SIGTERM', async () => {
    const server = await startServer();
    const c = await client();
    expect(await c.request(server.address, protocolId('echo'), { hello: 'world', bytes: new Uint8Array([1, 2, 3]) })).toEqual({ echo: { hello: 'world', bytes: new Uint8Array([1, 2, 3]) }, from: c.peerId });
    const big = new Uint8Array(900 * 1024).map((_, i) => i % 251);
    expect(((await c.request(server.address, protocolId('echo'), big)) as { echo: Uint8Array }).echo).toEqual(big);
    await expect(c.request(server.address, protocolId('missing'), {})).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
    const exited = new Promise<number | null>((r) => server.child.once('exit', r));
    server.child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('small requests share one session stream and are answered out of order; large ones get their own', async () => {
    const server = await startServer();
    const c = await client({ maxFrameBytes: 4 * 1024 * 1024 });
    const order: string[] = [];
    const slow = c.request(server.address, protocolId('delay'), { ms: 400, tag: 'slow' }).then((r) => order.push((r as { tag: string }).tag));
    await new Promise((r) => setTimeout(r, 50));
    const fast = Promise.all(Array.from({ length: 20 }, (_, i) => c.request(server.address, protocolId('delay'), { ms: 0, tag: `fast${i}` }).then((r) => order.push((r as { tag: string }).tag))));
    await Promise.all([slow, fast]);
    expect(order.at(-1)).toBe('slow');
    expect(order).toHaveLength(21);
    const streams = c.node.getConnections().flatMap((conn) => conn.streams.map((s) => s.protocol));
    expect(streams.filter((p) => p === '/ouro/session/1')).toHaveLength(1);
    // A 900 KiB frame is over the session's 64 KiB limit: a stream of its own, then gone.
    const big = new Uint8Array(900 * 1024).fill(5);
    expect(((await c.request(server.address, protocolId('echo'), big)) as { echo: Uint8Array }).echo).toEqual(big);
    // Typed errors and time limits work the same on a session; a timed-out session is replaced.
    await expect(c.request(server.address, protocolId('missing'), {})).rejects.toMatchObject({ code: 'OURO_NOT_FOUND' });
    await expect(c.request(server.address, protocolId('delay'), { ms: 2000 }, { timeoutMs: 200 })).rejects.toMatchObject({ code: 'OURO_TIMEOUT' });
    expect(await c.request(server.address, protocolId('echo'), 'after')).toMatchObject({ echo: 'after' });
  });

  it("a request whose time runs out retires its session without failing the others on it; a late reply is no error", async () => {
    const server = await startServer();
    const c = await client();
    // On one session: a request that waits 700 ms within its 3 s, then one whose 200 ms run out.
    const patient = c.request(server.address, protocolId('delay'), { ms: 700, tag: 'patient' }, { timeoutMs: 3000 });
    await new Promise((r) => setTimeout(r, 50));
    await expect(c.request(server.address, protocolId('delay'), { ms: 400, tag: 'hasty' }, { timeoutMs: 200 })).rejects.toMatchObject({ code: 'OURO_TIMEOUT' });
    // A new request goes on a session dialed anew, while the first is still answered on the old
    // one (closing it at the timeout failed it with 'session closed'), and the hasty one's reply
    // at 400 ms finds no one waiting and breaks nothing.
    expect(await c.request(server.address, protocolId('echo'), 'next')).toMatchObject({ echo: 'next' });
    expect(await patient).toMatchObject({ tag: 'patient' });
    await new Promise((r) => setTimeout(r, 100));
    const sessions = () => c.node.getConnections().flatMap((conn) => conn.streams.map((st) => st.protocol)).filter((p) => p === '/ouro/session/1');
    // The retired session closed once its last request was answered: one session left.
    expect(sessions()).toHaveLength(1);
    expect(await c.request(server.address, protocolId('echo'), 'after')).toMatchObject({ echo: 'after' });
  });

  it('a request that finds its session gone before it was sent goes on a new session', async () => {
    const server = await startServer();
    const c = await client();
    // Three rounds: a libp2p node takes at most five new connections a second from one host
    // (inboundConnectionThreshold), and each round makes one.
    for (let round = 0; round < 3; round++) {
      expect(await c.request(server.address, protocolId('echo'), `warm ${round}`)).toMatchObject({ echo: `warm ${round}` });
      // The connection under the session goes away (as an idle or lost connection does); the
      // session notices only when it next reads. A request made at that moment finds the session
      // still open, and its frame cannot be sent: it must be sent on a session dialed anew, not fail.
      for (const conn of c.node.getConnections()) conn.abort(new Error('connection lost'));
      expect(await c.request(server.address, protocolId('echo'), `after ${round}`)).toMatchObject({ echo: `after ${round}` });
    }
  });

  it('a request has a time limit and honours an AbortSignal', async () => {
    const server = await startServer();
    const c = await client();
    await expect(c.request(server.address, protocolId('slow'), {}, { timeoutMs: 300 })).rejects.toMatchObject({ code: 'OURO_TIMEOUT' });
    const ac = new AbortController();
    const pending = c.request(server.address, protocolId('slow'), {}, { signal: ac.signal });
    setTimeout(() => ac.abort(new Error('caller gave up')), 100);
    await expect(pending).rejects.toThrow('caller gave up');
    expect(await c.request(server.address, protocolId('echo'), 1)).toMatchObject({ echo: 1 });
  });

  it('stopping while requests are in flight, and requests made while or after it stops, leave no rejection unhandled', async () => {
    // A node's background loops (heartbeats, repair) keep calling request() while the node
    // stops. Such a request's signal has already fired; the session dial it still started
    // (after stop() dropped the sessions) failed with 'carrier stopped' and nobody listened:
    // an unhandled rejection, which ends an embedding application by Node's default.
    const unhandled: unknown[] = [];
    const note = (err: unknown) => unhandled.push(err);
    process.on('unhandledRejection', note);
    try {
      const server = await startServer();
      const c = await client();
      expect(await c.request(server.address, protocolId('echo'), 'warm')).toMatchObject({ echo: 'warm' });
      // Each request's own outcome is taken at once (it fails: the carrier stops under it).
      const ask = () => c.request(server.address, protocolId('delay'), { ms: 1000 }).then(() => 'answered', (err: unknown) => err);
      const inFlight = Array.from({ length: 5 }, ask);
      const stopped = c.stop();
      const during = Array.from({ length: 5 }, ask);
      await stopped;
      const after = Array.from({ length: 5 }, ask);
      const outcomes = await Promise.all([...inFlight, ...during, ...after]);
      expect(outcomes.every((o) => o instanceof Error)).toBe(true);
      // Unhandled rejections are reported after the microtask queue drains: give them the chance.
      await new Promise((r) => setTimeout(r, 200));
      expect(unhandled.map((e) => (e instanceof Error ? e.message : String(e)))).toEqual([]);
    } finally {
      process.off('unhandledRejection', note);
    }
  });

  it('unknown protocols, refused peers, and malformed or oversized frames get clean errors; the server lives on', async () => {
    const allowed = await client();
    const server = await startServer({ ALLOW: allowed.peerId });
    const stranger = await client({ maxFrameBytes: 8 * 1024 * 1024 });
    await expect(stranger.request(server.address, '/ouro/nope/1', {})).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });
    // Refused before its request is read: one OURO_REFUSED reply, then the stream is closed.
    await expect(stranger.request(server.address, protocolId('echo'), new Uint8Array(512 * 1024))).rejects.toMatchObject({ code: 'OURO_REFUSED', name: 'RefusedError' });
    // Larger than the server's 1 MiB frame limit: refused from the length alone.
    await expect(stranger.request(server.address, protocolId('slow'), new Uint8Array(2 * 1024 * 1024))).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });

    // Raw bytes from a plain libp2p stream: a length of 4 GiB, then bytes that are not msgpack.
    for (const bytes of HOSTILE_FRAMES) {
      expect(await rawExchange(stranger, protocolId('slow'), bytes)).toEqual([{ ok: false, code: 'OURO_PROTOCOL', message: expect.any(String) }]);
    }
    // On the session protocol: a frame that is not a session request ends that session, nothing else.
    for (const bytes of [encodeFrame({ nonsense: true }), Uint8Array.from([0xff, 0xff, 0xff, 0xff])]) {
      const session = await stranger.node.dialProtocol(stranger.node.getConnections()[0]!.remotePeer, '/ouro/session/1');
      const replies = Array.fromAsync(decodeFrames(session)).catch((err: unknown) => err);
      session.send(bytes);
      await session.close().catch(() => {});
      const r = await replies;
      expect(Array.isArray(r) ? r : []).toEqual([]);
    }
    expect(await allowed.request(server.address, protocolId('echo'), 'still here')).toMatchObject({ echo: 'still here' });
    expect(server.child.exitCode).toBe(null);
  });
});

describe('node identity', () => {
  it('persists across restarts, is owner-only, and is sealed under a key when one is given', async () => {
    const dir = tempDir();
    const first = await loadIdentity(dir);
    expect((await loadIdentity(dir)).equals(first)).toBe(true);
    expect(fs.statSync(path.join(dir, IDENTITY_FILE)).mode & 0o777).toBe(0o600);

    const sealedDir = tempDir();
    const key = new Uint8Array(32).fill(5);
    const sealed = await loadIdentity(sealedDir, key);
    expect((await loadIdentity(sealedDir, key)).equals(sealed)).toBe(true);
    expect(fs.readFileSync(path.join(sealedDir, IDENTITY_FILE), 'utf8')).toContain('"sealed"');
    await expect(loadIdentity(sealedDir, new Uint8Array(32).fill(6))).rejects.toMatchObject({ code: 'OURO_WRONG_KEY' });
    await expect(loadIdentity(sealedDir)).rejects.toMatchObject({ code: 'OURO_WRONG_KEY' });
    fs.writeFileSync(path.join(sealedDir, IDENTITY_FILE), '{"version": 9}');
    await expect(loadIdentity(sealedDir, key)).rejects.toMatchObject({ code: 'OURO_UNSUPPORTED_VERSION' });
  });

  it('encodes frames it would refuse to receive only up to the limit', () => {
    expect(() => encodeFrame(new Uint8Array(100), 50)).toThrow(expect.objectContaining({ code: 'OURO_PROTOCOL' }));
  });
});
