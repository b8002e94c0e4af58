import crypto from 'node:crypto';
import fs from 'node:fs';
import { OuroDB } from './dist/lib/index.js';
import { keystream } from './dist/bench/peers.js';
const total = Number(process.argv[2]) * (1 << 20);
const dir = '/tmp/scratch-ingest';
fs.rmSync(dir, { recursive: true, force: true });
const db = await OuroDB.open(dir, { key: crypto.randomBytes(32) });
function smaps() {
  const txt = fs.readFileSync('/proc/self/smaps', 'utf8'); const by = { heap: 0, anon: 0, bin: 0, other: 0 }; let k;
  for (const line of txt.split('\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) { k = m[1] === '[heap]' ? 'heap' : !m[1] ? 'anon' : m[1].includes('bin/node') ? 'bin' : 'other'; continue; }
    const r = /^Rss:\s+(\d+) kB/.exec(line); if (r) by[k] += Number(r[1]) >> 10;
  }
  return by;
}
const t0 = Date.now(); const rows = [];
const iv = setInterval(() => { const m = process.memoryUsage(); rows.push({ t: Date.now() - t0, rss: m.rss >> 20, heapTotal: m.heapTotal >> 20, heapUsed: m.heapUsed >> 20, ab: m.arrayBuffers >> 20, ...smaps() }); }, 1000);
let peak = 0; const iv2 = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 25);
await db.put(keystream(total, crypto.randomBytes(32)));
clearInterval(iv); clearInterval(iv2);
const pick = rows.filter((_, i) => i % Math.ceil(rows.length / 10) === 0 || i === rows.length - 1);
console.log('peak', (peak / 1048576).toFixed(1));
for (const r of pick) console.log(JSON.stringify(r));
await db.close();
fs.rmSync(dir, { recursive: true, force: true });
