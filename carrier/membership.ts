/**
 * The cluster's member list (docs/FORMAT.md, "Member list"): versioned by an epoch that only
 * grows, signed by the member that made each change, and merged so that every member converges
 * on the same list whatever order changes reach it in (heartbeats spread it).
 *
 * Trust does not come from whoever sent a list but from certificates inside it:
 * - the cluster id is derived from its founder's peer id and a random salt, so it names one founder;
 * - every member carries an approval signed by a member (the founder approves itself), so each one
 *   chains back to the founder; a list from a stranger cannot add anyone;
 * - a revocation is signed by a member (or by the leaving member itself) and is permanent: a
 *   revoked peer id never returns (a node that should rejoin gets a new identity).
 * - a drain is signed by a member (usually the draining one) and is permanent too: the drained
 *   member stays a member, serving what it holds, but no block is placed on it any more; it
 *   leaves once its blocks are held elsewhere (carrier/replication.ts).
 * The cluster's replication factor is a setting in the list, not a certificate: any member may
 * change it, and the list with the higher (epoch, signer) has the word. Addresses are settings
 * too, one per member, each with the epoch of the change that set it: per member, the one set
 * last wins (so two members that move at once both keep their new addresses).
 * A revoked key signs nothing that counts (version 5): certificates carry no time, and a revoked
 * member that kept its key could always date what it signs back, so a revocation instead names
 * what it keeps: `keeps` lists the signatures of every certificate the revoked member had signed
 * that the revoker held (and its replication setting, if it set the current one). Any other
 * certificate by that key is void wherever the revocation is known (settle()): an approval, a
 * revocation, a drain, a setting; so is everything that chains only through a void approval. The
 * one exception is two members revoking each other: each revocation omits the other, and nothing
 * tells a concurrent pair from a forged one, so both stand (both are out; neither gets back in).
 * Content is the union of certificates, so two members approving two nodes at once both count and
 * a revocation beats any approval. A merge whose content neither side had is signed anew at the
 * next epoch; equal content at different epochs settles on the highest (epoch, signer).
 */
import crypto from 'node:crypto';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import { Packr } from 'msgpackr/pack';
import { BadArgumentError, ProtocolError } from '../lib/errors.js';

export const MEMBER_LIST_VERSION = 5;
/**
 * Version 1 lists (before drains and the replication factor), version 2 lists (before address
 * epochs) and version 3 lists (before the erasure-coding setting) are still read, and signed anew
 * as version 5 at their next change. Version 4 lists (before `keeps` in revocations) read with
 * every revocation keeping all its member signed: the old rule, for those revocations only.
 */
const READABLE_VERSIONS = new Set([1, 2, 3, 4, 5]);

export interface Approval {
  peerId: string;
  approvedBy: string;
  /** Hex Ed25519 signature of approvedBy over approvalBytes(). */
  sig: string;
}

export interface Revocation {
  peerId: string;
  by: string;
  sig: string;
  /**
   * Version 5: what of the revoked peer's signing still counts (sorted): the signatures of its
   * certificates the revoker held when it revoked, and settingMark() of the replication setting
   * if the revoked peer set it. Absent (revocations made before version 5): everything counts.
   */
  keeps?: string[];
}

export interface Drain {
  peerId: string;
  by: string;
  sig: string;
}

/** An erasure-coding policy: K data shards plus M parity shards per block (docs/node.md, "Redundancy"). */
export interface EcPolicy {
  k: number;
  m: number;
}

export interface FactorSetting {
  /** Members each block is placed on (capped by the candidates there are). */
  factor: number;
  /**
   * Erasure coding (`ouro cluster redundancy ec K+M`): blocks at or above the small-block line
   * are stored as K+M shards; those below it stay replicated by `factor`. Null: replicas only
   * (`ouro cluster redundancy replicas N`). Version 4; earlier lists read as null.
   */
  ec: EcPolicy | null;
  epoch: number;
  by: string;
}

export interface MemberList {
  version: number;
  clusterId: string;
  founder: string;
  /** Hex; clusterId = first 16 bytes of SHA-256("ourodb cluster v1" | founder | salt). */
  salt: string;
  epoch: number;
  /** One per peer, sorted by peer id; revoked peers keep theirs (others chain through them). */
  approvals: Approval[];
  /** One per peer, sorted by peer id. */
  revocations: Revocation[];
  /** One per peer, sorted by peer id: members no block may be placed on any more. Version 2. */
  drains: Drain[];
  /**
   * The cluster's replication factor, with the epoch it was set at and by whom; null: each
   * member's configured default (version 1 lists). Version 2.
   */
  replication: FactorSetting | null;
  /** Last announced listen addresses per member (not certified: any member may update them). */
  addresses: Record<string, string[]>;
  /**
   * Per member in `addresses`: the epoch of the change that set its addresses. A merge keeps, for
   * each member, the addresses set last, whichever list brought them. Version 3; lists before it
   * read as 0 for every member.
   */
  addressEpochs: Record<string, number>;
  signer: string;
  signature: string;
}

type Content = Omit<MemberList, 'signer' | 'signature'>;

const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });
const enc = (v: unknown) => packr.pack(v);

export function clusterIdOf(founder: string, salt: string): string {
  return crypto.createHash('sha256').update('ourodb cluster v1').update(founder).update(Buffer.from(salt, 'hex')).digest('hex').slice(0, 32);
}

function approvalBytes(clusterId: string, peerId: string, approvedBy: string): Uint8Array {
  return enc(['ourodb member approval', clusterId, peerId, approvedBy]);
}

function revocationBytes(clusterId: string, peerId: string, by: string, keeps: string[] | undefined): Uint8Array {
  return keeps === undefined ? enc(['ourodb member revocation', clusterId, peerId, by]) : enc(['ourodb member revocation v5', clusterId, peerId, by, keeps]);
}

/** How a revocation names the replication setting it keeps (the setting is not signed on its own). */
function settingMark(r: FactorSetting): string {
  return `replication:${r.factor}:${r.ec ? `${r.ec.k}+${r.ec.m}` : '-'}:${r.epoch}`;
}

/** Everything `peer` signed in `list` that a revocation of it keeps (see Revocation.keeps). */
function signedBy(list: Content, peer: string): string[] {
  const sigs = [...list.approvals.filter((a) => a.approvedBy === peer), ...list.revocations.filter((r) => r.by === peer && r.peerId !== peer), ...list.drains.filter((d) => d.by === peer)].map((c) => c.sig);
  if (list.replication?.by === peer) sigs.push(settingMark(list.replication));
  return sigs.sort();
}

function drainBytes(clusterId: string, peerId: string, by: string): Uint8Array {
  return enc(['ourodb member drain', clusterId, peerId, by]);
}

/**
 * What a list's signature covers: every field but the signature, in a fixed order (version 1
 * lists had no drains nor factor, versions 1 and 2 no address epochs).
 */
export function signedBytes(l: Content & { signer: string }): Uint8Array {
  const r = l.replication;
  const setting = r && (l.version >= 4 ? [r.factor, r.epoch, r.by, r.ec && [r.ec.k, r.ec.m]] : [r.factor, r.epoch, r.by]);
  const peers = Object.keys(l.addresses).sort();
  const addresses = l.version >= 3 ? peers.map((p) => [p, l.addresses[p], l.addressEpochs[p]]) : peers.map((p) => [p, l.addresses[p]]);
  const revocations = l.version >= 5 ? l.revocations.map((r) => [r.peerId, r.by, r.sig, r.keeps ?? null]) : l.revocations.map((r) => [r.peerId, r.by, r.sig]);
  const common = [l.version, l.clusterId, l.founder, l.salt, l.epoch, l.approvals.map((a) => [a.peerId, a.approvedBy, a.sig]), revocations];
  if (l.version === 1) return enc(['ourodb member list', ...common, addresses, l.signer]);
  return enc(['ourodb member list', ...common, l.drains.map((d) => [d.peerId, d.by, d.sig]), setting, addresses, l.signer]);
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const byPeer = <T extends { peerId: string }>(a: T, b: T) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0);

async function signList(content: Content, key: PrivateKey): Promise<MemberList> {
  const signer = peerIdFromPrivateKey(key).toString();
  const unsigned = { ...content, version: MEMBER_LIST_VERSION, approvals: [...content.approvals].sort(byPeer), revocations: [...content.revocations].sort(byPeer), drains: [...content.drains].sort(byPeer), signer };
  return { ...unsigned, signature: hex(await key.sign(signedBytes(unsigned))) };
}

/** Members: approved and not revoked. */
export function members(list: MemberList): string[] {
  const revoked = new Set(list.revocations.map((r) => r.peerId));
  return list.approvals.map((a) => a.peerId).filter((p) => !revoked.has(p));
}

export function isMember(list: MemberList, peerId: string): boolean {
  return members(list).includes(peerId);
}

export type MemberStatus = 'member' | 'revoked' | 'left';

/**
 * An approved peer's standing: a member, `left` (its revocation is signed by itself: `leave`,
 * or the end of a drain) or `revoked` (by another member). Both end membership for good; they
 * differ in who decided, which an operator needs to tell a node that was thrown out from one
 * that went. Undefined for a peer the list never approved.
 */
export function statusOf(list: MemberList, peerId: string): MemberStatus | undefined {
  const r = list.revocations.find((x) => x.peerId === peerId);
  if (r) return r.by === peerId ? 'left' : 'revoked';
  return list.approvals.some((a) => a.peerId === peerId) ? 'member' : undefined;
}

/** The cluster's replication factor, or null when the list sets none. */
export function replicationFactorOf(list: MemberList): number | null {
  return list.replication?.factor ?? null;
}

/** The cluster's erasure-coding policy, or null when it keeps replicas only. */
export function ecPolicyOf(list: MemberList): EcPolicy | null {
  return list.replication?.ec ?? null;
}

/** K and M an ec policy may have: shards are placed one per member, so K+M is the members needed. */
export function checkEcPolicy(ec: EcPolicy): void {
  if (!Number.isSafeInteger(ec.k) || !Number.isSafeInteger(ec.m) || ec.k < 1 || ec.m < 1 || ec.k + ec.m > 32) throw new BadArgumentError(`ec ${ec.k}+${ec.m}: K and M must be whole numbers of 1 or more with K+M at most 32`);
}

/** Members that are draining: no new placements on them; they leave once their blocks are elsewhere. */
export function draining(list: MemberList): Set<string> {
  const now = new Set(members(list));
  return new Set(list.drains.map((d) => d.peerId).filter((p) => now.has(p)));
}

function checkFactor(rf: number): void {
  if (!Number.isSafeInteger(rf) || rf < 1 || rf > 16) throw new BadArgumentError(`the replication factor must be an integer from 1 to 16, not ${rf}`);
}

/** A new cluster whose only member (and founder) is the node holding `key`. */
export async function newCluster(key: PrivateKey, addresses: string[], replicationFactor: number | null = null): Promise<MemberList> {
  if (replicationFactor !== null) checkFactor(replicationFactor);
  const self = peerIdFromPrivateKey(key).toString();
  const founder = peerIdFromPrivateKey(key).toString();
  const salt = crypto.randomBytes(16).toString('hex');
  const clusterId = clusterIdOf(founder, salt);
  const approval = { peerId: founder, approvedBy: founder, sig: hex(await key.sign(approvalBytes(clusterId, founder, founder))) };
  return signList({ version: MEMBER_LIST_VERSION, clusterId, founder, salt, epoch: 1, approvals: [approval], revocations: [], drains: [], replication: replicationFactor === null ? null : { factor: replicationFactor, ec: null, epoch: 1, by: self }, addresses: { [founder]: addresses }, addressEpochs: { [founder]: 1 } }, key);
}

/**
 * A change by the member holding `key`: approve nodes, revoke members, update its own addresses,
 * leave (revoke itself), drain members (itself included) or set the replication factor (with
 * `ec`, the erasure-coding policy beside it: null for replicas only; absent, the list's stays).
 * Returns the next epoch, signed.
 */
export async function change(list: MemberList, key: PrivateKey, edit: { approve?: Array<{ peerId: string; addresses: string[] }>; revoke?: string[]; leave?: boolean; addresses?: string[]; drain?: string[]; replicationFactor?: number; ec?: EcPolicy | null }): Promise<MemberList> {
  const self = peerIdFromPrivateKey(key).toString();
  if (!isMember(list, self)) throw new BadArgumentError(`${self} is not a member of cluster ${list.clusterId}`);
  const revoked = new Set(list.revocations.map((r) => r.peerId));
  const approvals = new Map(list.approvals.map((a) => [a.peerId, a]));
  const revocations = new Map(list.revocations.map((r) => [r.peerId, r]));
  const epoch = list.epoch + 1;
  const addresses = { ...list.addresses };
  const addressEpochs = { ...list.addressEpochs };
  for (const m of edit.approve ?? []) {
    if (revoked.has(m.peerId)) throw new BadArgumentError(`${m.peerId} was revoked; a node rejoins with a new identity`);
    peerIdFromString(m.peerId); // must parse
    if (!approvals.has(m.peerId)) approvals.set(m.peerId, { peerId: m.peerId, approvedBy: self, sig: hex(await key.sign(approvalBytes(list.clusterId, m.peerId, self))) });
    addresses[m.peerId] = [...m.addresses];
    addressEpochs[m.peerId] = epoch;
  }
  for (const p of [...(edit.revoke ?? []), ...(edit.leave ? [self] : [])]) {
    if (!approvals.has(p)) throw new BadArgumentError(`${p} is not a member of cluster ${list.clusterId}`);
    if (revocations.has(p)) continue;
    const keeps = signedBy(list, p);
    revocations.set(p, { peerId: p, by: self, sig: hex(await key.sign(revocationBytes(list.clusterId, p, self, keeps))), keeps });
  }
  const drains = new Map(list.drains.map((d) => [d.peerId, d]));
  for (const p of edit.drain ?? []) {
    if (!isMember(list, p)) throw new BadArgumentError(`${p} is not a member of cluster ${list.clusterId}`);
    if (!drains.has(p)) drains.set(p, { peerId: p, by: self, sig: hex(await key.sign(drainBytes(list.clusterId, p, self))) });
  }
  if (edit.replicationFactor !== undefined) checkFactor(edit.replicationFactor);
  if (edit.ec) checkEcPolicy(edit.ec);
  if (edit.ec !== undefined && edit.replicationFactor === undefined) throw new BadArgumentError('an ec policy is set together with the replication factor');
  if (edit.addresses) {
    addresses[self] = [...edit.addresses];
    addressEpochs[self] = epoch;
  }
  for (const p of revocations.keys()) {
    delete addresses[p];
    delete addressEpochs[p];
  }
  const replication = edit.replicationFactor === undefined ? list.replication : { factor: edit.replicationFactor, ec: edit.ec !== undefined ? edit.ec : (list.replication?.ec ?? null), epoch, by: self };
  return signList({ ...list, epoch, approvals: [...approvals.values()], revocations: [...revocations.values()], drains: [...drains.values()], replication, addresses, addressEpochs }, key);
}

async function verifySig(signer: string, bytes: Uint8Array, sig: string): Promise<boolean> {
  try {
    const publicKey = peerIdFromString(signer).publicKey;
    return publicKey !== undefined && /^([0-9a-f]{2})+$/.test(sig) && (await publicKey.verify(bytes, Buffer.from(sig, 'hex')));
  } catch {
    return false;
  }
}

function validEc(ec: EcPolicy): boolean {
  try {
    checkEcPolicy(ec);
    return true;
  } catch {
    return false;
  }
}

function wellFormed(l: MemberList): boolean {
  const str = (v: unknown) => typeof v === 'string' && v.length > 0 && v.length < 200;
  return (
    l !== null &&
    typeof l === 'object' &&
    READABLE_VERSIONS.has(l.version) &&
    typeof l.clusterId === 'string' &&
    /^[0-9a-f]{32}$/.test(l.clusterId) &&
    str(l.founder) &&
    typeof l.salt === 'string' &&
    /^[0-9a-f]{32}$/.test(l.salt) &&
    Number.isSafeInteger(l.epoch) &&
    l.epoch >= 1 &&
    Array.isArray(l.approvals) &&
    l.approvals.every((a) => a !== null && typeof a === 'object' && str(a.peerId) && str(a.approvedBy) && typeof a.sig === 'string') &&
    new Set(l.approvals.map((a) => a.peerId)).size === l.approvals.length &&
    Array.isArray(l.revocations) &&
    l.revocations.every((r) => r !== null && typeof r === 'object' && str(r.peerId) && str(r.by) && typeof r.sig === 'string' && (r.keeps === undefined || (l.version >= 5 && Array.isArray(r.keeps) && r.keeps.length <= 100_000 && r.keeps.every((k) => str(k))))) &&
    new Set(l.revocations.map((r) => r.peerId)).size === l.revocations.length &&
    (l.version === 1 ||
      (Array.isArray(l.drains) &&
        l.drains.every((d) => d !== null && typeof d === 'object' && str(d.peerId) && str(d.by) && typeof d.sig === 'string') &&
        new Set(l.drains.map((d) => d.peerId)).size === l.drains.length &&
        (l.replication === null ||
          (typeof l.replication === 'object' &&
            Number.isSafeInteger(l.replication.factor) &&
            l.replication.factor >= 1 &&
            l.replication.factor <= 16 &&
            Number.isSafeInteger(l.replication.epoch) &&
            str(l.replication.by) &&
            (l.version < 4 || l.replication.ec === null || (typeof l.replication.ec === 'object' && validEc(l.replication.ec))))))) &&
    l.addresses !== null &&
    typeof l.addresses === 'object' &&
    Object.values(l.addresses).every((a) => Array.isArray(a) && a.every((s) => typeof s === 'string')) &&
    (l.version < 3 ||
      (l.addressEpochs !== null &&
        typeof l.addressEpochs === 'object' &&
        Object.keys(l.addressEpochs).length === Object.keys(l.addresses).length &&
        Object.keys(l.addresses).every((p) => Number.isSafeInteger(l.addressEpochs[p]) && l.addressEpochs[p]! >= 0 && l.addressEpochs[p]! <= l.epoch))) &&
    str(l.signer) &&
    typeof l.signature === 'string'
  );
}

/**
 * Checks a list from the network: shape, cluster id, every approval chaining back to the
 * founder, every revocation, and the list's own signature by a member (or by a member leaving
 * in it). Throws ProtocolError otherwise.
 */
export async function verify(list: unknown): Promise<MemberList> {
  if (!wellFormed(list as MemberList)) throw new ProtocolError('malformed member list');
  // A version 1 list reads as one with no drains and no factor, and lists before version 3 as
  // ones whose addresses were all set at epoch 0 (their signatures do not cover these fields).
  const given = list as MemberList;
  const zeros = () => Object.fromEntries(Object.keys(given.addresses).map((p) => [p, 0]));
  // Lists before version 4 have no ec policy: replicas only.
  const noEc = given.version < 4 && given.replication ? { replication: { ...given.replication, ec: null } } : {};
  const l = given.version === 1 ? { ...given, drains: [], replication: null, addressEpochs: zeros() } : given.version === 2 ? { ...given, ...noEc, addressEpochs: zeros() } : given.version === 3 ? { ...given, ...noEc } : given;
  if (clusterIdOf(l.founder, l.salt) !== l.clusterId) throw new ProtocolError(`member list: cluster id ${l.clusterId} does not belong to founder ${l.founder}`);
  const approved = new Set<string>();
  // Approvals in chain order: each pass admits those whose approver is already admitted.
  for (let progress = true; progress; ) {
    progress = false;
    for (const a of l.approvals) {
      if (approved.has(a.peerId)) continue;
      const rooted = a.peerId === l.founder ? a.approvedBy === l.founder : approved.has(a.approvedBy);
      if (rooted && (await verifySig(a.approvedBy, approvalBytes(l.clusterId, a.peerId, a.approvedBy), a.sig))) {
        approved.add(a.peerId);
        progress = true;
      }
    }
  }
  if (approved.size !== l.approvals.length) throw new ProtocolError(`member list epoch ${l.epoch}: an approval does not chain back to the founder`);
  for (const r of l.revocations) {
    if (!approved.has(r.peerId) || !approved.has(r.by) || !(await verifySig(r.by, revocationBytes(l.clusterId, r.peerId, r.by, r.keeps), r.sig))) throw new ProtocolError(`member list epoch ${l.epoch}: a revocation of ${r.peerId} is not valid`);
  }
  for (const d of l.drains) {
    if (!approved.has(d.peerId) || !approved.has(d.by) || !(await verifySig(d.by, drainBytes(l.clusterId, d.peerId, d.by), d.sig))) throw new ProtocolError(`member list epoch ${l.epoch}: a drain of ${d.peerId} is not valid`);
  }
  const leaving = l.revocations.some((r) => r.peerId === l.signer && r.by === l.signer);
  if (!isMember(l, l.signer) && !leaving) throw new ProtocolError(`member list epoch ${l.epoch} is signed by ${l.signer}, who is not a member`);
  if (!(await verifySig(l.signer, signedBytes(l), l.signature))) throw new ProtocolError(`member list epoch ${l.epoch}: bad signature by ${l.signer}`);
  // A member signs only settled content (merge settles it), so a list holding something a
  // revocation inside it voids was made by the revoked key itself, after its revocation.
  const settled = settle(l, [l.approvals], [l.revocations], [l.drains], [l.replication]);
  if (settled.approvals.length !== l.approvals.length || settled.revocations.length !== l.revocations.length || settled.drains.length !== l.drains.length || settled.replication !== l.replication) throw new ProtocolError(`member list epoch ${l.epoch}: holds what a revoked member signed after its revocation`);
  return l;
}

/**
 * The certificates that count among `approvals`, `revocations`, `drains` and `settings` (several
 * per peer when merging), one per peer, sorted, as a function of the candidates alone (so members
 * converge whatever order lists reach them in). All signatures are checked already.
 *
 * A certificate by a revoked signer counts only when every revocation of that signer that stands
 * keeps it (Revocation.keeps; one made before version 5 keeps all). A revocation stands unless its
 * signer's own revocation voids it, except when the two revoke each other (nothing tells that from
 * a concurrent pair: both stand) or go round a cycle (all stand); a leave always stands. Then the
 * approvals chain from the founder through approvals that count; per peer the one by the lowest
 * approver id is kept (as before version 5); revocations: the standing one keeping the least
 * (then the lowest revoker id); drains: the lowest signer id; the setting: the one set last.
 */
function settle(l: { founder: string }, approvalSets: Approval[][], revocationSets: Revocation[][], drainSets: Drain[][], settings: Array<FactorSetting | null>): { approvals: Approval[]; revocations: Revocation[]; drains: Drain[]; replication: FactorSetting | null } {
  const revsOf = new Map<string, Revocation[]>();
  for (const r of revocationSets.flat()) {
    const rs = revsOf.get(r.peerId) ?? [];
    if (!rs.some((x) => x.sig === r.sig)) rs.push(r);
    revsOf.set(r.peerId, rs);
  }
  const standing = new Map<Revocation, boolean>();
  const stands = (r: Revocation): boolean => {
    const known = standing.get(r);
    if (known !== undefined) return known;
    standing.set(r, true); // a cycle of revocations: every one in it stands
    const v = r.by === r.peerId || counts(r.by, r.sig, r.peerId);
    standing.set(r, v);
    return v;
  };
  // Whether what `signer` signed (`sig`) counts; `revoking`: the peer it revokes, if it is a revocation.
  const counts = (signer: string, sig: string, revoking?: string): boolean => (revsOf.get(signer) ?? []).every((r) => r.keeps === undefined || r.keeps.includes(sig) || r.by === revoking || !stands(r));
  const candidates = approvalSets.flat().filter((a) => counts(a.approvedBy, a.sig));
  const approved = new Set<string>();
  for (let progress = true; progress; ) {
    progress = false;
    for (const a of candidates) {
      if (approved.has(a.peerId)) continue;
      if (a.peerId === l.founder ? a.approvedBy === l.founder : approved.has(a.approvedBy)) {
        approved.add(a.peerId);
        progress = true;
      }
    }
  }
  const lowest = <T extends { peerId: string }>(items: T[], better: (x: T, y: T) => boolean): T[] => {
    const one = new Map<string, T>();
    for (const x of items) if (!one.has(x.peerId) || better(x, one.get(x.peerId)!)) one.set(x.peerId, x);
    return [...one.values()].sort(byPeer);
  };
  const approvals = lowest(
    candidates.filter((a) => approved.has(a.approvedBy) && approved.has(a.peerId)),
    (x, y) => x.approvedBy < y.approvedBy,
  );
  const rank = (r: Revocation) => r.keeps?.length ?? Infinity;
  const revocations = lowest(
    [...revsOf.values()].flat().filter((r) => approved.has(r.peerId) && approved.has(r.by) && stands(r)),
    (x, y) => rank(x) < rank(y) || (rank(x) === rank(y) && x.by < y.by),
  );
  const drains = lowest(
    drainSets.flat().filter((d) => approved.has(d.peerId) && approved.has(d.by) && counts(d.by, d.sig)),
    (x, y) => x.by < y.by,
  );
  // The factor: the one set last (epoch, then setter), so a concurrent unrelated change does not undo it.
  const replication = settings.filter((r): r is FactorSetting => r !== null && counts(r.by, settingMark(r))).sort((x, y) => (x.epoch !== y.epoch ? y.epoch - x.epoch : x.by < y.by ? 1 : x.by > y.by ? -1 : 0))[0] ?? null;
  return { approvals, revocations, drains, replication };
}

/** Whether `a` is the later word: a higher epoch, or the same epoch and a higher signer id. */
function newerWord(a: MemberList, b: MemberList): boolean {
  return a.epoch > b.epoch || (a.epoch === b.epoch && a.signer > b.signer);
}

function contentKey(l: Content): string {
  return JSON.stringify([l.version, l.approvals.map((a) => [a.peerId, a.approvedBy]), l.revocations.map((r) => [r.peerId, r.by, r.keeps ?? null]), l.drains.map((d) => d.peerId), l.replication, Object.keys(l.addresses).sort().map((p) => [p, l.addresses[p], l.addressEpochs[p]])]);
}

/**
 * Merges a list from a peer (already verified) into ours; `key` signs a merge when one is
 * needed. The result's content is a function of the union of both lists' certificates alone, so
 * members converge whatever order lists reach them in. Returns the list to keep and whether it
 * differs from ours, and whether the holder of `key` is revoked in the union: a revocation of it
 * that stands, not merely one that `theirs` names (a revoked key may forge one).
 */
export async function merge(ours: MemberList, theirs: MemberList, key: PrivateKey): Promise<{ list: MemberList; changed: boolean; selfRevoked: boolean }> {
  if (theirs.clusterId !== ours.clusterId) throw new ProtocolError(`member list of cluster ${theirs.clusterId}, not ${ours.clusterId}`);
  const { approvals, revocations, drains, replication } = settle(ours, [ours.approvals, theirs.approvals], [ours.revocations, theirs.revocations], [ours.drains, theirs.drains], [ours.replication, theirs.replication]);
  // Addresses: per member, those set last (by the epoch of the change that set them, then by
  // their content, so that the choice does not depend on which list is merged into which); none
  // for revoked ones.
  const addresses: Record<string, string[]> = {};
  const addressEpochs: Record<string, number> = {};
  for (const l of [ours, theirs]) {
    for (const [p, a] of Object.entries(l.addresses)) {
      const e = l.addressEpochs[p] ?? 0;
      const had = addressEpochs[p];
      if (had === undefined || e > had || (e === had && JSON.stringify(a) > JSON.stringify(addresses[p]))) {
        addresses[p] = a;
        addressEpochs[p] = e;
      }
    }
  }
  const revoked = new Set(revocations.map((r) => r.peerId));
  const approvedNow = new Set(approvals.map((a) => a.peerId));
  for (const p of Object.keys(addresses)) {
    if (revoked.has(p) || !approvedNow.has(p)) {
      delete addresses[p];
      delete addressEpochs[p];
    }
  }
  const union: Content = {
    version: MEMBER_LIST_VERSION,
    clusterId: ours.clusterId,
    founder: ours.founder,
    salt: ours.salt,
    epoch: Math.max(ours.epoch, theirs.epoch),
    approvals,
    revocations,
    drains,
    replication,
    addresses,
    addressEpochs,
  };
  const self = peerIdFromPrivateKey(key).toString();
  const selfRevoked = revoked.has(self);
  const u = contentKey(union);
  if (u === contentKey(ours) && u === contentKey(theirs)) {
    const pick = newerWord(theirs, ours) ? theirs : ours;
    return { list: pick, changed: pick !== ours, selfRevoked };
  }
  if (u === contentKey(theirs) && newerWord(theirs, ours)) return { list: theirs, changed: true, selfRevoked };
  if (u === contentKey(ours) && newerWord(ours, theirs)) return { list: ours, changed: false, selfRevoked };
  // A revoked member may sign nothing more: it keeps its last list (which others may still merge,
  // so what it did before it learned of its revocation is not lost) and is out of the cluster.
  if (selfRevoked || !approvedNow.has(self)) return { list: ours, changed: false, selfRevoked };
  return { list: await signList({ ...union, epoch: union.epoch + 1 }, key), changed: true, selfRevoked };
}
