/* The book's explorables (lib/explore.py writes their HTML, controls and data; see its docstring). This file only
   looks values up in that data, which lib computed with torch when the book was built, and draws them with
   plotly.js (book/_ext/course_pages.py serves plotly.min.js from the book's own _static). The controls are the
   page's own <select> and <input type="range">, so the keyboard and screen readers work as on any form; the
   sentence under each figure (aria-live) says what it shows and is rewritten on every change. */
(function () {
  "use strict";
  const CONFIG = {staticPlot: true, displayModeBar: false};
  const INK = "#222222", GRID = "#ff7f0e", TAPS = "#17becf", THEORY = "#1f77b4", MEASURED = "#2ca02c";

  const span = (name, value) => `<span data-value="${name}">${value}</span>`;
  const values = (root) => Object.fromEntries([...root.querySelectorAll("[data-control]")]
    .map((c) => [c.dataset.control, c.value]));
  // At most 640 px wide: the figure fits a printed A4 page (about 680 px) and a phone's column alike.
  const width = (plot) => Math.min(plot.clientWidth || 640, 640);
  const layout = (plot, ratio, extra) => Object.assign({
    width: width(plot), height: Math.round(width(plot) * ratio), margin: {l: 40, r: 10, t: 30, b: 36},
    paper_bgcolor: "#ffffff", plot_bgcolor: "#ffffff", font: {color: INK, size: 12}, showlegend: false,
  }, extra);
  const gray = [[0, "#000000"], [1, "#ffffff"]];

  // ---- convolution and pooling arithmetic ----------------------------------------------------------------
  function windowText(data, v, s, row, col) {
    const rows = s.taps[row], cols = s.taps[col];
    let inside = 0;
    for (const r of rows) for (const c of cols) if (r >= 0 && r < data.n && c >= 0 && c < data.n) inside++;
    const what = data.controls.map((name) => `${name} ${span(name, v[name])}`).join(", ");
    return `${data.pool ? "Max pooling" : "Convolution"} with ${what} on the ${data.n} × ${data.n} image: the output ` +
      `is ${span("out", s.out)} × ${s.out}. Output unit (row ${span("row", row)}, column ${span("col", col)}) reads ` +
      `input rows ${span("rows", `${rows[0]} to ${rows[rows.length - 1]}`)} and columns ` +
      `${span("cols", `${cols[0]} to ${cols[cols.length - 1]}`)}: ${span("taps", rows.length * cols.length)} pixels ` +
      `in a window ${span("span", rows[rows.length - 1] - rows[0] + 1)} pixels wide, ${span("inside", inside)} of ` +
      `them inside the image (the rest are padding).`;
  }

  function drawWindow(root, data, plot, text) {
    const units = ["row", "col"].map((n) => root.querySelector(`[data-control="${n}"]`));
    const v = values(root);
    const s = data.settings[data.controls.map((c) => v[c]).join(",")];
    if (s.error) {
      text.innerHTML = `Not allowed: ${s.error}. Choose a smaller padding or a larger kernel.`;
      return;
    }
    for (const input of units) {  // the unit stays on the (new) output grid
      input.max = s.out - 1;
      if (+input.value > s.out - 1) input.value = s.out - 1;
      root.querySelector(`[data-show="${input.dataset.control}"]`).textContent = input.value;
    }
    const [row, col] = units.map((u) => +u.value);
    const centres = s.taps.map((t) => (t[0] + t[t.length - 1]) / 2);
    const grid = {x: [], y: []}, taps = {x: [], y: []};
    for (const y of centres) for (const x of centres) { grid.x.push(x); grid.y.push(y); }
    for (const y of s.taps[row]) for (const x of s.taps[col]) { taps.x.push(x); taps.y.push(y); }
    const out = s.taps.map((_, i) => s.taps.map((_, j) => (i === row && j === col ? 1 : 0)));
    const p = +v.padding, edge = data.n - 0.5;
    const lim = [-0.5 - data.pad_max, edge + data.pad_max];
    Plotly.react(plot, [
      {type: "heatmap", z: data.image, colorscale: gray, showscale: false, zmin: 0, zmax: 255},
      {type: "scatter", mode: "markers", x: grid.x, y: grid.y, marker: {size: 4, color: GRID}},
      {type: "scatter", mode: "markers", x: taps.x, y: taps.y,
       marker: {symbol: "square-open", size: 9, color: TAPS, line: {width: 2}}},
      {type: "heatmap", z: out, xaxis: "x2", yaxis: "y2", colorscale: [[0, "#e6e6e6"], [1, "#d62728"]],
       showscale: false, zmin: 0, zmax: 1, xgap: 1, ygap: 1},
    ], layout(plot, 0.62, {
      xaxis: {domain: [0, 0.6], range: lim, constrain: "domain", zeroline: false, showgrid: false},
      yaxis: {range: [lim[1], lim[0]], scaleanchor: "x", zeroline: false, showgrid: false},
      xaxis2: {domain: [0.68, 1], anchor: "y2", range: [-0.5, s.out - 0.5], constrain: "domain", showgrid: false,
               zeroline: false},
      yaxis2: {anchor: "x2", range: [s.out - 0.5, -0.5], scaleanchor: "x2", showgrid: false, zeroline: false},
      shapes: [{type: "rect", layer: "below", x0: -0.5 - p, x1: edge + p, y0: -0.5 - p, y1: edge + p,
                fillcolor: "#c8c8c8", line: {color: INK, dash: "dot", width: 1}}],
      annotations: [
        {text: `input ${data.n} × ${data.n}, padding ${p} (gray)`, xref: "x domain", yref: "y domain", x: 0.5,
         y: 1.0, yanchor: "bottom", showarrow: false},
        {text: `output ${s.out} × ${s.out}`, xref: "x2 domain", yref: "y2 domain", x: 0.5, y: 1.0,
         yanchor: "bottom", showarrow: false}],
    }), CONFIG);
    text.innerHTML = windowText(data, v, s, row, col);
  }

  // ---- receptive fields of real networks ---------------------------------------------------------------------
  function options(select, labels, keep) {
    select.innerHTML = labels.map((t, i) => `<option value="${i}">${t}</option>`).join("");
    select.value = String(Math.min(+keep, labels.length - 1));
  }

  function gradient(unit, data) {  // base64 bytes -> rows of bins, null (transparent) where the gradient is zero
    const bytes = Uint8Array.from(atob(unit.grad), (c) => c.charCodeAt(0));
    const side = data.size / data.bin, z = [];
    for (let i = 0; i < side; i++) z.push([...bytes.slice(i * side, (i + 1) * side)].map((b) => (b ? b : null)));
    return z;
  }

  const fmt = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(1));

  function rfText(model, stage, unit) {
    const t = unit.theory, b = unit.box, e = unit.effective;
    return `${span("model", model.label)}, ${span("stage", stage.label)} (${stage.map} × ${stage.map} map), unit ` +
      `${span("unit", `(${unit.unit.join(", ")})`)}: theoretical field ${span("field", fmt(stage.field))} pixels, ` +
      `jump ${span("jump", fmt(stage.jump))} pixels; its square spans rows ${fmt(t[0])} to ${fmt(t[2])} and ` +
      `columns ${fmt(t[1])} to ${fmt(t[3])} of the 224-pixel input. Measured: pixels with a nonzero gradient fill ` +
      `rows ${span("rows", `${b[0]} to ${b[2]}`)} and columns ${span("cols", `${b[1]} to ${b[3]}`)} ` +
      `(${span("measured", `${unit.size[0]} × ${unit.size[1]}`)}${unit.clipped ? ", cut by the image border" : ""}` +
      `); 95% of the gradient lies in ${span("effective", `${e[2] - e[0] + 1} × ${e[3] - e[1] + 1}`)} pixels.`;
  }

  function drawRf(root, data, plot, text, changed) {
    const select = (n) => root.querySelector(`[data-control="${n}"]`);
    let v = values(root);
    const model = data.models[v.model];
    if (changed === "model") options(select("stage"), model.stages.map((s) => s.label), v.stage);
    if (changed === "model" || changed === "stage") {
      options(select("unit"), model.stages[+select("stage").value].units.map((u) => u.label), v.unit);
    }
    v = values(root);
    const stage = model.stages[+v.stage], unit = stage.units[+v.unit];
    const t = unit.theory, b = unit.box, e = unit.effective, n = data.size;
    const lim = [Math.min(-0.5, t[1] - 8), Math.max(n - 0.5, t[3] + 8)];
    const rect = (box, color, dash) => ({type: "rect", x0: box[1] - 0.5, x1: box[3] + 0.5, y0: box[0] - 0.5,
                                         y1: box[2] + 0.5, line: {color: color, width: 2.5, dash: dash}});
    const key = (name, color, dash) => ({type: "scatter", mode: "lines", x: [null], y: [null], name: name,
                                         line: {color: color, dash: dash, width: 2.5}, showlegend: true});
    const scale = n / data.image.length, bin = data.bin;
    Plotly.react(plot, [
      {type: "heatmap", z: data.image, x0: (scale - 1) / 2, dx: scale, y0: (scale - 1) / 2, dy: scale,
       colorscale: gray, showscale: false, zmin: 0, zmax: 255, showlegend: false},
      {type: "heatmap", z: gradient(unit, data), x0: (bin - 1) / 2, dx: bin, y0: (bin - 1) / 2, dy: bin,
       colorscale: [[0, "rgba(255, 200, 0, 0.35)"], [1, "rgba(230, 20, 20, 0.95)"]], zmin: 1, zmax: 255,
       showscale: false, showlegend: false},
      {type: "scatter", mode: "markers", x: [(t[1] + t[3]) / 2], y: [(t[0] + t[2]) / 2], showlegend: false,
       marker: {symbol: "x", size: 10, color: THEORY}},
      key("theoretical field", THEORY, "dash"), key("nonzero gradient", MEASURED, "solid"),
      key("95% of the gradient", GRID, "dot"),
    ], layout(plot, 0.9, {
      showlegend: true, legend: {orientation: "h", x: 0, y: -0.04, yanchor: "top"},
      margin: {l: 40, r: 10, t: 10, b: 60},
      xaxis: {range: lim, constrain: "domain", zeroline: false, showgrid: false},
      yaxis: {range: [lim[1], lim[0]], scaleanchor: "x", zeroline: false, showgrid: false},
      shapes: [{type: "rect", x0: -0.5, x1: n - 0.5, y0: -0.5, y1: n - 0.5, line: {color: INK, width: 1}},
               rect(t, THEORY, "dash"), rect(b, MEASURED, "solid"), rect(e, GRID, "dot")],
    }), CONFIG);
    text.innerHTML = rfText(model, stage, unit);
  }

  // ---- wiring -------------------------------------------------------------------------------------------------
  const DRAW = {window: drawWindow, rf: drawRf};

  function start(root) {
    const data = JSON.parse(root.querySelector(".explorable-data").textContent);
    const plot = root.querySelector(".explorable-plot"), text = root.querySelector(".explorable-text");
    const draw = (changed) => DRAW[root.dataset.kind](root, data, plot, text, changed);
    root.querySelectorAll("[data-control]").forEach((c) => {
      c.addEventListener("input", () => draw(c.dataset.control));  // a select and a range both fire "input"
    });
    let pending = null;  // redraw at the new width (a phone turned, a window resized, the page printed)
    const resize = () => { clearTimeout(pending); pending = setTimeout(() => draw(null), 100); };
    window.addEventListener("resize", resize);
    window.addEventListener("beforeprint", () => draw(null));
    draw(null);
    root.dataset.ready = "true";
  }

  function startAll() {
    if (typeof Plotly === "undefined") return;  // without plotly.js the sentence (the default state) stays
    document.querySelectorAll(".course-explorable").forEach(start);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startAll);
  else startAll();
})();
