/**
 * One benchmark part per process: `node dist/bench/run.js --only <part> [--quick] [--size-mib N]
 * [--out FILE]` (`npm run bench` runs them all through bench/harness.ts, which builds the report).
 * Each figure is recorded as a row next to its peer from the same run (bench/report.ts); the
 * machine is shared and noisy: compare ratios, not absolute figures.
 *
 *   ingest   N MiB of incompressible data as one streamed put, durable, encrypted, and read back
 *            peers: raw floor = sequential write of the same bytes to one file + fsync; Helia's
 *            UnixFS importer over blockstore-fs; Hypercore (bench/peers.ts). OuroDB and each
 *            peer run in a process of their own (bench/peer-run.ts); peak RSS while ingesting,
 *            sampled the same way in each
 *   backup   one large file backed up and restored by `ouro put`/`get`, restic and borg, with
 *            each process's peak RSS (GNU time; also for `tree`); the restore is the median of
 *            three, in rotated order
 *   recovery time to open after SIGKILL with a full WAL, vs classic-level (bench/recovery.ts)
 *   small    1 KiB puts, 64 concurrent writers, durable
 *            peer: raw classic-level put({ sync: true }) from 64 concurrent writers
 *   micro    chunker, chunk id, entry sealing, XChaCha native vs @noble (benchmark package)
 *   keyed, list, gc: the key model (bench/keys.ts)
 *   tree     `ouro put` of a many-file source tree, version after version, beside restic and borg;
 *            export/import throughput (bench/tree.ts)
 *   carrier  QUIC raw stream vs carrier requests, throughput and round trips, 4 KiB vs 64 KiB
 *            QUIC reads (bench/carrier.ts)
 *   replication  a sealed block pushed to a replica vs a raw stream; put latency with
 *            replicas: 2 vs local (bench/replication.ts)
 *   restore-rf  time to restore RF 2 in a 3-node cluster after losing a member holding --size-mib (bench/replication.ts)
 *   blockstore  Helia's UnixFS importer and exporter over OuroBlockstore (ourodb/blockstore) vs over
 *            blockstore-fs: one large file (64 MiB quick, 256 full, or --size-mib) and 2,000 / 10,000
 *            small files; MiB/s both ways and bytes on disk (bench/blockstore.ts)
 *   s3       the S3 gateway of a real `ouro node start` through the AWS SDK: one 1 GiB object (64 MiB
 *            quick, or --size-mib) PUT by lib-storage's Upload and GET back vs db.put / db.stream
 *            in-process; 1 KiB PUTs and GETs from 64 concurrent clients (ops/s, p50/p99) vs
 *            put/getByKey in-process; the node's peak RSS (bench/s3.ts). No peer S3 server installable
 *   ec       the erasure codec: encode and decode (1 and M shards missing) of one 16 MiB block at 4+2
 *            and 8+3, MiB/s, beside the raw call of the Rust reed-solomon-erasure WASM build (bench/ec.ts)
 *   ec-cluster  replicas 3 against ec 4+2 on seven members in this process: bytes on disk per logical
 *            byte (the writer's copy apart) and the time to rebuild after losing a member, --size-mib
 *            written (64 quick, 1024 full); reads from shards with all members up against one
 *            member stopped (degraded) (bench/ec-cluster.ts)
 *   net      two members in network namespaces across a link of 100 ms round trip and 1% loss: the
 *            push of a 16 MiB block against a raw libp2p stream, and a 1 KiB put held by both
 *            members (p50) against a raw round trip, beside the same unshaped; skips with the
 *            reason where namespaces are unavailable (bench/net.ts)
 *   embed    an application embedding OuroDB: the packed tarball installed with and without the
 *            cluster stack (packages, MiB), and the cold import() time of each entry point beside
 *            classic-level's (bench/embed.ts)
 *
 * Both sides of each pair generate their input the same way (a ChaCha20 keystream, ~1.4 GiB/s
 * here), so generation costs them equally. Results go to stdout and bench/results.json.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Benchmark from 'benchmark';
import { ClassicLevel } from '../index/leveldb.js';
import { Chunker } from '../lib/chunker.js';
import { AeadKey, DatabaseKeys, gearTable, xchachaSeal, xchachaSealReference } from '../lib/crypto.js';
import { sealEntry } from '../lib/entry.js';
import { OuroDB } from '../lib/index.js';
import { EntryKind } from '../blockstore/format.js';
import { concurrent, gcReclaim, keyedPutsAndReads, listing } from './keys.js';
import { TREE_VERSIONS, type ToolResult, largeFileBench, treeBench } from './tree.js';
import { carrierBench } from './carrier.js';
import { replicationBench, restoreRfBench } from './replication.js';
import { PEERS, type PeerRun, keystream } from './peers.js';
import { recoveryBench } from './recovery.js';
import { blockstoreBench } from './blockstore.js';
import { embedBench } from './embed.js';
import { s3Bench } from './s3.js';
import { ecBench } from './ec.js';
import { type EcClusterFigures, ecClusterBench } from './ec-cluster.js';
import { type NetFigures, netBench } from './net.js';
import { PARTS, type Row } from './report.js';

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, 'size-mib': { type: 'string' }, out: { type: 'string', default: 'bench/results.json' }, only: { type: 'string' } } });
const only = values.only;
if (only !== undefined && !PARTS.includes(only)) throw new Error(`--only takes one of ${PARTS.join(', ')}`);
const runs = (part: string) => only === undefined || only === part;
const sizeMiB = Number(values['size-mib'] ?? (values.quick ? 256 : 1024));
const smallPuts = values.quick ? 10_000 : 40_000;
const MiB = 1 << 20;
const here = path.dirname(new URL(import.meta.url).pathname);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-bench-'));
const rows: Row[] = [];
const skipped: string[] = [];
/** Records one figure (with its peer) for the report. */
const row = (r: Omit<Row, 'part'> & { part?: string }) => rows.push({ part: only ?? 'all', ...r });
const results: Record<string, unknown> = { machine: `${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`, node: process.version, date: new Date().toISOString(), sizeMiB };

/** Peak RSS of each tool's backup and restore processes, beside OuroDB's (when GNU time measured them). */
function toolRssRows(what: string, ours: ToolResult, all: ToolResult[]): void {
  for (const r of all.filter((x) => x !== ours && Number.isFinite(x.backupRssMiB) && Number.isFinite(ours.backupRssMiB))) {
    row({ workload: `peak RSS backing up ${what}`, unit: 'MiB', better: 'lower', ours: ours.backupRssMiB, peer: r.tool, peerValue: r.backupRssMiB });
    row({ workload: `peak RSS restoring ${what}`, unit: 'MiB', better: 'lower', ours: ours.restoreRssMiB, peer: r.tool, peerValue: r.restoreRssMiB });
  }
}
/** Runs one ingest peer in a process of its own (bench/peer-run.ts); throws with its error line if it fails. */
function peerRun(name: string, total: number): PeerRun {
  const r = spawnSync(process.execPath, [path.join(here, 'peer-run.js'), name, work, String(total)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) throw new Error((r.stderr.split('\n').find((l) => /Error/.test(l)) ?? `exited ${r.status}`).trim());
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as PeerRun;
}

async function rawFloor(total: number): Promise<number> {
  const file = path.join(work, 'raw.bin');
  const started = process.hrtime.bigint();
  const fh = await fs.promises.open(file, 'w');
  for await (const piece of keystream(total, crypto.randomBytes(32))) await fh.write(piece);
  await fh.sync();
  await fh.close();
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  fs.rmSync(file);
  return total / MiB / secs;
}

async function smallValues(): Promise<{ ouro: number; level: number }> {
  const values1k = Array.from({ length: 1024 }, () => crypto.randomBytes(1024));
  const value = (i: number) => {
    const v = Buffer.from(values1k[i % 1024]!);
    v.writeUInt32LE(i, 0); // every value distinct: no dedup shortcut
    return v;
  };
  const dir = path.join(work, 'small');
  const db = await OuroDB.open(dir, { key: crypto.randomBytes(32) });
  const ouro = await concurrent(smallPuts, 64, (i) => db.put(value(i)));
  await db.close();
  const ldb = new ClassicLevel<Buffer, Buffer>(path.join(work, 'level'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await ldb.open();
  const level = await concurrent(smallPuts, 64, (i) => ldb.put(crypto.createHash('sha256').update(value(i)).digest(), value(i), { sync: true }));
  await ldb.close();
  return { ouro, level };
}

function micro(): Promise<Array<{ name: string; mibPerSec: number }>> {
  const keys = new DatabaseKeys(crypto.randomBytes(32), crypto.randomBytes(16));
  const chunker = new Chunker(gearTable(crypto.randomBytes(32), crypto.randomBytes(16)));
  const mib = crypto.randomBytes(8 * MiB);
  const one = mib.subarray(0, MiB);
  const kib = mib.subarray(0, 1024);
  const key = crypto.randomBytes(32);
  const aead = new AeadKey(key);
  const nonce = crypto.randomBytes(24);
  const id = keys.chunkId(one);
  const cases: Array<[string, number, () => void]> = [
    ['chunker (FastCDC) 8 MiB', 8 * MiB, () => {
      for (const _ of chunker.chunkBytes(mib)) void _;
    }],
    ['chunk id (HMAC-SHA256) 1 MiB', MiB, () => keys.chunkId(one)],
    ['seal entry (zstd probe + XChaCha + SHA-256) 1 MiB', MiB, () => sealEntry(keys.data, EntryKind.Chunk, id, one)],
    ['XChaCha20-Poly1305 native 1 MiB', MiB, () => xchachaSeal(aead, nonce, one, id)],
    ['XChaCha20-Poly1305 @noble 1 MiB', MiB, () => xchachaSealReference(key, nonce, one, id)],
    ['XChaCha20-Poly1305 native 1 KiB', 1024, () => xchachaSeal(aead, nonce, kib, id)],
    ['XChaCha20-Poly1305 @noble 1 KiB', 1024, () => xchachaSealReference(key, nonce, kib, id)],
  ];
  return new Promise((resolve) => {
    const suite = new Benchmark.Suite();
    for (const [name, , fn] of cases) suite.add(name, fn, { maxTime: values.quick ? 0.5 : 2 });
    const out: Array<{ name: string; mibPerSec: number }> = [];
    suite.on('cycle', (e: Benchmark.Event) => {
      const b = e.target as unknown as Benchmark;
      const bytes = cases.find((c) => c[0] === b.name)![1];
      out.push({ name: b.name!, mibPerSec: (b.hz! * bytes) / MiB });
    });
    suite.on('complete', () => resolve(out));
    suite.run();
  });
}

const fmt = (n: number) => n.toFixed(0).padStart(8);
console.log(`OuroDB benchmarks: ${results['machine']}, Node ${process.version}, ${sizeMiB} MiB ingest\n`);
if (runs('ingest')) {
  const floor = await rawFloor(sizeMiB * MiB);
  // OuroDB too in a process of its own, as its peers: its peak RSS is then its own, not the
  // benchmark process's (which has loaded libp2p and the rest, and just wrote the raw floor).
  const io = peerRun('OuroDB', sizeMiB * MiB);
  console.log('ingest, incompressible, durable, encrypted        MiB/s   peer MiB/s  ratio');
  console.log(`  OuroDB put (stream) vs raw write+fsync       ${fmt(io.ingestMiBs)}   ${fmt(floor)}   ${(io.ingestMiBs / floor).toFixed(2)}`);
  console.log(`  OuroDB stream read-back                      ${fmt(io.readMiBs)}`);
  console.log(`  peak RSS while ingesting                     ${fmt(io.ingestRssMiB)} MiB`);
  Object.assign(results, { rawFloorMiBs: floor, ingestMiBs: io.ingestMiBs, ingestVsFloor: io.ingestMiBs / floor, readMiBs: io.readMiBs, ingestPeakRssMiB: io.ingestRssMiB });
  const ingest = `ingest ${sizeMiB} MiB incompressible, one streamed put`;
  const read = `read back ${sizeMiB} MiB (stream)`;
  const rss = `peak RSS while ingesting ${sizeMiB} MiB`;
  row({ workload: ingest, unit: 'MiB/s', better: 'higher', ours: io.ingestMiBs, peer: 'raw write + fsync', peerValue: floor, note: 'OuroDB: encrypted, durable' });
  const readRows: Row[] = [];
  const rssRows: Row[] = [];
  for (const name of Object.keys(PEERS)) {
    try {
      const p = peerRun(name, sizeMiB * MiB);
      console.log(`  ${p.name.padEnd(44)} ${fmt(p.ingestMiBs)}   read ${fmt(p.readMiBs)} MiB/s, peak RSS ${p.ingestRssMiB.toFixed(0)} MiB  (${p.note})`);
      row({ workload: ingest, unit: 'MiB/s', better: 'higher', ours: io.ingestMiBs, peer: p.name, peerValue: p.ingestMiBs, note: `peer ${p.note}` });
      readRows.push({ part: only ?? 'all', workload: read, unit: 'MiB/s', better: 'higher', ours: io.readMiBs, peer: p.name, peerValue: p.readMiBs });
      rssRows.push({ part: only ?? 'all', workload: rss, unit: 'MiB', better: 'lower', ours: io.ingestRssMiB, peer: p.name, peerValue: p.ingestRssMiB, note: 'each in a process of its own' });
    } catch (err) {
      skipped.push(`${name}: ${err instanceof Error ? err.message : String(err)}`);
      console.log(`  (skipped ${name}: ${err instanceof Error ? err.message : String(err)})`);
    }
  }
  if (rssRows.length) rows.push(...rssRows);
  else row({ workload: rss, unit: 'MiB', better: 'lower', ours: io.ingestRssMiB });
  if (readRows.length) rows.push(...readRows);
  else row({ workload: read, unit: 'MiB/s', better: 'higher', ours: io.readMiBs });
  // Memory flat with size (issue 34): a put eight times as large peaks no higher. Full mode
  // ingests 8 GiB beside the 1 GiB above; quick mode four times its size.
  const largeMiB = sizeMiB * (values.quick ? 4 : 8);
  const large = peerRun('OuroDB', largeMiB * MiB);
  console.log(`  peak RSS while ingesting ${largeMiB} MiB              ${fmt(large.ingestRssMiB)} MiB (${fmt(large.ingestMiBs)} MiB/s)`);
  row({ workload: `peak RSS while ingesting ${largeMiB} MiB`, unit: 'MiB', better: 'lower', ours: large.ingestRssMiB, peer: `OuroDB ingesting ${sizeMiB} MiB`, peerValue: io.ingestRssMiB, note: 'flat with size: at most 1.00' });
  Object.assign(results, { largeIngestMiB: largeMiB, largeIngestPeakRssMiB: large.ingestRssMiB, largeIngestMiBs: large.ingestMiBs });
}
if (runs('backup')) {
  const b = largeFileBench(work, sizeMiB);
  console.log(`
one ${sizeMiB} MiB incompressible file, backed up and restored (each tool a process)`);
  console.log('  tool                 backup MiB/s   restore MiB/s   on disk (MiB)');
  for (const r of b.results) console.log(`  ${r.tool.padEnd(20)} ${fmt(sizeMiB / r.backupSecs)}       ${fmt(sizeMiB / r.restoreSecs)}        ${(r.storedBytes / MiB).toFixed(1)}`);
  console.log('  (restore: the median of 3 per tool, the tools in rotated order)');
  for (const s of b.skipped) console.log(`  (skipped ${s})`);
  skipped.push(...b.skipped);
  const ours = b.results.find((r) => r.tool.startsWith('OuroDB'))!;
  for (const r of b.results.filter((x) => x !== ours)) {
    row({ workload: `back up one ${sizeMiB} MiB file`, unit: 'MiB/s', better: 'higher', ours: sizeMiB / ours.backupSecs, peer: r.tool, peerValue: sizeMiB / r.backupSecs, note: 'all encrypted and durable, each a separate process' });
    row({ workload: `restore one ${sizeMiB} MiB file`, unit: 'MiB/s', better: 'higher', ours: sizeMiB / ours.restoreSecs, peer: r.tool, peerValue: sizeMiB / r.restoreSecs, note: 'median of 3 restores each, in rotated order' });
  }
  toolRssRows(`one ${sizeMiB} MiB file`, ours, b.results);
  // CPU per GiB (issue 34): what the backup of the same file costs each tool in CPU seconds,
  // user + sys, from GNU time; robust to a busy machine where wall time is not.
  const perGiB = (r: ToolResult) => r.backupCpuSecs! / (sizeMiB / 1024);
  if (Number.isFinite(ours.backupCpuSecs)) {
    console.log(`  CPU s (user+sys) per GiB backed up: ${b.results.map((r) => `${r.tool} ${perGiB(r).toFixed(2)}`).join(', ')}`);
    for (const r of b.results.filter((x) => x !== ours)) {
      row({ workload: `CPU s (user+sys) per GiB backing up one ${sizeMiB} MiB file`, unit: 's/GiB', better: 'lower', ours: perGiB(ours), peer: r.tool, peerValue: perGiB(r), note: 'GNU time, each a separate process' });
    }
  }
  Object.assign(results, { backup: b });
}
if (runs('recovery')) {
  const r = await recoveryBench(work, values.quick);
  console.log(`
recovery: open after SIGKILL with ${r.values} durable 4 KiB values (${r.walMiB.toFixed(1)} MiB) in the WAL, none sealed`);
  console.log(`  OuroDB open ${r.ouroSecs.toFixed(3)} s   classic-level open after the same synced puts ${r.levelSecs.toFixed(3)} s`);
  row({ workload: `open after SIGKILL, ${r.walMiB.toFixed(0)} MiB unsealed in the WAL`, unit: 's', better: 'lower', ours: r.ouroSecs, peer: 'classic-level (same puts, synced)', peerValue: r.levelSecs });
  Object.assign(results, { recovery: r });
}
if (runs('small')) {
  const small = await smallValues();
  console.log('\nsmall values, 1 KiB, 64 concurrent writers, durable   puts/s   peer puts/s  ratio');
  console.log(`  OuroDB put vs classic-level put({sync:true})  ${fmt(small.ouro)}   ${fmt(small.level)}   ${(small.ouro / small.level).toFixed(2)}`);
  Object.assign(results, { smallPutsPerSec: small.ouro, levelSyncPutsPerSec: small.level });
  row({ workload: '1 KiB puts, 64 concurrent writers, durable', unit: 'puts/s', better: 'higher', ours: small.ouro, peer: 'classic-level put({sync:true})', peerValue: small.level });
}
if (runs('keyed')) {
  const k = await keyedPutsAndReads(work, smallPuts, values.quick ? 20_000 : 100_000);
  console.log('\nkeyed values, 1 KiB (puts: 64 writers, durable; reads: 16)   ops/s   peer ops/s  ratio');
  console.log(`  OuroDB put {key} vs classic-level put({sync:true})    ${fmt(k.put)}   ${fmt(k.levelPut)}   ${(k.put / k.levelPut).toFixed(2)}`);
  console.log(`  OuroDB getByKey vs classic-level get                  ${fmt(k.get)}   ${fmt(k.levelGet)}   ${(k.get / k.levelGet).toFixed(2)}`);
  Object.assign(results, { keyedPutsPerSec: k.put, levelKeyedPutsPerSec: k.levelPut, getByKeyPerSec: k.get, levelGetPerSec: k.levelGet });
  row({ workload: 'put with key, 1 KiB, 64 writers, durable', unit: 'puts/s', better: 'higher', ours: k.put, peer: 'classic-level put({sync:true})', peerValue: k.levelPut });
  row({ workload: 'getByKey, 16 concurrent', unit: 'gets/s', better: 'higher', ours: k.get, peer: 'classic-level get', peerValue: k.levelGet });
}
if (runs('list')) {
  const count = values.quick ? 100_000 : 1_000_000;
  const l = await listing(work, count);
  console.log(`\nlist of ${count} keys                                    keys/s   peer keys/s  ratio`);
  console.log(`  OuroDB list() vs classic-level iterator              ${fmt(l.keysPerSec)}   ${fmt(l.levelKeysPerSec)}   ${(l.keysPerSec / l.levelKeysPerSec).toFixed(2)}`);
  console.log(`  (filling the database took ${l.fillSecs.toFixed(0)} s, relaxed durability)`);
  Object.assign(results, { listKeys: count, listKeysPerSec: l.keysPerSec, levelIterKeysPerSec: l.levelKeysPerSec });
  row({ workload: `list ${count} keys`, unit: 'keys/s', better: 'higher', ours: l.keysPerSec, peer: 'classic-level iterator', peerValue: l.levelKeysPerSec });
}
if (runs('gc')) {
  const g = await gcReclaim(work, values.quick ? 64 : 256);
  console.log('\ngc: 3 of 4 values purged, a 16-writer put loop running');
  console.log(`  freed ${g.freedMiB.toFixed(0)} MiB of block files, copied ${g.copiedMiB.toFixed(0)} MiB of live entries: ${g.reclaimMiBs.toFixed(0)} MiB/s of dead data reclaimed`);
  console.log(`  stored bytes ${(g.storedBefore / MiB).toFixed(0)} MiB -> ${(g.storedAfter / MiB).toFixed(0)} MiB; writer ${g.writerBefore.toFixed(0)} puts/s before gc, ${g.writerDuring.toFixed(0)} during (ratio ${(g.writerDuring / g.writerBefore).toFixed(2)})`);
  Object.assign(results, { gc: g });
  row({ workload: 'writer puts/s while gc runs (16 writers)', unit: 'puts/s', better: 'higher', ours: g.writerDuring, peer: 'the same writer before gc', peerValue: g.writerBefore });
  row({ workload: 'gc: dead data reclaimed under load', unit: 'MiB/s', better: 'higher', ours: g.reclaimMiBs });
}
if (runs('tree')) {
  const t = treeBench(work);
  console.log(`\nsource tree: ${TREE_VERSIONS.length} versions of date-fns (${t.files} files, ${(t.logicalBytes / MiB).toFixed(0)} MiB in all), backed up one after another`);
  console.log('  tool                 backups (s)   again, unchanged (s)   on disk (MiB)   restore last (s)   (again and restore: median of 3 turns)');
  for (const r of t.results) console.log(`  ${r.tool.padEnd(20)} ${r.backupSecs.toFixed(2).padStart(11)}   ${r.againSecs!.toFixed(2).padStart(20)}   ${(r.storedBytes / MiB).toFixed(1).padStart(13)}   ${r.restoreSecs.toFixed(2).padStart(16)}   restores ${r.restoreRuns!.map((x) => x.toFixed(2)).join(' ')}`);
  for (const s of t.skipped) console.log(`  (skipped ${s})`);
  console.log(`  ouro export ${t.exportMiBs.toFixed(0)} MiB/s, import ${t.importMiBs.toFixed(0)} MiB/s of logical data (archive ${(t.archiveBytes / MiB).toFixed(1)} MiB)`);
  Object.assign(results, { tree: t });
  skipped.push(...t.skipped);
  const ours = t.results.find((r) => r.tool.startsWith('OuroDB'))!;
  for (const r of t.results.filter((x) => x !== ours)) {
    row({ workload: `versioned tree: back up ${TREE_VERSIONS.length} versions`, unit: 's', better: 'lower', ours: ours.backupSecs, peer: r.tool, peerValue: r.backupSecs, note: `${t.files} files, ${(t.logicalBytes / MiB).toFixed(0)} MiB in all` });
    row({ workload: 'versioned tree: back up the last version again, unchanged', unit: 's', better: 'lower', ours: ours.againSecs!, peer: r.tool, peerValue: r.againSecs! });
    row({ workload: 'versioned tree: bytes on disk after all versions', unit: 'MiB', better: 'lower', ours: ours.storedBytes / MiB, peer: r.tool, peerValue: r.storedBytes / MiB });
    row({ workload: 'versioned tree: restore the last version', unit: 's', better: 'lower', ours: ours.restoreSecs, peer: r.tool, peerValue: r.restoreSecs });
  }
  toolRssRows('versioned tree', ours, t.results);
  row({ workload: 'export archive of the tree database', unit: 'MiB/s', better: 'higher', ours: t.exportMiBs });
  row({ workload: 'import that archive', unit: 'MiB/s', better: 'higher', ours: t.importMiBs });
}

if (runs('carrier')) {
  const c = await carrierBench(values.quick);
  Object.assign(results, { carrier: c });
  const r = c['read65536'] as { rawMiBs: number; carrierMiBs: number; rawRttP50: number; sessionRttP50: number };
  row({ workload: 'carrier: 1 MiB requests over QUIC', unit: 'MiB/s', better: 'higher', ours: r.carrierMiBs, peer: 'raw libp2p QUIC stream', peerValue: r.rawMiBs });
  row({ workload: 'carrier: small request round trip p50', unit: 'ms', better: 'lower', ours: r.sessionRttP50, peer: 'raw QUIC round trip', peerValue: r.rawRttP50 });
}
if (runs('replication')) {
  const r = (await replicationBench(values.quick)) as { rawMiBs: number; rawHashedMiBs: number; replicatedMiBs: number; putLocalP50: number; putReplicatedP50: number; putLocalMiBs: number; putReplicatedMiBs: number };
  Object.assign(results, { replication: r });
  row({ workload: 'replication: a sealed block pushed to a member', unit: 'MiB/s', better: 'higher', ours: r.replicatedMiBs, peer: 'raw libp2p QUIC stream', peerValue: r.rawMiBs });
  row({ workload: 'replication: a sealed block pushed to a member', unit: 'MiB/s', better: 'higher', ours: r.replicatedMiBs, peer: 'raw stream, receiver SHA-256s each byte', peerValue: r.rawHashedMiBs, note: `the check every replica makes; alone it runs at ${(r.rawHashedMiBs / r.rawMiBs).toFixed(2)}x the raw stream` });
  row({ workload: '1 KiB put durable on 2 members, p50', unit: 'ms', better: 'lower', ours: r.putReplicatedP50, peer: 'durable on this member only', peerValue: r.putLocalP50 });
  row({ workload: '256 KiB puts until durable on 2 members', unit: 'MiB/s', better: 'higher', ours: r.putReplicatedMiBs, peer: 'the same puts on a database alone, no node', peerValue: r.putLocalMiBs });
}
if (runs('restore-rf')) {
  const r = (await restoreRfBench(values.quick, sizeMiB)) as { lostMiB: number; copiedMiB: number; noticedSec: number; totalSec: number; copySec: number; rawSec: number };
  Object.assign(results, { restoreRf: r });
  row({ workload: `repair: RF 2 restored in a 3-node cluster after losing a member holding ${r.lostMiB.toFixed(0)} MiB`, unit: 's', better: 'lower', ours: r.totalSec, note: `noticed dead after ${r.noticedSec.toFixed(1)} s (detector: dead after 3 s)` });
  row({ workload: `repair: copying the ${r.copiedMiB.toFixed(0)} MiB left with one copy`, unit: 's', better: 'lower', ours: r.copySec, peer: 'raw libp2p QUIC stream, same bytes', peerValue: r.rawSec });
}
if (runs('blockstore')) {
  const b = await blockstoreBench(work, { fileMiB: Number(values['size-mib'] ?? (values.quick ? 64 : 256)), files: values.quick ? 2_000 : 10_000 });
  console.log('\nHelia UnixFS importer/exporter over OuroBlockstore vs blockstore-fs           import MiB/s   export MiB/s   on disk MiB');
  if (b.skipped) {
    skipped.push(b.skipped);
    console.log(`  (skipped ${b.skipped})`);
  }
  for (const w of b.workloads) {
    for (const [store, f] of [['OuroBlockstore, durable', w.ouro], ['OuroBlockstore, relaxed + flush', w.ouroRelaxed], ['blockstore-fs', w.fs]] as const) {
      console.log(`  ${`${w.name}, ${store}`.padEnd(66)} ${fmt(f.importMiBs)}       ${fmt(f.exportMiBs)}      ${(f.diskBytes / MiB).toFixed(1).padStart(8)}`);
    }
    const peer = 'Helia UnixFS + blockstore-fs';
    row({ workload: `Helia UnixFS import, ${w.name}`, unit: 'MiB/s', better: 'higher', ours: w.ouro.importMiBs, peer, peerValue: w.fs.importMiBs, note: 'OuroBlockstore: encrypted, every put durable; blockstore-fs: neither' });
    row({ workload: `Helia UnixFS import, ${w.name}, relaxed + one flush`, unit: 'MiB/s', better: 'higher', ours: w.ouroRelaxed.importMiBs, peer, peerValue: w.fs.importMiBs, note: 'OuroBlockstore: encrypted, durable once flushed at the end' });
    row({ workload: `Helia UnixFS export, ${w.name}`, unit: 'MiB/s', better: 'higher', ours: w.ouro.exportMiBs, peer, peerValue: w.fs.exportMiBs, note: 'right after the import, page cache warm' });
    row({ workload: `Helia UnixFS bytes on disk, ${w.name}`, unit: 'MiB', better: 'lower', ours: w.ouro.diskBytes / MiB, peer, peerValue: w.fs.diskBytes / MiB, note: 'allocated blocks of the store directory (OuroDB: blocks, index, WAL)' });
  }
  Object.assign(results, { blockstore: b });
}
if (runs('ec')) {
  const r = await ecBench(values.quick ? 2 : 5);
  console.log(`\nErasure codec, one 16 MiB block (${r.codec} vs ${r.raw}), MiB/s      ours     raw`);
  for (const f of r.figures) {
    console.log(`  ${`${f.shape} ${f.what}`.padEnd(60)} ${fmt(f.oursMiBs)}   ${f.rawMiBs === undefined ? '-' : fmt(f.rawMiBs)}`);
    row({ workload: `erasure codec ${f.shape} ${f.what}, 16 MiB block`, unit: 'MiB/s', better: 'higher', ours: f.oursMiBs, ...(f.rawMiBs === undefined ? {} : { peer: r.raw, peerValue: f.rawMiBs }), note: 'same construction, same bytes; one thread' });
  }
  Object.assign(results, { ec: r });
}
if (runs('ec-cluster')) {
  const { figures, reads } = await ecClusterBench(Number(values['size-mib'] ?? (values.quick ? 64 : 1024)));
  console.log('\nReplicas 3 against ec 4+2, seven members in this process      others/logical  writer/logical  lost MiB  noticed s  rebuilt s  total s');
  for (const f of figures) {
    console.log(`  ${`${f.mode}, ${f.logicalMiB.toFixed(0)} MiB written`.padEnd(60)} ${f.othersPerLogical.toFixed(2).padStart(14)} ${f.writerPerLogical.toFixed(2).padStart(15)} ${f.lostMiB.toFixed(0).padStart(9)} ${f.noticedSec.toFixed(2).padStart(10)} ${f.rebuildSec.toFixed(2).padStart(10)} ${f.totalSec.toFixed(2).padStart(8)}`);
  }
  const [rep, ec] = figures as [EcClusterFigures, EcClusterFigures];
  row({ workload: 'bytes on the other members per logical byte, ec 4+2', unit: 'x', better: 'lower', ours: ec.othersPerLogical, peer: 'replicas 3', peerValue: rep.othersPerLogical, note: `the writer's own copy besides: ${ec.writerPerLogical.toFixed(2)}x at ec, ${rep.writerPerLogical.toFixed(2)}x at replicas` });
  row({ workload: 'time to rebuild after losing a member, ec 4+2', unit: 's', better: 'lower', ours: ec.rebuildSec, peer: 'replicas 3', peerValue: rep.rebuildSec, note: `after noticing (dead + grace); the member held ${ec.lostMiB.toFixed(0)} MiB at ec, ${rep.lostMiB.toFixed(0)} MiB at replicas` });
  console.log(`\nReads at ec 4+2 of ${reads.blocks} coded blocks (${reads.MiB.toFixed(0)} MiB) by a keyless member from their shards: ${reads.healthyMiBs.toFixed(1)} MiB/s with all up, ${reads.degradedMiBs.toFixed(1)} MiB/s with one member stopped (${reads.decoded} blocks decoded)`);
  row({ workload: 'degraded read from shards, one member down, ec 4+2', unit: 'MiB/s', better: 'higher', ours: reads.degradedMiBs, peer: 'all members up', peerValue: reads.healthyMiBs, note: `${reads.decoded} of ${reads.blocks} blocks decoded; the rest had their K data shards` });
  Object.assign(results, { ecCluster: { figures, reads } });
}
if (runs('net')) {
  const r = await netBench(values.quick);
  if (typeof r.skipped === 'string') skipped.push(`net: ${r.skipped}`);
  else {
    const shaped = r.shaped as NetFigures;
    const link = 'across 100 ms RTT, 1% loss each way';
    row({ workload: `push of one 16 MiB block, ${link}`, unit: 'MiB/s', better: 'higher', ours: shaped.pushMiBs, peer: 'one raw libp2p stream, same link', peerValue: shaped.rawMiBs, note: `unshaped lab: ${(r.unshaped as NetFigures).pushMiBs.toFixed(1)} vs ${(r.unshaped as NetFigures).rawMiBs.toFixed(1)} MiB/s` });
    row({ workload: `1 KiB put made durable on two members p50, ${link}`, unit: 'ms', better: 'lower', ours: shaped.putReplicatedP50, peer: '1 KiB round trip on a raw libp2p stream, same link', peerValue: shaped.rawRttP50, note: `p99 ${shaped.putReplicatedP99.toFixed(0)} ms vs ${shaped.rawRttP99.toFixed(0)} ms` });
  }
  Object.assign(results, { net: r });
}
if (runs('s3')) {
  const r = await s3Bench(work, { objectMiB: Number(values['size-mib'] ?? (values.quick ? 64 : 1024)), small: values.quick ? 2_000 : 20_000 });
  console.log(`\nS3 gateway (ouro node start) through the AWS SDK vs the library in-process        SDK      library  ratio`);
  console.log(`  one ${r.objectMiB} MiB object PUT (lib-storage Upload), MiB/s                 ${fmt(r.sdkPutMiBs)}   ${fmt(r.libPutMiBs)}   ${(r.sdkPutMiBs / r.libPutMiBs).toFixed(2)}`);
  console.log(`  one ${r.objectMiB} MiB object GET (streamed), MiB/s                           ${fmt(r.sdkGetMiBs)}   ${fmt(r.libGetMiBs)}   ${(r.sdkGetMiBs / r.libGetMiBs).toFixed(2)}`);
  console.log(`  ${r.small} x 1 KiB PUT, 64 clients, ops/s (p50 ${r.putP50ms.toFixed(1)} ms, p99 ${r.putP99ms.toFixed(1)} ms)    ${fmt(r.putOps)}   ${fmt(r.libPutOps)}   ${(r.putOps / r.libPutOps).toFixed(2)}`);
  console.log(`  ${r.small} x 1 KiB GET, 64 clients, ops/s (p50 ${r.getP50ms.toFixed(1)} ms, p99 ${r.getP99ms.toFixed(1)} ms)    ${fmt(r.getOps)}   ${fmt(r.libGetOps)}   ${(r.getOps / r.libGetOps).toFixed(2)}`);
  console.log(`  node process peak RSS ${r.nodePeakRssMiB.toFixed(0)} MiB`);
  console.log(`  (${r.skipped})`);
  skipped.push(r.skipped);
  const lib = 'the library in-process (same bytes)';
  row({ workload: `S3 PUT of one ${r.objectMiB} MiB object (SDK Upload)`, unit: 'MiB/s', better: 'higher', ours: r.sdkPutMiBs, peer: `${lib}: db.put from a stream`, peerValue: r.libPutMiBs, note: 'target: at least 0.8x' });
  row({ workload: `S3 GET of one ${r.objectMiB} MiB object (streamed)`, unit: 'MiB/s', better: 'higher', ours: r.sdkGetMiBs, peer: `${lib}: db.stream`, peerValue: r.libGetMiBs, note: 'target: at least 0.8x' });
  row({ workload: '1 KiB S3 PUTs, 64 concurrent clients', unit: 'ops/s', better: 'higher', ours: r.putOps, peer: `${lib}: put {key}, 64 writers`, peerValue: r.libPutOps, note: `p50 ${r.putP50ms.toFixed(1)} ms, p99 ${r.putP99ms.toFixed(1)} ms` });
  row({ workload: '1 KiB S3 GETs, 64 concurrent clients', unit: 'ops/s', better: 'higher', ours: r.getOps, peer: `${lib}: getByKey, 64 readers`, peerValue: r.libGetOps, note: `p50 ${r.getP50ms.toFixed(1)} ms, p99 ${r.getP99ms.toFixed(1)} ms` });
  row({ workload: '1 KiB S3 PUT latency p99, 64 clients', unit: 'ms', better: 'lower', ours: r.putP99ms });
  row({ workload: '1 KiB S3 GET latency p99, 64 clients', unit: 'ms', better: 'lower', ours: r.getP99ms });
  row({ workload: 'peak RSS of the node serving S3', unit: 'MiB', better: 'lower', ours: r.nodePeakRssMiB, note: `over the whole part, ${r.objectMiB} MiB object included` });
  Object.assign(results, { s3: r });
}
if (runs('embed')) {
  const e = embedBench(work, { runs: values.quick ? 5 : 11 });
  console.log('\nembedding application: the packed tarball, plain npm install       packages        MiB   install s');
  for (const [name, i] of [['everything (cluster stack included)', e.install.full], ['--omit=optional (the database alone)', e.install.lean]] as const) {
    console.log(`  ${name.padEnd(64)} ${String(i.packages).padStart(8)} ${i.mib.toFixed(1).padStart(10)} ${i.seconds.toFixed(1).padStart(11)}`);
  }
  console.log(`  tarball: ${e.tarball.files} files, ${e.tarball.mib.toFixed(2)} MiB`);
  console.log('cold import(), median of fresh processes                        ms     files  packages');
  for (const [spec, ms] of Object.entries(e.importMs)) console.log(`  ${spec.padEnd(60)} ${ms.toFixed(1).padStart(6)} ${String(e.loads[spec]!.files).padStart(9)} ${String(e.loads[spec]!.packages).padStart(9)}`);
  const note = 'npm install of the packed tarball into a fresh application';
  row({ workload: 'installed size, embedding application', unit: 'MiB', better: 'lower', ours: e.install.lean.mib, peer: 'the same with the cluster stack (every install before it was optional)', peerValue: e.install.full.mib, note: `--omit=optional; ${note}` });
  row({ workload: 'installed packages, embedding application', unit: 'packages', better: 'lower', ours: e.install.lean.packages, peer: 'the same with the cluster stack (every install before it was optional)', peerValue: e.install.full.packages, note: `--omit=optional; ${note}` });
  row({ workload: "cold import('ourodb')", unit: 'ms', better: 'lower', ours: e.importMs['ourodb']!, peer: "import('classic-level') alone", peerValue: e.importMs['classic-level']!, note: 'median of fresh processes, timed around the import' });
  row({ workload: "cold import('ourodb/blockstore')", unit: 'ms', better: 'lower', ours: e.importMs['ourodb/blockstore']! });
  row({ workload: "cold import('ourodb/node')", unit: 'ms', better: 'lower', ours: e.importMs['ourodb/node']!, note: 'the cluster stack: libp2p, QUIC, metrics' });
  Object.assign(results, { embed: e });
}
if (runs('micro')) {
  const m = await micro();
  console.log('\nmicro (benchmark package)                              MiB/s');
  for (const c of m) console.log(`  ${c.name.padEnd(52)} ${fmt(c.mibPerSec)}`);
  Object.assign(results, { micro: m });
  const native = (size: string) => m.find((c) => c.name === `XChaCha20-Poly1305 native ${size}`)!.mibPerSec;
  const noble = (size: string) => m.find((c) => c.name === `XChaCha20-Poly1305 @noble ${size}`)!.mibPerSec;
  for (const size of ['1 MiB', '1 KiB']) row({ workload: `XChaCha20-Poly1305 seal, ${size}`, unit: 'MiB/s', better: 'higher', ours: native(size), peer: '@noble/ciphers (reference)', peerValue: noble(size), note: 'OuroDB uses node:crypto where byte-identical' });
  for (const c of m.filter((x) => !x.name.startsWith('XChaCha'))) row({ workload: c.name, unit: 'MiB/s', better: 'higher', ours: c.mibPerSec });
}
Object.assign(results, { rows, skipped, peakRssMiB: process.resourceUsage().maxRSS / 1024 });
fs.mkdirSync(path.dirname(values.out!), { recursive: true });
fs.writeFileSync(values.out!, JSON.stringify(results, null, 2) + '\n');
fs.rmSync(work, { recursive: true, force: true });
console.log(`\nwritten ${values.out}`);
