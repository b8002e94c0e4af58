// Makes the compiled `ouro` executable (tsc keeps its #! line but not the mode) and links it into
// node_modules/.bin, so that `npx ouro` runs it inside this repository too (npm links the bins
// of dependencies there, never the package's own). Run by the build, hence by `npm ci`.
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const target = path.join(root, 'dist', 'bin', 'ouro.js');
fs.chmodSync(target, 0o755);
const binDir = path.join(root, 'node_modules', '.bin');
if (fs.existsSync(binDir)) {
  const link = path.join(binDir, 'ouro');
  fs.rmSync(link, { force: true });
  fs.symlinkSync(path.relative(binDir, target), link);
}
