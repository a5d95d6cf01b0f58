// The migration dashboard: fetches /api/v1/status and redraws, every REFRESH_MS.
"use strict";

const REFRESH_MS = 5000;

const $ = (id) => document.getElementById(id);

function text(id, value, cls) {
  const el = $(id);
  el.textContent = value;
  if (cls !== undefined) el.className = cls;
}

function pct(ratio, digits = 3) {
  return ratio === null || ratio === undefined ? "unknown" : `${(ratio * 100).toFixed(digits)}%`;
}

function level(value, warn, bad, higherIsWorse = true) {
  if (value === null || value === undefined) return "";
  if (higherIsWorse) return value > bad ? "bad" : value > warn ? "warn" : "ok";
  return value < bad ? "bad" : value < warn ? "warn" : "ok";
}

function bar(label, percent, current) {
  const row = document.createElement("div");
  row.className = "bar" + (current ? " current" : "");
  row.setAttribute("role", "progressbar");
  row.setAttribute("aria-label", label);
  const known = percent !== null && percent !== undefined;
  if (known) row.setAttribute("aria-valuenow", String(Math.round(percent)));
  row.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>';
  row.querySelector(".label").textContent = label;
  row.querySelector(".fill").style.width = known ? `${Math.min(100, Math.max(0, percent))}%` : "0";
  row.querySelector(".pct").textContent = known ? `${percent.toFixed(0)}%` : "unknown";
  return row;
}

// Phase 4's steps under its bar (keys as in unistatus.observe.phase_progress).
const RETIREMENT_STEPS = { unified_only: "unified-only", archive_verified: "archive verified", columns_retired: "columns retired" };

function retirementSteps(steps) {
  if (!steps) return [];
  return Object.entries(RETIREMENT_STEPS).filter(([key]) => key in steps).map(([key, label]) =>
    Object.assign(document.createElement("p"), { className: `step ${steps[key] ? "ok" : "muted"}`, textContent: `${label}: ${steps[key] ? "done" : "not yet"}` }));
}

// In phase 4 only: the changes a rollback would replay into legacy first.
function renderReplayPending(s) {
  const pending = s.data_quality.replay_pending;
  $("replay-pending-figure").hidden = s.phase !== 4;
  text("replay-pending", pending == null ? "unknown" : `${pending} change${pending === 1 ? "" : "s"}`);
}

// Each legacy system's own phase, mode, consistency and operations (one row each).
function renderSystems(systems) {
  const rows = Object.entries(systems ?? {}).map(([name, info]) => {
    const row = document.createElement("tr");
    row.dataset.system = name;
    const perf = info.performance ?? {};
    const cells = [
      name.toLowerCase(),
      `${info.phase}: ${info.phase_name}`,
      info.mode,
      pct(info.consistency_rate, 2),
      perf.p95_ms == null ? "no operations" : `${perf.p95_ms.toFixed(1)} ms`,
      perf.count ? pct(perf.error_rate, 2) : "no operations",
    ];
    for (const value of cells) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.appendChild(cell);
    }
    row.children[3].className = level(info.consistency_rate, 0.999, 0.99, false);
    return row;
  });
  $("system-states").querySelector("tbody").replaceChildren(...rows);
}

// The backfill's throttle: running or waiting and why, the batch size and its target.
const THROTTLE_CLASSES = { waiting: "warn", paused: "muted", running: "ok", idle: "muted" };

function renderThrottle(view) {
  if (!view) {
    text("throttle-state", "unknown", "");
    $("throttle-waiting").replaceChildren();
    text("throttle-batch", "");
    return;
  }
  text("throttle-state", view.summary, THROTTLE_CLASSES[view.state] ?? "");
  $("throttle-waiting").replaceChildren(...view.waiting.map((w) =>
    Object.assign(document.createElement("li"), { className: "warn", textContent: `${w.worker}: ${w.why} for ${Math.round(w.seconds ?? 0)} s` })));
  if (!view.workers) {
    text("throttle-batch", view.target_batch_ms ? `target batch ${view.target_batch_ms} ms` : "");
    return;
  }
  const target = view.target_batch_ms ? `target ${view.target_batch_ms} ms` : "target off (fixed batches)";
  const last = view.last_batch_ms === null ? "" : `; last ${view.last_batch_rows.toLocaleString()} in ${Math.round(view.last_batch_ms)} ms`;
  const rate = view.max_rows_per_second === null || view.max_rows_per_second === undefined
    ? "rate limit off"
    : `rate limit ${view.max_rows_per_second.toLocaleString()} rows/s (held ${Math.round(view.held_seconds.max_rows_per_second ?? 0)} s so far)`;
  text("throttle-batch", `batch ${view.batch_rows.toLocaleString()} rows, ${target}${last}; ${rate}`);
}

function render(s) {
  text("health", s.health, `badge ${s.health}`);
  renderSystems(s.systems);
  text("mode", `mode ${s.mode ?? "unknown"}`);
  text("phase", s.phase === null ? "phase unknown" : `phase ${s.phase}: ${s.phase_name}`);
  text("window", `(last ${Math.round(s.window_seconds / 60)} min)`);

  const perf = s.performance;
  if (perf) {
    text("p95", perf.p95_ms === null ? "no operations" : `${perf.p95_ms.toFixed(1)} ms`, level(perf.p95_ms, 200, 500));
    text("error-rate", perf.count ? pct(perf.error_rate, 2) : "no operations", level(perf.count ? perf.error_rate : null, 0.001, 0.01));
    text("throughput", `${perf.throughput_per_s.toFixed(2)}/s` + (perf.rolled_back ? ` (${perf.rolled_back} rolled back by the caller)` : ""));
    text("mismatches", String(perf.shadow_mismatches));
  } else {
    for (const id of ["p95", "error-rate", "throughput", "mismatches"]) text(id, "unknown", "");
  }

  const q = s.data_quality;
  text("coverage", pct(q.mapping.coverage, 0), q.mapping.ok ? "ok" : "bad");
  text("coverage-detail", `${q.mapping.total_mapped}/${q.mapping.total_legacy} legacy statuses mapped`);
  text("consistency", q.consistency_rate === null ? (q.last_check === null && s.sources.check === "ok" ? "no check yet" : "unknown") : pct(q.consistency_rate), level(q.consistency_rate, 0.999, 0.99, false));
  if (q.last_check) {
    const passed = q.last_check.inconsistent === 0;
    text("validation", passed ? "passing" : `failing (${q.last_check.inconsistent})`, passed ? "ok" : "bad");
    const changed = q.last_check.since ? ` of the rows changed since ${q.last_check.since}` : "";
    text("validation-detail", `${q.last_check.consistent}/${q.last_check.total} consistent${changed}, ${q.last_check.created_at}`);
  } else {
    text("validation", "no check yet", "");
    text("validation-detail", "");
  }
  text("queues", `${q.repair_open ?? "unknown"} / ${q.quarantine ?? "unknown"}`);
  const conflicts = q.replay_conflicts;
  text("replay-conflicts", conflicts == null ? "unknown" : `${conflicts} open`, conflicts == null ? "" : conflicts ? "bad" : "ok");

  renderReplayPending(s);

  const phases = $("phases");
  phases.replaceChildren(...s.progress.phases.flatMap((p) => [bar(`Phase ${p.phase}: ${p.name}`, p.percent, p.current), ...retirementSteps(p.steps)]));
  const systems = $("systems");
  const entries = Object.entries(s.progress.systems ?? {});
  systems.replaceChildren(...(entries.length
    ? entries.map(([name, p]) => bar(`${name} (${p.state ?? ""})`, p.percent, false))
    : [Object.assign(document.createElement("p"), { className: "muted", textContent: "backfill progress unknown" })]));

  renderThrottle(s.progress.throttle);

  const body = $("gates").querySelector("tbody");
  body.replaceChildren(...(s.gates ?? []).map((g) => {
    const tr = document.createElement("tr");
    for (const v of [g.name, g.value, g.threshold, g.passed ? "pass" : "FAIL"]) {
      const td = document.createElement("td");
      td.textContent = v === null || v === undefined ? "unknown" : String(v);
      tr.appendChild(td);
    }
    tr.lastChild.className = g.passed ? "pass" : "fail";
    return tr;
  }));

  const capture = s.capture;
  const writers = capture?.writers ?? [];
  text("bypass-state", capture == null ? "unknown"
    : !capture.enabled ? "capture not enabled: unistatus capture enable"
    : writers.length ? `${capture.writers_total} seen (capture on), most recent first` : "none seen (capture on)",
    capture?.enabled && writers.length ? "warn" : "");
  $("bypass").querySelector("tbody").replaceChildren(...writers.map((w) => {
    const tr = document.createElement("tr");
    for (const v of [w.writer, w.system, w.writes.toLocaleString(), w.last_seen_at ?? "-"]) {
      tr.appendChild(Object.assign(document.createElement("td"), { textContent: String(v) }));
    }
    return tr;
  }));

  const alerts = $("alerts");
  const firing = s.alerts.firing;
  alerts.replaceChildren(...(firing.length
    ? firing.map((a) => Object.assign(document.createElement("li"), { className: a.level, textContent: `${a.level.toUpperCase()} ${a.name}: ${a.message}` }))
    : [Object.assign(document.createElement("li"), { className: "muted", textContent: "none firing" })]));

  const unknown = Object.entries(s.sources).filter(([, v]) => v !== "ok");
  $("unknown-section").hidden = unknown.length === 0;
  $("unknown").replaceChildren(...unknown.map(([k, v]) => Object.assign(document.createElement("li"), { textContent: `${k}: ${v}` })));
  text("updated", new Date().toLocaleTimeString());
}

async function refresh() {
  try {
    const response = await fetch("/api/v1/status", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    $("fetch-error").hidden = true;
  } catch (err) {
    const el = $("fetch-error");
    el.textContent = `cannot refresh: ${err.message}`;
    el.hidden = false;
  }
}

text("every", String(REFRESH_MS / 1000));
refresh();
setInterval(refresh, REFRESH_MS);
