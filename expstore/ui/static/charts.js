/* Metric charts over uPlot: series as the API sends them -> sorted, smoothed, log-safe uPlot data. */
"use strict";

const ExpCharts = (() => {
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
  const HEIGHT = 220;

  /** The colour of series number `i` (the same run keeps its colour across the charts of a page). */
  function color(i) {
    return PALETTE[i % PALETTE.length];
  }

  /** The x of each point: its step (its index when the step is missing) or its time. */
  function xValues(s, mode) {
    if (mode === "time") return s.time.slice();
    return s.step.map((step, i) => (step === null || step === undefined ? i : step));
  }

  /** [x, y] with x ascending (points kept in logging order among equal x): uPlot draws x in order. */
  function sortedPairs(x, y) {
    let sorted = true;
    for (let i = 1; i < x.length; i++) if (x[i] < x[i - 1]) { sorted = false; break; }
    if (sorted) return [x, y];
    const order = x.map((_, i) => i).sort((a, b) => x[a] - x[b] || a - b);
    return [order.map((i) => x[i]), order.map((i) => y[i])];
  }

  /** Exponential moving average with TensorBoard's debiasing; `alpha` in [0, 1), 0 leaves values as they are. */
  function smooth(values, alpha) {
    if (!alpha) return values;
    const out = new Array(values.length);
    let last = 0, weight = 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === null || !Number.isFinite(v)) { out[i] = null; continue; }
      last = last * alpha + (1 - alpha) * v;
      weight = weight * alpha + (1 - alpha);
      out[i] = last / weight;
    }
    return out;
  }

  /** Values a log axis cannot show (<= 0) become gaps. */
  function logSafe(values, log) {
    return log ? values.map((v) => (v !== null && v > 0 ? v : null)) : values;
  }

  /** How many of `values` are drawn (not gaps). */
  function drawnCount(values) {
    let n = 0;
    for (const v of values) if (v !== null && v !== undefined) n++;
    return n;
  }

  /** One metric of one run as an x-sorted table [x, raw, smoothed?] and the number of points drawn. */
  function prepare(s, opts) {
    const [x, raw] = sortedPairs(xValues(s, opts.x), s.value);
    const shown = logSafe(raw, opts.log);
    const data = opts.smoothing ? [x, shown, logSafe(smooth(raw, opts.smoothing), opts.log)] : [x, shown];
    return { data, points: drawnCount(shown) };
  }

  /** Several runs' series of one metric joined on a common x (gaps where a run has no point). */
  function overlay(list, opts) {
    const tables = [];
    let points = 0;
    for (const s of list) {
      if (!s || !s.value.length) { tables.push([[], []]); continue; }
      const [x, raw] = sortedPairs(xValues(s, opts.x), s.value);
      const y = logSafe(smooth(raw, opts.smoothing), opts.log);
      points += drawnCount(y);
      tables.push([x, y]);
    }
    const nonEmpty = tables.filter((t) => t[0].length);
    if (!nonEmpty.length) return { data: [[], ...list.map(() => [])], points: 0 };
    const joined = uPlot.join(tables.map((t) => (t[0].length ? t : [[nonEmpty[0][0][0]], [null]])));
    return { data: joined, points };
  }

  /** uPlot options for a chart of `labels` (one series each) in a box `width` wide. */
  function options(labels, opts, width, extraRaw) {
    const series = [{ label: opts.x === "time" ? "time" : "step" }];
    labels.forEach((label, i) => {
      if (extraRaw) series.push({ label: label + " (raw)", stroke: color(i) + "55", width: 1, spanGaps: true });
      series.push({ label, stroke: color(i), width: 1.5, spanGaps: true });
    });
    return {
      width, height: HEIGHT, series,
      scales: { x: { time: opts.x === "time" }, y: { distr: opts.log ? 3 : 1 } },
      axes: [{}, { size: 60 }],
      legend: { show: true },
      cursor: { drag: { x: true, y: false } },
    };
  }

  /** A uPlot chart drawn into `box`; once drawn, `data-points` on the box says how many points it shows. */
  function draw(box, labels, prepared, opts) {
    box.textContent = "";
    box.pendingPoints = prepared.points;
    const raw = labels.length === 1 && opts.smoothing > 0;
    const width = Math.max(300, box.clientWidth || 600);
    const o = options(labels, opts, width, raw);
    o.hooks = { draw: [() => box.setAttribute("data-points", String(box.pendingPoints))] };
    return new uPlot(o, prepared.data, box);
  }

  /** New data for a drawn chart (`data-points` follows when uPlot has redrawn it). */
  function update(plot, box, prepared) {
    box.pendingPoints = prepared.points;
    plot.setData(prepared.data);
  }

  /** Give every chart of `charts` the width of its box (after a window resize). */
  function fit(charts) {
    for (const c of charts) if (c && c.root && c.root.parentNode) c.setSize({ width: Math.max(300, c.root.parentNode.clientWidth), height: HEIGHT });
  }

  return { color, prepare, overlay, draw, update, fit, smooth };
})();
