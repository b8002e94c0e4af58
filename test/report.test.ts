/**
 * The benchmark report (bench/report.ts): standing against a peer counts the right way for both
 * kinds of unit, every figure appears in the Markdown and HTML with its peer, where OuroDB is
 * behind is listed worst first, and names are escaped in the SVG and HTML.
 */
import { describe, expect, it } from 'vitest';
import { type Row, type RunInfo, advantage, barChart, groups, html, markdown, terminalTable } from '../bench/report.js';

const info: RunInfo = { machine: 'test machine', node: 'v24', date: '2026-11-23', mode: 'quick', command: 'npm run bench -- --quick', parts: [{ part: 'ingest', seconds: 3, peakRssMiB: 200, ok: true }], skipped: ['ingest: Hypercore 10: not installed'], peers: ['restic 0.14.0'] };
const rows: Row[] = [
  { part: 'ingest', workload: 'ingest', unit: 'MiB/s', better: 'higher', ours: 100, peer: 'raw <write>', peerValue: 400 },
  { part: 'ingest', workload: 'ingest', unit: 'MiB/s', better: 'higher', ours: 100, peer: 'Helia', peerValue: 50 },
  { part: 'recovery', workload: 'open after SIGKILL', unit: 's', better: 'lower', ours: 0.5, peer: 'classic-level', peerValue: 1 },
  { part: 'tree', workload: 'bytes on disk', unit: 'MiB', better: 'lower', ours: 30, peer: 'borg', peerValue: 20 },
  { part: 'ingest', workload: 'peak RSS', unit: 'MiB', better: 'lower', ours: 210 },
];

describe('benchmark report', () => {
  it('counts standing by the unit: more is better for rates, less for times and sizes', () => {
    expect(advantage(rows[0]!)).toBe(0.25);
    expect(advantage(rows[1]!)).toBe(2);
    expect(advantage(rows[2]!)).toBe(2);
    expect(advantage(rows[3]!)).toBeCloseTo(2 / 3);
    expect(advantage(rows[4]!)).toBeUndefined();
  });

  it('puts every figure with its peer in the table, the Markdown and the HTML, and lists where it is behind, worst first', () => {
    const md = markdown(info, rows, 'charts');
    for (const r of rows) expect(md).toContain(`| ${r.part} | ${r.workload} |`);
    const behind = md.slice(md.indexOf('## Where OuroDB is behind'), md.indexOf('## Parts'));
    expect(behind.indexOf('4.00x behind raw <write>')).toBeGreaterThan(0);
    expect(behind.indexOf('1.50x behind borg')).toBeGreaterThan(behind.indexOf('4.00x behind'));
    expect(behind).not.toContain('Helia');
    expect(md).toContain('Hypercore 10: not installed');
    expect(md).toContain('![ingest](charts/ingest.svg)');
    const page = html(info, rows);
    expect(page).toContain('raw &lt;write&gt;');
    expect(page).not.toContain('raw <write>');
    expect(page.match(/<svg /g)).toHaveLength(3);
    expect(terminalTable(rows).split('\n')).toHaveLength(rows.length + 2);
  });

  it('draws one bar per tool, the longest for the largest value', () => {
    const [g] = groups(rows);
    expect(g!.bars.map((b) => b.label)).toEqual(['OuroDB', 'raw <write>', 'Helia']);
    const svg = barChart(g!);
    const widths = [...svg.matchAll(/<rect x="\d+" y="\d+" width="([\d.]+)"/g)].map((m) => Number(m[1]));
    expect(widths).toHaveLength(3);
    expect(Math.max(...widths)).toBe(widths[1]);
    expect(widths[0]! / widths[1]!).toBeCloseTo(0.25, 2);
    expect(svg).toContain('raw &lt;write&gt;');
  });
});
