// The task and rollout browser of an azr report (see azr/report_browser.py). Every element is built with
// textContent: model text never becomes markup. The filters are mirrored in the URL fragment.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("azr-data").textContent);
  var PAGE = 50;
  var KEYWORDS = new Set(("False None True and as assert async await break class continue def del elif else " +
    "except finally for from global if import in is lambda nonlocal not or pass raise return try while with " +
    "yield match case").split(" "));
  var BUILTINS = new Set(("abs all any bin bool chr dict divmod enumerate filter float frozenset hash hex int " +
    "isinstance len list map max min next ord pow print range repr reversed round set sorted str sum tuple " +
    "type zip self").split(" "));
  // comment | string (optional prefix, triple or single quotes, unterminated to the end) | number | name
  var TOKEN = new RegExp("(#[^\\n]*)|((?:[rbuRBUfF]{1,2})?(?:'''[\\s\\S]*?(?:'''|$)|\"\"\"[\\s\\S]*?(?:\"\"\"|$)|" +
    "'(?:\\\\.|[^'\\\\\\n])*'?|\"(?:\\\\.|[^\"\\\\\\n])*\"?))|(\\b(?:0[xXoObB][0-9a-fA-F_]+|\\d[\\d_]*\\.?\\d*" +
    "(?:[eE][+-]?\\d+)?j?)\\b)|([A-Za-z_][A-Za-z0-9_]*)", "g");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function highlight(code) {
    var pre = el("pre", "code"), last = 0, prevName = "", m;
    TOKEN.lastIndex = 0;
    while ((m = TOKEN.exec(code)) !== null) {
      if (m.index > last) pre.appendChild(document.createTextNode(code.slice(last, m.index)));
      var cls = null;
      if (m[1]) cls = "t-c";
      else if (m[2]) cls = "t-s";
      else if (m[3]) cls = "t-n";
      else if (KEYWORDS.has(m[4])) cls = "t-k";
      else if (prevName === "def" || prevName === "class") cls = "t-d";
      else if (BUILTINS.has(m[4])) cls = "t-b";
      pre.appendChild(cls ? el("span", cls, m[0]) : document.createTextNode(m[0]));
      prevName = m[4] || "";
      last = TOKEN.lastIndex;
    }
    if (last < code.length) pre.appendChild(document.createTextNode(code.slice(last)));
    return pre;
  }

  // A reply's answer: ```python blocks highlighted, other fenced blocks and prose as plain text.
  function fenced(text) {
    var box = el("div"), fence = /```([\w-]*)\n?([\s\S]*?)(?:```|$)/g, last = 0, m;
    while ((m = fence.exec(text)) !== null) {
      if (m[0] === "") { fence.lastIndex++; continue; }
      var before = text.slice(last, m.index).trim();
      if (before) box.appendChild(el("pre", null, before));
      if (m[1]) box.appendChild(el("h5", null, m[1]));
      box.appendChild(m[1] === "python" ? highlight(m[2]) : el("pre", null, m[2]));
      last = fence.lastIndex;
    }
    var rest = text.slice(last).trim();
    if (rest) box.appendChild(el("pre", null, rest));
    return box;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "-";
    return typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : String(v);
  }

  function solveRate(t) { return t.attempts ? t.solved / t.attempts : null; }

  function taskOutcomes(t) {
    var out = [t.evicted === null || t.evicted === undefined ? "live" : "evicted"], r = solveRate(t);
    if (r === null) out.push("not attempted");
    else out.push(r === 0 ? "never solved" : r === 1 ? "always solved" : "learnable (solved sometimes)");
    return out;
  }

  function rolloutOutcomes(r) {
    var out = [r.outcome || r.status || "unknown"];
    if (r.flags.some(function (f) { return f.source !== "sandbox"; })) out.push("flagged");
    if (r.flags.some(function (f) { return f.source === "sandbox"; })) out.push("sandbox signal");
    return out;
  }

  var TASKS_BY_ID = new Map();
  DATA.tasks.forEach(function (t) { TASKS_BY_ID.set(t.id, t); });

  function taskDetail(t, box) {
    box.appendChild(el("h5", null, "program"));
    box.appendChild(highlight(t.program || ""));
    var pairs = (t.inputs || []).map(function (x, i) { return "f(" + x + ") == " + fmt((t.outputs || [])[i]); });
    if (pairs.length) { box.appendChild(el("h5", null, "inputs and outputs")); box.appendChild(el("pre", null, pairs.join("\n"))); }
    if (t.message) { box.appendChild(el("h5", null, "message")); box.appendChild(el("pre", null, t.message)); }
  }

  function rolloutDetail(r, box) {
    r.flags.forEach(function (f) {
      box.appendChild(el("p", "flag", (f.source === "sandbox" ? "sandbox: " : "flag: ") + f.category + " (" +
        f.rule + (f.part ? ", " + f.part : "") + "): " + (f.excerpt || "")));
    });
    var t = TASKS_BY_ID.get(r.task);
    if (r.role === "solve" && t) { box.appendChild(el("h4", null, "task #" + t.id)); taskDetail(t, box); }
    else if (r.task !== null && r.task !== undefined && !t) box.appendChild(el("p", null, "task #" + r.task));
    box.appendChild(el("h5", null, "reasoning"));
    box.appendChild(el("pre", null, r.think || "(none)"));
    box.appendChild(el("h5", null, "answer"));
    box.appendChild(fenced(r.answer || ""));
    if (r.role === "propose" && t) { box.appendChild(el("h4", null, "reference task #" + t.id)); taskDetail(t, box); }
  }

  var VIEWS = {
    tasks: {
      rows: DATA.tasks,
      columns: [["id", function (t) { return t.id; }], ["type", function (t) { return t.type; }],
        ["step", function (t) { return t.step; }], ["origin", function (t) { return t.origin; }],
        ["solved", function (t) { return t.attempts ? t.solved + "/" + t.attempts : "-"; }],
        ["status", function (t) { return taskOutcomes(t).join(", "); }],
        ["program", function (t) { return (t.program || "").split("\n").slice(0, 2).join(" ⏎ ").slice(0, 90); }]],
      outcomes: taskOutcomes,
      text: function (t) { return [t.program, t.message, (t.inputs || []).join(" "), (t.outputs || []).join(" ")].join("\n"); },
      detail: taskDetail
    },
    rollouts: {
      rows: DATA.rollouts,
      columns: [["step", function (r) { return r.step; }], ["type", function (r) { return r.type; }],
        ["role", function (r) { return r.role; }], ["outcome", function (r) { return rolloutOutcomes(r).join(", "); }],
        ["reward", function (r) { return fmt(r.reward); }], ["adv.", function (r) { return fmt(r.adv); }],
        ["answer", function (r) { return (r.answer || r.think || "").replace(/\s+/g, " ").slice(0, 90); }]],
      outcomes: rolloutOutcomes,
      text: function (r) { return [r.think, r.answer, r.status, r.outcome, JSON.stringify(r.flags)].join("\n"); },
      detail: rolloutDetail
    }
  };

  function readHash() {
    var state = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var i = part.indexOf("=");
      if (i > 0) state[decodeURIComponent(part.slice(0, i))] = decodeURIComponent(part.slice(i + 1));
    });
    return state;
  }

  function getValue(input) { return input.type === "checkbox" ? (input.checked ? "1" : "") : input.value; }
  function setValue(input, v) { if (input.type === "checkbox") input.checked = v === "1"; else input.value = v; }

  function writeHash() {
    var parts = [];
    document.querySelectorAll("#browser [data-key]").forEach(function (input) {
      var v = getValue(input);
      if (v) parts.push(encodeURIComponent(input.id.replace("-", ".")) + "=" + encodeURIComponent(v));
    });
    history.replaceState(null, "", parts.length ? "#" + parts.join("&") : location.pathname + location.search);
  }

  function setup(kind) {
    var view = VIEWS[kind], page = 0, shown = view.rows;
    var panel = document.getElementById(kind), body = panel.querySelector("tbody");
    var input = function (key) { return document.getElementById(kind + "-" + key); };
    var headRow = el("tr");
    view.columns.forEach(function (c) { headRow.appendChild(el("th", null, c[0])); });
    panel.querySelector("thead").appendChild(headRow);
    var choices = { type: new Set(), role: new Set(), outcome: new Set() };
    view.rows.forEach(function (r) {
      choices.type.add(r.type); if (r.role) choices.role.add(r.role);
      view.outcomes(r).forEach(function (o) { choices.outcome.add(o); });
      r._text = null;
    });
    Object.keys(choices).forEach(function (key) {
      var select = input(key);
      if (select) Array.from(choices[key]).sort().forEach(function (v) { select.appendChild(el("option", null, v)).value = v; });
    });
    var hash = readHash();
    panel.querySelectorAll("[data-key]").forEach(function (i) {
      var v = hash[kind + "." + i.dataset.key];
      if (v !== undefined) setValue(i, v);
    });

    function matches(r) {
      var type = input("type").value, role = input("role") ? input("role").value : "", outcome = input("outcome").value;
      var lo = input("from").value, hi = input("to").value, q = input("q").value.toLowerCase();
      if (type && r.type !== type) return false;
      if (role && r.role !== role) return false;
      if (lo !== "" && !(r.step >= Number(lo))) return false;
      if (hi !== "" && !(r.step <= Number(hi))) return false;
      if (outcome && view.outcomes(r).indexOf(outcome) < 0) return false;
      if (q) { if (r._text === null) r._text = view.text(r).toLowerCase(); if (r._text.indexOf(q) < 0) return false; }
      return true;
    }

    function render() {
      var pages = Math.max(1, Math.ceil(shown.length / PAGE)), open = input("details").checked;
      page = Math.min(page, pages - 1);
      body.replaceChildren();
      shown.slice(page * PAGE, (page + 1) * PAGE).forEach(function (r) {
        var tr = el("tr", "row");
        view.columns.forEach(function (c) { tr.appendChild(el("td", null, c[1](r))); });
        if (r.flags && r.flags.length) tr.classList.add("flagged");
        var toggle = function () {
          var next = tr.nextSibling;
          if (next && next.classList && next.classList.contains("detail")) { next.remove(); return; }
          var d = el("tr", "detail"), td = el("td");
          td.colSpan = view.columns.length;
          view.detail(r, td);
          d.appendChild(td);
          tr.after(d);
        };
        tr.addEventListener("click", toggle);
        body.appendChild(tr);
        if (open) toggle();
      });
      document.getElementById(kind + "-count").textContent = shown.length + " of " + view.rows.length + " rows";
      document.getElementById(kind + "-page").textContent = "page " + (page + 1) + " of " + pages;
      document.getElementById(kind + "-prev").disabled = page === 0;
      document.getElementById(kind + "-next").disabled = page >= pages - 1;
    }

    function refilter() { shown = view.rows.filter(matches); page = 0; render(); }
    panel.querySelectorAll("[data-key]").forEach(function (i) {
      i.addEventListener(i.type === "checkbox" ? "change" : "input", function () { refilter(); writeHash(); });
    });
    document.getElementById(kind + "-prev").addEventListener("click", function () { page--; render(); });
    document.getElementById(kind + "-next").addEventListener("click", function () { page++; render(); });
    refilter();
    return refilter;
  }

  var refresh = { tasks: setup("tasks"), rollouts: setup("rollouts") };
  window.addEventListener("hashchange", function () {
    var hash = readHash();
    document.querySelectorAll("#browser [data-key]").forEach(function (i) { setValue(i, hash[i.id.replace("-", ".")] || ""); });
    refresh.tasks(); refresh.rollouts();
  });
})();
