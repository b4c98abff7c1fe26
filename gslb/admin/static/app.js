// Live status page: renders GET /status, refreshes on every server-sent event from /v1/events
// and polls once a second so answer shares move. DOM is built with createElement only (event
// details are node data, never parsed as HTML).
import { LAND, WATER } from "./world.js";

const POLL_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
const MAP_TOP = 84; // latitude at the top edge; the map stops at 58°S (viewBox height 142)
const STATES = ["up", "down", "unknown"];

let current = null;
let fetching = false;
let again = false;
let lastOk = 0;
let sseOpen = false;

// --- tiny DOM helpers ---------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const c of children.flat()) if (c != null) el.append(c);
  return el;
}
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  for (const c of children.flat()) if (c != null) el.append(c);
  return el;
}
function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}
const $ = (id) => document.getElementById(id);
const project = ([lon, lat]) => [lon + 180, MAP_TOP - lat];
const stateOf = (v) => (STATES.includes(v) ? v : "unknown");

function ago(t) {
  if (!t) return "";
  const d = Math.max(0, Date.now() / 1000 - t);
  if (d < 60) return `${Math.round(d)}s ago`;
  if (d < 3600) return `${Math.round(d / 60)}m ago`;
  if (d < 86400) return `${Math.round(d / 3600)}h ago`;
  return `${Math.round(d / 86400)}d ago`;
}
function clock(t) {
  return new Date(t * 1000).toISOString().slice(11, 19) + "Z";
}
function pct(n, total) {
  return total > 0 ? (100 * n) / total : 0;
}

// --- map ----------------------------------------------------------------------------------
function ringPath(ring) {
  if (!ring.length) return "";
  return ring.map((p, i) => (i ? "L" : "M") + project(p).map((v) => v.toFixed(1)).join(" ")).join("") + "Z";
}

function drawBaseMap() {
  const map = $("map");
  const defs = s("defs", {},
    s("pattern", { id: "stripes", patternUnits: "userSpaceOnUse", width: 2.4, height: 2.4,
                   patternTransform: "rotate(45)" },
      s("rect", { width: 2.4, height: 2.4, class: "stripe-bg" }),
      s("rect", { width: 1.2, height: 2.4, class: "stripe-fg" })),
    s("radialGradient", { id: "halo" },
      s("stop", { offset: "0%", class: "halo-in" }),
      s("stop", { offset: "100%", class: "halo-out" })));
  const grid = s("g", { class: "graticule" });
  for (let lon = -150; lon <= 150; lon += 30) grid.append(s("line", { x1: lon + 180, x2: lon + 180, y1: 0, y2: 142 }));
  for (let lat = -30; lat <= 60; lat += 30) grid.append(s("line", { x1: 0, x2: 360, y1: MAP_TOP - lat, y2: MAP_TOP - lat }));
  grid.append(s("line", { x1: 0, x2: 360, y1: MAP_TOP, y2: MAP_TOP, class: "equator" }));
  const land = s("g", { class: "land" });
  for (const [name, ring] of Object.entries(LAND)) land.append(s("path", { d: ringPath(ring), "data-land": name }));
  const water = s("g", { class: "water" });
  for (const ring of Object.values(WATER)) if (ring.length) water.append(s("path", { d: ringPath(ring) }));
  map.replaceChildren(defs, s("rect", { class: "sea", width: 360, height: 142 }), grid, land, water,
                      s("g", { id: "map-links" }), s("g", { id: "map-dcs" }));
}

function drawMarkers(st) {
  const layer = $("map-dcs");
  const links = $("map-links");
  const total = st.answers?.total || 0;
  const by = st.answers?.by_datacenter || {};
  const dcs = st.datacenters || [];
  const nodes = [];
  // Failover arcs: from every down datacenter to the healthy one taking the most answers.
  const best = dcs.filter((d) => d.state === "up" && Number.isFinite(d.longitude) && Number.isFinite(d.latitude)).sort((a, b) => (by[b.name] || 0) - (by[a.name] || 0))[0];
  const arcs = [];
  for (const dc of dcs) {
    if (!Number.isFinite(dc.longitude) || !Number.isFinite(dc.latitude)) continue; // list only
    const [x, y] = project([dc.longitude, dc.latitude]);
    const state = stateOf(dc.state);
    const share = pct(by[dc.name] || 0, total);
    const g = s("g", { class: `dc ${state}${dc.override ? " override" : ""}`, "data-dc": dc.name,
                       "data-state": state, "data-override": dc.override ? dc.override.mode : null,
                       transform: `translate(${x.toFixed(1)} ${y.toFixed(1)})` });
    if (share > 0) g.append(s("circle", { class: "halo", r: (3 + Math.sqrt(share) * 1.6).toFixed(2) }));
    if (state === "down") g.append(s("circle", { class: "pulse", r: 3.2 }));
    g.append(s("circle", { class: "dot", r: 2.6 }));
    if (dc.override) g.append(s("circle", { class: "ring", r: 3.8 }));
    const label = s("text", { x: 4.8, y: 1.6, class: "label" }, dc.name);
    const sub = s("text", { x: 4.8, y: 5.6, class: "sublabel" }, share ? `${share.toFixed(0)}% of answers` : state);
    g.append(label, sub, s("title", {}, `${dc.name}: ${state}${dc.reason ? " — " + dc.reason : ""}`));
    nodes.push(g);
    if (state === "down" && best && best.name !== dc.name) {
      const [bx, by2] = project([best.longitude, best.latitude]);
      const mx = (x + bx) / 2;
      const my = Math.min(y, by2) - Math.abs(bx - x) * 0.18 - 4;
      arcs.push(s("path", { class: "arc", d: `M${x.toFixed(1)} ${y.toFixed(1)}Q${mx.toFixed(1)} ${my.toFixed(1)} ${bx.toFixed(1)} ${by2.toFixed(1)}` }));
    }
  }
  links.replaceChildren(...arcs);
  layer.replaceChildren(...nodes);
  fitLabels();
}

// Labels sit right of their marker unless that runs off the map's east edge.
function fitLabels() {
  for (const g of document.querySelectorAll("#map-dcs .dc")) {
    const x = Number(/translate\(([-\d.]+)/.exec(g.getAttribute("transform"))?.[1] || 0);
    const texts = [...g.querySelectorAll("text")];
    for (const t of texts) { t.setAttribute("x", 4.8); t.removeAttribute("text-anchor"); }
    const right = Math.max(...texts.map((t) => { const b = t.getBBox(); return b.x + b.width; }));
    if (x + right > 358) for (const t of texts) { t.setAttribute("x", -4.8); t.setAttribute("text-anchor", "end"); }
  }
}

// --- panels -------------------------------------------------------------------------------
function renderHeader(st) {
  const n = st.node || {};
  $("node-name").textContent = n.name || "";
  document.title = `gslb · ${n.name || "status"}`;
  const bits = [`v${n.version || "?"}`, `config ${n.config_version || "?"}`];
  if (n.loaded_at) bits.push(`loaded ${ago(n.loaded_at)}`);
  bits.push(`${n.reloads || 0} reloads`);
  if (n.reload_failures) bits.push(`${n.reload_failures} failed`);
  if (n.started_at) bits.push(`up since ${new Date(n.started_at * 1000).toISOString().slice(0, 16).replace("T", " ")}Z`);
  $("node-meta").textContent = bits.join(" · ");
  const dcs = st.datacenters || [];
  const counts = Object.fromEntries(STATES.map((k) => [k, dcs.filter((d) => stateOf(d.state) === k).length]));
  $("summary").replaceChildren(...STATES.map((k) => h("span", { class: `pill ${k}`, "data-count": k }, `${counts[k]} ${k}`)));
  const banner = $("banner");
  if (n.last_reload_error) {
    banner.hidden = false;
    banner.replaceChildren(h("strong", {}, "Last reload failed: "), n.last_reload_error);
  } else {
    banner.hidden = true;
  }
  $("reload").hidden = false;
}

function renderDcs(st) {
  const dcs = st.datacenters || [];
  $("dc-count").textContent = `${dcs.length} datacenters`;
  $("dcs").replaceChildren(...dcs.map((dc) => {
    const state = stateOf(dc.state);
    const regions = Object.entries(dc.regions || {});
    const ov = dc.override;
    const head = h("div", { class: "dc-head" },
      h("span", { class: "dc-dot" }),
      h("span", { class: "dc-name" }, dc.name),
      h("span", { class: `pill ${state}` }, state),
      ov ? h("span", { class: "pill override", title: ov.reason || "" }, `override: ${ov.mode}`) : null);
    // What its regional proxy reports: requests/s against capacity (spillover weighs headroom).
    const load = dc.load == null ? "" : ` · load ${Math.round(dc.load)}${dc.capacity ? "/" + Math.round(dc.capacity) : ""} req/s`;
    const detail = h("div", { class: "dc-detail muted", "data-load": dc.load == null ? null : String(dc.load) },
      `${dc.region ? "region " + dc.region : ""}${dc.since ? ` · ${state} since ${clock(dc.since)}` : ""}${load}`);
    const reason = dc.reason || ov?.reason ? h("div", { class: "dc-reason" }, ov?.reason ? `${dc.reason || ""}${dc.reason ? " · " : ""}${ov.reason}` : dc.reason) : null;
    const upVotes = regions.filter(([, v]) => v === "up").length;
    const votes = h("div", { class: "votes" }, regions.map(([r, v]) =>
      h("span", { class: `vote ${stateOf(v)}`, title: `${r} sees ${dc.name} ${v}` })),
      regions.length ? h("span", { class: "votes-text muted" }, `${upVotes}/${regions.length} regions see it up`) : null);
    const actions = st.demo ? h("div", { class: "actions" },
      h("button", { class: "btn danger", type: "button", "data-action": "fail", "data-target": dc.name,
                    disabled: state === "down", onclick: () => demo("fail", dc.name) }, "Fail"),
      h("button", { class: "btn ok", type: "button", "data-action": "recover", "data-target": dc.name,
                    disabled: state === "up" && !ov, onclick: () => demo("recover", dc.name) }, "Recover")) : null;
    return h("li", { class: `dc-item ${state}${ov ? " override" : ""}`, "data-dc": dc.name, "data-state": state },
      h("div", { class: "dc-main" }, head, detail, reason, votes), actions);
  }));
}

// Long names may wrap only after a hyphen ("ap-" / "northeast"), never mid-word.
function breakable(name) {
  const parts = String(name).split("-");
  return parts.flatMap((p, i) => (i < parts.length - 1 ? [p + "-", h("wbr")] : [p]));
}

const CELL_TEXT = { up: "up", down: "down", unknown: "?", none: "–" };

function renderMatrix(st) {
  const dcs = st.datacenters || [];
  const regions = st.regions || [];
  const headRow = h("tr", {}, h("th", { class: "corner", title: "probe region (rows) sees datacenter (columns)" }, "from ↓"),
    dcs.map((d) => h("th", { scope: "col" }, breakable(d.name))));
  const rows = regions.map((r) => h("tr", {}, h("th", { scope: "row" }, r),
    dcs.map((d) => {
      const v = (d.regions || {})[r];
      const k = v == null ? "none" : stateOf(v);
      return h("td", { class: `cell ${k}`, title: `${r} sees ${d.name}: ${v ?? "no report"}` }, CELL_TEXT[k]);
    })));
  $("matrix").replaceChildren(h("thead", {}, headRow), h("tbody", {}, rows));
}

function renderAnswers(st) {
  const a = st.answers || {};
  const total = a.total || 0;
  const byDc = Object.fromEntries((st.datacenters || []).map((d) => [d.name, d]));
  $("answers-window").textContent = `${total.toLocaleString()} answers · last ${a.window_seconds || "?"}s`;
  const entries = Object.entries(a.by_datacenter || {}).sort((x, y) => y[1] - x[1]);
  if (!entries.length) {
    $("answers").replaceChildren(h("p", { class: "muted empty" }, "No steered answers in this window."));
    return;
  }
  $("answers").replaceChildren(...entries.map(([name, n]) => {
    const p = pct(n, total);
    const fill = h("div", { class: `bar-fill ${stateOf(byDc[name]?.state)}` });
    fill.style.width = `${p.toFixed(1)}%`;
    return h("div", { class: "bar", "data-answers": name },
      h("div", { class: "bar-label" }, h("span", {}, name), h("span", { class: "muted" }, `${n.toLocaleString()} · ${p.toFixed(1)}%`)),
      h("div", { class: "bar-track" }, fill));
  }));
}

function renderConfig(st) {
  const zones = (st.zones || []).map((z) => h("li", {}, h("code", {}, z.origin), h("span", { class: "muted" }, ` serial ${z.serial}`)));
  // A slow start or drain in progress: "eu-west drain 40%" (the datacenter's current share).
  const ramp = (sv) => Object.entries(sv.transitions || {}).map(([dc, t]) => h("span",
    { class: "tag ramp", title: `${t.kind} ${Math.round(t.progress * 100)}% done` },
    `${dc} ${t.kind === "drain" ? "drain" : "slow start"} ${Math.round(t.share * 100)}%`));
  const services = (st.services || []).map((sv) => h("li", {}, h("code", {}, sv.name),
    h("span", { class: "tag" }, sv.policy), h("span", { class: "muted" }, ` ttl ${sv.ttl}s`),
    ...ramp(sv)));
  const n = st.node || {};
  const gen = n.generation || {};
  const workers = (n.workers || []).length;
  const rows = [
    h("div", { class: "kv" }, h("span", { class: "muted" }, "file"), h("code", {}, n.config_path || "?")),
    h("div", { class: "kv", "data-generation": gen.label || "" }, h("span", { class: "muted" }, "generation"),
      h("code", {}, gen.label || "?"), workers ? h("span", { class: "muted" }, ` · ${workers} workers`) : null),
  ];
  const cl = st.cluster;
  if (cl) {
    rows.push(h("div", { class: "kv" }, h("span", { class: "muted" }, "etcd"),
      h("span", { class: `pill small ${cl.stale ? "down" : "up"}` }, cl.stale ? "stale" : "in sync"),
      cl.rejected ? h("span", { class: "muted" }, ` · generation ${cl.rejected.number} rejected here`) : null));
    rows.push(h("h3", {}, `Nodes (${(cl.nodes || []).length})`), h("ul", { class: "plain", id: "nodes" },
      (cl.nodes || []).map((node) => h("li", { "data-node": node.name || "" },
        h("code", {}, node.name || "?"),
        h("span", { class: "muted" }, ` generation ${node.generation?.label || "?"}`),
        node.error ? h("span", { class: "pill small down" }, "unreachable")
          : h("span", { class: `pill small ${node.stale ? "down" : "up"}` }, node.stale ? "stale" : "in sync")))));
  }
  $("config").replaceChildren(
    ...rows,
    h("h3", {}, `Services (${services.length})`), h("ul", { class: "plain" }, services),
    h("h3", {}, `Zones (${zones.length})`), h("ul", { class: "plain" }, zones));
}

function renderEvents(st) {
  const events = [...(st.events || [])].sort((a, b) => (b.time || 0) - (a.time || 0)).slice(0, 60);
  if (!events.length) {
    $("events").replaceChildren(h("li", { class: "muted empty" }, "Nothing has happened yet."));
    return;
  }
  $("events").replaceChildren(...events.map((e) => {
    const change = e.from || e.to ? h("span", { class: "change" },
      e.from ? h("span", { class: `pill small ${stateOf(e.from)}` }, e.from) : null,
      e.from && e.to ? " → " : null,
      e.to ? h("span", { class: `pill small ${stateOf(e.to)}` }, e.to) : null) : null;
    return h("li", { class: `event ${e.kind || ""}`, "data-kind": e.kind || "" },
      h("time", { title: e.time ? new Date(e.time * 1000).toISOString() : "" }, e.time ? clock(e.time) : ""),
      h("span", { class: `kind ${e.kind || ""}` }, e.kind || "event"),
      h("span", { class: "what" },
        e.target ? h("strong", {}, e.target) : null,
        e.region ? h("span", { class: "muted" }, ` seen from ${e.region}`) : null,
        change, e.detail ? h("span", { class: "detail" }, e.detail) : null),
      h("span", { class: "ago muted" }, ago(e.time)));
  }));
}

// Each panel redraws only when its own input changed, so a button under the pointer is not
// replaced while the operator clicks it.
const drawn = {};
function panel(name, input, draw, st) {
  const key = JSON.stringify(input);
  if (drawn[name] === key) return;
  drawn[name] = key;
  draw(st);
}

function render(st) {
  current = st;
  const dcs = st.datacenters || [];
  const shares = roundedShares(st);
  panel("header", [st.node, dcs.map((d) => d.state)], renderHeader, st);
  panel("map", [dcs, shares], drawMarkers, st);
  panel("dcs", [dcs, st.demo], renderDcs, st);
  panel("matrix", [dcs.map((d) => [d.name, d.regions]), st.regions], renderMatrix, st);
  panel("answers", [st.answers, dcs.map((d) => d.state)], renderAnswers, st);
  panel("config", [st.zones, st.services, st.node?.config_path, st.node?.generation,
    (st.node?.workers || []).length, st.cluster?.stale, st.cluster?.nodes, st.cluster?.rejected], renderConfig, st);
  panel("events", [st.events, Math.floor(Date.now() / 10000)], renderEvents, st);
}

function roundedShares(st) {
  const total = st.answers?.total || 0;
  return Object.entries(st.answers?.by_datacenter || {}).map(([k, v]) => [k, Math.round(pct(v, total))]);
}

// --- data flow ----------------------------------------------------------------------------
async function refresh() {
  if (fetching) { again = true; return; }
  fetching = true;
  try {
    const r = await fetch("/status", { cache: "no-store", headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    render(await r.json());
    lastOk = Date.now();
  } catch (err) {
    console.warn("status fetch failed", err);
  } finally {
    fetching = false;
    setLive();
    if (again) { again = false; refresh(); }
  }
}

function setLive() {
  const fresh = Date.now() - lastOk < 5000;
  const mode = !fresh ? "offline" : sseOpen ? "live" : "polling";
  const el = $("live");
  el.dataset.live = mode;
  $("live-text").textContent = mode === "offline" ? "offline" : mode === "live" ? "live" : "polling";
  el.title = lastOk ? `updated ${new Date(lastOk).toLocaleTimeString()}` : "no data yet";
}

function connectEvents() {
  if (!window.EventSource) return;
  const es = new EventSource("/v1/events");
  es.onopen = () => { sseOpen = true; setLive(); refresh(); };
  es.onmessage = () => refresh(); // every event: fetch the new status now
  es.onerror = () => { sseOpen = false; setLive(); }; // EventSource retries by itself
}

async function post(url) {
  const r = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
  let body = null;
  try { body = await r.json(); } catch { /* not JSON */ }
  return { ok: r.ok, status: r.status, body };
}

async function demo(action, dc) {
  const r = await post(`/v1/demo/${action}/${encodeURIComponent(dc)}`);
  if (!r.ok) toast(`${action} ${dc} failed: ${r.body?.error || "HTTP " + r.status}`, true);
  else toast(`${action === "fail" ? "Failing" : "Recovering"} ${dc}…`);
  refresh();
}

async function reload() {
  const r = await post("/v1/reload");
  if (r.ok) toast("Configuration reloaded");
  else toast((r.body?.errors || [r.body?.error || `HTTP ${r.status}`]).join("\n"), true);
  refresh();
}

let toastTimer = 0;
function toast(text, bad = false) {
  const t = $("toast");
  t.textContent = text;
  t.className = bad ? "toast bad" : "toast";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, bad ? 8000 : 2500);
}

drawBaseMap();
window.addEventListener("resize", fitLabels);
$("reload").addEventListener("click", reload);
refresh();
connectEvents();
setInterval(refresh, POLL_MS);
setInterval(setLive, 2000);
