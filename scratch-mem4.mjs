import crypto from 'node:crypto';
import fs from 'node:fs';
import { OuroDB } from './dist/lib/index.js';
import { keystream } from './dist/bench/peers.js';
const total = Number(process.argv[2]) * (1 << 20);
const dir = '/tmp/scratch-ingest';
fs.rmSync(dir, { recursive: true, force: true });
const db = await OuroDB.open(dir, { key: crypto.randomBytes(32) });
function smaps() {
  const txt = fs.readFileSync('/proc/self/smaps', 'utf8'); const map = new Map(); let k;
  for (const line of txt.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) { k = `${m[1]} ${((parseInt(m[2],16)-parseInt(m[1],16))/1048576).toFixed(1)}M ${m[3]||'anon'}`; continue; }
    const r = /^Rss:\s+(\d+) kB/.exec(line); if (r) map.set(k, Number(r[1]));
  }
  return map;
}
const t0 = Date.now(); let first, last;
setTimeout(() => { first = smaps(); console.log('first at', Date.now()-t0, 'rss', process.memoryUsage().rss>>20); }, 3000);
const iv = setInterval(() => { last = smaps(); }, 2000);
await db.put(keystream(total, crypto.randomBytes(32)));
clearInterval(iv);
console.log('last rss', process.memoryUsage().rss>>20);
const keys = new Set([...first.keys(), ...last.keys()]);
const d = [...keys].map(k => [k, (last.get(k)||0) - (first.get(k)||0)]).filter(([,v]) => Math.abs(v) > 256).sort((a,b)=>b[1]-a[1]);
let sum = 0; for (const [,v] of d) sum += v;
console.log('sum of big deltas MiB', (sum/1024).toFixed(1));
for (const [k,v] of d.slice(0,25)) console.log((v/1024).toFixed(1).padStart(6), k, ((last.get(k)||0)/1024).toFixed(1));
const tot = (m) => [...m.values()].reduce((a,b)=>a+b,0)/1024;
console.log('total first', tot(first).toFixed(1), 'last', tot(last).toFixed(1));
await db.close();
fs.rmSync(dir, { recursive: true, force: true });
