// Sortable, filterable result tables. Row data comes from a JSON block (read with textContent and
// JSON.parse), never from strings written into this script.
(function () {
  "use strict";

  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: "base" });
  }

  function setup(table) {
    var source = document.getElementById(table.getAttribute("data-rows"));
    if (!source) return;
    var data = JSON.parse(source.textContent);
    var body = table.tBodies[0];
    var headers = Array.prototype.slice.call(table.querySelectorAll("th[data-key]"));
    var count = document.querySelector('[data-count="' + table.id + '"]');

    headers.forEach(function (th) {
      th.querySelector("button").addEventListener("click", function () {
        var key = th.getAttribute("data-key");
        var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var a = data[+r1.getAttribute("data-i")][key];
          var b = data[+r2.getAttribute("data-i")][key];
          var aMissing = a === null || a === undefined || a === "";
          var bMissing = b === null || b === undefined || b === "";
          if (aMissing || bMissing) return aMissing === bMissing ? 0 : (aMissing ? 1 : -1);
          return dir * compare(a, b);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });

    var filter = document.querySelector('input[data-filter="' + table.id + '"]');
    if (!filter) return;
    filter.addEventListener("input", function () {
      var terms = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      Array.prototype.forEach.call(body.rows, function (row) {
        var text = row.textContent.toLowerCase();
        row.hidden = !terms.every(function (t) { return text.indexOf(t) !== -1; });
        if (!row.hidden) shown += 1;
      });
      if (count) count.textContent = shown + " of " + body.rows.length + " results";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table[data-rows]"), setup);
  });
})();
