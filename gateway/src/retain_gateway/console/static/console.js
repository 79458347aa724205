// Retain operator console: reads the public REST API with the key pasted at login (sessionStorage only).
"use strict";

const KEY = "retain.console.key";
const PAGES = {};
const charts = [];

// --- helpers ----------------------------------------------------------------------------------------
function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
}
function money(x) { const v = Math.round(Number(x) || 0); return (v < 0 ? "-฿" : "฿") + Math.abs(v).toLocaleString("en-US"); }
function count(x) { return Math.round(Number(x) || 0).toLocaleString("en-US"); }
function pct(x) { return ((Number(x) || 0) * 100).toFixed(1) + "%"; }
function day(iso) { return iso ? String(iso).slice(0, 10) : "–"; }
function stamp(iso) { return iso ? String(iso).replace("T", " ").slice(0, 19) : "–"; }
// A number shown on a page: the raw value rides along in data-value so tests compare it with the API.
function num(id, value, format) {
  return `<span data-testid="${esc(id)}" data-value="${esc(value)}">${esc(format(value))}</span>`;
}
function kpi(id, label, value, format, bad) {
  return `<div class="card kpi${bad ? " bad" : ""}"><div class="label">${esc(label)}</div>` +
    `<div class="value">${num(id, value, format)}</div></div>`;
}
function windowLine(data) {
  const w = data.window || {};
  const models = (data.models || []).map((m) => `<span class="pill">${esc(m.name)} ${esc(m.version)}</span>`).join("") || "none";
  return `<div class="meta" data-testid="window">Window ${esc(day(w.since))} → ${esc(day(w.until))} · evaluated ${esc(stamp(w.as_of))} UTC · models: ${models}</div>`;
}
function table(columns, rows, attrs) {
  const head = columns.map((c) => `<th class="${c.num ? "num" : ""}">${esc(c.label)}</th>`).join("");
  const body = rows.map((r, i) => "<tr>" + columns.map((c) => {
    const cell = c.render ? c.render(r, i) : esc(r[c.key]);
    return `<td class="${c.num ? "num" : ""}${c.wrap ? " wrap" : ""}">${cell}</td>`;
  }).join("") + "</tr>").join("");
  return `<div class="scroll"><table ${attrs || ""}><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div>`;
}
function chart(id, config) {
  const canvas = document.getElementById(id);
  if (!canvas || typeof Chart === "undefined") return;
  config.options = Object.assign({responsive: true, maintainAspectRatio: false, animation: false}, config.options || {});
  charts.push(new Chart(canvas, config));
}
const PALETTE = ["#1f6feb", "#c8372d", "#1a7f37", "#bf8700", "#8250df", "#0a7ea4", "#d1478a", "#6e7781", "#57ab5a", "#e16f24"];

async function api(path) {
  const key = sessionStorage.getItem(KEY);
  const reply = await fetch(path, {headers: {Authorization: `Bearer ${key}`}});
  if (reply.status === 401) { logout(); throw new Error("signed out: the key was not accepted"); }
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new Error(`${reply.status} ${body.error || ""}: ${body.detail || reply.statusText}`);
  return body;
}

// --- pages ------------------------------------------------------------------------------------------
PAGES.overview = async (root) => {
  const data = await api("/v1/analytics/value-leakage");
  const leak = Object.fromEntries((data.leakage || []).map((l) => [l.kind, l]));
  root.innerHTML = `<h1>Overview</h1>${windowLine(data)}
    <div class="kpis">
      ${kpi("kpi-revenue", "Revenue in window", data.revenue, money)}
      ${kpi("kpi-customers", "Customers", data.customers, count)}
      ${kpi("kpi-buyers", "Buyers in window", data.buyers, count)}
      ${kpi("kpi-expected-value", "Expected value (horizon)", data.expected_value, money)}
      ${kpi("kpi-value-at-risk", "Value at risk", data.value_at_risk, money, true)}
      ${kpi("kpi-churned-value", "Churned value", (leak.churned || {}).value || 0, money, true)}
    </div>
    <div class="grid">
      <div class="card"><h2>Revenue per month</h2><div class="chart"><canvas id="c-revenue"></canvas></div></div>
      <div class="card"><h2>Churn trend: leavers by month of their last order, and new buyers</h2><div class="chart"><canvas id="c-churn"></canvas></div></div>
    </div>
    <div class="card"><h2>Where value sits by lifecycle stage</h2>${stageTable(data)}</div>`;
  const months = (data.monthly || []).map((m) => m.month);
  chart("c-revenue", {type: "bar", data: {labels: months, datasets: [
    {label: "Revenue", data: data.monthly.map((m) => m.revenue), backgroundColor: PALETTE[0]}]}});
  chart("c-churn", {type: "line", data: {labels: months, datasets: [
    {label: "Leavers (now lapsed or churned)", data: data.monthly.map((m) => m.leavers), borderColor: PALETTE[1], backgroundColor: PALETTE[1]},
    {label: "New buyers", data: data.monthly.map((m) => m.new_customers), borderColor: PALETTE[2], backgroundColor: PALETTE[2]},
    {label: "Active buyers", data: data.monthly.map((m) => m.active_customers), borderColor: PALETTE[0], backgroundColor: PALETTE[0]}]}});
};

function breakdown(data, dimension) {
  return ((data.breakdowns || []).find((b) => b.dimension === dimension) || {buckets: []}).buckets;
}
function stageTable(data) {
  return table([
    {label: "Stage", key: "key"},
    {label: "Customers", num: true, render: (b) => num(`stage-${b.key}-customers`, b.customers, count)},
    {label: "Revenue in window", num: true, render: (b) => num(`stage-${b.key}-revenue`, b.revenue, money)},
    {label: "Value at risk", num: true, render: (b) => num(`stage-${b.key}-var`, b.value_at_risk, money)},
  ], breakdown(data, "lifecycle_stage"));
}

PAGES.leakage = async (root) => {
  const [data, prio] = await Promise.all([api("/v1/analytics/value-leakage"), api("/v1/analytics/priority-segments")]);
  const dims = [["segment", "Segment (overlapping)"], ["lifecycle_stage", "Lifecycle stage"], ["cohort_month", "Acquisition cohort"], ["category", "Category"], ["channel", "Sales channel"]];
  root.innerHTML = `<h1>Value &amp; leakage map</h1>${windowLine(data)}
    <div class="grid">
      <div class="card"><h2>Where value leaks</h2><div class="chart"><canvas id="c-leaks"></canvas></div></div>
      <div class="card"><h2>Leakage</h2>${table([
        {label: "Leak", key: "kind"},
        {label: "Customers", num: true, render: (l) => num(`leak-${l.kind}-customers`, l.customers, count)},
        {label: "Value", num: true, render: (l) => num(`leak-${l.kind}-value`, l.value, money)},
        {label: "Definition", render: (l) => `<span class="meta">${esc(l.definition)}</span>`, wrap: true},
      ], data.leakage || [])}</div>
    </div>
    <div class="grid">${dims.map(([d, label]) => `<div class="card"><h2>Revenue by ${esc(label.toLowerCase())}</h2>${table([
        {label, key: "key"},
        {label: "Customers", num: true, render: (b) => count(b.customers)},
        {label: "Orders", num: true, render: (b) => count(b.orders)},
        {label: "Revenue", num: true, render: (b) => num(`bd-${d}-${b.key}`, b.revenue, money)},
        {label: "Discount", num: true, render: (b) => money(b.discount)},
        {label: "Value at risk", num: true, render: (b) => money(b.value_at_risk)},
      ], breakdown(data, d).slice(0, 12))}</div>`).join("")}</div>
    <div class="card"><h2>Priority segments: value, value at risk, and what separates stayers from leavers</h2>${windowLine(prio)}${table([
      {label: "Segment", key: "segment"},
      {label: "Customers", num: true, render: (s) => count(s.customers)},
      {label: "Value", num: true, render: (s) => money(s.value)},
      {label: "Value at risk", num: true, render: (s) => num(`prio-${s.segment}-var`, s.value_at_risk, money)},
      {label: "Share of risk", num: true, render: (s) => pct(s.share_of_value_at_risk)},
      {label: "Stayers / leavers", num: true, render: (s) => `${count(s.stayers)} / ${count(s.leavers)}`},
      {label: "Biggest differences (leavers vs stayers)", render: (s) => (s.stayers && s.leavers ? s.comparison.slice(0, 3).map((c) =>
        `<span class="pill">${esc(c.feature)} ${c.leavers_mean.toFixed(1)} vs ${c.stayers_mean.toFixed(1)}</span>`).join("") : "<span class='meta'>needs both groups</span>")},
    ], prio.segments || [])}</div>`;
  const leaks = data.leakage || [];
  chart("c-leaks", {type: "bar", data: {labels: leaks.map((l) => l.kind.replaceAll("_", " ")),
    datasets: [{label: "Value (฿)", data: leaks.map((l) => l.value), backgroundColor: leaks.map((_, i) => PALETTE[i % PALETTE.length])}]},
    options: {indexAxis: "y", plugins: {legend: {display: false}}}});
};

PAGES.cohorts = async (root) => {
  const data = await api("/v1/analytics/cohorts?months=12");
  const cohorts = data.cohorts || [];
  const width = Math.max(0, ...cohorts.map((c) => c.retention.length));
  const offsets = [...Array(width).keys()];
  const heat = (v) => `background:rgba(31,111,235,${(0.12 + 0.88 * v).toFixed(2)})`;
  root.innerHTML = `<h1>Cohorts</h1>${windowLine(data)}
    <div class="card" style="margin-bottom:16px"><h2>Retention heat map: share of each acquisition cohort ordering in month k</h2>
      <div class="scroll"><table class="heat" data-testid="heatmap"><thead><tr><th>Cohort</th><th class="num">Customers</th>
      ${offsets.map((k) => `<th class="num">M${k}</th>`).join("")}</tr></thead><tbody>
      ${cohorts.map((c) => `<tr><td>${esc(c.month)}</td><td class="num">${num(`cohort-${c.month}-customers`, c.customers, count)}</td>
        ${offsets.map((k) => k < c.retention.length ? `<td class="cell" style="${heat(c.retention[k])}">${num(`cohort-${c.month}-m${k}`, c.retention[k], pct)}</td>` : "<td></td>").join("")}</tr>`).join("")}
      </tbody></table></div></div>
    <div class="grid">
      <div class="card"><h2>Retention curves</h2><div class="chart"><canvas id="c-retention"></canvas></div></div>
      <div class="card"><h2>Cumulative revenue per customer</h2><div class="chart"><canvas id="c-revenue-pc"></canvas></div></div>
    </div>
    <div class="card"><h2>Repeat, active and lifetime value</h2>${table([
      {label: "Cohort", key: "month"},
      {label: "Customers", num: true, render: (c) => count(c.customers)},
      {label: "Repeat rate", num: true, render: (c) => num(`cohort-${c.month}-repeat`, c.repeat_rate, pct)},
      {label: "Active rate", num: true, render: (c) => pct(c.active_rate)},
      {label: "LTV to date", num: true, render: (c) => num(`cohort-${c.month}-ltv`, c.ltv_to_date, money)},
      {label: "Predicted LTV", num: true, render: (c) => money(c.predicted_ltv)},
    ], cohorts)}</div>`;
  const recent = cohorts.slice(-8);
  const labels = offsets.map((k) => `M${k}`);
  chart("c-retention", {type: "line", data: {labels, datasets: recent.map((c, i) => ({label: c.month, data: c.retention.slice(1).length ? c.retention.map((v, k) => (k === 0 ? null : v)) : [], borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length], spanGaps: true}))},
    options: {scales: {y: {min: 0, ticks: {callback: (v) => pct(v)}}}}});
  chart("c-revenue-pc", {type: "line", data: {labels, datasets: recent.map((c, i) => ({label: c.month, data: c.cumulative_revenue_per_customer, borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length]}))}});
};

// Sankey node names besides step ids come from the report ("(start)", "(active)", "(exited: goal)", ...).
const PATH_ENDS = {"(start)": "Entered", "(active)": "In progress", "(completed)": "Completed",
  "(exited: goal)": "Converted (goal)", "(exited: exit_step)": "Exited at an exit step"};
function pp(x) { const v = (Number(x) || 0) * 100; return (v > 0 ? "+" : "") + v.toFixed(1) + " pp"; }
function sentTotal(report) { return report.steps.reduce((n, s) => n + s.sent, 0); }

async function journeySection(params) {
  const journeys = await api("/v1/journeys");
  if (!journeys.length) {
    return {html: `<div class="note" data-testid="no-journeys">No journeys are installed in this workspace yet
      (install a template: <code>POST /v1/journeys/templates/{name}</code>).</div>`, draw: () => {}};
  }
  const reports = await Promise.all(journeys.map((j) => api(`/v1/journeys/${encodeURIComponent(j.journey_id)}/report`)));
  const byId = Object.fromEntries(reports.map((r) => [r.journey_id, r]));
  const busiest = reports.reduce((a, b) => (b.entered > a.entered ? b : a), reports[0]);
  const chosen = byId[params.get("journey")] ? params.get("journey") : busiest.journey_id;
  const report = byId[chosen];
  const journey = journeys.find((j) => j.journey_id === chosen);
  const name = (j) => j.definition.name || j.journey_id;
  const kinds = Object.fromEntries((journey.definition.steps || []).map((s) => [s.step_id, s.kind]));
  const reasons = [...new Set(report.steps.flatMap((s) => Object.keys(s.suppressed)))].sort();
  const list = table([
    {label: "Journey", render: (j) => `<a href="#plays?journey=${encodeURIComponent(j.journey_id)}">${esc(name(j))}</a>
      <span class="meta">${esc(j.journey_id)} v${esc(j.version)}${j.active ? "" : " · paused"}</span>`},
    {label: "Trigger", render: (j) => esc(j.definition.trigger?.kind || "")},
    {label: "Entered", num: true, render: (j) => num(`journeys-${j.journey_id}-entered`, byId[j.journey_id].entered, count)},
    {label: "Treated / holdout", num: true, render: (j) => `${count(byId[j.journey_id].treated)} / ${count(byId[j.journey_id].holdout)}`},
    {label: "Sent", num: true, render: (j) => num(`journeys-${j.journey_id}-sent`, sentTotal(byId[j.journey_id]), count)},
    {label: "Converted", num: true, render: (j) => count(byId[j.journey_id].converted_treated + byId[j.journey_id].converted_holdout)},
    {label: "In progress", num: true, render: (j) => count(byId[j.journey_id].active)},
    {label: "Lift (95% CI)", num: true, render: (j) => liftText(byId[j.journey_id])},
  ], journeys, 'data-testid="journeys-table"');
  const steps = table([
    {label: "Step", render: (s) => `${esc(s.step_id)} <span class="pill">${esc(s.kind || kinds[s.step_id] || "")}</span>`},
    {label: "Entered", num: true, render: (s) => num(`step-${s.step_id}-entered`, s.entered, count)},
    {label: "Sent", num: true, render: (s) => num(`step-${s.step_id}-sent`, s.sent, count)},
    ...reasons.map((r) => ({label: `Suppressed: ${r.replaceAll("_", " ")}`, num: true,
      render: (s) => num(`step-${s.step_id}-suppressed-${r}`, s.suppressed[r] || 0, count)})),
    {label: "Withheld (holdout)", num: true, render: (s) => num(`step-${s.step_id}-withheld`, s.withheld, count)},
    {label: "Failed", num: true, render: (s) => num(`step-${s.step_id}-failed`, s.failed, count)},
    {label: "Converted after", num: true, render: (s) => num(`step-${s.step_id}-converted`, s.converted, count)},
  ], report.steps, 'data-testid="steps-table"');
  const options = journeys.map((j) => `<option value="${esc(j.journey_id)}" ${j.journey_id === chosen ? "selected" : ""}>${esc(name(j))}</option>`).join("");
  const html = `<div class="card" style="margin-bottom:16px"><h2>Journeys</h2>${list}</div>
    <div class="card" style="margin-bottom:16px" data-testid="journey" data-journey="${esc(chosen)}">
      <form class="filters" id="journey-form"><label>Journey<select name="journey">${options}</select></label>
        <span class="meta">${esc(journey.definition.description || "")}</span></form>
      <div class="kpis">
        ${kpi("journey-entered", "Entered", report.entered, count)}
        ${kpi("journey-treated", "Treated", report.treated, count)}
        ${kpi("journey-holdout", "Holdout", report.holdout, count)}
        ${kpi("journey-conversion-treated", "Conversion, treated", report.conversion_treated, pct)}
        ${kpi("journey-conversion-holdout", "Conversion, holdout", report.conversion_holdout, pct)}
        <div class="card kpi"><div class="label">Lift over holdout (95% CI)</div><div class="value">${num("journey-lift", report.lift, pp)}</div>
          <div class="meta" style="margin:0">${report.treated && report.holdout ? `${num("journey-lift-low", report.lift_ci_low, pp)} … ${num("journey-lift-high", report.lift_ci_high, pp)}${report.converted_treated || report.converted_holdout ? "" : " · no conversions yet"}` : "needs customers in both groups"}</div></div>
      </div>
      <div class="grid">
        <div class="card"><h2>Funnel per step: reached, what happened, converted</h2><div class="chart"><canvas id="c-steps"></canvas></div></div>
        <div class="card"><h2>Customer paths</h2>${report.transitions.length
          ? `<div class="chart tall"><canvas id="c-sankey" data-testid="sankey"></canvas></div>`
          : `<p class="meta" data-testid="no-paths">No customer has entered this journey yet.</p>`}</div>
      </div>
      <h2>Steps</h2>${steps}
    </div>`;
  const draw = () => {
    document.getElementById("journey-form").addEventListener("change", (e) => {
      location.hash = "#plays?journey=" + encodeURIComponent(e.target.value);
    });
    const labels = report.steps.map((s) => s.step_id);
    chart("c-steps", {type: "bar", data: {labels, datasets: [
      {label: "Entered", data: report.steps.map((s) => s.entered), backgroundColor: PALETTE[7], stack: "entered"},
      {label: "Sent", data: report.steps.map((s) => s.sent), backgroundColor: PALETTE[0], stack: "outcome"},
      ...reasons.map((r, i) => ({label: `Suppressed: ${r.replaceAll("_", " ")}`, data: report.steps.map((s) => s.suppressed[r] || 0),
        backgroundColor: PALETTE[[1, 3, 9, 6, 4][i % 5]], stack: "outcome"})),
      {label: "Withheld (holdout)", data: report.steps.map((s) => s.withheld), backgroundColor: "#c9d1d9", stack: "outcome"},
      {label: "Failed", data: report.steps.map((s) => s.failed), backgroundColor: "#6e40c9", stack: "outcome"},
      {label: "Converted after", data: report.steps.map((s) => s.converted), backgroundColor: PALETTE[2], stack: "converted"}]},
      options: {scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true, ticks: {precision: 0}}}}});
    if (!report.transitions.length) return;
    const nodes = [...new Set(report.transitions.flatMap((t) => [t.source, t.target]))];
    const color = (node) => node === "(exited: goal)" ? PALETTE[2] : node.startsWith("(") ? PALETTE[7] : PALETTE[nodes.indexOf(node) % PALETTE.length];
    chart("c-sankey", {type: "sankey", data: {datasets: [{
      label: "Customers", data: report.transitions.map((t) => ({from: t.source, to: t.target, flow: t.count})),
      labels: Object.fromEntries(nodes.map((n) => [n, PATH_ENDS[n] || (n.startsWith("(") ? n.slice(1, -1) : `${n} · ${kinds[n] || ""}`)])),
      colorFrom: (c) => color(c.dataset.data[c.dataIndex].from), colorTo: (c) => color(c.dataset.data[c.dataIndex].to),
      colorMode: "gradient", size: "max", nodeWidth: 12}]},
      options: {plugins: {legend: {display: false}}}});
  };
  return {html, draw};
}
function liftText(r) {
  if (!r.treated || !r.holdout) return "no holdout yet";
  if (!r.converted_treated && !r.converted_holdout) return "no conversions yet";
  return `${pp(r.lift)} (${pp(r.lift_ci_low)} … ${pp(r.lift_ci_high)})`;
}

PAGES.plays = async (root, params) => {
  const [data, journeys] = await Promise.all([api("/v1/analytics/plays?conversion_days=7"), journeySection(params)]);
  const plays = data.plays || [];
  root.innerHTML = `<h1>Journeys &amp; plays</h1>
    <div class="note">Journeys: customers entered, what each step did (sent, suppressed by the rule that stopped it,
      withheld from the holdout), the paths between steps, and conversion against the holdout, from
      <code>GET /v1/journeys/{id}/report</code>.</div>
    ${journeys.html}
    <h1 id="plays-per-offer" style="margin-top:20px">Plays per offer</h1>${windowLine(data)}
    <div class="note">Plays per offer: decisions → sends → conversions (an order or offer accept within
      ${esc(data.conversion_days)} days of a message), and lift over the holdout where one exists.</div>
    <div class="grid">
      <div class="card"><h2>Funnel per offer</h2><div class="chart"><canvas id="c-funnel"></canvas></div></div>
      <div class="card"><h2>Lift over holdout (95% interval)</h2><div class="chart"><canvas id="c-lift"></canvas></div></div>
    </div>
    <div class="card" style="margin-bottom:16px"><h2>Per offer</h2>${table([
      {label: "Offer", key: "offer_id"},
      {label: "Decisions", num: true, render: (p) => num(`play-${p.offer_id}-decisions`, p.decisions, count)},
      {label: "Sends", num: true, render: (p) => num(`play-${p.offer_id}-sends`, p.sends, count)},
      {label: "Conversions", num: true, render: (p) => num(`play-${p.offer_id}-conversions`, p.conversions, count)},
      {label: "Conv. rate", num: true, render: (p) => pct(p.conversion_rate)},
      {label: "Holdout", num: true, render: (p) => p.has_holdout ? `${count(p.holdout_conversions)}/${count(p.holdout_customers)}` : "–"},
      {label: "Lift (95% CI)", num: true, render: (p) => p.has_holdout ? `${pct(p.lift)} (${pct(p.lift_ci_low)} … ${pct(p.lift_ci_high)})` : "no holdout"},
      {label: "Incentive cost", num: true, render: (p) => money(p.incentive_cost)},
      {label: "Value saved", num: true, render: (p) => num(`play-${p.offer_id}-value-saved`, p.value_saved, money) + (p.incremental ? "" : " <span class='meta'>(attributed)</span>")},
    ], plays)}</div>
    <div class="card"><h2>Message load per channel</h2>${table([
      {label: "Channel", key: "channel"},
      {label: "Messages", num: true, render: (c) => num(`channel-${c.channel}-messages`, c.messages, count)},
      {label: "Customers", num: true, render: (c) => count(c.customers)},
      {label: "Per customer", num: true, render: (c) => (c.messages_per_customer || 0).toFixed(2)},
      {label: "Failed", num: true, render: (c) => count(c.failed)},
      {label: "Suppressed", num: true, render: (c) => count(c.suppressed)},
      {label: "Engaged (opened/clicked)", num: true, render: (c) => pct(c.engagement_rate)},
    ], data.channels || [])}</div>`;
  journeys.draw();
  const labels = plays.map((p) => p.offer_id);
  chart("c-funnel", {type: "bar", data: {labels, datasets: [
    {label: "Decisions", data: plays.map((p) => p.decisions), backgroundColor: PALETTE[7]},
    {label: "Sends", data: plays.map((p) => p.sends), backgroundColor: PALETTE[0]},
    {label: "Conversions", data: plays.map((p) => p.conversions), backgroundColor: PALETTE[2]}]}});
  const withHoldout = plays.filter((p) => p.has_holdout);
  chart("c-lift", {type: "bar", data: {labels: withHoldout.map((p) => p.offer_id), datasets: [
    {label: "95% interval", data: withHoldout.map((p) => [p.lift_ci_low, p.lift_ci_high]), backgroundColor: "rgba(31,111,235,.25)"},
    {label: "Lift", data: withHoldout.map((p) => p.lift), backgroundColor: PALETTE[2]}]},
    options: {scales: {y: {ticks: {callback: (v) => pct(v)}}}}});
};

PAGES.customer = async (root, params) => {
  const id = params.get("id") || "";
  root.innerHTML = `<h1>Customer 360</h1>
    <form class="filters" id="customer-form"><label>Customer (cus_ id, user id, email, phone)
      <input name="id" value="${esc(id)}" size="36" required></label><button type="submit">Open</button></form>
    <div id="customer-body"></div>`;
  document.getElementById("customer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = "#customer?id=" + encodeURIComponent(new FormData(e.target).get("id"));
  });
  if (!id) return;
  const body = document.getElementById("customer-body");
  const profile = await api(`/v1/customers/${encodeURIComponent(id)}`);
  const cid = profile.customer_id;
  const [scores, events, audit] = await Promise.all([
    api(`/v1/analytics/customers/${encodeURIComponent(cid)}/scores`).catch((e) => ({error: e.message})),
    api(`/v1/customers/${encodeURIComponent(cid)}/events?limit=100`),
    api(`/v1/audit/records?customer_id=${encodeURIComponent(cid)}&limit=200`),
  ]);
  const f = profile.features || {};
  const score = (name, fmt) => scores[name] ? `${num(`score-${name}`, scores[name].value, fmt)} <span class="pill">${esc(scores[name].model?.name)} ${esc(scores[name].model?.version)}</span>` : "–";
  const timeline = [
    ...(events.events || []).map((e) => ({at: e.timestamp, what: e.type === "track" ? e.event : e.type, detail: JSON.stringify(e.properties || {}).slice(0, 120), source: "event"})),
    ...(audit.records || []).map((r) => ({at: r.occurred_at, what: `${r.kind} · ${r.outcome}`, detail: [r.offer_id, r.channel, r.decision_id || r.message_id].filter(Boolean).join(" · "), source: "audit"})),
  ].sort((a, b) => String(b.at).localeCompare(String(a.at)));
  body.innerHTML = `<div class="grid">
    <div class="card"><h2>Profile</h2><dl class="facts">
      <dt>Customer</dt><dd data-testid="customer-id">${esc(cid)}</dd>
      <dt>Identifiers</dt><dd>${(profile.identifiers || []).map((i) => `<span class="pill">${esc(i.kind)}: ${esc(i.value)}</span>`).join("")}</dd>
      <dt>Name</dt><dd>${esc(profile.traits?.first_name || "")} ${esc(profile.traits?.last_name || "")}</dd>
      <dt>Locale / zone</dt><dd>${esc(profile.locale)} · ${esc(profile.time_zone)}</dd>
      <dt>Stage</dt><dd data-testid="customer-stage">${esc(f.lifecycle_stage)}</dd>
      <dt>Segments</dt><dd>${(f.segments || []).map((s) => `<span class="pill">${esc(s)}</span>`).join("")}</dd>
      <dt>Orders</dt><dd>${num("customer-frequency", f.frequency, count)}</dd>
      <dt>Lifetime revenue</dt><dd>${num("customer-monetary", f.monetary_total, money)}</dd>
      <dt>Last order</dt><dd>${esc(day(f.last_order_at))} (${(f.recency_days || 0).toFixed(0)} days ago)</dd>
      <dt>Open tickets / neg. streak</dt><dd>${count(f.open_tickets)} / ${count(f.negative_feedback_streak)}</dd>
    </dl></div>
    <div class="card"><h2>Scores</h2>${scores.error ? `<p class="error">${esc(scores.error)}</p>` : `<dl class="facts">
      <dt>Churn risk</dt><dd>${score("churn_risk", pct)}</dd>
      <dt>P(alive)</dt><dd>${score("p_alive", pct)}</dd>
      <dt>Expected value</dt><dd>${score("expected_value", money)}</dd>
      <dt>CLV</dt><dd>${score("clv", money)}</dd>
      <dt>Value at risk</dt><dd>${score("value_at_risk", money)}</dd>
      <dt>Horizon</dt><dd>${esc(scores.horizon_days)} days</dd></dl>`}
      <h2 style="margin-top:14px">Consent</h2>${table([
        {label: "Channel", key: "channel"}, {label: "Purpose", key: "purpose"}, {label: "Status", key: "status"},
        {label: "Source", key: "source"}, {label: "Updated", render: (c) => esc(stamp(c.updated_at))},
      ], profile.consents || [])}</div>
  </div>
  <div class="card"><h2>Timeline: events, decisions and messages</h2>${table([
    {label: "When (UTC)", render: (t) => esc(stamp(t.at))}, {label: "Source", render: (t) => `<span class="pill">${esc(t.source)}</span>`},
    {label: "What", key: "what"}, {label: "Detail", render: (t) => `<span class="meta">${esc(t.detail)}</span>`},
  ], timeline, 'class="timeline" data-testid="timeline"')}</div>`;
};

PAGES.audit = async (root, params) => {
  const q = new URLSearchParams(params);
  const field = (name, label, extra) => `<label>${esc(label)}<input name="${name}" value="${esc(q.get(name) || "")}" ${extra || ""}></label>`;
  root.innerHTML = `<h1>Audit search</h1>
    <form class="filters" id="audit-form">
      ${field("customer_id", "Customer", 'size="28"')}
      <label>Kind<select name="kind">${["", "decision", "message", "consent", "config", "privacy"].map((k) => `<option ${q.get("kind") === k ? "selected" : ""}>${k}</option>`).join("")}</select></label>
      ${field("outcome", "Outcome")}${field("offer_id", "Offer")}${field("decision_id", "Decision")}
      ${field("since", "Since", 'type="date"')}${field("until", "Until", 'type="date"')}
      <button type="submit">Search</button></form><div id="audit-body"></div>`;
  document.getElementById("audit-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(e.target)) if (v) next.set(k, v);
    location.hash = "#audit?" + next.toString();
  });
  const query = new URLSearchParams({limit: "100"});
  for (const k of ["customer_id", "kind", "outcome", "offer_id", "decision_id"]) if (q.get(k)) query.set(k, q.get(k));
  if (q.get("since")) query.set("since", q.get("since") + "T00:00:00Z");
  if (q.get("until")) query.set("until", q.get("until") + "T23:59:59Z");
  const data = await api("/v1/audit/records?" + query.toString());
  const records = data.records || [];
  document.getElementById("audit-body").innerHTML = `<div class="card"><h2>${num("audit-count", records.length, count)} records${data.next_cursor ? " (first page)" : ""}</h2>${table([
    {label: "Seq", num: true, key: "seq"}, {label: "When (UTC)", render: (r) => esc(stamp(r.occurred_at))},
    {label: "Kind", key: "kind"}, {label: "Outcome", key: "outcome"},
    {label: "Customer", render: (r) => r.customer_id ? `<a href="#customer?id=${encodeURIComponent(r.customer_id)}">${esc(r.customer_id)}</a>` : ""},
    {label: "Offer", key: "offer_id"}, {label: "Channel", key: "channel"}, {label: "Actor", key: "actor"},
    {label: "Hash", render: (r) => `<code>${esc(String(r.hash).slice(0, 12))}</code>`},
  ], records, 'data-testid="audit-table"')}</div>`;
};

// --- shell ------------------------------------------------------------------------------------------
function logout() {
  sessionStorage.removeItem(KEY);
  show();
}

async function render() {
  const [name, query] = (location.hash.slice(1) || "overview").split("?");
  const page = PAGES[name] ? name : "overview";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  while (charts.length) charts.pop().destroy();
  const root = document.getElementById("page");
  root.dataset.state = "loading";
  root.dataset.page = page;
  root.innerHTML = `<p class="meta">Loading…</p>`;
  try {
    await PAGES[page](root, new URLSearchParams(query || ""));
    root.dataset.state = "ready";
  } catch (err) {
    root.innerHTML += `<p class="error" data-testid="error">${esc(err.message)}</p>`;
    root.dataset.state = "error";
  }
}

function show() {
  const signedIn = Boolean(sessionStorage.getItem(KEY));
  document.getElementById("login").hidden = signedIn;
  document.getElementById("shell").hidden = !signedIn;
  if (signedIn) render();
}

document.getElementById("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const key = document.getElementById("login-key").value.trim();
  const reply = await fetch("/v1/audit/records?limit=1", {headers: {Authorization: `Bearer ${key}`}}).catch(() => null);
  if (!reply || reply.status === 401 || reply.status === 403) {
    document.getElementById("login-error").textContent = reply && reply.status === 403
      ? "This key lacks the operator role." : "That key was not accepted.";
    return;
  }
  sessionStorage.setItem(KEY, key);
  show();
});
document.getElementById("logout").addEventListener("click", logout);
window.addEventListener("hashchange", () => { if (sessionStorage.getItem(KEY)) render(); });
show();
