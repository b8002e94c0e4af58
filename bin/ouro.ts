#!/usr/bin/env node
/**
 * `ouro`: the OuroDB command line (bin/cli/main.ts). This launcher first turns on Node's on-disk
 * compile cache (module.enableCompileCache, Node >= 22.1; in the OS temp directory), so that each
 * run after the first skips compiling the CLI's modules: `ouro put` of an empty directory took
 * 0.13-0.14 s without it and 0.10 s with it here, a cost a backup script running `ouro put` per
 * snapshot pays every time.
 * The cache holds compiled code only, never data. NODE_COMPILE_CACHE overrides its place, and
 * NODE_DISABLE_COMPILE_CACHE=1 turns it off.
 * For a tree restore (`get PREFIX/ -o DIR`) on glibc it restarts itself once, in the same
 * process (process.execve), with malloc settings that keep each chunk's buffers off fresh pages
 * (bin/cli/memory.ts, mallocRestart; OURO_MALLOC=default keeps glibc's defaults).
 * For a command that only reads (get, cat, ls, stats) it then bounds V8's young generation
 * (bin/cli/memory.ts) before loading anything else, so that loading the CLI and the library does
 * not grow it first.
 */
import module from 'node:module';
import { boundYoungGeneration, boundsEarly, mallocRestart } from './cli/memory.js';

const restartEnv = mallocRestart(process.argv.slice(2), process.env);
if (restartEnv && typeof process.execve === 'function') {
  try {
    process.execve(process.execPath, [process.execPath, ...process.execArgv, ...process.argv.slice(1)], restartEnv);
  } catch {
    // Not restarted (execve refused): the command runs on with glibc's defaults.
  }
}
module.enableCompileCache?.();
if (boundsEarly(process.argv.slice(2))) boundYoungGeneration();
await import('./cli/main.js');
