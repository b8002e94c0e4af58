/**
 * TEMPORARY: s3-engine's db.stream(hash, {start, end}) and db.concat(hashes, options), done the
 * slow way (read and skip; read and rewrite) until that branch lands. Each call site goes
 * straight to the OuroDB method at merge and this file is deleted.
 */
import type { OuroDB, PutOptions, PutResult } from '../../lib/db.js';

export async function* streamRange(db: OuroDB, hash: string, range: { start?: number; end?: number }): AsyncGenerator<Uint8Array> {
  const start = range.start ?? 0;
  const end = range.end ?? Infinity;
  let at = 0;
  for await (const piece of db.stream(hash)) {
    const from = Math.max(start - at, 0);
    const to = Math.min(end - at, piece.length);
    if (to > from) yield piece.subarray(from, to);
    at += piece.length;
    if (at >= end) return;
  }
}

export function concat(db: OuroDB, hashes: string[], options: PutOptions): Promise<PutResult> {
  async function* all(): AsyncGenerator<Uint8Array> {
    for (const h of hashes) yield* db.stream(h);
  }
  return db.put(all(), options);
}
