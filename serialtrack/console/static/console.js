// serialtrack console: the two live parts, in plain JavaScript (no build step, nothing from a CDN).
"use strict";

// Theft desk: new alerts arrive as server-sent events (a rendered table row each) and go on top.
function watchAlerts(status) {
  const tbody = document.getElementById("alerts");
  const source = new EventSource(status.dataset.live);
  source.addEventListener("status", (event) => {
    const words = {
      "live": "Live: new alerts appear here as they happen.",
      "theft-down": "The theft service does not answer: live alerts resume when it is back.",
      "signed-out": "Your token no longer works: sign in again to see new alerts.",
    };
    status.textContent = words[event.data] || event.data;
    status.dataset.state = event.data;
    if (event.data === "signed-out") source.close();
  });
  source.addEventListener("alert", (event) => {
    const template = document.createElement("template");
    template.innerHTML = JSON.parse(event.data).trim();
    const row = template.content.firstElementChild;
    if (row && !tbody.querySelector(`[data-alert-id="${CSS.escape(row.dataset.alertId)}"]`)) {
      tbody.prepend(row);
      const empty = document.getElementById("no-alerts");
      if (empty) empty.remove();
    }
  });
  source.onerror = () => {
    status.textContent = "Connection to the console lost; reconnecting…";
    status.dataset.state = "reconnecting";
  };
}

// System: the status panel, fetched again every 2 seconds.
function refreshPanel(panel) {
  setInterval(async () => {
    try {
      const response = await fetch(panel.dataset.refresh, {credentials: "same-origin"});
      if (response.ok && !response.redirected) panel.innerHTML = await response.text();
    } catch (error) {
      // the console itself is unreachable: keep the last view
    }
  }, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("live-status");
  if (status && status.dataset.live) watchAlerts(status);
  const panel = document.getElementById("system-panel");
  if (panel) refreshPanel(panel);
});
