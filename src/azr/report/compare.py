"""Several runs in one HTML page, for recipe tuning: ``write_comparison([RUN_A, RUN_B, ...], out)``.

Each chart is one metric with one colour per run (the first run solid, the others in the palette's order): the
rewards per group, proposal and solve rates, learnability, buffer sizes, the update's loss, gradient norm and
entropy, the step time, the safety flag rates and every ``eval/*`` metric any run logged. A table gives each
run's last and best evaluation scores, and another the config keys whose values differ between the runs.

Runs are read like :func:`azr.report.run.write_report` reads one (``metrics.jsonl``, ``config.toml``); a run without
a metric is left out of that chart. Not covered: the stores (tasks, rollouts): open each run's own report.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from azr.config import RENAMED_KEYS
from azr.errors import AzrError
from azr.fsutil import atomic_write_text
from azr.metrics import expand, merge_steps, read_metrics
from azr.report.charts import PALETTE, Series, figure, fmt_number
from azr.report.run import CONFIG_FILE, page, read_toml, series_points

__all__ = ["COMPARED", "COMPARE_FILE", "write_comparison"]

COMPARE_FILE = "compare.html"
COMPARED = (
    "reward/<type>/<role>",
    "propose/valid_rate/<type>",
    "solve/accuracy/<type>",
    "propose/learnability/<type>",
    "buffer/size/<type>",
    "train/loss",
    "train/grad_norm",
    "train/entropy",
    "perf/seconds/step",
    "safety/flag_rate/<role>",
)
"""Metric templates charted for every run (each concrete name gets its own chart)."""
_e = html.escape


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write the comparison of ``run_dirs`` to ``out`` (default: ``compare.html`` in the first run directory)."""
    runs = [Path(r) for r in run_dirs]
    if len(runs) < 2:
        raise AzrError("a comparison needs at least two run directories")
    steps = {}
    for r in runs:
        if not r.is_dir():
            raise AzrError(f"run directory not found: {r}")
        steps[r] = merge_steps(read_metrics(r))
        if not steps[r]:
            raise AzrError(f"{r} has no metrics.jsonl rows yet: nothing to compare")
    labels = _labels(runs)
    colors = {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(runs)}
    body = [_legend(runs, labels, colors, steps), _evals(runs, labels, steps), _config_diff(runs, labels),
            _charts(runs, labels, colors, steps)]  # fmt: skip
    target = Path(out) if out is not None else runs[0] / COMPARE_FILE
    return atomic_write_text(target, page("azr comparison: " + " vs ".join(labels.values()), "\n".join(body)))


def _labels(runs: list[Path]) -> dict[Path, str]:
    """Each run's directory name, or its path where two names collide."""
    names = [r.resolve().name for r in runs]
    return {r: (n if names.count(n) == 1 else str(r)) for r, n in zip(runs, names, strict=True)}


def _legend(runs: list[Path], labels: dict, colors: dict, steps: dict) -> str:
    rows = "".join(
        f'<tr><td><i class="swatch" style="background:{colors[r]}"></i>{_e(labels[r])}</td>'
        f"<td>{_e(str(r.resolve()))}</td><td class='num'>{steps[r][-1]['step']}</td></tr>"
        for r in runs
    )
    return f"<section><h2>Runs</h2><table><tr><th>run</th><th>directory</th><th>last step</th></tr>{rows}</table></section>"


def _evals(runs: list[Path], labels: dict, steps: dict) -> str:
    names = sorted({k for r in runs for row in steps[r] for k in row if k.startswith("eval/")})
    if not names:
        return (
            "<section><h2>Evaluation</h2><p>No run logged eval/* metrics (logging.eval_every).</p></section>"
        )
    head = "<tr><th>metric</th>" + "".join(f"<th>{_e(labels[r])}: last (best)</th>" for r in runs) + "</tr>"
    rows = []
    for name in names:
        cells = []
        for r in runs:
            pts = series_points(steps[r], name)
            cells.append(
                f"<td class='num'>{fmt_number(pts[-1][1])} ({fmt_number(max(v for _, v in pts))}, step "
                f"{int(max(pts, key=lambda p: p[1])[0])})</td>"
                if pts
                else "<td>-</td>"
            )
        rows.append(f"<tr><td><code>{_e(name)}</code></td>{''.join(cells)}</tr>")
    return f"<section><h2>Evaluation</h2><table>{head}{''.join(rows)}</table></section>"


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v}
    return out


def _config_diff(runs: list[Path], labels: dict) -> str:
    flat = {r: _flat(read_toml(r / CONFIG_FILE)) for r in runs}
    # A key renamed since a run started is compared under its new name.
    configs = {r: {RENAMED_KEYS.get(k, k): v for k, v in c.items()} for r, c in flat.items()}
    keys = sorted({k for c in configs.values() for k in c})
    differ = [k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1]
    if not differ:
        return "<section><h2>Config differences</h2><p>None: the runs' config.toml files agree.</p></section>"
    head = "<tr><th>key</th>" + "".join(f"<th>{_e(labels[r])}</th>" for r in runs) + "</tr>"
    rows = "".join(
        f"<tr><td><code>{_e(k)}</code></td>"
        + "".join(f"<td>{_e(repr(configs[r].get(k, '-')))}</td>" for r in runs)
        + "</tr>"
        for k in differ
    )
    return f"<section><h2>Config differences</h2><table>{head}{rows}</table></section>"


def _charts(runs: list[Path], labels: dict, colors: dict, steps: dict) -> str:
    evals = sorted({k for r in runs for row in steps[r] for k in row if k.startswith("eval/")})
    names = [n for t in COMPARED for n in expand(t)] + evals
    figures = []
    for name in names:
        points = {Series(labels[r], name, colors[r]): series_points(steps[r], name) for r in runs}
        unit = (0.0, 1.0) if _is_rate(name) else None
        figures.append(figure(name, points, unit))
    shown = "".join(f for f in figures if f)
    return f"<section><h2>Curves</h2><div class='charts'>{shown}</div></section>" if shown else ""


def _is_rate(name: str) -> bool:
    return name.startswith(("eval/", "safety/flag_rate/")) or "_rate/" in name or "/accuracy/" in name
