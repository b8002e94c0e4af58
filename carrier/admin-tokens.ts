/**
 * The admin API's bearer tokens (docs/node.md, "Admin API"), kept in `<dir>/admin-tokens.json`
 * (docs/FORMAT.md, "Admin tokens"), owner-only. The admin token is made when the directory is
 * prepared (`ouro node init`, or the first start of a directory made before this file existed),
 * so it is the same at every start and the `ouro cluster` commands, scrapers and scripts keep
 * working across restarts. The `read` and `data` tokens exist once an operator makes them with
 * `ouro node token rotate DIR --scope read|data`.
 *
 * Scopes nest: `read` grants the reads (what Prometheus and probes need), `data` the reads and
 * the `/db/` routes, `admin` everything. One token per scope; rotating a scope replaces its token.
 * `admin.token` in the config, when set, is the admin token and wins over the file's.
 *
 * The tokens are kept in plain text, like node.run.json: the `ouro cluster` commands must read
 * the admin token, and anyone who can read the file can read the node's identity beside it.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { BadArgumentError, CorruptionError, UnsupportedVersionError, ioError } from '../lib/errors.js';
import { writeFileAtomic } from '../lib/fsutil.js';
import { nodeVfs } from '../lib/vfs/vfs.js';

export const TOKENS_FILE = 'admin-tokens.json';
const TOKENS_VERSION = 1;

/** Widest last: a scope grants everything the scopes before it grant. */
export const SCOPES = ['read', 'data', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];
export type Tokens = Partial<Record<Scope, string>>;

/** Whether a token of scope `have` may make a request that needs `need`. */
export function grants(have: Scope, need: Scope): boolean {
  return SCOPES.indexOf(have) >= SCOPES.indexOf(need);
}

/** A new token: its scope in clear (for the operator and secret scanners), then 32 random bytes. */
function newToken(scope: Scope): string {
  return `ouro_${scope}_${crypto.randomBytes(32).toString('base64url')}`;
}

/** The tokens in `<dir>/admin-tokens.json`; none if the file does not exist. */
export async function readTokens(dir: string): Promise<Tokens> {
  const file = path.join(dir, TOKENS_FILE);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw ioError(`reading ${file}`, err);
  }
  let parsed: { version?: unknown; tokens?: unknown };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch (err) {
    throw new CorruptionError(`${file} is not valid JSON`, { cause: err, location: { file } });
  }
  if (parsed?.version !== TOKENS_VERSION) throw new UnsupportedVersionError(`${file}: version ${String(parsed?.version)} (this release reads ${TOKENS_VERSION})`);
  const tokens: Tokens = {};
  const given = parsed.tokens;
  if (given === null || typeof given !== 'object') throw new CorruptionError(`${file}: tokens is not an object`, { location: { file } });
  for (const [scope, token] of Object.entries(given)) {
    if (!(SCOPES as readonly string[]).includes(scope) || typeof token !== 'string' || token.length < 16) throw new CorruptionError(`${file}: ${scope} is not a scope with a token`, { location: { file } });
    tokens[scope as Scope] = token;
  }
  return tokens;
}

async function writeTokens(dir: string, tokens: Tokens): Promise<void> {
  const file = path.join(dir, TOKENS_FILE);
  // The node directory is 0700, so the moment before the chmod exposes nothing.
  await writeFileAtomic(nodeVfs, file, JSON.stringify({ version: TOKENS_VERSION, tokens }, null, 2) + '\n');
  await fs.chmod(file, 0o600);
}

/** The tokens, with an admin token made and saved first if the directory has none yet. */
export async function ensureTokens(dir: string): Promise<Tokens> {
  const tokens = await readTokens(dir);
  if (tokens.admin !== undefined) return tokens;
  const made = { ...tokens, admin: newToken('admin') };
  await writeTokens(dir, made);
  return made;
}

/**
 * Replaces the token of `scope` (makes it if it had none) and saves the file; the old token stops
 * working once the node serving the admin API reads the new set (AdminServer.rotate does both).
 */
export async function rotateToken(dir: string, scope: Scope, configToken: string | null): Promise<{ token: string; tokens: Tokens }> {
  // Rotating the file's admin token would change nothing the node accepts, yet print a token as if it did.
  if (scope === 'admin' && configToken !== null) throw new BadArgumentError(`admin.token in ${dir}/ouro-node.json sets the admin token (it wins over ${TOKENS_FILE}): change it there`);
  const token = newToken(scope);
  const tokens = { ...(await readTokens(dir)), [scope]: token };
  await writeTokens(dir, tokens);
  return { token, tokens };
}
