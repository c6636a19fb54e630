// pykbroker web console: plain JavaScript, no framework, nothing loaded from the internet.
"use strict";

// --- small helpers ------------------------------------------------------------------------

// h("td", {class: "num"}, "text", childNode...): text is always set as text, never as HTML.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : String(c));
  return el;
}

class ApiError extends Error {
  constructor(status, error, message) { super(message); this.status = status; this.error = error; }
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, data.error || "HTTP_" + r.status, data.message || r.statusText);
  return data;
}

function flash(text, kind) {
  const el = document.getElementById("flash");
  el.textContent = text;
  el.className = kind || "ok";
  el.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { el.hidden = true; }, kind === "error" ? 8000 : 3000);
}

function showError(e) { flash(e instanceof ApiError ? `${e.error}: ${e.message}` : String(e), "error"); }

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : Math.round(n)) + " " + units[i];
}
function num(n) {
  if (n === null || n === undefined) return "–";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}
function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 120) return s + " s";
  if (s < 7200) return Math.floor(s / 60) + " min";
  if (s < 172800) return Math.floor(s / 3600) + " h";
  return Math.floor(s / 86400) + " d";
}
function when(ts) { return ts >= 0 ? new Date(ts).toISOString().replace("T", " ").replace("Z", "") : "–"; }
function pill(text, kind) { return h("span", { class: "pill " + kind }, text); }
function enc(x) { return encodeURIComponent(x); }

// --- record formatting ----------------------------------------------------------------------

function fromB64(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
const utf8 = new TextDecoder("utf-8", { fatal: true });
function hex(buf) {
  return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join(" ");
}
// "auto": JSON if it parses, else text if valid UTF-8, else hex.
function formatBytes(b64, mode) {
  if (b64 === null) return { text: "null", kind: "null" };
  const buf = fromB64(b64);
  if (mode === "hex") return { text: hex(buf), kind: "hex" };
  let text;
  try { text = utf8.decode(buf); } catch (e) { return { text: hex(buf), kind: "hex" }; }
  if (mode === "text") return { text, kind: "text" };
  if (mode === "json" || mode === "auto") {
    try { return { text: JSON.stringify(JSON.parse(text), null, 2), kind: "json" }; } catch (e) { /* not JSON */ }
    if (mode === "json") return { text: "(not JSON) " + text, kind: "text" };
  }
  return { text, kind: "text" };
}

// --- charts (hand-written SVG) ---------------------------------------------------------------

function lineChart(title, times, series, fmt) {
  const W = 600, H = 140, L = 48, B = 16, T = 6;
  const all = series.flatMap((x) => x.values.filter((v) => v !== null));
  const max = Math.max(1e-9, ...all) * 1.1;
  const n = Math.max(times.length - 1, 1);
  const x = (i) => L + ((W - L - 4) * i) / n;
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  for (const f of [0, 0.5, 1]) {
    const v = max * f;
    svg.append(s("line", { x1: L, x2: W, y1: y(v), y2: y(v), stroke: "#eaeef2" }));
    svg.append(s("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, fmt(v)));
  }
  if (times.length) {
    svg.append(s("text", { x: L, y: H - 2 }, new Date(times[0]).toLocaleTimeString()));
    svg.append(s("text", { x: W - 2, y: H - 2, "text-anchor": "end" }, new Date(times[times.length - 1]).toLocaleTimeString()));
  }
  series.forEach((ser, k) => {
    let d = "";
    ser.values.forEach((v, i) => { if (v !== null) d += (d ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1); });
    if (d) svg.append(s("path", { d, fill: "none", class: "c" + (k % 6), "stroke-width": 1.8 }));
  });
  const last = series.map((ser) => ser.values.filter((v) => v !== null).pop());
  return h("div", { class: "chart" },
    h("h3", {}, title, h("span", { class: "muted" }, last.length && last[0] !== undefined ? fmt(last[0]) : "")),
    svg,
    h("div", { class: "legend" }, series.map((ser, k) => h("span", {}, h("i", { class: "c" + (k % 6) }), ser.name))));
}

function charts(m) {
  const perSec = (f) => (v) => f(v) + "/s";
  const out = [
    lineChart("Bytes in / out", m.time, [{ name: "in", values: m.bytes_in }, { name: "out", values: m.bytes_out }], perSec(bytes)),
    lineChart("Messages in", m.time, [{ name: "messages in", values: m.messages_in }], perSec(num)),
  ];
  const apis = Object.entries(m.latency || {}).filter(([, v]) => v.count.some((c) => c > 0)).slice(0, 5);
  if (apis.length) {
    out.push(lineChart("Request latency p99 (ms)", m.time,
      apis.map(([name, v]) => ({ name, values: v.p99_ms })), (v) => num(v) + " ms"));
    out.push(lineChart("Requests per second", m.time,
      apis.map(([name, v]) => ({ name, values: v.count.map((c) => c / (m.interval_ms / 1000)) })), num));
  }
  return h("div", { class: "charts", id: "charts" }, out);
}

// --- views -------------------------------------------------------------------------------------

const view = () => document.getElementById("view");
let cleanup = [];
function every(ms, fn) { const t = setInterval(fn, ms); cleanup.push(() => clearInterval(t)); }
function render(...nodes) { view().replaceChildren(...nodes); }

async function overview() {
  const [c, m] = await Promise.all([api("GET", "/api/cluster"), api("GET", "/api/metrics?window=120")]);
  const card = (k, v, id) => h("div", { class: "card" }, h("div", { class: "k" }, k), h("div", { class: "v", id }, v));
  const brokers = h("table", { id: "brokers" },
    h("thead", {}, h("tr", {}, ["ID", "Address", "Rack", "Status", "Role", "Leader partitions", "Under-replicated"].map((t) => h("th", {}, t)))),
    h("tbody", {}, c.brokers.map((b) => h("tr", {},
      h("td", {}, b.node_id, b.this ? h("span", { class: "muted" }, " (this broker)") : ""),
      h("td", {}, b.host ? `${b.host}:${b.port}` : h("span", { class: "muted" }, `not registered (replica of ${b.replica_partitions} partitions)`)),
      h("td", {}, b.rack || "–"),
      h("td", {}, b.alive ? pill("online", "ok") : pill("offline", "bad")),
      h("td", {}, b.controller ? pill("controller", "info") : ""),
      h("td", { class: "num" }, b.leader_partitions),
      h("td", { class: "num" }, b.under_replicated_partitions ? pill(b.under_replicated_partitions, "warn") : "0")))));
  const top = h("table", { id: "top-topics" },
    h("thead", {}, h("tr", {}, ["Topic", "Bytes in/s", "Bytes out/s", "Messages in/s"].map((t, i) => h("th", { class: i ? "num" : "" }, t)))),
    h("tbody", {}, (m.top_topics.length ? m.top_topics : []).map((t) => h("tr", {},
      h("td", {}, h("a", { href: "#/topics/" + enc(t.topic) }, t.topic)),
      h("td", { class: "num" }, bytes(t.bytes_in)), h("td", { class: "num" }, bytes(t.bytes_out)),
      h("td", { class: "num" }, num(t.messages_in))))));
  render(
    h("h1", {}, "Cluster ", h("span", { class: "muted" }, c.cluster_id)),
    h("div", { class: "cards" },
      card("Brokers", `${c.brokers.filter((b) => b.alive).length} / ${c.brokers.length}`, "card-brokers"),
      card("Topics", c.topics, "card-topics"), card("Partitions", c.partitions),
      card("Offline partitions", c.offline_partitions), card("Connections", c.connections ?? "–"),
      card("Uptime", duration(c.uptime_ms)), card("Data on this broker", c.log_dirs ? bytes(c.log_dirs.reduce((a, d) => a + d.size, 0)) : "–"),
      card("Version", c.version)),
    h("h2", {}, "Brokers"), brokers,
    h("h2", {}, "Traffic ", h("span", { class: "muted" }, "(this broker, last 2 minutes)")), charts(m),
    h("h2", {}, "Busiest topics"), top);
  every(2000, async () => {
    const fresh = await api("GET", "/api/metrics?window=120");
    const old = document.getElementById("charts");
    if (old) old.replaceWith(charts(fresh));
  });
}

async function topicsView() {
  const { topics } = await api("GET", "/api/topics");
  const state = topicsView.state || (topicsView.state = { filter: "", internal: false });
  const tbody = h("tbody", {});
  const fill = (list) => {
    const f = state.filter.toLowerCase();
    const rows = list.filter((t) => (state.internal || !t.internal) && t.name.toLowerCase().includes(f));
    tbody.replaceChildren(...rows.map((t) => h("tr", { "data-topic": t.name },
      h("td", {}, h("a", { href: "#/topics/" + enc(t.name) }, t.name), t.internal ? h("span", { class: "muted" }, " internal") : ""),
      h("td", { class: "num" }, t.partitions), h("td", { class: "num" }, t.replication_factor),
      h("td", { class: "num" }, num(t.messages)), h("td", { class: "num" }, bytes(t.size)),
      h("td", { class: "num" }, bytes(t.bytes_in_per_sec) + "/s"), h("td", { class: "num" }, bytes(t.bytes_out_per_sec) + "/s"),
      h("td", {}, t.offline ? pill(`${t.offline} offline`, "bad") : t.under_replicated ? pill(`${t.under_replicated} under-replicated`, "warn") : pill("ok", "ok")))));
    count.textContent = `${rows.length} of ${list.length}`;
  };
  const count = h("span", { class: "muted", id: "topic-count" });
  const form = createTopicForm();
  form.hidden = true;
  render(
    h("h1", {}, "Topics ", count),
    h("div", { class: "toolbar" },
      h("input", { type: "search", placeholder: "Filter topics", id: "topic-filter", value: state.filter,
        oninput: (e) => { state.filter = e.target.value; fill(topicsView.last); } }),
      h("label", {}, h("input", { type: "checkbox", checked: state.internal, onchange: (e) => { state.internal = e.target.checked; fill(topicsView.last); } }), "show internal"),
      h("button", { class: "primary", id: "new-topic", onclick: () => { form.hidden = !form.hidden; } }, "Create topic")),
    form,
    h("table", { id: "topics" },
      h("thead", {}, h("tr", {}, ["Name", "Partitions", "Replication", "Messages", "Size", "In", "Out", "Health"].map((t, i) => h("th", { class: i && i < 7 ? "num" : "" }, t)))),
      tbody));
  topicsView.last = topics;
  fill(topics);
  every(5000, async () => { topicsView.last = (await api("GET", "/api/topics")).topics; fill(topicsView.last); });
}

function createTopicForm() {
  const name = h("input", { id: "create-name", required: true, placeholder: "orders" });
  const parts = h("input", { id: "create-partitions", type: "number", min: 1, placeholder: "broker default" });
  const rf = h("input", { id: "create-replication", type: "number", min: 1, placeholder: "broker default" });
  const configs = h("textarea", { id: "create-configs", rows: 3, placeholder: "cleanup.policy=compact\nretention.ms=86400000" });
  const submit = async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim(), configs: {} };
    if (parts.value) body.partitions = Number(parts.value);
    if (rf.value) body.replication_factor = Number(rf.value);
    for (const line of configs.value.split("\n")) {
      const i = line.indexOf("=");
      if (line.trim() && i > 0) body.configs[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    try {
      const r = await api("POST", "/api/topics", body);
      flash(`Created topic ${r.name} with ${r.partitions} partition(s)`);
      location.hash = "#/topics/" + enc(r.name);
    } catch (err) { showError(err); }
  };
  return h("form", { class: "panel", id: "create-topic", onsubmit: submit },
    h("div", { class: "form-grid" },
      h("label", { for: "create-name" }, "Name"), name,
      h("label", { for: "create-partitions" }, "Partitions"), parts,
      h("label", { for: "create-replication" }, "Replication factor"), rf,
      h("label", { for: "create-configs" }, "Configs (key=value)"), configs,
      h("span", {}), h("div", {}, h("button", { class: "primary", type: "submit", id: "create-submit" }, "Create"))));
}

async function topicView(name, tab) {
  const t = await api("GET", "/api/topics/" + enc(name));
  const tabs = ["partitions", "messages", "configs", "charts"];
  tab = tabs.includes(tab) ? tab : "partitions";
  const remove = async () => {
    if (!confirm(`Delete topic ${name} and all its data?`)) return;
    try { await api("DELETE", "/api/topics/" + enc(name)); flash(`Deleted topic ${name}`); location.hash = "#/topics"; } catch (e) { showError(e); }
  };
  const addPartitions = async () => {
    const count = prompt(`New partition count for ${name} (now ${t.partitions.length})`, t.partitions.length + 1);
    if (!count) return;
    try { await api("POST", `/api/topics/${enc(name)}/partitions`, { count: Number(count) }); route(); } catch (e) { showError(e); }
  };
  const body = h("div", { id: "tab-body" });
  render(
    h("h1", {}, h("a", { href: "#/topics" }, "Topics"), "/", h("span", { id: "topic-name" }, name),
      t.internal ? pill("internal", "info") : "",
      h("span", { class: "muted" }, `${t.partitions.length} partitions · replication ${t.replication_factor}`)),
    h("div", { class: "toolbar" },
      h("button", { onclick: addPartitions }, "Add partitions"),
      h("button", { class: "danger", id: "delete-topic", onclick: remove }, "Delete topic")),
    h("div", { class: "tabs" }, tabs.map((x) => h("a", { href: `#/topics/${enc(name)}/${x}`, class: x === tab ? "active" : "", "data-tab": x }, x[0].toUpperCase() + x.slice(1)))),
    body);
  if (tab === "partitions") partitionsTab(body, t);
  else if (tab === "messages") messagesTab(body, t);
  else if (tab === "configs") configsTab(body, t);
  else {
    const draw = async () => body.replaceChildren(charts(await api("GET", "/api/metrics?window=120&topic=" + enc(name))));
    await draw();
    every(2000, draw);
  }
}

function partitionsTab(body, t) {
  const chips = (ids) => ids.map((id) => h("span", { class: "chip" }, id));
  body.replaceChildren(h("table", { id: "partitions" },
    h("thead", {}, h("tr", {}, ["Partition", "Leader", "Replicas", "ISR", "Log start", "High watermark", "Log end", "Size", "Segments"].map((x, i) => h("th", { class: [0, 1, 4, 5, 6, 7, 8].includes(i) ? "num" : "" }, x)))),
    h("tbody", {}, t.partitions.map((p) => h("tr", {},
      h("td", { class: "num" }, p.partition),
      h("td", { class: "num" }, p.leader >= 0 ? p.leader : pill("none", "bad")),
      h("td", {}, chips(p.replicas)),
      h("td", {}, chips(p.isr), p.isr.length < p.replicas.length ? pill("under-replicated", "warn") : ""),
      h("td", { class: "num" }, p.local ? p.log_start_offset : "–"),
      h("td", { class: "num" }, p.local ? p.high_watermark : "–"),
      h("td", { class: "num" }, p.local ? p.log_end_offset : "–"),
      h("td", { class: "num" }, p.local ? bytes(p.size) : "not on this broker"),
      h("td", { class: "num" }, p.local ? p.segments : "–"))))));
}

function configsTab(body, t) {
  const name = t.name;
  if (t.configs === null) {  // DESCRIBE_CONFIGS not allowed to this principal
    body.replaceChildren(h("p", { class: "panel muted", id: "configs-denied" }, "Not authorized to describe this topic's configs."));
    return;
  }
  const save = async (key, value) => {
    try { await api("PATCH", `/api/topics/${enc(name)}/configs`, { set: { [key]: value } }); flash(`${key} = ${value}`); route(); } catch (e) { showError(e); }
  };
  const reset = async (key) => {
    try { await api("PATCH", `/api/topics/${enc(name)}/configs`, { delete: [key] }); flash(`${key} reset to the default`); route(); } catch (e) { showError(e); }
  };
  const row = (c) => {
    const cell = h("td", { class: "val" }, h("code", {}, c.sensitive ? "(sensitive)" : c.value === null ? "null" : c.value));
    const edit = () => {
      const input = h("input", { value: c.value || "", size: 30 });
      cell.replaceChildren(input, " ", h("button", { class: "primary", onclick: () => save(c.name, input.value) }, "Save"),
        " ", h("button", { onclick: () => route() }, "Cancel"));
      input.focus();
    };
    const overridden = c.source === "DYNAMIC_TOPIC_CONFIG";
    return h("tr", { "data-config": c.name },
      h("td", { title: c.doc || "" }, h("code", {}, c.name)), cell,
      h("td", {}, overridden ? pill("topic override", "info") : h("span", { class: "muted" }, c.source.toLowerCase().replace(/_/g, " "))),
      h("td", {}, c.read_only ? "" : h("button", { onclick: edit }, "Edit"), " ", overridden ? h("button", { onclick: () => reset(c.name) }, "Reset") : ""));
  };
  body.replaceChildren(h("table", { id: "configs" },
    h("thead", {}, h("tr", {}, ["Config", "Value", "Source", ""].map((x) => h("th", {}, x)))),
    h("tbody", {}, t.configs.map(row))));
}

function messagesTab(body, t) {
  const st = messagesTab.state && messagesTab.state.topic === t.name ? messagesTab.state
    : (messagesTab.state = { topic: t.name, partition: 0, seek: "newest", value: "", limit: 50, format: "auto" });
  const partition = h("select", { id: "msg-partition", onchange: (e) => { st.partition = Number(e.target.value); } },
    t.partitions.map((p) => h("option", { value: p.partition, selected: p.partition === st.partition }, `partition ${p.partition}`)));
  const seek = h("select", { id: "msg-seek", onchange: (e) => { st.seek = e.target.value; } },
    [["newest", "newest"], ["offset", "from offset"], ["timestamp", "from time"]].map(([v, l]) => h("option", { value: v, selected: v === st.seek }, l)));
  const value = h("input", { id: "msg-from", placeholder: "offset or 2026-01-31 12:00", value: st.value, oninput: (e) => { st.value = e.target.value; } });
  const limit = h("input", { id: "msg-limit", type: "number", min: 1, max: 500, value: st.limit, oninput: (e) => { st.limit = Number(e.target.value) || 50; } });
  const format = h("select", { id: "msg-format", onchange: (e) => { st.format = e.target.value; redraw(); } },
    ["auto", "json", "text", "hex"].map((f) => h("option", { value: f, selected: f === st.format }, f)));
  const status = h("span", { class: "muted", id: "msg-status" });
  const tbody = h("tbody", { id: "messages-body" });
  let shown = [];
  const cellOf = (b64, size) => {
    const f = formatBytes(b64, st.format);
    return h("td", { class: "val" }, h("pre", { "data-kind": f.kind }, f.text), size > 65536 ? h("span", { class: "muted" }, `(${bytes(size)}, truncated)`) : "");
  };
  const rowOf = (r) => h("tr", { "data-offset": r.offset },
    h("td", { class: "num" }, r.offset), h("td", {}, when(r.timestamp)),
    cellOf(r.key, r.key_size), cellOf(r.value, r.value_size),
    h("td", {}, r.headers.map(([k, v]) => h("div", {}, h("span", { class: "chip" }, k), " ", formatBytes(v, st.format).text))));
  const redraw = () => tbody.replaceChildren(...shown.map(rowOf));
  const load = async () => {
    let q = `partition=${st.partition}&limit=${st.limit}`;
    if (st.seek === "offset") q += `&offset=${Number(st.value) || 0}`;
    if (st.seek === "timestamp") {
      const ts = /^\d+$/.test(st.value) ? Number(st.value) : Date.parse(st.value);
      if (Number.isNaN(ts)) { flash("Give a time like 2026-01-31 12:00 or epoch milliseconds", "error"); return; }
      q += `&timestamp=${ts}`;
    }
    try {
      const r = await api("GET", `/api/topics/${enc(t.name)}/messages?${q}`);
      shown = r.records;
      status.textContent = `${r.records.length} record(s) from offset ${r.start_offset}; log ${r.log_start_offset}…${r.high_watermark}`;
      redraw();
    } catch (e) { showError(e); }
  };
  let source = null;
  const tailButton = h("button", { id: "msg-tail" }, "Live tail");
  const stopTail = () => { if (source) { source.close(); source = null; } tailButton.textContent = "Live tail"; };
  tailButton.addEventListener("click", () => {
    if (source) { stopTail(); status.textContent = "tail stopped"; return; }
    shown = [];
    redraw();
    source = new EventSource(`/api/topics/${enc(t.name)}/tail?partition=${st.partition}`);
    tailButton.replaceChildren(h("span", { class: "dot live" }), "Stop tail");
    status.textContent = "connecting…";
    // Open: the broker has answered, so the tail starts at the high watermark it had then and
    // every record produced from now on will show.
    source.addEventListener("open", () => { if (!shown.length) status.textContent = "waiting for new records…"; });
    source.addEventListener("records", (ev) => {
      const d = JSON.parse(ev.data);
      // Newest first; only the new rows are drawn, the oldest beyond 500 dropped.
      const fresh = d.records.slice().reverse();
      shown = fresh.concat(shown).slice(0, 500);
      tbody.prepend(...fresh.map(rowOf));
      while (tbody.childElementCount > 500) tbody.lastElementChild.remove();
      status.textContent = `tailing partition ${st.partition}: high watermark ${d.high_watermark}` + (d.skipped ? ` (skipped ${d.skipped} to keep up)` : "");
    });
    source.addEventListener("error", (ev) => {
      if (ev.data) { const d = JSON.parse(ev.data); flash(`${d.error}: ${d.message}`, "error"); stopTail(); }
    });
  });
  cleanup.push(stopTail);
  body.replaceChildren(
    h("div", { class: "toolbar" }, partition, seek, value, h("label", {}, "max", limit), h("label", {}, "show as", format),
      h("button", { class: "primary", id: "msg-load", onclick: load }, "Fetch"), tailButton, status),
    h("table", { id: "messages" },
      h("thead", {}, h("tr", {}, ["Offset", "Timestamp", "Key", "Value", "Headers"].map((x, i) => h("th", { class: i ? "" : "num" }, x)))),
      tbody));
  load();
}

async function groupsView() {
  const draw = (r) => h("table", { id: "groups" },
    h("thead", {}, h("tr", {}, ["Group", "State", "Members", "Topics", "Lag"].map((x, i) => h("th", { class: i === 2 || i === 4 ? "num" : "" }, x)))),
    h("tbody", {}, r.groups.map((g) => h("tr", { "data-group": g.group_id },
      h("td", {}, h("a", { href: "#/groups/" + enc(g.group_id) }, g.group_id)),
      h("td", {}, pill(g.state, g.state === "Stable" ? "ok" : g.state === "Empty" ? "info" : "warn")),
      h("td", { class: "num" }, g.members),
      h("td", {}, g.topics.map((x) => h("span", { class: "chip" }, x))),
      h("td", { class: "num lag" }, num(g.lag))))));
  const r = await api("GET", "/api/groups");
  render(h("h1", {}, "Consumer groups ", h("span", { class: "muted" }, r.groups.length)),
    r.groups.length ? draw(r) : h("p", { class: "muted" }, "No consumer groups on this broker's coordinator yet."));
  every(3000, async () => {
    const fresh = await api("GET", "/api/groups");
    const old = document.getElementById("groups");
    if (old) old.replaceWith(draw(fresh));
    else if (fresh.groups.length) route();
  });
}

async function groupView(id) {
  const draw = (g) => {
    const members = h("table", { id: "members" },
      h("thead", {}, h("tr", {}, ["Member", "Client", "Host", "Assignment"].map((x) => h("th", {}, x)))),
      h("tbody", {}, g.members.map((m) => h("tr", {},
        h("td", {}, h("code", {}, m.member_id)), h("td", {}, m.client_id), h("td", {}, m.client_host),
        h("td", {}, m.assignment.map((a) => h("span", { class: "chip" }, `${a.topic}-${a.partition}`)))))));
    const offsets = h("table", { id: "offsets" },
      h("thead", {}, h("tr", {}, ["Topic", "Partition", "Current offset", "Log end offset", "Lag", "Member"].map((x, i) => h("th", { class: i && i < 5 ? "num" : "" }, x)))),
      h("tbody", {}, g.offsets.map((o) => h("tr", { "data-tp": `${o.topic}-${o.partition}` },
        h("td", {}, h("a", { href: `#/topics/${enc(o.topic)}/messages` }, o.topic)), h("td", { class: "num" }, o.partition),
        h("td", { class: "num" }, o.current_offset ?? "–"), h("td", { class: "num" }, o.log_end_offset ?? "–"),
        h("td", { class: "num lag" }, o.lag ?? "–"), h("td", {}, o.member_id ? h("code", {}, o.member_id) : "–")))));
    return h("div", { id: "group-body" },
      h("h1", {}, h("a", { href: "#/groups" }, "Consumer groups"), "/", id,
        pill(g.state, g.state === "Stable" ? "ok" : g.state === "Empty" ? "info" : "warn"),
        h("span", { class: "muted" }, g.protocol ? `assignor ${g.protocol}` : "")),
      h("h2", {}, "Offsets and lag"), offsets,
      h("h2", {}, `Members (${g.members.length})`), g.members.length ? members : h("p", { class: "muted" }, "No active members."),
      resetForm(id, g));
  };
  render(draw(await api("GET", "/api/groups/" + enc(id))));
  every(3000, async () => {
    if (document.activeElement && document.activeElement.closest("#reset-form")) return;
    const old = document.getElementById("group-body");
    if (old) old.replaceWith(draw(await api("GET", "/api/groups/" + enc(id))));
  });
}

function resetForm(id, g) {
  const inactive = g.state === "Empty" || g.state === "Dead";
  const topics = [...new Set(g.offsets.map((o) => o.topic))];
  const topic = h("select", { id: "reset-topic" }, h("option", { value: "" }, "all topics"), topics.map((t) => h("option", { value: t }, t)));
  const to = h("select", { id: "reset-to" }, ["earliest", "latest", "offset", "timestamp"].map((x) => h("option", { value: x }, x)));
  const value = h("input", { id: "reset-value", placeholder: "offset or epoch ms", size: 16 });
  const submit = async (e) => {
    e.preventDefault();
    const body = { to: to.value };
    if (topic.value) body.topic = topic.value;
    if (to.value === "offset" || to.value === "timestamp") body.value = Number(value.value);
    try {
      const r = await api("POST", `/api/groups/${enc(id)}/reset-offsets`, body);
      flash(`Reset ${r.offsets.length} partition(s) of ${id}`);
      route();
    } catch (err) { showError(err); }
  };
  return h("form", { class: "panel", id: "reset-form", onsubmit: submit },
    h("h2", {}, "Reset offsets"),
    inactive ? "" : h("p", { class: "muted" }, `Only an inactive group can be reset (this one is ${g.state}); stop its consumers first.`),
    h("div", { class: "toolbar" }, topic, "to", to, value,
      h("button", { class: "primary", type: "submit", disabled: !inactive, id: "reset-submit" }, "Reset")));
}

// --- routing -------------------------------------------------------------------------------------

// A hand-typed hash with a stray % is shown as typed rather than breaking the page.
function decodePart(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

async function route() {
  cleanup.forEach((f) => f());
  cleanup = [];
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodePart);
  const section = parts[0] || "overview";
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === section));
  try {
    if (section === "topics" && parts[1]) await topicView(parts[1], parts[2]);
    else if (section === "topics") await topicsView();
    else if (section === "groups" && parts[1]) await groupView(parts[1]);
    else if (section === "groups") await groupsView();
    else await overview();
    document.body.dataset.ready = section;
  } catch (e) {
    render(h("h1", {}, "Something went wrong"), h("p", { class: "panel", id: "error" }, e instanceof ApiError ? `${e.error}: ${e.message}` : String(e)));
  }
}

window.addEventListener("hashchange", route);
api("GET", "/api/cluster").then((c) => {
  document.getElementById("cluster-id").textContent = `cluster ${c.cluster_id} · broker ${c.node_id}` + (c.read_only ? " · read-only" : "")
    + (c.authentication !== "NONE" && c.principal ? ` · ${c.principal}` : "");
}).catch(() => {});
route();
