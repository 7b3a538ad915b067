"""The task and rollout browser of the HTML report: the store's rows as JSON and a small inline script.

:func:`browser_section` embeds every task and the newest rollouts (:mod:`azr.report.data`) in one
``<script type="application/json">`` block and adds two tables that the script filters (type, role, step range,
outcome, free text) and pages through 50 rows at a time, so thousands of rows stay quick. A row opens to its
details: the program with Python syntax highlighting (a small tokenizer in the script), inputs and outputs, the
message, the reasoning and the answer, the reward and advantage, the outcome and the safety flags.

Model text is untrusted. In the JSON, ``<``, ``>``, ``&`` and U+2028/U+2029 are written as ``\\u`` escapes
(:func:`json_script`), so no reply can close the script element, and the script builds every element with
``textContent``, never ``innerHTML``: a reply stays text whatever it contains. The filters live in the URL
fragment (``#tasks.type=deduction&rollouts.outcome=flagged&rollouts.details=1``), so a filtered view can be
linked or bookmarked; ``details`` opens every row of the page.
Works offline: no library, no network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["BROWSER_CSS", "browser_section", "json_script"]

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SCRIPT = (Path(__file__).with_name("browser.js")).read_text(encoding="utf-8")


def json_script(element_id: str, data: Any) -> str:
    """``data`` as a ``<script type="application/json">`` element whose text no string can break out of."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in _ESCAPES.items():
        text = text.replace(char, escape)
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _panel(kind: str, title: str, filters: str) -> str:
    return (
        f'<div class="panel" id="{kind}"><h3>{title}</h3><div class="filters">{filters}'
        f'<span class="count" id="{kind}-count"></span></div>'
        f'<table class="browse" id="{kind}-table"><thead></thead><tbody></tbody></table>'
        f'<div class="pager"><button type="button" id="{kind}-prev">&lsaquo; previous</button>'
        f'<span id="{kind}-page"></span><button type="button" id="{kind}-next">next &rsaquo;</button></div></div>'
    )


def _filters(kind: str, roles: bool) -> str:
    def select(name: str, label: str) -> str:
        return f'<label>{label} <select id="{kind}-{name}" data-key="{name}"><option value="">all</option></select></label>'

    parts = [select("type", "type")]
    if roles:
        parts.append(select("role", "role"))
    parts += [
        f'<label>steps <input type="number" id="{kind}-from" data-key="from" placeholder="from"></label>',
        f'<label>to <input type="number" id="{kind}-to" data-key="to" placeholder="to"></label>',
        select("outcome", "outcome"),
        f'<label>text <input type="search" id="{kind}-q" data-key="q" placeholder="search"></label>',
        f'<label><input type="checkbox" id="{kind}-details" data-key="details"> open all rows of the page</label>',
    ]
    return "".join(parts)


def browser_section(tasks: list[dict[str, Any]], rollouts: list[dict[str, Any]], n_rollouts: int) -> str:
    """The browser's HTML, its data and its script; "" when the store holds neither tasks nor rollouts."""
    if not tasks and not rollouts:
        return ""
    shown = (
        f"<p>The newest {len(rollouts)} of {n_rollouts} rollouts are included.</p>"
        if n_rollouts > len(rollouts)
        else ""
    )
    return (
        '<section id="browser"><h2>Browse tasks and rollouts</h2>'
        "<p>Click a row for its details. The filters are kept in the address (link to a filtered view).</p>"
        + shown
        + _panel("tasks", f"Tasks ({len(tasks)})", _filters("tasks", roles=False))
        + _panel("rollouts", f"Rollouts ({len(rollouts)})", _filters("rollouts", roles=True))
        + json_script("azr-data", {"tasks": tasks, "rollouts": rollouts})
        + f"<script>{_SCRIPT}</script></section>"
    )


BROWSER_CSS = """
.panel{margin:10px 0 24px}.filters{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin:6px 0;font-size:13px}
.filters input[type=number]{width:5em}.count{color:#555}
table.browse{width:100%}table.browse tbody tr.row{cursor:pointer}table.browse tbody tr.row:hover{background:#f3f6fb}
tr.detail>td{background:#fafafa}.pager{display:flex;gap:10px;align-items:center;font-size:13px}
.detail h5{margin:8px 0 2px;font-size:12px;color:#555}.flag{color:#a00;font-weight:600}
.t-k{color:#7a2fa0;font-weight:600}.t-s{color:#0a7a32}.t-c{color:#888;font-style:italic}.t-n{color:#b35900}.t-b{color:#1f5fa8}
.t-d{color:#1f5fa8;font-weight:600}
"""
