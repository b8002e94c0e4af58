/**
 * What the admin API's routes share (carrier/admin.ts, carrier/admin-db.ts): the JSON answer and
 * error form, and strict reading of the input. Input is refused, never guessed at: a parameter or
 * body field a route does not take, one given twice, a value that is not valid percent-encoded
 * UTF-8, or input over a limit is a 400 `OURO_BAD_ARGUMENT` naming it, before anything is done.
 */
import type http from 'node:http';
import { BadArgumentError } from '../lib/errors.js';

/** The longest query string taken (the request line is a header: Node's own limit is MAX_HEADER_BYTES). */
export const MAX_QUERY_BYTES = 8 * 1024;
/** All request headers together, the request line included; over it the answer is a 400 from clientError. */
export const MAX_HEADER_BYTES = 64 * 1024;
/** The largest JSON request body (the database's values are streamed, not read as JSON). */
export const MAX_BODY_BYTES = 64 * 1024;

/** A failure that is about HTTP itself (authentication, a route or method that does not exist). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: 'UNAUTHORIZED' | 'FORBIDDEN' | 'NOT_FOUND' | 'METHOD_NOT_ALLOWED',
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The request's JSON body (an object; empty is `{}`), at most MAX_BODY_BYTES. */
export async function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const part of req as AsyncIterable<Buffer>) {
    n += part.length;
    if (n > MAX_BODY_BYTES) throw new BadArgumentError(`request body over ${MAX_BODY_BYTES} bytes`);
    parts.push(part);
  }
  if (n === 0) return {};
  try {
    const v = JSON.parse(Buffer.concat(parts).toString('utf8')) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch (err) {
    throw new BadArgumentError('request body must be a JSON object', { cause: err });
  }
}

/** Refuses a body field `route` does not take (a typo must not be ignored). */
export function onlyFields(body: Record<string, unknown>, allowed: readonly string[], route: string): void {
  for (const k of Object.keys(body)) if (!allowed.includes(k)) throw new BadArgumentError(`${route} takes no body field ${JSON.stringify(k)}${allowed.length ? ` (it takes ${allowed.join(', ')})` : ''}`);
}

/**
 * The query string of `rawUrl` (as the client sent it) as name -> value, decoded strictly:
 * URLSearchParams turns a bad escape into U+FFFD and keeps the last of repeated names, which
 * stored values under keys nobody asked for. `+` is a space, as in form encoding.
 */
export function parseQuery(rawUrl: string, allowed: readonly string[], route: string): Map<string, string> {
  const q = rawUrl.indexOf('?');
  const raw = q < 0 ? '' : rawUrl.slice(q + 1);
  if (Buffer.byteLength(raw) > MAX_QUERY_BYTES) throw new BadArgumentError(`query string is ${Buffer.byteLength(raw)} bytes; the maximum is ${MAX_QUERY_BYTES} (give metadata in the x-ouro-meta header)`);
  const out = new Map<string, string>();
  for (const part of raw.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const name = decode(eq < 0 ? part : part.slice(0, eq), 'a parameter name');
    if (!allowed.includes(name)) throw new BadArgumentError(`${route} takes no parameter ${JSON.stringify(name)}${allowed.length ? ` (it takes ${allowed.join(', ')})` : ''}`);
    if (out.has(name)) throw new BadArgumentError(`parameter ${name} is given more than once`);
    out.set(name, decode(eq < 0 ? '' : part.slice(eq + 1), `parameter ${name}`));
  }
  return out;
}

function decode(text: string, what: string): string {
  try {
    return decodeURIComponent(text.replaceAll('+', ' '));
  } catch (err) {
    throw new BadArgumentError(`${what} is not valid percent-encoded UTF-8: ${text.length > 64 ? `${text.slice(0, 64)}...` : text}`, { cause: err });
  }
}
