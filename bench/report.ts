/**
 * The benchmark report (issue 9): every figure as a row next to its peer from the same run, and
 * three renderings of the rows: a terminal table, `bench/RESULTS.md` (with SVG bar charts beside
 * it in `bench/charts/`) and `bench/report.html` (the same charts inline: one file, no script,
 * works offline). The charts are plain SVG written here: horizontal bars need no library.
 */

/** The benchmark parts, in the order the harness runs them (`--only <part>` runs one). */
export const PARTS = ['ingest', 'backup', 'small', 'keyed', 'list', 'gc', 'tree', 'blockstore', 'embed', 'recovery', 'carrier', 'replication', 'restore-rf', 's3', 'ec', 'ec-cluster', 'net', 'micro'];

/** One figure of OuroDB's, with the peer it is measured against in the same run (if any). */
export interface Row {
  /** The benchmark part that measured it (`npm run bench -- --only <part>`). */
  part: string;
  workload: string;
  unit: string;
  better: 'higher' | 'lower';
  ours: number;
  peer?: string;
  peerValue?: number;
  /** What the reader must know to compare fairly (durability, what the peer skips). */
  note?: string;
}

export interface RunInfo {
  machine: string;
  node: string;
  date: string;
  mode: 'quick' | 'full';
  command: string;
  /** Per part: seconds it took and the peak RSS of its process. */
  parts: Array<{ part: string; seconds: number; peakRssMiB: number; ok: boolean; error?: string }>;
  skipped: string[];
  /** Versions of the peers measured (or "not installed"). */
  peers: string[];
}

/** OuroDB's standing against the peer: > 1 ahead, < 1 behind, whichever way the unit counts. */
export function advantage(r: Row): number | undefined {
  if (r.peerValue === undefined || r.peerValue === 0 || r.ours === 0) return undefined;
  return r.better === 'higher' ? r.ours / r.peerValue : r.peerValue / r.ours;
}

const fmt = (n: number): string => (Math.abs(n) >= 1000 ? Math.round(n).toLocaleString('en-US') : Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 10 ? n.toFixed(1) : n.toFixed(2));
const standing = (a: number | undefined): string => (a === undefined ? '' : a >= 1 ? `${a.toFixed(2)}x ahead` : `${(1 / a).toFixed(2)}x behind`);

export function terminalTable(rows: Row[]): string {
  const head = ['workload', 'OuroDB', 'peer', 'peer value', 'standing'];
  const cells = rows.map((r) => [r.workload, `${fmt(r.ours)} ${r.unit}`, r.peer ?? '', r.peerValue === undefined ? '' : `${fmt(r.peerValue)} ${r.unit}`, standing(advantage(r))]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((x, i) => (i === 1 || i === 3 ? x.padStart(widths[i]!) : x.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Rows grouped by workload (one chart each: OuroDB's bar and one bar per peer). */
export function groups(rows: Row[]): Array<{ workload: string; unit: string; better: Row['better']; part: string; bars: Array<{ label: string; value: number; ours: boolean }> }> {
  const out = new Map<string, ReturnType<typeof groups>[number]>();
  for (const r of rows) {
    if (r.peerValue === undefined) continue;
    let g = out.get(r.workload);
    if (!g) out.set(r.workload, (g = { workload: r.workload, unit: r.unit, better: r.better, part: r.part, bars: [{ label: 'OuroDB', value: r.ours, ours: true }] }));
    g.bars.push({ label: r.peer!, value: r.peerValue, ours: false });
  }
  return [...out.values()];
}

/** A horizontal bar chart of one workload: OuroDB in blue, peers in grey. */
export function barChart(g: ReturnType<typeof groups>[number]): string {
  const width = 640;
  const barH = 22;
  const gap = 8;
  const labelW = 230;
  const top = 34;
  const height = top + g.bars.length * (barH + gap) + 6;
  const max = Math.max(...g.bars.map((b) => b.value)) || 1;
  const scale = (width - labelW - 90) / max;
  const bars = g.bars
    .map((b, i) => {
      const y = top + i * (barH + gap);
      const w = Math.max(1, b.value * scale);
      return `<text x="${labelW - 8}" y="${y + barH / 2 + 4}" text-anchor="end" font-size="12">${esc(b.label)}</text><rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${b.ours ? '#0969da' : '#8c959f'}"/><text x="${(labelW + w + 6).toFixed(1)}" y="${y + barH / 2 + 4}" font-size="12">${esc(fmt(b.value))}</text>`;
    })
    .join('');
  const title = `${g.workload} (${g.unit}, ${g.better} is better)`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif"><rect width="100%" height="100%" fill="#fff"/><text x="8" y="20" font-size="13" font-weight="600">${esc(title)}</text>${bars}</svg>`;
}

export const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);

function behindList(rows: Row[]): string[] {
  return rows
    .map((r) => ({ r, a: advantage(r) }))
    .filter((x): x is { r: Row; a: number } => x.a !== undefined && x.a < 1)
    .sort((x, y) => x.a - y.a)
    .map(({ r, a }) => `${r.workload}: ${(1 / a).toFixed(2)}x behind ${r.peer} (${fmt(r.ours)} vs ${fmt(r.peerValue!)} ${r.unit})`);
}

export function markdown(info: RunInfo, rows: Row[], chartDir: string): string {
  const behind = behindList(rows);
  const lines = [
    '# Benchmark results',
    '',
    `Generated by \`${info.command}\` (${info.mode} mode) on ${info.date}. Machine: ${info.machine}. Node ${info.node}.`,
    `Peers: ${info.peers.join(', ')}.`,
    'Every figure sits next to its peer from the same run; the machine is shared and noisy, so compare',
    'ratios within a run, not figures across runs. "Standing" is OuroDB against the peer: ahead or behind',
    'by that factor, whichever way the unit counts. docs/performance.md has the analysis and history.',
    '',
    '| part | workload | OuroDB | peer | peer value | standing | note |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.part} | ${r.workload} | ${fmt(r.ours)} ${r.unit} | ${r.peer ?? ''} | ${r.peerValue === undefined ? '' : `${fmt(r.peerValue)} ${r.unit}`} | ${standing(advantage(r))} | ${r.note ?? ''} |`),
    '',
    '## Where OuroDB is behind',
    '',
    ...(behind.length ? behind.map((l) => `- ${l}`) : ['- nowhere in this run']),
    '',
    '## Parts',
    '',
    '| part | seconds | peak RSS of its process | |',
    '|---|---|---|---|',
    ...info.parts.map((p) => `| ${p.part} | ${p.seconds.toFixed(0)} | ${p.peakRssMiB.toFixed(0)} MiB | ${p.ok ? '' : `failed: ${p.error ?? ''}`} |`),
    '',
    ...(info.skipped.length ? ['Skipped:', '', ...info.skipped.map((s) => `- ${s}`), ''] : []),
    '## Charts',
    '',
    ...groups(rows).map((g) => `![${g.workload}](${chartDir}/${slug(g.workload)}.svg)`),
    '',
  ];
  return lines.join('\n');
}

export function html(info: RunInfo, rows: Row[]): string {
  const table = rows
    .map((r) => `<tr><td>${esc(r.part)}</td><td>${esc(r.workload)}</td><td class="n">${esc(fmt(r.ours))} ${esc(r.unit)}</td><td>${esc(r.peer ?? '')}</td><td class="n">${r.peerValue === undefined ? '' : `${esc(fmt(r.peerValue))} ${esc(r.unit)}`}</td><td class="${(advantage(r) ?? 1) < 1 ? 'behind' : 'ahead'}">${esc(standing(advantage(r)))}</td><td>${esc(r.note ?? '')}</td></tr>`)
    .join('\n');
  const behind = behindList(rows);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>OuroDB benchmarks ${esc(info.date)}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 1100px; color: #1f2328; padding: 0 1rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
.sub { color: #57606a; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(640px, 1fr)); gap: 1rem; }
.charts svg { border: 1px solid #d0d7de; border-radius: 6px; max-width: 100%; height: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #d0d7de; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.behind { color: #cf222e; font-weight: 600; } .ahead { color: #1a7f37; }
</style></head><body>
<h1>OuroDB benchmarks</h1>
<p class="sub">${esc(info.date)} · ${esc(info.machine)} · Node ${esc(info.node)} · ${esc(info.mode)} mode · <code>${esc(info.command)}</code>. Each figure is measured next to its peer in the same run; compare ratios, not figures across runs.</p>
<p class="sub">Peers: ${esc(info.peers.join(', '))}.</p>
<h2>OuroDB against each peer</h2>
<div class="charts">
${groups(rows).map(barChart).join('\n')}
</div>
<h2>Where OuroDB is behind</h2>
<ul>${behind.length ? behind.map((b) => `<li>${esc(b)}</li>`).join('') : '<li>nowhere in this run</li>'}</ul>
<h2>Every figure</h2>
<table><thead><tr><th>part</th><th>workload</th><th>OuroDB</th><th>peer</th><th>peer value</th><th>standing</th><th>note</th></tr></thead><tbody>
${table}
</tbody></table>
<h2>Parts</h2>
<table><thead><tr><th>part</th><th>seconds</th><th>peak RSS</th><th></th></tr></thead><tbody>
${info.parts.map((p) => `<tr><td>${esc(p.part)}</td><td class="n">${p.seconds.toFixed(0)}</td><td class="n">${p.peakRssMiB.toFixed(0)} MiB</td><td>${p.ok ? '' : esc(`failed: ${p.error ?? ''}`)}</td></tr>`).join('\n')}
</tbody></table>
${info.skipped.length ? `<h2>Skipped</h2><ul>${info.skipped.map((s) => `<li>${esc(s)}</li>`).join('')}</ul>` : ''}
</body></html>
`;
}
