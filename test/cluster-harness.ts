/**
 * The cluster tests' process harness: test/cluster-procs.ts, with node directories from the
 * tests' temp dirs (removed after each test) and every process a test started killed after it,
 * whatever happened.
 */
import { afterEach } from 'vitest';
import { killAll, setDirMaker } from './cluster-procs.js';
import { tempDir } from './helpers.js';

export * from './cluster-procs.js';

setDirMaker(() => tempDir());
afterEach(killAll);
