import fs from 'node:fs';
const txt = fs.readFileSync(`/proc/${process.argv[2]}/smaps`, 'utf8');
const maps = []; let cur;
for (const line of txt.split('\n')) {
  const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
  if (m) { cur = { size: (parseInt(m[2],16)-parseInt(m[1],16))>>10, perm: m[3], name: m[4] || '[anon]', rss: 0 }; maps.push(cur); continue; }
  const r = /^Rss:\s+(\d+) kB/.exec(line); if (r && cur) cur.rss = Number(r[1]);
}
const by = {};
for (const m of maps) { const k = m.name.startsWith('/') ? (m.name.includes('node_modules/node/bin') ? 'node binary' : m.name.split('/').slice(-1)[0]) : m.name; by[k] = (by[k]||0) + m.rss; }
console.log(Object.entries(by).sort((a,b)=>b[1]-a[1]).slice(0,15).map(([k,v])=>`${k}:${(v/1024).toFixed(1)}`).join('  '));
const anon = maps.filter(m => m.name === '[anon]' && m.rss > 1024).sort((a,b)=>b.rss-a.rss);
console.log('anon >1MiB:', anon.slice(0,30).map(m => `${(m.rss/1024).toFixed(1)}/${(m.size/1024).toFixed(0)}`).join(' '));
console.log('threads', fs.readdirSync(`/proc/${process.argv[2]}/task`).length);
