/* The expstore dashboard: hash routes #/ (runs), #/run/<id>, #/compare/<id>,<id>...
   Every name and value from the server goes into the page as text (textContent / text nodes). */
"use strict";

const app = document.getElementById("app");
let leaving = [];  // what the current page stops when the route changes (timers, listeners)
let infoPromise = null;

// ---- small helpers ---------------------------------------------------------------------------

/** An element with attributes (`on*` functions become listeners) and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** A value as the text shown in a cell. */
function show(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return showNumber(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** A number with at most 5 significant digits, trailing zeros dropped; integers as they are. */
function showNumber(v) {
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  const t = a >= 1e-3 && a < 1e5 ? v.toPrecision(5) : v.toExponential(3);
  const [mant, exp] = t.split("e");
  const m = mant.includes(".") ? mant.replace(/\.?0+$/, "") : mant;
  return exp === undefined ? m : `${m}e${exp}`;
}

/** Unix seconds as local date and time. */
function showTime(sec) {
  if (sec === null || sec === undefined) return "—";
  const d = new Date(sec * 1000), p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** An ISO timestamp as local date and time with milliseconds (the text itself when it does not parse). */
function showIso(iso) {
  const ms = Date.parse(iso);
  if (!iso || Number.isNaN(ms)) return iso || "—";
  return `${showTime(Math.floor(ms / 1000))}.${String(ms % 1000).padStart(3, "0")}`;
}

/** Seconds as "1h 02m", "3m 04s" or "5.2s". */
function showDuration(sec) {
  if (sec === null || sec === undefined) return "—";
  if (sec < 60) return `${sec.toFixed(1)}s`;
  const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = Math.floor(sec % 60);
  return h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}m ${String(s).padStart(2, "0")}s`;
}

/** A byte count in B / KiB / MiB / GiB. */
function showBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
}

/** A nested object as {"a.b.c": leaf}, so config tables and diffs are flat. */
function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) flatten(v, key, out);
    else out[key] = v;
  }
  return out;
}

/** GET /api/<path> with `params` (arrays repeat the key); the JSON, or an Error carrying the server's message. */
async function api(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) q.append(k, one);
  }
  const res = await fetch(`api/${path}${q.toString() ? "?" + q : ""}`, { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await res.json(); } catch { body = null; }
  if (!res.ok) {
    const err = new Error((body && body.error) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

/** /api/info, asked once per page load. */
function info() {
  if (!infoPromise) infoPromise = api("info").catch(() => ({ refresh_seconds: 2.0 }));
  return infoPromise;
}

/** A table with a header row and one row per entry of `rows` (arrays of cell contents). */
function table(testid, header, rows) {
  return el("table", { class: "kv", "data-testid": testid },
    el("thead", {}, el("tr", {}, header.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
}

/** A key/value table of a nested object, flattened. */
function kvTable(testid, obj) {
  const flat = flatten(obj);
  const keys = Object.keys(flat).sort();
  if (!keys.length) return el("p", { class: "muted", "data-testid": testid }, "none");
  return table(testid, ["key", "value"], keys.map((k) => [k, show(flat[k])]));
}

/** A run's status as a coloured badge (unknown statuses get the neutral colour). */
function statusBadge(status) {
  return el("span", { class: `status status-${/^[a-z]+$/.test(status || "") ? status : "other"}`, "data-testid": "status" }, status || "unknown");
}

/** A link to the run's page, its name as text. */
function runLink(run) {
  return el("a", { href: `#/run/${encodeURIComponent(run.run_id)}`, "data-testid": "run-link" }, run.name || run.run_id);
}

/** An error's message, shown where the page would be. */
function errorBox(err) {
  return el("p", { class: "error", "data-testid": "page-error" }, String(err && err.message ? err.message : err));
}

/** A catalog identifier for an order_by term: `params.lr`, or a backquoted key when it is not plain words. */
function fieldName(kind, key) {
  const plain = key.split(".").every((part) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(part));
  return `${kind}.${plain ? key : "`" + key.replace(/`/g, "``") + "`"}`;
}

// ---- runs page ---------------------------------------------------------------------------------

const runsState = {
  filter: "", order: { field: "start_time", dir: "DESC" }, offset: 0, limit: 100,
  selected: new Map(),  // run_id -> name, kept across pages and filters
  columns: null,        // chosen "params.x" / "metrics.y" columns (null: the first few of each)
};
const DEFAULT_COLUMNS = 5;

/** The runs page: filter box, toolbar, one page of the catalog's runs; state kept in `runsState`. */
function pageRuns() {
  const s = runsState;
  const filterInput = el("input", { type: "search", placeholder: "filter, e.g. metrics.loss < 0.1 and params.optimizer = 'adam'", "data-testid": "filter-input", value: s.filter, spellcheck: "false", "aria-label": "filter" });
  filterInput.value = s.filter;
  const filterError = el("div", { class: "error", "data-testid": "filter-error" });
  const summary = el("span", { class: "muted", "data-testid": "runs-total" });
  const compareBtn = el("button", { "data-testid": "compare-button", onclick: () => {
    location.hash = "#/compare/" + [...s.selected.keys()].map(encodeURIComponent).join(",");
  } }, "Compare");
  const clearBtn = el("button", { class: "link", onclick: () => { s.selected.clear(); load(); } }, "clear selection");
  const picker = el("details", { class: "picker", "data-testid": "column-picker" }, el("summary", {}, "Columns"));
  const prev = el("button", { "data-testid": "page-prev", onclick: () => { s.offset = Math.max(0, s.offset - s.limit); load(); } }, "‹ Prev");
  const next = el("button", { "data-testid": "page-next", onclick: () => { s.offset += s.limit; load(); } }, "Next ›");
  const limitSel = el("select", { "aria-label": "rows per page", onchange: (e) => { s.limit = Number(e.target.value); s.offset = 0; load(); } },
    [50, 100, 250, 500, 1000].map((n) => el("option", { value: n, selected: n === s.limit }, `${n} / page`)));
  const tableBox = el("div", { class: "table-box" });
  const form = el("form", { class: "filter", onsubmit: (e) => { e.preventDefault(); s.filter = filterInput.value.trim(); s.offset = 0; load(); } },
    filterInput, el("button", { type: "submit", "data-testid": "filter-apply" }, "Search"));
  app.replaceChildren(el("section", { class: "runs" }, form, filterError,
    el("div", { class: "toolbar" }, summary, compareBtn, clearBtn, picker, el("span", { class: "spacer" }), limitSel, prev, next), tableBox));
  let seq = 0;

  /** The compare button and the clear link follow the selection. */
  function updateSelection() {
    compareBtn.disabled = s.selected.size < 2;
    compareBtn.textContent = `Compare (${s.selected.size})`;
    clearBtn.hidden = s.selected.size === 0;
  }

  /** The [kind, key] columns shown: the chosen ones, or the first few params and metrics. */
  function columnsOf(body) {
    const all = [...body.param_keys.map((k) => ["params", k]), ...body.metric_keys.map((k) => ["metrics", k])];
    if (s.columns === null) return [...body.param_keys.slice(0, DEFAULT_COLUMNS).map((k) => ["params", k]), ...body.metric_keys.slice(0, DEFAULT_COLUMNS).map((k) => ["metrics", k])];
    return all.filter(([kind, k]) => s.columns.has(`${kind}.${k}`));
  }

  /** The column picker: a checkbox per param and metric key of the matching runs. */
  function renderPicker(body, shown) {
    const chosen = new Set(shown.map(([kind, k]) => `${kind}.${k}`));
    const boxes = [];
    for (const [kind, keys] of [["params", body.param_keys], ["metrics", body.metric_keys]]) {
      for (const k of keys) {
        const id = `${kind}.${k}`;
        boxes.push(el("label", {}, el("input", { type: "checkbox", checked: chosen.has(id), onchange: (e) => {
          if (s.columns === null) s.columns = new Set(chosen);
          if (e.target.checked) s.columns.add(id); else s.columns.delete(id);
          load();
        } }), ` ${id}`));
      }
    }
    picker.replaceChildren(picker.firstChild, el("div", { class: "picker-list" }, boxes.length ? boxes : el("span", { class: "muted" }, "no params or metrics")));
  }

  /** A sortable header cell; a click sorts by `field` on the server, descending first. */
  function header(label, field) {
    const active = s.order.field === field;
    return el("th", { class: "sortable", "data-testid": "sort-header", "data-field": field, "aria-sort": active ? (s.order.dir === "ASC" ? "ascending" : "descending") : null,
      onclick: () => {
        s.order = { field, dir: active && s.order.dir === "DESC" ? "ASC" : "DESC" };
        s.offset = 0;
        load();
      } }, label, active ? (s.order.dir === "ASC" ? " ▲" : " ▼") : "");
  }

  /** The table of one page of runs, the count and the paging buttons. */
  function render(body) {
    const cols = columnsOf(body);
    renderPicker(body, cols);
    const allBox = el("input", { type: "checkbox", "aria-label": "select page", "data-testid": "select-page", onchange: (e) => {
      for (const r of body.runs) { if (e.target.checked) s.selected.set(r.run_id, r.name); else s.selected.delete(r.run_id); }
      for (const b of tableBox.querySelectorAll("tbody input[type=checkbox]")) b.checked = e.target.checked;
      updateSelection();
    } });
    const head = el("tr", {}, el("th", {}, allBox), header("name", "name"), header("status", "status"), header("start", "start_time"),
      header("duration", "duration_seconds"), cols.map(([kind, k]) => header(`${kind === "params" ? "" : "▸ "}${k}`, fieldName(kind, k))));
    const rows = body.runs.map((r) => el("tr", { "data-testid": "run-row", "data-run-id": r.run_id },
      el("td", {}, el("input", { type: "checkbox", "aria-label": "select", checked: s.selected.has(r.run_id), onchange: (e) => {
        if (e.target.checked) s.selected.set(r.run_id, r.name); else s.selected.delete(r.run_id);
        updateSelection();
      } })),
      el("td", { class: "name" }, runLink(r)), el("td", {}, statusBadge(r.status)), el("td", { class: "num" }, showTime(r.start_time)),
      el("td", { class: "num" }, showDuration(r.duration_seconds)),
      cols.map(([kind, k]) => el("td", { class: kind === "metrics" ? "num" : "" }, show((r[kind] || {})[k])))));
    tableBox.replaceChildren(el("table", { class: "runs-table", "data-testid": "runs-table" }, el("thead", {}, head), el("tbody", {}, rows)));
    const end = body.offset + body.runs.length;
    summary.textContent = body.total ? `${body.offset + 1}–${end} of ${body.total} runs` : "no runs";
    summary.setAttribute("data-total", String(body.total));
    prev.disabled = body.offset === 0;
    next.disabled = end >= body.total;
    updateSelection();
  }

  /** Ask the server for the current page; only the newest answer is drawn, a 400 goes under the filter. */
  async function load() {
    const mine = ++seq;
    tableBox.classList.add("loading");
    try {
      const body = await api("runs", { filter: s.filter, order_by: `${s.order.field} ${s.order.dir}`, limit: s.limit, offset: s.offset });
      if (mine !== seq) return;
      if (body.total && body.offset >= body.total) { s.offset = Math.max(0, body.total - s.limit); return load(); }
      filterError.textContent = "";
      filterInput.classList.remove("bad");
      render(body);
    } catch (err) {
      if (mine !== seq) return;
      if (err.status === 400) { filterError.textContent = err.message; filterInput.classList.add("bad"); }
      else tableBox.replaceChildren(errorBox(err));
    } finally {
      if (mine === seq) tableBox.classList.remove("loading");
    }
  }

  updateSelection();
  load();
}

// ---- chart controls shared by the run and compare pages ------------------------------------------

const chartOpts = { x: "step", log: false, smoothing: 0 };

/** The x / log / smoothing controls; `changed` redraws the page's charts. */
function chartControls(changed) {
  const radio = (value) => el("label", {}, el("input", { type: "radio", name: "xaxis", value, checked: chartOpts.x === value, "data-testid": `x-${value}`,
    onchange: () => { chartOpts.x = value; changed(); } }), ` ${value}`);
  const smoothLabel = el("span", { class: "num" }, chartOpts.smoothing.toFixed(2));
  return el("div", { class: "controls" },
    el("span", {}, "x: "), radio("step"), radio("time"),
    el("label", {}, el("input", { type: "checkbox", checked: chartOpts.log, "data-testid": "log-scale", onchange: (e) => { chartOpts.log = e.target.checked; changed(); } }), " log scale"),
    el("label", {}, "smoothing ", el("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: chartOpts.smoothing, "data-testid": "smoothing",
      oninput: (e) => { chartOpts.smoothing = Number(e.target.value); smoothLabel.textContent = chartOpts.smoothing.toFixed(2); changed(); } }), " ", smoothLabel));
}

/** A titled chart box for `metric`; the chart itself is drawn into `.chart`. */
function chartCard(metric) {
  const box = el("div", { class: "chart", "data-testid": "chart", "data-metric": metric });
  return { card: el("div", { class: "chart-card" }, el("h3", {}, metric), box), box };
}

/** Redraw-on-resize for the page's charts, removed when the page is left. */
function fitOnResize(charts) {
  let pending = 0;
  const onResize = () => { cancelAnimationFrame(pending); pending = requestAnimationFrame(() => ExpCharts.fit(charts())); };
  window.addEventListener("resize", onResize);
  leaving.push(() => window.removeEventListener("resize", onResize));
}

// ---- run page --------------------------------------------------------------------------------

/** The run page: charts, checkpoints, config, environment, events; follows the run while it is running. */
async function pageRun(runId) {
  app.replaceChildren(el("p", { class: "muted" }, "loading…"));
  let run, metrics, events, checkpoints;
  try {
    [run, metrics, events, checkpoints] = await Promise.all([
      api("run", { id: runId }), api("metrics", { id: runId }), api("events", { id: runId }), api("checkpoints", { id: runId })]);
  } catch (err) {
    app.replaceChildren(errorBox(err));
    return;
  }
  let gone = false;
  leaving.push(() => { gone = true; });
  const series = metrics.series;  // metric -> {step, time, value}, grown by the live polls
  let cursor = metrics.cursor, eventCursor = events.cursor;
  const charts = new Map();       // metric -> {box, plot}
  const chartsBox = el("div", { class: "charts", "data-testid": "charts" });
  const statusBox = el("span", {}, statusBadge(run.status));
  const live = el("span", { class: "live", "data-testid": "live", hidden: true }, "● live");
  const eventsBody = el("tbody", {});
  const eventsBox = el("table", { class: "kv events", "data-testid": "events-table" },
    el("thead", {}, el("tr", {}, ["time", "type", "rank", "data"].map((h) => el("th", {}, h)))), eventsBody);

  /** (Re)draw the chart of `metric` from all its points, making its card the first time. */
  function drawChart(metric) {
    let c = charts.get(metric);
    if (!c) {
      const { card, box } = chartCard(metric);
      chartsBox.appendChild(card);
      c = { box, plot: null };
      charts.set(metric, c);
    }
    if (c.plot) c.plot.destroy();
    c.plot = ExpCharts.draw(c.box, [metric], ExpCharts.prepare(series[metric], chartOpts), chartOpts);
  }

  /** Give the chart of `metric` its grown series. */
  function updateChart(metric) {
    const c = charts.get(metric);
    if (!c || !c.plot) return drawChart(metric);
    ExpCharts.update(c.plot, c.box, ExpCharts.prepare(series[metric], chartOpts));
  }

  /** Draw every metric's chart with the current options. */
  function drawAll() {
    const names = Object.keys(series).sort();
    if (!names.length) chartsBox.replaceChildren(el("p", { class: "muted", "data-testid": "no-metrics" }, "no metrics logged"));
    for (const m of names) drawChart(m);
  }

  /** Put events at the top of the events table (newest first), keeping the last 200. */
  function addEvents(list) {
    const rows = list.map((e) => el("tr", {}, el("td", { class: "num", title: e.timestamp || "" }, showIso(e.timestamp)), el("td", {}, e.event_type || "—"),
      el("td", { class: "num" }, e.rank === undefined ? "" : show(e.rank)), el("td", { class: "data" }, JSON.stringify(e.data))));
    eventsBody.prepend(...rows.reverse());
    while (eventsBody.rows.length > 200) eventsBody.deleteRow(-1);
  }

  /** The verify button of one checkpoint and the cell that shows its answer. */
  function verifyButton(ck) {
    const result = el("span", { class: "verify-result", "data-testid": "verify-result" });
    const btn = el("button", { "data-testid": "verify-button", onclick: async () => {
      btn.disabled = true;
      result.className = "verify-result";
      result.textContent = "verifying…";
      try {
        const v = await api("verify", { id: runId, iteration: ck.iteration });
        result.textContent = v.ok ? "ok" : `problem: ${v.problem}`;
        result.classList.add(v.ok ? "ok" : "bad");
      } catch (err) {
        result.textContent = `error: ${err.message}`;
        result.classList.add("bad");
      } finally {
        btn.disabled = false;
      }
    } }, "verify");
    return [btn, " ", result];
  }

  const ckRows = checkpoints.checkpoints.map((ck) => [show(ck.iteration), showBytes(ck.size), showIso(ck.timestamp), (ck.tags || []).join(", "), verifyButton(ck)]);
  app.replaceChildren(el("section", { class: "run" },
    el("h1", { "data-testid": "run-name" }, run.name || run.run_id),
    el("p", { class: "meta" }, statusBox, " ", live, " started ", showTime(run.start_time), " · duration ", showDuration(run.duration_seconds),
      " · ", el("code", {}, run.run_id)),
    el("h2", {}, "Metrics"), chartControls(drawAll), chartsBox,
    el("h2", {}, "Checkpoints"), run.checkpoints ? el("p", { class: "muted" }, el("code", {}, run.checkpoints)) : null,
    ckRows.length ? table("checkpoints-table", ["iteration", "size", "timestamp", "tags", "verify"], ckRows)
      : el("p", { class: "muted", "data-testid": "checkpoints-table" }, "no checkpoints"),
    el("div", { class: "columns" },
      el("div", {}, el("h2", {}, "Config"), kvTable("config-table", run.config)),
      el("div", {}, el("h2", {}, "Environment"), kvTable("env-table", run.environment))),
    el("h2", {}, "Last events"), el("div", { class: "scroll" }, eventsBox)));
  drawAll();
  addEvents(events.events);
  fitOnResize(() => [...charts.values()].map((c) => c.plot));

  const refresh = Math.max(0.2, (await info()).refresh_seconds || 2.0);
  const period = Math.min(1.0, refresh) * 1000;
  let lastRunCheck = performance.now();
  // once the status says the run ended, two more polls fetch what its last flush wrote (the status can
  // reach the catalog before the page has read the final events)
  let finalPolls = 2;

  /** One live poll: new points and events since the cursors, the status now and then; then the next tick. */
  async function poll() {
    if (gone) return;
    try {
      const [m, e] = await Promise.all([api("metrics", { id: runId, since: cursor }), api("events", { id: runId, since: eventCursor })]);
      if (gone) return;
      cursor = m.cursor;
      eventCursor = e.cursor;
      for (const [name, s] of Object.entries(m.series)) {
        if (!s.value.length) continue;
        if (!series[name]) { series[name] = { step: [], time: [], value: [] }; chartsBox.querySelector("[data-testid=no-metrics]")?.remove(); }
        for (const k of ["step", "time", "value"]) for (const v of s[k]) series[name][k].push(v);
        updateChart(name);
      }
      if (e.events.length) addEvents(e.events);
      if (performance.now() - lastRunCheck >= refresh * 1000) {
        lastRunCheck = performance.now();
        const fresh = await api("run", { id: runId });
        if (gone) return;
        run.status = fresh.status;
        statusBox.replaceChildren(statusBadge(fresh.status));
      }
    } catch (err) {
      live.title = String(err.message);  // a failed poll is tried again at the next tick
    }
    if (run.status !== "running" && finalPolls-- <= 0) { live.hidden = true; return; }
    setTimeout(poll, period);
  }
  if (run.status === "running") {
    live.hidden = false;
    setTimeout(poll, period);
  }
}

// ---- compare page ------------------------------------------------------------------------------

/** The compare page: every metric with the runs overlaid, and the config keys whose values differ. */
async function pageCompare(ids) {
  app.replaceChildren(el("p", { class: "muted" }, "loading…"));
  let runs, metrics;
  try {
    [runs, metrics] = await Promise.all([Promise.all(ids.map((id) => api("run", { id }))), Promise.all(ids.map((id) => api("metrics", { id })))]);
  } catch (err) {
    app.replaceChildren(errorBox(err));
    return;
  }
  const names = runs.map((r) => r.name || r.run_id);
  const metricNames = [...new Set(metrics.flatMap((m) => Object.keys(m.series)))].sort();
  const plots = [];
  const chartsBox = el("div", { class: "charts", "data-testid": "charts" });

  /** Draw every metric's chart with the current options. */
  function drawAll() {
    plots.splice(0).forEach((p) => p.destroy());
    chartsBox.replaceChildren();
    if (!metricNames.length) chartsBox.appendChild(el("p", { class: "muted" }, "no metrics logged"));
    for (const metric of metricNames) {
      const { card, box } = chartCard(metric);
      chartsBox.appendChild(card);
      const prepared = ExpCharts.overlay(metrics.map((m) => m.series[metric]), chartOpts);
      plots.push(ExpCharts.draw(box, names, prepared, chartOpts));
    }
  }

  const flat = runs.map((r) => flatten(r.config));
  const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort();
  const differ = keys.filter((k) => new Set(flat.map((f) => (k in f ? JSON.stringify(f[k]) : "\u0000missing"))).size > 1);
  const diff = differ.length
    ? el("table", { class: "kv", "data-testid": "diff-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "key"), names.map((n, i) => el("th", {}, el("span", { class: "swatch", style: `background:${ExpCharts.color(i)}` }), n)))),
      el("tbody", {}, differ.map((k) => el("tr", { "data-key": k }, el("td", {}, k), flat.map((f) => el("td", {}, k in f ? show(f[k]) : "—"))))))
    : el("p", { class: "muted", "data-testid": "diff-table" }, "the configs do not differ");

  app.replaceChildren(el("section", { class: "compare" },
    el("h1", {}, `Compare ${runs.length} runs`),
    el("ul", { class: "legend", "data-testid": "compare-runs" }, runs.map((r, i) => el("li", {},
      el("span", { class: "swatch", style: `background:${ExpCharts.color(i)}` }), runLink(r), " ", statusBadge(r.status)))),
    el("h2", {}, "Metrics"), chartControls(drawAll), chartsBox,
    el("h2", {}, "Config differences"), diff));
  drawAll();
  fitOnResize(() => plots);
}

// ---- routing ---------------------------------------------------------------------------------

/** Render the page the hash names, after stopping what the previous page runs. */
function route() {
  leaving.splice(0).forEach((stop) => stop());
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = hash.split("/");
  const arg = rest.join("/");
  try {
    if (page === "run" && arg) return pageRun(decodeURIComponent(arg));
    if (page === "compare" && arg) return pageCompare(arg.split(",").filter(Boolean).map(decodeURIComponent));
    return pageRuns();
  } catch (err) {
    app.replaceChildren(errorBox(err));
  }
}

window.addEventListener("hashchange", route);
info().then((i) => { if (i.root) document.querySelector("[data-testid=root]").textContent = i.root; });
route();
