import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The repository root, whether this file runs from test/ (vitest) or dist/test/ (compiled). */
export const repoRoot = here.split(path.sep).includes('dist') ? here.slice(0, here.lastIndexOf(`${path.sep}dist`)) : path.resolve(here, '..');

/** Path of a compiled fixture script (npm test builds dist/ before running vitest). */
export function fixture(name: string): string {
  return path.join(repoRoot, 'dist', 'test', 'fixtures', name);
}
