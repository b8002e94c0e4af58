/**
 * Replicated blocks across real `ouro node start` processes on loopback QUIC (issue 7): writes
 * on one member read on another, replicas without the key hold only ciphertext, concurrent
 * writers give two heads.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { pseudoRandom } from './helpers.js';
import { type NodeProc, converged, dbApi, founderWithDb, joinKeyless, joinWithDb, keyFile, waitFor } from './cluster-harness.js';

/** Every file under `dir`, read whole (test directories are small). */
function filesUnder(dir: string): Array<{ file: string; bytes: Buffer }> {
  const out: Array<{ file: string; bytes: Buffer }> = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push({ file: p, bytes: fs.readFileSync(p) });
    }
  };
  walk(dir);
  return out;
}

/** The blocks a node holds now. */
async function held(node: NodeProc): Promise<string[]> {
  return (await node.get<{ blocks: Array<{ id: string }> }>('/replication/blocks')).blocks.map((b) => b.id);
}

describe('replication', () => {
  it('ingests on one member and reads on another; a keyless replica holds only ciphertext', async () => {
    const key = keyFile();
    const a = await founderWithDb(key);
    const b = await joinWithDb(a, key);
    const c = await joinKeyless(a);
    await waitFor(() => converged([a, b, c], [a.peerId, b.peerId, c.peerId]), 20_000, 'three members');

    const marker = 'PLAINTEXT-MARKER-' + 'x'.repeat(40);
    const big = Buffer.concat([Buffer.from(marker), pseudoRandom('big', 2_000_000)]);
    const small = await dbApi.put(a, marker, { key: 'notes/marker' });
    const large = await dbApi.put(a, big, { key: 'files/big', parent: small.hash });
    await dbApi.json(a, '/db/flush', 'POST', { replicas: 3 });

    // Read on the other keyed member: by hash, by key, history, parent.
    await waitFor(async () => (await dbApi.get(b, '/db/value?key=files/big')).status === 200, 20_000, 'b indexes the blocks');
    expect((await dbApi.value(b, large.hash)).equals(big)).toBe(true);
    expect(Buffer.from(await (await dbApi.get(b, '/db/value?key=notes/marker')).arrayBuffer()).toString()).toBe(marker);
    const hist = await dbApi.json<{ versions: Array<{ hash: string }> }>(b, '/db/history?key=files/big');
    expect(hist.versions.map((v) => v.hash)).toEqual([large.hash]);

    // The keyless member holds every block (RF 3 of 3), and neither the plaintext nor the key.
    const held = filesUnder(path.join(c.dir, 'replicas', 'blocks'));
    expect(held.length).toBeGreaterThan(0);
    expect(held.length).toBe((await dbApi.json<{ blocks: number }>(a, '/db/stats')).blocks);
    const keyBytes = Buffer.from(fs.readFileSync(key, 'utf8').trim(), 'hex');
    for (const { file, bytes } of filesUnder(c.dir)) {
      expect(bytes.includes(Buffer.from(marker)), file).toBe(false);
      expect(bytes.includes(big.subarray(100_000, 100_064)), file).toBe(false);
      expect(bytes.includes(keyBytes), file).toBe(false);
      expect(bytes.includes(Buffer.from(keyBytes.toString('hex'))), file).toBe(false);
    }
  });

  it('two members writing one key concurrently give two heads on every keyed member', async () => {
    const key = keyFile();
    const a = await founderWithDb(key);
    const b = await joinWithDb(a, key);
    await waitFor(() => converged([a, b], [a.peerId, b.peerId]), 20_000, 'two members');
    const base = await dbApi.put(a, 'base', { key: 'shared' });
    await dbApi.json(a, '/db/flush', 'POST', { replicas: 2 });
    await waitFor(async () => (await dbApi.json<{ heads: string[] }>(b, '/db/heads?key=shared')).heads.length === 1, 20_000, 'b sees base');
    const [onA, onB] = await Promise.all([dbApi.put(a, 'from a', { key: 'shared' }), dbApi.put(b, 'from b', { key: 'shared' })]);
    await Promise.all([dbApi.json(a, '/db/flush', 'POST', { replicas: 2 }), dbApi.json(b, '/db/flush', 'POST', { replicas: 2 })]);
    for (const node of [a, b]) {
      await waitFor(async () => (await dbApi.json<{ heads: string[] }>(node, '/db/heads?key=shared')).heads.length === 2, 20_000, 'two heads');
      expect((await dbApi.json<{ heads: string[] }>(node, '/db/heads?key=shared')).heads.sort()).toEqual([onA.hash, onB.hash].sort());
      const hist = await dbApi.json<{ versions: Array<{ hash: string; version: number }> }>(node, '/db/history?key=shared');
      expect(hist.versions.find((v) => v.hash === base.hash)?.version).toBe(1);
    }
  });
});
