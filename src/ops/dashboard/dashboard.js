// weatherflow dashboard: polls the process's JSON API and draws the station list, a forecast
// chart (newest forecast with its interval band, the forecast of 24 h before with its band, and
// the actuals), rolling verification by lead, the anomaly feed, and cluster throughput and lag.
"use strict";

const REFRESH_MS = 5000;
let selected = new URLSearchParams(location.search).get("station");

function fmt(x, digits) {
  return x === null || x === undefined || Number.isNaN(x) ? "-" : Number(x).toFixed(digits);
}

function text(tag, content, cls) {
  const e = document.createElement(tag);
  e.textContent = content;
  if (cls) e.className = cls;
  return e;
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) {
    let msg = r.status + "";
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r.json();
}

async function refreshCluster() {
  try {
    const c = await getJson("/api/cluster");
    document.getElementById("k-up").textContent = c.up + "/" + c.processes.length;
    document.getElementById("k-in").textContent = fmt(c.in_per_s, 1);
    document.getElementById("k-out").textContent = fmt(c.out_per_s, 1);
    document.getElementById("k-lag").textContent = c.lag === null ? "?" : c.lag;
    const ck = c.last_checkpoint;
    document.getElementById("k-ckpt").textContent = ck ? (ck.epoch === null ? "final" : fmt(ck.age_s, 0) + " s ago") : "none";
    document.getElementById("k-models").textContent = c.models.filter(m => m.kind === "forecast").map(m => m.model).join(", ");
  } catch (e) {
    document.getElementById("k-up").textContent = "?";
  }
}

async function refreshStations() {
  const body = document.querySelector("#stations tbody");
  const note = document.getElementById("stations-note");
  let list;
  try {
    list = await getJson("/api/stations");
  } catch (e) {
    note.textContent = e.message;
    return;
  }
  note.textContent = list.length ? "" : "no predictions verified yet";
  body.replaceChildren();
  if (!selected && list.length) selected = list[0].station_id;
  for (const s of list) {
    const tr = document.createElement("tr");
    tr.className = "station" + (s.station_id === selected ? " selected" : "");
    tr.appendChild(text("td", s.station_id, s.below_persistence ? "alert" : ""));
    tr.appendChild(text("td", s.latest_origin ? s.latest_origin.slice(5, 13).replace("T", " ") + "Z" : "-"));
    tr.appendChild(text("td", fmt(s.observed_temperature, 1)));
    tr.appendChild(text("td", fmt(s.mae, 2)));
    tr.appendChild(text("td", fmt(s.coverage, 2)));
    tr.appendChild(text("td", fmt(s.skill, 2), s.skill !== null && s.skill < 0 ? "alert" : ""));
    tr.onclick = () => { selected = s.station_id; history.replaceState(null, "", "?station=" + encodeURIComponent(selected)); refreshAll(); };
    body.appendChild(tr);
  }
}

const NS = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}

function band(points, x, y) {
  const pts = points.filter(p => p.lower !== null && p.upper !== null);
  if (pts.length < 2) return null;
  const top = pts.map(p => x(p.t) + "," + y(p.upper));
  const bottom = pts.slice().reverse().map(p => x(p.t) + "," + y(p.lower));
  return top.concat(bottom).join(" ");
}

function line(points, x, y, key) {
  return points.filter(p => p[key] !== null && p[key] !== undefined).map(p => x(p.t) + "," + y(p[key])).join(" ");
}

function drawChart(st) {
  const holder = document.getElementById("chart-svg");
  document.getElementById("chart-title").textContent = "Forecast: " + st.station_id + (st.alert && st.alert.state === "below_persistence" ? " (below persistence)" : "");
  const pts = f => (f ? f.forecast || f.points : []).map(p => ({ t: Date.parse(p.valid_at), temperature: p.temperature, lower: p.lower, upper: p.upper }));
  const latest = pts(st.latest);
  const earlier = pts(st.earlier);
  const actual = (st.actuals || []).map(([t, v]) => ({ t: Date.parse(t), v }));
  const all = latest.concat(earlier);
  const ts = all.map(p => p.t).concat(actual.map(p => p.t));
  const vs = all.flatMap(p => [p.lower, p.upper, p.temperature]).concat(actual.map(p => p.v)).filter(v => v !== null && v !== undefined);
  if (ts.length < 2 || vs.length < 2) {
    holder.replaceChildren(text("p", "no forecast for this station yet", "muted"));
    return;
  }
  const W = 860, H = 340, L = 48, R = 12, T = 12, B = 30;
  const t0 = Math.min(...ts), t1 = Math.max(...ts);
  let v0 = Math.min(...vs), v1 = Math.max(...vs);
  const pad = Math.max(0.5, (v1 - v0) * 0.08); v0 -= pad; v1 += pad;
  const x = t => (L + (t - t0) / Math.max(1, t1 - t0) * (W - L - R)).toFixed(1);
  const y = v => (T + (v1 - v) / (v1 - v0) * (H - T - B)).toFixed(1);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "forecast chart" });
  svg.appendChild(svgEl("rect", { x: 0, y: 0, width: W, height: H, fill: "#ffffff" }));
  const step = Math.max(1, Math.ceil((v1 - v0) / 8));
  for (let v = Math.ceil(v0); v <= v1; v += step) {
    svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#eeeeee" }));
    const label = svgEl("text", { x: L - 6, y: Number(y(v)) + 4, "text-anchor": "end", "font-size": 11, fill: "#666666" });
    label.textContent = v + "°";
    svg.appendChild(label);
  }
  for (let t = Math.ceil(t0 / 21600000) * 21600000; t <= t1; t += 21600000) {
    const d = new Date(t);
    const label = svgEl("text", { x: x(t), y: H - 10, "text-anchor": "middle", "font-size": 11, fill: "#666666" });
    label.textContent = d.getUTCHours() === 0 ? d.toISOString().slice(5, 10) : String(d.getUTCHours()).padStart(2, "0") + "Z";
    svg.appendChild(label);
  }
  const eb = band(earlier, x, y);
  if (eb) svg.appendChild(svgEl("polygon", { points: eb, fill: "#fdd0a2" }));
  const lb = band(latest, x, y);
  if (lb) svg.appendChild(svgEl("polygon", { points: lb, fill: "#9ecae1" }));
  if (earlier.length) svg.appendChild(svgEl("polyline", { points: line(earlier, x, y, "temperature"), fill: "none", stroke: "#ff7f0e", "stroke-width": 2, "stroke-dasharray": "6 4" }));
  if (latest.length) svg.appendChild(svgEl("polyline", { points: line(latest, x, y, "temperature"), fill: "none", stroke: "#1f5fa8", "stroke-width": 3 }));
  if (actual.length) svg.appendChild(svgEl("polyline", { points: line(actual, x, y, "v"), fill: "none", stroke: "#d62728", "stroke-width": 3 }));
  if (st.latest) {
    const o = Date.parse(st.latest.window_end);
    svg.appendChild(svgEl("line", { x1: x(o), x2: x(o), y1: T, y2: H - B, stroke: "#999999", "stroke-dasharray": "2 3" }));
  }
  holder.replaceChildren(svg);
}

async function refreshChart() {
  if (!selected) return;
  try {
    drawChart(await getJson("/api/stations/" + encodeURIComponent(selected)));
  } catch (e) {
    document.getElementById("chart-title").textContent = "Forecast: " + selected;
    document.getElementById("chart-svg").replaceChildren(text("p", e.message, "muted"));
  }
}

async function refreshMetrics() {
  const body = document.querySelector("#leads tbody");
  try {
    const m = await getJson("/api/model-metrics");
    body.replaceChildren();
    if (!m.overall) return;
    for (const r of m.overall.metrics.leads.concat([m.overall.metrics.all])) {
      if (r.lead_hours !== 0 && ![1, 3, 6, 12, 18, 24].includes(r.lead_hours)) continue;
      const tr = document.createElement("tr");
      tr.appendChild(text("td", r.lead_hours === 0 ? "all" : r.lead_hours));
      tr.appendChild(text("td", r.pairs));
      tr.appendChild(text("td", fmt(r.mae, 2)));
      tr.appendChild(text("td", fmt(r.persistence_mae, 2)));
      tr.appendChild(text("td", fmt(r.skill, 2), r.skill !== null && r.skill < 0 ? "alert" : ""));
      tr.appendChild(text("td", fmt(r.coverage, 3)));
      body.appendChild(tr);
    }
  } catch (e) { /* the stations list shows the reason */ }
}

async function refreshAnomalies() {
  const ul = document.getElementById("anomalies");
  try {
    const list = await getJson("/api/anomalies?limit=20");
    ul.replaceChildren();
    if (!list.length) ul.appendChild(text("li", "none", "muted"));
    for (const a of list) {
      ul.appendChild(text("li", `${a.window_end.replace("T", " ")} ${a.station_id} score ${fmt(a.score, 2)}: ${a.reasons.join("; ")}`));
    }
  } catch (e) { /* the stations list shows the reason */ }
}

async function refreshAll() {
  await refreshStations();
  await Promise.all([refreshChart(), refreshMetrics(), refreshAnomalies(), refreshCluster()]);
  document.body.dataset.loaded = "1";
}

refreshAll();
setInterval(refreshAll, REFRESH_MS);
