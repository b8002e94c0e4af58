/**
 * Argument parsing shared by the facade and the engine modules of lib/ (no state).
 */
import type { Head } from '../index/values.js';
import { fromHex } from './bytes.js';
import { ID_BYTES } from './crypto.js';
import { BadArgumentError } from './errors.js';

export function parseHash(hash: unknown, what = 'hash'): Buffer {
  const b = typeof hash === 'string' ? fromHex(hash, ID_BYTES) : undefined;
  if (!b) throw new BadArgumentError(`${what} must be 64 lowercase hex characters`);
  return b;
}

/** Newest first: highest version number, then highest hash (a fixed, documented tie-break). */
export function sortHeads(heads: Head[]): Head[] {
  return heads.sort((a, b) => b.n - a.n || Buffer.compare(b.hash, a.hash));
}
