/**
 * Checking a block as it arrives (blockstore/entry-hashes.ts): the entry hashes taken from the
 * bytes in passing must agree with the footer exactly when the file is good, and a check given
 * them must still refuse a bad file (falling back to reading it) whatever the bytes did to the
 * parse. Also errorText, which names what a failed transfer failed with.
 */
import fs from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EntryHashStream } from '../blockstore/entry-hashes.js';
import { ENTRY_HEADER_BYTES, HEADER_BYTES } from '../blockstore/format.js';
import { readBlockIndex, verifyBlockFile } from '../blockstore/store.js';
import { CorruptionError, ProtocolError, errorText } from '../lib/errors.js';
import { OuroDB } from '../lib/index.js';
import { type Vfs, nodeVfs } from '../lib/vfs/vfs.js';
import { pseudoRandom, tempDir } from './helpers.js';

/** The bytes of one sealed block holding chunks of several sizes, small records and one large value. */
async function sealedBlock(): Promise<{ bytes: Buffer; id: Buffer }> {
  const db = await OuroDB.open(tempDir(), { key: Buffer.alloc(32, 3), chunkSizes: { min: 4096, avg: 8192, max: 16384 } });
  await db.put(pseudoRandom('large', 200_000));
  for (let i = 0; i < 20; i++) await db.put(`small value ${i}`, { key: `k/${i}` });
  await db.flush();
  let id = '';
  for await (const b of db.blocks()) id = b.id;
  const bytes = fs.readFileSync(db.blockPath(id));
  await db.close();
  return { bytes, id: Buffer.from(id, 'hex') };
}

/** Feeds `bytes` to a fresh stream in pieces cut at `cuts` (sorted offsets). */
function feed(bytes: Buffer, cuts: number[]): EntryHashStream {
  const s = new EntryHashStream(bytes.length);
  let at = 0;
  for (const c of [...cuts, bytes.length]) {
    if (c <= at) continue;
    s.update(bytes.subarray(at, c));
    at = c;
  }
  return s;
}

function writeTemp(bytes: Buffer): string {
  const file = `${tempDir()}/block.part`;
  fs.writeFileSync(file, bytes);
  return file;
}

describe('EntryHashStream', () => {
  it('matches the footer of a good block however the bytes are cut into pieces', async () => {
    const { bytes } = await sealedBlock();
    const index = await readBlockIndex(nodeVfs, writeTemp(bytes));
    expect(index.rows.length).toBeGreaterThan(20);
    expect(feed(bytes, []).matches(index.rows)).toBe(true);
    // One byte at a time: every boundary falls mid-header and mid-payload somewhere.
    expect(feed(bytes, Array.from({ length: bytes.length }, (_, i) => i)).matches(index.rows)).toBe(true);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: bytes.length }), { maxLength: 40 }), (cuts) => {
        expect(feed(bytes, cuts.sort((x, y) => x - y)).matches(index.rows)).toBe(true);
      }),
      { numRuns: 50 },
    );
  });

  it('does not match when any entry byte differs, and the check then reads the file and refuses it', async () => {
    const { bytes, id } = await sealedBlock();
    const index = await readBlockIndex(nodeVfs, writeTemp(bytes));
    const last = index.rows.at(-1)!;
    // A payload byte, an entry header byte (its CRC then fails and the parse stops), the last entry's last byte.
    for (const at of [index.rows[3]!.offset + ENTRY_HEADER_BYTES + 5, index.rows[7]!.offset + 4, last.offset + last.length - 1]) {
      const bad = Buffer.from(bytes);
      bad[at]! ^= 0x40;
      const seen = feed(bad, [1000, 5000]);
      expect(seen.matches(index.rows)).toBe(false);
      await expect(verifyBlockFile(nodeVfs, writeTemp(bad), id, seen)).rejects.toBeInstanceOf(CorruptionError);
    }
  });

  it('a check given matching hashes accepts the good file without reading its entries; without them it reads and accepts', async () => {
    const { bytes, id } = await sealedBlock();
    const file = writeTemp(bytes);
    // Counts the bytes read through the vfs: the index alone (header, footer, trailer) is small.
    let bytesRead = 0;
    const counting: Vfs = {
      ...nodeVfs,
      open: async (f, flags) => {
        const h = await nodeVfs.open(f, flags);
        return new Proxy(h, {
          get: (target, name) => {
            if (name === 'read') {
              return async (buf: Buffer, off: number, len: number, pos: number) => {
                const n = await target.read(buf, off, len, pos);
                bytesRead += n;
                return n;
              };
            }
            const v: unknown = Reflect.get(target, name);
            return typeof v === 'function' ? v.bind(target) : v;
          },
        });
      },
    };
    const seen = feed(bytes, [HEADER_BYTES, 777]);
    expect((await verifyBlockFile(counting, file, id, seen)).id.equals(id)).toBe(true);
    const indexOnly = bytesRead;
    expect(indexOnly).toBeLessThan(bytes.length / 10);
    bytesRead = 0;
    expect((await verifyBlockFile(counting, file, id)).id.equals(id)).toBe(true);
    expect(bytesRead).toBeGreaterThanOrEqual(bytes.length);
  });

  it('hashes of other bytes never vouch for a file: a mismatch falls back to the file itself', async () => {
    const { bytes, id } = await sealedBlock();
    const index = await readBlockIndex(nodeVfs, writeTemp(bytes));
    // Hashes of a corrupted copy, checked against the good file: the fallback reads it and accepts.
    const bad = Buffer.from(bytes);
    bad[index.rows[2]!.offset + ENTRY_HEADER_BYTES]! ^= 1;
    const file = writeTemp(bytes);
    expect((await verifyBlockFile(nodeVfs, file, id, feed(bad, []))).rows.length).toBe(index.rows.length);
    // A truncated stream (fewer entries seen than the footer names) never matches.
    expect(feed(bytes.subarray(0, index.rows[5]!.offset), []).matches(index.rows)).toBe(false);
  });
});

describe('errorText', () => {
  it('names what a transfer failed with, whatever libp2p rejected with', () => {
    expect(errorText(new ProtocolError('bad frame'))).toBe('OURO_PROTOCOL: bad frame');
    expect(errorText(new TypeError('x is undefined'))).toBe('TypeError: x is undefined');
    // libp2p may reject with the 'close' Event of a stream or connection; String() says "[object Event]".
    const closed = Object.assign(new Event('close'), { error: new Error('connection lost') });
    expect(errorText(closed)).toBe('close event (Error: connection lost)');
    expect(errorText(new Event('abort'))).toBe('abort event');
    expect(errorText('plain')).toBe('plain');
  });
});
