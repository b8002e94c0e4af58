/**
 * The `ouro` command line as a user runs it: spawned processes against real directories, exit
 * codes, --json output parsed, files written, and errors for bad input.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OuroDB } from '../lib/index.js';
import { pseudoRandom, tempDir } from './helpers.js';
import { repoRoot } from './paths.js';

const OURO = path.join(repoRoot, 'dist', 'bin', 'ouro.js');

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
  json: () => any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

function ouro(args: string[], opts: { env?: Record<string, string | undefined>; input?: string | Buffer; cwd?: string } = {}): Ran {
  const env: Record<string, string | undefined> = { ...process.env, OURO_PASSPHRASE: undefined, OURO_ARCHIVE_PASSPHRASE: undefined, ...opts.env };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const r = spawnSync(process.execPath, [OURO, ...args], { env: env as NodeJS.ProcessEnv, input: Buffer.from(opts.input ?? ''), cwd: opts.cwd, encoding: 'buffer', maxBuffer: 64 << 20 });
  const stdout = r.stdout.toString('utf8');
  return { code: r.status, stdout, stderr: r.stderr.toString('utf8'), json: () => JSON.parse(stdout) };
}

/** A small tree: nested directories, an empty file, a binary file, a multi-chunk file. */
function makeTree(root: string): void {
  fs.mkdirSync(path.join(root, 'src', 'deep'), { recursive: true });
  fs.writeFileSync(path.join(root, 'README.md'), '# hello\n');
  fs.writeFileSync(path.join(root, 'empty'), '');
  fs.writeFileSync(path.join(root, 'src', 'a.bin'), pseudoRandom('a', 5000));
  fs.writeFileSync(path.join(root, 'src', 'deep', 'big.bin'), pseudoRandom('big', 900_000));
}

describe('ouro CLI', () => {
  it('init, put a tree, ls, get, cat, log, children, stats, check', () => {
    const work = tempDir();
    const key = path.join(work, 'key');
    fs.writeFileSync(key, crypto.randomBytes(32).toString('hex') + '\n');
    const db = path.join(work, 'db');
    const k = ['--key-file', key];
    makeTree(path.join(work, 'tree'));

    expect(ouro([...k, 'init', db]).code).toBe(0);
    expect(ouro([...k, 'init', db])).toMatchObject({ code: 2 });

    const put = ouro([...k, '--json', 'put', db, 'tree'], { cwd: work });
    expect(put.code).toBe(0);
    const report = put.json();
    expect(report).toMatchObject({ files: 4, directories: 3, bytes: 8 + 5000 + 900_000, failed: [] });
    const keysPut = report.items.map((i: { key: string }) => i.key).sort();
    expect(keysPut).toEqual(['tree/', 'tree/README.md', 'tree/empty', 'tree/src/', 'tree/src/a.bin', 'tree/src/deep/', 'tree/src/deep/big.bin']);
    // Named by its absolute path from outside it, the same tree's keys are that path without the
    // leading '/', at every depth of the walk.
    const dbAbs = path.join(work, 'db-abs');
    expect(ouro([...k, 'init', dbAbs]).code).toBe(0);
    const absReport = ouro([...k, '--json', 'put', dbAbs, path.join(work, 'tree')], { cwd: tempDir() }).json();
    const absBase = path.join(work, 'tree').replace(/^\/+/, '');
    expect(absReport.items.map((i: { key: string }) => i.key).sort()).toEqual(keysPut.map((key: string) => absBase + key.slice('tree'.length)));

    expect(ouro([...k, '--json', 'ls', db, 'tree/src/']).json().map((e: { key: string }) => e.key)).toEqual(['tree/src/', 'tree/src/a.bin', 'tree/src/deep/', 'tree/src/deep/big.bin']);
    const out = path.join(work, 'out.bin');
    expect(ouro([...k, 'get', db, 'tree/src/deep/big.bin', '-o', out]).code).toBe(0);
    expect(fs.readFileSync(out).equals(pseudoRandom('big', 900_000))).toBe(true);
    expect(ouro([...k, 'cat', db, 'tree/README.md']).stdout).toBe('# hello\n');
    const emptyHash = report.items.find((i: { key: string }) => i.key === 'tree/empty').hash;
    expect(ouro([...k, 'cat', db, emptyHash])).toMatchObject({ code: 0, stdout: '' });

    // A second version of one file: its history, and the new directory object's children.
    fs.writeFileSync(path.join(work, 'tree', 'README.md'), '# hello again\n');
    const put2 = ouro([...k, '--json', 'put', db, 'tree'], { cwd: work }).json();
    const log = ouro([...k, '--json', 'log', db, 'tree/README.md']).json();
    expect(log.map((v: { version: number; size: number }) => [v.version, v.size])).toEqual([[2, 14], [1, 8]]);
    // Only the changed file got a new version; the directory object is the same one, so its
    // children are both versions of README.md and the unchanged entries.
    expect(put2).toMatchObject({ files: 4, unchanged: 3, read: 1 });
    const dir = report.items.find((i: { key: string }) => i.key === 'tree/').hash;
    expect(put2.items.find((i: { key: string }) => i.key === 'tree/').hash).toBe(dir);
    const children = ouro([...k, '--json', 'children', db, dir]).json();
    const readmes = [report, put2].map((r) => r.items.find((i: { key: string }) => i.key === 'tree/README.md').hash);
    const expected = [...readmes, ...put2.items.filter((i: { key: string }) => ['tree/empty', 'tree/src/'].includes(i.key)).map((i: { hash: string }) => i.hash)].sort();
    expect(children).toEqual(expected);
    expect(ouro([...k, '--json', 'log', db, 'tree/src/a.bin']).json()).toHaveLength(1);
    expect(ouro([...k, '--json', 'put', db, 'tree', '--always'], { cwd: work }).json()).toMatchObject({ unchanged: 0 });
    expect(ouro([...k, '--json', 'log', db, 'tree/src/a.bin']).json()).toHaveLength(2);

    // Same size and mtime, new bytes (as tar, cp -p or rsync -a leave a file): the ctime gives it
    // away, so it is read and stored. Size and mtime alone took it as unchanged.
    const readme = path.join(work, 'tree', 'README.md');
    const { mtime } = fs.statSync(readme);
    fs.writeFileSync(readme, '# HELLO AGAIN\n');
    fs.utimesSync(readme, mtime, mtime);
    expect(ouro([...k, '--json', 'put', db, 'tree'], { cwd: work }).json()).toMatchObject({ files: 4, unchanged: 3, read: 1 });
    expect(ouro([...k, 'cat', db, 'tree/README.md']).stdout).toBe('# HELLO AGAIN\n');
    // Replaced by an identical copy with its mtime restored (a new inode and ctime): read,
    // found equal, no new version.
    fs.rmSync(readme);
    fs.writeFileSync(readme, '# HELLO AGAIN\n');
    fs.utimesSync(readme, mtime, mtime);
    expect(ouro([...k, '--json', 'put', db, 'tree'], { cwd: work }).json()).toMatchObject({ files: 4, unchanged: 4, read: 1 });
    expect(ouro([...k, '--json', 'log', db, 'tree/README.md']).json()).toHaveLength(4); // 2 above, --always, the new bytes
    // ...and the stat it was read with is kept (the key's hint), so the next backup skips it
    // unread. (Kept in the version's metadata, the old head's ctime and inode stayed, and the
    // file was read again on every backup.)
    expect(ouro([...k, '--json', 'put', db, 'tree'], { cwd: work }).json()).toMatchObject({ files: 4, unchanged: 4, read: 0 });

    // A key ending in / restores the tree under it.
    const restored = path.join(work, 'restored');
    expect(ouro([...k, '--json', 'get', db, 'tree/', '-o', restored]).json()).toMatchObject({ files: 4, bytes: 14 + 5000 + 900_000 });
    for (const f of ['README.md', 'empty', 'src/a.bin', 'src/deep/big.bin']) expect(fs.readFileSync(path.join(restored, f)).equals(fs.readFileSync(path.join(work, 'tree', f)))).toBe(true);
    expect(ouro([...k, 'get', db, 'tree/'])).toMatchObject({ code: 2 });

    const stats = ouro([...k, '--json', 'stats', db]).json();
    expect(stats.logicalBytes).toBeGreaterThan(2 * 900_000);
    expect(stats.uniqueBytes).toBeLessThan(1.1 * 905_000);
    expect(ouro([...k, '--json', 'check', db, '--read-data']).json()).toMatchObject({ ok: true, problems: [] });
  });

  it('puts a wide, deep tree (directories walked several at once): every object has its own directory as parent', async () => {
    const work = tempDir();
    const keyBytes = crypto.randomBytes(32);
    const key = path.join(work, 'key');
    fs.writeFileSync(key, keyBytes.toString('hex') + '\n');
    const db = path.join(work, 'db');
    const k = ['--key-file', key];
    // 3 levels of 4 subdirectories (84 directories with the root), 3 files in each, more
    // directories than the walk takes at once; each file's bytes name its own path.
    const tree = path.join(work, 't');
    const all = [''];
    for (const d of ['d0/', 'd1/', 'd2/', 'd3/']) {
      all.push(d);
      for (const e of ['d0/', 'd1/', 'd2/', 'd3/']) {
        all.push(d + e);
        for (const f of ['d0/', 'd1/', 'd2/', 'd3/']) all.push(d + e + f);
      }
    }
    for (const d of all) {
      fs.mkdirSync(path.join(tree, d), { recursive: true });
      for (const f of ['a.txt', 'b.txt', 'c.txt']) fs.writeFileSync(path.join(tree, d, f), `t/${d}${f}\n`);
    }
    expect(ouro([...k, 'init', db]).code).toBe(0);
    const put = ouro([...k, '--json', 'put', db, 't'], { cwd: work });
    expect(put.code).toBe(0);
    const report = put.json();
    expect(report).toMatchObject({ files: all.length * 3, directories: all.length, failed: [] });
    const hashOf = new Map<string, string>(report.items.map((i: { key: string; hash: string }) => [i.key, i.hash]));
    const opened = await OuroDB.open(db, { key: keyBytes });
    try {
      for (const [name, hash] of hashOf) {
        const st = await opened.stat(hash);
        expect(st.key).toBe(name);
        const dir = name.endsWith('/') ? name.slice(0, -1) : name;
        const parentKey = dir.includes('/') ? dir.slice(0, dir.lastIndexOf('/') + 1) : null;
        expect(st.parent, name).toBe(parentKey === null ? null : hashOf.get(parentKey));
        if (!name.endsWith('/')) expect(Buffer.from(await opened.get(hash)).toString()).toBe(`${name}\n`);
      }
      // Each directory's children are exactly its files and subdirectories.
      for (const d of all) {
        const children = (await opened.children(hashOf.get(`t/${d}`)!)).map((c) => [...hashOf].find(([, h]) => h === c)?.[0]).sort();
        const subdirs = d.split('/').length - 1 < 3 ? ['d0/', 'd1/', 'd2/', 'd3/'] : [];
        expect(children, `t/${d}`).toEqual(['a.txt', 'b.txt', 'c.txt', ...subdirs].map((n) => `t/${d}${n}`));
      }
    } finally {
      await opened.close();
    }
  });

  it('rm, rm --purge and gc give space back; check finds damage and exits 5', () => {
    const work = tempDir();
    const key = path.join(work, 'key');
    fs.writeFileSync(key, crypto.randomBytes(32));
    const db = path.join(work, 'db');
    const k = ['--key-file', key];
    ouro([...k, 'init', db]);
    for (let i = 0; i < 3; i++) fs.writeFileSync(path.join(work, `f${i}`), pseudoRandom(`f${i}`, 400_000));
    ouro([...k, 'put', db, 'f0', 'f1', 'f2'], { cwd: work });
    expect(ouro([...k, 'rm', db, 'f0']).code).toBe(0);
    expect(ouro([...k, 'get', db, 'f0']).code).toBe(3);
    expect(ouro([...k, '--json', 'log', db, 'f0']).json()[0].type).toBe('tombstone');
    expect(ouro([...k, '--json', 'rm', db, 'f1', '--purge']).json()).toEqual({ key: 'f1', purged: 1 });
    expect(ouro([...k, 'rm', db, 'nothing']).code).toBe(3);
    ouro([...k, 'rm', db, 'f0', '--purge']);
    expect(ouro([...k, 'gc', db, '--pace', '0']).code).toBe(2); // a share in (0, 1]
    const gc = ouro([...k, '--json', 'gc', db, '--threshold', '1', '--pace', '0.5']).json();
    expect(gc.storedBytesAfter).toBeLessThan(gc.storedBytesBefore / 2);
    expect(gc.restedMs).toBe(0); // nothing else writes beside the CLI's own gc
    expect(ouro([...k, 'cat', db, 'f2']).stdout.length).toBeGreaterThan(0);

    // Flip a byte inside the first entry's payload of the largest block (f2's data).
    const blocks = fs.readdirSync(path.join(db, 'blocks'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
    const file = blocks.sort((x, y) => fs.statSync(y).size - fs.statSync(x).size)[0]!;
    const bytes = fs.readFileSync(file);
    bytes[40 + 72 + 10]! ^= 1;
    fs.writeFileSync(file, bytes);
    const check = ouro([...k, '--json', 'check', db, '--read-data']);
    expect(check.code).toBe(5);
    expect(check.json().problems[0].kind).toBe('entry-corrupt');
    expect(ouro([...k, 'check', db]).code).toBe(0); // structure alone is intact
  });

  it('reports bad input as one line with the error code and a documented exit code', () => {
    const work = tempDir();
    const db = path.join(work, 'db');
    const fast = ['--kdf-memory', '256', '--kdf-passes', '1'];
    expect(ouro(['init', db, ...fast], { env: { OURO_PASSPHRASE: 'right' } }).code).toBe(0);
    const wrong = ouro(['ls', db], { env: { OURO_PASSPHRASE: 'wrong' } });
    expect(wrong.code).toBe(4);
    expect(wrong.stderr.trim().split('\n')).toHaveLength(1);
    expect(wrong.stderr).toContain('[OURO_WRONG_KEY]');
    expect(wrong.stderr).not.toContain('    at ');
    expect(ouro(['ls', db, '--debug'], { env: { OURO_PASSPHRASE: 'wrong' } }).stderr).toContain('    at ');
    const none = ouro(['ls', db]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('OURO_PASSPHRASE');
    const env = { env: { OURO_PASSPHRASE: 'right' } };
    expect(ouro(['ls', path.join(work, 'no-such-db')], env)).toMatchObject({ code: 3 });
    expect(fs.existsSync(path.join(work, 'no-such-db'))).toBe(false);
    expect(ouro(['get', db, 'unknown/key'], env)).toMatchObject({ code: 3 });
    const missing = ouro(['put', db, path.join(work, 'does', 'not', 'exist')], env);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('ENOENT');
    fs.mkdirSync(path.join(work, 'adir'));
    expect(ouro(['--key-file', path.join(work, 'adir'), 'ls', db])).toMatchObject({ code: 2 });
    expect(ouro(['put', db, '-'], env)).toMatchObject({ code: 2 });
    expect(ouro(['frobnicate'], env)).toMatchObject({ code: 2 });
    expect(ouro(['--help'])).toMatchObject({ code: 0 });
    expect(ouro(['put', '--help']).stdout).toContain('--key <key>');
    const fromStdin = ouro(['--json', 'put', db, '-', '--key', 'piped'], { ...env, input: 'from stdin' });
    expect(fromStdin.json().items[0]).toMatchObject({ key: 'piped', size: 10 });
    expect(ouro(['cat', db, 'piped'], env).stdout).toBe('from stdin');
  });

  it('inspect dumps WAL records, block footers and index keys without the key', async () => {
    const work = tempDir();
    const key = crypto.randomBytes(32);
    const db = await OuroDB.open(path.join(work, 'db'), { key });
    await db.put(pseudoRandom('x', 100_000), { key: 'x' });
    await db.flush();
    await db.put('pending', { key: 'y' });
    // Leave the last put in the WAL: copy the directory while open (the image a crash leaves).
    fs.cpSync(path.join(work, 'db'), path.join(work, 'image'), { recursive: true });
    await db.close();
    const wal = ouro(['--json', 'inspect', path.join(work, 'image'), 'wal']).json();
    expect(wal.length).toBeGreaterThan(0);
    expect(wal[0]).toMatchObject({ kind: 'object' });
    const keys = ouro(['--json', 'inspect', path.join(work, 'db'), 'keys', 'keys']).json();
    expect(keys.map((r: { key: string }) => r.key)).toEqual(['x', 'y']);
    const registered = ouro(['--json', 'inspect', path.join(work, 'db'), 'keys', 'block']).json() as Array<{ id: string; entries: number }>;
    const blockId = registered.sort((a, b) => b.entries - a.entries)[0]!.id;
    const block = ouro(['--json', 'inspect', path.join(work, 'db'), 'block', blockId.slice(0, 8)]).json();
    expect(block.entries.length).toBeGreaterThan(1);
    expect(block.entries[0].record).toBeUndefined();
    fs.writeFileSync(path.join(work, 'key'), key);
    const decrypted = ouro(['--json', '--key-file', path.join(work, 'key'), 'inspect', path.join(work, 'db'), 'block', blockId, '--decrypt']).json();
    expect(decrypted.entries.some((e: { record?: { key: string } }) => e.record?.key === 'x')).toBe(true);
  });

  it('emits JSON progress lines on stderr with --json when stderr is not a terminal', () => {
    const work = tempDir();
    const key = path.join(work, 'key');
    fs.writeFileSync(key, crypto.randomBytes(32));
    ouro(['--key-file', key, 'init', path.join(work, 'db')]);
    fs.writeFileSync(path.join(work, 'f'), pseudoRandom('f', 5 << 20)); // over 4 MiB: the streamed path
    const r = ouro(['--key-file', key, '--json', 'put', path.join(work, 'db'), 'f'], { cwd: work });
    const lines = r.stderr.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.at(-1).progress).toMatchObject({ op: 'put', bytes: 5 << 20, items: 1 });
    expect(ouro(['--key-file', key, 'put', path.join(work, 'db'), 'f'], { cwd: work }).stderr).toBe('');
    const check = ouro(['--key-file', key, '--json', 'check', path.join(work, 'db'), '--read-data']);
    expect(JSON.parse(check.stderr.trim().split('\n').at(-1)!).progress).toMatchObject({ op: 'check', items: check.json().entries });
  });
});
