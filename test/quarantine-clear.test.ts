/**
 * A cleared quarantine (docs/operations.md, "A corrupt block": "every member applies the clear;
 * placement takes it back and repair copies its blocks back to it"), on three members in this
 * process over real QUIC, with every proof round, repair pass and ledger sync started by the
 * test, so the interleaving that re-quarantined a cleared member in the runbook test (issue 30)
 * happens every run:
 *
 *   1. the writer applies the clear, its repair pass copies the block back to the member and
 *      confirms it as a holder;
 *   2. the member, whose ledger lags, copies the writer's events in and applies them one by
 *      one: the failures quarantine it before the clear ends it. Quarantined in its own view,
 *      it is not on the block's placement, so its repair pass removes the copy it just got as
 *      surplus (the writer and the third member hold it);
 *   3. it applies the clear: in its view the block is placed on it again, and it lacks it;
 *   4. the writer, which confirmed the copy in 1, challenges it for the block. The member's
 *      "missing" (with the block placed on it) was a failure, and quarantined it again.
 *
 * The copy was removed by a placement change in flight (the member's view of its own
 * quarantine), which gets no verdict, as a holder's current view leaving it out already did.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Unpackr } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import type { WireEvent } from '../carrier/ledger.js';
import { Node } from '../carrier/node.js';
import { DirShelf } from '../carrier/shelf.js';
import { OuroDB } from '../lib/index.js';
import { waitFor } from './cluster-procs.js';
import { tempDir } from './helpers.js';

const DAY = 24 * 3600_000;
/** No timed proof round, repair pass, ledger event or sync: the test starts each one. One failure quarantines. */
const config = {
  heartbeat: { intervalMs: 200, suspectAfterMs: 1000, deadAfterMs: 3000 },
  replication: { factor: 3, maxUnsealedMs: DAY, deadGraceMs: 60_000, repairIntervalMs: DAY },
  proofs: { enabled: true, intervalMs: DAY, perRound: 8, deadlineMs: 5000, stock: 8, quarantineAfter: 1, quarantineWindowMs: DAY },
  ledger: { intervalMs: DAY, syncIntervalMs: DAY },
};
const stops: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
const header = (w: WireEvent) => unpackr.unpack(w.d) as { o: string; n: number; k: string };

async function keyless(a: Node, dir: string): Promise<Node> {
  const { token } = await a.createToken(60_000);
  await Node.init(dir, { config });
  await Node.requestJoin(dir, a.carrier.addresses, token);
  const n = await Node.start({ dir, config });
  stops.push(() => n.stop());
  return n;
}

/** A writer with the database and two keyless members, RF 3, every one alive in every view. */
async function threeMembers(): Promise<{ a: Node; b: Node; c: Node; db: OuroDB }> {
  const root = tempDir();
  await Node.init(path.join(root, 'a'), { newCluster: true, config });
  const db = await OuroDB.open(path.join(root, 'a', 'db'), { key: crypto.randomBytes(32) });
  stops.push(() => db.close());
  const a = await Node.start({ dir: path.join(root, 'a'), db, config });
  stops.push(() => a.stop());
  const b = await keyless(a, path.join(root, 'b'));
  const c = await keyless(a, path.join(root, 'c'));
  const all = [a, b, c];
  await waitFor(() => all.every((n) => all.every((m) => n.memberViews().some((v) => v.peerId === m.peerId && v.status === 'member' && (v.self || v.state === 'alive')))), 20_000, 'three members alive in every view');
  return { a, b, c, db };
}

const holds = async (n: Node, id: string) => (await n.replication.held()).some((h) => h.id === id);

describe('a cleared quarantine', () => {
  it('a member that removed a copy as surplus while its ledger still had it quarantined is not failed for it once it applies the clear, and gets the copy back', async () => {
    const { a, b, c, db } = await threeMembers();
    const sealed: string[] = [];
    stops.push(async () => off());
    const off = db.onSealed((s) => sealed.push(s.id));
    await db.put(crypto.randomBytes(20_000));
    await db.flush({ replicas: 3 });
    const id = sealed[0]!;
    expect([...(a.replication.holdersOf(id) ?? [])].sort()).toEqual([a.peerId, b.peerId, c.peerId].sort());

    // b's disk alters its copy: the writer's proof fails, and b is quarantined (on the writer).
    const bFile = new DirShelf(b.dir).path(id);
    fs.writeFileSync(bFile, crypto.randomBytes(fs.statSync(bFile).size));
    await a.proofs.kick();
    expect(a.ledger.quarantined(b.peerId)).toBe(true);
    expect(a.ledger.entry(b.peerId)!.proofs.failed).toBe(1);
    await a.replication.idle();

    // The operator removes the bad copy and clears b on the writer. The writer's repair pass puts
    // the block back on b and confirms it (1).
    fs.rmSync(bFile);
    await a.clearQuarantine(b.peerId);
    expect(a.ledger.quarantined(b.peerId)).toBe(false);
    await waitFor(async () => (await holds(b, id)) && a.replication.holdersOf(id)?.has(b.peerId) === true, 20_000, 'the writer copies the block back to b');
    await a.replication.idle();

    // b copies the writer's events: first up to the clear (2), and its repair pass removes the
    // copy as surplus, quarantined as it is in its own view...
    const events = (await a.ledger.since(b.ledger.vector(), 1 << 24)).events;
    const clear = events.findIndex((w) => header(w).o === a.peerId && header(w).k === 'clear');
    expect(clear).toBeGreaterThan(0);
    await b.ledger.accept(events.slice(0, clear));
    expect(b.ledger.quarantined(b.peerId)).toBe(true);
    await b.replication.idle();
    await waitFor(async () => !(await holds(b, id)), 20_000, 'b removes its copy as surplus');
    // ... then the clear (3): the block is placed on b again, in every view.
    await b.ledger.accept(events.slice(clear));
    expect(b.ledger.quarantined(b.peerId)).toBe(false);
    expect(b.replication.placement(id)).toContain(b.peerId);
    expect(a.replication.holdersOf(id)?.has(b.peerId)).toBe(true);

    // The writer's proof round (4): no verdict on b's missing copy, b stays cleared.
    const failed = a.ledger.entry(b.peerId)!.proofs.failed;
    await a.proofs.kick();
    expect(a.ledger.entry(b.peerId)!.proofs.failed).toBe(failed);
    expect(a.ledger.quarantined(b.peerId)).toBe(false);
    // The writer no longer counts b as holding it; its next repair pass copies it back, and b proves it.
    expect(a.replication.holdersOf(id)?.has(b.peerId)).toBe(false);
    a.replication.kick();
    await a.replication.idle();
    expect(await holds(b, id)).toBe(true);
    const passed = a.ledger.entry(b.peerId)!.proofs.passed;
    await a.proofs.kick();
    expect(a.ledger.entry(b.peerId)!.proofs.passed).toBe(passed + 1);
    expect(a.ledger.quarantined(b.peerId)).toBe(false);
  });
});
