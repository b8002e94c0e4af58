import fs from 'node:fs';
const f = fs.readdirSync('/tmp/prof').filter(f=>f.endsWith('.cpuprofile'))[0];
const p = JSON.parse(fs.readFileSync('/tmp/prof/'+f));
const byId = new Map(p.nodes.map(n => [n.id, n]));
const self = new Map(); const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const counts = new Map(); for (const s of p.samples) counts.set(s, (counts.get(s)||0)+1);
// restrict to samples whose stack includes a function named arg
const want = process.argv[2];
let total = 0; const agg = new Map(); const incl = new Map();
for (const [id, c] of counts) {
  let ok = !want; const seen = new Set();
  for (let x = id; x; x = parent.get(x)) { const n = byId.get(x); const k = `${n.callFrame.functionName||'(anon)'} ${n.callFrame.url.split('/').slice(-2).join('/')}:${n.callFrame.lineNumber}`; if (n.callFrame.functionName === want) ok = true; seen.add(k); }
  if (!ok) continue;
  total += c; const n = byId.get(id); const k = `${n.callFrame.functionName||'(anon)'} ${n.callFrame.url.split('/').slice(-2).join('/')}:${n.callFrame.lineNumber}`;
  agg.set(k, (agg.get(k)||0)+c);
  for (const s of seen) incl.set(s, (incl.get(s)||0)+c);
}
console.log('total', total);
console.log('SELF'); for (const [k,v] of [...agg].sort((a,b)=>b[1]-a[1]).slice(0,30)) console.log((100*v/total).toFixed(1).padStart(5), k);
console.log('INCL'); for (const [k,v] of [...incl].sort((a,b)=>b[1]-a[1]).slice(0,40)) console.log((100*v/total).toFixed(1).padStart(5), k);
