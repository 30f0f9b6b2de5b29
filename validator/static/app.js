// Dashboard for the validator service: fetches the JSON endpoints and renders them with DOM calls only.
// Every value comes from the network (trainer addresses, rejection reasons), so text is set with
// textContent and never parsed as HTML.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    throw new Error(`${path}: HTTP ${response.status}`);
  }
  return response.json();
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fixed(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function svg(name, attributes) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

function drawLossChart(container, points) {
  container.replaceChildren();
  if (points.length === 0) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = "no windows yet";
    container.appendChild(p);
    return;
  }
  const width = 720, height = 260, pad = { left: 60, right: 16, top: 14, bottom: 34 };
  const windows = points.map((p) => p.window), losses = points.map((p) => p.loss);
  const wMin = Math.min(...windows), wMax = Math.max(...windows);
  const lMin = Math.min(...losses), lMax = Math.max(...losses);
  const wSpan = wMax - wMin || 1, lSpan = lMax - lMin || 1;
  const x = (w) => pad.left + ((w - wMin) / wSpan) * (width - pad.left - pad.right);
  const y = (l) => pad.top + (1 - (l - lMin) / lSpan) * (height - pad.top - pad.bottom);

  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", id: "loss-svg",
    "data-points": points.length, "aria-label": "global model loss per window" });
  chart.appendChild(svg("line", { class: "axis", x1: pad.left, y1: height - pad.bottom,
    x2: width - pad.right, y2: height - pad.bottom }));
  chart.appendChild(svg("line", { class: "axis", x1: pad.left, y1: pad.top, x2: pad.left,
    y2: height - pad.bottom }));
  const labels = [
    [pad.left - 6, y(lMax) + 4, lMax.toFixed(3), "end"],
    [pad.left - 6, y(lMin) + 4, lMin.toFixed(3), "end"],
    [x(wMin), height - pad.bottom + 16, `w${wMin}`, "middle"],
    [x(wMax), height - pad.bottom + 16, `w${wMax}`, "middle"],
  ];
  for (const [lx, ly, text, anchor] of labels) {
    const label = svg("text", { x: lx, y: ly, "text-anchor": anchor });
    label.textContent = text;
    chart.appendChild(label);
  }
  chart.appendChild(svg("polyline", { class: "line",
    points: points.map((p) => `${x(p.window).toFixed(1)},${y(p.loss).toFixed(1)}`).join(" ") }));
  for (const p of points) {
    const dot = svg("circle", { class: "dot", cx: x(p.window), cy: y(p.loss), r: 3 });
    const title = svg("title", {});
    title.textContent = `window ${p.window}: loss ${p.loss.toFixed(4)}`;
    dot.appendChild(title);
    chart.appendChild(dot);
  }
  container.appendChild(chart);
}

function fillLeaderboard(tbody, entries) {
  tbody.replaceChildren();
  entries.forEach((entry, index) => {
    const row = document.createElement("tr");
    row.dataset.trainer = entry.trainer;
    cell(row, String(index + 1), "num");
    cell(row, entry.trainer, "addr");
    cell(row, fixed(entry.ordinal, 3), "num");
    cell(row, fixed(entry.mu, 3), "num");
    cell(row, fixed(entry.sigma, 3), "num");
    cell(row, fixed(entry.B, 3), "num");
    cell(row, String(entry.windows_scored), "num");
    cell(row, String(entry.windows_rejected), "num");
    cell(row, String(entry.misses), "num");
    tbody.appendChild(row);
  });
}

function fillRewards(tbody, entries) {
  tbody.replaceChildren();
  const byWeight = [...entries].sort((a, b) => b.total_weight - a.total_weight);
  const maxWeight = Math.max(1e-12, ...byWeight.map((e) => e.total_weight));
  for (const entry of byWeight) {
    const row = document.createElement("tr");
    row.dataset.trainer = entry.trainer;
    cell(row, entry.trainer, "addr");
    cell(row, fixed(entry.total_weight, 4), "num");
    cell(row, entry.rewards_wei, "num");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round((entry.total_weight / maxWeight) * 160)}px`;
    cell(row, "").appendChild(bar);
    tbody.appendChild(row);
  }
}

function fillRejections(tbody, rejections) {
  tbody.replaceChildren();
  for (const item of rejections) {
    const row = document.createElement("tr");
    cell(row, String(item.window), "num");
    cell(row, item.trainer, "addr");
    cell(row, item.reason, "reason");
    cell(row, item.detail ?? "", "detail");
    cell(row, item.cid ?? "–", "cid");
    tbody.appendChild(row);
  }
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [health, loss, board, rejections] = await Promise.all([
      getJson("/health"), getJson("/loss"), getJson("/leaderboard"), getJson("/rejections?limit=100"),
    ]);
    drawLossChart(document.getElementById("loss-chart"), loss);
    fillLeaderboard(document.querySelector("#leaderboard tbody"), board);
    fillRewards(document.querySelector("#rewards tbody"), board);
    fillRejections(document.querySelector("#rejections tbody"), rejections);
    const last = health.last_processed_window;
    status.textContent = `last processed window: ${last === null ? "none" : last} · loop: ${health.loop}`;
    document.body.dataset.state = "ready";
    // Whether the page fits its window without a horizontal scrollbar (the browser test reads it).
    const root = document.documentElement;
    document.body.dataset.fits = String(root.scrollWidth <= root.clientWidth);
  } catch (error) {
    status.textContent = `could not load: ${error.message}`;
    document.body.dataset.state = "error";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  refresh();
  setInterval(refresh, 15000);
});
