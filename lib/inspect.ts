/**
 * Debugging views of a database directory for `ouro inspect`, readable without the key: WAL
 * records, a block's footer, the index keys. With the key, entries are decrypted too. These read
 * LevelDB and the files directly (the database must not be open elsewhere) and never write.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { ClassicLevel } from '../index/leveldb.js';
import { EntryKind } from '../blockstore/format.js';
import { BlockStore } from '../blockstore/store.js';
import { PREFIX_ALT, PREFIX_BLOCK, PREFIX_CHILD, PREFIX_CHUNK, PREFIX_DEAD, PREFIX_HEADS, PREFIX_HINT, PREFIX_META, PREFIX_OBJECT, PREFIX_REFCOUNT, PREFIX_RETIRED, PREFIX_SEALED_SEQ, PREFIX_TOMBSTONE, PREFIX_VERSION, PREFIX_WAL, keys } from '../index/keys.js';
import { decodeBlockInfo, decodeCount, decodeHeads, decodeHintRow, decodeLocation } from '../index/values.js';
import { decodeWalRecords } from '../wal/record.js';
import { fromHex, toHex } from './bytes.js';
import { DatabaseKeys } from './crypto.js';
import { nodeVfs } from './vfs/vfs.js';
import { openEntry } from './entry.js';
import { BadArgumentError, CorruptionError, LockedError, NotFoundError, OuroError, ioError } from './errors.js';
import { type Credentials, DESCRIPTOR_FILE, readDescriptor, unlock } from './keyring.js';
import { decodePack } from './pack.js';
import { decodeRecord } from './record.js';

type Ldb = ClassicLevel<Buffer, Buffer>;

async function withIndex<T>(dir: string, fn: (ldb: Ldb) => Promise<T>): Promise<T> {
  const ldb: Ldb = new ClassicLevel<Buffer, Buffer>(path.join(dir, 'index'), { keyEncoding: 'buffer', valueEncoding: 'buffer', createIfMissing: false });
  try {
    await ldb.open();
  } catch (err) {
    const code = (err as { cause?: { code?: string } }).cause?.code ?? (err as { code?: string }).code;
    if (code === 'LEVEL_LOCKED') throw new LockedError(`${dir} is open in another process`, { cause: err });
    throw ioError(`opening ${dir}/index`, err);
  }
  try {
    return await fn(ldb);
  } finally {
    await ldb.close();
  }
}

export interface WalRecordView {
  seq: number;
  offset: number;
  kind: EntryKindName;
  flags: number;
  length: number;
  plainLength: number;
  id: string;
  sha256: string;
}

type EntryKindName = 'chunk' | 'object' | 'pack';
const KIND_NAMES: Record<number, EntryKindName> = { [EntryKind.Chunk]: 'chunk', [EntryKind.Object]: 'object', [EntryKind.Pack]: 'pack' };

/** Every WAL record: entries acknowledged but not yet sealed into a block. */
export function inspectWal(dir: string): Promise<WalRecordView[]> {
  return withIndex(dir, async (ldb) => {
    const out: WalRecordView[] = [];
    for await (const [k, v] of ldb.iterator(keys.walRange())) {
      const { seq, offset } = keys.decodeWal(k);
      for (const r of decodeWalRecords(v, offset)) {
        out.push({ seq, offset: r.offset, kind: KIND_NAMES[r.kind]!, flags: r.flags, length: r.length, plainLength: r.plainLength, id: toHex(r.id), sha256: toHex(r.hash) });
      }
    }
    return out;
  });
}

export interface BlockView {
  id: string;
  file: string;
  seq: number;
  size: number;
  /** `records`: a pack's records (with credentials), each with its hash. */
  entries: Array<{ offset: number; kind: EntryKindName; flags: number; length: number; plainLength: number; id: string; sha256: string; record?: unknown; records?: unknown[]; error?: string }>;
}

/**
 * A sealed block's header and footer (id or unique id prefix). With credentials, each object
 * record is decrypted and shown, and each chunk authenticated.
 */
export async function inspectBlock(dir: string, idPrefix: string, creds?: Credentials): Promise<BlockView> {
  if (!/^[0-9a-f]{2,64}$/.test(idPrefix)) throw new BadArgumentError('a block id (or a prefix of at least 2 hex digits) is needed');
  const descriptor = await readDescriptor(path.join(dir, DESCRIPTOR_FILE));
  const store = new BlockStore(nodeVfs, dir, fromHex(descriptor.databaseId, 16)!);
  const matches = (await store.listSealed()).filter((b) => b.idHex.startsWith(idPrefix));
  if (matches.length === 0) throw new NotFoundError(`no block ${idPrefix}`);
  if (matches.length > 1) throw new BadArgumentError(`block prefix ${idPrefix} names ${matches.length} blocks`);
  const { idHex, path: file } = matches[0]!;
  const index = await store.readIndex(file);
  const dbKeys = creds ? new DatabaseKeys(await unlock(descriptor, creds), fromHex(descriptor.databaseId, 16)!) : undefined;
  const handle = dbKeys ? await fs.open(file, 'r') : undefined;
  try {
    const entries: BlockView['entries'] = [];
    for (const row of index.rows) {
      const view: BlockView['entries'][number] = { offset: row.offset, kind: KIND_NAMES[row.kind]!, flags: row.flags, length: row.length, plainLength: row.plainLength, id: toHex(row.id), sha256: toHex(row.hash) };
      if (dbKeys && handle) {
        const bytes = Buffer.allocUnsafe(row.length);
        await handle.read(bytes, 0, row.length, row.offset);
        try {
          const plain = openEntry(dbKeys.data, bytes, { id: row.id, kind: row.kind }, file, row.offset);
          const show = (hash: Buffer, bytes: Buffer) => {
            const r = decodeRecord(bytes, toHex(hash));
            return { type: r.type, size: r.size, key: r.key, parent: r.parent && toHex(r.parent), prev: r.prev.map(toHex), created: new Date(r.created).toISOString(), meta: r.meta, chunks: Array.from(r.chunks, (c) => ({ id: toHex(c.id), size: c.size })), inline: r.inline ? r.inline.byteLength : null };
          };
          if (row.kind === EntryKind.Object) view.record = show(row.id, plain);
          if (row.kind === EntryKind.Pack) view.records = decodePack(plain, `${file}@${row.offset}`).map((p) => ({ hash: toHex(p.hash), ...show(p.hash, plain.subarray(p.offset, p.offset + p.length)) }));
        } catch (err) {
          if (!(err instanceof OuroError)) throw err;
          view.error = err.message;
        }
      }
      entries.push(view);
    }
    return { id: idHex, file, seq: index.seq, size: index.size, entries };
  } finally {
    await handle?.close();
  }
}

/** Every index key, decoded by kind (bulky kinds can be filtered with `only`, e.g. 'keys'). */
export function inspectKeys(dir: string, only?: string): Promise<Array<Record<string, unknown>>> {
  return withIndex(dir, async (ldb) => {
    const out: Array<Record<string, unknown>> = [];
    for await (const [k, v] of ldb.iterator()) {
      const p = k[0]!;
      let row: Record<string, unknown>;
      try {
        row = decodeKey(p, k, v);
      } catch (err) {
        if (!(err instanceof OuroError)) throw err;
        row = { kind: 'undecodable', key: toHex(k), value: toHex(v), error: err.message };
      }
      if (only === undefined || row['kind'] === only) out.push(row);
    }
    return out;
  });
}

function decodeKey(p: number, k: Buffer, v: Buffer): Record<string, unknown> {
  switch (p) {
    case PREFIX_META: return { kind: 'meta', name: k.toString('ascii', 1), value: toHex(v) };
    case PREFIX_WAL: return { kind: 'wal', ...keys.decodeWal(k), records: v.length / 76 };
    case PREFIX_CHUNK: return { kind: 'chunk', id: toHex(k.subarray(1)), location: decodeLocation(v) };
    case PREFIX_OBJECT: return { kind: 'object', hash: toHex(k.subarray(1)), location: decodeLocation(v) };
    case PREFIX_BLOCK: return { kind: 'block', id: toHex(k.subarray(1)), ...decodeBlockInfo(v) };
    case PREFIX_SEALED_SEQ: return { kind: 'sealed-seq', seq: keys.decodeSeqKey(k), block: toHex(v) };
    case PREFIX_HEADS: return { kind: 'keys', key: k.toString('utf8', 1), heads: decodeHeads(v).map((h) => ({ hash: toHex(h.hash), version: h.n, tombstone: h.tombstone })) };
    case PREFIX_VERSION: {
      const d = keys.decodeVersion(k);
      return { kind: 'version', key: d.key.toString('utf8'), version: d.n, hash: toHex(d.hash) };
    }
    case PREFIX_CHILD: return { kind: 'child', parent: toHex(k.subarray(1, 33)), child: toHex(k.subarray(33)) };
    case PREFIX_REFCOUNT: return { kind: 'refcount', chunk: toHex(k.subarray(1)), count: decodeCount(v) };
    case PREFIX_DEAD: return { kind: 'dead-bytes', seq: keys.decodeSeqKey(k), bytes: decodeCount(v) };
    case PREFIX_RETIRED: return { kind: 'retired', block: toHex(k.subarray(1)), seq: Number(v.readBigUInt64LE(0)) };
    case PREFIX_ALT: return { kind: 'other-location', of: k[1] === PREFIX_CHUNK ? 'chunk' : 'object', id: toHex(k.subarray(2)), location: decodeLocation(v) };
    case PREFIX_TOMBSTONE: return { kind: 'cluster-tombstone', block: toHex(k.subarray(1)), state: v[0] };
    case PREFIX_HINT: {
      const tags = decodeHintRow(v);
      return { kind: 'hint', key: k.toString('utf8', 1), hintTag: toHex(tags.hintTag), contentTag: toHex(tags.contentTag) };
    }
    default: throw new CorruptionError(`unknown index key prefix 0x${p.toString(16)}`);
  }
}
