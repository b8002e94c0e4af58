/**
 * Waiting for replicas (`flush({ replicas })`, Replicator.settled) on two members in this process
 * over real QUIC: a replicated flush waits for the push of its own blocks and starts no repair
 * pass while that push places them. A repair pass lists every block every member holds, so one
 * per replicated flush made each flush cost in proportion to everything the cluster holds.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AdminServer, type RunInfo } from '../carrier/admin.js';
import { Node } from '../carrier/node.js';
import { DiskFullError, ProtocolError, UnavailableError } from '../lib/errors.js';
import { setFailpoint } from '../lib/failpoints.js';
import { OuroDB } from '../lib/index.js';
import { waitFor } from './cluster-procs.js';
import { tempDir } from './helpers.js';

const config = { heartbeat: { intervalMs: 200, suspectAfterMs: 1000, deadAfterMs: 3000 }, replication: { factor: 2, maxUnsealedMs: 3_600_000, deadGraceMs: 60_000, repairIntervalMs: 3_600_000 } };
const stops: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

/**
 * A writer with a database and a keyless second member, both in this process. `beforeStart`
 * runs on the database before the writer's node starts with it.
 */
async function twoMembers(beforeStart?: (db: OuroDB) => void): Promise<{ a: Node; b: Node; db: OuroDB; key: Buffer }> {
  const root = tempDir();
  const [dirA, dirB] = [path.join(root, 'a'), path.join(root, 'b')];
  await Node.init(dirA, { newCluster: true, config });
  const key = crypto.randomBytes(32);
  const db = await OuroDB.open(path.join(dirA, 'db'), { key });
  stops.push(() => db.close().catch(() => {}));
  beforeStart?.(db);
  const a = await Node.start({ dir: dirA, db, config });
  stops.push(() => a.stop());
  const { token } = await a.createToken(60_000);
  await Node.init(dirB, { config });
  await Node.requestJoin(dirB, a.carrier.addresses, token);
  const b = await Node.start({ dir: dirB, config });
  stops.push(() => b.stop());
  await waitFor(() => a.memberViews().some((m) => m.peerId === b.peerId && m.status === 'member' && m.state === 'alive'), 15_000, 'the second member to join');
  await a.replication.idle();
  return { a, b, db, key };
}

describe('flush({ replicas })', () => {
  it('resolves once its blocks are held by two members, and runs no repair pass when their push placed them', async () => {
    const { a, b, db } = await twoMembers();
    const passes = a.replication.progress.passes;
    const sealed: string[] = [];
    const off = db.onSealed((block) => sealed.push(block.id));
    stops.push(async () => off());
    for (let i = 0; i < 5; i++) {
      await db.put(crypto.randomBytes(1024));
      await db.flush({ replicas: 2 });
      // Every block sealed so far is confirmed on both members when the flush resolves.
      for (const id of sealed) expect([...(a.replication.holdersOf(id) ?? [])].sort()).toEqual([a.peerId, b.peerId].sort());
    }
    expect(sealed.length).toBe(5);
    expect((await b.replication.held()).map((h) => h.id).sort()).toEqual([...sealed].sort());
    await a.replication.idle();
    expect(a.replication.progress.passes).toBe(passes);
  });

  it('pushes a small block to a member that does not serve block-put-small on a stream instead', async () => {
    const { a, b, db } = await twoMembers();
    // A member from before block-put-small: its session answers that the protocol is not
    // served. (Registering the protocol again replaces the carrier's handler for session
    // requests; libp2p then refuses the duplicate stream handler, which is ignored here.)
    let refused = 0;
    await b.carrier
      .handle('/ouro/block-put-small/1', () => {
        refused++;
        throw new ProtocolError('protocol /ouro/block-put-small/1 is not served');
      })
      .catch(() => {});
    const sealed: string[] = [];
    const off = db.onSealed((block) => sealed.push(block.id));
    stops.push(async () => off());
    await db.put(crypto.randomBytes(1024));
    await db.flush({ replicas: 2, signal: AbortSignal.timeout(20_000) });
    expect(refused).toBe(1);
    expect(sealed.length).toBe(1);
    expect([...(a.replication.holdersOf(sealed[0]!) ?? [])].sort()).toEqual([a.peerId, b.peerId].sort());
    expect((await b.replication.held()).map((h) => h.id)).toEqual(sealed);
  });

  it('rejects at once with OURO_UNAVAILABLE when fewer members are live than asked, in the library and over the admin API', async () => {
    const { a, b, db } = await twoMembers();
    await b.stop();
    await waitFor(() => a.memberViews().some((m) => m.peerId === b.peerId && m.state === 'dead'), 15_000, 'b to be dead as a sees it');
    await db.put(crypto.randomBytes(1024));
    // The signal bounds the test only: before the live count, the wait outlived any time limit.
    const err = await db.flush({ replicas: 2, signal: AbortSignal.timeout(20_000) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as UnavailableError).code).toBe('OURO_UNAVAILABLE');
    expect((err as Error).message).toContain('only 1 member is live');

    const admin = await AdminServer.start(a);
    stops.push(() => admin.stop());
    const { token } = JSON.parse(fs.readFileSync(path.join(a.dir, 'node.run.json'), 'utf8')) as RunInfo;
    const res = await fetch(`${admin.url}/db/flush`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ replicas: 2, timeoutMs: 20_000 }) });
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ error: { code: 'OURO_UNAVAILABLE' } });
  });

  it('gives up when its signal aborts (library) or its time limit passes (admin API: 504 OURO_TIMEOUT), the block still sealed', async () => {
    const { a, b, db } = await twoMembers();
    // b takes the push and never answers it (until the test ends), so the wait cannot end by itself.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    stops.push(async () => release());
    let pushes = 0;
    const ctl = new AbortController();
    await b.carrier
      .handle('/ouro/block-put-small/1', async () => {
        pushes++;
        ctl.abort(new Error('the caller gave up'));
        await held;
        throw new ProtocolError('released at the end of the test');
      })
      .catch(() => {});
    const sealed: string[] = [];
    const off = db.onSealed((block) => sealed.push(block.id));
    stops.push(async () => off());
    await db.put(crypto.randomBytes(1024));
    await expect(db.flush({ replicas: 2, signal: ctl.signal })).rejects.toThrow('the caller gave up');
    expect(pushes).toBe(1);
    expect(sealed.length).toBe(1);

    const admin = await AdminServer.start(a);
    stops.push(() => admin.stop());
    const { token } = JSON.parse(fs.readFileSync(path.join(a.dir, 'node.run.json'), 'utf8')) as RunInfo;
    await db.put(crypto.randomBytes(1024));
    const res = await fetch(`${admin.url}/db/flush`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ replicas: 2, timeoutMs: 300 }) });
    expect(res.status).toBe(504);
    expect(await res.json()).toMatchObject({ error: { code: 'OURO_TIMEOUT' } });
    expect(sealed.length).toBe(2);
  });
});

describe('the push of a sealed block', () => {
  it('starts once the block is durable under its id, before its registration; recovery registers that very block', async () => {
    const { a, b, db, key } = await twoMembers();
    const durable: string[] = [];
    const off = db.onSealedDurable((block) => {
      // Not registered yet: the listener runs between the seal's directory fsync and the index batch.
      expect(db.block(block.id)).toBeUndefined();
      expect(fs.existsSync(block.path)).toBe(true);
      durable.push(block.id);
    });
    stops.push(async () => off());
    // The writer fails right before the registration (as if it crashed there): with the push
    // started only after registration (onSealed), the second member would never get the block.
    setFailpoint('seal.before-register', () => {
      throw new Error('injected: stopped before the registration');
    });
    try {
      await db.put(crypto.randomBytes(1024));
      await expect(db.flush()).rejects.toThrow();
    } finally {
      setFailpoint('seal.before-register', undefined);
    }
    expect(durable.length).toBe(1);
    const id = durable[0]!;
    await waitFor(async () => (await b.replication.held()).some((h) => h.id === id), 15_000, 'the second member to hold the block');
    // Reopened, the writer's recovery registers the file it made durable: the block b holds.
    await a.stop();
    await db.close().catch(() => {});
    const again = await OuroDB.open(path.join(a.dir, 'db'), { key });
    stops.push(() => again.close());
    expect(again.block(id)).toMatchObject({ id, adopted: false });
  });
});

describe('the seal subscription of a starting node', () => {
  it('misses no block sealed while the node lists the blocks registered before it started', async () => {
    // The node lists the database's registered blocks as it starts; a block sealed right after
    // that listing read the index (here: as it ends) was lost between the listing and the
    // subscription to seals, when the node listed first: unknown to the holders (a flush with
    // replicas did not wait for it) and pushed only when a repair pass came across it (this
    // file's repair interval is an hour).
    let sealedDuringListing: string | undefined;
    const { a, b } = await twoMembers((db) => {
      const list = db.blocks.bind(db);
      // Once: the replicator's start is the first to list (Node.start), later listings are plain.
      db.blocks = async function* () {
        db.blocks = list;
        yield* list();
        const off = db.onSealed((block) => (sealedDuringListing = block.id));
        await db.put(crypto.randomBytes(1024));
        await db.flush();
        off();
      };
    });
    const id = sealedDuringListing!;
    expect(id).toBeDefined();
    expect(a.replication.holdersOf(id)).toBeDefined();
    await a.db!.flush({ replicas: 2, signal: AbortSignal.timeout(20_000) });
    expect([...(a.replication.holdersOf(id) ?? [])].sort()).toEqual([a.peerId, b.peerId].sort());
    expect((await b.replication.held()).map((h) => h.id)).toContain(id);
  });

  it('reports a block durable and not yet registered to a listener that subscribes meanwhile', async () => {
    const db = await OuroDB.open(path.join(tempDir(), 'db'), { key: crypto.randomBytes(32) });
    stops.push(() => db.close());
    const late: string[] = [];
    let offLate: (() => void) | undefined;
    // The first listener runs between the seal's last directory fsync and its registration:
    // a second one subscribing there is told of that block at once.
    const off = db.onSealedDurable((block) => {
      offLate = db.onSealedDurable((b) => late.push(b.id));
      expect(late).toEqual([block.id]);
    });
    await db.put(crypto.randomBytes(1024));
    await db.flush();
    off();
    offLate?.();
    expect(late).toHaveLength(1);
    expect(db.block(late[0]!)).toMatchObject({ id: late[0], adopted: false });
  });
});

describe('a seal whose registration ran out of disk space', () => {
  it('is registered when tried again, under the id it was pushed with, and reported durable once', async () => {
    const { a, b, db } = await twoMembers();
    const durable: string[] = [];
    const off = db.onSealedDurable((block) => durable.push(block.id));
    stops.push(async () => off());
    // The registration's synced index batch fails once for lack of space (as LevelDB reports it).
    let fail = true;
    setFailpoint('seal.before-register', () => {
      if (!fail) return;
      fail = false;
      throw new DiskFullError('injected: no space left for the registration');
    });
    try {
      await db.put(crypto.randomBytes(1024));
      const err = await db.flush().catch((e: unknown) => e);
      expect((err as DiskFullError).code).toBe('OURO_DISK_FULL');
      expect(durable).toHaveLength(1);
      expect(db.block(durable[0]!)).toBeUndefined();
      // Tried again (flush rotates, which retries a seal a full disk stopped): registration
      // only. Sealing again renamed an open file already renamed away, and the handle failed.
      await db.flush({ replicas: 2, signal: AbortSignal.timeout(20_000) });
    } finally {
      setFailpoint('seal.before-register', undefined);
    }
    expect(durable).toHaveLength(1);
    const id = durable[0]!;
    expect(db.block(id)).toMatchObject({ id, adopted: false });
    expect([...(a.replication.holdersOf(id) ?? [])].sort()).toEqual([a.peerId, b.peerId].sort());
    await db.put(crypto.randomBytes(1024));
    await db.flush();
  });
});

describe('a keyless member receiving pushes', () => {
  it('makes its incoming/ directory again when it was removed from outside (directories are made once per process)', async () => {
    const { a, b, db } = await twoMembers();
    // Made as the node started, before any block came (DirShelf.prepare): every fan-out directory.
    expect(fs.readdirSync(path.join(b.dir, 'replicas', 'blocks')).length).toBe(256);
    await db.put(crypto.randomBytes(1024));
    await db.flush({ replicas: 2, signal: AbortSignal.timeout(20_000) });
    fs.rmSync(path.join(b.dir, 'replicas', 'incoming'), { recursive: true });
    const sealed: string[] = [];
    const off = db.onSealed((block) => sealed.push(block.id));
    stops.push(async () => off());
    await db.put(crypto.randomBytes(1024));
    await db.flush({ replicas: 2, signal: AbortSignal.timeout(20_000) });
    expect([...(a.replication.holdersOf(sealed[0]!) ?? [])].sort()).toEqual([a.peerId, b.peerId].sort());
  });
});

describe('replication.idle()', () => {
  it('returns after the pass running and the one due, though kicks keep coming (a repair timer shorter than a pass)', async () => {
    const { a, db } = await twoMembers();
    for (let i = 0; i < 3; i++) await db.put(crypto.randomBytes(1024));
    await db.flush({ replicas: 2 });
    // Kicks arriving all the time, as the repair timer's do when passes take longer than its
    // interval (the partition test: POST /replication/repair answered nothing for 300 s).
    let kicking = true;
    const kicker = (async () => {
      while (kicking) {
        a.replication.kick();
        await new Promise((r) => setImmediate(r));
      }
    })();
    try {
      const start = a.replication.progress.passes;
      // Bounded by passes, not time: idle() owes at most the pass running and the one due.
      const tooMany = waitFor(() => a.replication.progress.passes >= start + 20, 120_000, 'twenty passes').then(() => 'still waiting' as const);
      const outcome = await Promise.race([a.replication.idle().then(() => 'idle' as const), tooMany]);
      expect(outcome).toBe('idle');
      expect(a.replication.progress.passes - start).toBeLessThanOrEqual(2);
    } finally {
      kicking = false;
      await kicker;
    }
  });
});
