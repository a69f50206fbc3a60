// The dashboard's only script: live updates of the hot-keys page and the unban token.
// Every page works without it. Keys are untrusted text: they are only ever set through
// textContent and dataset, never parsed as HTML.
"use strict";

(function () {
  const table = document.getElementById("hot");
  if (table && window.EventSource) {
    const source = new EventSource(table.dataset.stream);
    source.onmessage = (event) => render(table, JSON.parse(event.data));
  }

  // The token is asked once per tab: it is kept in sessionStorage and filled into every
  // unban form, so an operator types it only for the first unban.
  for (const form of document.querySelectorAll("form.unban")) {
    const input = form.querySelector("input[name=token]");
    if (!input) continue;
    input.value = sessionStorage.getItem("hotkeys-token") || "";
    form.addEventListener("submit", () => sessionStorage.setItem("hotkeys-token", input.value));
  }

  function render(table, view) {
    // The stream opens with the current set, most often the one the page was rendered
    // from: leave the rows alone then.
    if (String(view.id) === table.dataset.version) return;
    table.dataset.version = String(view.id);
    const body = table.tBodies[0];
    // Trend lines come from the server's history; keep each key's while it stays listed.
    const trends = new Map();
    for (const row of body.rows) trends.set(row.dataset.key, row.querySelector(".trend"));
    const counter = table.dataset.counter;
    body.replaceChildren(
      ...view.items.map((item, i) => {
        const row = document.createElement("tr");
        row.dataset.key = item.key;
        row.append(cell(String(i + 1), "num"));
        const link = document.createElement("a");
        link.href = "/history?counter=" + encodeURIComponent(counter) + "&key=" + encodeURIComponent(item.key);
        link.textContent = item.key;
        const key = cell("", "");
        key.append(link);
        row.append(key, cell(String(item.count), "num count"));
        row.append(cell(item.error == null ? "" : String(item.error), "num"));
        row.append(trends.get(item.key) || cell("", "trend"));
        return row;
      }),
    );
    const updated = document.getElementById("updated");
    if (updated) {
      updated.textContent = "version " + view.id + " · " + new Date(view.at_ms).toISOString().slice(0, 19) + "Z · live";
    }
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.className = className;
    td.textContent = text;
    return td;
  }
})();
