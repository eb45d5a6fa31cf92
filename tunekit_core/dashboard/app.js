// tunekit dashboard: polls the server's JSON API and draws the trials table and
// plotly.js charts. No framework; the DOM is built with textContent (no HTML from data).
"use strict";

(function () {
  const POLL_MS = 2000;        // while the run is going
  const RETRY_MS = 5000;       // after a failed poll
  const MAX_ROWS = 500;        // rows drawn in the table (after filter and sort)
  const AUTO_SELECT = 5;       // best trials selected until the user picks some
  const ACTIVE = new Set(["RUNNING", "PENDING", "PAUSED"]);
  const token = new URLSearchParams(location.search).get("token");
  const hasPlotly = typeof window.Plotly !== "undefined";
  const $ = (id) => document.getElementById(id);

  const state = {
    doc: null, metric: null, mode: null, selected: new Set(), touched: false,
    sortKey: null, sortDir: 1, filter: "", timer: null, busy: false, again: false,
  };

  // ---- talking to the server
  async function api(path, options) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, Object.assign({ headers }, options || {}));
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
    return body;
  }

  function notice(text) {
    const box = $("notice");
    box.textContent = text || "";
    box.hidden = !text;
  }

  async function refresh() {
    // One poll at a time: a request made meanwhile (a Stop click) runs right after it.
    if (state.busy) { state.again = true; return; }
    state.busy = true;
    try {
      await poll();
    } finally {
      state.busy = false;
      if (state.again) { state.again = false; refresh(); }
    }
  }

  async function poll() {
    clearTimeout(state.timer);
    let doc;
    try {
      doc = await api("api/experiment");
    } catch (err) {
      notice("The server does not answer (" + err.message + "); the run may have ended. Retrying.");
      $("live").className = "";
      $("live").textContent = "disconnected";
      state.timer = setTimeout(refresh, RETRY_MS);
      return;
    }
    notice(hasPlotly ? doc.note || "" : "The charts need plotly: pip install tunekit[dashboard]");
    state.doc = doc;
    if (!state.metric || !doc.metrics.includes(state.metric)) {
      state.metric = doc.metric && doc.metrics.includes(doc.metric) ? doc.metric : doc.metrics[0] || null;
    }
    if (!state.mode) state.mode = doc.mode || "min";
    $("mode").value = state.mode;
    if (!state.touched) autoSelect();
    renderHeader();
    renderMetricChoices();
    renderTable();
    await drawCharts();
    if (doc.live) state.timer = setTimeout(refresh, POLL_MS);
  }

  // ---- values and ordering
  function metricOf(trial) {
    const v = trial.last[state.metric];
    return v === undefined ? null : v;
  }

  function better(a, b) {
    return state.mode === "max" ? a > b : a < b;
  }

  function autoSelect() {
    const scored = state.doc.trials.filter((t) => metricOf(t) !== null);
    scored.sort((a, b) => (better(metricOf(a), metricOf(b)) ? -1 : better(metricOf(b), metricOf(a)) ? 1 : 0));
    const pick = (scored.length ? scored : state.doc.trials).slice(0, AUTO_SELECT);
    state.selected = new Set(pick.map((t) => t.id));
  }

  function columns() {
    const cols = [
      { key: "name", label: "Trial" },
      { key: "status", label: "Status" },
    ];
    if (state.doc.can_control) cols.push({ key: "action", label: "" });
    cols.push({ key: "iteration", label: "Iter", num: true });
    if (state.metric) cols.push({ key: "metric", label: state.metric, num: true });
    for (const p of state.doc.params) cols.push({ key: "p:" + p, label: p, param: p });
    return cols;
  }

  function cellValue(trial, col) {
    if (col.key === "metric") return metricOf(trial);
    if (col.param !== undefined) {
      const v = trial.params[col.param];
      return v === undefined ? null : v;
    }
    const v = trial[col.key];
    return v === undefined ? null : v;
  }

  function format(v) {
    if (v === null) return "";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(5);
    return String(v);
  }

  function compare(a, b) {
    if (a === null) return b === null ? 0 : 1;   // empty cells last, either direction
    if (b === null) return -1;
    if (typeof a === "number" && typeof b === "number") return (a - b) * state.sortDir;
    return String(a).localeCompare(String(b), undefined, { numeric: true }) * state.sortDir;
  }

  function visibleTrials(cols) {
    const words = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
    let rows = state.doc.trials;
    if (words.length) {
      rows = rows.filter((t) => {
        const text = [t.name, t.id, t.status, ...Object.entries(t.params).map(([k, v]) => k + "=" + v)]
          .join(" ").toLowerCase();
        return words.every((w) => text.includes(w));
      });
    }
    const col = cols.find((c) => c.key === state.sortKey);
    if (col) rows = rows.slice().sort((a, b) => compare(cellValue(a, col), cellValue(b, col)));
    return rows;
  }

  // ---- rendering
  function renderHeader() {
    const doc = state.doc;
    $("exp-name").textContent = doc.name;
    $("exp-path").textContent = doc.path;
    const live = $("live");
    live.className = doc.live ? "on" : "";
    live.textContent = doc.live ? "live, updating every " + POLL_MS / 1000 + " s" : "finished";
    $("counts").textContent = doc.trials.length + " trials: " +
      Object.entries(doc.counts).map(([s, n]) => n + " " + s).join(", ");
  }

  function renderMetricChoices() {
    const select = $("metric");
    const wanted = state.doc.metrics.join("\n");
    if (select.dataset.options !== wanted) {
      select.textContent = "";
      for (const m of state.doc.metrics) select.add(new Option(m, m));
      select.dataset.options = wanted;
    }
    if (state.metric) select.value = state.metric;
  }

  function renderTable() {
    const cols = columns();
    const head = document.createElement("tr");
    head.appendChild(document.createElement("th"));
    for (const col of cols) {
      const th = document.createElement("th");
      th.textContent = col.label;
      th.dataset.key = col.key;
      if (col.key === state.sortKey) th.className = state.sortDir > 0 ? "sorted-asc" : "sorted-desc";
      if (col.key !== "action") {
        th.addEventListener("click", () => {
          state.sortDir = state.sortKey === col.key ? -state.sortDir : 1;
          state.sortKey = col.key;
          renderTable();
        });
      }
      head.appendChild(th);
    }
    $("trials").tHead.replaceChildren(head);

    const rows = visibleTrials(cols);
    const body = document.createDocumentFragment();
    for (const trial of rows.slice(0, MAX_ROWS)) {
      const tr = document.createElement("tr");
      tr.dataset.id = trial.id;
      if (state.selected.has(trial.id)) tr.className = "selected";
      const pick = document.createElement("input");
      pick.type = "checkbox";
      pick.checked = state.selected.has(trial.id);
      pick.title = "show this trial's learning curve";
      pick.addEventListener("change", () => {
        state.touched = true;
        if (pick.checked) state.selected.add(trial.id); else state.selected.delete(trial.id);
        tr.className = pick.checked ? "selected" : "";
        drawCurves();
      });
      const first = document.createElement("td");
      first.appendChild(pick);
      tr.appendChild(first);
      for (const col of cols) {
        const td = document.createElement("td");
        if (col.key === "action") {
          if (ACTIVE.has(trial.status)) td.appendChild(stopButton(trial.id));
          tr.appendChild(td);
          continue;
        }
        const value = cellValue(trial, col);
        td.textContent = format(value);
        td.dataset.col = col.key;
        if (col.key === "status") {
          td.className = "status-" + value;
          if (trial.error_msg) td.title = trial.error_msg;
        } else if (typeof value === "number") {
          td.className = "num";
        }
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    $("trials").tBodies[0].replaceChildren(body);
    const total = state.doc.trials.length;
    $("shown").textContent = rows.length === total ? "" :
      rows.length + " of " + total + " trials match";
    if (rows.length > MAX_ROWS) $("shown").textContent += " (first " + MAX_ROWS + " shown)";
  }

  function stopButton(id) {
    const button = document.createElement("button");
    button.className = "stop";
    button.textContent = "Stop";
    button.title = "stop this trial (it ends TERMINATED)";
    button.addEventListener("click", () => stopTrial(id, button));
    return button;
  }

  async function stopTrial(id, button) {
    button.disabled = true;
    try {
      await api("trials/" + encodeURIComponent(id), { method: "PUT" });
    } catch (err) {
      notice("Could not stop " + id + ": " + err.message);
    }
    refresh();
  }

  // ---- charts
  const plotConfig = { displaylogo: false, responsive: true };
  const margin = { l: 60, r: 20, t: 10, b: 45 };

  function emptyChart(div, text) {
    Plotly.react(div, [], {
      margin, xaxis: { visible: false }, yaxis: { visible: false },
      annotations: [{ text, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
    }, plotConfig);
  }

  async function drawCharts() {
    if (!hasPlotly) return;
    drawParcoords();
    await Promise.all([drawCurves(), drawBest()]);
  }

  async function drawCurves() {
    if (!hasPlotly) return;
    const metric = state.metric;
    const trials = state.doc.trials.filter((t) => state.selected.has(t.id));
    if (!metric || !trials.length) return emptyChart("curves", "Select trials in the table");
    const keys = encodeURIComponent(metric);
    const histories = await Promise.all(trials.map((t) =>
      api("api/trials/" + encodeURIComponent(t.id) + "/history?keys=" + keys).catch(() => null)));
    const traces = [];
    trials.forEach((t, i) => {
      const h = histories[i];
      if (!h) return;
      traces.push({
        type: "scatter", mode: "lines", name: t.name, connectgaps: true,
        x: h.columns.training_iteration, y: h.columns[metric],
      });
    });
    Plotly.react("curves", traces, {
      margin, uirevision: metric, showlegend: traces.length <= 12,
      xaxis: { title: { text: "training_iteration" } }, yaxis: { title: { text: metric } },
      legend: { font: { size: 10 } },
    }, plotConfig);
  }

  async function drawBest() {
    const metric = state.metric;
    if (!metric) return emptyChart("best", "No results yet");
    let best;
    try {
      best = await api("api/best?metric=" + encodeURIComponent(metric) + "&mode=" + state.mode);
    } catch (err) {
      return emptyChart("best", err.message);
    }
    if (!best.points.length) return emptyChart("best", "No results yet");
    const points = best.points;
    Plotly.react("best", [{
      type: "scatter", mode: "lines+markers", line: { shape: "hv" },
      x: points.map((p) => new Date(p[0] * 1000)), y: points.map((p) => p[1]),
      customdata: points.map((p) => p[2]),
      hovertemplate: "%{y}<br>trial %{customdata}<br>%{x}<extra></extra>",
    }], {
      margin, uirevision: metric + state.mode,
      xaxis: { title: { text: "time" } }, yaxis: { title: { text: "best " + metric + " (" + state.mode + ")" } },
    }, plotConfig);
  }

  function drawParcoords() {
    const metric = state.metric;
    const trials = state.doc.trials.filter((t) => metricOf(t) !== null);
    if (!metric || !trials.length) return emptyChart("parcoords", "No results yet");
    const dimensions = [];
    for (const p of state.doc.params) {
      const values = trials.map((t) => (t.params[p] === undefined ? null : t.params[p]));
      if (values.every((v) => typeof v === "number" || v === null)) {
        dimensions.push({ label: p, values: values.map((v) => (v === null ? NaN : v)) });
      } else {
        const names = [...new Set(values.map(String))].sort();
        dimensions.push({
          label: p, values: values.map((v) => names.indexOf(String(v))),
          tickvals: names.map((_, i) => i), ticktext: names,
        });
      }
    }
    const scores = trials.map(metricOf);
    dimensions.push({ label: metric, values: scores });
    try {
      Plotly.react("parcoords", [{
        type: "parcoords", dimensions,
        line: { color: scores, colorscale: "Viridis", reversescale: state.mode === "min", showscale: true },
      }], { margin: { l: 70, r: 70, t: 40, b: 20 }, uirevision: metric + state.mode }, plotConfig);
    } catch (err) {
      emptyChart("parcoords", "Cannot draw: " + err.message);
    }
  }

  // ---- controls
  $("metric").addEventListener("change", (e) => {
    state.metric = e.target.value;
    if (!state.touched) autoSelect();
    renderTable();
    drawCharts();
  });
  $("mode").addEventListener("change", (e) => {
    state.mode = e.target.value;
    if (!state.touched) autoSelect();
    renderTable();
    drawCharts();
  });
  $("filter").addEventListener("input", (e) => {
    state.filter = e.target.value;
    renderTable();
  });

  refresh();
})();
