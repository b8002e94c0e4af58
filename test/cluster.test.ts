/**
 * The cluster between real `ouro node` processes on loopback QUIC (issue 6): joins by token and
 * by approval, rejection, revocation cutting a peer off (checked with a real libp2p node holding
 * the revoked identity), convergence after concurrent approvals and after a restart, a killed
 * member declared dead within the documented time, hostile frames that change nothing, the
 * admin API's token rule, and the node's clean SIGTERM. Processes are always killed afterwards
 * (test/cluster-harness.ts).
 */
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Carrier, HEARTBEAT_PROTOCOL, type MemberList, encodeFrame, loadIdentity, protocolId } from '../carrier/index.js';
import { signedBytes } from '../carrier/membership.js';
import { FAST, FAST_FLAGS, type NodeProc, converged, founder, joinByToken, ouro, ouroJson, startNode, waitFor } from './cluster-harness.js';
import { tempDir } from './helpers.js';
import { HOSTILE_FRAMES, rawExchange } from './raw-frames.js';

const carriers = new Set<Carrier>();
afterEach(async () => {
  await Promise.all([...carriers].map((c) => c.stop().catch(() => {})));
  carriers.clear();
});

/** A plain libp2p node in this process with the identity kept in `dir` (new if empty). */
async function stranger(dir = tempDir()): Promise<Carrier> {
  const c = await Carrier.start({ dir });
  carriers.add(c);
  return c;
}

const ids = (nodes: NodeProc[]) => nodes.map((n) => n.peerId);

/** How late a loaded machine may run a detector's ticks past the documented bound (as the waits allow). */
const LOADED_MACHINE_SLACK_MS = 10_000;

/** Binds the UDP port of a node's QUIC address, so that a restart cannot listen there again. */
async function holdPort(address: string): Promise<dgram.Socket> {
  const [, , ip, , port] = address.split('/');
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(Number(port), ip, () => resolve());
  });
  return socket;
}

describe('cluster of node processes', () => {
  it('three nodes: a token admits at once, a request waits for approval, a rejected peer stays out; all agree', async () => {
    const a = await founder();
    // A token admits at once, and only once.
    const { token } = await ouroJson<{ token: string }>(['cluster', '--dir', a.dir, 'token', '--ttl', '5m']);
    const bDir = tempDir();
    expect((await ouroJson<{ status: string }>(['node', 'join', bDir, '--peer', a.address, '--token', token, ...FAST_FLAGS])).status).toBe('joined');
    const b = await startNode(bDir);
    const reused = await ouro(['node', 'join', tempDir(), '--peer', a.address, '--token', token, ...FAST_FLAGS]);
    expect(`${reused.code} ${reused.stderr}`).toMatch(/^9 /);
    expect(reused.stderr).toContain('OURO_REFUSED');

    // Without a token: pending until an operator approves; the started node keeps asking.
    const cDir = tempDir();
    const asked = await ouroJson<{ status: string; peerId: string }>(['node', 'join', cDir, '--peer', b.address, '--wait', '0', ...FAST_FLAGS]);
    expect(asked.status).toBe('pending');
    const c = await startNode(cDir);
    expect((await b.members()).members.map((m) => m.peerId)).not.toContain(c.peerId);
    const pending = await ouroJson<{ pending: Array<{ peerId: string }> }>(['cluster', '--dir', b.dir, 'pending']);
    expect(pending.pending.map((p) => p.peerId)).toEqual([c.peerId]);
    await ouroJson(['cluster', '--dir', b.dir, 'approve', c.peerId]);
    await waitFor(() => converged([a, b, c], ids([a, b, c])), 20_000, 'three nodes to agree');
    await waitFor(() => c.logs.some((l) => l.event === 'joined'));

    // Rejected: its requests are refused from then on, and it reaches no member-only protocol.
    const dDir = tempDir();
    const d = await ouroJson<{ peerId: string; status: string }>(['node', 'join', dDir, '--peer', a.address, '--wait', '0', ...FAST_FLAGS]);
    expect(d.status).toBe('pending');
    await ouroJson(['cluster', '--dir', a.dir, 'reject', d.peerId]);
    const again = await ouro(['node', 'join', dDir, '--peer', a.address, '--wait', '0', ...FAST_FLAGS]);
    expect(again.code).toBe(9);
    const rejected = await stranger(dDir);
    expect(rejected.peerId).toBe(d.peerId);
    await expect(rejected.request(a.address, protocolId('ping'), {})).rejects.toMatchObject({ code: 'OURO_REFUSED' });
    await expect(rejected.request(a.address, protocolId('heartbeat'), { v: 1, list: {} })).rejects.toMatchObject({ code: 'OURO_REFUSED' });
    expect(a.logs.filter((l) => l.event === 'join-rejected' && l.by === 'operator').map((l) => l.peer)).toEqual([d.peerId]);

    // Members reach the member-only protocols.
    for (const n of [a, b, c]) expect((await n.get<{ role: string }>('/status')).role).toBe('member');
  });

  it('a revoked member is cut off at once, told so, and refused by every member', async () => {
    const a = await founder();
    const b = await joinByToken(a);
    const c = await joinByToken(b);
    const all = [a, b, c];
    await waitFor(() => converged(all, ids(all)), 20_000, 'three nodes to agree');

    const r = await ouroJson<{ revoked: string }>(['cluster', '--dir', a.dir, 'revoke', c.peerId]);
    expect(r.revoked).toBe(c.peerId);
    // The revoked node heard it from the revoker and stopped taking part.
    await waitFor(async () => (await c.get<{ role: string }>('/status')).role === 'revoked', 5000, 'c to learn it was revoked');
    expect((await fetch(`${c.run.admin}/health`)).status).toBe(503);
    await waitFor(async () => (await b.members()).members.find((m) => m.peerId === c.peerId)?.status === 'revoked', 10_000, 'b to learn of the revocation');
    await waitFor(() => converged([a, b], ids([a, b])));

    // With c's own identity, a real libp2p node gets nothing but refusals.
    expect(await c.stop()).toBe(0);
    const impostor = await stranger(c.dir);
    expect(impostor.peerId).toBe(c.peerId);
    for (const n of [a, b]) {
      await expect(impostor.request(n.address, protocolId('ping'), {})).rejects.toMatchObject({ code: 'OURO_REFUSED' });
      await expect(impostor.request(n.address, protocolId('heartbeat'), { v: 1, list: {} })).rejects.toMatchObject({ code: 'OURO_REFUSED' });
      const join = (await impostor.request(n.address, protocolId('join'), { v: 1, addresses: [] })) as { status: string; reason: string };
      expect(join).toMatchObject({ status: 'rejected', reason: 'revoked' });
    }
    // Revoked stays revoked: approving it again is refused.
    const readmit = await a.post('/cluster/approve', { peerId: c.peerId });
    expect(readmit.status).toBe(404);

    // Leaving is announced: the others see the member gone at once, by its own word.
    await ouroJson(['cluster', '--dir', b.dir, 'leave']);
    expect((await b.get<{ role: string }>('/status')).role).toBe('left');
    const view = await a.members();
    expect(view.members.find((m) => m.peerId === b.peerId)).toMatchObject({ status: 'left', revokedBy: b.peerId, state: null });
    expect(a.logs.some((l) => l.event === 'member-left' && l.peer === b.peerId)).toBe(true);
  });

  it('a member revoked while it was down learns it when it comes back: a refused heartbeat asks why and gets the signed list', async () => {
    const a = await founder();
    const b = await joinByToken(a);
    await waitFor(() => converged([a, b], ids([a, b])), 20_000, 'two nodes to agree');
    expect(await b.stop()).toBe(0);
    // The revoker's one announce cannot reach b now.
    await ouroJson(['cluster', '--dir', a.dir, 'revoke', b.peerId]);
    const back = await startNode(b.dir);
    await waitFor(async () => (await back.get<{ role: string }>('/status')).role === 'revoked', 10_000, 'b to learn it was revoked');
    expect((await fetch(`${back.run.admin}/health`)).status).toBe(503);
    expect(back.logs.some((l) => l.event === 'revoked')).toBe(true);
    // Asking why is not a join request: nothing waits on a.
    expect((await ouroJson<{ pending: unknown[] }>(['cluster', '--dir', a.dir, 'pending'])).pending).toEqual([]);
  });

  it('five nodes converge after concurrent approvals and after a restart; a killed member is dead within the documented time', async () => {
    const a = await founder();
    const b = await joinByToken(a);
    await waitFor(() => converged([a, b], ids([a, b])));
    // Two requests to two different members, approved at the same moment.
    const dirs = [tempDir(), tempDir()];
    const asked = await Promise.all([
      ouroJson<{ peerId: string; status: string }>(['node', 'join', dirs[0]!, '--peer', a.address, '--wait', '0', ...FAST_FLAGS]),
      ouroJson<{ peerId: string; status: string }>(['node', 'join', dirs[1]!, '--peer', b.address, '--wait', '0', ...FAST_FLAGS]),
    ]);
    expect(asked.map((x) => x.status)).toEqual(['pending', 'pending']);
    const [c, d] = await Promise.all(dirs.map((dir) => startNode(dir)));
    await Promise.all([ouroJson(['cluster', '--dir', a.dir, 'approve', c!.peerId]), ouroJson(['cluster', '--dir', b.dir, 'approve', d!.peerId])]);
    const e = await joinByToken(d!);
    let all = [a, b, c!, d!, e];
    await waitFor(() => converged(all, ids(all)), 30_000, 'five nodes to agree after concurrent approvals');

    // d restarts (on the port it had: its config says any free one, and that one is free); while
    // it is down, e is revoked. It comes back and catches up.
    expect(await d!.stop()).toBe(0);
    expect(d!.logs.some((l) => l.event === 'stop')).toBe(true);
    await ouroJson(['cluster', '--dir', a.dir, 'revoke', e.peerId]);
    const d2 = await startNode(d!.dir);
    expect(d2.address).toBe(d!.address);
    all = [a, b, c!, d2];
    await waitFor(() => converged(all, ids(all)), 30_000, 'four nodes to agree after the restart');
    expect((await d2.members()).members.find((m) => m.peerId === e.peerId)?.status).toBe('revoked');

    // kill -9: the others see suspect, then dead, within deadAfterMs plus a heartbeat round.
    // Checked on the order of events, not on this process's clock: before the kill no member
    // ever had c dead; after it, each one's last two transitions for c are to suspect and then
    // to dead, each after its timeout of silence as its own detector measured it (since c last
    // answered), and nothing follows (c is never heard again). The documented bound (docs/node.md:
    // dead between deadAfterMs and deadAfterMs + intervalMs after the last answer) is kept on
    // that same measure, with slack for a loaded machine's late ticks.
    const others = [a, b, d2];
    const transitions = (n: NodeProc) => n.logs.filter((l) => l.event === 'member-state' && l.peer === c!.peerId);
    for (const n of others) expect(transitions(n).filter((l) => l.to === 'dead')).toEqual([]);
    await c!.kill9();
    await waitFor(async () => (await Promise.all(others.map((n) => n.members()))).every((v) => v.members.find((m) => m.peerId === c!.peerId)?.state === 'dead'), FAST.deadAfterMs + 10_000, 'c to be dead everywhere');
    for (const n of others) {
      await waitFor(() => transitions(n).some((l) => l.to === 'dead'), 10_000, 'the dead transition in the log');
      const seen = transitions(n);
      const dead = seen.find((l) => l.to === 'dead');
      expect(seen.some((l) => l.to === 'suspect')).toBe(true);
      expect(seen.slice(-2).map((l) => `${String(l.from)}>${String(l.to)}`)).toEqual(['alive>suspect', 'suspect>dead']);
      expect(seen.at(-2)!.silentMs as number).toBeGreaterThanOrEqual(FAST.suspectAfterMs);
      expect(seen.at(-1)).toBe(dead);
      // Declared no earlier than the timeout allows, and (give or take the slack) no later than the documented bound.
      expect(dead).toBeDefined();
      expect(dead!.silentMs as number).toBeGreaterThanOrEqual(FAST.deadAfterMs);
      expect(dead!.silentMs as number).toBeLessThanOrEqual(FAST.deadAfterMs + FAST.intervalMs + LOADED_MACHINE_SLACK_MS);
    }
    // A few heartbeat rounds later, still nothing followed: c stays dead, declared once.
    const settled = others.map((n) => transitions(n).length);
    await new Promise((r) => setTimeout(r, 5 * FAST.intervalMs));
    expect(others.map((n) => transitions(n).length)).toEqual(settled);
    const metrics = await (await fetch(`${a.run.admin}/metrics`)).text();
    expect(metrics).toMatch(/ouro_cluster_members\{state="dead"\} 1/);
    expect(metrics).toMatch(/ouro_member_transitions_total\{to="dead"\} [1-9]/);
  });

  it("a member's new address is not lost to another member's concurrent address change", async () => {
    const a = await founder();
    const [x, y] = [await joinByToken(a), await joinByToken(a)].sort((p, q) => (p.peerId < q.peerId ? -1 : 1));
    await waitFor(() => converged([a, x!, y!], ids([a, x!, y!])), 20_000, 'three members');
    // Both stop; x comes back on a new port (its old one is taken here, so it cannot have it
    // back) and a learns where (x's change, epoch e+1 by x).
    expect(await x!.stop()).toBe(0);
    expect(await y!.stop()).toBe(0);
    const taken = await Promise.all([x!, y!].map((n) => holdPort(n.address)));
    const x2 = await startNode(x!.dir);
    expect(x2.address).not.toBe(x!.address);
    expect(x2.logs.some((l) => l.event === 'listen-port-taken')).toBe(true);
    const listed = async (n: NodeProc, peer: string) => (await n.members()).members.find((m) => m.peerId === peer)?.addresses;
    await waitFor(async () => JSON.stringify(await listed(a, x2.peerId)) === JSON.stringify(x2.run.addresses), 20_000, "a to list x's new address");
    // y comes back with its list from before x's change and puts its own new address in it: epoch
    // e+1 too, by a higher peer id. Its list has the word on the rest, but x's address set at
    // e+1 beats the old one y carries, set earlier.
    const y2 = await startNode(y!.dir);
    expect(y2.address).not.toBe(y!.address);
    for (const t of taken) t.close();
    const all = [a, x2, y2];
    await waitFor(
      async () => {
        for (const n of all) for (const m of all) if (JSON.stringify(await listed(n, m.peerId)) !== JSON.stringify(m.run.addresses)) return false;
        return converged(all, ids(all));
      },
      20_000,
      'every member listing every member where it listens now',
    );
    // x put its address back once, at its start: y's list, with the word on epochs, no longer
    // brings back x's old address (each member's addresses carry the epoch they were set in;
    // before, x had to put its own back a second time).
    expect(x2.logs.filter((l) => l.event === 'own-addresses').length).toBe(1);
  });

  it('malformed, oversized and unknown-protocol frames get clean errors and do not crash a member', async () => {
    const a = await founder();
    const b = await joinByToken(a);
    const sDir = tempDir();
    const s = await stranger(sDir);
    await s.node.dial((await import('@multiformats/multiaddr')).multiaddr(a.address));
    await expect(s.request(a.address, '/ouro/nope/1', {})).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });
    // The join protocol is open to strangers, so it reads their frames: each bad one gets OURO_PROTOCOL.
    for (const bytes of HOSTILE_FRAMES) {
      expect(await rawExchange(s, protocolId('join'), bytes)).toEqual([{ ok: false, code: 'OURO_PROTOCOL', message: expect.any(String) }]);
    }
    // Well-framed but wrong shapes.
    for (const message of [null, 42, { v: 2, addresses: [] }, { v: 1, addresses: 'x' }, { v: 1, addresses: Array(100).fill('/ip4/1.2.3.4') }]) {
      await expect(s.request(a.address, protocolId('join'), message)).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });
    }
    // Over the member's 4 MiB limit, from its length alone.
    const big = await Carrier.start({ dir: tempDir(), maxFrameBytes: 16 * 1024 * 1024 });
    carriers.add(big);
    await expect(big.request(a.address, protocolId('join'), new Uint8Array(5 * 1024 * 1024))).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });
    // A member sending a forged list in a heartbeat gets an error; nothing changes. b's identity
    // (b stopped) sends heartbeat frames as a member does ({ v: 1, list }, carrier/node.ts), with
    // lists made from a's: one that adds the stranger with a made-up approval, one at a higher
    // epoch with another replication factor (both with a's signature altered), and that one
    // signed by the stranger, who is no member. A list bearing a's own signature is taken for
    // a's own list and not read at all: ignored, whatever it carries.
    const membersFile = path.join(a.dir, 'cluster', 'members.json');
    const before = fs.readFileSync(membersFile, 'utf8');
    const viewBefore = await a.members();
    const list = JSON.parse(before) as MemberList;
    expect(await b.stop()).toBe(0);
    const asB = await stranger(b.dir);
    expect(asB.peerId).toBe(b.peerId);
    await asB.node.dial((await import('@multiformats/multiaddr')).multiaddr(a.address));
    const sKey = await loadIdentity(sDir);
    const altered = (list.signature[0] === '0' ? '1' : '0') + list.signature.slice(1);
    const addsStranger: MemberList = { ...list, epoch: list.epoch + 1, approvals: [...list.approvals, { peerId: s.peerId, approvedBy: b.peerId, sig: list.approvals[0]!.sig }], signature: altered };
    const reFactored: MemberList = { ...list, epoch: list.epoch + 1, replication: { factor: 1, ec: null, epoch: list.epoch + 1, by: b.peerId }, signature: altered };
    const byStranger: MemberList = { ...reFactored, signer: s.peerId };
    byStranger.signature = Buffer.from(await sKey.sign(signedBytes(byStranger))).toString('hex');
    const forgeries: Array<[MemberList, RegExp]> = [
      [addsStranger, /does not chain back to the founder/],
      [reFactored, /bad signature/],
      [byStranger, /who is not a member/],
    ];
    for (const [forged, why] of forgeries) {
      const replies = await rawExchange(asB, HEARTBEAT_PROTOCOL, encodeFrame({ v: 1, list: forged }));
      expect(replies).toEqual([{ ok: false, code: 'OURO_PROTOCOL', message: expect.stringMatching(why) }]);
    }
    // The same by the carrier's own request path (the shared session a member's heartbeats take).
    await expect(asB.request(a.address, HEARTBEAT_PROTOCOL, { v: 1, list: byStranger })).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });
    // Bearing a's own signature: taken for a's own list, so never read (the checks below show it
    // changed nothing): the reply carries no list, only what a says of itself.
    const aboutA = { name: null, keyed: false };
    expect(await rawExchange(asB, HEARTBEAT_PROTOCOL, encodeFrame({ v: 1, list: { ...addsStranger, signature: list.signature } }))).toEqual([{ ok: true, body: aboutA }]);
    // The genuine list from the same identity is a heartbeat a takes: the forgeries were refused
    // for what they carried, not for who sent them.
    expect(await rawExchange(asB, HEARTBEAT_PROTOCOL, encodeFrame({ v: 1, list }))).toEqual([{ ok: true, body: aboutA }]);
    // Without name and keyed it is an older release's heartbeat (taken, above); with them wrong, malformed.
    for (const bad of [{ name: 5, keyed: true }, { name: 'x'.repeat(65), keyed: true }, { name: 'ok' }]) {
      expect(await rawExchange(asB, HEARTBEAT_PROTOCOL, encodeFrame({ v: 1, list, ...bad }))).toEqual([{ ok: false, code: 'OURO_PROTOCOL', message: expect.stringMatching(/name or keyed/) }]);
    }
    expect(fs.readFileSync(membersFile, 'utf8')).toBe(before);
    const viewAfter = await a.members();
    expect({ epoch: viewAfter.epoch, signer: viewAfter.signer, members: viewAfter.members.map((m) => m.peerId).sort() }).toEqual({ epoch: viewBefore.epoch, signer: viewBefore.signer, members: viewBefore.members.map((m) => m.peerId).sort() });
    await asB.stop();
    carriers.delete(asB);
    expect(a.child.exitCode).toBe(null);
    expect((await a.get<{ status: string }>('/health')).status).toBe('ok');
    const b2 = await startNode(b.dir);
    await waitFor(() => converged([a, b2], ids([a, b2])));
    expect((await s.request(a.address, protocolId('join'), { v: 1, addresses: [] })) as { status: string }).toMatchObject({ status: 'pending' });
  });

  it('a node with its database: identity sealed under it, stats in /status and /metrics, closed on SIGTERM', async () => {
    const dir = tempDir();
    const keyFile = path.join(tempDir(), 'key');
    fs.writeFileSync(keyFile, Buffer.alloc(32, 7).toString('hex'));
    await ouroJson(['--key-file', keyFile, 'node', 'init', dir, '--new-cluster', '--database', ...FAST_FLAGS]);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'node-identity.json'), 'utf8'))).toHaveProperty('sealed');
    // Data written into the node's database by the ordinary CLI while the node is down.
    const src = path.join(tempDir(), 'hello.txt');
    fs.writeFileSync(src, 'hello, node');
    expect((await ouro(['--key-file', keyFile, 'put', path.join(dir, 'db'), src])).code).toBe(0);
    const a = await startNode(dir, [], ['--key-file', keyFile]);
    expect((await a.get<{ database: { objects: number } }>('/status')).database.objects).toBeGreaterThanOrEqual(1);
    expect(await (await fetch(`${a.run.admin}/metrics`)).text()).toMatch(/ouro_db_items\{kind="objects"\} [1-9]/);
    expect(await a.stop()).toBe(0);
    // Closed: the database opens at once in another process (a held lock would be exit 7), data intact.
    const stats = await ouroJson<{ objects: number }>(['--key-file', keyFile, 'stats', path.join(dir, 'db')]);
    expect(stats.objects).toBeGreaterThanOrEqual(1);
    // The wrong key opens neither the database nor the identity. The database refuses it first:
    const wrong = path.join(tempDir(), 'wrong');
    fs.writeFileSync(wrong, Buffer.alloc(32, 8).toString('hex'));
    const refused = await ouro(['--key-file', wrong, 'node', 'start', dir]);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(/does not unlock this database/);
    // and beside a database it does open, the sealed identity refuses it: the node does not start.
    fs.renameSync(path.join(dir, 'db'), path.join(dir, 'db.own'));
    expect((await ouro(['--key-file', wrong, 'init', path.join(dir, 'db')])).code).toBe(0);
    const unsealed = await ouro(['--key-file', wrong, 'node', 'start', dir]);
    expect(unsealed.code, unsealed.stderr).toBe(4);
    expect(unsealed.stderr).toMatch(/does not unseal .*node-identity\.json/);
    expect(fs.existsSync(path.join(dir, 'node.run.json'))).toBe(false);
  });

  it('admin API: reads are open on loopback, changes need the token; off loopback everything needs it; SIGTERM exits 0', async () => {
    const a = await founder();
    const unauth = await fetch(`${a.run.admin}/cluster/token`, { method: 'POST', body: JSON.stringify({ ttlSec: 60 }) });
    expect(unauth.status).toBe(401);
    expect((await a.post('/cluster/token', { ttlSec: 60 })).status).toBe(200);
    expect((await a.post('/cluster/approve', {})).body).toMatchObject({ error: { code: 'OURO_BAD_ARGUMENT' } });
    const metrics = await (await fetch(`${a.run.admin}/metrics`)).text();
    expect(metrics).toContain('ouro_member_list_epoch');
    expect(metrics).toContain('ouro_process_cpu_user_seconds_total');
    expect(await a.stop()).toBe(0);

    // Bound to every interface, every request needs a token: the node's stable one, the same as
    // on loopback (admin-tokens.json), unless the config sets one; a bare token is refused.
    const wide = await startNode(a.dir, ['--admin-host', '0.0.0.0']);
    expect(wide.run.token).toBe(a.run.token);
    expect((await fetch(`${wide.run.admin}/members`)).status).toBe(401);
    expect((await fetch(`${wide.run.admin}/members`, { headers: { authorization: a.run.token } })).status).toBe(401);
    expect((await fetch(`${wide.run.admin}/members`, { headers: { authorization: `Bearer ${a.run.token}` } })).status).toBe(200);
    expect(await wide.stop()).toBe(0);
    const config = JSON.parse(fs.readFileSync(path.join(a.dir, 'ouro-node.json'), 'utf8')) as { admin: { token: string | null } };
    config.admin.token = 'a-long-enough-admin-token';
    fs.writeFileSync(path.join(a.dir, 'ouro-node.json'), JSON.stringify(config));
    const open = await startNode(a.dir, ['--admin-host', '0.0.0.0']);
    expect(open.run.token).toBe('a-long-enough-admin-token');
    expect((await fetch(`${open.run.admin}/members`)).status).toBe(401);
    expect((await fetch(`${open.run.admin}/members`, { headers: { authorization: 'Bearer a-long-enough-admin-token' } })).status).toBe(200);
    // A config change while running is logged, never applied.
    fs.writeFileSync(path.join(a.dir, 'ouro-node.json'), JSON.stringify({ ...config, log: { level: 'debug' } }));
    await waitFor(() => open.logs.some((l) => l.event === 'config-changed'), 10_000, 'the config change to be logged');
    expect(open.logs.some((l) => l.event === 'heartbeat-failed' || l.level === 20)).toBe(false);
    expect(await open.stop()).toBe(0);
    expect(fs.existsSync(path.join(a.dir, 'node.run.json'))).toBe(false);
  });

  it('ouro node token rotate: a running node takes the new token at once and the cluster commands keep working; a stopped one at its next start', async () => {
    const a = await founder();
    const before = a.run.token;
    const read = await ouroJson<{ scope: string; token: string }>(['node', 'token', 'rotate', a.dir, '--scope', 'read']);
    expect(read.scope).toBe('read');
    const readOnly = { authorization: `Bearer ${read.token}` };
    expect((await fetch(`${a.run.admin}/metrics`, { headers: readOnly })).status).toBe(200);
    expect((await fetch(`${a.run.admin}/cluster/token`, { method: 'POST', headers: readOnly, body: JSON.stringify({ ttlSec: 60 }) })).status).toBe(403);

    const rotated = await ouroJson<{ token: string }>(['node', 'token', 'rotate', a.dir]);
    expect(rotated.token).not.toBe(before);
    expect((await a.post('/cluster/token', { ttlSec: 60 })).status).toBe(401); // a.run holds the old token
    const members = await ouroJson<{ members: unknown[] }>(['cluster', '--dir', a.dir, 'members']);
    expect(members.members).toHaveLength(1);
    expect(await a.stop()).toBe(0);

    const offline = await ouroJson<{ token: string }>(['node', 'token', 'rotate', a.dir]);
    const again = await startNode(a.dir);
    expect(again.run.token).toBe(offline.token);
    expect((await again.post('/cluster/token', { ttlSec: 60 })).status).toBe(200);
    expect((await ouro(['node', 'token', 'rotate', a.dir, '--scope', 'everything'])).code).toBe(2);
    expect(await again.stop()).toBe(0);
  });
});
