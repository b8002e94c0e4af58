// A small application that embeds OuroDB as a dependency would: it imports the package by name
// from an application that installed the packed tarball (test/package.test.ts sets that up), and
// prints one JSON line of what it saw. Plain JavaScript on purpose: no TypeScript, no test runner,
// nothing from this repository but the tarball.
//
// Usage: node app.mjs DIR [--damage N]
//   round trips, keys and history, parents, reopen, check, wrong key; then, with --damage, N keyed
//   values, one byte flipped in the middle of every index table, and every key read back.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { OuroDB, OuroError, levelBinding } from 'ourodb';

const [dir, flag, countArg] = process.argv.slice(2);
const fail = (what) => {
  throw new Error(`app: ${what}`);
};
const equal = (a, b) => Buffer.from(a).equals(Buffer.from(b));
// A cheap key-derivation cost: this checks behaviour, not the cost of argon2id.
const creds = { passphrase: 'app passphrase', kdf: { m: 1024, t: 1, p: 1 } };
const report = { node: process.version, verified: levelBinding.verified, binding: path.basename(path.dirname(levelBinding.path)) };

let db = await OuroDB.open(dir, creds);
const small = await db.put('hello from an application');
const bytes = crypto.randomBytes(200_000);
const medium = await db.put(bytes, { meta: { name: 'medium' } });
// A 3 MiB stream: several content-defined chunks.
const big = crypto.randomBytes(3 << 20);
const streamed = await db.put(Readable.from([big.subarray(0, 1 << 20), big.subarray(1 << 20)]));
const v1 = await db.put('draft', { key: 'docs/readme' });
const v2 = await db.put('final', { key: 'docs/readme' });
const child = await db.put('comment', { parent: v2.hash });
await db.close();

db = await OuroDB.open(dir, creds);
if (Buffer.from(await db.get(small.hash)).toString() !== 'hello from an application') fail('small value');
if (!equal(await db.get(medium.hash), bytes)) fail('medium value');
if ((await db.stat(medium.hash)).meta.name !== 'medium') fail('metadata');
const pieces = [];
for await (const piece of db.stream(streamed.hash)) pieces.push(piece);
if (!equal(Buffer.concat(pieces), big)) fail('streamed value');
if (Buffer.from(await db.getByKey('docs/readme')).toString() !== 'final') fail('getByKey');
const history = [];
for await (const v of db.history('docs/readme')) history.push(v.hash);
if (history.join() !== [v2.hash, v1.hash].join()) fail(`history ${history}`);
if ((await db.parent(child.hash)) !== v2.hash) fail('parent');
const check = await db.check({ readData: true });
if (!check.ok) fail(`check: ${JSON.stringify(check.problems)}`);
report.indexReadsVerified = (await db.stats()).indexReadsVerified;
await db.close();

try {
  await OuroDB.open(dir, { passphrase: 'not the passphrase' });
  fail('a wrong passphrase opened the database');
} catch (err) {
  if (!(err instanceof OuroError) || err.code !== 'OURO_WRONG_KEY') throw err;
  report.wrongKey = err.code;
}
report.roundTrips = 'ok';

if (flag === '--damage') {
  const count = Number(countArg);
  const damaged = `${dir}-damaged`;
  const key = crypto.randomBytes(32);
  const valueOf = (i) => crypto.createHash('sha256').update(`value ${i}`).digest('hex');
  db = await OuroDB.open(damaged, { key });
  for (let i = 0; i < count; i += 500) {
    await Promise.all(Array.from({ length: Math.min(500, count - i) }, (_, j) => db.put(valueOf(i + j), { key: `k${i + j}`, durability: 'relaxed' })));
  }
  await db.close(); // seals, and compacts the index into tables
  const tables = fs.readdirSync(path.join(damaged, 'index')).filter((f) => f.endsWith('.ldb'));
  for (const f of tables) {
    const file = path.join(damaged, 'index', f);
    const b = fs.readFileSync(file);
    b[b.length >> 1] ^= 0x40;
    fs.writeFileSync(file, b);
  }
  const result = { tables: tables.length, right: 0, typed: 0, wrong: 0, openTyped: null, rebuilt: false };
  try {
    db = await OuroDB.open(damaged, { key });
  } catch (err) {
    if (!(err instanceof OuroError)) throw err;
    result.openTyped = err.code;
    db = undefined;
  }
  if (db) {
    result.rebuilt = fs.readdirSync(damaged).some((f) => f.startsWith('index.corrupt-'));
    for (let i = 0; i < count; i++) {
      try {
        const v = await db.getByKey(`k${i}`);
        if (Buffer.from(v).toString() === valueOf(i)) result.right++;
        else result.wrong++;
      } catch (err) {
        if (!(err instanceof OuroError)) throw err;
        // A key that was written and now reads as absent is a silently missing key: wrong.
        if (err.code === 'OURO_NOT_FOUND') result.wrong++;
        else result.typed++;
      }
    }
    await db.close().catch((err) => {
      if (!(err instanceof OuroError)) throw err;
    });
  }
  report.damage = result;
}
console.log(JSON.stringify(report));
