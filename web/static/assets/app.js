// Cohort dashboard: live tables and curves, no dependencies. Every value from the
// server is put into the page with textContent or setAttribute, never as HTML.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
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
  function num(v) { return (v === null || v === undefined) ? "—" : Number(v).toFixed(4); }
  function pct(p) { return p.total_steps > 0 ? Math.min(100, Math.round(100 * p.step / p.total_steps)) + "%" : "0%"; }
  function setText(id, text) { const e = document.getElementById(id); if (e) e.textContent = text; }
  function setList(id, items) {
    const e = document.getElementById(id);
    if (!e) return;
    e.replaceChildren(...(items || []).map((s) => el("div", {}, s)));
  }
  function stateBadge(state) { return el("span", { class: "state state-" + state }, state); }

  // drawChart draws one polyline per series into the SVG element; series maps a name
  // to [[x, y], ...]. data-points is the number of points of the longest series.
  function drawChart(chart, series) {
    const W = 640, H = 240, L = 56, R = 110, T = 12, B = 28;
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
      chart.appendChild(svg("text", { x: L, y: H / 2 }, "waiting for the first epoch…"));
      return;
    }
    if (x1 === x0) { x1 = x0 + 1; }
    if (y1 === y0) { y1 = y0 + 1; }
    const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    chart.appendChild(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    chart.appendChild(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    chart.appendChild(svg("text", { x: 2, y: T + 8 }, y1.toPrecision(4)));
    chart.appendChild(svg("text", { x: 2, y: H - B }, y0.toPrecision(4)));
    chart.appendChild(svg("text", { x: L, y: H - 8 }, "step " + x0));
    chart.appendChild(svg("text", { x: W - R - 60, y: H - 8 }, "step " + x1));
    names.forEach((n, i) => {
      const color = COLORS[i % COLORS.length];
      const pts = series[n].map(([x, y]) => sx(x).toFixed(1) + "," + sy(y).toFixed(1)).join(" ");
      chart.appendChild(svg("polyline", { points: pts, stroke: color, "data-series": n }));
      for (const [x, y] of series[n]) {
        chart.appendChild(svg("circle", { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 2, fill: color }));
      }
      const legend = svg("text", { x: W - R + 8, y: T + 12 + 14 * i }, n);
      legend.style.fill = color; // CSSOM, allowed by the CSP (a style attribute is not)
      chart.appendChild(legend);
    });
  }

  function jobPage(root) {
    const id = root.getAttribute("data-job-id");
    const points = new Map(); // seq -> point
    function redraw() {
      const sorted = [...points.values()].sort((a, b) => a.seq - b.seq);
      const loss = { loss: [] }, metrics = {};
      for (const p of sorted) {
        if (p.loss !== null) loss.loss.push([p.step, p.loss]);
        for (const k in p.metrics || {}) {
          const v = p.metrics[k];
          if (v === null) continue;
          if (k === "val_loss") { (loss[k] = loss[k] || []).push([p.step, v]); continue; }
          (metrics[k] = metrics[k] || []).push([p.step, v]);
        }
      }
      drawChart(document.getElementById("loss-chart"), loss);
      drawChart(document.getElementById("metric-chart"), metrics);
    }
    function update(j) {
      const s = document.getElementById("job-state");
      s.textContent = j.state;
      s.setAttribute("class", "state state-" + j.state);
      const p = j.progress;
      setText("job-progress", "epoch " + p.epoch + "/" + p.total_epochs + ", step " + p.step + "/" + p.total_steps + " (" + pct(p) + ")");
      setText("job-loss", num(p.loss));
      setText("job-sps", num(p.samples_per_second));
      setText("job-message", j.status_message || "");
      setText("job-checkpoint", j.checkpoint || "");
      setList("job-pending", j.pending_reasons);
      setList("job-exports", j.exports);
      const mt = document.getElementById("job-metrics");
      mt.replaceChildren(...Object.keys(j.metrics || {}).sort().map((k) => {
        const tr = el("tr");
        tr.append(el("th", {}, k), el("td", {}, num(j.metrics[k])));
        return tr;
      }));
    }
    redraw();
    const es = new EventSource("/api/jobs/" + encodeURIComponent(id) + "/events");
    es.addEventListener("job", (ev) => {
      const msg = JSON.parse(ev.data);
      for (const p of msg.points || []) points.set(p.seq, p);
      update(msg.job);
      redraw();
    });
    es.addEventListener("end", () => es.close());
  }

  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  }

  function jobRow(j) {
    const tr = el("tr");
    const link = el("a", { href: "/jobs/" + encodeURIComponent(j.id) }, j.id);
    const idCell = el("td"); idCell.appendChild(link);
    const stateCell = el("td"); stateCell.appendChild(stateBadge(j.state));
    const reasons = el("td");
    for (const r of j.pending_reasons || []) reasons.appendChild(el("div", {}, r));
    if (j.status_message) reasons.appendChild(el("div", {}, j.status_message));
    const p = j.progress;
    tr.append(idCell, el("td", {}, j.namespace), el("td", {}, j.name), stateCell,
      el("td", {}, "epoch " + p.epoch + "/" + p.total_epochs + " (" + pct(p) + ")"), el("td", {}, num(p.loss)), reasons);
    return tr;
  }

  function nodeRow(n) {
    const tr = el("tr");
    const st = el("td"); st.appendChild(stateBadge(n.status));
    const c = n.capacity;
    let cap = (c.cpu_millis / 1000) + " CPU, " + (c.memory_bytes / 1073741824).toFixed(1) + " GiB";
    if (c.gpus > 0) cap += ", " + c.gpus + " GPU";
    tr.append(el("td", {}, n.name), el("td", {}, (n.roles || []).join(", ")), st, el("td", {}, cap),
      el("td", {}, c.gpus + (c.gpu_model ? " × " + c.gpu_model : "")), el("td", {}, n.heartbeat));
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

  function refreshEvery(ms, fn) {
    const run = () => fn().catch((e) => console.warn("dashboard refresh:", e)).finally(() => setTimeout(run, ms));
    setTimeout(run, ms);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector("[data-page]");
    if (!root) return;
    switch (root.getAttribute("data-page")) {
      case "job": jobPage(root); break;
      case "jobs":
        refreshEvery(2000, async () => fill("jobs", (await getJSON("/api/jobs")).jobs.map(jobRow)));
        break;
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
