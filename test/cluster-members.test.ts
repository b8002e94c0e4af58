/**
 * Membership as an operator meets it (issue 30, "An operator's day"), between real `ouro node`
 * processes: why a join was refused, on both sides; hints that work as printed; names and roles in
 * `/members`; a member approved but never started is `unknown`, not `alive`; `left` kept apart
 * from `revoked`, across a restart too; and a node that joined with `--database` and waited for
 * approval takes the cluster's database by itself once approved.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { RunInfo } from '../carrier/admin.js';
import { FAST, FAST_FLAGS, type LogLine, type NodeProc, REPL_FLAGS, converged, dbApi, founderWithDb, keyFile, ouro, ouroJson, startNode, waitFor } from './cluster-harness.js';
import { tempDir } from './helpers.js';

const member = async (n: NodeProc, peerId: string) => (await n.members()).members.find((m) => m.peerId === peerId);
const rejections = (n: NodeProc) => n.logs.filter((l: LogLine) => l.event === 'join-rejected');

describe('membership for an operator', () => {
  it('refusals say why on both sides; hints work as printed; names and roles; unknown until heard; left is not revoked', async () => {
    const aDir = tempDir();
    await ouroJson(['node', 'init', aDir, '--new-cluster', '--name', 'alpha', ...FAST_FLAGS]);
    const a = await startNode(aDir);
    const clusterId = (await a.get<{ clusterId: string }>('/status')).clusterId;

    // Every kind of bad token is refused with its own reason: printed by the joiner (exit 9,
    // OURO_REFUSED), in its --json answer, and logged by the member with the same code.
    const secret = () => crypto.randomBytes(32).toString('base64url');
    const tryToken = async (token: string) => {
      const r = await ouro(['--json', 'node', 'join', tempDir(), '--peer', a.address, '--token', token, ...FAST_FLAGS]);
      expect(r.code, r.stderr).toBe(9);
      expect(r.stderr).toContain('[OURO_REFUSED]');
      return { stderr: r.stderr, reason: (JSON.parse(r.stdout) as { reason: string }).reason };
    };
    expect(await tryToken('not-a-token')).toMatchObject({ reason: 'token-malformed', stderr: expect.stringContaining('the token is malformed') });
    expect(await tryToken(`ouro-join-v1.${'0'.repeat(32)}.${secret()}`)).toMatchObject({ reason: 'token-foreign', stderr: expect.stringContaining('made for another cluster') });
    expect(await tryToken(`ouro-join-v1.${clusterId}.${secret()}`)).toMatchObject({ reason: 'token-unknown', stderr: expect.stringContaining('no member asked made this token') });
    const short = await ouroJson<{ token: string; expiresAt: number }>(['cluster', '--dir', a.dir, 'token', '--ttl', '1s']);
    await waitFor(() => Date.now() > short.expiresAt + 50, 5000, 'the token to expire');
    expect(await tryToken(short.token)).toMatchObject({ reason: 'token-expired', stderr: expect.stringContaining('the token expired') });

    // A token admits once; a second try is told it was used. b is named, and every member shows it.
    const { token } = await ouroJson<{ token: string }>(['cluster', '--dir', a.dir, 'token', '--ttl', '5m']);
    const bDir = tempDir();
    expect((await ouroJson<{ status: string }>(['node', 'join', bDir, '--peer', a.address, '--token', token, '--name', 'beta', ...FAST_FLAGS])).status).toBe('joined');
    expect(await tryToken(token)).toMatchObject({ reason: 'token-used', stderr: expect.stringContaining('already used') });
    expect(rejections(a).map((l) => l.reason)).toEqual(['token-malformed', 'token-foreign', 'token-unknown', 'token-expired', 'token-used']);
    expect(rejections(a).every((l) => typeof l.peer === 'string' && l.level === 40)).toBe(true);

    const b = await startNode(bDir);
    await waitFor(() => converged([a, b], [a.peerId, b.peerId]), 20_000, 'a and b to agree');
    for (const n of [a, b]) {
      expect(await member(n, a.peerId)).toMatchObject({ name: 'alpha', role: 'founder', status: 'member', addresses: [a.address] });
      expect(await member(n, b.peerId)).toMatchObject({ name: 'beta', role: 'keyless', status: 'member', addresses: [b.address] });
    }

    // A pending join's hint names the member's node directory, as `ouro cluster` needs it.
    const cDir = tempDir();
    const asked = await ouro(['node', 'join', cDir, '--peer', a.address, '--wait', '0', ...FAST_FLAGS]);
    expect(asked.code, asked.stderr).toBe(0);
    const c = /ouro cluster --dir DIR approve (\S+)`/.exec(asked.stdout)?.[1];
    expect(c, asked.stdout).toBeDefined();
    expect(asked.stdout).toContain("(DIR: that member's node directory)");
    const approved = await ouro(['cluster', '--dir', a.dir, 'approve', c!]);
    expect(approved.stdout.trim()).toBe(`approved ${c}`);
    // Approved, never started: never heard from, so not alive (unknown, then dead once silent
    // for deadAfterMs), and no role until it says.
    const fresh = await member(a, c!);
    expect(fresh).toMatchObject({ status: 'member', lastHeard: null, role: null, name: null });
    expect(['unknown', 'dead']).toContain(fresh!.state);
    await waitFor(async () => (await member(a, c!))?.state === 'dead', FAST.deadAfterMs + 10_000, 'c to be dead');
    expect(a.logs.filter((l) => l.event === 'member-state' && l.peer === c).map((l) => `${String(l.from)}>${String(l.to)}`)).toEqual(['unknown>dead']);

    // Rejected by an operator: printed as such, and said so to the joiner when it asks again.
    const dDir = tempDir();
    const d = await ouroJson<{ peerId: string }>(['node', 'join', dDir, '--peer', a.address, '--wait', '0', ...FAST_FLAGS]);
    expect((await ouro(['cluster', '--dir', a.dir, 'reject', d.peerId])).stdout.trim()).toBe(`rejected ${d.peerId}`);
    const again = await ouro(['node', 'join', dDir, '--peer', a.address, '--wait', '0', ...FAST_FLAGS]);
    expect(again.code).toBe(9);
    expect(again.stdout).toContain('join rejected: an operator of the member rejected this node');

    // b leaves: `left`, not `revoked`, on every view, in its own /health, and after its restart.
    await ouroJson(['cluster', '--dir', b.dir, 'leave']);
    await waitFor(async () => (await member(a, b.peerId))?.status === 'left', 10_000, 'a to see b left');
    expect(await member(a, b.peerId)).toMatchObject({ status: 'left', revokedBy: b.peerId, state: null });
    expect((await ouro(['cluster', '--dir', a.dir, 'members'])).stdout).toMatch(new RegExp(`${b.peerId}  beta  keyless  left`));
    const health = async (n: NodeProc) => {
      const res = await fetch(`${n.run.admin}/health`);
      return { code: res.status, status: ((await res.json()) as { status: string }).status };
    };
    expect(await health(b)).toEqual({ code: 503, status: 'left' });
    expect(await b.stop()).toBe(0);
    const b2 = await startNode(b.dir);
    expect(await health(b2)).toEqual({ code: 503, status: 'left' });
    expect((await b2.get<{ role: string }>('/status')).role).toBe('left');
    expect(b2.logs.find((l) => l.event === 'left' || l.event === 'revoked')).toMatchObject({ event: 'left' });
    expect(await member(b2, b.peerId)).toMatchObject({ status: 'left', self: true });
  });

  it('a node that joined with --database and waited for approval takes the database by itself once approved', async () => {
    const key = keyFile();
    const a = await founderWithDb(key);
    const written = await dbApi.put(a, 'written before the join', { key: 'before' });
    await dbApi.json(a, '/db/flush', 'POST', {});

    const dir = tempDir();
    const asked = await ouro(['--key-file', key, 'node', 'join', dir, '--peer', a.address, '--database', '--wait', '0', ...FAST_FLAGS, ...REPL_FLAGS]);
    expect(asked.code, asked.stderr).toBe(0);
    expect(asked.stdout).toContain("takes the cluster's database once approved");
    expect(fs.existsSync(path.join(dir, 'db', 'OURODB.json'))).toBe(false);

    // Started while pending: it runs (without the database) and keeps asking.
    const e = await startNode(dir, [], ['--key-file', key]);
    expect((await e.get<{ role: string; database: unknown }>('/status'))).toMatchObject({ role: 'joining', database: null });
    await ouroJson(['cluster', '--dir', a.dir, 'approve', e.peerId]);
    // Once approved it takes the database and goes on with it, in the same process.
    await waitFor(() => e.logs.some((l) => l.event === 'database-taken'), 20_000, 'the database to be taken');
    await waitFor(() => e.logs.filter((l) => l.event === 'admin').length === 2 && fs.existsSync(path.join(dir, 'node.run.json')), 20_000, 'the node to run with it');
    e.run = JSON.parse(fs.readFileSync(path.join(dir, 'node.run.json'), 'utf8')) as RunInfo;
    expect(e.child.exitCode).toBeNull();
    expect((await e.get<{ role: string; database: unknown }>('/status')).database).not.toBeNull();
    expect(fs.existsSync(path.join(dir, 'cluster', 'join.json'))).toBe(false);
    // The same database as the cluster's: it reads what a wrote, and a sees a keyed member.
    await waitFor(async () => (await dbApi.get(e, '/db/value?key=before')).status === 200, 20_000, 'e to read what a wrote');
    expect((await dbApi.value(e, written.hash)).toString()).toBe('written before the join');
    await waitFor(async () => (await member(a, e.peerId))?.role === 'keyed', 10_000, 'a to see e keyed');

    // `ouro restore` says what its counts mean.
    expect(await e.stop()).toBe(0);
    const restored = await ouro(['--key-file', key, 'restore', dir]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stdout).toMatch(/^restored \d+ objects \(\d+ bytes\) in (\d+) blocks: \d+ fetched from the cluster by this run, \d+ already here$/m);
  });
});
