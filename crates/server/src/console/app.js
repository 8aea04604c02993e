// The Millrace console: one page, hash routes, no dependencies.
// Resources come from the ordinary AWS APIs on this endpoint; live metrics from
// /console/api/metrics, polled and kept in memory (the last HISTORY_MAX samples).
"use strict";

const HISTORY_MAX = 300;
const POLL_MS = Number(new URLSearchParams(location.search).get("poll")) || 1000;
const HASH_SPACE = 1n << 128n;
const history = []; // [{t: ms, streams: Map(key -> metrics), delivery: Map(key -> metrics)}]
let region = localStorage.getItem("millrace.region") || "us-east-1";
let routeTimer = null;
let pageUpdate = null; // called after each metrics poll with the current page's redraw

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

// ---- SigV4 in the browser (WebCrypto) ----
// Credentials the user typed live in this tab's sessionStorage only. Without them the page
// signs with a placeholder, which development mode accepts and an authenticating server
// refuses (then the sign-in form shows).
const enc = new TextEncoder();
const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
const sha256 = async (data) => hex(await crypto.subtle.digest("SHA-256", typeof data === "string" ? enc.encode(data) : data));
async function hmac(key, text) {
  const k = await crypto.subtle.importKey("raw", typeof key === "string" ? enc.encode(key) : key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return crypto.subtle.sign("HMAC", k, enc.encode(text));
}
function credentials() {
  try { return JSON.parse(sessionStorage.getItem("millrace.credentials") || "null"); } catch (_) { return null; }
}
const uriEncode = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());

// The headers of a signed request: `headers` (lower-case names) plus x-amz-date and
// Authorization, over host, every given header and the body's SHA-256.
async function sign(service, method, path, headers, body) {
  const cred = credentials();
  const amzDate = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  const day = amzDate.slice(0, 8);
  const scope = `${day}/${region}/${service}/aws4_request`;
  const all = { ...headers, "x-amz-date": amzDate };
  if (cred && cred.sessionToken) all["x-amz-security-token"] = cred.sessionToken;
  if (!cred || !window.crypto || !crypto.subtle) {
    all.authorization = `AWS4-HMAC-SHA256 Credential=console/${scope}, SignedHeaders=host;x-amz-date, Signature=0`;
    return all;
  }
  const signed = { host: location.host, ...all };
  const names = Object.keys(signed).map((n) => n.toLowerCase()).sort();
  const lower = Object.fromEntries(Object.entries(signed).map(([k, v]) => [k.toLowerCase(), String(v).trim()]));
  const canonicalPath = path.split("/").map(uriEncode).join("/");
  const canonical = [method, canonicalPath, "", names.map((n) => `${n}:${lower[n]}\n`).join(""), names.join(";"), await sha256(body)].join("\n");
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, await sha256(canonical)].join("\n");
  let key = await hmac("AWS4" + cred.secretAccessKey, day);
  for (const part of [region, service, "aws4_request"]) key = await hmac(key, part);
  const signature = hex(await hmac(key, toSign));
  all.authorization = `AWS4-HMAC-SHA256 Credential=${cred.accessKeyId}/${scope}, SignedHeaders=${names.join(";")}, Signature=${signature}`;
  return all;
}

const AUTH_ERRORS = /MissingAuthenticationToken|UnrecognizedClient|InvalidSignature|IncompleteSignature|SignatureDoesNotMatch|ExpiredToken|InvalidClientTokenId/;

async function call(service, method, path, headers, body, label) {
  const text = JSON.stringify(body || {});
  const res = await fetch(path, { method, headers: await sign(service, method, path, headers, text), body: text });
  const answer = await res.text();
  let json = {};
  try { json = answer ? JSON.parse(answer) : {}; } catch (_) { json = {}; }
  if (!res.ok) {
    const type = json.__type || res.headers.get("x-amzn-ErrorType") || String(res.status);
    const err = new Error(`${label}: ${type} ${json.message || json.Message || ""}`);
    err.type = type;
    throw err;
  }
  return json;
}

// ---- AWS calls ----
function aws(service, target, op, body) {
  return call(service, "POST", "/", { "content-type": "application/x-amz-json-1.1", "x-amz-target": `${target}.${op}` }, body, op);
}
// The Video Streams REST APIs (POST /listStreams, /listFragments, ...).
function kvs(path, body) {
  return call("kinesisvideo", "POST", path, { "content-type": "application/json" }, body, path.slice(1));
}
const analytics = (op, body) => aws("kinesisanalytics", "KinesisAnalytics_20150814", op, body);
const kinesis = (op, body) => aws("kinesis", "Kinesis_20131202", op, body);
const firehose = (op, body) => aws("firehose", "Firehose_20150804", op, body);

async function listStreams() {
  const names = [];
  let body = { Limit: 100 };
  for (let page = 0; page < 20; page++) {
    const r = await kinesis("ListStreams", body);
    names.push(...(r.StreamNames || []));
    if (!r.HasMoreStreams || !r.NextToken) break;
    body = { NextToken: r.NextToken };
  }
  return names;
}

async function listShards(stream) {
  const shards = [];
  let body = { StreamName: stream, MaxResults: 1000 };
  for (let page = 0; page < 20; page++) {
    const r = await kinesis("ListShards", body);
    shards.push(...(r.Shards || []));
    if (!r.NextToken) break;
    body = { NextToken: r.NextToken, MaxResults: 1000 };
  }
  return shards;
}

// ---- metrics history ----
async function poll() {
  try {
    const res = await fetch("/console/api/metrics");
    const m = await res.json();
    const streams = new Map(), delivery = new Map(), video = new Map(), analyticsFlows = new Map();
    for (const s of m.streams || []) streams.set(`${s.region}/${s.name}`, s.metrics);
    for (const d of m.delivery_streams || []) delivery.set(`${d.region}/${d.name}`, d.metrics);
    // Keys are account/region/name (video) and account/region/app/flow/id (analytics).
    for (const v of m.video_streams || []) video.set(v.key.split("/").slice(1).join("/"), v.metrics);
    for (const a of m.analytics || []) analyticsFlows.set(a.key, a.metrics);
    history.push({ t: m.now_ms || Date.now(), streams, delivery, video, analytics: analyticsFlows });
    if (history.length > HISTORY_MAX) history.shift();
    if (pageUpdate) pageUpdate();
  } catch (e) {
    console.warn("metrics poll failed", e);
  }
}

// Per-second rate of a stream metric's sum (or a delivery counter) between samples.
function series(kind, key, metric, how = "rate") {
  const out = [];
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1], b = history[i];
    const dt = Math.max((b.t - a.t) / 1000, 0.001);
    const ma = a[kind].get(key), mb = b[kind].get(key);
    if (!mb) { out.push({ t: b.t, v: 0 }); continue; }
    const va = ma ? ma[metric] : undefined, vb = mb[metric];
    if (kind === "delivery") {
      out.push({ t: b.t, v: Math.max(0, (vb || 0) - (va || 0)) / dt });
    } else if (how === "avg") {
      const dc = (vb?.count || 0) - (va?.count || 0), ds = (vb?.sum || 0) - (va?.sum || 0);
      out.push({ t: b.t, v: dc > 0 ? ds / dc : null });
    } else {
      out.push({ t: b.t, v: Math.max(0, (vb?.sum || 0) - (va?.sum || 0)) / dt });
    }
  }
  return out;
}

function latestTotal(kind, key, metric) {
  const last = history[history.length - 1];
  const m = last && last[kind].get(key);
  if (!m) return 0;
  return kind === "delivery" ? (m[metric] || 0) : (m[metric]?.sum || 0);
}

const fmt = (v) => v == null ? "–" : v >= 1e9 ? (v / 1e9).toFixed(1) + "G" : v >= 1e6 ? (v / 1e6).toFixed(1) + "M" : v >= 1e3 ? (v / 1e3).toFixed(1) + "k" : (Math.round(v * 10) / 10).toString();

// ---- charts on canvas ----
const COLORS = ["#1f6feb", "#e8833a", "#2da44e", "#d1383d", "#8250df"];

function drawChart(canvas, lines, unit) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300, h = canvas.clientHeight || 150;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const pad = { l: 44, r: 8, t: 8, b: 18 };
  let max = 0, n = 0;
  for (const l of lines) for (const p of l.points) if (p.v != null) { max = Math.max(max, p.v); n++; }
  const top = max > 0 ? niceCeil(max) : 1;
  g.strokeStyle = "#e3e6ec"; g.fillStyle = "#6b7385"; g.font = "10px system-ui, sans-serif"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (h - pad.t - pad.b) * (i / 4);
    g.beginPath(); g.moveTo(pad.l, y); g.lineTo(w - pad.r, y); g.stroke();
    g.fillText(fmt(top * (1 - i / 4)), 4, y + 3);
  }
  const t1 = history.length ? history[history.length - 1].t : Date.now();
  const span = POLL_MS * HISTORY_MAX / 2;
  const t0 = t1 - span;
  g.fillText(`${Math.round(span / 1000)}s ago`, pad.l, h - 4);
  g.fillText(`now · ${unit}`, w - pad.r - 60, h - 4);
  const x = (t) => pad.l + (w - pad.l - pad.r) * Math.max(0, (t - t0) / span);
  const y = (v) => pad.t + (h - pad.t - pad.b) * (1 - v / top);
  lines.forEach((l, i) => {
    const pts = l.points.filter((p) => p.v != null && p.t >= t0);
    if (!pts.length) return;
    g.strokeStyle = l.color || COLORS[i % COLORS.length]; g.lineWidth = 2;
    g.beginPath();
    pts.forEach((p, j) => (j ? g.lineTo(x(p.t), y(p.v)) : g.moveTo(x(p.t), y(p.v))));
    g.stroke();
    g.globalAlpha = 0.08; g.fillStyle = g.strokeStyle;
    g.lineTo(x(pts[pts.length - 1].t), y(0)); g.lineTo(x(pts[0].t), y(0)); g.closePath(); g.fill();
    g.globalAlpha = 1;
  });
  canvas.dataset.points = String(n);
  canvas.dataset.max = String(max);
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function chartCard(id, title, legend) {
  return `<div class="card"><h2>${esc(title)}</h2><canvas class="chart" id="${id}"></canvas>
    <div class="legend">${legend.map((l, i) => `<span style="--c:${COLORS[i]}">${esc(l)}</span>`).join("")}</div></div>`;
}

// ---- pages ----
function setNav(which) {
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === which));
}

function showError(e) {
  if (e.type && AUTH_ERRORS.test(e.type)) return showLogin(e);
  $("#main").innerHTML = `<div class="card error">${esc(e.message)}</div>`;
}

// The sign-in form: shown when the server refuses the console's calls for want of valid
// credentials. The keys stay in this tab (sessionStorage) and sign every call (SigV4).
function showLogin(e) {
  const secure = !!(window.crypto && crypto.subtle);
  $("#main").innerHTML = `<div class="card login"><h1>Sign in</h1>
    <p class="muted">This server checks AWS signatures. The console signs its calls in this browser with the keys you give (kept for this tab only).</p>
    ${secure ? "" : `<p class="error">This page is not a secure context (https, or http on localhost), so the browser offers no WebCrypto to sign with.</p>`}
    <p class="error" id="login-error">${credentials() ? esc(e.message) : ""}</p>
    <form id="login"><label>Access key id<input id="login-key" autocomplete="username" spellcheck="false" size="28"></label>
    <label>Secret access key<input id="login-secret" type="password" autocomplete="current-password" size="28"></label>
    <label>Session token (optional)<input id="login-token" size="28" spellcheck="false"></label>
    <button type="submit" id="login-submit">Sign in</button></form></div>`;
  $("#login").onsubmit = (ev) => {
    ev.preventDefault();
    const cred = { accessKeyId: $("#login-key").value.trim(), secretAccessKey: $("#login-secret").value, sessionToken: $("#login-token").value.trim() || undefined };
    sessionStorage.setItem("millrace.credentials", JSON.stringify(cred));
    showSignedIn();
    route();
  };
}

function showSignedIn() {
  const cred = credentials();
  const el = $("#signed-in");
  if (!el) return;
  el.innerHTML = cred ? `${esc(cred.accessKeyId)} · <a href="#" id="logout">sign out</a>` : "";
  if (cred) $("#logout").onclick = (ev) => { ev.preventDefault(); sessionStorage.removeItem("millrace.credentials"); showSignedIn(); route(); };
}

async function pageStreams() {
  setNav("streams");
  const names = await listStreams();
  const summaries = await Promise.all(names.slice(0, 200).map((n) =>
    kinesis("DescribeStreamSummary", { StreamName: n }).then((r) => r.StreamDescriptionSummary).catch(() => ({ StreamName: n, StreamStatus: "?" }))));
  $("#main").innerHTML = `
    <h1>Data streams</h1><p class="muted">${names.length} stream${names.length === 1 ? "" : "s"} in ${esc(region)}</p>
    <div class="card">${names.length ? `<table id="streams"><thead><tr><th>Stream</th><th>Status</th><th>Mode</th><th class="num">Open shards</th>
      <th class="num">Retention</th><th class="num">Records in</th><th>Throughput (records/s)</th></tr></thead><tbody>
      ${summaries.map((s) => `<tr data-stream="${esc(s.StreamName)}"><td><a href="#/stream/${encodeURIComponent(s.StreamName)}">${esc(s.StreamName)}</a></td>
        <td><span class="badge ${esc(s.StreamStatus)}">${esc(s.StreamStatus)}</span></td>
        <td>${esc(s.StreamModeDetails?.StreamMode || "PROVISIONED")}</td>
        <td class="num">${esc(s.OpenShardCount ?? "")}</td><td class="num">${esc(s.RetentionPeriodHours ?? "")} h</td>
        <td class="num total">–</td><td><canvas class="chart spark" style="height:34px"></canvas></td></tr>`).join("")}
      </tbody></table>` : `<div class="empty">No streams yet. Create one: <code>aws kinesis create-stream --stream-name demo --shard-count 2 --endpoint-url ${esc(location.origin)}</code></div>`}</div>`;
  pageUpdate = () => {
    document.querySelectorAll("#streams tbody tr").forEach((tr) => {
      const key = `${region}/${tr.dataset.stream}`;
      $(".total", tr).textContent = fmt(latestTotal("streams", key, "IncomingRecords"));
      drawChart($("canvas", tr), [{ points: series("streams", key, "IncomingRecords") }], "rec/s");
    });
  };
  pageUpdate();
}

function shardMap(shards) {
  const byId = new Map(shards.map((s) => [s.ShardId, s]));
  const depth = new Map();
  const depthOf = (s, guard = 0) => {
    if (depth.has(s.ShardId)) return depth.get(s.ShardId);
    let d = 0;
    for (const p of [s.ParentShardId, s.AdjacentParentShardId]) {
      const ps = p && byId.get(p);
      if (ps && guard < 64) d = Math.max(d, depthOf(ps, guard + 1) + 1);
    }
    depth.set(s.ShardId, d);
    return d;
  };
  shards.forEach((s) => depthOf(s));
  const rows = Math.max(1, ...[...depth.values()].map((d) => d + 1));
  const W = 1000, rowH = 34, gap = 22, top = 18;
  const H = top + rows * (rowH + gap);
  const frac = (v) => Number((BigInt(v) * 100000n) / HASH_SPACE) / 100000;
  const box = (s) => {
    const x0 = frac(s.HashKeyRange.StartingHashKey) * W, x1 = (frac(s.HashKeyRange.EndingHashKey) + 1e-5) * W;
    const y = top + depth.get(s.ShardId) * (rowH + gap);
    return { x0, x1, y };
  };
  let out = `<svg class="shards" viewBox="0 0 ${W} ${H}" role="img" aria-label="shards on the hash-key space">`;
  out += `<text x="0" y="11" fill="#6b7385">hash key 0</text><text x="${W}" y="11" fill="#6b7385" text-anchor="end">2¹²⁸ − 1</text>`;
  for (const s of shards) {
    const b = box(s);
    for (const p of [s.ParentShardId, s.AdjacentParentShardId]) {
      const ps = p && byId.get(p);
      if (!ps) continue;
      const pb = box(ps);
      out += `<path d="M${(pb.x0 + pb.x1) / 2},${pb.y + rowH} C${(pb.x0 + pb.x1) / 2},${pb.y + rowH + gap / 2} ${(b.x0 + b.x1) / 2},${b.y - gap / 2} ${(b.x0 + b.x1) / 2},${b.y}" stroke="#9aa6bd" fill="none"/>`;
    }
  }
  for (const s of shards) {
    const b = box(s);
    const open = !s.SequenceNumberRange?.EndingSequenceNumber;
    const idx = Number(s.ShardId.split("-").pop());
    out += `<g class="shard ${open ? "open" : "closed"}" data-shard="${esc(s.ShardId)}"><title>${esc(s.ShardId)}${open ? "" : " (closed)"}\n${esc(s.HashKeyRange.StartingHashKey)} – ${esc(s.HashKeyRange.EndingHashKey)}</title>
      <rect x="${b.x0 + 1}" y="${b.y}" width="${Math.max(2, b.x1 - b.x0 - 2)}" height="${rowH}" rx="4" fill="${open ? "#1f6feb" : "#c9cfdb"}" fill-opacity="${open ? 0.85 : 1}"/>
      ${b.x1 - b.x0 > 40 ? `<text x="${(b.x0 + b.x1) / 2}" y="${b.y + rowH / 2 + 4}" text-anchor="middle" fill="${open ? "#fff" : "#555"}">${idx}</text>` : ""}</g>`;
  }
  return out + "</svg>";
}

async function pageStream(name) {
  setNav("streams");
  const [summary, shards] = await Promise.all([
    kinesis("DescribeStreamSummary", { StreamName: name }).then((r) => r.StreamDescriptionSummary),
    listShards(name),
  ]);
  const consumers = await kinesis("ListStreamConsumers", { StreamARN: summary.StreamARN }).then((r) => r.Consumers || []).catch(() => []);
  const open = shards.filter((s) => !s.SequenceNumberRange?.EndingSequenceNumber);
  $("#main").innerHTML = `
    <h1>${esc(name)} <span class="badge ${esc(summary.StreamStatus)}">${esc(summary.StreamStatus)}</span></h1>
    <p class="muted">${esc(summary.StreamARN)}</p>
    <div class="grid">
      <div class="card"><h2>Summary</h2><dl class="kv">
        <dt>Mode</dt><dd>${esc(summary.StreamModeDetails?.StreamMode || "PROVISIONED")}</dd>
        <dt>Open shards</dt><dd>${open.length} (${shards.length} with closed)</dd>
        <dt>Retention</dt><dd>${esc(summary.RetentionPeriodHours)} hours</dd>
        <dt>Encryption</dt><dd>${esc(summary.EncryptionType || "NONE")}</dd>
        <dt>Consumers</dt><dd>${esc(summary.ConsumerCount ?? consumers.length)}</dd>
        <dt>Created</dt><dd>${esc(new Date((summary.StreamCreationTimestamp || 0) * 1000).toLocaleString())}</dd></dl></div>
      <div class="card"><h2>Records in</h2><div class="big" id="total-in">–</div><div class="muted">since start · <span id="rate-in">–</span> records/s now</div>
        <h2 style="margin-top:12px">Records read</h2><div class="big" id="total-out">–</div></div>
    </div>
    <div class="card" style="margin-top:16px"><h2>Shards on the hash-key space</h2>${shardMap(shards)}
      <div class="legend"><span style="--c:#1f6feb">open</span><span style="--c:#c9cfdb">closed (parent)</span> rows are generations: a split or merge draws its children below</div></div>
    <div class="grid">
      ${chartCard("chart-in", "Incoming throughput", ["records/s", "KiB/s"])}
      ${chartCard("chart-throttle", "Throttles", ["write exceeded/s", "read exceeded/s"])}
      ${chartCard("chart-age", "Iterator age", ["GetRecords.IteratorAgeMilliseconds"])}
      ${chartCard("chart-out", "Reads", ["GetRecords records/s", "SubscribeToShard records/s"])}
    </div>
    <div class="card" style="margin-top:16px"><h2>Consumers</h2>${consumers.length ? `<table><thead><tr><th>Name</th><th>Status</th><th>ARN</th></tr></thead><tbody>
      ${consumers.map((c) => `<tr><td>${esc(c.ConsumerName)}</td><td><span class="badge ${esc(c.ConsumerStatus)}">${esc(c.ConsumerStatus)}</span></td><td class="muted">${esc(c.ConsumerARN)}</td></tr>`).join("")}</tbody></table>`
      : `<div class="empty">No enhanced fan-out consumers.</div>`}</div>
    <div class="card" id="browser"><h2>Record browser</h2>
      <div class="controls">
        <label>Shard<select id="rb-shard">${shards.map((s) => `<option>${esc(s.ShardId)}</option>`).join("")}</select></label>
        <label>Start<select id="rb-type"><option>TRIM_HORIZON</option><option>LATEST</option><option>AT_SEQUENCE_NUMBER</option><option>AFTER_SEQUENCE_NUMBER</option><option>AT_TIMESTAMP</option></select></label>
        <label>Sequence number / timestamp<input id="rb-pos" size="30" placeholder="for AT_/AFTER_ and AT_TIMESTAMP"></label>
        <label>Limit<input id="rb-limit" type="number" value="25" min="1" max="10000" style="width:80px"></label>
        <label>Decode<select id="rb-decode"><option value="auto">auto</option><option value="utf8">UTF-8</option><option value="json">JSON</option><option value="hex">hex</option></select></label>
        <button id="rb-read">Read</button><button id="rb-next" class="secondary" disabled>Next page</button>
      </div>
      <div id="rb-out" class="muted">Pick a position and read.</div></div>`;
  const key = `${region}/${name}`;
  pageUpdate = () => {
    $("#total-in").textContent = fmt(latestTotal("streams", key, "IncomingRecords"));
    $("#total-out").textContent = fmt(latestTotal("streams", key, "GetRecords.Records") + latestTotal("streams", key, "SubscribeToShardEvent.Records"));
    const rin = series("streams", key, "IncomingRecords");
    $("#rate-in").textContent = fmt(rin.length ? rin[rin.length - 1].v : null);
    drawChart($("#chart-in"), [{ points: rin }, { points: series("streams", key, "IncomingBytes").map((p) => ({ t: p.t, v: p.v / 1024 })) }], "per s");
    drawChart($("#chart-throttle"), [{ points: series("streams", key, "WriteProvisionedThroughputExceeded") }, { points: series("streams", key, "ReadProvisionedThroughputExceeded") }], "per s");
    drawChart($("#chart-age"), [{ points: series("streams", key, "GetRecords.IteratorAgeMilliseconds", "avg") }], "ms");
    drawChart($("#chart-out"), [{ points: series("streams", key, "GetRecords.Records") }, { points: series("streams", key, "SubscribeToShardEvent.Records") }], "per s");
  };
  pageUpdate();
  recordBrowser(name);
}

function decode(b64, mode) {
  const bin = atob(b64);
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  const hex = () => ({ kind: "hex", text: Array.from(bytes.slice(0, 4096), (b) => b.toString(16).padStart(2, "0")).join(" ") + (bytes.length > 4096 ? " …" : "") });
  if (mode === "hex") return hex();
  let text;
  try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch (_) { return hex(); }
  if (mode === "utf8") return { kind: "utf8", text };
  try {
    const v = JSON.parse(text);
    if (mode === "json" || (typeof v === "object" && v !== null)) return { kind: "json", text: JSON.stringify(v, null, 2) };
  } catch (_) {
    if (mode === "json") return { kind: "utf8", text };
  }
  return { kind: "utf8", text };
}

function recordBrowser(stream) {
  let next = null;
  const show = async (iterator) => {
    const limit = Math.min(10000, Math.max(1, Number($("#rb-limit").value) || 25));
    const r = await kinesis("GetRecords", { ShardIterator: iterator, Limit: limit });
    next = r.NextShardIterator || null;
    $("#rb-next").disabled = !next;
    const mode = $("#rb-decode").value;
    const recs = r.Records || [];
    $("#rb-out").innerHTML = recs.length ? `<table id="records"><thead><tr><th>Sequence number</th><th>Partition key</th><th>Arrival</th><th>Data</th></tr></thead><tbody>
      ${recs.map((rec) => {
        const d = decode(rec.Data, mode);
        return `<tr class="record"><td class="muted" style="font-size:11px;word-break:break-all;max-width:220px">${esc(rec.SequenceNumber)}</td><td>${esc(rec.PartitionKey)}</td>
          <td class="muted">${esc(new Date((rec.ApproximateArrivalTimestamp || 0) * 1000).toLocaleTimeString())}</td>
          <td><span class="tag ${d.kind}">${d.kind}</span><pre class="data">${esc(d.text)}</pre></td></tr>`;
      }).join("")}</tbody></table><p class="muted">${recs.length} records · ${esc(r.MillisBehindLatest ?? 0)} ms behind latest</p>`
      : `<div class="empty">No records at this position${r.MillisBehindLatest ? ` (${r.MillisBehindLatest} ms behind latest: try Next page)` : ""}.</div>`;
  };
  $("#rb-read").onclick = async () => {
    try {
      const type = $("#rb-type").value, pos = $("#rb-pos").value.trim();
      const body = { StreamName: stream, ShardId: $("#rb-shard").value, ShardIteratorType: type };
      if (type.endsWith("SEQUENCE_NUMBER")) body.StartingSequenceNumber = pos;
      if (type === "AT_TIMESTAMP") body.Timestamp = isNaN(Number(pos)) ? Date.parse(pos) / 1000 : Number(pos);
      const it = await kinesis("GetShardIterator", body);
      await show(it.ShardIterator);
    } catch (e) {
      $("#rb-out").innerHTML = `<span class="error">${esc(e.message)}</span>`;
    }
  };
  $("#rb-next").onclick = async () => {
    if (!next) return;
    try { await show(next); } catch (e) { $("#rb-out").innerHTML = `<span class="error">${esc(e.message)}</span>`; }
  };
}

async function pageFirehose() {
  setNav("firehose");
  const list = await firehose("ListDeliveryStreams", { Limit: 100 });
  const names = list.DeliveryStreamNames || [];
  const descs = await Promise.all(names.map((n) => firehose("DescribeDeliveryStream", { DeliveryStreamName: n }).then((r) => r.DeliveryStreamDescription).catch(() => ({ DeliveryStreamName: n }))));
  const dest = (d) => {
    const x = (d.Destinations || [])[0] || {};
    if (x.ExtendedS3DestinationDescription || x.S3DestinationDescription) {
      const s = x.ExtendedS3DestinationDescription || x.S3DestinationDescription;
      return `S3 ${(s.BucketARN || "").replace("arn:aws:s3:::", "")}/${s.Prefix || ""}`;
    }
    if (x.HttpEndpointDestinationDescription) return `HTTP ${x.HttpEndpointDestinationDescription.EndpointConfiguration?.Url || ""}`;
    if (x.RedshiftDestinationDescription) return "Redshift (PostgreSQL)";
    if (x.IcebergDestinationDescription) return "Iceberg";
    return "–";
  };
  $("#main").innerHTML = `<h1>Delivery streams</h1><p class="muted">${names.length} in ${esc(region)}</p>
    <div class="card">${names.length ? `<table id="delivery"><thead><tr><th>Name</th><th>Status</th><th>Source</th><th>Destination</th><th class="num">Records in</th><th class="num">Delivered</th><th class="num">Failures</th><th>Records in/s</th></tr></thead><tbody>
    ${descs.map((d) => `<tr data-name="${esc(d.DeliveryStreamName)}"><td>${esc(d.DeliveryStreamName)}</td><td><span class="badge ${esc(d.DeliveryStreamStatus)}">${esc(d.DeliveryStreamStatus)}</span></td>
      <td>${esc(d.DeliveryStreamType || "")}${d.Source?.KinesisStreamSourceDescription ? `<br><span class="muted">${esc(d.Source.KinesisStreamSourceDescription.KinesisStreamARN.split("/").pop())}</span>` : ""}</td>
      <td>${esc(dest(d))}${d.FailureDescription ? `<br><span class="error">${esc(d.FailureDescription.Type)}: ${esc(d.FailureDescription.Details)}</span>` : ""}</td>
      <td class="num in">–</td><td class="num out">–</td><td class="num fail">–</td><td><canvas class="chart" style="height:34px"></canvas></td></tr>`).join("")}</tbody></table>`
      : `<div class="empty">No delivery streams.</div>`}</div>`;
  pageUpdate = () => {
    document.querySelectorAll("#delivery tbody tr").forEach((tr) => {
      const key = `${region}/${tr.dataset.name}`;
      const last = history.length ? history[history.length - 1].delivery.get(key) || {} : {};
      const delivered = ["DeliveryToS3.Records", "DeliveryToHttpEndpoint.Records", "DeliveryToRedshift.Records"].reduce((a, k) => a + (last[k] || 0), 0);
      $(".in", tr).textContent = fmt(last.IncomingRecords || last["DataReadFromKinesisStream.Records"] || 0);
      $(".out", tr).textContent = fmt(delivered);
      $(".fail", tr).textContent = fmt((last["FailedConversion.Records"] || 0) + (last.ThrottledRecords || 0));
      drawChart($("canvas", tr), [{ points: series("delivery", key, "IncomingRecords") }], "rec/s");
    });
  };
  pageUpdate();
}

// ---- analytics applications ----
// The running totals of an application's flows: {Input: {id: metrics}, Output: {...}}.
function analyticsTotals(name) {
  const last = history[history.length - 1];
  const out = { Input: {}, Output: {} };
  for (const [key, m] of (last?.analytics || new Map())) {
    const [, r, app, flow, id] = key.split("/");
    if (r === region && app === name && out[flow]) out[flow][id] = m;
  }
  return out;
}

async function pageAnalytics() {
  setNav("analytics");
  const list = await analytics("ListApplications", { Limit: 50 });
  const apps = list.ApplicationSummaries || [];
  $("#main").innerHTML = `<h1>Analytics applications</h1><p class="muted">${apps.length} in ${esc(region)}</p>
    <div class="card">${apps.length ? `<table id="applications"><thead><tr><th>Application</th><th>Status</th><th class="num">Records in</th><th class="num">Records out</th></tr></thead><tbody>
    ${apps.map((a) => `<tr data-name="${esc(a.ApplicationName)}"><td><a href="#/analytics/${encodeURIComponent(a.ApplicationName)}">${esc(a.ApplicationName)}</a></td>
      <td><span class="badge ${esc(a.ApplicationStatus)}">${esc(a.ApplicationStatus)}</span></td><td class="num in">–</td><td class="num out">–</td></tr>`).join("")}</tbody></table>`
      : `<div class="empty">No SQL applications.</div>`}</div>`;
  pageUpdate = () => {
    document.querySelectorAll("#applications tbody tr").forEach((tr) => {
      const t = analyticsTotals(tr.dataset.name);
      const sum = (flow) => Object.values(t[flow]).reduce((a, m) => a + (m.Records || 0), 0);
      $(".in", tr).textContent = fmt(sum("Input"));
      $(".out", tr).textContent = fmt(sum("Output"));
    });
  };
  pageUpdate();
}

async function pageApplication(name) {
  setNav("analytics");
  const d = (await analytics("DescribeApplication", { ApplicationName: name })).ApplicationDetail;
  const arnName = (arn) => String(arn || "").split("/").pop();
  const streamLink = (arn) => arn && arn.includes(":kinesis:") && arn.includes(":stream/")
    ? `<a href="#/stream/${encodeURIComponent(arnName(arn))}">${esc(arnName(arn))}</a>` : esc(arn || "–");
  const inputs = d.InputDescriptions || [], outputs = d.OutputDescriptions || [];
  $("#main").innerHTML = `<h1>${esc(name)} <span class="badge ${esc(d.ApplicationStatus)}">${esc(d.ApplicationStatus)}</span></h1>
    <p class="muted">${esc(d.ApplicationARN)} · version ${esc(d.ApplicationVersionId)}</p>
    <div class="grid">
      <div class="card"><h2>Inputs</h2><table id="inputs"><thead><tr><th>Id</th><th>In-application stream</th><th>Source</th><th class="num">Records read</th><th class="num">Bytes</th></tr></thead><tbody>
        ${inputs.map((i) => `<tr data-id="${esc(i.InputId)}"><td>${esc(i.InputId)}</td><td>${esc((i.InAppStreamNames || [i.NamePrefix]).join(", "))}</td>
          <td>${streamLink(i.KinesisStreamsInputDescription?.ResourceARN || i.KinesisFirehoseInputDescription?.ResourceARN)}</td><td class="num records">–</td><td class="num bytes">–</td></tr>`).join("")}</tbody></table></div>
      <div class="card"><h2>Outputs</h2><table id="outputs"><thead><tr><th>Id</th><th>In-application stream</th><th>Destination (recent rows: its record browser)</th><th class="num">Records sent</th><th class="num">Deliveries</th></tr></thead><tbody>
        ${outputs.map((o) => `<tr data-id="${esc(o.OutputId)}"><td>${esc(o.OutputId)}</td><td>${esc(o.Name)}</td>
          <td>${streamLink(o.KinesisStreamsOutputDescription?.ResourceARN || o.KinesisFirehoseOutputDescription?.ResourceARN || o.LambdaOutputDescription?.ResourceARN)}</td><td class="num records">–</td><td class="num success">–</td></tr>`).join("")}</tbody></table></div>
    </div>
    <div class="card" style="margin-top:16px"><h2>SQL code</h2><pre class="data sql" id="sql">${esc(d.ApplicationCode || "")}</pre></div>`;
  pageUpdate = () => {
    const t = analyticsTotals(name);
    for (const [table, flow] of [["#inputs", "Input"], ["#outputs", "Output"]]) {
      document.querySelectorAll(`${table} tbody tr`).forEach((tr) => {
        const m = t[flow][tr.dataset.id] || {};
        $(".records", tr).textContent = fmt(m.Records || 0);
        const other = $(".bytes", tr) || $(".success", tr);
        other.textContent = fmt((flow === "Input" ? m.Bytes : m.Success) || 0);
      });
    }
  };
  pageUpdate();
}

// ---- video streams ----
function videoTotals(name) {
  const last = history[history.length - 1];
  return last?.video?.get(`${region}/${name}`) || {};
}

async function pageVideo() {
  setNav("video");
  const list = await kvs("/listStreams", { MaxResults: 100 });
  const streams = list.StreamInfoList || [];
  $("#main").innerHTML = `<h1>Video streams</h1><p class="muted">${streams.length} in ${esc(region)}</p>
    <div class="card">${streams.length ? `<table id="video-streams"><thead><tr><th>Stream</th><th>Status</th><th>Media type</th><th class="num">Retention</th><th class="num">Fragments in</th><th class="num">Bytes in</th></tr></thead><tbody>
    ${streams.map((s) => `<tr data-name="${esc(s.StreamName)}"><td><a href="#/video/${encodeURIComponent(s.StreamName)}">${esc(s.StreamName)}</a></td>
      <td><span class="badge ${esc(s.Status)}">${esc(s.Status)}</span></td><td>${esc(s.MediaType || "–")}</td><td class="num">${esc(s.DataRetentionInHours ?? 0)} h</td>
      <td class="num frags">–</td><td class="num bytes">–</td></tr>`).join("")}</tbody></table>`
      : `<div class="empty">No video streams.</div>`}</div>`;
  pageUpdate = () => {
    document.querySelectorAll("#video-streams tbody tr").forEach((tr) => {
      const m = videoTotals(tr.dataset.name);
      $(".frags", tr).textContent = fmt(m["PutMedia.IncomingFragments"] || 0);
      $(".bytes", tr).textContent = fmt(m["PutMedia.IncomingBytes"] || 0);
    });
  };
  pageUpdate();
}

const FRAGMENTS_SHOWN_MAX = 200;

async function pageVideoStream(name) {
  setNav("video");
  const info = (await kvs("/describeStream", { StreamName: name })).StreamInfo;
  const fragments = [];
  let body = { StreamName: name, MaxResults: 1000 };
  for (let page = 0; page < 10; page++) {
    const r = await kvs("/listFragments", body);
    fragments.push(...(r.Fragments || []));
    if (!r.NextToken) break;
    body = { StreamName: name, NextToken: r.NextToken, MaxResults: 1000 };
  }
  fragments.sort((a, b) => (a.ProducerTimestamp || 0) - (b.ProducerTimestamp || 0));
  const shown = fragments.slice(-FRAGMENTS_SHOWN_MAX);
  const time = (t) => new Date((t || 0) * 1000).toLocaleTimeString();
  $("#main").innerHTML = `<h1>${esc(name)} <span class="badge ${esc(info.Status)}">${esc(info.Status)}</span></h1>
    <p class="muted">${esc(info.StreamARN)} · ${esc(info.MediaType || "")} · retention ${esc(info.DataRetentionInHours ?? 0)} h</p>
    <div class="grid">
      <div class="card"><h2>Live playback (HLS, fMP4, Media Source Extensions)</h2>
        <video id="player" muted playsinline controls style="width:100%;background:#000;aspect-ratio:16/9"></video>
        <div class="controls"><button id="play" ${fragments.length ? "" : "disabled"}>Play from the first fragment</button><span class="muted" id="player-status"></span></div></div>
      <div class="card"><h2>Ingest</h2><dl class="kv"><dt>Fragments stored</dt><dd id="n-fragments">${fragments.length}</dd>
        <dt>Fragments in</dt><dd id="frags-in">–</dd><dt>Frames in</dt><dd id="frames-in">–</dd><dt>Bytes in</dt><dd id="bytes-in">–</dd></dl></div>
    </div>
    <div class="card" style="margin-top:16px"><h2>Fragments${fragments.length > shown.length ? ` (the newest ${shown.length})` : ""}</h2>
      ${shown.length ? `<table id="fragments"><thead><tr><th>Fragment number</th><th>Producer time</th><th>Server time</th><th class="num">Length (ms)</th><th class="num">Size</th></tr></thead><tbody>
      ${shown.map((f) => `<tr class="fragment"><td class="muted" style="font-size:11px">${esc(f.FragmentNumber)}</td><td>${esc(time(f.ProducerTimestamp))}</td><td>${esc(time(f.ServerTimestamp))}</td>
        <td class="num">${esc(f.FragmentLengthInMilliseconds)}</td><td class="num">${esc(fmt(f.FragmentSizeInBytes))}</td></tr>`).join("")}</tbody></table>`
      : `<div class="empty">No fragments yet: upload with PutMedia.</div>`}</div>`;
  pageUpdate = () => {
    const m = videoTotals(name);
    $("#frags-in").textContent = fmt(m["PutMedia.IncomingFragments"] || 0);
    $("#frames-in").textContent = fmt(m["PutMedia.IncomingFrames"] || 0);
    $("#bytes-in").textContent = fmt(m["PutMedia.IncomingBytes"] || 0);
  };
  pageUpdate();
  $("#play").onclick = () => {
    const start = Math.min(...fragments.map((f) => f.ServerTimestamp || 0));
    playHls(name, start).catch((e) => { $("#player-status").textContent = e.message; $("#player").dataset.error = e.message; });
  };
}

// The `avc1.PPCCLL` codec string from the avcC box of an fMP4 init segment.
function avcCodec(bytes) {
  for (let i = 4; i + 8 < bytes.length; i++) {
    if (bytes[i] === 0x61 && bytes[i + 1] === 0x76 && bytes[i + 2] === 0x63 && bytes[i + 3] === 0x43) {
      const h = (b) => b.toString(16).padStart(2, "0");
      return `avc1.${h(bytes[i + 5])}${h(bytes[i + 6])}${h(bytes[i + 7])}`;
    }
  }
  return "avc1.42E01E";
}

const PLAYLIST_POLL_MS = 2000;
const PLAYER_SEGMENTS_MAX = 10000;
let playerRun = 0; // a new playback (or page) stops the previous one

// Plays an HLS session with MSE: the media playlist's EXT-X-MAP init segment, then every
// media fragment in order, polling the playlist for new ones (LIVE_REPLAY from `start`).
async function playHls(name, start) {
  const run = ++playerRun;
  const status = (t) => { $("#player-status").textContent = t; };
  const session = await kvs("/getHLSStreamingSessionURL", {
    StreamName: name, PlaybackMode: "LIVE_REPLAY",
    HLSFragmentSelector: { FragmentSelectorType: "SERVER_TIMESTAMP", TimestampRange: { StartTimestamp: start } },
  });
  const base = new URL(session.HLSStreamingSessionURL, location.href);
  const fetchText = async (url) => { const r = await fetch(url); if (!r.ok) throw new Error(`${url.pathname}: ${r.status}`); return r.text(); };
  const fetchBytes = async (url) => { const r = await fetch(url); if (!r.ok) throw new Error(`${url.pathname}: ${r.status}`); return new Uint8Array(await r.arrayBuffer()); };
  const master = await fetchText(base);
  const mediaLine = master.split("\n").map((l) => l.trim()).find((l) => l && !l.startsWith("#"));
  if (!mediaLine) throw new Error("the master playlist names no media playlist");
  const mediaUrl = new URL(mediaLine, base);
  const video = $("#player");
  let playlist = await fetchText(mediaUrl);
  const map = /#EXT-X-MAP:URI="([^"]+)"/.exec(playlist);
  if (!map) throw new Error("the media playlist has no EXT-X-MAP init segment");
  const init = await fetchBytes(new URL(map[1], mediaUrl));
  const type = `video/mp4; codecs="${avcCodec(init)}"`;
  video.dataset.codec = type;
  video.dataset.supported = String(window.MediaSource ? MediaSource.isTypeSupported(type) : false);
  if (!window.MediaSource || !MediaSource.isTypeSupported(type)) throw new Error(`this browser cannot play ${type}`);
  const source = new MediaSource();
  video.src = URL.createObjectURL(source);
  await new Promise((ok) => source.addEventListener("sourceopen", ok, { once: true }));
  const buffer = source.addSourceBuffer(type);
  const append = (bytes) => new Promise((ok, fail) => {
    buffer.addEventListener("updateend", ok, { once: true });
    buffer.addEventListener("error", () => fail(new Error("the browser refused a segment")), { once: true });
    buffer.appendBuffer(bytes);
  });
  await append(init);
  const done = new Set();
  let appended = 0;
  while (run === playerRun && document.body.contains(video) && appended < PLAYER_SEGMENTS_MAX) {
    const uris = playlist.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    for (const uri of uris) {
      const number = /FragmentNumber=(\d+)/.exec(uri)?.[1] || uri;
      if (done.has(number)) continue;
      done.add(number);
      await append(await fetchBytes(new URL(uri, mediaUrl)));
      appended++;
      video.dataset.segments = String(appended);
      status(`${appended} fragment${appended === 1 ? "" : "s"} buffered`);
      if (appended === 1) {
        // Fragments carry their own timeline (producer time), not 0: start where they are.
        if (buffer.buffered.length && video.currentTime < buffer.buffered.start(0)) video.currentTime = buffer.buffered.start(0);
        video.play().catch(() => {});
      }
    }
    if (/#EXT-X-ENDLIST/.test(playlist)) break;
    await new Promise((ok) => setTimeout(ok, PLAYLIST_POLL_MS));
    playlist = await fetchText(mediaUrl);
  }
}

async function route() {
  pageUpdate = null;
  playerRun++;
  const hash = location.hash || "#/";
  try {
    if (hash.startsWith("#/stream/")) await pageStream(decodeURIComponent(hash.slice(9)));
    else if (hash.startsWith("#/firehose")) await pageFirehose();
    else if (hash.startsWith("#/analytics/")) await pageApplication(decodeURIComponent(hash.slice(12)));
    else if (hash.startsWith("#/analytics")) await pageAnalytics();
    else if (hash.startsWith("#/video/")) await pageVideoStream(decodeURIComponent(hash.slice(8)));
    else if (hash.startsWith("#/video")) await pageVideo();
    else await pageStreams();
    document.body.dataset.page = hash;
  } catch (e) {
    showError(e);
  }
}

$("#region").value = region;
showSignedIn();
$("#region").addEventListener("change", (e) => {
  region = e.target.value.trim() || "us-east-1";
  localStorage.setItem("millrace.region", region);
  route();
});
window.addEventListener("hashchange", route);
window.addEventListener("resize", () => pageUpdate && pageUpdate());
clearInterval(routeTimer);
poll().then(route);
setInterval(poll, POLL_MS);
