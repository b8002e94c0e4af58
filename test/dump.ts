import type { OuroDB } from '../lib/index.js';

/**
 * Everything the public API answers about a database's keys, versions, children and objects:
 * two indexes that produce equal dumps answer every query alike.
 */
export async function dump(db: OuroDB): Promise<unknown> {
  const keys = await Array.fromAsync(db.list({ includeDeleted: true }));
  const out: Record<string, unknown> = { keys };
  const hashes = new Set<string>();
  for (const k of keys) {
    const history = await Array.fromAsync(db.history(k.key));
    out[`history ${k.key}`] = history;
    out[`heads ${k.key}`] = await db.heads(k.key);
    for (const v of history) hashes.add(v.hash);
  }
  for (const h of [...hashes].sort()) {
    const st = await db.stat(h);
    if (st.parent) hashes.add(st.parent);
  }
  for (const h of [...hashes].sort()) {
    out[`children ${h}`] = await db.children(h);
    out[`stat ${h}`] = await db.stat(h);
    if ((await db.stat(h)).type === 'value') out[`value ${h}`] = Buffer.from(await db.get(h)).toString('base64');
  }
  const s = await db.stats();
  out['stats'] = { objects: s.objects, chunks: s.chunks, logicalBytes: s.logicalBytes, uniqueBytes: s.uniqueBytes };
  return out;
}
