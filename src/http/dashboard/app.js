// The Switchyard dashboard: a client of the operations JSON endpoints,
// nothing else. Refreshes every 10 s.
"use strict";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const $ = (id) => document.getElementById(id);
let chosen = new URLSearchParams(location.search).get("app");

// A node with [server] admin_reads_need_token wants a bearer token for
// reads too: open the dashboard as /#token=TOKEN (a fragment never leaves
// the browser); it is kept for this tab only.
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) {
  sessionStorage.setItem("switchyard-token", fromHash);
  history.replaceState(null, "", location.pathname + location.search);
}

async function get(path) {
  const token = sessionStorage.getItem("switchyard-token");
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { cache: "no-store", headers });
  if (r.status === 401) throw new Error(path + ": this node needs a token for reads; open the dashboard as /#token=TOKEN");
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}

function fill(tableId, rows) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows);
}

function sum(obj) {
  let n = 0;
  for (const v of Object.values(obj || {})) n += typeof v === "number" ? v : sum(v);
  return n;
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  return s < 1 ? "now" : s + " s ago";
}

function renderApps(apps, decisions) {
  const names = apps.map((a) => a.name);
  if (!chosen || !names.includes(chosen)) {
    const busiest = Object.entries(decisions.lastHour || {}).sort((a, b) => sum(b[1]) - sum(a[1]))[0];
    chosen = busiest ? busiest[0] : names[0];
  }
  fill("apps", apps.map((a) => el("tr", { "data-app": a.name },
    el("td", {}, a.name),
    el("td", { class: a.status === "ok" ? "good" : a.status === "elsewhere" ? "muted" : "bad" }, a.status),
    el("td", {}, a.version == null ? "" : a.version),
    el("td", { class: "num" }, sum((decisions.lastMinute || {})[a.name])),
    el("td", { class: "bad" }, a.last_error ? a.last_error.at + ": " + a.last_error.message : ""))));
  $("explain-app").textContent = chosen || "";
  const pick = $("app-pick");
  pick.replaceChildren(...names.map((n) => { const o = el("option", { value: n }, n); if (n === chosen) o.selected = true; return o; }));
}

function renderChart(series) {
  const svg = $("chart-svg");
  const ns = "http://www.w3.org/2000/svg";
  const W = 900, H = 260, pad = 4;
  const providers = series.providers;
  const buckets = series.buckets;
  const max = Math.max(1, ...buckets.map((b) => sum(b.providers)));
  const bw = (W - 2 * pad) / buckets.length;
  const kids = [];
  buckets.forEach((b, i) => {
    let y = H - pad;
    providers.forEach((p, j) => {
      const n = b.providers[p] || 0;
      if (!n) return;
      const h = (n / max) * (H - 2 * pad);
      y -= h;
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", (pad + i * bw).toFixed(2));
      r.setAttribute("y", y.toFixed(2));
      r.setAttribute("width", Math.max(bw - 0.5, 0.5).toFixed(2));
      r.setAttribute("height", h.toFixed(2));
      r.setAttribute("fill", COLORS[j % COLORS.length]);
      r.setAttribute("data-provider", p);
      const t = document.createElementNS(ns, "title");
      t.textContent = p + ": " + n + " (" + new Date(b.stop).toISOString() + ")";
      r.append(t);
      kids.push(r);
    });
  });
  const label = (x, y, anchor, s) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor);
    t.setAttribute("class", "axis"); t.textContent = s; return t;
  };
  kids.push(label(pad + 2, 14, "start", max + " per 10 s"), label(pad + 2, H - 8, "start", "−1 h"), label(W - pad - 2, H - 8, "end", "now"));
  svg.replaceChildren(...kids);
  $("legend").replaceChildren(...providers.map((p, j) => el("li", { style: "--c:" + COLORS[j % COLORS.length], "data-provider": p }, p)));
}

function renderReasons(d) {
  const reasons = new Set();
  const by = (w) => { const out = {}; for (const r of Object.values(w || {})) for (const [k, n] of Object.entries(r)) { reasons.add(k); out[k] = (out[k] || 0) + n; } return out; };
  const m = by(d.lastMinute), h = by(d.lastHour);
  fill("reasons", [...reasons].sort().map((r) => el("tr", {}, el("td", {}, r), el("td", { class: "num" }, m[r] || 0), el("td", { class: "num" }, h[r] || 0))));
}

function renderNodes(n) {
  $("fleet").textContent = "fleet " + n.fleet + " · node " + n.self;
  fill("nodes", n.nodes.map((x) => el("tr", { class: x.drift ? "drift" : "", "data-node": x.node },
    el("td", {}, x.node),
    el("td", {}, x.ip || ""),
    el("td", { class: x.live ? "good" : "bad" }, x.live ? "yes" : "no"),
    el("td", {}, ago(x.lastSeen)),
    el("td", {}, ago(x.lastPush)),
    el("td", {}, (x.config_hash || "") + (x.config_drift ? " (drift)" : "")),
    el("td", {}, x.apps.map((a) => a.name + "@" + a.version.slice(0, 8) + (a.drift ? " (drift)" : "")).join(", ")))));
  const me = n.nodes.find((x) => x.node === n.self);
  const sonar = (me && me.snapshots && me.snapshots.sonar) || {};
  fill("sonar", Object.entries(sonar).map(([p, v]) => el("tr", {}, el("td", {}, p), el("td", { class: v === "up" ? "good" : "bad" }, v))));
}

function renderFeeds(f) {
  fill("feeds", Object.entries(f).map(([name, s]) => el("tr", { "data-feed": name },
    el("td", {}, name),
    el("td", {}, s.last_ok_secs == null ? "never" : s.last_ok_secs + " s ago"),
    el("td", { class: s.stale ? "bad" : "good" }, s.stale ? "stale" + (s.last_error ? ": " + s.last_error : "") : "fresh"))));
}

// One decision explained (GET /api/apps/{app}/explain), as label/value rows.
function renderExplain(r) {
  const located = (l) => l ? l.ip + ": " + [l.geo.market, l.geo.country, l.geo.region, l.geo.state, l.geo.asn ? "AS" + l.geo.asn : ""].filter(Boolean).join(" ") + " (network " + l.source.network + ")" : "(no address)";
  const d = r.decision;
  const rows = [
    ["app", r.app + " (version " + r.version + ")"],
    ["client", located(r.request.client)],
    ["resolver", r.request.resolver ? located(r.request.resolver) : "same as client"],
    ...r.reads.map((x, i) => [i ? "" : "reads", (i + 1) + ". " + x.source + " = " + JSON.stringify(x.value)]),
    ["decision", (d.provider || "(none)") + " → " + d.answers.map((a) => a.type + " " + a.value).join(", ") + " (TTL " + d.ttl + ", reason " + JSON.stringify(d.reason) + ")"],
    ["how", r.how.kind + (r.how.error ? " (" + r.how.error + ": " + r.how.message + ")" : "")],
    ["memoisable", r.memo.memoisable ? "yes" : "no: " + r.memo.rule],
    ["memo hit", r.memo.would_hit ? "yes" : "no"],
    ["ECS scope", r.ecs_scope == null ? "(no client subnet)" : "/" + r.ecs_scope],
    ["data", "snapshot " + r.data.snapshot],
    ["time", (r.time_us / 1000).toFixed(3) + " ms"],
  ];
  fill("explain", rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
}

$("explain-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(e.target)) if (v !== "" || k === "qtype") q.append(k, v);
  try {
    renderExplain(await get("/api/apps/" + encodeURIComponent(chosen) + "/explain?" + q));
  } catch (err) {
    fill("explain", [el("tr", {}, el("td", { class: "bad" }, String(err)))]);
  }
});

// A candidate version deciding beside the chosen app (POST
// /api/apps/{app}/shadow): what share of decisions it changes, and how.
function renderShadow(s) {
  $("shadow-section").hidden = !s.active;
  if (!s.active) return;
  const d = s.diff || { providers: { rows: [] }, failures: { rows: [] }, examples: [] };
  $("shadow-app").textContent = s.app;
  $("shadow-state").textContent = s.percent + " % of decisions · " + s.decided + " compared · " +
    (100 * (d.changed_share || 0)).toFixed(1) + " % changed · " + s.dropped + " dropped";
  fill("shadow-moves", d.providers.rows.map((m) => el("tr", { class: m.from === m.to ? "" : "drift" },
    el("td", {}, m.from), el("td", {}, m.to), el("td", { class: "num" }, m.count))));
  fill("shadow-failures", d.failures.rows.map((f) => el("tr", {},
    el("td", { class: "bad" }, f.kind), el("td", {}, f.message), el("td", { class: "num" }, f.count))));
  fill("shadow-examples", d.examples.map((e) => el("tr", {},
    el("td", {}, e.id), el("td", {}, e.request.market), el("td", {}, e.request.country),
    el("td", {}, e.from.provider), el("td", { class: e.failure ? "bad" : "" }, e.to.provider + (e.failure ? " (" + e.failure.kind + ")" : "")))));
}

async function refresh() {
  try {
    const [apps, decisions, nodes, feeds] = await Promise.all([
      get("/api/applications"), get("/api/decisions"), get("/api/nodes"), get("/api/feeds")]);
    renderApps(apps.applications, decisions);
    renderNodes(nodes);
    renderFeeds(feeds);
    if (chosen) {
      const enc = encodeURIComponent(chosen);
      const [series, d, shadow] = await Promise.all([get("/api/decisions/" + enc + "/buckets"), get("/api/decisions/" + enc),
        get("/api/apps/" + enc + "/shadow").catch(() => ({ active: false }))]);
      renderChart(series);
      renderReasons(d);
      renderShadow(shadow);
    }
    $("error").textContent = "";
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.setAttribute("data-loaded", "1");
  } catch (e) {
    $("error").textContent = String(e);
  }
}

$("app-pick").addEventListener("change", (e) => { chosen = e.target.value; refresh(); });
refresh();
setInterval(refresh, 10000);
