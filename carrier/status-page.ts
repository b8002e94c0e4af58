/**
 * The operator's status page, served by the admin API at `GET /` (docs/operations.md). One HTML
 * document with its script inline; the charts are uPlot, served from the installed package at
 * `/ui/uplot.js` and `/ui/uplot.css`, so the page needs nothing from the internet. It polls
 * `/status`, `/members`, `/ledger` and `/series` every `refresh` ms (query parameter, default
 * 1000), and `/cluster/status` (every member's own status, asked over the carrier) every
 * max(refresh, 2000) ms. Member fields it shows only when the node gives them (`name`, `role`)
 * fall back to the short peer id and to `founder` or `–`. Off loopback the admin API wants the token: give it as `#token=...` in the address
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
  .state-dead, .state-revoked, .state-left, .quarantined, .error { color: var(--bad); font-weight: 600; }
  .state-unknown { color: var(--muted); }
  h2 { font-size: 1rem; margin: 1rem 0 .4rem; }
  #cannot-heal { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: .5rem .8rem; margin-bottom: 1rem; }
  #cannot-heal[hidden] { display: none; }
  .heal-note { color: var(--bad); }
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
<div id="cannot-heal" hidden><strong>Cannot heal:</strong> <span id="cannot-heal-reason"></span>. Under-replicated blocks stay below their placement until a member is added (or a dead one comes back).</div>
<div class="cards">
  <div class="card"><div class="label">Members</div><div class="value" id="member-count">–</div><div class="note" id="member-states"></div></div>
  <div class="card"><div class="label">Under-replicated blocks</div><div class="value" id="under-replicated">–</div><div class="note">last repair pass · <span id="unsettled"></span> unsettled <span class="heal-note" id="heal-note"></span></div></div>
  <div class="card"><div class="label">Repair</div><div class="value" id="repair-pushed">–</div><div class="note">blocks copied by this node · <span id="repair-bytes"></span> · <span id="repair-passes"></span> passes · last <span id="repair-last"></span> · cluster: <span id="repair-cluster" data-bytes="0"></span> served for repair (ledger)</div></div>
  <div class="card"><div class="label">Coded blocks (cluster)</div><div class="value" id="shards-blocks">–</div><div class="note"><span id="shards-cluster">–</span> · this node: <span id="shards-here">–</span></div></div>
  <div class="card"><div class="label">Proof pass rate</div><div class="value" id="proof-rate">–</div><div class="note" id="proof-counts"></div></div>
  <div class="card"><div class="label">Disk</div><div class="value" id="disk-held">–</div><div class="note"><span id="disk-free"></span> free of <span id="disk-total"></span></div><div class="bar"><div id="disk-bar" style="width:0"></div></div></div>
</div>
<h2>Members</h2>
<table id="members">
  <thead><tr><th>Member</th><th>Address</th><th>Role</th><th>State</th><th>Blocks held</th><th>Bytes held</th><th>Proofs passed / failed / late</th><th>Uptime seen</th><th>Served for repair</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Former members <span class="note" id="former-count"></span></h2>
<table id="former">
  <thead><tr><th>Member</th><th>Address</th><th>Role</th><th>Status</th><th>By</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Cluster: every member's own view <span class="note" id="cluster-updated"></span></h2>
<table id="cluster-view">
  <thead><tr><th>Member</th><th>Node role</th><th>Sees alive / suspect / dead</th><th>Under-replicated</th><th>Unsettled</th><th>Heal</th><th>Proofs passed / failed / late</th><th>Coded blocks full / at threshold / unreadable</th><th>Held</th><th>Disk free</th><th>Drain</th></tr></thead>
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
// A member's name when it has one (config \`name\`), else its short peer id.
const label = (m) => (m.name ? m.name : short(m.peerId));
const role = (m) => (m.role || (m.approvedBy === m.peerId ? "founder" : "–")) + (m.draining ? " · draining" : "");
const address = (m) => (m.addresses && m.addresses[0]) || "–";
// Coded blocks by healthy shards (docs/node.md, "Redundancy": full at K+M, at threshold, unreadable under K).
const shardText = (h) => h.full + " full · " + h.atThreshold + " at threshold · " + h.unreadable + " unreadable";
// Byte rates: the axis and legend pick the unit from the values, with the decimals the tick
// step needs, so that a small rate reads 0.25 KiB/s, not 0 MiB/s.
const UNITS = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
const unitOf = (v) => Math.max(0, Math.min(3, Math.floor(Math.log(Math.max(1, Math.abs(v))) / Math.log(1024))));
function decimalsFor(step) {
  for (let n = 0; n < 3; n++) if (Math.abs(Math.round(step * 10 ** n) - step * 10 ** n) < 1e-6) return n;
  return 3;
}
function fmtRate(v, unit, decimals) {
  const u = unit ?? unitOf(v);
  const x = v / 1024 ** u;
  return x.toFixed(decimals ?? (x >= 100 ? 0 : x >= 10 ? 1 : 2)) + " " + UNITS[u];
}
const RATE_INCRS = [1, 2, 5, 10, 20, 50, 100, 200];
for (let k = 1; k < 4; k++) for (const m of [0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200]) RATE_INCRS.push(m * 1024 ** k);
const rateAxis = { size: 80, incrs: RATE_INCRS, values: (u, splits, axisIdx, space, incr) => {
  const unit = unitOf(Math.max(...splits.map(Math.abs)));
  const d = decimalsFor(incr / 1024 ** unit);
  return splits.map((v) => fmtRate(v, unit, d));
} };
const countAxis = { size: 50, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 100000, 1000000] };
function lastIndex(data) {
  for (let i = data.length - 1; i >= 0; i--) if (data[i] != null) return i;
  return null;
}
// The legend shows the value under the cursor, and the latest one when the cursor is elsewhere
// (uPlot's default there is "--").
const legendValue = (fmt) => (u, v, si, idx) => {
  const i = idx ?? lastIndex(u.data[si]);
  const x = i == null ? null : u.data[si][i];
  return x == null ? "–" : fmt(x);
};
async function get(path) {
  const res = await fetch(path, { headers, cache: "no-store" });
  if (!res.ok) throw new Error(path + ": HTTP " + res.status);
  return res.json();
}
const charts = {};
function chart(id, title, series, kind) {
  const el = $(id);
  const fmt = kind === "rate" ? (x) => fmtRate(x) : (x) => String(Math.round(x));
  const opts = {
    title, width: Math.max(380, el.clientWidth - 10), height: 180, scales: { x: { time: true } },
    series: [{ value: (u, v, si, idx) => (idx == null ? "latest" : new Date(v * 1000).toLocaleTimeString()) }, ...series.map((s) => ({ label: s.label, stroke: s.color, width: s.width || 2, dash: s.dash, value: legendValue(fmt) }))],
    axes: [{}, kind === "rate" ? rateAxis : countAxis],
  };
  charts[id] = new uPlot(opts, [[], ...series.map(() => [])], el);
}
chart("chart-ingest", "Ingest", [{ label: "written here", color: "#0969da" }, { label: "adopted from members", color: "#8c959f", dash: [4, 4] }], "rate");
chart("chart-replication", "Replication", [{ label: "in", color: "#1a7f37" }, { label: "out", color: "#8250df" }], "rate");
chart("chart-proofs", "Proofs of storage (per sample)", [{ label: "pass", color: "#1a7f37" }, { label: "fail", color: "#cf222e" }, { label: "late", color: "#9a6700" }], "count");
// Under-replicated blocks are also unsettled, so the two lines often coincide: under-replicated
// is drawn last (on top), wider and dashed, so that it shows over the unsettled line.
chart("chart-repair", "Replica health", [{ label: "unsettled", color: "#9a6700", width: 2 }, { label: "under-replicated", color: "#cf222e", width: 3, dash: [8, 4] }], "count");
/** Bytes per second between neighbouring samples of \`value\` (a running total). */
function rates(samples, value) {
  const out = [];
  for (let i = 0; i < samples.length; i++) {
    if (i === 0) { out.push(null); continue; }
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    const d = value(samples[i]) - value(samples[i - 1]);
    out.push(dt > 0 ? Math.max(0, d) / dt : null);
  }
  return out;
}
const field = (name) => (s) => s[name] ?? 0;
// Ingest is what was written here: the database's logical bytes also rise by what it adopts
// from other members, drawn apart.
const written = (s) => s.logicalBytes - (s.adoptedLogicalBytes ?? 0);
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
  // Current members in one table, revoked and left ones apart: the count is the table's rows.
  const listed = members.members.filter((m) => m.status === "member");
  const former = members.members.filter((m) => m.status !== "member");
  text("member-count", listed.length);
  text("member-states", states.alive + " alive · " + states.suspect + " suspect · " + states.dead + " dead (others)" + (former.length ? " · " + former.length + " former" : ""));
  text("former-count", former.length ? "(" + former.length + ": revoked or left; they hold nothing for the cluster)" : "(none)");
  $("cannot-heal").hidden = !r.cannotHeal;
  text("cannot-heal-reason", r.cannotHealReason || "");
  text("heal-note", r.cannotHeal ? "· cannot heal: " + r.cannotHealReason : "");
  text("under-replicated", r.underReplicated);
  text("unsettled", r.unsettled);
  text("repair-pushed", r.pushed);
  text("repair-bytes", mib(r.pushedBytes));
  text("repair-passes", r.passes);
  text("repair-last", ago(r.lastPassAt));
  text("shards-here", r.shardHealth ? shardText(r.shardHealth) : "–");
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
  $("members").tBodies[0].replaceChildren(...listed.map((m) => {
    const l = byPeer.get(m.peerId);
    const state = m.state || "unknown";
    return row({ peer: m.peerId, state, status: m.status }, [
      [label(m) + (m.self ? " (this node)" : ""), "peer"],
      [address(m), "address"],
      [role(m), "role"],
      [state + (m.quarantined ? " · quarantined" : ""), "state state-" + state + (m.quarantined ? " quarantined" : "")],
      [l ? l.blocksHeld : "–", "blocks"],
      [l ? mib(l.bytesHeld) : "–", "bytes"],
      [l ? l.proofs.passed + " / " + l.proofs.failed + " / " + l.proofs.late : "–", "proofs"],
      [l && l.uptimeRatio !== null ? (100 * l.uptimeRatio).toFixed(1) + " %" : "–", "uptime"],
      [l ? mib(l.servedForRepairBytes) : "–", "served"],
    ]);
  }));
  // A former member's ledger figures are history (what it held when it went): not shown as if it still held them.
  $("former").tBodies[0].replaceChildren(...former.map((m) => row({ peer: m.peerId, state: m.status, status: m.status }, [
    [label(m), "peer"],
    [address(m), "address"],
    [role(m), "role"],
    [m.status, "state state-" + m.status],
    [m.revokedBy ? (m.revokedBy === m.peerId ? "itself" : short(m.revokedBy)) : "–", "by"],
  ])));
  const s = series.samples;
  const xs = s.map((x) => x.t / 1000);
  charts["chart-ingest"].setData([xs, rates(s, written), rates(s, field("adoptedLogicalBytes"))]);
  charts["chart-replication"].setData([xs, rates(s, field("replicatedInBytes")), rates(s, field("replicatedOutBytes"))]);
  charts["chart-proofs"].setData([xs, deltas(s, "proofsPassed"), deltas(s, "proofsFailed"), deltas(s, "proofsLate")]);
  charts["chart-repair"].setData([xs, s.map((x) => x.unsettled), s.map((x) => x.underReplicated)]);
  text("updated", new Date().toLocaleTimeString());
  text("error", "");
}
function row(data, cells) {
  const tr = document.createElement("tr");
  Object.assign(tr.dataset, data);
  for (const [v, cls] of cells) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = v;
    tr.append(td);
  }
  return tr;
}
function renderCluster(cluster) {
  $("cluster-view").tBodies[0].replaceChildren(...cluster.members.map((m) => {
    const name = label(m) + (m.self ? " (this node)" : "");
    if (!m.ok) return row({ peer: m.peerId, ok: "false" }, [[name, "peer"], ["no answer: " + m.error.code + ": " + m.error.message, "error"]]);
    const st = m.status;
    const r = st.replication || {};
    const p = st.proofs || {};
    const c = st.members || {};
    const d = st.drain;
    return row({ peer: m.peerId, ok: "true" }, [
      [name, "peer"],
      [st.role, "role"],
      [(c.alive ?? 0) + " / " + (c.suspect ?? 0) + " / " + (c.dead ?? 0), "sees"],
      [r.underReplicated ?? "–", "under"],
      [r.unsettled ?? "–", "unsettled"],
      [r.cannotHeal ? "cannot heal: " + r.cannotHealReason : "ok", r.cannotHeal ? "heal error" : "heal"],
      [p.enabled ? p.pass + " / " + p.fail + " / " + p.late : "–", "proofs"],
      [r.shardHealth ? r.shardHealth.full + " / " + r.shardHealth.atThreshold + " / " + r.shardHealth.unreadable : "–", r.shardHealth && r.shardHealth.unreadable > 0 ? "shards error" : "shards"],
      [st.disk ? mib(st.disk.heldBytes) : "–", "held"],
      [st.disk ? mib(st.disk.freeBytes) : "–", "free"],
      [d ? (d.done ? "done" : d.unsettled + " of " + d.held + " to move") : "–", "drain"],
    ]);
  }));
  text("cluster-updated", "(asked by this node, " + new Date(cluster.at).toLocaleTimeString() + ")");
  // Each coded block is counted by one member (its whole-copy holder, or its rebuilder): the sum is the cluster's.
  const h = cluster.shardHealth;
  if (h) {
    text("shards-blocks", h.blocks);
    text("shards-cluster", shardText(h) + (cluster.members.some((m) => !m.ok) ? " (members not answering left out)" : ""));
    $("shards-cluster").className = h.unreadable > 0 ? "error" : "";
  }
}
async function refreshCluster() {
  try {
    renderCluster(await get("/cluster/status"));
  } catch (err) {
    text("cluster-updated", "· " + err.message);
  } finally {
    setTimeout(refreshCluster, Math.max(2000, refreshMs));
  }
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
refreshCluster();
</script>
</body>
</html>
`;
