import fs from 'node:fs';
const f = '/tmp/pf/big.bin'; const fd = fs.openSync(f, 'r'); const buf = Buffer.alloc(32768);
const N = 200000; const size = fs.fstatSync(fd).size;
for (const len of [1100, 4096, 16384]) {
  const offs = Array.from({ length: N }, () => Math.floor(Math.random() * (size - 20000)));
  const c0 = process.cpuUsage(); const t = performance.now();
  for (let i = 0; i < N; i++) fs.readSync(fd, buf, 0, len, offs[i]);
  const c = process.cpuUsage(c0);
  console.log(len, 'bytes:', ((performance.now() - t) * 1000 / N).toFixed(2), 'us wall', ((c.user + c.system) / N).toFixed(2), 'us cpu', (c.system / N).toFixed(2), 'sys');
}
