/**
 * A node's persistent Ed25519 identity (its libp2p peer id), kept in `<dir>/node-identity.json`
 * with owner-only permissions. Given a wrapping key (the database's master key, where the node has
 * one), the private key is stored sealed with XChaCha20-Poly1305 under a key derived from it, so a
 * copy of the data directory without the key cannot impersonate the node.
 *
 * File (JSON, version 1): { version, type: 'Ed25519', key } with `key` the hex libp2p protobuf of
 * the private key, or { version, type, nonce, sealed } with `sealed` = XChaCha20-Poly1305(key
 * derived by HKDF-SHA256(wrapKey, info "ourodb/v1/node-identity"), nonce, protobuf, AD "ourodb
 * node identity v1").
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { fromHex, toHex } from '../lib/bytes.js';
import { AeadKey, NONCE_BYTES, deriveKey, xchachaOpen, xchachaSeal } from '../lib/crypto.js';
import { CorruptionError, UnsupportedVersionError, WrongKeyError, ioError } from '../lib/errors.js';
import { writeFileAtomic } from '../lib/fsutil.js';
import { nodeVfs } from '../lib/vfs/vfs.js';

export const IDENTITY_FILE = 'node-identity.json';
const IDENTITY_VERSION = 1;
const AD = new TextEncoder().encode('ourodb node identity v1');

interface IdentityFile {
  version: number;
  type: 'Ed25519';
  key?: string;
  nonce?: string;
  sealed?: string;
}

function wrappingKey(wrapKey: Uint8Array): AeadKey {
  return new AeadKey(deriveKey(wrapKey, new Uint8Array(0), 'ourodb/v1/node-identity'));
}

/** Loads the node's identity from `dir`, creating it on first use. */
export async function loadIdentity(dir: string, wrapKey?: Uint8Array): Promise<PrivateKey> {
  const file = path.join(dir, IDENTITY_FILE);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(`reading ${file}`, err);
    const key = await generateKeyPair('Ed25519');
    await writeIdentity(file, privateKeyToProtobuf(key), wrapKey);
    return key;
  }
  // Owner-only, whatever a copy or an umask did to it.
  await fs.chmod(file, 0o600).catch(() => {});
  let body: IdentityFile;
  try {
    body = JSON.parse(text) as IdentityFile;
  } catch (err) {
    throw new CorruptionError(`${file} is not valid JSON`, { cause: err, location: { file } });
  }
  if (body.version !== IDENTITY_VERSION) throw new UnsupportedVersionError(`${file} has version ${String(body.version)}; this release reads ${IDENTITY_VERSION}`);
  let bytes: Uint8Array | undefined;
  if (body.sealed !== undefined) {
    if (!wrapKey) throw new WrongKeyError(`${file} is sealed with the database key; open the node with it`);
    const nonce = fromHex(body.nonce ?? '', NONCE_BYTES);
    const sealed = /^([0-9a-f]{2})+$/.test(body.sealed) ? Buffer.from(body.sealed, 'hex') : undefined;
    if (!nonce || !sealed) throw new CorruptionError(`${file} is malformed`, { location: { file } });
    try {
      bytes = xchachaOpen(wrappingKey(wrapKey), nonce, sealed, AD);
    } catch (err) {
      throw new WrongKeyError(`the key does not unseal ${file}`, { cause: err });
    }
  } else {
    bytes = typeof body.key === 'string' && /^([0-9a-f]{2})+$/.test(body.key) ? Buffer.from(body.key, 'hex') : undefined;
  }
  if (!bytes) throw new CorruptionError(`${file} is malformed`, { location: { file } });
  let key: PrivateKey;
  try {
    key = privateKeyFromProtobuf(bytes);
  } catch (err) {
    throw new CorruptionError(`${file} does not hold a private key`, { cause: err, location: { file } });
  }
  // Made before the node had its database (it joined, then took the cluster's): seal it now.
  if (body.sealed === undefined && wrapKey) await writeIdentity(file, bytes, wrapKey);
  return key;
}

async function writeIdentity(file: string, bytes: Uint8Array, wrapKey: Uint8Array | undefined): Promise<void> {
  let body: IdentityFile;
  if (wrapKey) {
    const nonce = crypto.randomBytes(NONCE_BYTES);
    body = { version: IDENTITY_VERSION, type: 'Ed25519', nonce: toHex(nonce), sealed: toHex(xchachaSeal(wrappingKey(wrapKey), nonce, bytes, AD)) };
  } else {
    body = { version: IDENTITY_VERSION, type: 'Ed25519', key: toHex(bytes) };
  }
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFileAtomic(nodeVfs, file, JSON.stringify(body, null, 2) + '\n');
  await fs.chmod(file, 0o600).catch(() => {});
}
