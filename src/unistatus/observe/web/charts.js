// The last hour as inline SVG charts, drawn here: no library, no network beyond our API.
// Fetches /api/v1/history (unistatus.observe.history) and redraws every HISTORY_REFRESH_MS.
"use strict";

const HISTORY_REFRESH_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { w: 520, h: 150, left: 64, right: 10, top: 10, bottom: 22 };
// Short labels for the markers on the time axis (the full value is in the marker's title).
const MODE_ABBREV = {
  LEGACY_ONLY: "LO",
  DUAL_WRITE_LEGACY_PRIMARY: "DW-L",
  DUAL_WRITE_UNIFIED_PRIMARY: "DW-U",
  UNIFIED_ONLY: "UO",
};

function svg(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// values: [{t: ms since epoch, v: number}] (nulls already left out); a gap in the steps
// (no operations) breaks the line instead of drawing a made-up zero across it.
function drawChart(id, { values, since, until, events, format, low, high, gapMs }) {
  const box = document.getElementById(id);
  const { w, h, left, right, top, bottom } = CHART;
  const plotW = w - left - right;
  const plotH = h - top - bottom;
  const vs = values.map((p) => p.v);
  const lo = low ?? 0;
  const hi = Math.max(high ?? -Infinity, ...vs, lo + 1e-9);
  const x = (t) => left + ((t - since) / (until - since)) * plotW;
  const y = (v) => top + plotH - ((v - lo) / (hi - lo)) * plotH;

  const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": box.dataset.title, "data-points": values.length });
  root.append(
    svg("rect", { class: "plot", x: left, y: top, width: plotW, height: plotH }),
    svg("text", { class: "axis", x: left - 6, y: top + 10, "text-anchor": "end" }, format(hi)),
    svg("text", { class: "axis", x: left - 6, y: top + plotH, "text-anchor": "end" }, format(lo)),
    svg("text", { class: "axis", x: left, y: h - 6 }, clock(since)),
    svg("text", { class: "axis", x: w - right, y: h - 6, "text-anchor": "end" }, clock(until)),
  );
  for (const e of events) {
    const ex = x(e.t);
    const label = e.key === "phase" ? `P${e.value}` : MODE_ABBREV[e.value] ?? e.value;
    const mark = svg("g", { class: `event ${e.key}` });
    mark.append(
      svg("line", { x1: ex, x2: ex, y1: top, y2: top + plotH }),
      // Near the right edge the label goes left of its line, so it stays inside the chart.
      ex > left + plotW * 0.8
        ? svg("text", { x: ex - 3, y: top + 10, "text-anchor": "end" }, label)
        : svg("text", { x: ex + 3, y: top + 10 }, label),
      svg("title", {}, `${clock(e.t)} ${e.key} → ${e.value}`),
    );
    root.append(mark);
  }
  let d = "";
  let previous = null;
  for (const p of values) {
    const joined = previous !== null && (gapMs === undefined || p.t - previous <= gapMs * 1.5);
    d += `${joined ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)} `;
    previous = p.t;
  }
  if (d) root.append(svg("path", { class: "line", d: d.trim() }));
  for (const p of values) {
    const dot = svg("circle", { class: "point", cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 2.5 });
    dot.append(svg("title", {}, `${clock(p.t)}: ${format(p.v)}`));
    root.append(dot);
  }
  box.replaceChildren(root);
}

function renderHistory(hist) {
  const since = Date.parse(hist.since);
  const until = Date.parse(hist.until);
  const gapMs = hist.step_seconds * 1000;
  const events = hist.events.map((e) => ({ ...e, t: Date.parse(e.t) }));
  const series = (key) => hist.points.filter((p) => p[key] !== null).map((p) => ({ t: Date.parse(p.t), v: p[key] }));
  const common = { since, until, events, gapMs };
  drawChart("chart-p95", { ...common, values: series("p95_ms"), format: (v) => `${v.toFixed(0)} ms` });
  drawChart("chart-error-rate", { ...common, values: series("error_rate"), format: (v) => `${(v * 100).toFixed(2)}%`, high: 0.001 });
  drawChart("chart-throughput", { ...common, values: series("throughput_per_s"), format: (v) => `${v.toFixed(2)}/s` });
  const checks = hist.consistency.map((c) => ({ t: Date.parse(c.t), v: c.rate }));
  const lowest = Math.min(0.99, ...checks.map((c) => c.v));
  // Checks are irregular: their points are joined whatever the time between them.
  drawChart("chart-consistency", { since, until, events, values: checks, format: (v) => `${(v * 100).toFixed(2)}%`, low: lowest, high: 1 });
}

async function refreshHistory() {
  const error = document.getElementById("history-error");
  try {
    const response = await fetch("/api/v1/history", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    renderHistory(await response.json());
    error.hidden = true;
  } catch (err) {
    error.textContent = `cannot refresh the history: ${err.message}`;
    error.hidden = false;
  }
}

refreshHistory();
setInterval(refreshHistory, HISTORY_REFRESH_MS);
