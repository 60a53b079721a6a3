// batchpipe poller status page: renders GET /status and fetches it again every 1.5 s.
// Plain DOM built with textContent (no HTML parsing of data), no dependencies, works offline.
"use strict";

const REFRESH_MS = 1500;
const TIMEOUT_MS = 4000;
const $ = (id) => document.getElementById(id);
const int = new Intl.NumberFormat("en-US");
const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 4 });

function fmtAge(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

function cell(row, label, className) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function newBatchRow(batch) {
  const tr = document.createElement("tr");
  tr.dataset.batchId = batch.batch_id;
  const id = cell(tr, "Batch", "id");
  id.textContent = batch.batch_id;
  id.title = batch.batch_id;
  cell(tr, "Provider", "provider").textContent = batch.provider;
  cell(tr, "Model", "model").textContent = batch.model;
  const status = cell(tr, "Status", "status");
  const pill = document.createElement("span");
  pill.className = "pill";
  status.appendChild(pill);
  const progress = cell(tr, "Progress", "progress");
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-label", `Progress of ${batch.batch_id}`);
  const done = document.createElement("span");
  done.className = "done";
  const failed = document.createElement("span");
  failed.className = "failed";
  bar.append(done, failed);
  const text = document.createElement("div");
  text.className = "bar-text";
  progress.append(bar, text);
  cell(tr, "Age", "age num");
  return tr;
}

function updateBatchRow(tr, batch) {
  const counts = batch.request_counts || {};
  const total = counts.total || batch.request_count || 0;
  const done = counts.completed || 0;
  const failed = counts.failed || 0;
  const pill = tr.querySelector(".status .pill");
  pill.textContent = batch.publishing ? "publishing" : batch.status;
  pill.classList.toggle("publishing", Boolean(batch.publishing));
  const bar = tr.querySelector(".bar");
  bar.setAttribute("aria-valuemax", String(total));
  bar.setAttribute("aria-valuenow", String(done + failed));
  const summary = `${int.format(done)} done, ${int.format(failed)} failed of ${int.format(total)}`;
  bar.setAttribute("aria-valuetext", summary);
  const pct = (n) => (total > 0 ? `${(100 * n) / total}%` : "0%");
  bar.querySelector(".done").style.width = pct(done);
  bar.querySelector(".failed").style.width = pct(failed);
  const share = total > 0 ? ` (${Math.floor((100 * (done + failed)) / total)}%)` : "";
  tr.querySelector(".bar-text").textContent = summary + share;
  tr.querySelector(".age").textContent = fmtAge(batch.age_seconds);
}

function renderBatches(batches) {
  const body = $("batch-rows");
  const existing = new Map([...body.children].map((tr) => [tr.dataset.batchId, tr]));
  batches.forEach((batch, index) => {
    let tr = existing.get(batch.batch_id);
    if (tr) existing.delete(batch.batch_id);
    else tr = newBatchRow(batch);
    updateBatchRow(tr, batch);
    if (body.children[index] !== tr) body.insertBefore(tr, body.children[index] || null);
  });
  existing.forEach((tr) => tr.remove());
  $("no-batches").hidden = batches.length > 0;
  $("batches").hidden = batches.length === 0;
}

function renderPairs(bodyId, pairs, emptyText) {
  const body = $(bodyId);
  body.replaceChildren();
  if (pairs.length === 0) pairs = [[emptyText, null]];
  for (const [name, count] of pairs) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    const td = document.createElement("td");
    td.className = "num";
    td.textContent = count === null ? "–" : int.format(count);
    tr.append(th, td);
    body.appendChild(tr);
  }
}

function renderWaiting(lag) {
  const el = $("waiting");
  const sub = $("waiting-sub");
  if (!lag || lag.waiting === null || lag.waiting === undefined) {
    el.textContent = "unknown";
    el.classList.add("unknown");
    sub.textContent = "lag not readable";
    sub.title = lag && lag.error ? lag.error : "consumer lag not readable";
    return;
  }
  el.textContent = int.format(lag.waiting);
  el.classList.remove("unknown");
  const uncommitted = lag.partitions_uncommitted ? `, ${lag.partitions_uncommitted} never committed` : "";
  sub.textContent = "not yet batched";
  sub.title = `consumer lag of group ${lag.group} on ${lag.topic}${uncommitted}`;
}

function renderCosts(costs) {
  const total = (costs && costs.total) || {};
  const unpriced = (costs && costs.unpriced_models) || [];
  $("cost").textContent = usd.format(total.cost_usd || 0);
  $("cost-sub").textContent = `${usd.format(total.saving_usd || 0)} saved`;
  $("cost-sub").title = "saved against the synchronous price";
  const body = $("cost-rows");
  body.replaceChildren();
  const rows = (costs && costs.by_model) || [];
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 5;
    td.className = "empty-row";
    td.textContent = "No result published yet.";
    tr.appendChild(td);
    body.appendChild(tr);
  }
  for (const row of rows) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = row.model;
    tr.appendChild(th);
    const priced = !unpriced.includes(row.model);
    for (const value of [
      int.format(row.results),
      int.format(row.total_tokens),
      priced ? usd.format(row.cost_usd) : "no price",
      priced ? usd.format(row.saving_usd) : "–",
    ]) {
      const td = document.createElement("td");
      td.className = "num";
      td.textContent = value;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  const since = costs && costs.since ? new Date(costs.since * 1000).toLocaleString() : "start";
  const asOf = costs && costs.prices && costs.prices.as_of ? `; prices as of ${costs.prices.as_of}` : "";
  $("cost-note").textContent = `Results this poller process published since ${since}${asOf}.` +
    (unpriced.length ? ` Models without a price: ${unpriced.join(", ")}.` : "");
}

function render(doc) {
  const totals = doc.totals || {};
  $("in-flight").textContent = int.format(totals.in_flight || 0);
  $("requests-in-flight").textContent = `${int.format(totals.requests_in_flight || 0)} requests`;
  renderWaiting(doc.requests_waiting);
  $("rate").textContent = (totals.results_per_second || 0).toFixed(1);
  $("rate-sub").textContent = "last 10 s";
  $("published").textContent = int.format(totals.results_published || 0);
  const byStatus = totals.results_by_status || {};
  const failed = Object.entries(byStatus).filter(([s]) => s !== "succeeded").reduce((n, [, c]) => n + c, 0);
  $("published-sub").textContent = `${int.format(byStatus.succeeded || 0)} ok · ${int.format(failed)} failed`;
  $("retries").textContent = int.format(totals.retries_published || 0);
  const dead = totals.dead_letters_by_reason || {};
  $("dead").textContent = int.format(Object.values(dead).reduce((a, b) => a + b, 0));
  renderPairs("dead-rows", Object.entries(dead), "none");
  renderPairs("result-rows", Object.entries(byStatus), "none yet");
  renderBatches(doc.batches || []);
  renderCosts(doc.costs);
}

function setLive(ok, text) {
  const live = $("live");
  live.classList.toggle("ok", ok);
  live.classList.toggle("down", !ok);
  $("live-text").textContent = text;
}

async function refresh() {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  try {
    const response = await fetch("status", { cache: "no-store", signal: controller.signal });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    setLive(true, `live · updated ${new Date().toLocaleTimeString()}`);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (err) {
    setLive(false, `poller unreachable (${err.name === "AbortError" ? "timeout" : err.message}); retrying`);
  } finally {
    clearTimeout(timer);
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
