"""The CSS and JavaScript inlined into every flamegraph SVG (see :mod:`asyncprof.renderers.flamegraph`).

Both are scoped to one ``<svg id=...>`` so several flamegraphs can sit inline in one HTML page:
selectors start with the SVG's id, and the script finds its SVG by id and listens for keys only
while the pointer is over it.  No external resource is referenced; the script uses plain DOM
calls that work in an SVG opened from a file and in SVG inlined into HTML.

The script reads, per frame ``<g class="f" data-d=DEPTH>``: the ``<rect>``'s x and width (its
drawn geometry, which it keeps as the unzoomed layout), the frame text from the first line of the
``<title>``, and the category from a ``c-<category>`` class.  ``__CONFIG__`` is replaced by a
JSON object: ``{"id", "x0", "width", "charWidth", "totalMsPerRequest", "matchFill"}``.
"""

CSS = """
#__ID__ text { font-family: Verdana, "DejaVu Sans", sans-serif; font-size: 12px; fill: #000; }
#__ID__ .title { font-size: 17px; text-anchor: middle; }
#__ID__ .subtitle { fill: #555; text-anchor: middle; }
#__ID__ .note, #__ID__ .details { fill: #444; }
#__ID__ .matched { text-anchor: end; }
#__ID__ .button { cursor: pointer; fill: #0645ad; }
#__ID__ .button:hover { text-decoration: underline; }
#__ID__ .hidden { display: none; }
#__ID__ .lg { cursor: pointer; }
#__ID__ .lg:hover rect { stroke: #000; stroke-width: 1; }
#__ID__ g.f rect { stroke: #fff; stroke-width: 0.3; }
#__ID__ g.f:hover rect { stroke: #000; stroke-width: 0.6; }
#__ID__ g.f { cursor: pointer; }
#__ID__ g.f text { pointer-events: none; font-size: 11px; }
#__ID__ g.f.parent rect { opacity: 0.55; }
#__ID__ g.f.dim rect { opacity: 0.35; }
"""

JS = r"""
(function () {
  var C = __CONFIG__;
  var svg = document.getElementById(C.id);
  if (!svg) { return; }
  function q(sel) { return svg.querySelector(sel); }
  var details = q(".details"), matched = q(".matched"), reset = q(".reset"), search = q(".search");
  var frames = [];
  Array.prototype.forEach.call(svg.querySelectorAll("g.f"), function (g) {
    var r = g.querySelector("rect"), t = g.querySelector("text"), ti = g.querySelector("title");
    var text = ti ? ti.textContent : "";
    var cat = (g.getAttribute("class") || "").split(" ").filter(function (c) { return c.indexOf("c-") === 0; });
    var f = {g: g, r: r, t: t, x: +r.getAttribute("x"), w: +r.getAttribute("width"),
             d: +g.getAttribute("data-d"), name: text.split("\n")[0], info: text,
             cat: cat.length ? cat[0].slice(2) : "", fill: r.getAttribute("fill")};
    g.__flame = f;
    frames.push(f);
  });
  var eps = 1e-6, hovered = false, searchTerm = null;

  function label(f, w) {
    var n = Math.floor((w - 6) / C.charWidth);
    if (n < 3) { return ""; }
    return f.name.length <= n ? f.name : f.name.slice(0, n - 2) + "..";
  }
  function place(f, x, w) {
    f.r.setAttribute("x", x.toFixed(3));
    f.r.setAttribute("width", w.toFixed(3));
    if (f.t) { f.t.setAttribute("x", (x + 3).toFixed(3)); f.t.textContent = label(f, w); }
  }
  function zoom(target) {
    var ratio = C.width / target.w;
    frames.forEach(function (f) {
      var inside = f.d >= target.d && f.x >= target.x - eps && f.x + f.w <= target.x + target.w + eps;
      var above = f.d < target.d && f.x <= target.x + eps && f.x + f.w >= target.x + target.w - eps;
      f.g.classList.toggle("hidden", !(inside || above));
      f.g.classList.toggle("parent", above);
      if (inside) { place(f, C.x0 + (f.x - target.x) * ratio, f.w * ratio); }
      else if (above) { place(f, C.x0, C.width); }
    });
    reset.classList.toggle("hidden", target.d === 0);
  }
  function unzoom() {
    frames.forEach(function (f) {
      f.g.classList.remove("hidden", "parent");
      place(f, f.x, f.w);
    });
    reset.classList.add("hidden");
  }
  function highlight(pred, what) {
    var ranges = [];
    frames.forEach(function (f) {
      var hit = pred(f);
      f.r.setAttribute("fill", hit ? C.matchFill : f.fill);
      f.g.classList.toggle("dim", false);
      if (hit) { ranges.push([f.x, f.w]); }
    });
    ranges.sort(function (a, b) { return a[0] - b[0] || b[1] - a[1]; });
    var covered = 0, end = -Infinity;
    ranges.forEach(function (r) {
      if (r[0] + r[1] <= end + eps) { return; }
      covered += r[0] + r[1] - Math.max(r[0], end);
      end = r[0] + r[1];
    });
    var share = covered / C.width;
    var text = what + ": " + (100 * share).toFixed(1) + "%";
    if (C.totalMsPerRequest !== null) { text += " (" + (share * C.totalMsPerRequest).toFixed(3) + " ms/request)"; }
    matched.textContent = ranges.length ? text : "No frame for " + what;
    search.textContent = "Clear search";
  }
  function clearSearch() {
    searchTerm = null;
    frames.forEach(function (f) { f.r.setAttribute("fill", f.fill); });
    matched.textContent = "";
    search.textContent = "Search";
  }
  function doSearch(term) {
    if (!term) { clearSearch(); return; }
    var re;
    try { re = new RegExp(term, "i"); }
    catch (e) { re = new RegExp(term.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "i"); }
    searchTerm = term;
    highlight(function (f) { return f.d > 0 && re.test(f.name); }, "Matched " + JSON.stringify(term));
  }
  function askSearch() {
    if (searchTerm !== null) { clearSearch(); return; }
    var term = window.prompt("Search frames (regular expression, case-insensitive)", "");
    if (term) { doSearch(term); }
  }

  svg.addEventListener("mouseenter", function () { hovered = true; });
  svg.addEventListener("mouseleave", function () { hovered = false; });
  svg.addEventListener("mouseover", function (e) {
    var g = e.target.closest ? e.target.closest("g.f") : null;
    if (g && g.__flame) { details.textContent = g.__flame.info.split("\n").join("  |  "); }
  });
  svg.addEventListener("mouseout", function (e) {
    var g = e.target.closest ? e.target.closest("g.f") : null;
    if (g) { details.textContent = " "; }
  });
  svg.addEventListener("click", function (e) {
    var el = e.target;
    var g = el.closest ? el.closest("g.f") : null;
    if (g && g.__flame) { if (g.__flame.d === 0) { unzoom(); } else { zoom(g.__flame); } return; }
    var lg = el.closest ? el.closest("g.lg") : null;
    if (lg) {
      var cat = lg.getAttribute("data-category");
      searchTerm = "";
      highlight(function (f) { return f.d > 0 && (f.cat === cat || f.g.classList.contains(cat)); },
                "Frames of " + cat + " (with their callees)");
      return;
    }
    if (el === reset) { unzoom(); }
    else if (el === search) { askSearch(); }
  });
  window.addEventListener("keydown", function (e) {
    if (!hovered) { return; }
    if ((e.ctrlKey && e.key === "f") || e.key === "/") { e.preventDefault(); searchTerm = null; askSearch(); }
    else if (e.key === "Escape") { clearSearch(); unzoom(); }
  });
  var params = window.location && window.location.search ? new URLSearchParams(window.location.search) : null;
  if (params && params.get("s")) { doSearch(params.get("s")); }
})();
"""
