/**
 * Put options, parsed and checked: what a record's write needs to know of its key, parent,
 * compare-and-set and hints (Link). Functions only, no state.
 */
import crypto from 'node:crypto';
import type { Head } from '../index/values.js';
import { decodeHintRow } from '../index/values.js';
import { parseHash } from './args.js';
import { toHex } from './bytes.js';
import { BadArgumentError, ConflictError, CorruptionError } from './errors.js';
import type { KeyName } from './heads.js';
import { keyBytes } from './keyname.js';
import { INLINE_MAX_BYTES } from './record.js';
import type { PutOptions, PutValue } from './types.js';

export /** Where a record goes in the key and parent indexes (parsed put options). */
interface Link {
  key?: KeyName;
  parent: Buffer | null;
  /** Compare-and-set: the heads the key must have (null: no version at all). */
  ifHead?: Buffer[] | null;
  /** Explicit predecessors instead of the current heads. */
  prev?: Buffer[];
  /** Creation time to record (ms since the epoch), when not now. */
  created?: number;
  /** PutOptions.expectHash. */
  expect?: Buffer;
  /**
   * Skip the write when the record would equal the key's single head but for time, prev and the
   * metadata entries named here (PutOptions.ifChanged).
   */
  ifChanged?: { ignoreMeta: ReadonlySet<string> };
  /** PutOptions.hint. */
  hint?: Buffer;
  /** Set when ifChanged kept the head (PutResult.unchanged). */
  kept?: boolean;
  /** Checked between chunks and before the record is written. */
  signal?: AbortSignal | undefined;
  /** Told the commit promise of the record once it is queued (the put's chunk pins end there). */
  onQueued?: (committed: Promise<void>) => void;
  /** CommitPipeline.diskFullEpoch when the put began: a disk-full failure since may have taken its chunks. */
  epoch?: number;
  /**
   * Set by putHinted, which holds the key's lock from its hint check to the end of the put: the
   * heads it read, and the hint row when nothing of the key was pending then (a pending write may
   * change the row by the time the put compares, so it is read again), with its hint tag.
   */
  held?: { heads: Head[]; hintRow?: Buffer | undefined; hintTag?: Buffer | undefined };
}

/** Parses and checks the key, parent and compare-and-set options of a put. */
export function parseLink(options: PutOptions): Link {
  const parent = options.parent === undefined || options.parent === null ? null : parseHash(options.parent, 'parent');
  const expect = options.expectHash === undefined ? {} : { expect: parseHash(options.expectHash, 'expectHash') };
  if (options.key === undefined) {
    if (options.ifHead !== undefined || options.prev !== undefined || options.hint !== undefined) throw new BadArgumentError('ifHead, prev and hint need a key');
    return { parent, ...created(options.created), ...expect };
  }
  const key = { name: options.key, bytes: keyBytes(options.key) };
  const link: Link = { key, parent, ...created(options.created), ...ifChangedOf(options.ifChanged), ...hintOf(options.hint), ...expect };
  if (options.ifHead !== undefined) {
    if (options.ifHead === null) link.ifHead = null;
    else link.ifHead = (Array.isArray(options.ifHead) ? options.ifHead : [options.ifHead]).map((h) => parseHash(h, 'ifHead'));
  }
  if (options.prev !== undefined) {
    if (!Array.isArray(options.prev)) throw new BadArgumentError('prev must be an array of hashes');
    link.prev = options.prev.map((h) => parseHash(h, 'prev'));
  }
  return link;
}

/** PutOptions.expectHash: the record about to be written must have that hash. */
export function checkExpected(link: Link, hash: Buffer): void {
  if (link.expect && !link.expect.equals(hash)) throw new CorruptionError(`the record made hashes to ${toHex(hash)}, not to ${toHex(link.expect)} (expectHash): nothing written`);
}

/** The largest hint a put accepts (it is hashed on every match, so it stays small). */
const HINT_MAX_BYTES = 1024;
/** PutOptions.hint, checked, as Link.hint. */
export function hintOf(option: PutOptions['hint']): Pick<Link, 'hint'> {
  if (option === undefined) return {};
  if (!(option instanceof Uint8Array)) throw new BadArgumentError('hint must be a Uint8Array');
  if (option.byteLength > HINT_MAX_BYTES) throw new BadArgumentError(`a hint is at most ${HINT_MAX_BYTES} bytes, not ${option.byteLength}`);
  return { hint: Buffer.from(option) };
}

/** PutOptions.ifChanged, checked, as Link.ifChanged. */
export function ifChangedOf(option: PutOptions['ifChanged']): Pick<Link, 'ifChanged'> {
  if (option === undefined || option === false) return {};
  if (option === true) return { ifChanged: { ignoreMeta: new Set() } };
  if (typeof option !== 'object' || option === null || !Array.isArray(option.ignoreMeta) || !option.ignoreMeta.every((k) => typeof k === 'string')) {
    throw new BadArgumentError('ifChanged must be a boolean or { ignoreMeta: string[] }');
  }
  return { ifChanged: { ignoreMeta: new Set(option.ignoreMeta) } };
}

export function created(value: unknown): { created?: number } {
  if (value === undefined) return {};
  const ms = value instanceof Date ? value.getTime() : value;
  if (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms < 0) throw new BadArgumentError('created must be a Date or a non-negative integer of milliseconds');
  return { created: ms };
}

/** The compare-and-set check of `ifHead`: the key's heads must be exactly the ones named. */
export function checkHeads(name: string, expected: Buffer[] | null, current: Head[]): void {
  const want = (expected ?? []).map(toHex).sort();
  const have = current.map((h) => toHex(h.hash)).sort();
  if (want.length === have.length && want.every((h, i) => h === have[i])) return;
  throw new ConflictError(`key ${JSON.stringify(name)} has heads [${have.join(', ')}], not [${want.join(', ')}]`, want, have);
}

/** Whether a key's hint row (if any) carries `contentTag`: its head has these compared fields. */
export function rowHasContent(row: Buffer | undefined, contentTag: Buffer): boolean {
  return row !== undefined && crypto.timingSafeEqual(decodeHintRow(row).contentTag, contentTag);
}

/** The bytes of a string or Uint8Array value small enough to be stored inline, else undefined. */
export function smallValue(value: PutValue): Uint8Array | undefined {
  if (value instanceof Uint8Array) return value.byteLength <= INLINE_MAX_BYTES ? value : undefined;
  // UTF-8 takes at most 3 bytes per UTF-16 code unit: skip encoding strings that cannot fit.
  if (typeof value === 'string' && value.length <= INLINE_MAX_BYTES) {
    const bytes = Buffer.from(value, 'utf8');
    return bytes.byteLength <= INLINE_MAX_BYTES ? bytes : undefined;
  }
  return undefined;
}

export function validateMeta(meta: unknown): Record<string, string> {
  if (meta === undefined) return {};
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) throw new BadArgumentError('meta must be a Record<string, string>');
  for (const [k, v] of Object.entries(meta)) {
    if (typeof v !== 'string') throw new BadArgumentError(`meta.${k} must be a string`);
  }
  return { ...(meta as Record<string, string>) };
}
