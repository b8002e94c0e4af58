import fs from 'node:fs';
import path from 'node:path';

/** Every file under `dir`, at any depth (test directories are small). */
export function filesUnder(dir: string): string[] {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name));
}
