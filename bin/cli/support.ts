/**
 * What every `ouro` command shares: credentials, opening the database, output (human or --json),
 * progress and the mapping from errors to exit codes (docs/cli.md lists them).
 */
import fs from 'node:fs';
import { OuroDB, OuroError, type OpenOptions } from '../../lib/index.js';
import type { Credentials } from '../../lib/keyring.js';
import { boundYoungGeneration } from './memory.js';

export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  wrongKey: 4,
  corruption: 5,
  conflict: 6,
  locked: 7,
  diskFull: 8,
  refused: 9,
} as const;

/** A usage problem found by a command itself (the parser reports its own with exit code 2). */
export class UsageError extends Error {}

export function exitCodeOf(err: unknown): number {
  if (err instanceof UsageError) return EXIT.usage;
  if (!(err instanceof OuroError)) return EXIT.failure;
  switch (err.code) {
    case 'OURO_BAD_ARGUMENT': case 'OURO_BAD_CONFIG': return EXIT.usage;
    case 'OURO_NOT_FOUND': return EXIT.notFound;
    case 'OURO_WRONG_KEY': return EXIT.wrongKey;
    case 'OURO_CORRUPTION': case 'OURO_UNSUPPORTED_VERSION': return EXIT.corruption;
    case 'OURO_CONFLICT': return EXIT.conflict;
    case 'OURO_LOCKED': return EXIT.locked;
    case 'OURO_DISK_FULL': return EXIT.diskFull;
    case 'OURO_REFUSED': return EXIT.refused;
    default: return EXIT.failure;
  }
}

export interface GlobalOptions {
  json?: boolean;
  debug?: boolean;
  keyFile?: string;
}

/** Reads a key file: 32 raw bytes, or 64 hex digits (a trailing newline is allowed). */
export function readKeyFile(file: string): Uint8Array {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    throw new UsageError(`cannot read key file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  if (bytes.length === 32) return bytes;
  const text = bytes.toString('utf8').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  throw new UsageError(`key file ${file} must hold 32 raw bytes or 64 hex digits`);
}

/** Asks for a passphrase on the terminal without echoing it. */
async function prompt(question: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(question);
  stdin.setRawMode(true);
  stdin.resume();
  let answer = '';
  try {
    return await new Promise<string>((resolve, reject) => {
      const onData = (d: Buffer) => {
        for (const ch of d.toString('utf8')) {
          if (ch === '\r' || ch === '\n') {
            stdin.off('data', onData);
            resolve(answer);
            return;
          }
          if (ch === '\u0003') {
            stdin.off('data', onData);
            reject(new UsageError('interrupted'));
            return;
          }
          if (ch === '\u007f') answer = answer.slice(0, -1);
          else answer += ch;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write('\n');
  }
}

/**
 * The credentials to use: --key-file, else OURO_PASSPHRASE, else a prompt on a terminal.
 * `confirm` asks twice (for init).
 */
export async function credentials(g: GlobalOptions, confirm = false, envName = 'OURO_PASSPHRASE', fileOption = g.keyFile): Promise<Credentials> {
  if (fileOption) return { key: readKeyFile(fileOption) };
  const env = process.env[envName];
  if (env !== undefined && env !== '') return { passphrase: env };
  if (!process.stdin.isTTY) throw new UsageError(`no credentials: set ${envName}, pass --key-file, or run on a terminal`);
  const first = await prompt('Passphrase: ');
  if (first === '') throw new UsageError('the passphrase must not be empty');
  if (confirm && (await prompt('Passphrase again: ')) !== first) throw new UsageError('the passphrases differ');
  return { passphrase: first };
}

/** Opens an existing database (never creates one: that is `ouro init`). */
export async function openDb(dir: string, g: GlobalOptions, extra: Partial<OpenOptions> = {}): Promise<OuroDB> {
  const creds = await credentials(g);
  return OuroDB.open(dir, { ...creds, create: false, ...extra });
}

export async function withDb<T>(dir: string, g: GlobalOptions, fn: (db: OuroDB) => Promise<T>, extra: Partial<OpenOptions> = {}): Promise<T> {
  boundYoungGeneration();
  const db = await openDb(dir, g, extra);
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

export { boundYoungGeneration } from './memory.js';

/** Prints a result: JSON on stdout with --json, else the human form. */
export function output(g: GlobalOptions, value: unknown, human: () => string | undefined): void {
  if (g.json) {
    process.stdout.write(`${JSON.stringify(value)}\n`);
    return;
  }
  const text = human();
  if (text !== undefined && text !== '') process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

export const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/**
 * Progress of a long operation: a one-line bar on a terminal (stderr), JSON lines on stderr with
 * --json when stderr is not a terminal, nothing otherwise. Redrawn at most 10 times a second.
 */
export class Progress {
  readonly #op: string;
  readonly #total: number | undefined;
  readonly #mode: 'bar' | 'json' | 'quiet';
  readonly #started = Date.now();
  #last = 0;
  bytes = 0;
  items = 0;

  constructor(op: string, g: GlobalOptions, total?: number) {
    this.#op = op;
    this.#total = total;
    this.#mode = process.stderr.isTTY ? 'bar' : g.json ? 'json' : 'quiet';
  }

  update(bytes: number, items: number, force = false): void {
    this.bytes = bytes;
    this.items = items;
    const now = Date.now();
    if (this.#mode === 'quiet' || (!force && now - this.#last < (this.#mode === 'bar' ? 100 : 1000))) return;
    this.#last = now;
    const secs = Math.max(0.001, (now - this.#started) / 1000);
    const rate = bytes / secs;
    const eta = this.#total !== undefined && rate > 0 ? Math.max(0, (this.#total - bytes) / rate) : undefined;
    if (this.#mode === 'json') {
      process.stderr.write(`${JSON.stringify({ progress: { op: this.#op, bytes, items, bytesPerSec: Math.round(rate), ...(this.#total !== undefined ? { total: this.#total } : {}), ...(eta !== undefined ? { etaSec: Math.round(eta) } : {}) } })}\n`);
      return;
    }
    const pct = this.#total ? ` ${Math.min(100, (100 * bytes) / this.#total).toFixed(0).padStart(3)}%` : '';
    const etaText = eta !== undefined ? `  ETA ${Math.floor(eta / 60)}:${String(Math.floor(eta % 60)).padStart(2, '0')}` : '';
    process.stderr.write(`\r${this.#op}${pct}  ${mib(bytes)}  ${items} items  ${mib(rate)}/s${etaText}\u001b[K`);
  }

  done(): void {
    this.update(this.bytes, this.items, true);
    if (this.#mode === 'bar') process.stderr.write('\r\u001b[K');
  }
}
