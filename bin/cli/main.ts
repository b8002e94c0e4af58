/**
 * `ouro`: the OuroDB command line. Every command has --help; docs/cli.md is the reference, with
 * the exit codes. Errors print as one line with their code (a stack trace only with --debug).
 */
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Command, CommanderError, Option } from 'commander';
import { type CheckReport, type GcReport, type ImportResult, NotFoundError, OuroDB, OuroError, type Stats, type Version, exportArchive, importArchive, importArchiveNew, inspectBlock, inspectKeys, inspectWal } from '../../lib/index.js';
import { registerNodeCommands } from './node.js';
import { registerS3Commands } from './s3.js';
import { admin, adminLines, dbTarget } from './node-admin.js';
import { putPaths, restoreTree, writeValue } from './put.js';
import { EXIT, type GlobalOptions, Progress, UsageError, credentials, exitCodeOf, mib, output, readKeyFile, withDb } from './support.js';

/** The record cache of `ouro put` (the library's default is 16 MiB). */
const PUT_RECORD_CACHE_BYTES = 1024 * 1024;

// A reader that stops early (`ouro ls | head`) closes the pipe: that ends the command, quietly.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(EXIT.ok);
  throw err;
});

const packageJson = JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string; optionalDependencies?: Record<string, string> };

const program = new Command('ouro')
  .description('OuroDB: an embedded, encrypted, content-addressed database')
  .option('--json', 'print results as JSON (and progress as JSON lines on stderr when it is not a terminal)')
  .option('--key-file <file>', 'use the 32-byte key in this file (raw or 64 hex digits) instead of a passphrase')
  .option('--debug', 'print stack traces of errors')
  .version(packageJson.version, '--version', 'print the version')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

const g = (): GlobalOptions => program.opts<GlobalOptions>();
const HASH = /^[0-9a-f]{64}$/;

program
  .command('init')
  .description('create a database (asks for a passphrase on a terminal; OURO_PASSPHRASE or --key-file for scripts)')
  .argument('<dir>', 'database directory (created if missing; must not hold a database)')
  .option('--kdf-memory <KiB>', 'argon2id memory for the passphrase, KiB', '65536')
  .option('--kdf-passes <n>', 'argon2id passes', '3')
  .action(async (dir: string, o: { kdfMemory: string; kdfPasses: string }) => {
    if (fs.existsSync(path.join(dir, 'OURODB.json'))) throw new UsageError(`${dir} already holds a database`);
    const creds = await credentials(g(), true);
    const kdf = { m: int(o.kdfMemory, '--kdf-memory'), t: int(o.kdfPasses, '--kdf-passes'), p: 1 };
    const db = await OuroDB.open(dir, { ...creds, ...('passphrase' in creds ? { kdf } : {}) });
    await db.close();
    output(g(), { dir: path.resolve(dir), created: true }, () => `created database in ${path.resolve(dir)}`);
  });

program
  .command('put')
  .description('store files and directory trees, each file under its path as key and its directory as parent; - reads stdin')
  .argument('<dir>', 'database directory')
  .argument('<paths...>', 'files, directories, or - for stdin')
  .option('--key <key>', 'the key for stdin (-)')
  .option('--always', 'write a new version of every file, even one equal to its current version')
  .action(async (dir: string, paths: string[], o: { key?: string; always?: boolean }) => {
    // A small record cache: puts feed it the records they commit (for an application that reads
    // back what it wrote), but this process reads back almost none of what it stores, and a
    // cache filled to the default 16 MiB was that much more peak RSS (docs/performance.md).
    const report = await withDb(dir, g(), (db) => putPaths(db, paths, g(), { stdinKey: o.key, always: o.always === true }), { recordCacheBytes: PUT_RECORD_CACHE_BYTES });
    output(g(), report, () => {
      const lines = report.items.filter((i) => i.type !== 'directory').map((i) => `${i.hash}  ${i.key}`);
      lines.push(`stored ${report.files} files (${report.unchanged} unchanged, ${report.read} read), ${report.directories} directories, ${mib(report.bytes)}`);
      for (const s of report.skipped) lines.push(`skipped ${s.path}: ${s.reason}`);
      return lines.join('\n');
    });
    for (const f of report.failed) process.stderr.write(`ouro: ${f.path}: ${f.error}\n`);
    if (report.failed.length > 0) process.exitCode = report.failed.every((f) => f.code === 'ENOENT') ? EXIT.notFound : EXIT.failure;
  });

async function readValue(db: OuroDB, ref: string, asKey: boolean): Promise<AsyncIterable<Uint8Array>> {
  if (!asKey && HASH.test(ref)) return db.stream(ref);
  const head = await db.head(ref);
  if (head === null) throw new NotFoundError(`no key ${JSON.stringify(ref)}`);
  const st = await db.stat(head);
  if (st.type !== 'value') throw new NotFoundError(`key ${JSON.stringify(ref)} is deleted`);
  return db.stream(head);
}

program
  .command('get')
  .description('write a value (by key, or by 64-hex-digit hash) to a file or stdout; a key ending in / restores every file under it into -o DIRECTORY')
  .argument('<dir>', 'database directory')
  .argument('<ref>', 'key or hash')
  .option('-o, --output <file>', 'write to this file (atomically) instead of stdout')
  .option('--key', 'treat <ref> as a key even if it looks like a hash')
  .action(async (dir: string, ref: string, o: { output?: string; key?: boolean }) => {
    if (ref.endsWith('/')) {
      if (!o.output) throw new UsageError(`${ref} names a tree (it ends in /): give -o DIRECTORY to restore it into`);
      const report = await withDb(dir, g(), (db) => restoreTree(db, ref, o.output!, g()));
      output(g(), report, () => `restored ${report.files} files, ${mib(report.bytes)} into ${o.output}`);
      return;
    }
    await withDb(dir, g(), async (db) => {
      const source = await readValue(db, ref, o.key === true);
      if (!o.output) {
        await pipeline(source, process.stdout);
        return;
      }
      const tmp = `${o.output}.ouro-tmp-${process.pid}`;
      try {
        await writeValue(source, tmp);
        const fd = fs.openSync(tmp, 'r');
        fs.fsyncSync(fd);
        fs.closeSync(fd);
        fs.renameSync(tmp, o.output);
      } catch (err) {
        fs.rmSync(tmp, { force: true });
        throw err;
      }
      if (g().json) output(g(), { file: path.resolve(o.output), bytes: fs.statSync(o.output).size }, () => undefined);
    });
  });

program
  .command('cat')
  .description('write a value (by key or hash) to stdout')
  .argument('<dir>', 'database directory')
  .argument('<ref>', 'key or hash')
  .option('--key', 'treat <ref> as a key even if it looks like a hash')
  .action(async (dir: string, ref: string, o: { key?: boolean }) => {
    await withDb(dir, g(), async (db) => pipeline(await readValue(db, ref, o.key === true), process.stdout));
  });

program
  .command('ls')
  .description('list keys in byte order')
  .argument('<dir>', 'database directory')
  .argument('[prefix]', 'only keys starting with this')
  .option('--after <key>', 'start after this key')
  .option('--limit <n>', 'at most this many keys')
  .option('--deleted', 'also list deleted keys')
  .action(async (dir: string, prefix: string | undefined, o: { after?: string; limit?: string; deleted?: boolean }) => {
    await withDb(dir, g(), async (db) => {
      const entries = [];
      for await (const e of db.list({ ...(prefix ? { prefix } : {}), ...(o.after ? { after: o.after } : {}), ...(o.limit ? { limit: int(o.limit, '--limit') } : {}), includeDeleted: o.deleted === true })) {
        if (g().json) entries.push(e);
        else process.stdout.write(`${e.hash}  ${e.key}${e.deleted ? '  (deleted)' : ''}${e.heads.length > 1 ? `  (${e.heads.length} heads)` : ''}\n`);
      }
      if (g().json) output(g(), entries, () => undefined);
    });
  });

program
  .command('log')
  .description("a key's history, newest first")
  .argument('<dir>', 'database directory')
  .argument('<key>', 'key')
  .action(async (dir: string, key: string) => {
    await withDb(dir, g(), async (db) => {
      const versions: Version[] = [];
      for await (const v of db.history(key)) versions.push(v);
      if (versions.length === 0) throw new NotFoundError(`no key ${JSON.stringify(key)}`);
      output(g(), versions, () => versions.map((v) => `${String(v.version).padStart(4)}  ${v.hash}  ${v.created.toISOString()}  ${v.type === 'tombstone' ? 'deleted' : `${v.size} bytes`}${Object.keys(v.meta).length ? `  ${JSON.stringify(v.meta)}` : ''}`).join('\n'));
    });
  });

program
  .command('children')
  .description('objects stored with this parent')
  .argument('<dir>', 'database directory')
  .argument('<hash>', 'parent hash')
  .action(async (dir: string, hash: string) => {
    await withDb(dir, g(), async (db) => {
      if (!(await db.has(hash))) throw new NotFoundError(`no object ${hash}`);
      const all: string[] = [];
      for (let page = await db.children(hash); page.length > 0; page = await db.children(hash, { after: page.at(-1)! })) all.push(...page);
      output(g(), all, () => all.join('\n'));
    });
  });

program
  .command('rm')
  .description('delete a key (a tombstone version; history keeps it), or forget it entirely with --purge')
  .argument('<dir>', 'database directory')
  .argument('<key>', 'key')
  .option('--purge', 'forget every version (gc then reclaims the space)')
  .action(async (dir: string, key: string, o: { purge?: boolean }) => {
    await withDb(dir, g(), async (db) => {
      if ((await db.head(key)) === null) throw new NotFoundError(`no key ${JSON.stringify(key)}`);
      if (o.purge) {
        const r = await db.purge(key);
        output(g(), { key, purged: r.versions }, () => `purged ${key} (${r.versions} versions)`);
      } else {
        const r = await db.delete(key);
        output(g(), { key, tombstone: r.hash }, () => `deleted ${key}`);
      }
    });
  });

program
  .command('gc')
  .description('reclaim the space of purged data by compacting blocks')
  .argument('<dir>', 'database directory, or a node directory (its database; through the node while it runs)')
  .option('--threshold <share>', 'compact blocks whose live share is below this (0..1)', '0.5')
  .option('--pace <share>', 'share of the time gc copies while puts are written (0..1, default 1/3; only a running node has writers beside it)')
  .action(async (dir: string, o: { threshold: string; pace?: string }) => {
    const threshold = Number(o.threshold);
    const pace = o.pace === undefined ? undefined : Number(o.pace);
    const target = await dbTarget(dir);
    let before: Stats, report: GcReport, after: Stats;
    if (target.kind === 'node') {
      // The node holds the lock: its gc runs in the node, which then deletes the removed blocks across the cluster.
      before = (await admin(target.nodeDir, 'GET', '/db/stats')) as Stats;
      report = (await admin(target.nodeDir, 'POST', '/db/gc', { threshold, ...(pace === undefined ? {} : { pace }) })) as GcReport;
      after = (await admin(target.nodeDir, 'GET', '/db/stats')) as Stats;
    } else {
      [before, report, after] = await withDb(target.dir, g(), async (db) => {
        const b = await db.stats();
        const progress = new Progress('gc', g());
        const r = await db.gc({ threshold, ...(pace === undefined ? {} : { pace }), onProgress: (p) => progress.update(p.bytesFreed, p.blocksRemoved) });
        progress.done();
        return [b, r, await db.stats()] as const;
      });
    }
    output(g(), { ...report, storedBytesBefore: before.storedBytes, storedBytesAfter: after.storedBytes }, () => `removed ${report.blocksRemoved} blocks, freed ${mib(report.bytesFreed)} (copied ${mib(report.bytesCopied)} of live data); stored ${mib(before.storedBytes)} -> ${mib(after.storedBytes)}`);
  });

program
  .command('check')
  .description('verify the index against the blocks; with --read-data, authenticate entries too (exit code 5 if problems)')
  .argument('<dir>', 'database directory, or a node directory (its database; through the node while it runs)')
  .option('--read-data', 'read and authenticate every entry')
  .option('--sample <pct>', 'with --read-data, the percentage of entries to read', '100')
  .action(async (dir: string, o: { readData?: boolean; sample: string }) => {
    const pct = Number(o.sample);
    if (!(pct >= 0 && pct <= 100)) throw new UsageError('--sample takes a percentage, 0 to 100');
    const target = await dbTarget(dir);
    const progress = new Progress('check', g());
    let report: CheckReport;
    if (target.kind === 'node') {
      // The running node holds the database's lock: it runs the check and streams its progress.
      const r = await adminLines<{ report: CheckReport }>(target.nodeDir, '/db/check', { readData: o.readData === true, sample: pct / 100 }, (line) => {
        const p = line.progress as { entries: number; bytes: number } | undefined;
        if (p) progress.update(p.bytes, p.entries);
      });
      report = r.report;
    } else {
      report = await withDb(target.dir, g(), (db) => db.check({ readData: o.readData === true, sample: pct / 100, onProgress: (entries, bytes) => progress.update(bytes, entries) }));
    }
    progress.done();
    output(g(), report, () => [`${report.ok ? 'ok' : 'PROBLEMS'}: ${report.blocks} blocks, ${report.entries} entries, ${report.entriesRead} read`, ...report.problems.map((p) => `  ${p.kind}: ${[p.block, p.id, p.key].filter(Boolean).join(' ')} ${p.message}`)].join('\n'));
    if (!report.ok) process.exitCode = EXIT.corruption;
  });

program
  .command('repair')
  .description('repair a database: --rebuild-index rebuilds every index from the blocks')
  .argument('<dir>', 'database directory')
  .option('--rebuild-index', 'rebuild the index from the blocks alone')
  .action(async (dir: string, o: { rebuildIndex?: boolean }) => {
    if (!o.rebuildIndex) throw new UsageError('repair needs --rebuild-index');
    await withDb(dir, g(), async (db) => {
      const r = await db.rebuildIndex();
      output(g(), { blocks: r.blocks, objects: r.objects, chunks: r.chunks, keys: r.keys, skipped: r.skipped }, () => `rebuilt the index: ${r.blocks} blocks, ${r.objects} objects, ${r.chunks} chunks, ${r.keys} keys${r.skipped.length ? `; skipped ${r.skipped.length} damaged blocks` : ''}`);
      if (r.skipped.length > 0) process.exitCode = EXIT.corruption;
    });
  });

program
  .command('stats')
  .description('objects, chunks, bytes, dedup and compression, blocks, WAL')
  .argument('<dir>', 'database directory')
  .action(async (dir: string) => {
    await withDb(dir, g(), async (db) => {
      const s = await db.stats();
      output(g(), s, () => [
        `objects      ${s.objects}`,
        `chunks       ${s.chunks}`,
        `logical      ${mib(s.logicalBytes)}`,
        `unique       ${mib(s.uniqueBytes)}  (dedup ${s.dedupRatio.toFixed(2)}x, compression ${s.compressionRatio.toFixed(2)}x)`,
        `stored       ${mib(s.storedBytes)}  in ${s.blocks} blocks`,
        `WAL          ${s.walRecords} entries, ${mib(s.walBytes)}`,
      ].join('\n'));
    });
  });

const archiveOptions = (c: Command) => c.option('--archive-key-file <file>', 'key file for the archive (default: the database credential; or OURO_ARCHIVE_PASSPHRASE)');
/** The archive's own credentials when given, else undefined (the database's are used). */
function archiveCredentials(o: { archiveKeyFile?: string }) {
  if (o.archiveKeyFile) return { key: readKeyFile(o.archiveKeyFile) };
  if (process.env['OURO_ARCHIVE_PASSPHRASE']) return { passphrase: process.env['OURO_ARCHIVE_PASSPHRASE'] };
  return undefined;
}

archiveOptions(
  program
    .command('export')
    .description('write every object, version, parent and metadata to an encrypted, versioned archive file')
    .argument('<dir>', 'database directory')
    .argument('<file>', 'archive file to write (written to a temporary name, then renamed)'),
).action(async (dir: string, file: string, o: { archiveKeyFile?: string }) => {
  const creds = archiveCredentials(o) ?? (await credentials(g()));
  await withDb(dir, g(), async (db) => {
    const tmp = `${file}.ouro-tmp-${process.pid}`;
    const out = fs.createWriteStream(tmp);
    const progress = new Progress('export', g(), (await db.stats()).logicalBytes);
    try {
      const done = new Promise<void>((resolve, reject) => {
        out.on('finish', resolve);
        out.on('error', reject);
      });
      const r = await exportArchive(db, out, creds, (p) => progress.update(p.bytes, p.objects));
      out.end();
      await done;
      const fd = fs.openSync(tmp, 'r');
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.renameSync(tmp, file);
      progress.done();
      const note = r.identity ? '' : "\nthe archive does not carry the database's identity (its credentials unlock none of the database's key slots): an import gives every object a new hash";
      output(g(), { file: path.resolve(file), objects: r.objects, valueBytes: r.bytes, archiveBytes: fs.statSync(file).size, identity: r.identity }, () => `exported ${r.objects} objects (${mib(r.bytes)} of values) to ${file}, ${mib(fs.statSync(file).size)}${note}`);
    } catch (err) {
      out.destroy();
      fs.rmSync(tmp, { force: true });
      throw err;
    }
  });
});

archiveOptions(
  program
    .command('import')
    .description("import an archive; into a DIR without a database, creates one with the archive's identity (the source's hashes and credentials); run it again to resume an interrupted import")
    .argument('<dir>', 'database directory (created if it holds no database)')
    .argument('<file>', 'archive file')
    .option('--map <file>', 'write the old-to-new hash map as JSON lines {"old":HASH,"new":HASH} (written once the import completes, atomically)'),
).action(async (dir: string, file: string, o: { archiveKeyFile?: string; map?: string }) => {
  if (!fs.existsSync(file)) throw new NotFoundError(`no archive ${file}`);
  const creds = await credentials(g());
  const archiveCreds = archiveCredentials(o) ?? creds;
  const mapTmp = o.map ? `${o.map}.ouro-tmp-${process.pid}` : undefined;
  const mapOut = mapTmp ? fs.createWriteStream(mapTmp) : undefined;
  const progress = new Progress('import', g(), fs.statSync(file).size);
  const onProgress = (p: { archiveBytes: number; objects: number }) => progress.update(p.archiveBytes, p.objects);
  try {
    let r: ImportResult & { created?: boolean };
    if (fs.existsSync(path.join(dir, 'OURODB.json'))) {
      const db = await OuroDB.open(dir, { ...creds, create: false });
      try {
        r = await importArchive(db, fs.createReadStream(file), archiveCreds, { onProgress, ...(mapOut ? { map: mapOut } : {}) });
      } finally {
        await db.close();
      }
    } else {
      const made = await importArchiveNew(dir, fs.createReadStream(file), { ...creds, archive: archiveCreds, onProgress, ...(mapOut ? { map: mapOut } : {}) });
      await made.db.close();
      r = made;
    }
    progress.done();
    if (mapOut && mapTmp) {
      await new Promise<void>((resolve, reject) => mapOut.end((err?: Error | null) => (err ? reject(err) : resolve())));
      const fd = fs.openSync(mapTmp, 'r');
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.renameSync(mapTmp, o.map!);
    }
    const result = {
      dir: path.resolve(dir),
      created: r.created === true,
      objects: r.objects,
      valueBytes: r.bytes,
      archiveVersion: r.archiveVersion,
      sourceDatabaseId: r.sourceDatabaseId,
      remapped: r.remapped,
      remappedObjects: r.remappedObjects,
      ...(r.remapReason ? { remapReason: r.remapReason } : {}),
      ...(o.map ? { map: path.resolve(o.map) } : {}),
    };
    output(g(), result, () => {
      const lines = [`imported ${r.objects} objects (${mib(r.bytes)} of values)${result.created ? ` into a new database in ${result.dir}` : ''}`];
      if (!r.remapped) lines.push(`hashes kept: every object has the hash the source gave it (database ${r.sourceDatabaseId})`);
      else {
        const why = r.remapReason === 'other-database' ? `the archive is of another database (${r.sourceDatabaseId})` : r.archiveVersion === 1 ? 'the archive (format version 1) carries no identity' : "the archive carries no identity (it was exported under credentials of its own)";
        lines.push(`hashes remapped: ${r.remappedObjects} objects have new hashes, because ${why}; ${o.map ? `the old-to-new map is in ${o.map}` : 'run it again with --map FILE to write the old-to-new map'}`);
      }
      return lines.join('\n');
    });
  } catch (err) {
    mapOut?.destroy();
    if (mapTmp) fs.rmSync(mapTmp, { force: true });
    throw err;
  }
});

program
  .command('inspect')
  .description('dump WAL records, a block footer (wal | block ID | keys) without the key; --decrypt shows contents with it')
  .argument('<dir>', 'database directory')
  .argument('<what>', 'wal, block or keys')
  .argument('[id]', 'block id or prefix (for block); key kind to show (for keys, e.g. keys, chunk, object)')
  .option('--decrypt', 'decrypt entries (asks for the credential)')
  .action(async (dir: string, what: string, id: string | undefined, o: { decrypt?: boolean }) => {
    if (!fs.existsSync(path.join(dir, 'OURODB.json'))) throw new NotFoundError(`no OuroDB database in ${dir}`);
    if (what === 'wal') {
      const rows = await inspectWal(dir);
      output(g(), rows, () => rows.map((r) => `seq ${r.seq} @${r.offset}  ${r.kind}  ${r.length} B (${r.plainLength} plain)  ${r.id}`).join('\n') || '(WAL empty)');
    } else if (what === 'block') {
      if (!id) throw new UsageError('inspect block needs a block id');
      const b = await inspectBlock(dir, id, o.decrypt ? await credentials(g()) : undefined);
      output(g(), b, () => [`block ${b.id}  seq ${b.seq}  ${b.size} bytes  ${b.entries.length} entries`, ...b.entries.map((e) => `  @${e.offset}  ${e.kind}  ${e.length} B (${e.plainLength} plain)  ${e.id}${e.record ? `  ${JSON.stringify(e.record)}` : ''}${e.error ? `  ERROR ${e.error}` : ''}`)].join('\n'));
    } else if (what === 'keys') {
      const rows = await inspectKeys(dir, id);
      output(g(), rows, () => rows.map((r) => JSON.stringify(r)).join('\n'));
    } else {
      throw new UsageError(`inspect takes wal, block or keys, not ${what}`);
    }
  });

registerNodeCommands(program, g);
registerS3Commands(program, g);

/** A package of the cluster stack (package.json optionalDependencies) is not installed. */
function clusterStackMissing(err: unknown): boolean {
  if ((err as { code?: unknown })?.code !== 'ERR_MODULE_NOT_FOUND') return false;
  const missing = /Cannot find package '([^']+)'/.exec((err as Error).message)?.[1];
  return missing !== undefined && Object.hasOwn(packageJson.optionalDependencies ?? {}, missing);
}

function int(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`${what} takes a non-negative integer`);
  return n;
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version output are not errors; the parser has already printed its message.
    process.exitCode = err.code === 'commander.helpDisplayed' || err.code === 'commander.help' || err.code === 'commander.version' ? EXIT.ok : EXIT.usage;
  } else if (clusterStackMissing(err)) {
    // The cluster's packages are optionalDependencies: an install with --omit=optional embeds the
    // database and runs the local commands, and says so here instead of a module stack trace.
    process.stderr.write(`ouro: the cluster commands need OuroDB's optional dependencies (libp2p and the rest), which this install left out: ${(err as Error).message}\nInstall them with \`npm install ourodb --include=optional\` (docs/design.md, "What each entry point needs").\n`);
    process.exitCode = EXIT.usage;
  } else {
    const code = err instanceof OuroError ? ` [${err.code}]` : '';
    process.stderr.write(`ouro: ${err instanceof Error ? err.message : String(err)}${code}\n`);
    if (program.opts<GlobalOptions>().debug && err instanceof Error) process.stderr.write(`${err.stack}\n${err.cause ? `cause: ${String((err.cause as Error).stack ?? err.cause)}\n` : ''}`);
    process.exitCode = exitCodeOf(err);
  }
}
