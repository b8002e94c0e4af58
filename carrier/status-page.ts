/**
 * The operator's status page, served by the admin API at `GET /` (docs/operations.md). One HTML
 * document with its script inline; the charts are uPlot, served from the installed package at
 * `/ui/uplot.js` and `/ui/uplot.css`, so the page needs nothing from the internet. It polls
 * `/status`, `/members`, `/ledger` and `/series` every `refresh` ms (query parameter, default
 * 1000). Off loopback the admin API wants the token: give it as `#token=...` in the address
 * (a fragment never leaves the browser).
 */
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>OuroDB node</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/ui/uplot.css">
<style>
  :root { --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --muted: #57606a; --line: #d0d7de; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2rem; color: #1f2328; background: #f6f8fa; }
  h1 { font-size: 1.25rem; margin: 0 0 .2rem; }
  .sub { color: var(--muted); margin-bottom: 1rem; word-break: break-all; }
  .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(11rem, 1fr)); gap: .6rem; margin-bottom: 1rem; }
  .card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; }
  .card .label { color: var(--muted); font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; }
  .card .value { font-size: 1.5rem; font-variant-numeric: tabular-nums; }
  .card .note { color: var(--muted); font-size: .8rem; }
  table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); margin-bottom: 1rem; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); font-variant-numeric: tabular-nums; }
  th { background: #f6f8fa; font-weight: 600; font-size: .85rem; }
  td.peer { font-family: ui-monospace, monospace; font-size: .8rem; }
  .state-alive { color: var(--ok); font-weight: 600; }
  .state-suspect { color: var(--warn); font-weight: 600; }
  .state-dead, .state-revoked, .quarantined { color: var(--bad); font-weight: 600; }
  .charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: .6rem; }
  .chart { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .4rem; }
  .bar { height: .5rem; background: #eaeef2; border-radius: 3px; overflow: hidden; margin-top: .3rem; }
  .bar > div { height: 100%; background: #0969da; }
  #error { color: var(--bad); }
</style>
</head>
<body>
<h1>OuroDB node <span id="role"></span></h1>
<div class="sub"><span id="peer"></span> · cluster <span id="cluster"></span> · list epoch <span id="epoch"></span> · replication factor <span id="factor"></span> · updated <span id="updated">never</span> <span id="error"></span></div>
<div class="cards">
  <div class="card"><div class="label">Members</div><div class="value" id="member-count">–</div><div class="note" id="member-states"></div></div>
  <div class="card"><div class="label">Under-replicated blocks</div><div class="value" id="under-replicated">–</div><div class="note">last repair pass · <span id="unsettled"></span> unsettled</div></div>
  <div class="card"><div class="label">Repair</div><div class="value" id="repair-pushed">–</div><div class="note">blocks copied by this node · <span id="repair-bytes"></span> · <span id="repair-passes"></span> passes · last <span id="repair-last"></span> · cluster: <span id="repair-cluster" data-bytes="0"></span> served for repair (ledger)</div></div>
  <div class="card"><div class="label">Proof pass rate</div><div class="value" id="proof-rate">–</div><div class="note" id="proof-counts"></div></div>
  <div class="card"><div class="label">Disk</div><div class="value" id="disk-held">–</div><div class="note"><span id="disk-free"></span> free of <span id="disk-total"></span></div><div class="bar"><div id="disk-bar" style="width:0"></div></div></div>
</div>
<table id="members">
  <thead><tr><th>Member</th><th>State</th><th>Blocks held</th><th>Bytes held</th><th>Proofs passed / failed / late</th><th>Uptime seen</th><th>Served for repair</th></tr></thead>
  <tbody></tbody>
</table>
<div class="charts">
  <div class="chart" id="chart-ingest"></div>
  <div class="chart" id="chart-replication"></div>
  <div class="chart" id="chart-proofs"></div>
  <div class="chart" id="chart-repair"></div>
</div>
<script src="/ui/uplot.js"></script>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const refreshMs = Math.max(200, Number(params.get("refresh")) || 1000);
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? { authorization: "Bearer " + token } : {};
const $ = (id) => document.getElementById(id);
const text = (id, v) => { $(id).textContent = v; };
const mib = (b) => b >= 2 ** 30 ? (b / 2 ** 30).toFixed(2) + " GiB" : (b / 2 ** 20).toFixed(1) + " MiB";
const ago = (t) => t ? Math.max(0, Math.round((Date.now() - t) / 1000)) + " s ago" : "never";
const short = (p) => p.slice(0, 8) + "…" + p.slice(-6);
async function get(path) {
  const res = await fetch(path, { headers, cache: "no-store" });
  if (!res.ok) throw new Error(path + ": HTTP " + res.status);
  return res.json();
}
const charts = {};
function chart(id, title, series) {
  const el = $(id);
  const opts = { title, width: Math.max(380, el.clientWidth - 10), height: 180, scales: { x: { time: true } }, series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2 }))], axes: [{}, { size: 60 }] };
  charts[id] = new uPlot(opts, [[], ...series.map(() => [])], el);
}
chart("chart-ingest", "Ingest (MiB/s)", [{ label: "logical bytes written", color: "#0969da" }]);
chart("chart-replication", "Replication (MiB/s)", [{ label: "in", color: "#1a7f37" }, { label: "out", color: "#8250df" }]);
chart("chart-proofs", "Proofs of storage (per sample)", [{ label: "pass", color: "#1a7f37" }, { label: "fail", color: "#cf222e" }, { label: "late", color: "#9a6700" }]);
chart("chart-repair", "Replica health", [{ label: "under-replicated", color: "#cf222e" }, { label: "unsettled", color: "#9a6700" }]);
function rates(samples, field, scale) {
  const out = [];
  for (let i = 0; i < samples.length; i++) {
    if (i === 0) { out.push(null); continue; }
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    const d = samples[i][field] - samples[i - 1][field];
    out.push(dt > 0 ? Math.max(0, d) / dt / scale : null);
  }
  return out;
}
function deltas(samples, field) {
  return samples.map((s, i) => (i === 0 ? null : Math.max(0, s[field] - samples[i - 1][field])));
}
function render(status, members, ledger, series) {
  text("role", "(" + status.role + ")");
  text("peer", status.peerId);
  text("cluster", status.clusterId || "none");
  text("epoch", status.epoch ?? "–");
  const r = status.replication;
  text("factor", r.factor);
  const states = status.members;
  const listed = members.members.filter((m) => m.status === "member");
  text("member-count", listed.length);
  text("member-states", states.alive + " alive · " + states.suspect + " suspect · " + states.dead + " dead (others)");
  text("under-replicated", r.underReplicated);
  text("unsettled", r.unsettled);
  text("repair-pushed", r.pushed);
  text("repair-bytes", mib(r.pushedBytes));
  text("repair-passes", r.passes);
  text("repair-last", ago(r.lastPassAt));
  const p = status.proofs;
  const decided = p.pass + p.fail + p.late;
  text("proof-rate", decided ? (100 * p.pass / decided).toFixed(1) + " %" : "–");
  text("proof-counts", p.enabled ? p.pass + " passed · " + p.fail + " failed · " + p.late + " late (made here)" : "this node makes no challenges (no database or proofs off)");
  const d = status.disk;
  text("disk-held", mib(d.heldBytes));
  text("disk-free", mib(d.freeBytes));
  text("disk-total", mib(d.totalBytes));
  $("disk-bar").style.width = (100 * (1 - d.freeBytes / d.totalBytes)).toFixed(1) + "%";
  const clusterServed = ledger.members.reduce((n, m) => n + m.servedForRepairBytes, 0);
  text("repair-cluster", mib(clusterServed));
  $("repair-cluster").dataset.bytes = String(clusterServed);
  const byPeer = new Map(ledger.members.map((m) => [m.peerId, m]));
  const body = $("members").tBodies[0];
  body.replaceChildren(...members.members.map((m) => {
    const l = byPeer.get(m.peerId);
    const state = m.status === "revoked" ? "revoked" : m.state || "unknown";
    const tr = document.createElement("tr");
    tr.dataset.peer = m.peerId;
    tr.dataset.state = state;
    const cells = [
      [short(m.peerId) + (m.self ? " (this node)" : ""), "peer"],
      [state + (m.draining ? " · draining" : "") + (m.quarantined ? " · quarantined" : ""), "state state-" + state + (m.quarantined ? " quarantined" : "")],
      [l ? l.blocksHeld : "–", "blocks"],
      [l ? mib(l.bytesHeld) : "–", "bytes"],
      [l ? l.proofs.passed + " / " + l.proofs.failed + " / " + l.proofs.late : "–", "proofs"],
      [l && l.uptimeRatio !== null ? (100 * l.uptimeRatio).toFixed(1) + " %" : "–", "uptime"],
      [l ? mib(l.servedForRepairBytes) : "–", "served"],
    ];
    for (const [v, cls] of cells) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
  const s = series.samples;
  const xs = s.map((x) => x.t / 1000);
  charts["chart-ingest"].setData([xs, rates(s, "logicalBytes", 2 ** 20)]);
  charts["chart-replication"].setData([xs, rates(s, "replicatedInBytes", 2 ** 20), rates(s, "replicatedOutBytes", 2 ** 20)]);
  charts["chart-proofs"].setData([xs, deltas(s, "proofsPassed"), deltas(s, "proofsFailed"), deltas(s, "proofsLate")]);
  charts["chart-repair"].setData([xs, s.map((x) => x.underReplicated), s.map((x) => x.unsettled)]);
  text("updated", new Date().toLocaleTimeString());
  text("error", "");
}
async function refresh() {
  try {
    const [status, members, ledger, series] = await Promise.all([get("/status"), get("/members"), get("/ledger"), get("/series")]);
    render(status, members, ledger, series);
  } catch (err) {
    text("error", "· " + err.message);
  } finally {
    setTimeout(refresh, refreshMs);
  }
}
refresh();
</script>
</body>
</html>
`;
