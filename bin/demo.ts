/**
 * `npm run demo`: the main job on an embedded default. Creates a database in a temp directory,
 * stores a real directory tree (TypeScript's own lib/, ~20 MB of files) with each file under its
 * path as key, stores it again after changing one file, shows what deduplication saved and the
 * changed file's history, reopens the database, verifies every file of both versions byte for
 * byte and runs a full check.
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
      const r = await db.put(data, { key: rel, meta: { path: rel } });
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
console.log(`  history of ${changed}, newest first:`);
for await (const v of db.history(changed)) console.log(`    version ${v.version}  ${v.hash.slice(0, 16)}...  ${v.size} bytes  ${v.created.toISOString()}`);
const head = await db.getByKey(changed);
if (crypto.createHash('sha256').update(head).digest('hex') !== v2.get(changed)!.sha) throw new Error('getByKey did not return the newest version');
const check = await db.check({ readData: true });
if (!check.ok) throw new Error(`check found problems: ${JSON.stringify(check.problems)}`);
console.log(`  check: ${check.blocks} blocks, ${check.entries} entries, all ${check.entriesRead} authenticated, no problems`);
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
