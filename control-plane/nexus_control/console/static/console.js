// The console's only script: live sections and charts. Pages work without it.
"use strict";

function refreshLive(section) {
  const url = section.dataset.live;
  const every = Number(section.dataset.every || 2000);
  const tick = async () => {
    try {
      const answer = await fetch(url, { credentials: "same-origin", headers: { accept: "text/html" } });
      if (answer.ok) {
        const html = await answer.text();
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("waves");
        const current = section.querySelector("#waves");
        if (fresh && current) current.replaceWith(fresh);
      }
    } catch (error) {
      // A missed refresh is retried at the next tick.
    }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}

const PALETTE = ["#14213d", "#0b6b2e", "#9b1c1c", "#7a4a00", "#0b4fa8", "#6a1b9a", "#00695c", "#5d4037"];

function drawCharts() {
  const block = document.getElementById("chart-data");
  if (!block || typeof window.Chart === "undefined") return;
  const data = JSON.parse(block.textContent);
  for (const canvas of document.querySelectorAll("canvas[data-kind]")) {
    const series = data[canvas.dataset.kind] || {};
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: data.days,
        datasets: Object.entries(series).map(([name, values], i) => ({
          label: name, data: values, backgroundColor: PALETTE[i % PALETTE.length], stack: "spend",
        })),
      },
      options: { animation: false, responsive: true, scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "USD" } } } },
    });
  }
  const tenantCanvas = document.getElementById("chart-tenant");
  if (tenantCanvas && data.tenant) {
    const t = data.tenant;
    const flat = (value) => t.days.map(() => value);
    new window.Chart(tenantCanvas, {
      type: "line",
      data: {
        labels: t.days,
        datasets: [
          { label: "spend so far", data: t.cumulative, borderColor: PALETTE[0], backgroundColor: PALETTE[0] },
          { label: "soft cap", data: flat(t.soft_cap), borderColor: PALETTE[3], borderDash: [6, 4], pointRadius: 0 },
          { label: "hard cap", data: flat(t.hard_cap), borderColor: PALETTE[2], borderDash: [2, 2], pointRadius: 0 },
        ],
      },
      options: { animation: false, responsive: true, scales: { y: { title: { display: true, text: "USD" } } } },
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const section of document.querySelectorAll("[data-live]")) refreshLive(section);
  drawCharts();
});
