// vtap web UI: the topology, the TAP policies, and where a selected TAP copies.
// Every call goes through the same REST API a script would use (/api/v1/...).
"use strict";

const FIELDS = ["name", "src_mac", "src_ip", "dst_mac", "dst_ip", "monitor_mac", "monitor_ip", "ip_proto",
  "vlan_id", "src_port", "dst_port", "direction", "transport", "description", "monitor_pool", "snaplen", "sample",
  "rate_limit_pps", "tunnel_key", "erspan_version"];

// `taps`: the policies shown (a page, and the selected one), as the event stream last said.
const state = { taps: new Map(), selected: null, viewVersion: null, topology: null, role: null,
  series: new Map(), capture: null, find: { q: "", status: "", offset: 0 }, total: 0, pageIds: [], pageAsked: 0,
  watching: null, conn: null, connects: 0, live: false, seen: null, pageSeen: undefined, painted: false };
const SERIES_SECONDS = 300;  // the chart's span
const PAGE = 50;  // policies a page of the table shows

// ---- signing in -----------------------------------------------------------------------
// The token lives in sessionStorage (this tab only), never in a URL; every call sends it.

const TOKEN_KEY = "vtap.token";
const token = () => sessionStorage.getItem(TOKEN_KEY);

// A request with the token signed in now. A 401 signs out only the token it was sent
// with: a reply that comes back after a sign-out and the next sign-in (a page refresh
// or the event stream, slow on a busy machine) must not sign the next one out. Signed
// out, nothing is sent.
async function authorized(path, options = {}) {
  const sent = token();
  if (!sent) return new Response(null, { status: 401 });
  const resp = await fetch(path, {
    ...options, headers: { "content-type": "application/json", "authorization": `Bearer ${sent}` } });
  if (resp.status === 401 && token() === sent) {
    signOut(state.role ? "Signed out: the token is no longer valid." : "That token is unknown, revoked or expired.");
  }
  return resp;
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.role = null;
  state.selected = null;  // the next sign-in starts afresh, perhaps as someone else
  state.capture = null;
  document.getElementById("tap-detail").hidden = true;
  document.getElementById("history").innerHTML = "";
  document.getElementById("conn").textContent = "signed out";
  state.live = false;
  state.watching = null;
  state.taps.clear();  // what the stream said was said to the one signed in
  if (state.conn) state.conn.abort();
  document.getElementById("app").hidden = true;
  document.getElementById("who").hidden = true;
  document.getElementById("sign-in").hidden = false;
  document.getElementById("sign-in-error").textContent = message || "";
}

async function api(path, options = {}) {
  const resp = await authorized(path, options);
  const body = resp.status === 204 ? null : await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = new Error(`${options.method || "GET"} ${path}: HTTP ${resp.status}`);
    err.status = resp.status;
    err.body = body;
    throw err;
  }
  return body;
}

// ---- the graph --------------------------------------------------------------------

const cy = cytoscape({
  container: document.getElementById("graph"),
  boxSelectionEnabled: false,
  autoungrabify: true,
  style: [
    { selector: "node", style: { "label": "data(label)", "font-size": 10, "text-valign": "bottom", "text-margin-y": 3 } },
    { selector: "node.switch", style: { "shape": "round-rectangle", "background-color": "#457b9d", "width": 34, "height": 20 } },
    { selector: "node.host", style: { "shape": "ellipse", "background-color": "#a8dadc", "width": 16, "height": 16 } },
    { selector: "edge", style: { "width": 1.5, "line-color": "#bbb", "curve-style": "straight" } },
    { selector: "node:selected", style: { "border-width": 3, "border-color": "#222" } },
    { selector: "edge.flow", style: { "line-color": "#1f77b4", "width": 5 } },
    { selector: "node.flow", style: { "border-width": 3, "border-color": "#1f77b4" } },
    { selector: "edge.copy", style: { "line-color": "#d62728", "width": 4, "line-style": "dashed" } },
    { selector: "node.copy", style: { "border-width": 3, "border-color": "#d62728" } },
    { selector: "node.tap-point", style: { "background-color": "#ff7f0e", "border-width": 3, "border-color": "#ff7f0e" } },
    { selector: "node.monitor", style: { "background-color": "#9467bd" } },
  ],
});
window.vtap = { cy, state };

const swId = (dpid) => `s:${dpid}`;
const hostId = (mac) => `h:${mac}`;
const linkId = (a, b) => (a < b ? `l:${a}-${b}` : `l:${b}-${a}`);

function elementsOf(topo) {
  const els = [];
  for (const d of topo.devices) {
    els.push({ group: "nodes", classes: "switch", data: { id: swId(d.dpid), label: shortDpid(d.dpid), kind: "switch", device: d } });
  }
  const seen = new Set();
  for (const l of topo.links) {
    const id = linkId(l.src_dpid, l.dst_dpid);
    if (seen.has(id)) continue;
    seen.add(id);
    els.push({ group: "edges", data: { id, source: swId(l.src_dpid), target: swId(l.dst_dpid), kind: "link" } });
  }
  const dpids = new Set(topo.devices.map((d) => d.dpid));
  for (const h of topo.hosts) {
    if (!dpids.has(h.dpid)) continue;
    els.push({ group: "nodes", classes: "host", data: { id: hostId(h.mac), label: hostLabel(h), kind: "host", host: h } });
    els.push({ group: "edges", data: { id: `e:${h.mac}`, source: hostId(h.mac), target: swId(h.dpid), kind: "attachment" } });
  }
  return els;
}

// A host is named by its IPv4 address when it has one, else a global IPv6 address, else
// its MAC: link-local addresses (fe80::/10) are alike on every host and say nothing.
function hostLabel(h) {
  const v4 = h.ips.find((ip) => !ip.includes(":"));
  const v6 = h.ips.find((ip) => ip.includes(":") && !/^fe[89ab]/i.test(ip));
  return v4 || v6 || h.mac;
}

function shortDpid(dpid) {
  return dpid.replace(/^0+(?=.)/, "");
}

// Layers, bottom up: hosts; switches with hosts (edge); then by distance from the edge
// (aggregation, core). Within a layer, a stable order, so refreshes do not move nodes.
function layeredPositions(topo) {
  const adj = new Map(topo.devices.map((d) => [d.dpid, new Set()]));
  for (const l of topo.links) {
    if (adj.has(l.src_dpid) && adj.has(l.dst_dpid)) adj.get(l.src_dpid).add(l.dst_dpid);
  }
  const hostsAt = new Map();
  for (const h of topo.hosts) {
    if (!adj.has(h.dpid)) continue;
    if (!hostsAt.has(h.dpid)) hostsAt.set(h.dpid, []);
    hostsAt.get(h.dpid).push(h);
  }
  const level = new Map();
  let frontier = [...adj.keys()].filter((d) => hostsAt.has(d));
  if (frontier.length === 0) frontier = [...adj.keys()].slice(0, 1);
  frontier.forEach((d) => level.set(d, 1));
  while (frontier.length) {
    const next = [];
    for (const d of frontier) {
      for (const n of adj.get(d)) {
        if (!level.has(n)) { level.set(n, level.get(d) + 1); next.push(n); }
      }
    }
    frontier = next;
  }
  for (const d of adj.keys()) if (!level.has(d)) level.set(d, 1);
  const maxLevel = Math.max(1, ...level.values());
  const layers = new Map();
  for (const [d, l] of level) {
    if (!layers.has(l)) layers.set(l, []);
    layers.get(l).push(d);
  }
  const width = 1000, rowH = 110, pos = {};
  if (crossesItsRow(adj, level)) return circlePositions(adj, hostsAt);
  for (const [l, ds] of layers) {
    ds.sort();
    ds.forEach((d, i) => { pos[swId(d)] = { x: (i + 0.5) * width / ds.length, y: (maxLevel - l + 1) * rowH }; });
  }
  const edges = (layers.get(1) || []);
  const hostOrder = [];
  for (const d of edges) {
    (hostsAt.get(d) || []).sort((a, b) => a.port - b.port).forEach((h) => hostOrder.push(h));
  }
  hostOrder.forEach((h, i) => { pos[hostId(h.mac)] = { x: (i + 0.5) * width / hostOrder.length, y: (maxLevel + 1) * rowH }; });
  return pos;
}

// A link between two switches of one layer that are not next to each other would be drawn
// over the switches between them (a ring's chords, a random graph): such a network is
// drawn on a circle instead. A chain (linear) keeps its row.
function crossesItsRow(adj, level) {
  const row = new Map();
  for (const [d, l] of level) {
    if (!row.has(l)) row.set(l, []);
    row.get(l).push(d);
  }
  for (const ds of row.values()) ds.sort();
  for (const [d, ns] of adj) {
    const ds = row.get(level.get(d));
    for (const n of ns) {
      if (level.get(n) === level.get(d) && Math.abs(ds.indexOf(n) - ds.indexOf(d)) > 1) return true;
    }
  }
  return false;
}

// Switches on a circle in dpid order, each switch's hosts just outside it.
function circlePositions(adj, hostsAt) {
  const ds = [...adj.keys()].sort(), pos = {};
  const cx = 500, cy0 = 330, r = 250;
  ds.forEach((d, i) => {
    const a = (2 * Math.PI * i) / ds.length - Math.PI / 2;
    pos[swId(d)] = { x: cx + r * Math.cos(a), y: cy0 + r * Math.sin(a) };
    const hs = (hostsAt.get(d) || []).sort((x, y) => x.port - y.port);
    hs.forEach((h, j) => {
      const b = a + (j - (hs.length - 1) / 2) * 0.12;
      pos[hostId(h.mac)] = { x: cx + (r + 90) * Math.cos(b), y: cy0 + (r + 90) * Math.sin(b) };
    });
  });
  return pos;
}

async function loadTopology() {
  const topo = await api("/api/v1/topology");
  state.topology = topo;
  const pos = layeredPositions(topo);
  cy.batch(() => {
    cy.elements().remove();
    cy.add(elementsOf(topo));
    cy.nodes().positions((n) => pos[n.id()] || { x: 0, y: 0 });
  });
  cy.fit(undefined, 20);
  document.getElementById("summary").textContent =
    `${topo.devices.length} switches · ${topo.links.length / 2} links · ${topo.hosts.length} hosts`;
  if (state.selected !== null) {
    try {
      await highlight(state.selected);
    } catch (err) {  // the selected policy went meanwhile
      if (err.status !== 404) throw err;
      state.selected = null;
      clearOverlay();
      showDetail();
    }
  }
}

function showDetails(node) {
  const el = document.getElementById("details");
  const d = node.data();
  let rows;
  if (d.kind === "switch") {
    const dev = d.device;
    rows = [["datapath id", dev.dpid], ["sync", dev.sync], ["connected since", dev.connected_since],
      ["ports", dev.ports.map((p) => `${p.port_no} ${p.name} (${p.role === "link" ? "authenticated link" : p.role}` +
        `${p.refused_macs ? `, ${p.refused_macs} MACs refused` : ""})`).join(", ")]];
  } else {
    const h = d.host;
    rows = [["host MAC", h.mac], ["IPs", h.ips.join(", ") || "-"], ["attached to", `${h.dpid} port ${h.port}`], ["last seen", h.last_seen]];
  }
  el.innerHTML = "<dl>" + rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(String(v))}</dd>`).join("") + "</dl>";
}

function esc(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

cy.on("mouseover", "node", (e) => showDetails(e.target));
cy.on("tap", "node", (e) => showDetails(e.target));

// ---- the overlay of a selected TAP ------------------------------------------------

function clearOverlay() {
  cy.elements().removeClass("flow copy tap-point monitor");
}

function markPath(hosts, switches, cls) {
  const nodes = [];
  if (hosts && hosts[0]) nodes.push(hostId(hosts[0]));
  switches.forEach((d) => nodes.push(swId(d)));
  if (hosts && hosts[1]) nodes.push(hostId(hosts[1]));
  nodes.forEach((id) => cy.getElementById(id).addClass(cls));
  for (let i = 0; i + 1 < nodes.length; i++) {
    const [a, b] = [nodes[i], nodes[i + 1]];
    let edge;
    if (a.startsWith("h:")) edge = cy.getElementById(`e:${a.slice(2)}`);
    else if (b.startsWith("h:")) edge = cy.getElementById(`e:${b.slice(2)}`);
    else edge = cy.getElementById(linkId(a.slice(2), b.slice(2)));
    edge.addClass(cls);
  }
}

async function highlight(tapId) {
  const paths = await api(`/api/v1/taps/${tapId}/paths`);
  cy.batch(() => {
    clearOverlay();
    for (const f of paths.flows) markPath(f.hosts, f.switches, "flow");
    for (const c of paths.copies) markPath([null, c.monitor], c.switches, "copy");
    for (const d of paths.tap_points) cy.getElementById(swId(d)).addClass("tap-point");
    for (const m of paths.monitors || []) cy.getElementById(hostId(m)).addClass("monitor");  // a pool's: each
  });
}

// ---- the TAP list ----------------------------------------------------------------------
// One page of the policies that match the filter, from the REST listing (which filters
// and pages on the server: 100,000 policies never come to the page); their status and
// counters then follow the event stream, which watches the ids shown.

function rowOf(t) {
  const row = document.createElement("tr");
  row.dataset.tapId = t.id;
  row.innerHTML = `<td>${t.id}</td><td class="name"></td><td class="status"></td><td class="packets"></td>` +
    `<td class="bytes"></td><td class="needs-operator"><button class="toggle"></button> <button class="delete">delete</button></td>`;
  row.addEventListener("click", (e) => { if (e.target.tagName !== "BUTTON") select(t.id); });
  row.querySelector(".toggle").addEventListener("click", () => toggle(t.id));
  row.querySelector(".delete").addEventListener("click", () => remove(t.id));
  return row;
}

function fillRow(row, t) {
  row.querySelector(".name").textContent = t.name;
  row.querySelector(".name").title = t.name;
  const st = row.querySelector(".status");
  st.textContent = t.status;
  st.className = `status ${t.status}`;
  st.title = t.status_reason || "";
  row.querySelector(".packets").textContent = t.packets ?? "";
  row.querySelector(".bytes").textContent = t.bytes ?? "";
  row.querySelector(".toggle").textContent = t.enabled ? "disable" : "enable";
  row.classList.toggle("selected", state.selected === t.id);
}

// The page's rows, in id order. What the stream has said of a policy stands over the
// listing's word: the stream sends a field again only when it moves, and says more
// (counters, a tunnel's collector); a listing only shows a policy the stream has not yet.
function renderPage(taps) {
  const tbody = document.querySelector("#tap-list tbody");
  const rows = new Map([...tbody.children].map((r) => [Number(r.dataset.tapId), r]));
  const ids = new Set(taps.map((t) => t.id));
  for (const [id, row] of rows) if (!ids.has(id)) row.remove();
  for (const t of taps) {
    const known = state.taps.get(t.id);
    const merged = known && known.heard ? { ...t, ...known } : t;
    state.taps.set(t.id, merged);
    const row = rows.get(t.id) || rowOf(t);
    fillRow(row, merged);
    tbody.appendChild(row);  // in page order
  }
  state.pageIds = taps.map((t) => t.id);
  for (const id of [...state.taps.keys()]) if (!ids.has(id) && id !== state.selected) state.taps.delete(id);
  const filtered = state.find.q || state.find.status;
  const empty = document.getElementById("tap-empty");
  empty.textContent = filtered ? "No policy matches." : "No TAP policy yet.";
  empty.style.display = taps.length ? "none" : "";
  showRange();
}

function showRange() {
  const { offset } = state.find, n = state.pageIds.length, total = state.total;
  document.getElementById("tap-range").textContent =
    total ? `${(offset + 1).toLocaleString("en")}–${(offset + n).toLocaleString("en")} of ${total.toLocaleString("en")}` : "";
  document.getElementById("tap-prev").disabled = offset === 0;
  document.getElementById("tap-next").disabled = offset + n >= total;
  document.getElementById("tap-pager").hidden = total <= PAGE && offset === 0;
}

// Fetch the page the filter and offset say; an answer overtaken by a later request is dropped.
async function refreshTaps() {
  const asked = ++state.pageAsked;
  state.pageSeen = state.seen;  // what the stream had said of the set when this page was asked for
  const { q, status, offset } = state.find;
  const params = new URLSearchParams({ offset: String(offset), limit: String(PAGE) });
  if (q) params.set("q", q);
  if (status) params.set("status", status);
  const resp = await authorized(`/api/v1/taps?${params}`);
  if (resp.status === 401) return;
  if (!resp.ok) throw new Error(`GET /api/v1/taps: HTTP ${resp.status}`);
  const taps = await resp.json();
  if (asked !== state.pageAsked) return;
  state.total = Number(resp.headers.get("x-total-count") || taps.length);
  if (!taps.length && offset > 0 && state.total > 0) {  // the page emptied (deletions): the last page there is
    state.find.offset = Math.floor((state.total - 1) / PAGE) * PAGE;
    return refreshTaps();
  }
  renderPage(taps);
  markFirstPaint();
  watch();
}

// When the table first shows policies (or that there are none), once painted: the
// browser tests measure it from navigation start (`performance.getEntriesByName`).
function markFirstPaint() {
  if (state.painted) return;
  state.painted = true;
  requestAnimationFrame(() => setTimeout(() => performance.mark("vtap:taps-painted"), 0));
}

// The page again soon (policies came or went): one fetch for a burst of events.
let refreshSoon = null;
function refreshPageSoon() {
  if (refreshSoon) return;
  refreshSoon = setTimeout(async () => {
    refreshSoon = null;
    try { await refreshTaps(); } catch (err) { /* the next event tries again */ }
  }, 500);
}

function find(change) {
  Object.assign(state.find, change);
  refreshTaps().catch((err) => {
    const empty = document.getElementById("tap-empty");
    empty.textContent = `Listing the policies failed: ${err.message}`;
    empty.style.display = "";
  });
}

let typing = null;
document.getElementById("tap-filter").addEventListener("input", (e) => {
  clearTimeout(typing);
  typing = setTimeout(() => find({ q: e.target.value.trim(), offset: 0 }), 200);
});
document.getElementById("tap-status-filter").addEventListener("change", (e) => find({ status: e.target.value, offset: 0 }));
document.getElementById("tap-prev").addEventListener("click", () => find({ offset: Math.max(0, state.find.offset - PAGE) }));
document.getElementById("tap-next").addEventListener("click", () => find({ offset: state.find.offset + PAGE }));

// A policy is gone: its row, and its selection.
function forget(id) {
  state.taps.delete(id);
  const row = document.querySelector(`#tap-list tr[data-tap-id="${id}"]`);
  if (row) row.remove();
  if (state.selected === id) {
    state.selected = null;
    clearOverlay();
    document.getElementById("history").innerHTML = "";
    showDetail();
  }
}

async function select(id) {
  state.selected = id;
  document.querySelectorAll("#tap-list tbody tr").forEach((r) => r.classList.toggle("selected", Number(r.dataset.tapId) === id));
  watch();  // the selected policy stays watched when the page moves on
  showDetail();
  await highlight(id);
  await showHistory(id);
}

// ---- the selected policy: traffic over time, delivery, capture ----------------------

// One sample per policy shown per event (about a second): cumulative counters, turned
// into rates between samples for the chart.
function record() {
  const now = Date.now() / 1000;
  for (const t of state.taps.values()) {
    if (t.packets === undefined) continue;  // not yet heard of on the stream
    const s = state.series.get(t.id) || [];
    s.push({ t: now, copied: t.packets, delivered: t.delivered });
    while (s.length && s[0].t < now - SERIES_SECONDS) s.shift();
    state.series.set(t.id, s);
  }
  for (const id of [...state.series.keys()]) if (!state.taps.has(id)) state.series.delete(id);
}

// Over 3 s: switches credit their counters in half-second steps (OVS's revalidators).
function rates(samples, key) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[Math.max(0, i - 3)], b = samples[i];
    if (a[key] === null || b[key] === null || b[key] < a[key]) continue;
    out.push({ t: b.t, v: (b[key] - a[key]) / Math.max(0.001, b.t - a.t) });
  }
  return out;
}

function drawChart(id) {
  const svg = document.getElementById("chart");
  const samples = state.series.get(id) || [];
  const copied = rates(samples, "copied"), delivered = rates(samples, "delivered");
  const top = Math.max(1, ...copied.map((p) => p.v), ...delivered.map((p) => p.v));
  const now = Date.now() / 1000;
  const line = (pts) => pts.map((p) => `${(400 * (1 - (now - p.t) / SERIES_SECONDS)).toFixed(1)},${(105 - 100 * p.v / top).toFixed(1)}`).join(" ");
  svg.innerHTML = `<polyline class="copied" points="${line(copied)}"></polyline><polyline class="delivered" points="${line(delivered)}"></polyline>`;
  document.getElementById("chart-scale").textContent = `top ${Math.round(top)}/s, last ${SERIES_SECONDS / 60} min`;
}

function showDetail() {
  const id = state.selected;
  const panel = document.getElementById("tap-detail");
  panel.hidden = id === null;
  if (id === null) return;
  const t = state.taps.get(id);
  document.getElementById("tap-detail-title").textContent = `TAP ${id}${t ? ` (${t.name})` : ""}: traffic over time`;
  drawChart(id);
  const d = document.getElementById("delivery");
  d.textContent = t && t.sent !== null && t.sent !== undefined
    ? `copies sent toward its monitor${t.pool ? "s" : ""}: ${t.sent}, delivered: ${t.delivered}` +
      (t.received !== null && t.received !== undefined ? `, received at the tool: ${t.received}, tool alerts: ${t.alerts}` : "") +
      (t.status === "degraded" ? ` — ${t.status_reason}` : "")
    : "not compiled: no delivery to show";
  document.getElementById("budget").textContent = t ? [budgetText(t), tunnelText(t)].filter(Boolean).join("; ") : "";
  if (!state.capture || state.capture.tap_id !== id) document.getElementById("capture-status").textContent = "";
}

// Where a tunnel transport sends the copies (from the state event), in words.
function tunnelText(t) {
  if (!t.collector) return "";
  const kind = t.transport === "erspan" ? `ERSPAN ${t.erspan_version === 2 ? "III (v2)" : "II (v1)"}` : t.transport.toUpperCase();
  const key = { gre: "key", erspan: "session", vxlan: "VNI", geneve: "VNI" }[t.transport];
  return `copies in ${kind} tunnels, ${key} ${t.tunnel_key}, to collector ${t.collector}; ${t.copies ?? 0} sent into the tunnel`;
}

// What a policy's copies are held to (from the state event), in words.
function budgetText(t) {
  const parts = [];
  const pool = t.pool ?? t.monitor_pool;  // the stream's name, or the listing's before the stream has spoken
  if (pool) parts.push(`spread over ${pool.join(", ")}`);
  if (t.snaplen) parts.push(`cut to ${t.snaplen} bytes`);
  if (t.sample > 1) parts.push(`1 in ${t.sample} flows`);
  if (t.rate_limit_pps) parts.push(`at most ${t.rate_limit_pps} copies/s (${t.dropped ?? 0} dropped)`);
  return parts.length ? `copy budget: ${parts.join(" · ")}; ${t.copies ?? 0} copies made` : "";
}

function showCapture(job) {
  const el = document.getElementById("capture-status");
  el.innerHTML = `capture ${job.id}: <b class="capture-state">${esc(job.state)}</b>, ` +
    `<span class="capture-count">${job.packets}</span> of ${job.count} packets` + (job.reason ? ` (${esc(job.reason)})` : "");
  if (job.packets > 0 || ["done", "stopped"].includes(job.state)) {
    const b = document.createElement("button");
    b.type = "button";
    b.id = "capture-download";
    b.textContent = "Download pcapng";
    b.addEventListener("click", () => download(job));
    el.append(" ", b);
  }
}

// The download needs the token in a header, so it is fetched and handed to the browser.
async function download(job) {
  const resp = await authorized(job.download);
  if (!resp.ok) { document.getElementById("capture-error").textContent = `download: HTTP ${resp.status}`; return; }
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = `vtap-capture-${job.id}.pcapng`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// The live view: the job's latest packets, one line each, while it runs (and once at its end).
async function showLive(job) {
  const table = document.getElementById("capture-live");
  const rows = await api(`/api/v1/captures/${job.id}/packets?last=10`);
  const t0 = rows.length ? rows[0].time : 0;
  table.querySelector("tbody").innerHTML = rows.map((p) => `<tr class="live-packet"><td>+${(p.time - t0).toFixed(3)} s</td>` +
    `<td>${esc(p.src)}</td><td>${esc(p.dst)}</td><td>${esc(p.protocol)}</td><td>${p.length}</td></tr>`).join("");
  table.hidden = rows.length === 0;
}

async function followCapture(job) {
  state.capture = job;
  showCapture(job);
  document.getElementById("capture-live").hidden = true;
  while (state.capture === job && !["done", "stopped"].includes(job.state)) {
    await new Promise((r) => setTimeout(r, 500));
    try {
      job = await api(`/api/v1/captures/${job.id}`);
      if (state.capture && state.capture.id === job.id && state.selected === job.tap_id && job.packets > 0) await showLive(job);
    } catch (err) {
      document.getElementById("capture-error").textContent = err.message;
      return;
    }
    if (state.capture && state.capture.id === job.id) { state.capture = job; if (state.selected === job.tap_id) showCapture(job); }
  }
  if (state.capture === job && state.selected === job.tap_id && job.packets > 0) await showLive(job);
}

document.getElementById("capture-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target.elements;
  const errEl = document.getElementById("capture-error");
  errEl.textContent = "";
  const body = { tap_id: state.selected, count: Number(f.count.value), duration_s: Number(f.duration_s.value), snaplen: Number(f.snaplen.value) };
  try {
    const job = await api("/api/v1/captures", { method: "POST", body: JSON.stringify(body) });
    followCapture(job);
  } catch (err) {
    const detail = err.body && err.body.detail;
    errEl.textContent = Array.isArray(detail) ? detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ") : (detail || err.message);
  }
});

// A policy's history: its audit records (who changed it, from where, and the outcome).
async function showHistory(id) {
  const records = await api(`/api/v1/audit?target=${encodeURIComponent(`tap:${id}`)}`);
  const rows = records.map((r) => `<tr><td>${esc(new Date(r.time * 1000).toISOString().slice(0, 19).replace("T", " "))}</td>` +
    `<td>${esc(r.actor)}</td><td>${esc(r.action)}</td><td>${esc(r.result)}</td><td>${esc(r.remote)}</td></tr>`).join("");
  document.getElementById("history").innerHTML = `<h3>History of TAP ${id}</h3>` +
    `<table><thead><tr><th>time (UTC)</th><th>actor</th><th>action</th><th>result</th><th>from</th></tr></thead>` +
    `<tbody>${rows}</tbody></table>`;
}

async function toggle(id) {
  const tap = await api(`/api/v1/taps/${id}`);
  const body = {};
  for (const f of [...FIELDS, "enabled"]) if (tap[f] !== null && tap[f] !== undefined) body[f] = tap[f];
  body.enabled = !tap.enabled;
  await api(`/api/v1/taps/${id}`, { method: "PUT", body: JSON.stringify(body) });
  await refreshTaps();
}

async function remove(id) {
  const tap = state.taps.get(id);
  if (!confirm(`Delete TAP ${id} (${tap ? tap.name : ""})? Its rules leave the switches.`)) return;
  await api(`/api/v1/taps/${id}`, { method: "DELETE" });
  forget(id);
  await refreshTaps();
}

// ---- the form -------------------------------------------------------------------------

const form = document.getElementById("tap-form");

function clearErrors() {
  form.querySelectorAll("[data-error-for]").forEach((e) => { e.textContent = ""; });
  form.querySelectorAll("input.invalid, select.invalid").forEach((e) => e.classList.remove("invalid"));
  document.getElementById("form-error").textContent = "";
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearErrors();
  const body = {};
  for (const f of FIELDS) {
    const v = form.elements[f].value.trim();
    if (v !== "") body[f] = f === "monitor_pool" ? v.split(",").map((m) => m.trim()) : v;
  }
  try {
    const tap = await api("/api/v1/taps", { method: "POST", body: JSON.stringify(body) });
    form.reset();
    await refreshTaps();
    if (!state.taps.has(tap.id) && !state.find.q && !state.find.status) {
      find({ offset: Math.floor((state.total - 1) / PAGE) * PAGE });  // the newest id is on the last page
    }
    await select(tap.id);
  } catch (err) {
    showErrors(err);
  }
});

function showErrors(err) {
  const detail = err.body && err.body.detail;
  if (Array.isArray(detail)) {
    for (const d of detail) {
      const field = d.loc && d.loc.length > 1 ? String(d.loc[d.loc.length - 1]) : null;
      const slot = field && form.querySelector(`[data-error-for="${field}"]`);
      const msg = String(d.msg).replace(/^Value error, /, "");
      if (slot) {
        slot.textContent = msg;
        form.elements[field].classList.add("invalid");
      } else {
        document.getElementById("form-error").textContent = (field ? `${field}: ` : "") + msg;
      }
    }
  } else {
    const msg = typeof detail === "string" ? detail : err.message;
    const field = typeof detail === "string" && detail.startsWith("name:") ? "name" : null;
    if (field) form.querySelector('[data-error-for="name"]').textContent = msg.replace(/^name: /, "");
    else document.getElementById("form-error").textContent = msg;
  }
}

// ---- live updates ---------------------------------------------------------------------
// Server-sent events read with fetch (EventSource cannot send the Authorization header).
// The stream watches the policies shown (`?ids=`): a `snapshot` of them first, then a
// `delta` a second with what moved among them and the summary of all. When the page
// changes the stream is opened again for the new ids.

function watching() {
  const ids = new Set(state.pageIds);
  if (state.selected !== null) ids.add(state.selected);
  return [...ids].sort((a, b) => a - b).join(",");
}

function watch() {
  const ids = watching();
  if (ids === state.watching) return;
  state.watching = ids;
  if (state.conn) state.conn.abort();  // `connect` opens it again with these ids
}

async function connect() {
  const conn = document.getElementById("conn");
  const mine = ++state.connects;  // a sign-in after a sign-out starts afresh: an older loop ends
  state.live = true;
  while (state.live && token() && mine === state.connects) {
    const ctrl = new AbortController();
    state.conn = ctrl;
    const ids = state.watching ?? "";
    try {
      const resp = await authorized(`/api/v1/events?ids=${ids}`, { signal: ctrl.signal });
      if (resp.status === 401) return;
      conn.textContent = "live";
      await readEvents(resp.body.getReader());
    } catch (err) {
      if (!state.live) return;
      if (ctrl.signal.aborted) continue;  // the page changed: watch its ids at once
    }
    conn.textContent = "reconnecting…";
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const lines = buf.slice(0, end).split("\n");
      buf = buf.slice(end + 2);
      const kind = (lines.find((l) => l.startsWith("event: ")) || "event: message").slice(7);
      const data = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) await onEvent(kind, JSON.parse(data));
    }
  }
}

async function onEvent(kind, e) {
  const rows = kind === "snapshot" ? e.taps : [...e.added, ...e.changed];
  for (const t of rows) update(t);
  for (const id of e.removed || []) forget(id);
  // The page again when policies came or went (or, filtered by state, changed state)
  // since it was asked for: which ones, the stream does not say beyond those shown.
  state.seen = e.summary.set_version + (state.find.status ? JSON.stringify(e.summary.by_status) : "");
  if (state.seen !== state.pageSeen) refreshPageSoon();
  showSummary(e.summary);
  record();
  if (state.selected !== null) showDetail();
  if (e.view_version !== state.viewVersion) {
    state.viewVersion = e.view_version;
    await loadTopology();
    await loadCluster();  // a new leader or member bumps the version too
  }
}

// What the stream says of a policy (all of it, or the fields that moved), on its row if shown.
function update(t) {
  const known = state.taps.get(t.id);
  if (!known && !state.pageIds.includes(t.id) && t.id !== state.selected) return;  // no longer shown
  const merged = { ...(known || {}), ...t, heard: true };
  state.taps.set(t.id, merged);
  const row = document.querySelector(`#tap-list tr[data-tap-id="${t.id}"]`);
  if (row) fillRow(row, merged);
}

function showSummary(summary) {
  const parts = Object.entries(summary.by_status).sort((a, b) => b[1] - a[1])
    .map(([status, n]) => `${n.toLocaleString("en")} ${status}`);
  document.getElementById("tap-summary").textContent =
    `${summary.total.toLocaleString("en")} in all${parts.length ? ": " + parts.join(" · ") : ""}`;
}

// In a cluster, which instance answered this page and which one leads.
async function loadCluster() {
  const c = await api("/api/v1/cluster");
  const el = document.getElementById("cluster");
  el.hidden = c.mode !== "cluster";
  if (el.hidden) return;
  el.textContent = `answered by ${c.member} (${c.role}) · leader: ${c.leader || "none"}`
    + (c.store_reachable ? "" : " · store unreachable");
  el.classList.toggle("warn", !c.leader || !c.store_reachable);
  el.title = c.members.map((m) => `${m.id} ${m.role} ${m.api}`).join("\n");
}

async function start() {
  let me;
  try {
    me = await api("/api/v1/whoami");
  } catch (err) {
    if (err.status !== 401) document.getElementById("sign-in-error").textContent = err.message;
    return;
  }
  state.role = me.role;
  document.getElementById("who-name").textContent = me.name;
  document.getElementById("who-role").textContent = me.role;
  document.getElementById("who").hidden = false;
  document.getElementById("sign-in").hidden = true;
  document.getElementById("app").hidden = false;
  document.body.classList.toggle("read-only", me.role === "viewer");
  cy.resize();  // the graph's container was hidden until now
  await Promise.all([refreshTaps(), loadTopology(), loadCluster()]);
  connect();
}

document.getElementById("sign-in").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = e.target.elements.token;
  sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  document.getElementById("sign-in-error").textContent = "";
  await start();
});
document.getElementById("sign-out").addEventListener("click", () => signOut(""));

if (token()) start(); else signOut("");
