/**
 * The store descriptor `OURODB.json`: format version, database id and key slots.
 *
 * A random 32-byte master key is created with the database and never written unwrapped. Each key
 * slot holds the master key sealed (XChaCha20-Poly1305) under a key-encryption key (KEK):
 * - `passphrase` slots: KEK = argon2id(passphrase, salt, m, t, p) (@noble/hashes). Cost is stored
 *   in the slot, so it can be raised for new slots without breaking old ones.
 * - `key` slots: the caller's own 32 raw bytes; KEK = HKDF-SHA256(key, salt, "ourodb/v1/key-slot").
 * Wrapping (rather than using the passphrase-derived key directly) lets a passphrase be changed or
 * a second slot be added without re-encrypting any data, as restic and borg do.
 *
 * The associated data of a wrapped key binds it to this database id and slot type, so a slot
 * copied from another database does not unlock this one.
 *
 * Unlocking only reads this file. A wrong passphrase or key fails authentication and the caller
 * raises WrongKeyError before anything else in the directory is opened, so nothing changes on disk.
 */
import crypto from 'node:crypto';
import { fromHex, toHex } from './bytes.js';
import { AeadKey, KEY_BYTES, deriveKey, NONCE_BYTES, xchachaOpen, xchachaSeal } from './crypto.js';
import { BadArgumentError, CorruptionError, UnsupportedVersionError, WrongKeyError, ioError } from './errors.js';
import { writeFileAtomic } from './fsutil.js';
import { type Vfs, nodeVfs } from './vfs/vfs.js';

/** Part of the on-disk format. Raise it (with a migration) when the descriptor changes; never reuse. */
export const DESCRIPTOR_VERSION = 1;
export const DESCRIPTOR_FILE = 'OURODB.json';

export interface Argon2Cost {
  /** Memory in KiB. */
  m: number;
  /** Passes. */
  t: number;
  /** Lanes. */
  p: number;
}

/** RFC 9106's memory-constrained profile (64 MiB, 3 passes), one lane since JS runs it on one thread. ~1 s here. */
export const DEFAULT_ARGON2: Argon2Cost = { m: 65536, t: 3, p: 1 };

export type Credentials = { passphrase: string; kdf?: Argon2Cost } | { key: Uint8Array };

interface PassphraseSlot { type: 'passphrase'; kdf: 'argon2id'; m: number; t: number; p: number; salt: string; nonce: string; wrapped: string }
interface KeySlot { type: 'key'; salt: string; nonce: string; wrapped: string }
type Slot = PassphraseSlot | KeySlot;

export interface Descriptor {
  format: 'ourodb';
  version: number;
  databaseId: string;
  createdAt: string;
  keySlots: Slot[];
}

export function validateCredentials(creds: unknown): Credentials {
  if (creds === null || typeof creds !== 'object') throw new BadArgumentError('open() needs { passphrase } or { key }');
  const c = creds as { passphrase?: unknown; key?: unknown; kdf?: unknown };
  if ('key' in c && c.key !== undefined) {
    if (!(c.key instanceof Uint8Array) || c.key.byteLength !== KEY_BYTES) throw new BadArgumentError('key must be a Uint8Array of 32 bytes');
    return { key: c.key };
  }
  if (typeof c.passphrase === 'string') {
    if (c.passphrase.length === 0) throw new BadArgumentError('passphrase must not be empty');
    const kdf = c.kdf as Argon2Cost | undefined;
    if (kdf !== undefined && !(Number.isInteger(kdf.m) && Number.isInteger(kdf.t) && Number.isInteger(kdf.p) && kdf.m >= 8 * kdf.p && kdf.t >= 1 && kdf.p >= 1)) {
      throw new BadArgumentError('kdf must be { m, t, p } positive integers with m >= 8p');
    }
    return kdf === undefined ? { passphrase: c.passphrase } : { passphrase: c.passphrase, kdf };
  }
  throw new BadArgumentError('open() needs { passphrase: string } or { key: Uint8Array(32) }');
}

function slotAad(databaseId: string, type: Slot['type']): Uint8Array {
  return new TextEncoder().encode(`ourodb/v1/key-slot/${type}/${databaseId}`);
}

async function kek(creds: Credentials, salt: Uint8Array, cost: Argon2Cost): Promise<Uint8Array> {
  if ('key' in creds) return deriveKey(creds.key, salt, 'ourodb/v1/key-slot');
  return argon2id(creds.passphrase, salt, cost);
}

/**
 * Argon2id of a passphrase (UTF-8) into a 32-byte key. Node's own argon2 (node:crypto, OpenSSL,
 * Node 24.7 and later) when it has one, else @noble/hashes', loaded here on first use (a process
 * opening with a raw key, every `ouro --key-file` run, never needs it: importing it cost ~10 ms).
 * Both compute RFC 9106 Argon2id v1.3 with no secret and no associated data, so they give the
 * same key (test/keys.test.ts checks them against each other). Why native: at the default cost
 * (64 MiB, 3 passes) @noble/hashes took ~1.0-1.4 CPU seconds on the main thread of every
 * passphrase open, a fifth of a 1 GiB `ouro put`'s CPU, and a 64 MiB array left to the
 * collector; OpenSSL's takes ~0.2 s, off the main thread (docs/performance.md, "third round").
 */
export async function argon2id(passphrase: string, salt: Uint8Array, cost: Argon2Cost): Promise<Uint8Array> {
  const message = Buffer.from(passphrase, 'utf8');
  if (typeof crypto.argon2 === 'function') {
    return new Promise<Uint8Array>((resolve, reject) => {
      crypto.argon2('argon2id', { message, nonce: salt, parallelism: cost.p, tagLength: KEY_BYTES, memory: cost.m, passes: cost.t }, (err, key) => (err ? reject(err) : resolve(new Uint8Array(key.buffer, key.byteOffset, key.byteLength))));
    });
  }
  return argon2idPortable(message, salt, cost);
}

/** @noble/hashes' Argon2id: the fallback for a Node without node:crypto's argon2. */
export async function argon2idPortable(message: Uint8Array, salt: Uint8Array, cost: Argon2Cost): Promise<Uint8Array> {
  const { argon2idAsync } = await import('@noble/hashes/argon2.js');
  return argon2idAsync(message, salt, { m: cost.m, t: cost.t, p: cost.p, dkLen: KEY_BYTES });
}

/** Creates a new descriptor with a fresh master key wrapped under `creds`. Returns both. */
export async function createDescriptor(file: string, creds: Credentials, vfs: Vfs = nodeVfs): Promise<{ descriptor: Descriptor; masterKey: Uint8Array; databaseId: Buffer }> {
  const masterKey = crypto.randomBytes(KEY_BYTES);
  const databaseId = crypto.randomBytes(16);
  const idHex = toHex(databaseId);
  const salt = crypto.randomBytes(16);
  const nonce = crypto.randomBytes(NONCE_BYTES); // the KEK is fresh per slot: a random nonce suffices
  const cost = 'passphrase' in creds ? (creds.kdf ?? DEFAULT_ARGON2) : DEFAULT_ARGON2;
  const type: Slot['type'] = 'key' in creds ? 'key' : 'passphrase';
  const wrapped = xchachaSeal(new AeadKey(await kek(creds, salt, cost)), nonce, masterKey, slotAad(idHex, type));
  const common = { salt: toHex(salt), nonce: toHex(nonce), wrapped: toHex(wrapped) };
  const slot: Slot = type === 'key' ? { type, ...common } : { type, kdf: 'argon2id', ...cost, ...common };
  const descriptor: Descriptor = { format: 'ourodb', version: DESCRIPTOR_VERSION, databaseId: idHex, createdAt: new Date().toISOString(), keySlots: [slot] };
  await writeFileAtomic(vfs, file, JSON.stringify(descriptor, null, 2) + '\n');
  return { descriptor, masterKey, databaseId: Buffer.from(databaseId) };
}

export async function readDescriptor(file: string, vfs: Vfs = nodeVfs): Promise<Descriptor> {
  let text: string;
  try {
    text = (await vfs.readFile(file)).toString('utf8');
  } catch (err) {
    throw ioError(`reading ${file}`, err);
  }
  return parseDescriptor(text, file);
}

/** A descriptor's JSON text, checked as readDescriptor checks a file (`file` names it in errors). */
export function parseDescriptor(text: string, file: string): Descriptor {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new CorruptionError(`${file} is not valid JSON`, { cause: err, location: { file } });
  }
  const d = parsed as Partial<Descriptor>;
  if (d === null || typeof d !== 'object' || d.format !== 'ourodb') throw new CorruptionError(`${file} is not an OuroDB descriptor`, { location: { file } });
  if (d.version !== DESCRIPTOR_VERSION) throw new UnsupportedVersionError(`${file} has format version ${String(d.version)}; this release reads version ${DESCRIPTOR_VERSION}`);
  if (typeof d.databaseId !== 'string' || !fromHex(d.databaseId, 16) || !Array.isArray(d.keySlots)) {
    throw new CorruptionError(`${file} is malformed`, { location: { file } });
  }
  return d as Descriptor;
}

/**
 * Checks every key slot's fields (a descriptor that arrived in an archive, not read from the
 * database's own directory): a malformed one is a CorruptionError, not a failure further on.
 */
export function checkKeySlots(d: Descriptor, where: string): void {
  const bad = () => new CorruptionError(`${where}: malformed key slot`);
  if (d.keySlots.length === 0) throw bad();
  for (const s of d.keySlots as unknown[]) {
    if (s === null || typeof s !== 'object') throw bad();
    const slot = s as { type?: unknown; kdf?: unknown; m?: unknown; t?: unknown; p?: unknown; salt?: unknown; nonce?: unknown; wrapped?: unknown };
    if (typeof slot.salt !== 'string' || !fromHex(slot.salt, 16) || typeof slot.nonce !== 'string' || !fromHex(slot.nonce, NONCE_BYTES) || typeof slot.wrapped !== 'string' || !fromHex(slot.wrapped, KEY_BYTES + 16)) throw bad();
    if (slot.type === 'key') continue;
    if (slot.type !== 'passphrase' || slot.kdf !== 'argon2id') throw bad();
    const [m, t, p] = [slot.m, slot.t, slot.p] as number[];
    if (!(Number.isSafeInteger(m) && Number.isSafeInteger(t) && Number.isSafeInteger(p) && p! >= 1 && t! >= 1 && m! >= 8 * p!)) throw bad();
  }
}

/** Writes a descriptor (one made elsewhere: an archive's) as `file`, atomically, as createDescriptor does. */
export async function writeDescriptor(file: string, d: Descriptor, vfs: Vfs = nodeVfs): Promise<void> {
  await writeFileAtomic(vfs, file, JSON.stringify(d, null, 2) + '\n');
}

/** What `OuroDB.deriveKey(purpose)` gives for the database of this master key and id (hex). */
export function derivedKey(masterKey: Uint8Array, databaseId: string, purpose: string): Uint8Array {
  return deriveKey(masterKey, fromHex(databaseId, 16)!, `ourodb/v1/derived/${purpose}`);
}

/** Tries every slot of the matching type; returns the master key or throws WrongKeyError. */
export async function unlock(descriptor: Descriptor, creds: Credentials): Promise<Uint8Array> {
  const type: Slot['type'] = 'key' in creds ? 'key' : 'passphrase';
  const slots = descriptor.keySlots.filter((s) => s.type === type);
  if (slots.length === 0) throw new WrongKeyError(`this database has no ${type} slot; open it with the other kind of credential`);
  for (const slot of slots) {
    const salt = fromHex(slot.salt, 16);
    const nonce = fromHex(slot.nonce, 24);
    const wrapped = fromHex(slot.wrapped, KEY_BYTES + 16);
    if (!salt || !nonce || !wrapped) throw new CorruptionError('malformed key slot in descriptor');
    const cost = slot.type === 'passphrase' ? { m: slot.m, t: slot.t, p: slot.p } : DEFAULT_ARGON2;
    try {
      return xchachaOpen(new AeadKey(await kek(creds, salt, cost)), nonce, wrapped, slotAad(descriptor.databaseId, slot.type));
    } catch {
      // try the next slot of this type
    }
  }
  throw new WrongKeyError(type === 'key' ? 'the key does not unlock this database' : 'the passphrase does not unlock this database');
}
