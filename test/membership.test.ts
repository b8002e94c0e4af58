/**
 * The member list (carrier/membership.ts): certificates chain to the founder, signatures cover
 * everything, strangers and tampering are refused, revocation is permanent, and members that
 * make concurrent changes and gossip in any order converge on the very same signed list.
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import fc from 'fast-check';
import { Packr } from 'msgpackr/pack';
import { describe, expect, it } from 'vitest';
import { type MemberList, change, draining, ecPolicyOf, isMember, members, merge, newCluster, replicationFactorOf, signedBytes, verify } from '../carrier/membership.js';

const idOf = (k: PrivateKey) => peerIdFromPrivateKey(k).toString();
/** The member list's MessagePack settings (carrier/membership.ts), to sign what an older release signed. */
const v4Packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });
const keys = async (n: number) => Promise.all(Array.from({ length: n }, () => generateKeyPair('Ed25519')));

describe('member list', () => {
  it('starts with its founder, approves and revokes members, and every epoch verifies', async () => {
    const [a, b, c] = await keys(3);
    const l1 = await newCluster(a!, ['/ip4/127.0.0.1/udp/1/quic-v1']);
    expect(await verify(l1)).toBe(l1);
    expect(members(l1)).toEqual([idOf(a!)]);
    const l2 = await change(l1, a!, { approve: [{ peerId: idOf(b!), addresses: ['/ip4/127.0.0.1/udp/2/quic-v1'] }] });
    const l3 = await change(l2, b!, { approve: [{ peerId: idOf(c!), addresses: [] }] }); // B approves C: chain A -> B -> C
    await verify(l3);
    expect(l3.epoch).toBe(3);
    expect(new Set(members(l3))).toEqual(new Set([idOf(a!), idOf(b!), idOf(c!)]));
    const l4 = await change(l3, a!, { revoke: [idOf(b!)] });
    await verify(l4); // C stays: its approval by B was valid when made
    expect(isMember(l4, idOf(b!))).toBe(false);
    expect(isMember(l4, idOf(c!))).toBe(true);
    await expect(change(l4, a!, { approve: [{ peerId: idOf(b!), addresses: [] }] })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    await expect(change(l4, b!, { approve: [] })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    const l5 = await change(l4, c!, { leave: true });
    await verify(l5);
    expect(members(l5)).toEqual([idOf(a!)]);
  });

  it('refuses tampering, strangers, forged approvals and lists of another cluster', async () => {
    const [a, b, stranger] = await keys(3);
    const l2 = await change(await newCluster(a!, []), a!, { approve: [{ peerId: idOf(b!), addresses: [] }] });
    const bad = (l: unknown) => expect(verify(l)).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });
    await bad({ ...l2, addresses: { ...l2.addresses, [idOf(b!)]: ['/ip4/6.6.6.6/udp/1/quic-v1'] } });
    await bad({ ...l2, epoch: 99 });
    await bad({ ...l2, revocations: [] , approvals: [...l2.approvals, { peerId: idOf(stranger!), approvedBy: idOf(stranger!), sig: l2.approvals[0]!.sig }] });
    // A stranger founding its own cluster cannot pass it off under ours.
    const theirs = await newCluster(stranger!, []);
    await bad({ ...theirs, clusterId: l2.clusterId });
    await expect(merge(l2, theirs, a!)).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });
    // A stranger signing our list (re-signed with itself as signer) is not a member.
    const { signature: _s, signer: _g, ...content } = l2;
    await bad({ ...content, signer: idOf(stranger!), signature: Buffer.from(await stranger!.sign(new Uint8Array(8))).toString('hex') });
    await bad({ nonsense: true });
    await bad(null);
  });

  it('drains and the replication factor: certified, merged, and version 1 lists still read', async () => {
    const [a, b, c] = await keys(3);
    let l = await newCluster(a!, [], 3);
    l = await change(l, a!, { approve: [{ peerId: idOf(b!), addresses: [] }, { peerId: idOf(c!), addresses: [] }] });
    const drained = await change(l, c!, { drain: [idOf(c!)] });
    await verify(drained);
    expect([...draining(drained)]).toEqual([idOf(c!)]);
    expect(isMember(drained, idOf(c!))).toBe(true); // still a member: it serves until it leaves
    await expect(change(l, a!, { drain: ['12D3KooWnotamember'] })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    await expect(change(l, a!, { replicationFactor: 0 })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    // A drain certificate signed by someone else than it names is refused, as is a changed factor.
    const forged = { ...drained, drains: [{ ...drained.drains[0]!, by: idOf(b!) }] };
    await expect(verify(forged)).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });
    await expect(verify({ ...drained, replication: { ...drained.replication!, factor: 1 } })).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });
    // Concurrent: b sets the factor while c drains; the merge keeps both, in either order.
    const factor = await change(l, b!, { replicationFactor: 2 });
    for (const [x, y] of [[factor, drained], [drained, factor]] as const) {
      const { list } = await merge(x, await verify(y), a!);
      await verify(list);
      expect(replicationFactorOf(list)).toBe(2);
      expect([...draining(list)]).toEqual([idOf(c!)]);
    }
    // Once c leaves, it is no longer draining, just gone.
    expect(draining(await change(drained, c!, { leave: true })).size).toBe(0);

    // A version 1 list (written before drains existed) verifies, and its next change is version 4.
    const { signature: _s, drains: _d, replication: _f, addressEpochs: _e, ...rest } = l;
    const v1Content = { ...rest, version: 1, signer: idOf(a!) };
    const v1 = { ...v1Content, signature: Buffer.from(await a!.sign(signedBytes({ ...v1Content, drains: [], replication: null, addressEpochs: {} }))).toString('hex') };
    const read = await verify(v1);
    expect(read.drains).toEqual([]);
    expect(replicationFactorOf(read)).toBeNull();
    const next = await change(read, a!, { drain: [idOf(b!)] });
    expect(next.version).toBe(5);
    await verify(next);
  });

  it('addresses: per member, the ones set last win, whichever list brings them; version 2 lists still read', async () => {
    const [a, x, y] = await keys(3);
    let l = await newCluster(a!, ['/ip4/127.0.0.1/udp/1/quic-v1']);
    l = await change(l, a!, { approve: [{ peerId: idOf(x!), addresses: ['/ip4/127.0.0.1/udp/2/quic-v1'] }, { peerId: idOf(y!), addresses: ['/ip4/127.0.0.1/udp/3/quic-v1'] }] });
    // x and y restart on new ports at once: each signs its own move on the same list (same epoch).
    const xMoved = await change(l, x!, { addresses: ['/ip4/127.0.0.1/udp/20/quic-v1'] });
    const yMoved = await change(l, y!, { addresses: ['/ip4/127.0.0.1/udp/30/quic-v1'] });
    expect(xMoved.epoch).toBe(yMoved.epoch);
    // Before address epochs, the list with the higher signer id had the word on every address,
    // and one of the two moves was undone until its member noticed and signed it again.
    for (const [mine, theirs, key] of [[xMoved, yMoved, x!], [yMoved, xMoved, y!]] as const) {
      const { list } = await merge(mine, await verify(theirs), key);
      await verify(list);
      expect(list.addresses[idOf(x!)]).toEqual(['/ip4/127.0.0.1/udp/20/quic-v1']);
      expect(list.addresses[idOf(y!)]).toEqual(['/ip4/127.0.0.1/udp/30/quic-v1']);
    }
    // A list with a later epoch that still carries the old addresses (a made three other changes
    // meanwhile) does not bring them back.
    const both = (await merge(xMoved, await verify(yMoved), x!)).list;
    let stale = l;
    for (const rf of [2, 3, 2]) stale = await change(stale, a!, { replicationFactor: rf });
    expect(stale.epoch).toBeGreaterThan(both.epoch);
    const { list: again } = await merge(both, await verify(stale), a!);
    expect(again.addresses[idOf(x!)]).toEqual(['/ip4/127.0.0.1/udp/20/quic-v1']);
    expect(again.addresses[idOf(y!)]).toEqual(['/ip4/127.0.0.1/udp/30/quic-v1']);
    expect(replicationFactorOf(again)).toBe(2);
    // A tampered address epoch breaks the signature.
    await expect(verify({ ...both, addressEpochs: { ...both.addressEpochs, [idOf(x!)]: 1 } })).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });

    // A version 2 list (before address epochs) verifies, reads as every address set at epoch 0,
    // loses to any address set since, and its next change is version 4.
    const { signature: _s, addressEpochs: _e, ...rest } = l;
    const v2Content = { ...rest, version: 2, signer: idOf(a!) };
    const v2 = { ...v2Content, signature: Buffer.from(await a!.sign(signedBytes({ ...v2Content, addressEpochs: {} }))).toString('hex') };
    const read = await verify(v2);
    expect(Object.values(read.addressEpochs)).toEqual([0, 0, 0]);
    const merged = (await merge(read, await verify(xMoved), a!)).list;
    expect(merged.addresses[idOf(x!)]).toEqual(['/ip4/127.0.0.1/udp/20/quic-v1']);
    const next = await change(read, a!, { approve: [] });
    expect(next.version).toBe(5);
    await verify(next);
  });

  it('the ec policy: signed beside the factor, kept by a factor change, merged as the setting set last; version 3 lists read as replicas only', async () => {
    const [a, b] = await keys(2);
    const l = await change(await newCluster(a!, [], 3), a!, { approve: [{ peerId: idOf(b!), addresses: [] }] });
    expect(ecPolicyOf(l)).toBeNull();
    const ec = await change(l, a!, { replicationFactor: 3, ec: { k: 4, m: 2 } });
    expect(ecPolicyOf(await verify(ec))).toEqual({ k: 4, m: 2 });
    // The policy is covered by the signature.
    await expect(verify({ ...ec, replication: { ...ec.replication!, ec: { k: 2, m: 1 } } })).rejects.toMatchObject({ code: 'OURO_PROTOCOL' });
    await expect(change(l, a!, { replicationFactor: 3, ec: { k: 0, m: 2 } })).rejects.toMatchObject({ code: 'OURO_BAD_ARGUMENT' });
    // Changing the factor alone keeps the policy; redundancy replicas N clears it.
    expect(ecPolicyOf(await change(ec, b!, { replicationFactor: 2 }))).toEqual({ k: 4, m: 2 });
    const back = await change(ec, b!, { replicationFactor: 3, ec: null });
    expect(ecPolicyOf(back)).toBeNull();
    for (const [x, y] of [[ec, back], [back, ec]] as const) expect(ecPolicyOf((await merge(x, await verify(y), a!)).list)).toBeNull();
    // A version 3 list (before the policy) verifies and reads as replicas only.
    const { signature: _s, ...rest } = l;
    const v3Content = { ...rest, version: 3, replication: { factor: 3, epoch: 1, by: idOf(a!) } as MemberList['replication'], signer: idOf(a!) };
    const v3 = { ...v3Content, signature: Buffer.from(await a!.sign(signedBytes(v3Content))).toString('hex') };
    const read = await verify(v3);
    expect(replicationFactorOf(read)).toBe(3);
    expect(ecPolicyOf(read)).toBeNull();
    expect((await change(read, a!, { approve: [] })).version).toBe(5);
  });

  it('a revoked member cannot revive itself by gossiping an old list', async () => {
    const [a, b] = await keys(2);
    const l2 = await change(await newCluster(a!, []), a!, { approve: [{ peerId: idOf(b!), addresses: [] }] });
    const l3 = await change(l2, a!, { revoke: [idOf(b!)] });
    const bsOwn = await change(l2, b!, { addresses: ['/ip4/127.0.0.1/udp/9/quic-v1'] }); // epoch 3, by B, without the revocation
    const { list } = await merge(l3, await verify(bsOwn), a!);
    await verify(list);
    expect(isMember(list, idOf(b!))).toBe(false);
  });

  it('a revoked member that kept its key signs nothing that counts: approvals, revocations, drains, the factor (version 5)', async () => {
    const [a, b, c, x, y] = await keys(5);
    let l = await newCluster(a!, [], 3);
    l = await change(l, a!, { approve: [{ peerId: idOf(b!), addresses: [] }, { peerId: idOf(c!), addresses: [] }] });
    const byC = await change(l, c!, { approve: [{ peerId: idOf(y!), addresses: [] }] }); // made before the revocation, and known to A
    l = (await merge(l, await verify(byC), a!)).list;
    const old = l; // C keeps a copy of this list, and its key
    const revoked = await change(l, a!, { revoke: [idOf(c!)] });
    expect(revoked.revocations[0]!.keeps).toEqual([byC.approvals.find((p) => p.peerId === idOf(y!))!.sig]);
    // After its revocation C signs, on its old list: an approval of X, a revocation of B, a drain
    // of A and a new factor. Each list verifies alone (C is a member in it)...
    const forged = await change(old, c!, { approve: [{ peerId: idOf(x!), addresses: [] }], revoke: [idOf(b!)], drain: [idOf(a!)], replicationFactor: 1 });
    await verify(forged);
    // ...but merged with the revocation, in either order, none of it counts; what C signed before
    // the revocation (Y's approval) still does.
    for (const [ours, theirs, key] of [[revoked, forged, a!], [forged, revoked, b!]] as const) {
      const { list } = await merge(ours, await verify(theirs), key);
      await verify(list);
      expect(new Set(members(list))).toEqual(new Set([idOf(a!), idOf(b!), idOf(y!)]));
      expect(draining(list).size).toBe(0);
      expect(replicationFactorOf(list)).toBe(3);
    }
    // A list that carries both (made by hand: no member signs one) is refused outright.
    const { list: merged } = await merge(revoked, await verify(forged), a!);
    const smuggled = { ...merged, approvals: [...forged.approvals].sort((p, q) => (p.peerId < q.peerId ? -1 : 1)) };
    const { signature: _s, ...unsigned } = smuggled;
    const resigned = { ...unsigned, signature: Buffer.from(await a!.sign(signedBytes(unsigned))).toString('hex') };
    await expect(verify(resigned)).rejects.toThrow(/revoked member signed after its revocation/);
    // A member that left and kept its key is held to what it had signed, too.
    const left = await change(old, b!, { leave: true });
    const afterLeaving = await change(old, b!, { approve: [{ peerId: idOf(x!), addresses: [] }] });
    expect(isMember((await merge(left, await verify(afterLeaving), a!)).list, idOf(x!))).toBe(false);
  });

  it('two members revoking each other both stand (nothing tells a concurrent pair from a forged one); version 4 revocations keep everything', async () => {
    const [a, b, c, x] = await keys(4);
    let l = await newCluster(a!, []);
    l = await change(l, a!, { approve: [{ peerId: idOf(b!), addresses: [] }, { peerId: idOf(c!), addresses: [] }] });
    const bRevokesC = await change(l, b!, { revoke: [idOf(c!)] });
    const cRevokesB = await change(l, c!, { revoke: [idOf(b!)] });
    const { list } = await merge(bRevokesC, await verify(cRevokesB), a!);
    expect(members(list)).toEqual([idOf(a!)]);
    // A version 4 revocation (no keeps) voids nothing, the rule before version 5, for it alone;
    // the version 4 list carrying it still reads.
    const cApprovesX = await change(l, c!, { approve: [{ peerId: idOf(x!), addresses: [] }] });
    const { signature: _s, ...content } = l;
    const oldRevocation = { peerId: idOf(c!), by: idOf(a!), sig: Buffer.from(await a!.sign(v4Packr.pack(['ourodb member revocation', l.clusterId, idOf(c!), idOf(a!)]))).toString('hex') };
    const { [idOf(c!)]: _c, ...addresses } = l.addresses;
    const { [idOf(c!)]: _e, ...addressEpochs } = l.addressEpochs;
    const v4Content = { ...content, version: 4, epoch: l.epoch + 1, revocations: [oldRevocation], addresses, addressEpochs, signer: idOf(a!) };
    const v4 = { ...v4Content, signature: Buffer.from(await a!.sign(signedBytes(v4Content))).toString('hex') };
    const { list: withLegacy } = await merge(await verify(v4), await verify(cApprovesX), a!);
    expect(isMember(withLegacy, idOf(x!))).toBe(true);
    expect(isMember(withLegacy, idOf(c!))).toBe(false);
    // The same revocation made now keeps only what C had signed then.
    const rev = await change(l, a!, { revoke: [idOf(c!)] });
    expect(isMember((await merge(rev, await verify(cApprovesX), a!)).list, idOf(x!))).toBe(false);
  });

  it('members making concurrent changes converge on one signed list, whatever the gossip order', async () => {
    const pool = await keys(8);
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ at: fc.nat(3), op: fc.constantFrom('approve', 'revoke', 'move', 'drain', 'factor'), who: fc.nat(7) }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.tuple(fc.nat(3), fc.nat(3)), { minLength: 0, maxLength: 30 }),
        async (changes, gossip) => {
          // Four members A..D share epoch 4; then each makes changes on its own copy.
          let base = await newCluster(pool[0]!, []);
          for (let i = 1; i < 4; i++) base = await change(base, pool[0]!, { approve: [{ peerId: idOf(pool[i]!), addresses: [] }] });
          const views: MemberList[] = [base, base, base, base];
          // Each certificate made, by whom and its signature: one by a member that the founder
          // revoked counts only if the revocation keeps it (version 5).
          const approvalsMade: Array<{ peerId: string; by: string; sig: string }> = base.approvals.map((a) => ({ peerId: a.peerId, by: a.approvedBy, sig: a.sig }));
          const revokedSomewhere = new Set<string>();
          const drainsMade: Array<{ peerId: string; by: string; sig: string }> = [];
          const factorsSet: Array<NonNullable<MemberList['replication']>> = [];
          const keptBy = new Map<string, string[]>();
          for (const c of changes) {
            const key = pool[c.at]!;
            if (!isMember(views[c.at]!, idOf(key))) continue;
            const target = idOf(pool[c.who]!);
            if (c.op === 'approve' && !views[c.at]!.revocations.some((r) => r.peerId === target)) {
              views[c.at] = await change(views[c.at]!, key, { approve: [{ peerId: target, addresses: [`/ip4/10.0.0.${c.who}/udp/1/quic-v1`] }] });
              const a = views[c.at]!.approvals.find((x) => x.peerId === target)!;
              approvalsMade.push({ peerId: target, by: a.approvedBy, sig: a.sig });
            }
            // Revocations by the founder only, who is never revoked: so each one stands, and the
            // model stays simple (revokers revoked, and each other: the examples below).
            if (c.op === 'revoke' && c.at === 0 && c.who !== 0 && isMember(views[c.at]!, target)) {
              views[c.at] = await change(views[c.at]!, key, { revoke: [target] });
              revokedSomewhere.add(target);
              keptBy.set(target, views[c.at]!.revocations.find((r) => r.peerId === target)!.keeps!);
            }
            if (c.op === 'drain' && isMember(views[c.at]!, target)) {
              views[c.at] = await change(views[c.at]!, key, { drain: [target] });
              const d = views[c.at]!.drains.find((x) => x.peerId === target)!;
              drainsMade.push({ peerId: target, by: d.by, sig: d.sig });
            }
            if (c.op === 'factor') {
              views[c.at] = await change(views[c.at]!, key, { replicationFactor: 1 + (c.who % 5) });
              factorsSet.push(views[c.at]!.replication!);
            }
            if (c.op === 'move') views[c.at] = await change(views[c.at]!, key, { addresses: [`/ip4/10.1.0.${c.at}/udp/${c.who}/quic-v1`] });
          }
          const exchange = async (i: number, j: number) => {
            const r = await merge(views[j]!, await verify(views[i]!), pool[j]!);
            views[j] = r.list;
          };
          for (const [i, j] of gossip) if (i !== j) await exchange(i, j);
          // Then rounds of all-pairs gossip until nothing changes (a heartbeat's job).
          for (let round = 0; round < 10; round++) {
            const before = views.map((v) => v.signature).join();
            for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) if (i !== j) await exchange(i, j);
            if (views.map((v) => v.signature).join() === before) break;
          }
          // Every member that was not revoked holds the very same signed list (a revoked one is
          // out of the cluster and keeps its last word).
          const live = views.filter((_, i) => !revokedSomewhere.has(idOf(pool[i]!)));
          expect(new Set(live.map((v) => v.signature)).size).toBe(1);
          await verify(live[0]!);
          // The converged content: everyone approved anywhere by a signer not revoked, or whose
          // revocation keeps that approval, minus everyone revoked anywhere.
          const counts = (by: string, sig: string) => !keptBy.has(by) || keptBy.get(by)!.includes(sig);
          const approvedSomewhere = new Set(approvalsMade.filter((a) => counts(a.by, a.sig)).map((a) => a.peerId));
          expect(new Set(members(live[0]!))).toEqual(new Set([...approvedSomewhere].filter((p) => !revokedSomewhere.has(p))));
          // The factor is the one set last (highest epoch, then setter) among those that count, whoever merged it.
          const mark = (r: NonNullable<MemberList['replication']>) => `replication:${r.factor}:-:${r.epoch}`;
          expect(live[0]!.replication).toEqual(factorsSet.filter((r) => counts(r.by, mark(r))).sort((x, y) => (x.epoch !== y.epoch ? y.epoch - x.epoch : x.by < y.by ? 1 : -1))[0] ?? null);
          const drainedSomewhere = new Set(drainsMade.filter((d) => counts(d.by, d.sig) && approvedSomewhere.has(d.peerId)).map((d) => d.peerId));
          expect(draining(live[0]!)).toEqual(new Set([...drainedSomewhere].filter((p) => !revokedSomewhere.has(p))));
        },
      ),
      { numRuns: 60 },
    );
  }, 120_000);
});
