// Cohort dashboard: live tables and curves, no dependencies. Every value from the
// server is put into the page with textContent or setAttribute, never as HTML.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const MAX_DOTS = 60; // a series with more points is drawn as a line only
  const COLORS = ["#1f6feb", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#0b7285"];

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  // num formats a measurement as Number.String does on the server: four decimals, or
  // four significant digits for a small non-zero value (never a "0.0000" that is not 0).
  function num(v) {
    if (v === null || v === undefined || v === "" || !Number.isFinite(Number(v))) return "—";
    const f = Number(v);
    return f !== 0 && Math.abs(f) < 5e-5 ? f.toExponential(3).replace(/e([+-])(\d)$/, "e$10$2") : f.toFixed(4);
  }
  function pct(p) { return p.total_steps > 0 ? Math.min(100, Math.round(100 * p.step / p.total_steps)) + "%" : "0%"; }
  function setText(id, text) { const e = document.getElementById(id); if (e) e.textContent = text; }
  function setList(id, items) {
    const e = document.getElementById(id);
    if (!e) return;
    e.replaceChildren(...(items || []).map((s) => el("div", {}, s)));
  }
  // csrfToken is the session's CSRF token, from the page's csrf-token meta tag ("" when
  // the dashboard requires no login). The server checks it on every state-changing
  // request; api sends it on every request, so that a state-changing call added later
  // carries it too.
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrfToken = csrfMeta ? csrfMeta.getAttribute("content") : "";
  function api(url, init) {
    const opts = Object.assign({ credentials: "same-origin" }, init || {});
    const headers = new Headers(opts.headers || {});
    if (!headers.has("Accept")) headers.set("Accept", "application/json");
    if (csrfToken) headers.set("X-CSRF-Token", csrfToken);
    opts.headers = headers;
    return fetch(url, opts);
  }
  function stateBadge(state) { return el("span", { class: "state state-" + state }, state); }

  // niceStep is the tick spacing for about n ticks over span: 1, 2 or 5 times a
  // power of ten, whichever comes closest (as d3's tickIncrement).
  function niceStep(span, n) {
    const raw = span / Math.max(1, n);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p;
    return (f >= Math.sqrt(50) ? 10 : f >= Math.sqrt(10) ? 5 : f >= Math.sqrt(2) ? 2 : 1) * p;
  }

  // axisDomain pads [lo, hi] so that no point sits on the frame and a single value
  // (lo === hi) gets a range around it instead of a meaningless one. integer keeps the
  // ticks whole numbers; nonNegative keeps a range of values >= 0 from going below 0;
  // nice widens the range to whole ticks (else the ticks are those inside it).
  function axisDomain(lo, hi, opts) {
    const o = opts || {};
    let pad;
    if (hi === lo) {
      pad = o.integer ? 1 : (Math.abs(lo) * 0.1 || 0.1);
    } else {
      pad = (hi - lo) * (o.nice ? 0.08 : 0.04);
    }
    let a = lo - pad, b = hi + pad;
    if (o.nonNegative && lo >= 0) a = Math.max(0, a);
    let step = niceStep(b - a, o.ticks || 4);
    if (o.integer) step = Math.max(1, Math.round(step));
    if (o.nice) {
      a = Math.floor(a / step) * step;
      b = Math.ceil(b / step) * step;
      if (o.nonNegative && lo >= 0) a = Math.max(0, a);
    }
    const ticks = [];
    for (let v = Math.ceil(a / step) * step; v <= b + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
    return { lo: a, hi: b, ticks: ticks, step: step };
  }

  function tickText(v, step) {
    const d = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
    return Math.abs(v) >= 1e5 ? v.toExponential(1) : v.toFixed(d);
  }

  // drawChart draws one polyline (with a dot per point) per series into the SVG
  // element; series maps a name to [[x, y], ...]. opts: xLabel, empty (the text when
  // there is nothing to draw), integerX (whole-number x ticks), nonNegative (a y range
  // of values >= 0 starts at 0 at the lowest), faint (names drawn light). data-points
  // is the number of points of the longest series.
  function drawChart(chart, series, opts) {
    const o = opts || {};
    const W = 520, H = 240, L = 52, R = 112, T = 12, B = 36;
    const names = Object.keys(series).filter((n) => series[n].length > 0).sort();
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity, most = 0;
    for (const n of names) {
      most = Math.max(most, series[n].length);
      for (const [x, y] of series[n]) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
    }
    chart.replaceChildren();
    chart.setAttribute("data-points", String(most));
    if (most === 0) {
      chart.setAttribute("viewBox", "0 0 " + W + " 60"); // a line of text, not an empty frame
      chart.appendChild(svg("text", { class: "empty", x: W / 2, y: 34, "text-anchor": "middle" }, o.empty || "No data."));
      return;
    }
    chart.setAttribute("viewBox", "0 0 " + W + " " + H);
    const xd = axisDomain(x0, x1, { integer: !!o.integerX, nonNegative: true, ticks: 5 });
    const yd = axisDomain(y0, y1, { nonNegative: !!o.nonNegative, ticks: 4, nice: true });
    chart.setAttribute("data-x-domain", xd.lo + "," + xd.hi);
    chart.setAttribute("data-y-domain", yd.lo + "," + yd.hi);
    const sx = (x) => L + (x - xd.lo) / (xd.hi - xd.lo) * (W - L - R);
    const sy = (y) => H - B - (y - yd.lo) / (yd.hi - yd.lo) * (H - T - B);
    for (const v of yd.ticks) {
      chart.appendChild(svg("line", { class: "grid", x1: L, y1: sy(v).toFixed(1), x2: W - R, y2: sy(v).toFixed(1) }));
      chart.appendChild(svg("text", { class: "tick", x: L - 5, y: (sy(v) + 4).toFixed(1), "text-anchor": "end" }, tickText(v, yd.step)));
    }
    for (const v of xd.ticks) {
      chart.appendChild(svg("text", { class: "tick", x: sx(v).toFixed(1), y: H - B + 14, "text-anchor": "middle" }, tickText(v, xd.step)));
    }
    chart.appendChild(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    chart.appendChild(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    if (o.xLabel) chart.appendChild(svg("text", { class: "axis-label", x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, o.xLabel));
    const faint = o.faint || [];
    names.forEach((n, i) => {
      const color = COLORS[i % COLORS.length];
      const pts = series[n].map(([x, y]) => sx(x).toFixed(1) + "," + sy(y).toFixed(1)).join(" ");
      const line = svg("polyline", { points: pts, stroke: color, "data-series": n });
      if (faint.includes(n)) line.setAttribute("class", "faint");
      chart.appendChild(line);
      if ((!faint.includes(n) && series[n].length <= MAX_DOTS) || series[n].length === 1) {
        for (const [x, y] of series[n]) {
          const dot = svg("circle", { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: series[n].length === 1 ? 3.5 : 2, fill: color });
          dot.appendChild(svg("title", {}, n + " " + Number(y).toPrecision(5) + " at " + (o.xLabel || "x") + " " + x));
          chart.appendChild(dot);
        }
      }
      const legend = svg("text", { x: W - R + 8, y: T + 12 + 14 * i }, n);
      legend.style.fill = color; // CSSOM, allowed by the CSP (a style attribute is not)
      chart.appendChild(legend);
    });
  }

  // ---- Model report (GET /api/jobs/{id}/report; schema: report.json format_version 1) ----

  const REPORT_FORMAT = 1;
  const FOUR_FIFTHS = 0.8; // impact ratios below this are highlighted (the four-fifths rule)
  const TOP_IMPORTANCES = 20;

  function finite(v) { return v !== null && v !== undefined && v !== "" && Number.isFinite(Number(v)); }
  function fx(v, digits) { return finite(v) ? Number(v).toFixed(digits) : "—"; }
  function share(v) { return finite(v) ? (100 * Number(v)).toFixed(1) + "%" : "—"; }
  function count(v) { return finite(v) ? String(Math.round(Number(v))) : "—"; }
  function utc(s) {
    const d = new Date(s);
    return isNaN(d.getTime()) ? String(s) : d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }
  function h3(text) { return el("h3", {}, text); }
  function note(text) { return el("p", { class: "muted" }, text); }
  function headRow(cells) {
    const tr = el("tr");
    for (const c of cells) tr.appendChild(typeof c === "string" ? el("th", {}, c) : c);
    const thead = el("thead"); thead.appendChild(tr);
    return thead;
  }

  function reportSummary(rep) {
    const t = el("table", { class: "kv", id: "report-summary" });
    const row = (k, v) => { const tr = el("tr"); tr.append(el("th", {}, k), el("td", {}, v)); t.appendChild(tr); };
    const m = rep.model || {};
    row("Task", String(rep.task || "").replace(/_/g, " "));
    row("Model", (m.kind || "?") + (m.step !== undefined ? " at step " + m.step : ""));
    if (m.checkpoint) row("Checkpoint", m.checkpoint);
    row("Evaluated on", (rep.split || "?") + " split, " + count(rep.rows) + " rows");
    if (Array.isArray(rep.classes) && rep.classes.length > 0) row("Classes", rep.classes.join(", "));
    if (rep.format_version !== REPORT_FORMAT) row("Report format", String(rep.format_version) + " (this dashboard knows " + REPORT_FORMAT + ")");
    return t;
  }

  // reportGate is the export gate's banner: the verdict, each reason, the override.
  function reportGate(gate) {
    const passed = !!gate.passed;
    const box = el("div", { id: "report-gate", class: "gate " + (passed ? "gate-passed" : "gate-blocked") + (gate.override ? " gate-overridden" : "") });
    box.appendChild(el("strong", { class: "gate-verdict" }, passed ? "PASSED" : "EXPORT BLOCKED"));
    if ((gate.reasons || []).length > 0) {
      const ul = el("ul", { class: "gate-reasons" });
      for (const r of gate.reasons) ul.appendChild(el("li", {}, r));
      box.appendChild(ul);
    }
    const o = gate.override;
    if (o) {
      const p = el("p", { class: "gate-override" });
      p.append(el("strong", {}, "Overridden"), " by " + (o.by || "?") + (o.time ? " on " + utc(o.time) : "") + ": " + (o.reason || ""));
      box.appendChild(p);
    }
    return box;
  }

  function reportMetrics(rep) {
    const t = el("table", { class: "grid", id: "report-metrics" });
    t.appendChild(headRow(["Metric", el("th", { class: "n" }, "Value"), el("th", { class: "n" }, "95% CI")]));
    const body = el("tbody");
    for (const name of Object.keys(rep.metrics || {}).sort()) {
      const m = rep.metrics[name] || {};
      const ci = Array.isArray(m.ci95) && m.ci95.length === 2 ? "[" + fx(m.ci95[0], 4) + ", " + fx(m.ci95[1], 4) + "]" : "—";
      const tr = el("tr");
      tr.append(el("th", {}, name), el("td", { class: "n" }, fx(m.value, 4)), el("td", { class: "n" }, ci));
      body.appendChild(tr);
    }
    t.appendChild(body);
    return t;
  }

  // GROUP_COLUMNS are the fairness table's figure columns. One is shown when the
  // report's task has it, or when a group of the report has its key (Go omits a
  // figure that does not apply, so presence alone could hide a column).
  const BIN = "binary_classification", MULTI = "multiclass_classification", REG = "regression";
  const rate = (v) => fx(v, 3);
  const GROUP_COLUMNS = [
    { key: "count", head: "Count", fmt: count, tasks: [BIN, MULTI, REG] },
    { key: "fraction", head: "Fraction", fmt: share, tasks: [BIN, MULTI, REG] },
    { key: "base_rate", head: "Base rate", fmt: rate, tasks: [BIN] },
    { key: "mean_label", head: "Mean label", fmt: rate, tasks: [REG] },
    { key: "mean_prediction", head: "Mean prediction", fmt: rate, tasks: [REG] },
    { key: "accuracy", head: "Accuracy", fmt: rate, tasks: [MULTI] },
    { key: "selection_rate", head: "Selection rate", fmt: rate, tasks: [BIN] },
    { key: "impact_ratio", head: "Impact ratio", fmt: rate, tasks: [BIN], ratio: true },
    { key: "tpr", head: "TPR", fmt: rate, tasks: [BIN] },
    { key: "fpr", head: "FPR", fmt: rate, tasks: [BIN] },
    { key: "score_rate", head: "Scoring rate", fmt: rate, tasks: [BIN, REG] },
    { key: "score_impact_ratio", head: "Scoring impact ratio", fmt: rate, tasks: [BIN, REG], ratio: true },
  ];

  function reportFairness(audit, task) {
    const groups = audit.groups || [];
    const cols = GROUP_COLUMNS.filter((c) => c.tasks.includes(task) || groups.some((g) => c.key in g));
    const t = el("table", { class: "grid", id: "report-fairness" });
    t.appendChild(headRow(["Attribute", "Category", ...cols.map((c) => el("th", { class: "n" }, c.head)), "Excluded"]));
    const body = el("tbody");
    let last = null;
    for (const g of groups) {
      const tr = el("tr", { "data-attribute": g.attribute || "", "data-category": g.category || "" });
      const classes = [];
      if (g.attribute !== last) { classes.push("first"); last = g.attribute; }
      if (g.excluded) classes.push("excluded");
      if (classes.length) tr.setAttribute("class", classes.join(" "));
      tr.appendChild(el("td", {}, g.attribute || ""));
      tr.appendChild(g.missing ? el("td", { class: "muted" }, "(missing)") : el("td", {}, g.category === "" ? "(empty)" : String(g.category)));
      for (const c of cols) {
        const v = g[c.key];
        const low = c.ratio && finite(v) && Number(v) < FOUR_FIFTHS;
        const attrs = { class: "n" + (low ? " low-ratio" : ""), "data-key": c.key };
        const ci = g[c.key + "_ci95"];
        if (c.ratio && Array.isArray(ci) && ci.length === 2) attrs.title = "95% CI [" + fx(ci[0], 3) + ", " + fx(ci[1], 3) + "]";
        tr.appendChild(el("td", attrs, c.fmt(v)));
      }
      tr.appendChild(el("td", { class: "reason" }, g.excluded ? "yes: " + (g.reason || "no reason given") : "no"));
      body.appendChild(tr);
    }
    t.appendChild(body);
    const wrap = el("div", { class: "scroll" });
    wrap.appendChild(t);
    return wrap;
  }

  // drawBars draws a horizontal bar chart of importances (mean, std as an error bar),
  // the largest first; data-bars is the number of bars.
  function drawBars(chart, items, axisLabel) {
    const W = 640, L = 216, R = 64, T = 8, B = 34, ROW = 20;
    const rows = items.filter((it) => finite(it.mean));
    const H = T + Math.max(1, rows.length) * ROW + B;
    chart.setAttribute("viewBox", "0 0 " + W + " " + H);
    chart.replaceChildren();
    chart.setAttribute("data-bars", String(rows.length));
    if (rows.length === 0) { chart.appendChild(svg("text", { x: L, y: T + 14 }, "no importances")); return; }
    const sd = (it) => finite(it.std) ? Math.abs(Number(it.std)) : 0;
    let lo = 0, hi = 0;
    for (const it of rows) { lo = Math.min(lo, it.mean - sd(it)); hi = Math.max(hi, it.mean + sd(it)); }
    if (hi === lo) hi = lo + 1;
    const sx = (v) => L + (v - lo) / (hi - lo) * (W - L - R);
    const bottom = T + rows.length * ROW;
    rows.forEach((it, i) => {
      const y = T + i * ROW, mid = y + ROW / 2;
      const name = String(it.feature);
      const label = svg("text", { x: L - 6, y: mid + 4, "text-anchor": "end", class: "bar-label" }, name.length > 28 ? name.slice(0, 27) + "…" : name);
      label.appendChild(svg("title", {}, name));
      const x0 = sx(0), x1 = sx(it.mean);
      const bar = svg("rect", { class: "imp-bar" + (it.mean < 0 ? " neg" : ""), x: Math.min(x0, x1).toFixed(1), y: y + 3, width: Math.max(0.5, Math.abs(x1 - x0)).toFixed(1), height: ROW - 6, "data-feature": name });
      bar.appendChild(svg("title", {}, name + ": " + fx(it.mean, 4) + " ± " + fx(it.std, 4)));
      chart.append(label, bar);
      const s = sd(it);
      if (s > 0) {
        const a = sx(it.mean - s).toFixed(1), b = sx(it.mean + s).toFixed(1);
        chart.append(svg("line", { class: "imp-err", x1: a, y1: mid, x2: b, y2: mid }),
          svg("line", { class: "imp-err", x1: a, y1: mid - 4, x2: a, y2: mid + 4 }),
          svg("line", { class: "imp-err", x1: b, y1: mid - 4, x2: b, y2: mid + 4 }));
      }
      chart.appendChild(svg("text", { x: (sx(Math.max(0, it.mean + s)) + 4).toFixed(1), y: mid + 4, class: "bar-value" }, fx(it.mean, 4)));
    });
    chart.appendChild(svg("line", { class: "axis", x1: sx(0).toFixed(1), y1: T, x2: sx(0).toFixed(1), y2: bottom }));
    chart.appendChild(svg("line", { class: "axis", x1: L, y1: bottom, x2: W - R, y2: bottom }));
    const ticks = lo < 0 ? [lo, 0, hi] : [0, hi / 2, hi];
    for (const v of ticks) {
      chart.appendChild(svg("line", { class: "axis", x1: sx(v).toFixed(1), y1: bottom, x2: sx(v).toFixed(1), y2: bottom + 4 }));
      chart.appendChild(svg("text", { x: sx(v).toFixed(1), y: bottom + 15, "text-anchor": "middle" }, Number(v.toPrecision(3)).toString()));
    }
    chart.appendChild(svg("text", { x: ((L + W - R) / 2).toFixed(1), y: H - 4, "text-anchor": "middle", class: "axis-label" }, axisLabel));
  }

  function importanceSection(rep) {
    const out = [];
    const metric = rep.importance_metric || "score";
    const change = metric === "rmse" ? "rise in RMSE" : "drop in " + (metric === "auc" ? "AUC" : metric);
    const perm = (rep.explain || {}).permutation || {};
    const how = perm.repeats ? " (mean ± std over " + perm.repeats + " shuffles)" : " (mean ± std)";
    const all = (rep.importance || []).slice().sort((a, b) => b.mean - a.mean);
    if (all.length > 0) {
      out.push(h3("Permutation importance"));
      out.push(note("The " + change + " when one feature's column is shuffled" + how +
        (all.length > TOP_IMPORTANCES ? "; the top " + TOP_IMPORTANCES + " of " + all.length + " features." : ".")));
      const c = svg("svg", { id: "importance-chart", class: "chart bars", role: "img", "aria-label": "permutation importance by feature" });
      drawBars(c, all.slice(0, TOP_IMPORTANCES), change);
      out.push(c);
    }
    const lags = rep.importance_by_lag || [];
    if (lags.length > 0) {
      out.push(h3("Importance by lag"));
      out.push(note("The " + change + " when one time step of the input window is shuffled" + how + "; lag 1 is the most recent step."));
      const c = svg("svg", { id: "importance-lag-chart", class: "chart bars", role: "img", "aria-label": "permutation importance by lag" });
      drawBars(c, lags, change);
      out.push(c);
    }
    return out;
  }

  // drawCalibration draws the reliability diagram: per non-empty bin the mean predicted
  // probability against the observed positive fraction, the point's area by its count.
  function drawCalibration(chart, cal) {
    const W = 340, H = 320, L = 46, R = 12, T = 12, B = 40;
    chart.setAttribute("viewBox", "0 0 " + W + " " + H);
    chart.replaceChildren();
    const sx = (v) => L + v * (W - L - R), sy = (v) => H - B - v * (H - T - B);
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      chart.appendChild(svg("line", { class: "grid", x1: sx(v), y1: sy(0), x2: sx(v), y2: sy(1) }));
      chart.appendChild(svg("line", { class: "grid", x1: sx(0), y1: sy(v), x2: sx(1), y2: sy(v) }));
      chart.appendChild(svg("text", { x: sx(v), y: sy(0) + 14, "text-anchor": "middle" }, String(v)));
      chart.appendChild(svg("text", { x: sx(0) - 5, y: sy(v) + 4, "text-anchor": "end" }, String(v)));
    }
    chart.appendChild(svg("line", { class: "axis", x1: sx(0), y1: sy(0), x2: sx(1), y2: sy(0) }));
    chart.appendChild(svg("line", { class: "axis", x1: sx(0), y1: sy(0), x2: sx(0), y2: sy(1) }));
    chart.appendChild(svg("line", { class: "cal-diag", x1: sx(0), y1: sy(0), x2: sx(1), y2: sy(1) }));
    chart.appendChild(svg("text", { x: (sx(0) + sx(1)) / 2, y: H - 6, "text-anchor": "middle", class: "axis-label" }, "mean predicted probability"));
    const yl = svg("text", { x: 0, y: 0, "text-anchor": "middle", class: "axis-label", transform: "translate(12 " + (sy(0) + sy(1)) / 2 + ") rotate(-90)" }, "fraction positive");
    chart.appendChild(yl);
    const bins = (cal.bins || []).filter((b) => b.count > 0 && finite(b.mean_predicted) && finite(b.fraction_positive))
      .sort((a, b) => a.mean_predicted - b.mean_predicted);
    chart.setAttribute("data-points", String(bins.length));
    if (bins.length === 0) return;
    const most = Math.max(...bins.map((b) => b.count));
    chart.appendChild(svg("polyline", { class: "cal-line", points: bins.map((b) => sx(b.mean_predicted).toFixed(1) + "," + sy(b.fraction_positive).toFixed(1)).join(" ") }));
    for (const b of bins) {
      const cx = sx(b.mean_predicted), cy = sy(b.fraction_positive);
      const dot = svg("circle", { class: "cal-point", cx: cx.toFixed(1), cy: cy.toFixed(1), r: (2.5 + 6 * Math.sqrt(b.count / most)).toFixed(1), "data-count": String(b.count) });
      dot.appendChild(svg("title", {}, "scores " + fx(b.lower, 2) + "–" + fx(b.upper, 2) + ": " + b.count + " rows, mean predicted " + fx(b.mean_predicted, 3) + ", fraction positive " + fx(b.fraction_positive, 3)));
      chart.appendChild(dot);
      chart.appendChild(svg("text", { class: "cal-count", x: (cx + 8).toFixed(1), y: (cy - 7).toFixed(1) }, String(b.count)));
    }
  }

  function calibrationFigure(cal) {
    const fig = el("figure", { class: "report-figure" });
    const c = svg("svg", { id: "calibration-chart", class: "chart calibration", role: "img", "aria-label": "reliability diagram" });
    drawCalibration(c, cal);
    fig.appendChild(c);
    fig.appendChild(el("figcaption", { id: "calibration-caption" }, "ECE " + fx(cal.ece, 3) +
      " (expected calibration error). Each point is a score bin, labelled and sized by its rows; the dashed diagonal is perfect calibration."));
    return fig;
  }

  function confusionFigure(conf) {
    const fig = el("figure", { class: "report-figure" });
    const labels = conf.labels || [];
    const m = conf.matrix || [];
    const t = el("table", { class: "grid confusion", id: "report-confusion" });
    t.appendChild(headRow([el("th", { class: "corner" }, "true ↓  predicted →"), ...labels.map((l) => el("th", { class: "n" }, String(l)))]));
    const body = el("tbody");
    m.forEach((row, i) => {
      const tr = el("tr");
      tr.appendChild(el("th", {}, String(labels[i] !== undefined ? labels[i] : i)));
      const total = row.reduce((a, b) => a + b, 0);
      row.forEach((v, j) => {
        const td = el("td", { class: "n" + (i === j ? " diag" : "") }, count(v));
        const a = total > 0 ? v / total : 0;
        td.style.backgroundColor = "rgba(" + (i === j ? "43, 138, 62" : "201, 42, 42") + ", " + (0.08 + 0.5 * a).toFixed(2) + ")";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    t.appendChild(body);
    fig.appendChild(t);
    fig.appendChild(el("figcaption", {}, "Rows: true class; columns: predicted class" +
      (finite(conf.threshold) ? " (positive when the score is at least " + fx(conf.threshold, 2) + ")." : " (the most likely one).")));
    return fig;
  }

  // drawAttribution draws one class's mean |attribution| (channels averaged) as a
  // heatmap on a canvas, scaled to its own maximum.
  function drawAttribution(canvas, values, C, H, W) {
    canvas.width = W; canvas.height = H;
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    const px = new Float64Array(H * W);
    let most = 0;
    for (let i = 0; i < H * W; i++) {
      let s = 0;
      for (let c = 0; c < C; c++) { const v = Number(values[c * H * W + i]); if (Number.isFinite(v)) s += Math.abs(v); }
      px[i] = s / C;
      most = Math.max(most, px[i]);
    }
    const img = ctx.createImageData(W, H);
    for (let i = 0; i < H * W; i++) {
      const a = most > 0 ? px[i] / most : 0; // white → dark red
      img.data[4 * i] = Math.round(255 - a * (255 - 120));
      img.data[4 * i + 1] = Math.round(255 - a * 255);
      img.data[4 * i + 2] = Math.round(255 - a * (255 - 20));
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    canvas.setAttribute("data-max", String(most));
  }

  function attributionSection(a) {
    const C = Number(a.channels) || 1, H = Number(a.height) || 0, W = Number(a.width) || 0;
    const out = [h3("Attribution")];
    out.push(note("Mean absolute " + String(a.method || "attribution").replace(/_/g, " ") +
      (a.baseline ? " against an " + a.baseline : "") + (a.steps ? ", " + a.steps + " steps" : "") +
      ", per class over its validation images; each map scaled to its own maximum (dark = most attributed)."));
    const grid = el("div", { class: "attr-grid", id: "report-attribution" });
    for (const k of a.classes || []) {
      const fig = el("figure", { class: "attr-class", "data-class": String(k.class) });
      const values = k.mean_abs || [];
      if (H <= 0 || W <= 0 || values.length !== C * H * W) {
        fig.appendChild(el("p", { class: "error" }, "class " + k.class + ": " + values.length + " values, want " + C * H * W));
      } else {
        const cv = el("canvas", { class: "attr-map", "data-class": String(k.class), role: "img", "aria-label": "attribution of class " + (k.label || k.class) });
        drawAttribution(cv, values, C, H, W);
        cv.style.width = (W * 4) + "px"; cv.style.height = (H * 4) + "px";
        fig.appendChild(cv);
      }
      fig.appendChild(el("figcaption", {}, String(k.label !== undefined ? k.label : k.class) + " · " + count(k.images) + " images"));
      grid.appendChild(fig);
    }
    out.push(grid);
    return out;
  }

  // renderReport replaces the report section's body with the report.
  function renderReport(body, rep) {
    const parts = [reportSummary(rep)];
    const audit = rep.audit;
    if (audit && audit.gate) parts.push(reportGate(audit.gate));
    if (rep.metrics && Object.keys(rep.metrics).length > 0) {
      parts.push(h3("Metrics"));
      const b = rep.bootstrap || {};
      parts.push(note("95% confidence intervals from " + (b.resamples ? b.resamples + " bootstrap resamples" : "the bootstrap") +
        " of the " + (rep.split || "evaluation") + " split."));
      parts.push(reportMetrics(rep));
    }
    parts.push(h3("Fairness audit"));
    if (audit) {
      parts.push(note("Sensitive attributes: " + (audit.sensitive || []).join(", ") + ". " +
        (finite(audit.threshold) ? "Selected: score ≥ " + fx(audit.threshold, 2) + ". " : "") +
        "Impact ratio: the group's rate over the attribute's highest; below " + FOUR_FIFTHS + " is highlighted. " +
        "Groups under " + share(audit.min_group_fraction) + " of rows, and unknown categories, are shown but excluded from the ratios."));
      parts.push(reportFairness(audit, rep.task));
      if ((audit.notes || []).length > 0) {
        const ul = el("ul", { class: "notes", id: "report-notes" });
        for (const n of audit.notes) ul.appendChild(el("li", {}, n));
        parts.push(ul);
      }
    } else {
      parts.push(note("No fairness audit: the job names no sensitive attributes."));
    }
    parts.push(...importanceSection(rep));
    const figs = [];
    if (rep.calibration) figs.push([h3("Calibration"), calibrationFigure(rep.calibration)]);
    if (rep.confusion) figs.push([h3("Confusion matrix"), confusionFigure(rep.confusion)]);
    if (figs.length > 0) {
      const row = el("div", { class: "report-row" });
      for (const f of figs) { const col = el("div"); col.append(...f); row.appendChild(col); }
      parts.push(row);
    }
    if (rep.attribution) parts.push(...attributionSection(rep.attribution));
    body.replaceChildren(...parts);
  }

  // loadReport fetches and renders the job's report. retries is how many more times a
  // 404 is retried (the report of a job that just ended may still be on its way).
  async function loadReport(id, retries) {
    const section = document.getElementById("report");
    const status = document.getElementById("report-status");
    const set = (state, text) => { section.setAttribute("data-state", state); status.textContent = text; status.hidden = text === ""; };
    set("loading", "Loading the report…");
    try {
      const r = await api("/api/jobs/" + encodeURIComponent(id) + "/report");
      if (r.status === 404) {
        if (retries > 0) { setTimeout(() => loadReport(id, retries - 1), 2000); return; }
        set("none", "This job has no report.");
        return;
      }
      if (!r.ok) {
        let msg = String(r.status);
        try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
        set("error", "Cannot read the report: " + msg);
        return;
      }
      renderReport(document.getElementById("report-body"), await r.json());
      set("rendered", "");
    } catch (e) {
      console.error("dashboard report:", e);
      set("error", "Cannot show the report: " + e.message);
    }
  }

  // fmtDuration formats milliseconds as the server does (views.go formatDuration).
  function fmtDuration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const p2 = (n) => String(n).padStart(2, "0");
    if (ms < 1000) return (Math.max(0, ms) / 1000).toFixed(1) + "s";
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + p2(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + p2(Math.floor(s % 3600 / 60)) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
  }
  function when(s) {
    if (!s) return "—";
    const d = new Date(s);
    return isNaN(d.getTime()) ? String(s) : d.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }
  function clock(s) {
    const d = new Date(s);
    return isNaN(d.getTime()) ? "—" : d.toISOString().slice(11, 19);
  }
  function show(id, visible) { const e = document.getElementById(id); if (e) e.hidden = !visible; }
  // metricMode is the direction a metric improves in (as the server's metricMode).
  function metricMode(name) {
    return ["loss", "rmse", "mae", "mape", "error", "mse"].some((s) => name.includes(s)) ? "min" : "max";
  }
  function badge(text, cls) { return el("span", { class: "mark " + cls }, text); }

  // renderEpochs fills the per-epoch table; the best value of each metric column is
  // marked.
  function renderEpochs(table, resp, emptyText) {
    const rows = resp.epochs || [];
    const metrics = resp.metrics || [];
    table.setAttribute("data-rows", String(rows.length));
    if (rows.length === 0) {
      const body = el("tbody"); const tr = el("tr");
      tr.appendChild(el("td", { class: "muted empty" }, emptyText));
      body.appendChild(tr);
      table.replaceChildren(body);
      return;
    }
    const best = {};
    for (const m of ["loss", ...metrics]) {
      const vals = rows.map((r) => m === "loss" ? r.loss : (r.metrics || {})[m]).filter(finite).map(Number);
      if (vals.length > 1) best[m] = metricMode(m) === "min" ? Math.min(...vals) : Math.max(...vals);
    }
    const head = ["Epoch", el("th", { class: "n" }, "Step"), "Finished", el("th", { class: "n" }, "Train loss"),
      ...metrics.map((m) => el("th", { class: "n", "data-metric": m }, m)), el("th", { class: "n" }, "Samples/s"), el("th", { class: "n" }, "Learning rate")];
    const body = el("tbody");
    for (const r of rows) {
      const tr = el("tr", { "data-epoch": String(r.epoch), "data-source": r.source || "" });
      if (r.source === "dashboard") tr.setAttribute("title", "from the progress this dashboard saw (no TensorBoard record)");
      const cell = (m, v) => {
        const td = el("td", { class: "n" + (finite(v) && best[m] !== undefined && Number(v) === best[m] ? " best" : "") }, num(v));
        if (m !== "loss") td.setAttribute("data-metric", m);
        return td;
      };
      tr.append(el("td", {}, String(r.epoch)), el("td", { class: "n" }, r.step > 0 ? String(r.step) : "—"),
        el("td", {}, r.time ? clock(r.time) : "—"), cell("loss", r.loss),
        ...metrics.map((m) => cell(m, (r.metrics || {})[m])),
        el("td", { class: "n" }, finite(r.samples_per_second) ? Number(r.samples_per_second).toFixed(1) : "—"),
        el("td", { class: "n" }, finite(r.learning_rate) ? String(Number(r.learning_rate)) : "—"));
      body.appendChild(tr);
    }
    table.replaceChildren(headRow(head), body);
  }

  // renderTasks fills the task table: each task's node, state, CPU and memory (and GPU
  // memory where its node has GPU figures); "—" where nothing was reported.
  function renderTasks(table, resp) {
    const tasks = resp.tasks || [];
    table.setAttribute("data-rows", String(tasks.length));
    if (tasks.length === 0) {
      const body = el("tbody"); const tr = el("tr");
      tr.appendChild(el("td", { class: "muted empty" }, "No tasks placed."));
      body.appendChild(tr);
      table.replaceChildren(body);
      return;
    }
    const head = ["Task", "Node", "State", el("th", { class: "n" }, "CPU"), el("th", { class: "n" }, "Memory")];
    const body = el("tbody");
    for (const t of tasks) {
      const u = t.usage;
      const tr = el("tr", { "data-task": t.task, "data-usage": u ? "true" : "false" });
      const st = el("td"); st.appendChild(stateBadge(t.state));
      const mem = el("td", { class: "n" }, u ? u.memory : "—");
      if (u && u.shared_process) mem.setAttribute("title", "an even share of a process that runs other tasks too");
      tr.append(el("td", {}, t.task), el("td", {}, t.node), st, el("td", { class: "n" }, u ? u.cpu : "—"), mem);
      body.appendChild(tr);
    }
    table.replaceChildren(headRow(head), body);
  }

  // renderCheckpoints fills the checkpoint table: LATEST (the job record's pointer),
  // BEST (the best score) and EXPORTED marks.
  function renderCheckpoints(table, resp, emptyText) {
    const rows = resp.checkpoints || [];
    const scored = rows.some((r) => r.score !== undefined && r.score !== null);
    // The score's own metric is its column.
    const metrics = (resp.metrics || []).filter((m) => !(scored && m === resp.score_metric));
    table.setAttribute("data-rows", String(rows.length));
    if (rows.length === 0) {
      const body = el("tbody"); const tr = el("tr");
      tr.appendChild(el("td", { class: "muted empty" }, emptyText));
      body.appendChild(tr);
      table.replaceChildren(body);
      return;
    }
    const scoreHead = el("th", { class: "n score" }, "Score");
    if (resp.score_metric) scoreHead.appendChild(el("div", { class: "sub" }, resp.score_metric + (resp.score_mode ? ", " + resp.score_mode : "")));
    const head = [el("th", { class: "n" }, "Step"), el("th", { class: "n" }, "Epoch"), "Created", el("th", { class: "n" }, "Size"),
      ...(scored ? [scoreHead] : []),
      ...metrics.map((m) => el("th", { class: "n", "data-metric": m }, m)), "", "Manifest"];
    const body = el("tbody");
    for (const r of rows) {
      const classes = [];
      if (r.latest) classes.push("latest");
      if (r.best) classes.push("best-row");
      const tr = el("tr", { "data-step": String(r.step) });
      if (classes.length) tr.setAttribute("class", classes.join(" "));
      const marks = el("td", { class: "marks" });
      if (r.latest) marks.appendChild(badge("LATEST", "mark-latest"));
      if (r.best) marks.appendChild(badge("BEST", "mark-best"));
      if (r.exported) marks.appendChild(badge("EXPORTED", "mark-exported"));
      if (r.error) marks.appendChild(badge("UNREADABLE", "mark-error"));
      // The manifest's key below the job's checkpoints, breakable after each "/"; the
      // whole URI in its title.
      const uri = el("td", { class: "uri", title: r.uri + (r.error ? "\n" + r.error : "") });
      String(r.uri || "").replace(/^.*\/checkpoints\//, "").split("/").forEach((part, i) => {
        if (i > 0) uri.append("/", el("wbr"));
        uri.append(part);
      });
      tr.append(el("td", { class: "n" }, String(r.step)), el("td", { class: "n", title: r.step_in_epoch > 0 ? r.step_in_epoch + " steps into epoch " + (r.epoch + 1) : "" },
          String(r.epoch) + (r.step_in_epoch > 0 ? " + " + r.step_in_epoch + " steps" : "")),
        el("td", { class: "nowrap" }, r.created ? when(r.created) : "—"), el("td", { class: "n" }, r.size || "—"),
        ...(scored ? [el("td", { class: "n score" }, num(r.score))] : []),
        ...metrics.map((m) => el("td", { class: "n", "data-metric": m }, num((r.metrics || {})[m]))), marks, uri);
      body.appendChild(tr);
    }
    table.replaceChildren(headRow(head), body);
  }

  const TASK_COLORS = ["#1f6feb", "#2b8a3e", "#862e9c", "#d9480f", "#0b7285", "#5c940d"];
  const MAX_LOG_LINES = 5000;

  // logViewer follows the job's task logs over server-sent events
  // (/api/jobs/{id}/logs/events), with a task filter (a new stream per task) and a text
  // filter (applied in the page).
  function logViewer(id, enabled) {
    const section = document.getElementById("logs");
    const view = document.getElementById("log-view");
    const taskSel = document.getElementById("log-task");
    const filter = document.getElementById("log-filter");
    const follow = document.getElementById("log-follow");
    const status = document.getElementById("log-status");
    const set = (state, text) => { section.setAttribute("data-state", state); status.textContent = text; };
    if (!enabled) {
      set("unavailable", "Task logs are not available from this dashboard's source.");
      taskSel.disabled = true; filter.disabled = true;
      return;
    }
    const colors = {};
    let es = null, count = 0;
    const matches = (line) => !filter.value || line.dataset.text.toLowerCase().includes(filter.value.toLowerCase());
    function lineEl(l) {
      const div = el("div", { class: "logline", "data-task": l.task, "data-text": l.task + " " + l.text });
      if (!(l.task in colors)) colors[l.task] = TASK_COLORS[Object.keys(colors).length % TASK_COLORS.length];
      const task = el("span", { class: "log-task" }, l.task);
      task.style.color = colors[l.task];
      div.appendChild(task);
      let rec = null;
      if (l.text.startsWith("{")) { try { rec = JSON.parse(l.text); } catch (e) { rec = null; } }
      if (rec && typeof rec === "object") {
        const level = String(rec.level || "");
        div.append(el("span", { class: "log-time" }, rec.time ? clock(rec.time) : ""),
          el("span", { class: "log-level lvl-" + level.toLowerCase() }, level), el("span", { class: "log-msg" }, String(rec.msg || "")));
        const rest = Object.keys(rec).filter((k) => !["time", "level", "msg"].includes(k))
          .map((k) => k + "=" + (typeof rec[k] === "object" ? JSON.stringify(rec[k]) : String(rec[k]))).join(" ");
        if (rest) div.appendChild(el("span", { class: "log-attrs" }, rest));
        if (level === "ERROR" || level === "WARN") div.classList.add("lvl-" + level.toLowerCase());
      } else {
        div.appendChild(el("span", { class: "log-msg" }, l.text));
      }
      div.hidden = !matches(div);
      return div;
    }
    function append(lines) {
      const atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - 8;
      const frag = document.createDocumentFragment();
      for (const l of lines) {
        frag.appendChild(lineEl(l));
        if (l.task && ![...taskSel.options].some((o) => o.value === l.task)) taskSel.appendChild(el("option", { value: l.task }, l.task));
      }
      view.appendChild(frag);
      count += lines.length;
      while (view.childElementCount > MAX_LOG_LINES) view.firstElementChild.remove();
      view.setAttribute("data-lines", String(view.childElementCount));
      if (follow.checked || atBottom) view.scrollTop = view.scrollHeight;
    }
    function start() {
      if (es) es.close();
      view.replaceChildren(); count = 0;
      view.setAttribute("data-lines", "0");
      const task = taskSel.value;
      const url = "/api/jobs/" + encodeURIComponent(id) + "/logs/events?tail=500" + (task ? "&task=" + encodeURIComponent(task) : "");
      set("connecting", "connecting…");
      const src = new EventSource(url);
      es = src;
      let opened = false;
      src.onopen = () => {
        if (opened) { view.replaceChildren(); count = 0; } // a reconnect sends the tail again
        opened = true;
        set("live", "following " + (task || "every task") + " as it writes");
      };
      src.addEventListener("lines", (ev) => { if (es === src) append(JSON.parse(ev.data).lines || []); });
      src.addEventListener("end", () => {
        src.close();
        if (es === src) set("ended", count === 0 ? "No log lines." : count + " lines; the tasks have written their last lines.");
      });
      src.addEventListener("problem", (ev) => {
        src.close();
        let msg = "";
        try { msg = JSON.parse(ev.data).error; } catch (e) { msg = String(ev.data); }
        if (es === src) set("error", "Cannot read the logs: " + msg);
      });
      src.onerror = () => {
        if (es !== src) return;
        if (src.readyState === EventSource.CLOSED) set("error", "The log stream was refused.");
        else set("connecting", "reconnecting…");
      };
    }
    taskSel.addEventListener("change", start);
    filter.addEventListener("input", () => { for (const l of view.children) l.hidden = !matches(l); });
    // A hidden tab lets go of its stream (a browser opens few connections to one
    // host) and starts again, from each task's tail, when it is shown.
    let paused = false;
    document.addEventListener("visibilitychange", () => {
      if (document.hidden && es && es.readyState !== EventSource.CLOSED) {
        es.close(); es = null; paused = true;
        set("paused", "paused while the tab is hidden");
      } else if (!document.hidden && paused) {
        paused = false;
        start();
      }
    });
    start();
  }

  function jobPage(root) {
    const id = root.getAttribute("data-job-id");
    const base = "/api/jobs/" + encodeURIComponent(id);
    const points = new Map(); // seq -> point
    let job = null;
    let epochs = { epochs: [], metrics: [] };
    let reportAsked = false;
    // askReport loads the report once, when the job has ended; live is true when it
    // ended while the page was open.
    function askReport(live) {
      if (reportAsked) return;
      reportAsked = true;
      loadReport(id, live ? 3 : 0);
    }
    const endedOnLoad = root.getAttribute("data-terminal") === "true";
    if (endedOnLoad) askReport(false);
    const state = () => job ? job.state : root.getAttribute("data-state");

    function emptyTexts() {
      switch (state()) {
        case "failed": return { loss: "No progress was reported before the job failed.", epochs: "No epoch finished before the job failed.", ckpt: "No checkpoint was committed before the job failed." };
        case "cancelled": return { loss: "No progress was reported before the job was cancelled.", epochs: "No epoch finished before the job was cancelled.", ckpt: "No checkpoint was committed." };
        case "pending": return { loss: "The job has not started.", epochs: "The job has not started.", ckpt: "The job has not started." };
        case "running": return { loss: "No progress reported yet.", epochs: "No epoch has finished yet.", ckpt: "No checkpoint committed yet." };
      }
      return { loss: "No progress was reported.", epochs: "No epoch was recorded.", ckpt: "No checkpoint was committed." };
    }

    function redraw() {
      const texts = emptyTexts();
      // The loss per reporting interval: each in-epoch report's mean loss since the one
      // before. Without in-epoch reports (older workers), the epochs' mean losses.
      const byStep = new Map();
      const sorted = [...points.values()].sort((a, b) => a.seq - b.seq);
      const interval = sorted.some((p) => p.interval_rows > 0 && finite(p.interval_loss));
      for (const p of sorted) {
        if (p.step <= 0) continue;
        if (interval) {
          if (p.interval_rows > 0 && finite(p.interval_loss)) byStep.set(p.step, p.interval_loss);
        } else if (finite(p.loss)) {
          byStep.set(p.step, p.loss);
        }
      }
      // An epoch the page saw no report within (it was shorter than the page's
      // refresh, or ended before the page opened) gets its mean loss at its end, so
      // the curve covers every epoch the metrics table lists.
      const steps = [...byStep.keys()];
      let prev = 0;
      for (const e of [...epochs.epochs].sort((a, b) => a.step - b.step)) {
        if (finite(e.loss) && e.step > 0 && !steps.some((s) => s > prev && s <= e.step)) byStep.set(e.step, e.loss);
        if (e.step > 0) prev = e.step;
      }
      const loss = { loss: [...byStep.entries()].sort((a, b) => a[0] - b[0]) };
      const val = epochs.epochs.filter((e) => e.step > 0 && finite((e.metrics || {}).val_loss)).map((e) => [e.step, e.metrics.val_loss]);
      if (val.length > 0) loss.val_loss = val;
      const faint = [];
      if (document.getElementById("loss-smooth").checked && loss.loss.length > 2) {
        let s = null;
        loss["loss (smoothed)"] = loss.loss.map(([x, y]) => { s = s === null ? y : 0.6 * s + 0.4 * y; return [x, s]; });
        faint.push("loss");
      }
      drawChart(document.getElementById("loss-chart"), loss, { xLabel: "step", empty: texts.loss, nonNegative: true, faint: faint });
      document.getElementById("loss-chart").setAttribute("data-interval", String(interval));
      const metrics = {};
      for (const e of epochs.epochs) {
        for (const k in e.metrics || {}) {
          if (k === "val_loss" || !finite(e.metrics[k])) continue;
          (metrics[k] = metrics[k] || []).push([e.epoch, e.metrics[k]]);
        }
      }
      drawChart(document.getElementById("metric-chart"), metrics, { xLabel: "epoch", integerX: true, empty: texts.epochs });
    }

    let epochsBusy = false, epochsAgain = false;
    async function loadEpochs() {
      if (epochsBusy) { epochsAgain = true; return; }
      epochsBusy = true;
      try {
        epochs = await getJSON(base + "/epochs");
        const n = document.getElementById("epochs-note");
        n.textContent = epochs.note || ""; n.hidden = !epochs.note;
        renderEpochs(document.getElementById("epoch-table"), epochs, emptyTexts().epochs);
        redraw();
      } catch (e) {
        console.warn("dashboard epochs:", e);
      } finally {
        epochsBusy = false;
        if (epochsAgain) { epochsAgain = false; loadEpochs(); }
      }
    }
    let ckptBusy = false, ckptAgain = false;
    async function loadCheckpoints() {
      if (ckptBusy) { ckptAgain = true; return; }
      ckptBusy = true;
      try {
        const resp = await getJSON(base + "/checkpoints");
        const n = document.getElementById("checkpoints-note");
        n.textContent = resp.note || ""; n.hidden = !resp.note;
        renderCheckpoints(document.getElementById("checkpoint-table"), resp, emptyTexts().ckpt);
      } catch (e) {
        console.warn("dashboard checkpoints:", e);
      } finally {
        ckptBusy = false;
        if (ckptAgain) { ckptAgain = false; loadCheckpoints(); }
      }
    }

    const bar = document.getElementById("job-bar");
    function setBar(pctValue) { bar.style.width = Math.max(0, Math.min(100, pctValue)) + "%"; }
    setBar(Number(bar.getAttribute("data-pct")) || 0);

    // The duration of a running job goes on between events.
    let startMs = Number(root.getAttribute("data-start")) || 0;
    setInterval(() => {
      if (job && (job.terminal || !job.start_time)) return;
      if (!job && (endedOnLoad || !startMs)) return;
      setText("job-duration", fmtDuration(Date.now() - startMs));
    }, 1000);

    let lastEpoch = null, lastCkpt = null, lastState = null;
    function update(j) {
      job = j;
      const s = document.getElementById("job-state");
      s.textContent = j.state;
      s.setAttribute("class", "state state-" + j.state);
      root.setAttribute("data-state", j.state);
      startMs = j.start_time ? new Date(j.start_time).getTime() : 0;
      const failed = j.state === "failed";
      show("job-failure", failed);
      setText("job-failure-when", failed ? (j.failed_when || "") : "");
      setText("job-failure-message", failed ? (j.status_message || "The job failed without a message.") : "");
      show("job-notice", !failed && !!j.status_message && j.status_message !== j.state);
      document.getElementById("job-notice").setAttribute("class", "banner banner-" + j.state);
      setText("job-message", failed ? "" : (j.status_message || ""));
      setText("job-started", j.start_time ? when(j.start_time) + (j.queued ? " (after " + j.queued + " queued)" : "") : "not yet");
      setText("job-ended", j.end_time ? when(j.end_time) : "—");
      setText("job-duration", j.duration || "—");
      const p = j.progress;
      for (const r of ["row-progress", "row-loss", "row-sps"]) show(r, j.has_progress);
      show("row-traffic", !!(p && p.traffic));
      setText("job-traffic", (p && p.traffic) || "");
      show("row-noprogress", !j.has_progress && j.state !== "pending");
      setText("job-noprogress", j.progress_note || "");
      if (j.has_progress) {
        setText("job-progress", "epoch " + p.epoch + "/" + p.total_epochs + ", step " + p.step + "/" + p.total_steps + " (" + pct(p) + ")");
        setBar(p.total_steps > 0 ? 100 * p.step / p.total_steps : 0);
        setText("job-loss", num(p.loss));
        setText("job-sps", finite(p.samples_per_second) ? Number(p.samples_per_second).toFixed(1) : "—");
      } else {
        setText("job-progress", ""); setText("job-loss", "—"); setText("job-sps", "—");
      }
      show("row-pending", (j.pending_reasons || []).length > 0);
      setList("job-pending", j.pending_reasons);
      show("row-earlystop", !!j.early_stop);
      setText("job-earlystop", j.early_stop || "");
      setText("job-checkpoint", j.checkpoint || "none");
      if ((j.exports || []).length > 0) setList("job-exports", j.exports); else setText("job-exports", "none");
      const mt = document.getElementById("job-metrics");
      const keys = Object.keys(j.metrics || {}).sort();
      if (keys.length === 0) {
        const tr = el("tr"); tr.appendChild(el("td", { class: "muted" }, "none reported"));
        mt.replaceChildren(tr);
      } else {
        mt.replaceChildren(...keys.map((k) => {
          const tr = el("tr");
          tr.append(el("th", {}, k), el("td", {}, num(j.metrics[k])));
          return tr;
        }));
      }
      // The tables are read again when what they show has moved on (the page read
      // them once when it opened).
      if (lastState !== null) {
        if (p.epoch !== lastEpoch || j.state !== lastState) loadEpochs();
        if (j.checkpoint !== lastCkpt || j.state !== lastState) loadCheckpoints();
      }
      lastEpoch = p.epoch; lastCkpt = j.checkpoint; lastState = j.state;
    }
    // The task table (per-task CPU and memory) is read at most every 2 s while the
    // job runs, and once more when it ends.
    const tasksOn = document.getElementById("resources").getAttribute("data-tasks") === "true";
    let tasksAt = 0, tasksBusy = false;
    async function loadTasks(force) {
      if (!tasksOn || tasksBusy || (!force && Date.now() - tasksAt < 2000)) return;
      tasksBusy = true; tasksAt = Date.now();
      try {
        renderTasks(document.getElementById("task-table"), await getJSON(base + "/tasks"));
      } catch (e) {
        console.warn("dashboard tasks:", e);
      } finally {
        tasksBusy = false;
      }
    }
    document.getElementById("loss-smooth").addEventListener("change", redraw);
    redraw();
    loadTasks(true);
    loadEpochs();
    loadCheckpoints();
    logViewer(id, root.getAttribute("data-logs") === "true");
    const es = new EventSource(base + "/events");
    es.addEventListener("job", (ev) => {
      const msg = JSON.parse(ev.data);
      for (const p of msg.points || []) points.set(p.seq, p);
      update(msg.job);
      redraw();
      loadTasks(msg.job.terminal);
      if (msg.job.terminal) askReport(!endedOnLoad);
    });
    es.addEventListener("end", () => es.close());
  }

  async function getJSON(url) {
    const r = await api(url);
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  }

  function jobRow(j) {
    const tr = el("tr", { "data-state": j.state, "data-namespace": j.namespace });
    const link = el("a", { href: "/jobs/" + encodeURIComponent(j.id) }, j.id);
    const idCell = el("td", { class: "nowrap" }); idCell.appendChild(link);
    const stateCell = el("td"); stateCell.appendChild(stateBadge(j.state));
    const reasons = el("td", { class: "msg" });
    for (const r of j.pending_reasons || []) reasons.appendChild(el("div", { title: r }, r));
    if (j.status_message) reasons.appendChild(el("div", { title: j.status_message }, j.status_message));
    const p = j.progress;
    tr.append(idCell, el("td", {}, j.namespace), el("td", {}, j.name), stateCell, el("td", {}, when(j.submit_time)),
      el("td", { class: "n" }, j.duration || "—"),
      el("td", { class: "nowrap" }, j.has_progress ? "epoch " + p.epoch + "/" + p.total_epochs + " (" + pct(p) + ")" : "—"),
      el("td", { class: "n" }, j.has_progress ? num(p.loss) : "—"), reasons);
    return tr;
  }

  function nodeRow(n) {
    const tr = el("tr");
    const st = el("td"); st.appendChild(stateBadge(n.status));
    const c = n.capacity;
    let cap = (c.cpu_millis / 1000) + " CPU, " + (c.memory_bytes / 1073741824).toFixed(1) + " GiB";
    if (c.gpus > 0) cap += ", " + c.gpus + " GPU";
    const u = n.usage;
    tr.setAttribute("data-usage", u ? "true" : "false");
    tr.append(el("td", {}, n.name), el("td", {}, (n.roles || []).join(", ")), st, el("td", {}, cap),
      el("td", { class: "n node-cpu" }, u ? u.cpu : "—"), el("td", { class: "n node-mem" }, u ? u.memory : "—"),
      el("td", {}, c.gpus + (c.gpu_model ? " × " + c.gpu_model : "") + (u && u.gpu ? " (" + u.gpu + ")" : "")),
      el("td", { class: "node-beat" }, n.heartbeat));
    return tr;
  }

  function peerRow(p) {
    const tr = el("tr");
    const role = el("td");
    if (p.leader) role.appendChild(el("strong", {}, "leader")); else role.textContent = p.voter ? "follower" : "non-voter";
    tr.append(el("td", {}, p.id), el("td", {}, p.address), el("td", {}, p.grpc_address || ""), role);
    return tr;
  }

  function fill(tableId, rows) {
    const body = document.querySelector("#" + tableId + " tbody");
    if (body && rows.length > 0) body.replaceChildren(...rows);
  }

  // refreshEvery runs fn every ms; body's data-refreshes counts the finished runs (tests
  // wait on it instead of sleeping).
  function refreshEvery(ms, fn) {
    const run = () =>
      fn()
        .catch((e) => console.warn("dashboard refresh:", e))
        .finally(() => {
          document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
          setTimeout(run, ms);
        });
    setTimeout(run, ms);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector("[data-page]");
    if (!root) return;
    switch (root.getAttribute("data-page")) {
      case "job": jobPage(root); break;
      case "jobs": {
        const form = document.getElementById("jobs-filter");
        for (const sel of form.querySelectorAll("select")) sel.addEventListener("change", () => form.submit());
        refreshEvery(2000, async () => {
          const resp = await getJSON("/api/jobs" + location.search);
          fill("jobs", resp.jobs.map(jobRow));
          const total = Object.values(resp.counts).reduce((a, b) => a + b, 0);
          setText("jobs-shown", resp.jobs.length + " of " + total + " jobs");
        });
        break;
      }
      case "overview":
        refreshEvery(2000, async () => {
          const [jobs, nodes, peers] = await Promise.all([getJSON("/api/jobs"), getJSON("/api/nodes"), getJSON("/api/peers").catch(() => ({ peers: [] }))]);
          for (const td of document.querySelectorAll("#job-counts td")) {
            td.textContent = String(jobs.counts[td.getAttribute("data-state")] || 0);
          }
          fill("nodes", nodes.nodes.map(nodeRow));
          fill("peers", peers.peers.map(peerRow));
        });
        break;
    }
  });
})();
