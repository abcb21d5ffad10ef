/* asyncprof HTML report: tooltips, legend toggles, and a readiness mark for tests.
   The charts are SVG already in the page (drawn by asyncprof.renderers.html_charts); this script
   only adds interaction.  Once it has run, <html> carries data-ready="1", data-charts (charts
   in the page), data-charts-drawn (charts with marks and a non-empty box) and data-runs. */
(function () {
  "use strict";
  var root = document.documentElement;

  function tooltips() {
    var tip = document.createElement("div");
    tip.className = "tip";
    tip.hidden = true;
    document.body.appendChild(tip);
    document.querySelectorAll("svg.chart title").forEach(function (t) {
      var owner = t.parentNode;
      owner.setAttribute("data-tip", t.textContent);
      owner.removeChild(t);
    });
    document.addEventListener("mousemove", function (e) {
      var el = e.target && e.target.closest ? e.target.closest("[data-tip]") : null;
      if (!el) { tip.hidden = true; return; }
      tip.textContent = el.getAttribute("data-tip");
      tip.hidden = false;
      var x = e.clientX + 14, y = e.clientY + 14;
      if (x + tip.offsetWidth > window.innerWidth - 8) { x = e.clientX - tip.offsetWidth - 14; }
      if (y + tip.offsetHeight > window.innerHeight - 8) { y = e.clientY - tip.offsetHeight - 14; }
      tip.style.left = Math.max(0, x) + "px";
      tip.style.top = Math.max(0, y) + "px";
    });
  }

  function legends() {
    document.querySelectorAll("svg.chart .legend-item").forEach(function (item) {
      function toggle() {
        var off = item.classList.toggle("off");
        var key = item.getAttribute("data-key");
        item.ownerSVGElement.querySelectorAll(".series").forEach(function (g) {
          if (g.getAttribute("data-key") === key) { g.style.display = off ? "none" : ""; }
        });
      }
      item.addEventListener("click", toggle);
      item.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); }
      });
    });
  }

  function mark() {
    var charts = document.querySelectorAll("svg.chart");
    var drawn = 0;
    charts.forEach(function (c) {
      var box = c.getBoundingClientRect();
      if (box.width > 0 && box.height > 0 && Number(c.getAttribute("data-marks")) > 0) { drawn += 1; }
    });
    var data = JSON.parse(document.getElementById("asyncprof-data").textContent);
    root.setAttribute("data-charts", String(charts.length));
    root.setAttribute("data-charts-drawn", String(drawn));
    root.setAttribute("data-runs", String(data.runs.length));
    root.setAttribute("data-ready", "1");
  }

  document.addEventListener("DOMContentLoaded", function () {
    tooltips();
    legends();
    mark();
  });
})();
