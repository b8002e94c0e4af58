/**
 * `npm run demo`: the main job on an embedded default. Creates a database in a temp directory,
 * stores a real directory tree (TypeScript's own lib/, ~20 MB of files), stores it again after
 * changing one file, shows what deduplication saved, reopens the database and verifies every
 * file byte for byte.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { OuroDB } from '../lib/index.js';

const require = createRequire(import.meta.url);
const tree = process.argv[2] ?? path.join(path.dirname(require.resolve('typescript/package.json')), 'lib');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-demo-'));
const passphrase = 'demo passphrase';
const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

function files(root: string): string[] {
  return fs.readdirSync(root, { withFileTypes: true, recursive: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name)).sort();
}

async function storeTree(db: OuroDB, root: string, edit?: (rel: string, data: Buffer) => Buffer): Promise<Map<string, { hash: string; sha: string }>> {
  const out = new Map<string, { hash: string; sha: string }>();
  const list = files(root);
  const started = Date.now();
  let bytes = 0;
  for (let i = 0; i < list.length; i += 16) {
    await Promise.all(list.slice(i, i + 16).map(async (file) => {
      const rel = path.relative(root, file);
      let data: Buffer = fs.readFileSync(file);
      if (edit) data = edit(rel, data);
      const r = await db.put(data, { meta: { path: rel } });
      bytes += data.length;
      out.set(rel, { hash: r.hash, sha: crypto.createHash('sha256').update(data).digest('hex') });
    }));
  }
  const secs = (Date.now() - started) / 1000;
  console.log(`  stored ${list.length} files, ${mib(bytes)} in ${secs.toFixed(2)} s (${(bytes / 1048576 / secs).toFixed(0)} MiB/s, every put durable)`);
  return out;
}

console.log(`OuroDB demo: database in ${dir}\nsource tree: ${tree}\n`);
let db = await OuroDB.open(dir, { passphrase });
console.log('1. first version of the tree');
const v1 = await storeTree(db, tree);
const s1 = await db.stats();
console.log(`  logical ${mib(s1.logicalBytes)}, unique ${mib(s1.uniqueBytes)}, on disk ${mib(s1.storedBytes)} (zstd where it pays, all encrypted)\n`);

const changed = [...v1.keys()].reduce((a, b) => (fs.statSync(path.join(tree, b)).size > fs.statSync(path.join(tree, a)).size ? b : a));
console.log(`2. second version, with ${changed} edited in the middle`);
const v2 = await storeTree(db, tree, (rel, data) => (rel === changed ? Buffer.concat([data.subarray(0, data.length >> 1), Buffer.from('\n// edited by the demo\n'), data.subarray(data.length >> 1)]) : data));
const s2 = await db.stats();
console.log(`  logical ${mib(s2.logicalBytes)} (two versions), unique ${mib(s2.uniqueBytes)}: the second version added ${((s2.uniqueBytes - s1.uniqueBytes) / 1024).toFixed(0)} KiB of new chunks`);
console.log(`  dedup ratio ${s2.dedupRatio.toFixed(2)}x, compression ${s2.compressionRatio.toFixed(2)}x, on disk ${mib(s2.storedBytes)}, ${s2.blocks} sealed blocks, ${s2.walRecords} entries in the WAL\n`);
await db.close();

console.log('3. reopen and verify every file of both versions, byte for byte');
db = await OuroDB.open(dir, { passphrase });
let ok = 0;
for (const version of [v1, v2]) {
  for (const [rel, { hash, sha }] of version) {
    const got = crypto.createHash('sha256').update(await db.get(hash)).digest('hex');
    if (got !== sha) throw new Error(`${rel} read back wrong`);
    const st = await db.stat(hash);
    if (st.meta['path'] !== rel) throw new Error(`${rel}: metadata lost`);
    ok++;
  }
}
const edited = await db.stat(v2.get(changed)!.hash);
console.log(`  ${ok} objects verified; the edited file is object ${edited.hash.slice(0, 16)}... (${edited.size} bytes, ${edited.chunks} chunks)`);
await db.close();

console.log('\n4. a wrong passphrase is refused, and nothing on disk changes');
await OuroDB.open(dir, { passphrase: 'not it' }).then(
  () => {
    throw new Error('wrong passphrase accepted');
  },
  (err: { code?: string }) => console.log(`  refused with ${err.code}`),
);
fs.rmSync(dir, { recursive: true, force: true });
console.log('\ndone.');
