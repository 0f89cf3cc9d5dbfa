// penny's dashboard: reads the report API with the key typed in (kept in this tab's
// session storage only) and draws every chart by hand in SVG. No library, no build.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const MECHANISMS = {
  exact_cache: "exact result cache", semantic_cache: "semantic cache",
  single_flight: "single-flight", prefix_cache: "prefix cache", batching: "batching",
  routing: "routing and cascade", output_limit: "output-length limits",
  compression: "prompt compression", failover: "failed engine calls",
};
const HITS = { exact_cache: "exact cache", semantic_cache: "semantic cache",
               single_flight: "single-flight" };

const $ = (id) => document.getElementById(id);
const usd = (s) => (s === null || s === undefined) ? "-" : "$" + Number(s).toFixed(6);
const pct = (x) => (x === null || x === undefined) ? "-" : (x * 100).toFixed(1) + "%";
const count = (n) => (n === null || n === undefined) ? "-" : Math.round(n).toLocaleString("en-US");

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(width, height) {
  return el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
}

function empty(target, message) {
  target.replaceChildren();
  const p = document.createElement("p");
  p.className = "empty";
  p.textContent = message;
  target.append(p);
}

function legend(target, items) {
  const box = document.createElement("div");
  box.className = "legend";
  for (const [cls, label] of items) {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.className = cls;
    span.append(swatch, label);
    box.append(span);
  }
  target.append(box);
}

// Horizontal bars: rows of [label, value, shown text, css class].
function bars(target, rows, { max, width = 420 } = {}) {
  if (!rows.length) return empty(target, "nothing in this window");
  const top = max ?? Math.max(...rows.map((r) => r[1]), 1e-12);
  const rowH = 26, labelW = Math.min(190, width * 0.35), textW = 90;
  const chart = svg(width, rows.length * rowH + 4);
  rows.forEach(([label, value, shown, cls], i) => {
    const y = i * rowH + 4;
    const span = width - labelW - textW;
    chart.append(el("text", { x: 0, y: y + 14, class: "label" }, label));
    chart.append(el("rect", { x: labelW, y, width: span, height: 16, rx: 3, class: "track" }));
    chart.append(el("rect", { x: labelW, y, width: Math.max(0, span * value / top),
                              height: 16, rx: 3, class: cls, "data-value": shown }));
    chart.append(el("text", { x: width - textW + 8, y: y + 13 }, shown));
  });
  target.replaceChildren(chart);
}

function drawDays(target, days) {
  if (!days.length) return empty(target, "nothing in this window");
  const width = 1100, height = 240, left = 70, bottom = 28;
  const cost = days.map((d) => Number(d.cost_usd));
  const saved = days.map((d) => Number(d.saved_vs_naive_usd));
  const top = Math.max(...cost.map((c, i) => c + Math.max(saved[i], 0)), 1e-12);
  const chart = svg(width, height);
  const plotH = height - bottom - 10, step = (width - left) / days.length;
  const barW = Math.max(2, Math.min(40, step * 0.7));
  for (let g = 0; g <= 4; g++) {
    const y = 10 + plotH * (1 - g / 4);
    chart.append(el("line", { x1: left, x2: width, y1: y, y2: y, class: "axis" }));
    chart.append(el("text", { x: 0, y: y + 4 }, "$" + (top * g / 4).toPrecision(3)));
  }
  days.forEach((d, i) => {
    const x = left + i * step + (step - barW) / 2;
    const hCost = plotH * cost[i] / top, hSave = plotH * Math.max(saved[i], 0) / top;
    const base = 10 + plotH;
    chart.append(el("rect", { x, y: base - hCost, width: barW, height: hCost, class: "spend" }));
    chart.append(el("rect", { x, y: base - hCost - hSave, width: barW, height: hSave,
                              class: "save" }));
    const tip = el("title", {}, `${d.day}: spent ${usd(d.cost_usd)}, saved ${usd(d.saved_vs_naive_usd)}`);
    chart.lastChild.append(tip);
    if (days.length <= 16 || i % Math.ceil(days.length / 12) === 0) {
      chart.append(el("text", { x: x + barW / 2, y: height - 8, "text-anchor": "middle" },
                      d.day.slice(5)));
    }
  });
  target.replaceChildren(chart);
  legend(target, [["spend", "spent"], ["save", "saved vs the naive way"]]);
}

function drawAudit(target, lines) {
  if (!lines.length) return empty(target, "no engine-run jobs in this window");
  const width = 1100, rowH = 30, labelW = 230;
  const top = Math.max(...lines.map((l) => Math.max(l.requested_max_tokens.p50,
                                                    l.output_tokens.max)), 1);
  const chart = svg(width, lines.length * rowH + 8);
  const span = width - labelW - 20, at = (v) => labelW + span * v / top;
  lines.forEach((l, i) => {
    const y = i * rowH + 6;
    chart.append(el("text", { x: 0, y: y + 14, class: "label" },
                    `${l.tenant} · ${l.feature || "(untagged)"}`));
    chart.append(el("rect", { x: labelW, y, width: span, height: 18, class: "track" }));
    chart.append(el("rect", { x: labelW, y, width: at(l.output_tokens.p99) - labelW,
                              height: 18, class: "amber" }));
    chart.append(el("rect", { x: labelW, y, width: at(l.output_tokens.p50) - labelW,
                              height: 18, class: "spend" }));
    const asked = at(l.requested_max_tokens.p50);
    chart.append(el("line", { x1: asked, x2: asked, y1: y - 2, y2: y + 20, class: "mark" }));
    if (l.recommended_max_tokens) {
      const rec = at(l.recommended_max_tokens);
      chart.append(el("line", { x1: rec, x2: rec, y1: y - 2, y2: y + 20, class: "cap" }));
    }
  });
  target.replaceChildren(chart);
  legend(target, [["spend", "p50 output"], ["amber", "p99 output"],
                  ["warn", "recommended max_tokens (dashed)"], ["", "| max_tokens asked (p50)"]]);
}

function rowsInto(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const cells of rows) {
    const tr = document.createElement("tr");
    for (const [text, metric] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (metric) td.dataset.metric = metric;
      tr.append(td);
    }
    body.append(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = table.tHead.rows[0].cells.length;
    td.className = "empty";
    td.textContent = "none";
    tr.append(td);
    body.append(tr);
  }
}

async function api(path, params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v));
  const response = await fetch(`${path}?${query}`, {
    headers: { Authorization: `Bearer ${$("key").value.trim()}` },
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error?.message || response.statusText);
  return body;
}

function showTotals(t) {
  const shown = {
    cost_usd: usd(t.cost_usd), naive_cost_usd: usd(t.naive_cost_usd),
    saved_vs_naive_usd: usd(t.saved_vs_naive_usd),
    saved_vs_naive_fraction: t.saved_vs_naive_fraction === null ? "" :
      pct(t.saved_vs_naive_fraction) + " of the naive cost",
    requests: count(t.requests),
    cost_per_request_usd: usd(t.cost_per_request_usd),
    tokens_per_dollar: count(t.tokens_per_dollar),
  };
  for (const node of document.querySelectorAll(".cards [data-metric]")) {
    node.textContent = shown[node.dataset.metric];
  }
}

async function load(event) {
  event?.preventDefault();
  const status = $("status");
  sessionStorage.setItem("penny-key", $("key").value.trim());
  const scope = { tenant: $("tenant").value.trim(), start: $("start").value,
                  end: $("end").value };
  status.className = "";
  status.textContent = "loading…";
  try {
    const [byDay, byFeature, drivers, audit, storms] = await Promise.all([
      api("/v1/reports/costs", { ...scope, group_by: "day" }),
      api("/v1/reports/costs", { ...scope, group_by: "feature" }),
      api("/v1/reports/top-drivers", { ...scope, limit: 8 }),
      api("/v1/reports/max-tokens-audit", scope),
      api("/v1/reports/retry-storms", scope),
    ]);
    const t = byDay.totals;
    showTotals(t);
    drawDays($("chart-days"), byDay.data);
    bars($("chart-mechanisms"), Object.entries(t.savings_by_mechanism_usd)
      .map(([m, v]) => [MECHANISMS[m] || m, Math.max(Number(v), 0), usd(v), "save"]));
    bars($("chart-features"), byFeature.data.map((f) =>
      [f.feature || "(untagged)", Number(f.cost_usd), usd(f.cost_usd), "spend"]));
    bars($("chart-hits"), Object.entries(t.hit_rates).map(([name, rate]) =>
      [HITS[name] || name, rate || 0, pct(rate), "save"]), { max: 1 });
    rowsInto($("drivers"), drivers.data.map((d) => [
      [d.tenant], [d.model], [d.feature || "(untagged)"], [usd(d.cost_usd), "driver_cost"],
      [pct(d.share_of_cost)]]));
    drawAudit($("chart-audit"), audit.data);
    rowsInto($("audit"), audit.data.map((l) => [
      [l.tenant], [l.feature || "(untagged)"], [count(l.jobs)], [pct(l.length_rate)],
      [`${l.output_tokens.p50}/${l.output_tokens.p95}/${l.output_tokens.p99}`],
      [String(l.requested_max_tokens.p50)],
      [l.recommended_max_tokens ? String(l.recommended_max_tokens) : "-", "recommended"],
      [l.current_cap ? String(l.current_cap) : "-"],
      [usd(l.estimated_saving_usd), "audit_saving"]]));
    const allStorms = [...storms.requests, ...storms.idempotency_keys];
    bars($("chart-storms"), allStorms.map((s) => [
      `${s.tenant} · ${s.feature ?? "Idempotency-Key"}`, Number(s.repeats_naive_cost_usd),
      usd(s.repeats_naive_cost_usd), "warn"]), { width: 1100 });
    rowsInto($("storms"), allStorms.map((s) => [
      [s.kind], [s.tenant], [s.feature ?? "-"], [String(s.sends), "storm_sends"],
      [usd(s.repeats_cost_usd)], [usd(s.repeats_naive_cost_usd), "storm_naive"],
      [s.max_client_retry_count ?? "-"]]));
    $("report").hidden = false;
    status.textContent = `${byDay.tenant ? "tenant " + byDay.tenant : "all tenants"}, ` +
      `${byDay.start} to ${byDay.end} (end excluded)`;
    status.dataset.loaded = "true";
  } catch (error) {
    status.className = "error";
    status.textContent = `could not load the reports: ${error.message}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("key").value = sessionStorage.getItem("penny-key") || "";
  $("controls").addEventListener("submit", load);
  if ($("key").value) load();
});
