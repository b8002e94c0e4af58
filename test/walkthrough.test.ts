/**
 * An operator's day (issue 30), end to end through the CLI and the admin API, as README,
 * docs/node.md and docs/operations.md tell an operator to do it: five `ouro node start` processes
 * on loopback QUIC, joined by token and by approval (keyed and keyless, and a keyed node approved
 * while it is already running, which takes the database by itself), data through `/db/`, a
 * member killed with SIGKILL, a keyed member destroyed and restored from the cluster into a new
 * directory, a drain, the ledger and the metrics. Every object must read back byte-identical after
 * each of those steps.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { RunInfo } from '../carrier/admin.js';
import { type NodeProc, FAST_FLAGS, REPL_FLAGS, admitWithDb, converged, dbApi, founderWithDb, heldBlocks, joinKeyless, joinWithDb, keyFile, ouro, ouroJson, startNode, waitFor } from './cluster-harness.js';
import { pseudoRandom, tempDir } from './helpers.js';

interface Written {
  key: string;
  hash: string;
  size: number;
}

/** Every written object reads back byte-identical from `node` (by hash and by key). */
async function readsBack(node: NodeProc, written: Written[]): Promise<void> {
  for (const w of written) {
    expect((await dbApi.value(node, w.hash)).equals(pseudoRandom(w.key, w.size)), `${w.key} by hash on ${node.dir}`).toBe(true);
    const res = await dbApi.get(node, `/db/value?key=${encodeURIComponent(w.key)}`);
    expect(res.status, `${w.key} by key on ${node.dir}`).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(pseudoRandom(w.key, w.size))).toBe(true);
  }
}

async function memberOf(node: NodeProc, peerId: string) {
  return (await node.members()).members.find((m) => m.peerId === peerId);
}

/**
 * Runs the day; on a failure, says at which step and adds each node's last log lines (and exit
 * state), since a refused connection alone does not say which process went away, or why.
 */
async function day(run: (step: (name: string) => void, nodes: NodeProc[]) => Promise<void>): Promise<void> {
  let at = 'start';
  const nodes: NodeProc[] = [];
  try {
    await run((name) => (at = name), nodes);
  } catch (err) {
    const tails = nodes.map((n) => `${n.dir} (exit ${n.child.exitCode ?? n.child.signalCode ?? 'running'}):\n${n.logs.slice(-8).map((l) => '  ' + JSON.stringify(l)).join('\n')}`);
    throw new Error(`step "${at}": ${err instanceof Error ? err.message : String(err)}\n${tails.join('\n')}`, { cause: err });
  }
}

describe("an operator's day", () => {
  it('token and approval joins (keyed, keyless, keyed approved while running), kill -9, restore, drain: every object reads back', () => day(async (step, nodes) => {
    const key = keyFile();
    // a: the founder, running the database. b: keyed, by token. c: keyless, by token.
    const a = await founderWithDb(key);
    const b = await joinWithDb(a, key);
    const c = await joinKeyless(a);
    nodes.push(a, b, c);

    // d: keyless, by approval, as docs/node.md shows (join pending, start, approve on a member).
    const dDir = tempDir();
    const dJoin = await ouroJson<{ status: string; peerId: string }>(['node', 'join', dDir, '--peer', a.address, ...FAST_FLAGS, ...REPL_FLAGS]);
    expect(dJoin.status).toBe('pending');
    const d = await startNode(dDir);
    nodes.push(d);

    // e: keyed, by approval, started before it is approved: it keeps asking, then takes the
    // cluster's database by itself (the first thing an operator tripped over).
    const eDir = tempDir();
    const eJoin = await ouro(['--json', '--key-file', key, 'node', 'join', eDir, '--peer', a.address, '--database', ...FAST_FLAGS, ...REPL_FLAGS]);
    expect(eJoin.code, eJoin.stderr).toBe(0);
    expect((JSON.parse(eJoin.stdout) as { status: string }).status).toBe('pending');
    const e = await startNode(eDir, [], ['--key-file', key]);
    nodes.push(e);
    step('approvals');

    // The hint the pending join printed works as printed, with --dir.
    await waitFor(async () => (await ouroJson<{ pending: Array<{ peerId: string }> }>(['cluster', '--dir', a.dir, 'pending'])).pending.length === 2, 20_000, 'two pending joins on a');
    for (const n of [d, e]) {
      const r = await ouro(['cluster', '--dir', a.dir, 'approve', n.peerId]);
      expect(r.code, r.stderr).toBe(0);
    }
    // e, approved while running, took the database and serves it (it restarted in its process with
    // the database, so its admin API moved: node.run.json says where, as `ouro cluster` reads it).
    step('e takes the database');
    await waitFor(() => e.logs.some((l) => l.event === 'database-taken'), 30_000, 'e to take the database');
    await waitFor(async () => {
      if (e.logs.filter((l) => l.event === 'admin').length < 2) return false;
      e.run = JSON.parse(fs.readFileSync(path.join(e.dir, 'node.run.json'), 'utf8')) as RunInfo;
      return (await fetch(`${e.run.admin}/health`)).status === 200;
    }, 30_000, 'e to run with it');
    const five = [a, b, c, d, e];
    await waitFor(() => converged(five, five.map((n) => n.peerId)), 30_000, 'five members, all alive');
    expect(e.child.exitCode).toBe(null);

    step('data');
    // Data through a's /db/, held by three members (the default replication factor).
    const written: Written[] = [];
    for (let i = 0; i < 24; i++) {
      const k = `day/${i}`;
      const size = 20_000 + i * 1_500;
      written.push({ key: k, size, hash: (await dbApi.put(a, pseudoRandom(k, size), { key: k })).hash });
    }
    await dbApi.json(a, '/db/flush', 'POST', { replicas: 3 });
    // e serves the database it took, once it has fetched the blocks holding every object: one
    // object there says nothing of the blocks after it (a CI run read the rest too early, 404).
    await waitFor(async () => {
      for (const w of written) if ((await dbApi.get(e, `/db/objects/${w.hash}`)).status !== 200) return false;
      return true;
    }, 30_000, 'e serves every object written');
    await readsBack(e, written);

    step('kill -9');
    // kill -9 of a keyless member: the others see it dead, repair restores three copies, reads go on.
    const code = await c.kill9();
    expect(c.child.signalCode).toBe('SIGKILL');
    expect(code).toBe(null);
    await waitFor(async () => (await memberOf(a, c.peerId))?.state === 'dead', 20_000, 'c dead on a');
    const blocks = (await heldBlocks(a)).sort();
    expect(blocks.length).toBeGreaterThan(0);
    await dbApi.json(a, '/db/flush', 'POST', { replicas: 3 });
    await readsBack(b, written);

    step('restore');
    // b, a keyed member, loses its disk: destroyed, revoked, and a new node restored from the cluster
    // as docs/operations.md "Restoring from the cluster" says (join --database, restore, start).
    await b.kill9();
    fs.rmSync(b.dir, { recursive: true, force: true });
    expect((await ouro(['cluster', '--dir', a.dir, 'revoke', b.peerId])).code).toBe(0);
    const fDir = tempDir();
    await admitWithDb(a, key, fDir);
    const restored = await ouro(['--json', '--key-file', key, 'restore', fDir]);
    expect(restored.code, restored.stderr).toBe(0);
    expect((JSON.parse(restored.stdout) as { objects: number }).objects).toBeGreaterThanOrEqual(written.length);
    const f = await startNode(fDir, [], ['--key-file', key]);
    nodes.push(f);
    await readsBack(f, written);

    step('drain');
    // Drain d: it moves its blocks, then leaves. It shows as left, not revoked, everywhere.
    const drained = await ouroJson<{ left: boolean }>(['node', 'drain', d.dir]);
    expect(drained.left).toBe(true);
    await waitFor(async () => (await memberOf(a, d.peerId))?.status === 'left', 20_000, 'd left on a');
    expect((await memberOf(a, b.peerId))?.status).toBe('revoked');
    await readsBack(a, written);
    await readsBack(f, written);

    step('ledger and metrics');
    // The ledger and the metrics answer.
    const ledger = await ouro(['cluster', '--dir', a.dir, 'ledger']);
    expect(ledger.code, ledger.stderr).toBe(0);
    const metrics = await (await fetch(`${a.run.admin}/metrics`)).text();
    expect(metrics).toMatch(/ouro_proofs_total\{result="fail"\} 0/);
  }));
});
