/** A seal worker thread (see lib/seal-pool.ts): chunk ids and sealing under the database's keys. */
import { parentPort, workerData } from 'node:worker_threads';
import { EntryKind } from '../blockstore/format.js';
import { DatabaseKeys } from './crypto.js';
import { sealEntry } from './entry.js';
import type { PoolReply, PoolRequest, SmallKind, WorkerStart } from './seal-pool.js';

const { masterKey, databaseId, slab } = workerData as WorkerStart;
const keys = new DatabaseKeys(masterKey, databaseId);
/**
 * Chunks identified and waiting for the main thread's seal-or-drop decision, by job. A chunk in
 * the pool's slab is held as its slot (`at`, `capacity`): the main thread gives that slot to no
 * other chunk until this one's entry has been written, or it was dropped.
 */
const held = new Map<number, { id: Buffer; plain: Uint8Array; at?: number; capacity?: number }>();
const port = parentPort!;

port.on('message', (m: PoolRequest) => {
  try {
    if (m.op === 'identify' && 'at' in m) {
      const plain = Buffer.from(slab, m.at, m.length);
      const id = keys.chunkId(plain);
      // Sealed at once when asked (SealPool.identifyAndSeal): one round trip instead of two.
      if (m.seal) sealInSlab(m.job, { id, plain, at: m.at, capacity: m.capacity }, m.seal.kind, m.seal.compress, true);
      else {
        held.set(m.job, { id, plain, at: m.at, capacity: m.capacity });
        port.postMessage({ job: m.job, id } satisfies PoolReply);
      }
    } else if (m.op === 'identify') {
      const id = keys.chunkId(m.plain);
      held.set(m.job, { id, plain: m.plain });
      port.postMessage({ job: m.job, id } satisfies PoolReply);
    } else if (m.op === 'seal') {
      const chunk = held.get(m.job);
      if (!chunk) throw new Error(`no chunk held for job ${m.job}`);
      held.delete(m.job);
      if (chunk.at !== undefined) {
        sealInSlab(m.job, chunk as SlabChunk, m.kind, m.compress, false);
        return;
      }
      // Sealed in place when the chunk's buffer has room (lib/chunk-buffers.ts), else into a
      // buffer of its own; either way the entry owns its ArrayBuffer, so handing it over moves
      // no bytes. A chunk buffer left unused goes back as `spare`.
      const memory = chunk.plain.buffer as ArrayBuffer;
      const s = sealEntry(keys.data, m.kind, chunk.id, chunk.plain, m.compress, Buffer.from(memory, chunk.plain.byteOffset));
      const inPlace = s.bytes.buffer === memory;
      const reply: PoolReply = { job: m.job, bytes: s.bytes, flags: s.flags, plainLength: s.plainLength, hash: new Uint8Array(s.hash), ...(inPlace ? {} : { spare: memory }) };
      port.postMessage(reply, inPlace ? [memory] : [s.bytes.buffer as ArrayBuffer, memory]);
    } else if (m.op === 'small') {
      const reply = sealSmall(m.job, m.kind, m.plain, m.lengths, m.compress);
      const r = reply.small;
      port.postMessage(reply satisfies PoolReply, [r.bytes.buffer, r.lengths.buffer, r.ids.buffer, r.hashes.buffer, r.flags.buffer] as ArrayBuffer[]);
    } else if (m.op === 'drop') {
      const chunk = held.get(m.job);
      held.delete(m.job);
      if (chunk && chunk.at === undefined) port.postMessage({ job: m.job, spare: chunk.plain.buffer as ArrayBuffer } satisfies PoolReply, [chunk.plain.buffer as ArrayBuffer]);
    } else {
      throw new Error(`unknown request ${(m as { op: unknown }).op}`);
    }
  } catch (err) {
    port.postMessage({ job: m.job, error: err instanceof Error ? err.message : String(err) } satisfies PoolReply);
  }
});

interface SlabChunk {
  id: Buffer;
  plain: Uint8Array;
  at: number;
  capacity: number;
}

/**
 * Seals a chunk of the slab in place (an entry is never longer than its slot's capacity) and
 * answers with its offset, and its id when `withId`. Into a buffer of its own if it ever did not
 * fit. The footer hash goes back in an array of its own: sha256Native's digest is a view of
 * a shared 64 KiB pool array, all of which a message would copy (and the main thread collect:
 * ~22 mark-compacts per GiB, docs/performance.md "third round").
 */
function sealInSlab(job: number, chunk: SlabChunk, kind: EntryKind, compress: boolean, withId: boolean): void {
  const s = sealEntry(keys.data, kind, chunk.id, chunk.plain, compress, Buffer.from(slab, chunk.at, chunk.capacity));
  const hash = new Uint8Array(s.hash);
  const id = withId ? { id: new Uint8Array(chunk.id) } : {};
  if (s.bytes.buffer === slab) {
    port.postMessage({ job, at: chunk.at, length: s.bytes.length, flags: s.flags, plainLength: s.plainLength, hash, ...id } satisfies PoolReply);
  } else {
    port.postMessage({ job, bytes: s.bytes, flags: s.flags, plainLength: s.plainLength, hash, ...id } satisfies PoolReply, [s.bytes.buffer as ArrayBuffer]);
  }
}

/** Ids and seals a batch of object records or of chunks (SealPool.sealSmall); one buffer of results each way. */
function sealSmall(job: number, kind: SmallKind, plain: Uint8Array, lengths: Uint32Array, compress: boolean) {
  if (kind !== EntryKind.Object && kind !== EntryKind.Chunk) throw new Error(`cannot seal a batch of kind ${String(kind)}`);
  const n = lengths.length;
  const entries: Buffer[] = [];
  const sealedLengths = new Uint32Array(n);
  const ids = new Uint8Array(n * 32);
  const hashes = new Uint8Array(n * 32);
  const flags = new Uint8Array(n);
  let at = 0;
  for (let i = 0; i < n; i++) {
    const entry = plain.subarray(at, at + lengths[i]!);
    at += lengths[i]!;
    const id = kind === EntryKind.Chunk ? keys.chunkId(entry) : keys.objectId(entry);
    const s = sealEntry(keys.data, kind, id, entry, compress);
    entries.push(s.bytes);
    sealedLengths[i] = s.bytes.length;
    ids.set(id, i * 32);
    hashes.set(s.hash, i * 32);
    flags[i] = s.flags;
  }
  // Its own ArrayBuffer (Buffer.concat may hand out a slice of the shared pool), so it can be moved.
  const bytes = new Uint8Array(entries.reduce((sum, e) => sum + e.length, 0));
  let offset = 0;
  for (const e of entries) {
    bytes.set(e, offset);
    offset += e.length;
  }
  return { job, small: { bytes, lengths: sealedLengths, ids, hashes, flags } };
}
