"""The HTML report of a run directory: ``write_report(run_dir)`` writes ``run_dir/report.html``.

One self-contained file: inline CSS and inline SVG line charts drawn here (no JavaScript, no network), so it
opens anywhere and can be mailed around. It shows the run summary and config, charts of the metrics in
``metrics.jsonl`` (names in ``docs/metrics.md``), the last step's values and, when ``tasks.sqlite`` exists, a few
tasks per type and the most recent rollouts.

Model text is untrusted: every string from the run directory goes through :func:`html.escape`. The store is
opened read-only and queried defensively (a missing table or column leaves that part out), so a report can be
written while a run is going or from an older store schema. Not covered: comparing runs, interactive zoom.
"""

from __future__ import annotations

import html
import json
import math
import sqlite3
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from azr.errors import AzrError
from azr.fsutil import atomic_write_text
from azr.metrics import METRICS, describe, merge_steps, read_metrics
from azr.types import GROUPS, TASK_TYPES

REPORT_FILE = "report.html"
STORE_FILE = "tasks.sqlite"
CONFIG_FILE = "config.toml"

_e = html.escape
_TYPE_COLOR = {"deduction": "#1f77b4", "abduction": "#d62728", "induction": "#2ca02c"}
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


class Series(NamedTuple):
    label: str
    metric: str
    color: str
    dashed: bool = False


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` atomically and return its path.

    Raises :class:`AzrError` when ``run_dir`` is missing or holds neither metrics nor a task store.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AzrError(f"run directory not found: {run_dir} (pass the directory `azr train` wrote into)")
    steps = merge_steps(read_metrics(run_dir))
    store = run_dir / STORE_FILE
    if not steps and not store.is_file():
        raise AzrError(
            f"{run_dir} has no metrics.jsonl rows and no {STORE_FILE}: nothing to report yet "
            "(run `azr train` into it first, or pass another run directory)"
        )
    body = [
        _summary(run_dir, steps),
        _charts(steps),
        _last_step(steps[-1]) if steps else "",
        _store(store) if store.is_file() else "",
        _config(run_dir / CONFIG_FILE),
    ]
    page = _page(f"azr report: {run_dir.resolve().name}", "\n".join(b for b in body if b))
    return atomic_write_text(run_dir / REPORT_FILE, page)


# ---------------------------------------------------------------------------------------------- charts


def _ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """Round tick values covering ``[lo, hi]``: ``_ticks(0.03, 0.91)`` gives ``[0, 0.2, ..., 1.0]``."""
    if hi <= lo:
        lo, hi = (lo - 0.5, hi + 0.5) if lo else (0.0, 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(s * mag for s in steps if s * mag >= raw)
    if integer:
        step = max(1.0, round(step))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 10) for k in range(first, last + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.2e}"


def svg_line_chart(
    points: dict[Series, list[tuple[float, float]]],
    y_range: tuple[float, float] | None = None,
    x_range: tuple[float, float] | None = None,
) -> str:
    """An inline SVG line chart: one polyline per series over (step, value) points, with axes and ticks.

    The axes cover the data and ``x_range`` / ``y_range`` when given (a rate chart passes ``(0, 1)``)."""
    w, h, left, right, top, bottom = 520, 230, 56, 14, 10, 30
    xs = [x for pts in points.values() for x, _ in pts] + list(x_range or ())
    ys = [y for pts in points.values() for _, y in pts] + list(y_range or ())
    xt, yt = _ticks(min(xs), max(xs), 6, integer=True), _ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)

    out = [
        f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" xmlns="http://www.w3.org/2000/svg">'
    ]
    for y in yt:
        out.append(f'<line class="grid" x1="{left}" x2="{w - right}" y1="{py(y):.1f}" y2="{py(y):.1f}"/>')
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{_fmt(y)}</text>')
    for x in xt:
        out.append(f'<text x="{px(x):.1f}" y="{h - bottom + 16}" text-anchor="middle">{_fmt(x)}</text>')
    out.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{h - bottom}"/>')
    out.append(f'<line class="axis" x1="{left}" x2="{w - right}" y1="{h - bottom}" y2="{h - bottom}"/>')
    for s, pts in points.items():
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(f'<polyline fill="none" stroke="{s.color}" stroke-width="2"{dash} points="{coords}">')
        out.append(f"<title>{_e(s.metric)}</title></polyline>")
        if len(pts) <= 30:
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{s.color}"/>' for x, y in pts]
    out.append("</svg>")
    return "".join(out)


def _chart_specs(
    steps: Sequence[dict[str, Any]],
) -> list[tuple[str, list[Series], tuple[float, float] | None]]:
    def per_type(template: str) -> list[Series]:
        return [
            Series(t.value, template.replace("<type>", t.value), _TYPE_COLOR[t.value]) for t in TASK_TYPES
        ]

    def plain(names: Sequence[str]) -> list[Series]:
        return [Series(n.rsplit("/", 1)[-1], n, _PALETTE[i % len(_PALETTE)]) for i, n in enumerate(names)]

    groups = [
        Series(f"{t}/{r}", f"reward/{t}/{r}", _TYPE_COLOR[t.value], r.value == "solve") for t, r in GROUPS
    ]
    evals = sorted({k for row in steps for k in row if k.startswith("eval/")})
    unit = (0.0, 1.0)
    return [
        ("Mean reward per group (solid: propose, dashed: solve)", groups, None),
        ("Valid proposal rate", per_type("propose/valid_rate/<type>"), unit),
        ("Solve accuracy", per_type("solve/accuracy/<type>"), unit),
        ("Proposer learnability", per_type("propose/learnability/<type>"), unit),
        ("Buffer size (tasks)", per_type("buffer/size/<type>"), None),
        ("Policy loss", plain(["train/loss"]), None),
        ("Gradient norm (before clipping)", plain(["train/grad_norm"]), None),
        ("Entropy and clip fraction", plain(["train/entropy", "train/clip_frac"]), None),
        ("Seconds per phase", plain([n for n in METRICS if n.startswith("perf/seconds/")]), None),
        ("Generation throughput (tokens/s)", plain(["perf/tokens_per_s"]), None),
        ("In-training evaluation (accuracy)", plain(evals), unit),
    ]


def _series_points(steps: Sequence[dict[str, Any]], metric: str) -> list[tuple[float, float]]:
    pts = []
    for row in steps:
        v = row.get(metric)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            pts.append((float(row["step"]), float(v)))
    return pts


def _charts(steps: Sequence[dict[str, Any]]) -> str:
    figures = []
    span = (float(steps[0]["step"]), float(steps[-1]["step"])) if steps else None  # one x axis for all charts
    for title, series, y_range in _chart_specs(steps):
        points = {s: p for s in series if (p := _series_points(steps, s.metric))}
        if not points:
            continue
        legend = "".join(
            f'<span class="key"><i style="border-color:{s.color};border-style:{"dashed" if s.dashed else "solid"}">'
            f"</i>{_e(s.label)}</span>"
            for s in points
        )
        figures.append(
            f"<figure><figcaption>{_e(title)}</figcaption>{svg_line_chart(points, y_range, span)}"
            f'<div class="legend">{legend}</div></figure>'
        )
    if not figures:
        return ""
    return '<section><h2>Charts</h2><div class="charts">' + "".join(figures) + "</div></section>"


# ---------------------------------------------------------------------------------------------- tables


def _utc(t: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if isinstance(t, int | float) else "-"


def _duration(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    return f"{h} h {rem // 60:02d} min" if h else f"{rem // 60} min {rem % 60:02d} s"


def _summary(run_dir: Path, steps: Sequence[dict[str, Any]]) -> str:
    items: list[tuple[str, str]] = [("run directory", str(run_dir.resolve()))]
    cfg = _read_toml(run_dir / CONFIG_FILE)
    model = cfg.get("model", {}).get("name") if isinstance(cfg.get("model"), dict) else None
    target = cfg.get("training", {}).get("steps") if isinstance(cfg.get("training"), dict) else None
    if model:
        items.append(("model", str(model)))
    if steps:
        logged = f"{steps[-1]['step']}" + (f" of {target}" if target else "") + f" ({len(steps)} logged)"
        items.append(("last step", logged))
        step_s = [
            r["perf/seconds/step"] for r in steps if isinstance(r.get("perf/seconds/step"), int | float)
        ]
        times = [r["time"] for r in steps if isinstance(r.get("time"), int | float)]
        if step_s:
            items.append(("wall time (sum of step times)", _duration(sum(step_s))))
        elif len(times) > 1:
            items.append(("wall time (first to last row)", _duration(max(times) - min(times))))
        if times:
            items.append(("first / last row", f"{_utc(min(times))} / {_utc(max(times))}"))
    else:
        items.append(("last step", "no metrics logged yet"))
    items.append(("report written", _utc(time.time())))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return f'<section><h2>Summary</h2><table class="kv">{rows}</table></section>'


def _last_step(row: dict[str, Any]) -> str:
    cells = []
    for key in sorted(k for k in row if k not in ("step", "time")):
        v = row[key]
        shown = _fmt(v) if isinstance(v, float) else str(v)
        cells.append(f"<tr><td><code>{_e(key)}</code></td><td class='num'>{_e(shown)}</td>"
                     f"<td>{_e(describe(key) or '')}</td></tr>")  # fmt: skip
    head = "<tr><th>metric</th><th>value</th><th>meaning</th></tr>"
    return f"<section><h2>Last step ({row['step']})</h2><table>{head}{''.join(cells)}</table></section>"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _config(path: Path) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    return f"<section><h2>Config</h2><details><summary>{_e(path.name)}</summary><pre>{_e(text)}</pre></details></section>"


# ---------------------------------------------------------------------------------------------- task store


def _clip(text: Any, n: int, tail: bool = False) -> str:
    s = "" if text is None else str(text)
    if len(s) <= n:
        return s
    return "…" + s[-n:] if tail else s[:n] + "…"


def _select(
    con: sqlite3.Connection, table: str, want: Sequence[str], order: Sequence[str], limit: int, **where: Any
) -> list[dict[str, Any]]:
    """Rows of ``table`` with the columns of ``want`` that exist; [] if the table does not."""
    cols = {r[1] for r in con.execute(f'PRAGMA table_info("{table}")')}
    pick = [c for c in want if c in cols]
    if not pick:
        return []
    columns = ", ".join(f'"{c}"' for c in pick)
    sql = f'SELECT {columns} FROM "{table}"'
    conds = [(c, v) for c, v in where.items() if c in cols]
    if conds:
        sql += " WHERE " + " AND ".join(f'"{c}" = ?' for c, _ in conds)
    keys = [f'"{c}" DESC' for c in order if c in cols] + ["rowid DESC"]
    sql += f" ORDER BY {', '.join(keys)} LIMIT {int(limit)}"
    return [dict(zip(pick, r)) for r in con.execute(sql, [v for _, v in conds])]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return [str(value)]
    return [str(v) for v in parsed] if isinstance(parsed, list) else [str(parsed)]


def _task_card(task: dict[str, Any]) -> str:
    head = " · ".join(
        str(x)
        for x in (task.get("type"), f"#{task['id']}" if "id" in task else None,
                  f"step {task['step']}" if "step" in task else None, task.get("origin"))
        if x is not None
    )  # fmt: skip
    pairs = list(zip(_as_list(task.get("inputs")), _as_list(task.get("outputs"))))
    calls = "\n".join(f"f({_clip(i, 200)}) == {_clip(o, 200)}" for i, o in pairs[:10])
    parts = [f"<h4>{_e(head)}</h4>", f"<pre>{_e(_clip(task.get('program'), 2000))}</pre>"]
    if calls:
        parts.append(f"<pre class='io'>{_e(calls)}</pre>")
    if task.get("message"):
        parts.append(f"<p class='msg'>{_e(_clip(task['message'], 500))}</p>")
    return "<div class='task'>" + "".join(parts) + "</div>"


def _tasks_html(con: sqlite3.Connection) -> str:
    want = ("id", "type", "step", "origin", "program", "inputs", "outputs", "message")
    cards = []
    for t in TASK_TYPES:
        rows = _select(con, "tasks", want, ("step", "id"), 3, type=t.value)
        if rows:
            cards.append(f"<h3>{_e(t.value)}</h3>" + "".join(_task_card(r) for r in rows))
    cols = {r[1] for r in con.execute('PRAGMA table_info("tasks")')}
    counts = ""
    if "type" in cols:
        n = dict(con.execute('SELECT "type", COUNT(*) FROM "tasks" GROUP BY "type"').fetchall())
        counts = "<p>" + ", ".join(f"{_e(str(k))}: {v}" for k, v in sorted(n.items(), key=str)) + "</p>"
    if not cards:
        return ""
    return "<section><h2>Sample tasks (newest per type)</h2>" + counts + "".join(cards) + "</section>"


def _rollouts_html(con: sqlite3.Connection, limit: int = 12) -> str:
    want = ("step", "type", "role", "parse_status", "reward", "advantage", "prompt", "reply")
    rows = _select(con, "rollouts", want, ("step",), limit)
    if not rows:
        return ""
    head = "<tr><th>step</th><th>group</th><th>status</th><th>reward</th><th>adv.</th><th>prompt (tail)</th><th>reply (head)</th></tr>"
    body = []
    for r in rows:
        num = [_fmt(v) if isinstance(v, int | float) else "-" for v in (r.get("reward"), r.get("advantage"))]
        body.append(
            f"<tr><td class='num'>{_e(str(r.get('step', '-')))}</td>"
            f"<td>{_e(str(r.get('type', '?')))}/{_e(str(r.get('role', '?')))}</td>"
            f"<td>{_e(str(r.get('parse_status', '-')))}</td><td class='num'>{num[0]}</td><td class='num'>{num[1]}</td>"
            f"<td><pre>{_e(_clip(r.get('prompt'), 300, tail=True))}</pre></td>"
            f"<td><pre>{_e(_clip(r.get('reply'), 800))}</pre></td></tr>"
        )
    return f"<section><h2>Recent rollouts</h2><table class='rollouts'>{head}{''.join(body)}</table></section>"


def _store(path: Path) -> str:
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as e:
        return f"<section><h2>Task store</h2><p>could not open {_e(path.name)}: {_e(str(e))}</p></section>"
    try:
        return _tasks_html(con) + _rollouts_html(con)
    except sqlite3.Error as e:
        return f"<section><h2>Task store</h2><p>could not read {_e(path.name)}: {_e(str(e))}</p></section>"
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------- page

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;color:#222;max-width:1180px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
h3{font-size:15px;margin:16px 0 6px}h4{font-size:13px;margin:0 0 4px;color:#555}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}
table.kv th{color:#555;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(530px,1fr));gap:14px}
figure{margin:0;border:1px solid #e4e4e4;border-radius:6px;padding:8px}figcaption{font-weight:600;margin-bottom:4px}
svg{max-width:100%;height:auto}svg text{font-size:11px;fill:#555}.grid{stroke:#eee}.axis{stroke:#999}
.legend{font-size:12px}.key{margin-right:12px;white-space:nowrap}.key i{display:inline-block;width:18px;border-top-width:3px;margin-right:4px;vertical-align:middle}
pre{background:#f7f7f7;padding:6px;margin:2px 0;white-space:pre-wrap;word-break:break-all;max-height:18em;overflow:auto;font-size:12px}
.task{border:1px solid #e4e4e4;border-radius:6px;padding:8px;margin:6px 0}.msg{font-style:italic;margin:4px 0}
table.rollouts td pre{max-width:420px;max-height:12em}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{_e(title)}</h1>\n{body}\n</body></html>\n"
    )


__all__ = ["Series", "svg_line_chart", "write_report"]
