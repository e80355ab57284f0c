// pushlog console: fills the page from the JSON API and polls it. Every
// value from the server is set with textContent or as a URL parameter,
// never as HTML (sender names are chosen by senders).
"use strict";

const POLL_MS = 3000;
const page = document.body.dataset.page;

function $(id) { return document.getElementById(id); }
function setText(id, v) { const el = $(id); if (el) el.textContent = v; }
function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(1);
  return String(v);
}
function showError(msg) {
  const el = $("error");
  if (!msg) { el.hidden = true; return; }
  el.textContent = msg;
  el.hidden = false;
}
function stamp() {
  setText("updated", "updated " + new Date().toLocaleTimeString());
  document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
}
// apiURL resolves a path against the page without the user:password a
// basic-auth URL may carry (fetch refuses URLs with credentials; the
// browser sends the ones it was given for the page by itself).
function apiURL(path) {
  return new URL(path, location.origin + location.pathname.replace(/[^/]*$/, "")).toString();
}
async function getJSON(path) {
  const r = await fetch(apiURL(path), { credentials: "same-origin", cache: "no-store" });
  let body = null;
  try { body = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new Error((body && body.error) || (r.status + " " + r.statusText));
  return body;
}
// fillTable replaces a table's body; cells are text or {text, href, cls}.
function fillTable(id, rows) {
  const tb = $(id).tBodies[0];
  tb.replaceChildren();
  for (const row of rows) {
    const tr = tb.insertRow();
    for (const c of row) {
      const td = tr.insertCell();
      const cell = (c !== null && typeof c === "object") ? c : { text: c };
      if (typeof cell.text === "number") td.className = "num";
      if (cell.cls) td.classList.add(cell.cls);
      if (cell.href) {
        const a = document.createElement("a");
        a.href = cell.href;
        a.textContent = fmt(cell.text);
        td.appendChild(a);
      } else {
        td.textContent = fmt(cell.text);
      }
    }
  }
}
function healthText(id, h) {
  const el = $(id);
  el.classList.remove("ok", "bad", "muted");
  if (!h.configured) { el.textContent = "off"; el.classList.add("muted"); return; }
  el.textContent = h.ok ? "ok" : "down";
  el.classList.add(h.ok ? "ok" : "bad");
  if (h.error) el.title = h.error;
}
function ranges(ps) {
  if (!ps || !ps.length) return "-";
  const out = [];
  for (let i = 0; i < ps.length;) {
    let j = i;
    while (j + 1 < ps.length && ps[j + 1] === ps[j] + 1) j++;
    out.push(i === j ? String(ps[i]) : ps[i] + "-" + ps[j]);
    i = j + 1;
  }
  return out.join(",");
}

// --- overview ---------------------------------------------------------------

async function overview() {
  const ov = await getJSON("api/overview");
  setText("version", ov.version || "");
  healthText("kafka-health", ov.kafka);
  if (ov.kafka.error) showError("Kafka: " + ov.kafka.error); else showError("");
  healthText("clickhouse-health", ov.clickhouse);
  const hint = $("clickhouse-hint");
  hint.hidden = !ov.clickhouse.hint;
  hint.textContent = ov.clickhouse.hint || "";
  const nodes = ov.nodes || [];
  setText("node-count", nodes.length);
  setText("owned-partitions", (ov.partition_owners || []).length);
  setText("connections", ov.connections);
  setText("pending", ov.pending_messages);
  fillTable("nodes", nodes.map(n => [n.node_id, n.host, n.link_addr || "-", n.metrics_addr || "-", ranges(n.partitions)]));
  fillTable("groups", (ov.groups || []).map(g => [g.role, g.group, g.state, g.members, g.lag, g.head_lag ?? "-"]));
  const pr = ov.process || {};
  setText("oldest-pending", pr.oldest_pending_age_seconds == null ? "–" : pr.oldest_pending_age_seconds.toFixed(0));
  const delay = (pr.projector_delay_seconds || {}).analytics;
  setText("analytics-delay", delay == null ? "–" : delay.toFixed(1));
  const br = Object.keys(ov.breakers || {}).sort();
  fillTable("breakers", br.map(k => [k, { text: ov.breakers[k], cls: ov.breakers[k] === "closed" ? "ok" : "bad" }]));
  fillTable("processes", (ov.node_metrics || []).map(m => [m.url, m.node_id || "-",
    m.connections ?? "-", m.pending_messages ?? "-", m.owned_partitions ?? "-", m.unacked ?? "-",
    { text: m.error || "", cls: m.error ? "bad" : "" }]));
  fillTable("owners", (ov.partition_owners || []).map(o => [o.partition, o.node_id, o.link_addr || "-"]));
}

// --- live -------------------------------------------------------------------

const charts = {};
function drawChart(name, t, chart) {
  const el = $("chart-" + name);
  if (!el || typeof uPlot === "undefined") return;
  const labels = chart.series.map(s => s.label);
  const key = labels.join("\u0000");
  const data = [t, ...chart.series.map(s => s.values)];
  const c = charts[name];
  if (c && c.key === key) { c.plot.setData(data); return; }
  if (c) c.plot.destroy();
  el.replaceChildren();
  const palette = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#65a30d", "#db2777", "#4b5563", "#ca8a04"];
  const opts = {
    width: Math.max(el.clientWidth - 10, 400), height: 240,
    series: [{}, ...labels.map((l, i) => ({ label: l, stroke: palette[i % palette.length], width: 1.5, spanGaps: false,
      value: (u, v) => v === null ? "–" : v.toFixed(2) + (chart.unit && chart.unit !== "/s" ? " " + chart.unit : "") }))],
    axes: [{}, { label: chart.unit || "", size: 60 }],
    scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
  };
  charts[name] = { key, plot: new uPlot(opts, data, el) };
}
async function live() {
  const lv = await getJSON("api/live");
  setText("interval", lv.interval_seconds);
  for (const name of ["pushes", "deliveries", "latency", "gauges"]) {
    if (lv.charts[name]) drawChart(name, lv.t, lv.charts[name]);
  }
  const d = (lv.totals && lv.totals.deliveries) || {};
  setText("total-deliveries", fmt(d.deliveries));
  setText("total-acks", fmt(d.acks));
  setText("total-nacks", fmt(d.nacks));
  setText("gauge-connections", fmt(lv.gauges.connections));
  setText("gauge-pending", fmt(lv.gauges.pending));
  const p = (lv.totals && lv.totals.pushes) || {};
  fillTable("push-totals", Object.keys(p).sort().map(k => [k, p[k]]));
  showError("");
}

// --- analytics and sender ------------------------------------------------------

function params() { return new URLSearchParams(location.search); }
function senderHref(sender, range) {
  const q = new URLSearchParams({ sender: sender, range: range });
  return "sender?" + q.toString();
}
async function analytics() {
  const q = params();
  const range = q.get("range") || "1h";
  const sender = page === "sender" ? (q.get("sender") || "") : "";
  const sel = $("range");
  if (![...sel.options].some(o => o.value === range)) sel.add(new Option(range, range));
  sel.value = range;
  if (page === "sender") {
    setText("sender-name", sender);
    $("sender-input").value = sender;
    $("back").href = "analytics?" + new URLSearchParams({ range }).toString();
  }
  const api = new URLSearchParams({ range });
  if (sender) api.set("sender", sender);
  const an = await getJSON("api/analytics?" + api.toString());
  const hint = $("hint");
  if (!an.configured) {
    hint.textContent = an.hint;
    hint.hidden = false;
    $("analytics").hidden = true;
    showError("");
    return;
  }
  hint.hidden = true;
  const s = an.summary || {};
  setText("accepted", fmt(s.accepted));
  setText("delivered", fmt(s.delivered));
  setText("acked", fmt(s.acked));
  setText("acked-pct", s.accepted ? fmt(s.acked_pct) + " %" : "–");
  setText("dropped", fmt(s.dropped));
  setText("expired", fmt(s.expired));
  setText("p50", fmt(s.p50_ms));
  setText("p95", fmt(s.p95_ms));
  setText("p99", fmt(s.p99_ms));
  const box = $("tables");
  box.replaceChildren();
  for (const t of an.tables || []) {
    const h = document.createElement("h2");
    h.textContent = t.title;
    box.appendChild(h);
    if (t.error) {
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = t.error;
      box.appendChild(p);
      continue;
    }
    const table = document.createElement("table");
    table.id = "table-" + t.name;
    const hr = table.createTHead().insertRow();
    for (const c of t.columns) { const th = document.createElement("th"); th.textContent = c; hr.appendChild(th); }
    table.createTBody();
    box.appendChild(table);
    const si = t.columns.indexOf("sender");
    fillTable(table.id, t.rows.map(r => r.map((v, i) => {
      const n = v !== "" && v !== "-" && !Number.isNaN(Number(v)) ? Number(v) : v;
      if (i === si && page === "analytics" && v !== "(all)" && v !== "(none)") return { text: v, href: senderHref(v, range) };
      return n;
    })));
    if (!t.rows.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "(no rows)";
      box.appendChild(p);
    }
  }
  showError("");
}

// --- polling ------------------------------------------------------------------

const pollers = { overview, live, analytics, sender: analytics };
const ANALYTICS_POLL_MS = 15000; // the expensive queries: slower, and cached server-side
async function loop() {
  try {
    await pollers[page]();
    stamp();
  } catch (e) {
    showError(String(e.message || e));
  }
  setTimeout(loop, page === "analytics" || page === "sender" ? ANALYTICS_POLL_MS : POLL_MS);
}
for (const a of document.querySelectorAll("[data-nav]")) {
  if (a.dataset.nav === page || (page === "sender" && a.dataset.nav === "analytics")) a.classList.add("active");
}
loop();
const form = $("range-form");
if (form) {
  const go = ev => {
    if (ev) ev.preventDefault();
    const q = new URLSearchParams({ range: $("range").value });
    const s = $("sender-input") ? $("sender-input").value.trim() : "";
    if (s) { q.set("sender", s); location.href = "sender?" + q.toString(); } else { location.href = "analytics?" + q.toString(); }
  };
  form.addEventListener("submit", go);
  $("range").addEventListener("change", go);
}
