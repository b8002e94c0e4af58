/**
 * The member list (carrier/membership.ts): certificates chain to the founder, signatures cover
 * everything, strangers and tampering are refused, revocation is permanent, and members that
 * make concurrent changes and gossip in any order converge on the very same signed list.
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type MemberList, change, isMember, members, merge, newCluster, verify } from '../carrier/membership.js';

const idOf = (k: PrivateKey) => peerIdFromPrivateKey(k).toString();
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

  it('a revoked member cannot revive itself by gossiping an old list', async () => {
    const [a, b] = await keys(2);
    const l2 = await change(await newCluster(a!, []), a!, { approve: [{ peerId: idOf(b!), addresses: [] }] });
    const l3 = await change(l2, a!, { revoke: [idOf(b!)] });
    const bsOwn = await change(l2, b!, { addresses: ['/ip4/127.0.0.1/udp/9/quic-v1'] }); // epoch 3, by B, without the revocation
    const { list } = await merge(l3, await verify(bsOwn), a!);
    await verify(list);
    expect(isMember(list, idOf(b!))).toBe(false);
  });

  it('members making concurrent changes converge on one signed list, whatever the gossip order', async () => {
    const pool = await keys(8);
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ at: fc.nat(3), op: fc.constantFrom('approve', 'revoke', 'move'), who: fc.nat(7) }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.tuple(fc.nat(3), fc.nat(3)), { minLength: 0, maxLength: 30 }),
        async (changes, gossip) => {
          // Four members A..D share epoch 4; then each makes changes on its own copy.
          let base = await newCluster(pool[0]!, []);
          for (let i = 1; i < 4; i++) base = await change(base, pool[0]!, { approve: [{ peerId: idOf(pool[i]!), addresses: [] }] });
          const views: MemberList[] = [base, base, base, base];
          const approvedSomewhere = new Set(members(base));
          const revokedSomewhere = new Set<string>();
          for (const c of changes) {
            const key = pool[c.at]!;
            if (!isMember(views[c.at]!, idOf(key))) continue;
            const target = idOf(pool[c.who]!);
            if (c.op === 'approve' && !views[c.at]!.revocations.some((r) => r.peerId === target)) {
              views[c.at] = await change(views[c.at]!, key, { approve: [{ peerId: target, addresses: [`/ip4/10.0.0.${c.who}/udp/1/quic-v1`] }] });
              approvedSomewhere.add(target);
            }
            if (c.op === 'revoke' && c.who !== 0 && c.who !== c.at && isMember(views[c.at]!, target)) {
              views[c.at] = await change(views[c.at]!, key, { revoke: [target] });
              revokedSomewhere.add(target);
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
          // The converged content: everyone approved anywhere, minus everyone revoked anywhere.
          expect(new Set(members(live[0]!))).toEqual(new Set([...approvedSomewhere].filter((p) => !revokedSomewhere.has(p))));
        },
      ),
      { numRuns: 60 },
    );
  }, 120_000);
});
