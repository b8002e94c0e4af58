/**
 * `npm run bench [-- --quick] [-- --only PART] [-- --size-mib N]`: the benchmark suite (issue 9).
 * Runs each part of bench/run.ts in a process of its own (so one part's heap, threads and page
 * cache state do not carry into the next, and its peak RSS is its own), gathers every figure with
 * its peer from the same run, prints the table, and writes bench/results.json, bench/RESULTS.md
 * with bench/charts/*.svg, and bench/report.html (bench/report.ts). A part that fails is reported
 * as failed and the others still run; the exit code is then 1. `--from bench/results.json` only
 * renders the report again from a saved run (after a change to the report, say).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { PARTS, type Row, type RunInfo, barChart, groups, html, markdown, slug, terminalTable } from './report.js';

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, only: { type: 'string', multiple: true }, 'size-mib': { type: 'string' }, 'out-dir': { type: 'string', default: 'bench' }, from: { type: 'string' } } });
const parts = values.only?.length ? values.only : PARTS;
for (const p of parts) if (!PARTS.includes(p)) throw new Error(`--only takes one of ${PARTS.join(', ')}`);
const outDir = values['out-dir']!;
const here = path.dirname(new URL(import.meta.url).pathname);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ouro-bench-parts-'));

const cpu = os.cpus();
const info: RunInfo = {
  machine: `${cpu.length} x ${cpu[0]?.model ?? '?'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}`,
  node: process.version,
  date: new Date().toISOString(),
  mode: values.quick ? 'quick' : 'full',
  command: ['npm run bench', ...(values.quick ? ['--', '--quick'] : []), ...(values.only?.length ? values.only.map((o) => `--only ${o}`) : []), ...(values['size-mib'] ? [`--size-mib ${values['size-mib']}`] : [])].join(' ').replace('bench --only', 'bench -- --only'),
  parts: [],
  skipped: [],
  peers: peerVersions(),
};
const rows: Row[] = [];
const raw: Record<string, unknown> = {};

if (values.from) {
  const saved = JSON.parse(fs.readFileSync(values.from, 'utf8')) as RunInfo & { rows: Row[]; raw: Record<string, unknown> };
  Object.assign(info, { machine: saved.machine, node: saved.node, date: saved.date, mode: saved.mode, command: saved.command, parts: saved.parts, skipped: saved.skipped, peers: saved.peers ?? info.peers });
  rows.push(...saved.rows);
  Object.assign(raw, saved.raw);
} else {
  await runParts();
}

async function runParts(): Promise<void> {
  console.log(`OuroDB benchmark suite (${info.mode}): ${parts.join(', ')}\n${info.machine}, Node ${info.node}\n`);
  for (const part of parts) {
    const out = path.join(tmp, `${part}.json`);
    const args = [path.join(here, 'run.js'), '--only', part, '--out', out, ...(values.quick ? ['--quick'] : []), ...(values['size-mib'] ? ['--size-mib', values['size-mib']] : [])];
    const started = performance.now();
    const code = await new Promise<number | null>((resolve) => spawn(process.execPath, args, { stdio: 'inherit' }).once('exit', (c) => resolve(c)));
    const seconds = (performance.now() - started) / 1000;
    if (code !== 0 || !fs.existsSync(out)) {
      info.parts.push({ part, seconds, peakRssMiB: 0, ok: false, error: `exited ${code}` });
      console.log(`\n!! part ${part} failed (exit ${code})\n`);
      continue;
    }
    const r = JSON.parse(fs.readFileSync(out, 'utf8')) as { rows: Row[]; skipped: string[]; peakRssMiB: number };
    rows.push(...r.rows.map((x) => ({ ...x, part })));
    info.skipped.push(...r.skipped.map((s) => `${part}: ${s}`));
    info.parts.push({ part, seconds, peakRssMiB: r.peakRssMiB, ok: true });
    raw[part] = r;
  }
}

console.log(`\n${terminalTable(rows)}\n`);
fs.mkdirSync(path.join(outDir, 'charts'), { recursive: true });
for (const f of fs.readdirSync(path.join(outDir, 'charts'))) if (f.endsWith('.svg')) fs.rmSync(path.join(outDir, 'charts', f));
for (const g of groups(rows)) fs.writeFileSync(path.join(outDir, 'charts', `${slug(g.workload)}.svg`), barChart(g) + '\n');
fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify({ ...info, rows, parts: info.parts, raw }, null, 2) + '\n');
fs.writeFileSync(path.join(outDir, 'RESULTS.md'), markdown(info, rows, 'charts'));
fs.writeFileSync(path.join(outDir, 'report.html'), html(info, rows));
fs.rmSync(tmp, { recursive: true, force: true });
console.log(`written ${outDir}/results.json, ${outDir}/RESULTS.md, ${outDir}/charts/, ${outDir}/report.html`);
if (info.parts.some((p) => !p.ok)) process.exitCode = 1;

/** What each peer is, as installed here: npm packages from their package.json, tools from their own version line. */
function peerVersions(): string[] {
  const npm = ['classic-level', 'ipfs-unixfs-importer', 'blockstore-fs', 'hypercore'].map((name) => {
    try {
      // Read from node_modules: some of them do not export their package.json.
      return `${name} ${(JSON.parse(fs.readFileSync(new URL(`../../node_modules/${name}/package.json`, import.meta.url), 'utf8')) as { version: string }).version}`;
    } catch {
      return `${name} not installed`;
    }
  });
  const tools = [['restic', 'version'], ['borg', '--version']].map(([cmd, arg]) => {
    const r = spawnSync(cmd!, [arg!], { encoding: 'utf8' });
    return r.status === 0 ? r.stdout.split('\n')[0]!.split(' compiled')[0]! : `${cmd} not installed`;
  });
  return [...npm, ...tools];
}
