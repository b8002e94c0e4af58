/**
 * User keys: the names `put(value, { key })` files values under. A key is a non-empty,
 * well-formed UTF-8 string of at most MAX_KEY_BYTES bytes with no NUL character. NUL is refused
 * because the version index ends the key with a 0x00 byte (index/keys.ts); lone UTF-16
 * surrogates are refused because they have no UTF-8 form and would silently become U+FFFD,
 * making two different strings one key.
 *
 * Key names are stored in plain text in the local index (never in blocks, which are what leaves
 * the machine): an ordered `list({ prefix })` needs them in LevelDB's order. docs/design.md
 * weighs this against hashing them.
 */
import { BadArgumentError } from './errors.js';

export const MAX_KEY_BYTES = 1024;

/** The key's UTF-8 bytes, or a BadArgumentError saying what is wrong with it. */
export function keyBytes(key: unknown, what = 'key'): Buffer {
  if (typeof key !== 'string') throw new BadArgumentError(`${what} must be a string`);
  if (key.length === 0) throw new BadArgumentError(`${what} must not be empty`);
  if (!key.isWellFormed()) throw new BadArgumentError(`${what} is not well-formed Unicode (lone surrogate)`);
  if (key.includes('\0')) throw new BadArgumentError(`${what} must not contain NUL`);
  const bytes = Buffer.from(key, 'utf8');
  if (bytes.length > MAX_KEY_BYTES) throw new BadArgumentError(`${what} is ${bytes.length} bytes of UTF-8; the maximum is ${MAX_KEY_BYTES}`);
  return bytes;
}

/** A listing prefix: like a key but may be empty. */
export function prefixBytes(prefix: unknown): Buffer {
  if (prefix === undefined || prefix === '') return Buffer.alloc(0);
  return keyBytes(prefix, 'prefix');
}
