/**
 * Argument parsing shared by the facade and the engine modules of lib/ (no state).
 */
import type { Head } from '../index/values.js';
import { fromHex } from './bytes.js';
import { ID_BYTES } from './crypto.js';
import { BadArgumentError } from './errors.js';
import type { ReadRange } from './types.js';

export function parseHash(hash: unknown, what = 'hash'): Buffer {
  const b = typeof hash === 'string' ? fromHex(hash, ID_BYTES) : undefined;
  if (!b) throw new BadArgumentError(`${what} must be 64 lowercase hex characters`);
  return b;
}

/** Newest first: highest version number, then highest hash (a fixed, documented tie-break). */
export function sortHeads(heads: Head[]): Head[] {
  return heads.sort((a, b) => b.n - a.n || Buffer.compare(b.hash, a.hash));
}

/** A read's range, checked (not yet clipped to the value: that needs its size). */
export function parseRange(range: unknown): { start: number; end: number } {
  if (range === null || typeof range !== 'object') throw new BadArgumentError('the range must be an object { start?, end? }');
  const { start = 0, end = Number.MAX_SAFE_INTEGER } = range as ReadRange;
  if (!Number.isSafeInteger(start) || start < 0) throw new BadArgumentError('range start must be a non-negative integer');
  if (!Number.isSafeInteger(end) || end < 0) throw new BadArgumentError('range end must be a non-negative integer');
  if (end < start) throw new BadArgumentError(`range end (${end}) is before its start (${start})`);
  return { start, end };
}
