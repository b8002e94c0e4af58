/**
 * TEMPORARY STUB of s3-auth's carrier/s3/sigv4.ts: it names the access key but checks no
 * signature. Replaced by the real file at merge; never shipped.
 */
import { S3Error } from './errors.js';

export interface S3Request {
  method: string;
  rawPath: string;
  query: Array<[string, string]>;
  headers: Record<string, string | string[] | undefined>;
  body: AsyncIterable<Uint8Array>;
}
export interface Authenticated {
  accessKeyId: string;
  body: AsyncIterable<Uint8Array>;
  contentLength: number | undefined;
}

export async function authenticate(req: S3Request, lookupSecret: (accessKeyId: string) => Promise<string | undefined>, _options: { region: string; now?: () => number; maxSkewMs?: number }): Promise<Authenticated> {
  const h = (n: string) => { const v = req.headers[n]; return Array.isArray(v) ? v[0] : v; };
  const cred = /Credential=([^/]+)\//.exec(h('authorization') ?? '')?.[1] ?? req.query.find(([k]) => k === 'X-Amz-Credential')?.[1].split('/')[0];
  if (!cred) throw new S3Error('AccessDenied', 403, 'anonymous requests are refused');
  if ((await lookupSecret(cred)) === undefined) throw new S3Error('InvalidAccessKeyId', 403, 'unknown access key id');
  const mode = h('x-amz-content-sha256') ?? '';
  const decoded = h('x-amz-decoded-content-length');
  const len = decoded ?? h('content-length');
  return { accessKeyId: cred, body: mode.startsWith('STREAMING-') ? dechunk(req.body) : req.body, contentLength: len === undefined ? undefined : Number(len) };
}

async function* dechunk(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  let buf = Buffer.alloc(0);
  let need = -1;
  for await (const piece of body) {
    buf = Buffer.concat([buf, piece]);
    for (;;) {
      if (need < 0) {
        const nl = buf.indexOf('\r\n');
        if (nl < 0) break;
        need = parseInt(buf.subarray(0, nl).toString().split(';')[0]!, 16);
        buf = buf.subarray(nl + 2);
        if (need === 0) return;
      }
      if (buf.length < need + 2) break;
      yield buf.subarray(0, need);
      buf = buf.subarray(need + 2);
      need = -1;
    }
  }
}
