/**
 * The counters persisted under 'm' "stats", and their encoding. The running copy is owned by
 * IndexStore (index/store.ts), which writes it with every batch; a rebuild recounts it
 * (lib/rebuild.ts).
 */
import { Packr } from 'msgpackr/pack';

export interface PersistedStats {
  objects: number;
  chunks: number;
  logicalBytes: number;
  uniqueBytes: number;
  chunkStoredBytes: number;
  storedBytes: number;
  blocks: number;
  walRecords: number;
  walEntryBytes: number;
}

export const ZERO_STATS: PersistedStats = { objects: 0, chunks: 0, logicalBytes: 0, uniqueBytes: 0, chunkStoredBytes: 0, storedBytes: 0, blocks: 0, walRecords: 0, walEntryBytes: 0 };

const statsCodec = new Packr({ useRecords: false });

export function encodeStats(s: PersistedStats): Buffer {
  return statsCodec.pack(s);
}

/** The stats stored in `bytes` (missing counters read as zero; no bytes: all zero). */
export function decodeStats(bytes: Buffer | undefined): PersistedStats {
  return { ...ZERO_STATS, ...(bytes ? (statsCodec.unpack(bytes) as Partial<PersistedStats>) : {}) };
}

/** Adds `v` to counter `k` of a batch's stats delta. */
export function addStat(delta: Partial<PersistedStats>, k: keyof PersistedStats, v: number): void {
  delta[k] = (delta[k] ?? 0) + v;
}
