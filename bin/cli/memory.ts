/**
 * V8 and malloc settings for one-shot `ouro` commands, applied by the launcher (bin/ouro.ts)
 * before it loads the CLI and the library. Imports nothing but node:v8 and node:fs, so that
 * setting them loads no code.
 */
import fs from 'node:fs';
import v8 from 'node:v8';

/**
 * A one-shot command (put, get, ls, export, ...; withDb) keeps V8's young generation at the size it
 * starts with (1 MiB semi-spaces) instead of letting it grow to 16 MiB ones (V8 doubles it while
 * many objects survive a scavenge, as with 64 files in flight): a restore of a date-fns tree
 * peaked at 103-111 MiB of RSS with it, 133-140 without, at the same CPU (docs/performance.md,
 * "Cost per byte, third round"). The setting is V8's `--semi-space-growth-factor`, read each
 * time the young generation would grow. For the commands that only read (boundsEarly) the
 * launcher sets it before loading the CLI: set only once the database was opened, loading the
 * CLI and the library (~1 MB of JavaScript) had already grown the young generation to 4 MiB
 * semi-spaces, where it stayed (8 MiB of new space at the peak of a tree restore against 2 with
 * it set first, and the restore's peak 3-22 MiB lower; docs/performance.md, "The floor of the
 * one-shot commands"). OURO_YOUNG_GENERATION=grow leaves V8's default (docs/cli.md, "Memory");
 * an operator's own `--min-semi-space-size` in NODE_OPTIONS still sets the size it starts and
 * stays at. The long-running `ouro node start` does not go through here.
 */
export function boundYoungGeneration(): void {
  if (process.env['OURO_YOUNG_GENERATION'] === 'grow') return;
  v8.setFlagsFromString('--semi-space-growth-factor=1');
}

/** Global options that take a value (bin/cli/main.ts): the word after them is not the command. */
const OPTIONS_WITH_VALUE = new Set(['--key-file']);

/**
 * Commands that only read, whose young generation the launcher bounds before loading the CLI.
 * Not `put` (nor `import`, nor the long-running `ouro node`): a put of a whole new tree into an
 * empty database peaked 5-9 MiB higher with the bound set from the start (130-138 against
 * 129-131 MiB in three interleaved pairs), because more of its objects, alive across a file's
 * seal and commit, were promoted out of the smaller young generation into the old one (old space
 * 27-30 MiB at the peak against 13-20); withDb bounds it for them once the database is open.
 */
const READ_COMMANDS = new Set(['get', 'cat', 'ls', 'stats']);

/** Where the command line names its command: its first word that is not an option or an option's value (-1: none). */
function commandAt(args: readonly string[]): number {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a.startsWith('-')) {
      if (OPTIONS_WITH_VALUE.has(a)) i++;
      continue;
    }
    return i;
  }
  return -1;
}

/** Whether the command line names a command in READ_COMMANDS. */
export function boundsEarly(args: readonly string[]): boolean {
  const at = commandAt(args);
  return at >= 0 && READ_COMMANDS.has(args[at]!);
}

/**
 * glibc malloc settings for a tree restore (`get PREFIX/ -o DIR`), which the launcher restarts
 * itself with (process.execve: the same process, its image replaced, so only the settings
 * differ). A value streams out a chunk at a time: each chunk's ciphertext and plaintext (64 KiB
 * to 1 MiB) are allocated, written and freed at once (lib/read.ts, freeNow). With glibc's
 * defaults the heap's top, freed, went back to the kernel (its trim threshold follows its mmap
 * threshold, a few hundred KiB once chunks were freed) and the next chunk faulted fresh zeroed
 * pages in: 21,000-76,000 page faults restoring one 1 GiB file, the system and wall time moving
 * with them (1.5-2.6 s). Chunk-sized blocks from the heap (an mmap threshold above the largest
 * chunk) and a heap top kept up to 64 MiB: ~8,800 faults and 1.16-1.35 s in six interleaved
 * pairs, at the same peak RSS (81 MiB), because the heap holds only the chunks in flight. Either
 * setting alone is worse than neither (docs/performance.md, "Cost per byte, sixth round").
 * Only a tree restore: the restart costs a second start of Node (~90 ms here), paid once for a
 * whole tree but a third more on a `get` of one small value. Setting them without a restart
 * needs mallopt() from native code (not done).
 */
export const RESTORE_MALLOC = { MALLOC_MMAP_THRESHOLD_: String(4 * 1024 * 1024), MALLOC_TRIM_THRESHOLD_: String(64 * 1024 * 1024) };

/** Whether the command line is a tree restore: `get` of a ref ending in `/`. */
export function isTreeRestore(args: readonly string[]): boolean {
  const at = commandAt(args);
  if (at < 0 || args[at] !== 'get') return false;
  // The command's words: DIR, then REF; -o/--output and the global options with a value skip theirs.
  const words: string[] = [];
  for (let i = at + 1; i < args.length; i++) {
    const a = args[i]!;
    if (a.startsWith('-')) {
      if (a === '-o' || a === '--output' || OPTIONS_WITH_VALUE.has(a)) i++;
      continue;
    }
    words.push(a);
  }
  return words[1]?.endsWith('/') === true;
}

/**
 * The environment to restart `ouro` with for its malloc settings, or undefined to run on as it
 * is: only for a tree restore on Linux with glibc, not when the operator chose a malloc setting
 * (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES; which also keeps the restarted
 * process from restarting again), and not with OURO_MALLOC=default.
 */
export function mallocRestart(args: readonly string[], env: NodeJS.ProcessEnv): NodeJS.ProcessEnv | undefined {
  if (process.platform !== 'linux' || !isTreeRestore(args)) return undefined;
  if (env['OURO_MALLOC'] === 'default' || 'MALLOC_MMAP_THRESHOLD_' in env || 'MALLOC_TRIM_THRESHOLD_' in env || 'GLIBC_TUNABLES' in env) return undefined;
  if (!usesGlibc()) return undefined;
  return { ...env, ...RESTORE_MALLOC };
}

/** Whether this process runs on glibc (its libc.so.6 is mapped); musl and others ignore the settings. */
function usesGlibc(): boolean {
  try {
    return /\/libc\.so\.6$/m.test(fs.readFileSync('/proc/self/maps', 'utf8'));
  } catch {
    return false;
  }
}
