#!/usr/bin/env node
/**
 * `ouro`: the OuroDB command line (bin/cli/main.ts). This launcher first turns on Node's on-disk
 * compile cache (module.enableCompileCache, Node >= 22.1; in the OS temp directory), so that each
 * run after the first skips compiling the CLI's modules: `ouro put` of an empty directory took
 * 0.13-0.14 s without it and 0.10 s with it here, a cost a backup script running `ouro put` per
 * snapshot pays every time.
 * The cache holds compiled code only, never data. NODE_COMPILE_CACHE overrides its place, and
 * NODE_DISABLE_COMPILE_CACHE=1 turns it off.
 * For a command that only reads (get, cat, ls, stats) it then bounds V8's young generation
 * (bin/cli/memory.ts) before loading anything else, so that loading the CLI and the library does
 * not grow it first.
 */
import module from 'node:module';
import { boundYoungGeneration, boundsEarly } from './cli/memory.js';

module.enableCompileCache?.();
if (boundsEarly(process.argv.slice(2))) boundYoungGeneration();
await import('./cli/main.js');
