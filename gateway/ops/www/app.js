// tidegate console — plain DOM + SVG, no framework, nothing fetched but this daemon's API.
// The token comes from the URL fragment (#token=..., never sent to the server) or the login
// form, and stays in sessionStorage. Live data arrives on /api/events (Server-Sent Events,
// read with fetch so the Authorization header can be sent); the tables are refreshed by
// polling every few seconds. window.tg exposes a little state for the browser test.
"use strict";

const tg = (window.tg = { alertShownMs: {}, events: 0, stats: null, ready: false });
const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};
const SVGNS = "http://www.w3.org/2000/svg";

let token = sessionStorage.getItem("tg-token") || "";
const m = location.hash.match(/token=([^&]+)/);
if (m) {
  token = decodeURIComponent(m[1]);
  sessionStorage.setItem("tg-token", token);
  history.replaceState(null, "", location.pathname); // the token leaves the address bar
}

async function api(path, opts = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token }, opts.headers || {});
  const resp = await fetch(path, Object.assign({}, opts, { headers }));
  if (resp.status === 401) {
    showLogin("The token was refused.");
    throw new Error("unauthorized");
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  return { status: resp.status, body };
}

// ---- formatting ------------------------------------------------------------------------
const ago = (ms) => {
  if (!ms) return "never";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 1) return "now";
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
};
const bytes = (n) => (n == null ? "?" : n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB");
const num = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : String(v));
const time = (ms) => new Date(ms).toISOString().slice(11, 19);
const SKIP = new Set(["ts", "seq", "thing", "topic", "received_at", "ts_iso", "sensor_id"]);

function logEvent(text) {
  const list = $("events");
  list.prepend(el("li", { text: time(Date.now()) + "  " + text }));
  while (list.children.length > 60) list.lastChild.remove();
}

// ---- alerts ------------------------------------------------------------------------------
const alertKey = (a) => `${a.rule}|${a.alert}|${a.thing}`;

function alertRow(a, fresh) {
  const key = alertKey(a);
  const raised = a.raised_at || a.raised_at_ms || 0;
  const tr = el("tr", { "data-key": key, "data-raised-ms": String(raised), class: fresh ? "fresh" : "" },
    el("td", {}, el("span", { class: "sev " + (a.severity || "major"), text: a.severity || "major" })),
    el("td", { text: a.alert }), el("td", { text: a.thing }), el("td", { text: a.rule }),
    el("td", { text: raised ? ago(raised) : "" }),
    el("td", { class: "vals", text: a.value ? Object.entries(a.value).filter(([k]) => !SKIP.has(k)).map(([k, v]) => `${k} ${num(v)}`).join("  ") : "" }));
  return tr;
}

function alertsEmpty() {
  const n = $("alerts").tBodies[0].rows.length;
  $("alerts-count").textContent = n;
  $("alerts-empty").hidden = n > 0;
}

function onAlertEvent(a) {
  const body = $("alerts").tBodies[0];
  const key = alertKey(a);
  const old = body.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
  if (a.state === "raised") {
    const tr = alertRow(a, true);
    if (old) old.replaceWith(tr); else body.prepend(tr);
    const shown = Date.now();
    tr.setAttribute("data-shown-ms", String(shown));
    tg.alertShownMs[key] = shown;
  } else if (old) {
    old.remove();
  }
  $("alert-history").prepend(el("li", { text: `${time(a.event_ms || Date.now())} ${a.state} ${a.alert} on ${a.thing} (${a.rule})` }));
  alertsEmpty();
  logEvent(`alert ${a.state}: ${a.alert} on ${a.thing}`);
}

async function loadAlerts() {
  const { body } = await api("/api/alerts");
  if (!body) return;
  const tb = $("alerts").tBodies[0];
  const have = new Set(body.active.map(alertKey));
  for (const tr of [...tb.rows]) if (!have.has(tr.dataset.key)) tr.remove();
  for (const a of body.active) {
    const key = alertKey(a);
    if (!tb.querySelector(`tr[data-key="${CSS.escape(key)}"]`)) {
      const tr = alertRow(a, false);
      tr.setAttribute("data-shown-ms", String(Date.now()));
      tg.alertShownMs[key] = tg.alertShownMs[key] || Date.now();
      tb.append(tr);
    }
  }
  const hist = $("alert-history");
  if (!hist.children.length)
    for (const h of body.history.slice(0, 30))
      hist.append(el("li", { text: `${time(h.event_ms || h.ts || 0)} ${h.state} ${h.alert} on ${h.thing} (${h.rule})` }));
  alertsEmpty();
}

// ---- fleet -------------------------------------------------------------------------------
let series = {};
function sparkline(points) {
  const svg = document.createElementNS(SVGNS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 130 28");
  if (!points || !points.length) return svg;
  if (points.length === 1) points = [points[0], Object.assign({}, points[0], { t: points[0].t + 1 })];
  const t0 = points[0].t, t1 = points[points.length - 1].t || t0 + 1;
  let lo = Math.min(...points.map((p) => p.min)), hi = Math.max(...points.map((p) => p.max));
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (t) => ((t - t0) / (t1 - t0 || 1)) * 128 + 1;
  const y = (v) => 26 - ((v - lo) / (hi - lo)) * 24;
  const band = points.map((p) => `${x(p.t)},${y(p.max)}`).concat(points.slice().reverse().map((p) => `${x(p.t)},${y(p.min)}`));
  const path = document.createElementNS(SVGNS, "path");
  path.setAttribute("d", "M" + band.join("L") + "Z");
  const line = document.createElementNS(SVGNS, "polyline");
  line.setAttribute("points", points.map((p) => `${x(p.t)},${y(p.avg)}`).join(" "));
  const title = document.createElementNS(SVGNS, "title");
  title.textContent = `${num(lo)} … ${num(hi)}`;
  svg.append(title, path, line);
  return svg;
}

function fieldsOf(devs) {
  const f = new Set();
  for (const d of devs) if (d.latest) for (const [k, v] of Object.entries(d.latest)) if (typeof v === "number" && !SKIP.has(k)) f.add(k);
  return [...f].sort();
}

async function loadFleet() {
  const { body } = await api("/api/devices");
  if (!body) return;
  const devs = body.devices.sort((a, b) => a.thing.localeCompare(b.thing));
  const sel = $("field");
  const fields = fieldsOf(devs);
  if (fields.join() !== [...sel.options].map((o) => o.value).join()) {
    const keep = sel.value || (fields.includes("temperature") ? "temperature" : fields[0]);
    sel.replaceChildren(...fields.map((f) => el("option", { value: f, text: f })));
    if (keep) sel.value = keep;
  }
  $("fleet-count").textContent = devs.length;
  const tb = $("fleet").tBodies[0];
  const rows = devs.map((d) => {
    const vals = el("td", { class: "vals" });
    if (d.latest)
      for (const [k, v] of Object.entries(d.latest))
        if (typeof v === "number" && !SKIP.has(k)) vals.append(el("span", { "data-field": k }, k + " ", el("b", { class: "value", "data-field": k, text: num(v) })));
    const spark = el("td", {});
    spark.append(sparkline(series[d.thing]));
    return el("tr", { "data-thing": d.thing },
      el("td", {}, el("span", { class: "dot" + (d.online ? " on" : ""), title: body.online_basis || "" })),
      el("td", { class: "thing", text: d.thing, title: (d.registered ? "registered" : "not in the registry") + "; click: its shadows",
        onclick: () => { $("s-thing").value = d.thing; loadShadows().catch(() => {}); } }),
      el("td", { text: ago(d.last_seen_ms) }), el("td", { class: "num", text: d.messages_today }),
      el("td", { class: "num", text: d.quarantined_today }), vals, spark);
  });
  tb.replaceChildren(...rows);
}

async function loadSeries() {
  const field = $("field").value;
  if (!field) return;
  const w = $("window").value;
  const step = { "15m": "10s", "1h": "1m", "6h": "5m", "24h": "20m" }[w] || "1m";
  const { status, body } = await api(`/api/series?field=${encodeURIComponent(field)}&since=-${w}&step=${step}`);
  if (status === 200 && body) series = body.series || {};
}

// ---- sinks -------------------------------------------------------------------------------
async function loadSinks() {
  const { body } = await api("/api/sinks");
  if (!body) return;
  const tb = $("sinks").tBodies[0];
  tb.replaceChildren(...body.sinks.map((s) => {
    const btn = el("button", { type: "button", text: "Requeue dead letters", "data-sink": s.name });
    btn.disabled = !s.dead_letters;
    btn.addEventListener("click", async () => {
      if (!confirm(`Requeue ${s.dead_letters} dead letter(s) of ${s.name}?`)) return;
      const r = await api(`/api/sinks/${encodeURIComponent(s.name)}/retry-dead`, { method: "POST" });
      logEvent(r.status === 200 ? `requeued ${r.body.requeued} dead letter(s) of ${s.name}` : `requeue failed: ${r.body && r.body.detail}`);
      loadSinks();
    });
    return el("tr", { "data-sink": s.name },
      el("td", { text: `${s.name} (${s.type})` }),
      el("td", {}, el("span", { class: "dot" + (s.up ? " on" : "") })),
      el("td", { class: "num", text: `${s.backlog_rows ?? "?"} rows, ${bytes(s.backlog_bytes)}` }),
      el("td", { class: "num", text: s.oldest_age_s == null ? "–" : s.oldest_age_s.toFixed(1) + " s" }),
      el("td", { class: "num", text: s.delivered_per_s.toFixed(1) }),
      el("td", { class: "num", text: s.retries_total }),
      el("td", { class: "num", text: s.dead_letters ?? "?" }), el("td", {}, btn));
  }));
}

// ---- quarantine --------------------------------------------------------------------------
async function loadQuarantine() {
  const q = new URLSearchParams({ limit: "50" });
  if ($("q-thing").value) q.set("thing", $("q-thing").value);
  if ($("q-reason").value) q.set("reason", $("q-reason").value);
  const { body } = await api("/api/quarantine?" + q);
  if (!body) return;
  const tb = $("quarantine").tBodies[0];
  tb.replaceChildren(...body.items.map((it) => el("tr", {},
    el("td", { text: time(it.received_ms) }), el("td", { text: it.thing || "" }), el("td", { text: it.reason }),
    el("td", { text: it.field || "" }), el("td", { text: it.detail || "" }),
    el("td", { class: "payload", text: typeof it.payload === "string" ? it.payload : "hex " + (it.payload && it.payload.hex), title: `${it.payload_bytes} bytes` }))));
  $("quarantine-empty").hidden = body.items.length > 0;
}

// ---- shadows -----------------------------------------------------------------------------
// Read-only: a change goes over MQTT like any app's (tidegate shadow update), not through here.
async function loadShadows() {
  const q = new URLSearchParams({ limit: "50" });
  if ($("s-thing").value) q.set("thing", $("s-thing").value.trim());
  const { status, body } = await api("/api/shadows?" + q);
  if (status !== 200 || !body) return;
  const js = (v) => (v === undefined ? "" : JSON.stringify(v));
  const cell = (v) => el("td", { class: "payload", text: js(v), title: js(v) });
  $("shadows-count").textContent = body.shadows.length + (body.truncated ? "+" : "");
  $("shadows").tBodies[0].replaceChildren(...body.shadows.map((s) => {
    const st = s.state || {};
    return el("tr", { "data-shadow": `${s.thing}|${s.name}` },
      el("td", { class: "thing", text: s.thing }), el("td", { text: s.name || "(classic)" }),
      el("td", { class: "num", text: s.version }), el("td", { text: ago(s.updated_ms) }),
      cell(st.desired), cell(st.reported), cell(st.delta));
  }));
  $("shadows-empty").hidden = body.shadows.length > 0;
  $("shadows-empty").textContent = body.note ? "No shadows: " + body.note : body.enabled === false ? "Shadows are off ([shadow] enabled = false)." : "No shadows.";
}

// ---- rules -------------------------------------------------------------------------------
async function loadRules() {
  const { body } = await api("/api/rules");
  if (!body) return;
  const tb = $("rules").tBodies[0];
  tb.replaceChildren(...body.rules.map((r) => el("tr", { "data-rule": r.name },
    el("td", { text: r.name, title: r.description || "" }), el("td", { text: r.enabled ? "yes" : "no" }),
    el("td", { class: "payload", text: r.sql || "", title: r.sql || "" }),
    el("td", { class: "num", text: r.matches }), el("td", { class: "num", text: r.action_errors }),
    el("td", { text: r.last_error || "", class: r.last_error ? "err" : "" }),
    el("td", {}, el("button", { type: "button", text: "Edit", class: "edit", onclick: () => openEditor(r.name) })))));
}

async function openEditor(name) {
  $("editor").hidden = false;
  $("ed-result").textContent = "";
  $("ed-result").className = "";
  $("ed-name").value = name || "";
  $("ed-file").textContent = name || "…";
  if (name) {
    const { body } = await api(`/api/rules/${encodeURIComponent(name)}`);
    $("ed-text").value = body && body.source ? body.source : "";
  } else {
    $("ed-text").value = JSON.stringify({
      description: "", sql: "SELECT temperature, topic(2) AS thing FROM 'devices/+/telemetry' WHERE temperature > 30",
      actions: [{ republish: { topic: "alerts/console/${topic(2)}", qos: 0 } }] }, null, 2) + "\n";
  }
  $("ed-name").focus();
}

function showResult(text, ok) {
  const r = $("ed-result");
  r.textContent = text;
  r.className = ok ? "good" : "bad";
}

// put the caret on the first error's line and column
function showErrors(body) {
  const errs = (body && body.errors) || [];
  showResult(errs.length ? errs.map((e) => `line ${e.line}, column ${e.col}: ${e.message}`).join("\n") : (body && body.detail) || "refused", false);
  const e = errs[0];
  if (e && e.line > 0) {
    const ta = $("ed-text"), lines = ta.value.split("\n");
    let pos = 0;
    for (let i = 0; i < e.line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
    pos += Math.max(0, e.col - 1);
    ta.focus();
    ta.setSelectionRange(pos, pos + 1);
  }
}

const ruleName = () => $("ed-name").value.trim();

async function putRule(dry) {
  const name = ruleName();
  if (!name) return showResult("Give the rule a name.", false);
  const { status, body } = await api(`/api/rules/${encodeURIComponent(name)}${dry ? "?dry_run=1" : ""}`, { method: "PUT", body: $("ed-text").value });
  if (status === 200 || status === 201) {
    showResult(dry ? "Valid: the rules folder loads with this rule." : `Saved ${body.file} and reloaded.`, true);
    if (!dry) { logEvent(`rule ${name} saved`); loadRules(); }
  } else showErrors(body);
}

async function testRule() {
  let payload = $("ed-payload").value;
  try { payload = JSON.parse(payload); } catch (e) { /* sent as text, as a device would */ }
  const { status, body } = await api("/api/rules/test", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: ruleName() || "test", source: $("ed-text").value, topic: $("ed-topic").value, payload }) });
  if (status !== 200) return showErrors(body);
  const acts = body.actions.map((a) => {
    const where = a.kind === "republish" ? `topic ${a.topic} (QoS ${a.qos})` : a.kind === "sink" ? `sink ${a.sink} table ${a.table}`
      : a.kind === "alert" ? `alert ${a.alert}: ${a.condition}` : `url ${a.url}`;
    return `${a.error_action ? "errorAction " : ""}${a.kind} → ${where}\n    ${JSON.stringify(a.payload)}`;
  });
  showResult(`${body.note}\n${acts.join("\n")}`, body.matched);
}

async function deleteRule() {
  const name = ruleName();
  if (!name || !confirm(`Delete rule ${name}? (a copy stays in .backup/)`)) return;
  const { status, body } = await api(`/api/rules/${encodeURIComponent(name)}`, { method: "DELETE" });
  if (status === 200) { showResult(`Deleted ${name}.`, true); loadRules(); } else showErrors(body);
}

// ---- the live stream ---------------------------------------------------------------------
function onStats(s) {
  tg.stats = s;
  const b = $("p-broker");
  b.textContent = s.broker_connected ? "broker up" : "broker down";
  b.className = "pill " + (s.broker_connected ? "ok" : "bad");
  $("p-acc").textContent = `${s.accepted_per_s.toFixed(0)} msg/s`;
  $("p-quar").textContent = `${s.quarantined_per_s.toFixed(0)} quarantined/s`;
  $("p-outbox").textContent = `outbox ${s.outbox_rows}`;
}

function onFrame(frame) {
  let type = "message", data = "";
  for (const line of frame.split("\n")) {
    if (line.startsWith("event: ")) type = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  let j;
  try { j = JSON.parse(data); } catch (e) { return; }
  tg.events++;
  if (type === "stats") onStats(j);
  else if (type === "alert") onAlertEvent(j);
  else if (type === "quarantine") logEvent(`quarantined ${j.thing}: ${j.reason}${j.field ? " (" + j.field + ")" : ""}`);
  else if (type === "rules") { logEvent(j.ok ? `rules reloaded (${j.rules})` : "rule reload refused"); loadRules(); }
  else if (type === "lost") logEvent(`missed ${j.missed} events`);
}

async function stream() {
  const pill = $("p-stream");
  try {
    const resp = await fetch("/api/events", { headers: { Authorization: "Bearer " + token } });
    if (resp.status === 401) return showLogin("The token was refused.");
    if (!resp.ok || !resp.body) throw new Error("status " + resp.status);
    pill.textContent = "live";
    pill.className = "pill ok";
    const reader = resp.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        onFrame(buf.slice(0, i));
        buf = buf.slice(i + 2);
      }
    }
  } catch (e) { /* reconnect below */ }
  pill.textContent = "live: reconnecting";
  pill.className = "pill bad";
  setTimeout(stream, 2000);
}

// ---- start -------------------------------------------------------------------------------
function showLogin(msg) {
  $("login").hidden = false;
  $("app").hidden = true;
  $("login-error").textContent = msg || "";
}

const safe = (f) => () => f().catch(() => {});

async function start() {
  const r = await api("/api/status").catch(() => null);
  if (!r) return;
  $("login").hidden = true;
  $("app").hidden = false;
  stream();
  await Promise.all([loadAlerts(), loadFleet(), loadSinks(), loadQuarantine(), loadShadows(), loadRules()].map((p) => p.catch(() => {})));
  await loadSeries().catch(() => {});
  await loadFleet().catch(() => {});
  tg.ready = true;
  setInterval(safe(loadFleet), 2000);
  setInterval(safe(loadSinks), 3000);
  setInterval(safe(loadQuarantine), 5000);
  setInterval(safe(loadShadows), 5000);
  setInterval(safe(loadRules), 5000);
  setInterval(safe(loadAlerts), 10000);
  setInterval(safe(loadSeries), 5000);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("login-token").value.trim();
    sessionStorage.setItem("tg-token", token);
    start();
  });
  $("field").addEventListener("change", () => loadSeries().then(loadFleet));
  $("window").addEventListener("change", () => loadSeries().then(loadFleet));
  $("q-thing").addEventListener("change", loadQuarantine);
  $("q-reason").addEventListener("change", loadQuarantine);
  $("s-thing").addEventListener("change", loadShadows);
  $("rule-new").addEventListener("click", () => openEditor(""));
  $("ed-name").addEventListener("input", () => ($("ed-file").textContent = ruleName() || "…"));
  $("ed-validate").addEventListener("click", () => putRule(true));
  $("ed-save").addEventListener("click", () => putRule(false));
  $("ed-test").addEventListener("click", testRule);
  $("ed-delete").addEventListener("click", deleteRule);
  $("ed-close").addEventListener("click", () => ($("editor").hidden = true));
  if (token) start(); else showLogin("");
});
