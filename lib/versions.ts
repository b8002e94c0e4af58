/**
 * The version model of a key, as pure functions shared by the write path and the index rebuild
 * (which must reach the same answers from the blocks alone).
 *
 * Every put under a key is a version whose record names its predecessors (`prev`). The heads are
 * the versions no other version names. A put by this process names all current heads, so locally
 * a key has one head; a version written concurrently elsewhere (cluster members) names an older
 * one, and the key then has two heads until a put names both (a merge).
 * A version's number n is 1 + the largest n among its predecessors (1 for a first version), so
 * history can be listed newest first without reading records.
 */
import type { Head } from '../index/values.js';

export function versionNumber(prev: readonly Head[]): number {
  return prev.reduce((n, h) => Math.max(n, h.n), 0) + 1;
}

/** The heads after `added` (whose predecessors are `prev`) joins a key whose heads were `current`. */
export function nextHeads(current: readonly Head[], prev: readonly Uint8Array[], added: Head): Head[] {
  const named = new Set(prev.map((p) => Buffer.from(p).toString('hex')));
  return [...current.filter((h) => !named.has(h.hash.toString('hex'))), added];
}

export interface VersionNode {
  hash: Buffer;
  prev: Buffer[];
  tombstone: boolean;
}

/**
 * Version numbers and heads of one key from its surviving versions (any order). Predecessors that
 * are not among them (purged or never seen) count as absent, as they did when the version was
 * written only if they were absent then too, which the write path guarantees: a put may name
 * only existing versions as predecessors.
 */
export function rebuildVersions(nodes: readonly VersionNode[]): { numbers: Map<string, number>; heads: Head[] } {
  const byHash = new Map(nodes.map((v) => [v.hash.toString('hex'), v]));
  const numbers = new Map<string, number>();
  const named = new Set<string>();
  for (const v of nodes) for (const p of v.prev) if (byHash.has(p.toString('hex'))) named.add(p.toString('hex'));
  const numberOf = (start: string): number => {
    // Iterative depth-first walk: histories can be far deeper than the call stack.
    const stack: string[] = [start];
    while (stack.length > 0) {
      const h = stack[stack.length - 1]!;
      if (numbers.has(h)) {
        stack.pop();
        continue;
      }
      const missing = byHash.get(h)!.prev.map((p) => p.toString('hex')).filter((p) => byHash.has(p) && !numbers.has(p));
      if (missing.length > 0) {
        stack.push(...missing);
        continue;
      }
      stack.pop();
      numbers.set(h, byHash.get(h)!.prev.reduce((n, p) => Math.max(n, numbers.get(p.toString('hex')) ?? 0), 0) + 1);
    }
    return numbers.get(start)!;
  };
  const heads: Head[] = [];
  for (const v of nodes) {
    const n = numberOf(v.hash.toString('hex'));
    if (!named.has(v.hash.toString('hex'))) heads.push({ hash: v.hash, n, tombstone: v.tombstone });
  }
  return { numbers, heads };
}
