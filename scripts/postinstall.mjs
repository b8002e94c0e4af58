// Applies patches/ with patch-package (a devDependency) when it is installed, i.e. in this
// repository. Where OuroDB is installed as a dependency without its dev tools, the patches are
// skipped with a note instead of failing the install. See patches/README.md for each patch.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let bin;
try {
  bin = require.resolve('patch-package/dist/index.js');
} catch {
  console.log('ourodb: patch-package is not installed; skipping patches/ (QUIC reads stay at 4 KiB pieces)');
  process.exit(0);
}
const r = spawnSync(process.execPath, [bin], { stdio: 'inherit' });
process.exit(r.status ?? 1);
