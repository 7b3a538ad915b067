"""The HTML report of a run directory: ``write_report(run_dir)`` writes ``run_dir/report.html``.

One self-contained file (inline CSS, inline SVG charts, one small inline script; nothing fetched), so it opens
offline and can be mailed around. It shows the run summary and config, charts of the metrics in
``metrics.jsonl`` (names in ``docs/metrics.md``), the last step's values and, when ``tasks.sqlite`` exists:

- a browser of every task and the newest rollouts, filterable and paged (:mod:`azr.report.browser`);
- the difficulty, diversity and duplicates of the proposals, and the safety monitor's flags
  (:mod:`azr.report.views`).

Several runs side by side are :mod:`azr.report.compare` (``azr report RUN_A RUN_B``).

Model text is untrusted: strings written into HTML go through :func:`html.escape`, data for the script is
escaped JSON, and the script builds its elements with ``textContent``. The store is opened read-only and read
defensively (a missing table or column leaves that part out, :mod:`azr.report.data`), so a report can be written
while a run is going or from an older store schema. Not covered: interactive zoom.
"""

from __future__ import annotations

import html
import math
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from azr.errors import AzrError
from azr.fsutil import atomic_write_text
from azr.metrics import METRICS, describe, merge_steps, read_metrics
from azr.report.browser import BROWSER_CSS, browser_section
from azr.report.charts import PALETTE, TYPE_COLOR, Series, figure, fmt_number, svg_line_chart
from azr.report.data import read_store
from azr.report.views import difficulty_section, diversity_section, safety_section
from azr.types import GROUPS, ROLES, TASK_TYPES

REPORT_FILE = "report.html"
STORE_FILE = "tasks.sqlite"
CONFIG_FILE = "config.toml"

_e = html.escape


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``run_dir/report.html`` (or ``out``) atomically and return its path.

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
        _store(store) if store.is_file() else "",
        _last_step(steps[-1]) if steps else "",
        _config(run_dir / CONFIG_FILE),
    ]
    html_text = page(f"azr report: {run_dir.resolve().name}", "\n".join(b for b in body if b))
    return atomic_write_text(Path(out) if out is not None else run_dir / REPORT_FILE, html_text)


# ---------------------------------------------------------------------------------------------- charts


def _chart_specs(
    steps: Sequence[dict[str, Any]],
) -> list[tuple[str, list[Series], tuple[float, float] | None]]:
    def per_type(template: str) -> list[Series]:
        return [Series(t.value, template.replace("<type>", t.value), TYPE_COLOR[t.value]) for t in TASK_TYPES]

    def plain(names: Sequence[str]) -> list[Series]:
        return [Series(n.rsplit("/", 1)[-1], n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)]

    groups = [
        Series(f"{t}/{r}", f"reward/{t}/{r}", TYPE_COLOR[t.value], r.value == "solve") for t, r in GROUPS
    ]
    copy = [
        Series(
            f"{t.value} {what}", f"solve/{metric}/{t.value}", TYPE_COLOR[t.value], metric == "copy_task_rate"
        )
        for t in TASK_TYPES[:2]
        for what, metric in (("answers", "copy_rate"), ("tasks", "copy_task_rate"))
    ]
    evals = sorted({k for row in steps for k in row if k.startswith("eval/")})
    unit = (0.0, 1.0)
    return [
        ("Mean reward per group (solid: propose, dashed: solve)", groups, None),
        ("Valid proposal rate", per_type("propose/valid_rate/<type>"), unit),
        ("Solve accuracy", per_type("solve/accuracy/<type>"), unit),
        (
            "Solve accuracy where copying the prompt cannot be right",
            per_type("solve/copy_proof_accuracy/<type>")[:2],
            unit,
        ),
        ("Proposer learnability", per_type("propose/learnability/<type>"), unit),
        (
            "Copy shortcut (solid: answers that copy the prompt, dashed: tasks whose output is their input)",
            copy,
            unit,
        ),
        ("Buffer size (tasks)", per_type("buffer/size/<type>"), None),
        ("Policy loss", plain(["train/loss"]), None),
        ("Gradient norm (before clipping)", plain(["train/grad_norm"]), None),
        ("Entropy and clip fraction", plain(["train/entropy", "train/clip_frac"]), None),
        ("Seconds per phase", plain([n for n in METRICS if n.startswith("perf/seconds/")]), None),
        ("Generation throughput (tokens/s)", plain(["perf/tokens_per_s"]), None),
        ("In-training evaluation (accuracy)", plain(evals), unit),
        ("Safety flag rate", plain([f"safety/flag_rate/{r.value}" for r in ROLES]), unit),
    ]


def series_points(steps: Sequence[dict[str, Any]], metric: str) -> list[tuple[float, float]]:
    pts = []
    for row in steps:
        v = row.get(metric)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            pts.append((float(row["step"]), float(v)))
    return pts


def _charts(steps: Sequence[dict[str, Any]]) -> str:
    span = (float(steps[0]["step"]), float(steps[-1]["step"])) if steps else None  # one x axis for all charts
    figures = [
        figure(title, {s: series_points(steps, s.metric) for s in series}, y_range, span)
        for title, series, y_range in _chart_specs(steps)
    ]
    if not any(figures):
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
    cfg = read_toml(run_dir / CONFIG_FILE)
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
        shown = fmt_number(v) if isinstance(v, float) else str(v)
        cells.append(f"<tr><td><code>{_e(key)}</code></td><td class='num'>{_e(shown)}</td>"
                     f"<td>{_e(describe(key) or '')}</td></tr>")  # fmt: skip
    head = "<tr><th>metric</th><th>value</th><th>meaning</th></tr>"
    return f"<section><h2>Last step ({row['step']})</h2><table>{head}{''.join(cells)}</table></section>"


def read_toml(path: Path) -> dict[str, Any]:
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


def _store(path: Path) -> str:
    """The browser and the proposal views, or a line saying why the store could not be read."""
    data = read_store(path)
    if data.error:
        return f"<section><h2>Task store</h2><p>{_e(data.error)}</p></section>"
    parts = [
        browser_section(data.tasks, data.rollouts, data.n_rollouts),
        difficulty_section(data),
        diversity_section(data),
        safety_section(data),
    ]
    return "".join(parts)


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
.swatch{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:middle}
"""


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}{BROWSER_CSS}</style></head>"
        f"<body><h1>{_e(title)}</h1>\n{body}\n</body></html>\n"
    )


__all__ = ["Series", "page", "read_toml", "series_points", "svg_line_chart", "write_report"]
