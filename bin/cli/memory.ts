/**
 * V8 settings for one-shot `ouro` commands, applied by the launcher (bin/ouro.ts) before it
 * loads the CLI and the library. Imports nothing but node:v8, so that setting them loads no code.
 */
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

/** Whether the command line names a command in READ_COMMANDS (the first word not an option). */
export function boundsEarly(args: readonly string[]): boolean {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a.startsWith('-')) {
      if (OPTIONS_WITH_VALUE.has(a)) i++;
      continue;
    }
    return READ_COMMANDS.has(a);
  }
  return false;
}
