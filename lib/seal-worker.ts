/** A seal worker thread (see lib/seal-pool.ts): chunk ids and sealing under the database's keys. */
import { parentPort, workerData } from 'node:worker_threads';
import { DatabaseKeys } from './crypto.js';
import { sealEntry } from './entry.js';
import type { PoolReply, PoolRequest, WorkerKeys } from './seal-pool.js';

const { masterKey, databaseId } = workerData as WorkerKeys;
const keys = new DatabaseKeys(masterKey, databaseId);
/** Chunks identified and waiting for the main thread's seal-or-drop decision, by job. */
const held = new Map<number, { id: Buffer; plain: Uint8Array }>();
const port = parentPort!;

port.on('message', (m: PoolRequest) => {
  try {
    if (m.op === 'identify') {
      const id = keys.chunkId(m.plain);
      held.set(m.job, { id, plain: m.plain });
      port.postMessage({ job: m.job, id } satisfies PoolReply);
    } else if (m.op === 'seal') {
      const chunk = held.get(m.job);
      if (!chunk) throw new Error(`no chunk held for job ${m.job}`);
      held.delete(m.job);
      const s = sealEntry(keys.data, m.kind, chunk.id, chunk.plain, m.compress);
      // sealEntry allocates each entry in its own ArrayBuffer, so handing it over moves no bytes.
      port.postMessage({ job: m.job, bytes: s.bytes, flags: s.flags, plainLength: s.plainLength, hash: s.hash } satisfies PoolReply, [s.bytes.buffer as ArrayBuffer]);
    } else {
      held.delete(m.job);
    }
  } catch (err) {
    port.postMessage({ job: m.job, error: err instanceof Error ? err.message : String(err) } satisfies PoolReply);
  }
});
