/**
 * Reaching a running node from another `ouro` process: its admin API, found in
 * `DIR/node.run.json`. The `cluster` commands use it, and so do the database commands (`check`,
 * `gc`) given a node directory whose node runs: the node holds its database's lock, so they go
 * through the node instead of opening the files.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { RunInfo } from '../../carrier/admin.js';
import { NotFoundError, OuroError, type OuroErrorCode } from '../../lib/errors.js';

/** The database a database command should work on, given the DIR an operator named. */
export type DbTarget = { kind: 'files'; dir: string } | { kind: 'node'; nodeDir: string };

/**
 * DIR holding a database is that database, unless it is the database of a running node (then
 * the node). A node directory (`ouro-node.json`) means its database, `DIR/<database.path>`:
 * through the node while one runs there, else the files.
 */
export async function dbTarget(dir: string): Promise<DbTarget> {
  let CONFIG_FILE: string;
  try {
    ({ CONFIG_FILE } = await import('../../carrier/config.js'));
  } catch (err) {
    // An install without the optional cluster packages (zod among them) runs no node, so DIR is
    // a database's directory; the database commands work there as before.
    if ((err as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND') return { kind: 'files', dir };
    throw err;
  }
  const isNodeDir = (d: string) => fs.existsSync(path.join(d, CONFIG_FILE));
  let nodeDir: string | undefined;
  if (isNodeDir(dir)) nodeDir = dir;
  else if (fs.existsSync(path.join(dir, 'OURODB.json')) && isNodeDir(path.dirname(path.resolve(dir))) && (await nodeDbDir(path.dirname(path.resolve(dir)))) === path.resolve(dir)) nodeDir = path.dirname(path.resolve(dir));
  if (nodeDir === undefined) return { kind: 'files', dir };
  const dbDir = await nodeDbDir(nodeDir);
  if (dbDir === undefined) throw new NotFoundError(`${dir} is a node directory whose node runs without a database (database.enabled is false): there is no database to work on`);
  return (await runningNode(nodeDir)) ? { kind: 'node', nodeDir } : { kind: 'files', dir: dbDir };
}

/** The database directory of the node in `nodeDir`, or undefined when its config has none. */
async function nodeDbDir(nodeDir: string): Promise<string | undefined> {
  const { loadConfig } = await import('../../carrier/config.js');
  const config = await loadConfig(nodeDir);
  return config.database.enabled ? path.resolve(nodeDir, config.database.path) : undefined;
}

/** The run file of the node in `dir` when its process is alive (a killed node leaves its file behind). */
async function runningNode(dir: string): Promise<RunInfo | undefined> {
  const { readRunInfo } = await import('../../carrier/admin.js');
  const run = await readRunInfo(dir);
  if (!run) return undefined;
  try {
    process.kill(run.pid, 0);
    return run;
  } catch (err) {
    // EPERM: a process of another user has that pid, so it is alive (and may be the node).
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? run : undefined;
  }
}

/** Sends one admin request to the node running in `dir`; its answer, not yet read. */
async function request(dir: string, method: string, route: string, body?: unknown): Promise<Response> {
  const { readRunInfo } = await import('../../carrier/admin.js');
  const run = await readRunInfo(dir);
  if (!run) throw new NotFoundError(`no node is running in ${dir} (no node.run.json): start it with \`ouro node start ${dir}\``);
  try {
    return await fetch(`${run.admin}${route}`, { method, headers: { authorization: `Bearer ${run.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  } catch (err) {
    throw new NotFoundError(`the node in ${dir} does not answer at ${run.admin} (stopped without cleaning up?)`, { cause: err });
  }
}

/** An admin API error answer as the OuroError it names. */
function answerError(error: { code: string; message: string }): OuroError {
  const code = error.code.startsWith('OURO_') ? (error.code as OuroErrorCode) : 'OURO_BAD_ARGUMENT';
  return new OuroError(code, error.message);
}

/** One admin API call to the node running in `dir`. */
export async function admin(dir: string, method: string, route: string, body?: unknown): Promise<unknown> {
  const res = await request(dir, method, route, body);
  const answer = (await res.json()) as { error?: { code: string; message: string } };
  if (answer.error) throw answerError(answer.error);
  return answer;
}

/**
 * An admin call answered in JSON lines (`POST /db/check`): `onLine` sees each line before the
 * last, which is the result (or an error, thrown).
 */
export async function adminLines<T>(dir: string, route: string, body: unknown, onLine: (line: Record<string, unknown>) => void): Promise<T> {
  const res = await request(dir, 'POST', route, body);
  if (!(res.headers.get('content-type') ?? '').startsWith('application/x-ndjson')) {
    const answer = (await res.json()) as { error?: { code: string; message: string } };
    throw answer.error ? answerError(answer.error) : new OuroError('OURO_PROTOCOL', `${route} did not answer in JSON lines`);
  }
  let pending = '';
  let last: Record<string, unknown> | undefined;
  const take = (text: string) => {
    if (text === '') return;
    if (last !== undefined) onLine(last);
    last = JSON.parse(text) as Record<string, unknown>;
  };
  for await (const chunk of res.body! as AsyncIterable<Uint8Array>) {
    pending += Buffer.from(chunk).toString('utf8');
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const l of lines) take(l);
  }
  take(pending);
  if (last === undefined) throw new OuroError('OURO_PROTOCOL', `${route} answered nothing (the node stopped?)`);
  if (last.error) throw answerError(last.error as { code: string; message: string });
  return last as T;
}
