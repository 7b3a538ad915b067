"""The report's views of what the model proposes: difficulty, diversity, duplicates and safety flags.

All of it is computed from the store (:class:`azr.report.data.StoreData`), over step windows (at most
:data:`WINDOWS` of equal width), per task type:

- **difficulty**: the solve rate of each proposed task so far (``n_solved / n_solve_attempts`` in ``tasks``, by
  the step it was proposed), its distribution, the share that is learnable (solved sometimes, not always), and the
  learnability reward of valid proposals (the proposer's reward in the rollout log);
- **diversity**: program length, distinct AST node types and distinct program *shapes* (the sequence of AST node
  types with names and constants left out, so ``x + 1`` and ``y + 2`` are one shape) per window;
- **duplicates**: valid proposals whose task was stored already (rollout ``outcome`` ``duplicate``; stores older
  than schema 3 did not record it);
- **safety**: the detector's flags and the sandbox signals of the rollouts, counted and listed.

A missing column leaves its view out with a line saying why. Everything shown is escaped here.
"""

from __future__ import annotations

import ast
import html
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from azr.report.charts import TYPE_COLOR, Series, figure
from azr.report.data import StoreData
from azr.safety import CATEGORIES, SANDBOX_SIGNALS

__all__ = ["WINDOWS", "difficulty_section", "diversity_section", "program_shape", "safety_section"]

WINDOWS = 12
_e = html.escape
_TYPES = tuple(TYPE_COLOR)
_UNIT = (0.0, 1.0)


def program_shape(program: str) -> tuple[frozenset[str], str] | None:
    """(AST node types, shape) of a program, or None if it does not parse. The shape is the walk order of the
    node types, so programs that differ only in names and constants share it."""
    try:
        nodes = [type(n).__name__ for n in ast.walk(ast.parse(program))]
    except (SyntaxError, ValueError, RecursionError):
        return None
    return frozenset(nodes), " ".join(nodes)


def _windows(steps: Iterable[Any]) -> Callable[[int], int]:
    """A function mapping a step to the first step of its window."""
    ints = [s for s in steps if isinstance(s, int)]
    lo, hi = (min(ints), max(ints)) if ints else (0, 0)
    width = max(1, math.ceil((hi - lo + 1) / WINDOWS))
    return lambda s: lo + (s - lo) // width * width


def _by_window(rows: list[dict[str, Any]], value: Callable[[list[dict[str, Any]]], float | None]) -> dict:
    """{type: [(window, value)]} over rows that have an int step."""
    window = _windows(r["step"] for r in rows)
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if isinstance(r.get("step"), int):
            groups[r["type"], window(r["step"])].append(r)
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (kind, w), members in sorted(groups.items(), key=lambda kv: kv[0][1]):
        v = value(members)
        if v is not None:
            out[kind].append((float(w), float(v)))
    return out


def _per_type(title: str, points: dict, y_range: tuple[float, float] | None = None) -> str:
    series = {Series(k, title, TYPE_COLOR.get(k, "#555")): points[k] for k in _TYPES if points.get(k)}
    return figure(title, series, y_range)


def _rate(t: dict[str, Any]) -> float | None:
    return t["solved"] / t["attempts"] if t.get("attempts") and t.get("solved") is not None else None


def _bucket(r: float | None) -> str:
    if r is None:
        return "not attempted"
    return (
        "never solved"
        if r == 0
        else "always solved"
        if r == 1
        else "solved < half"
        if r < 0.5
        else "solved ≥ half"
    )


def _proposed(data: StoreData) -> list[dict[str, Any]]:
    tasks = [t for t in data.tasks if t["type"] in _TYPES]
    return [t for t in tasks if t["origin"] == "proposal"] or tasks


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def difficulty_section(data: StoreData) -> str:
    tasks = _proposed(data)
    if not tasks or "n_solved" not in data.columns.get("tasks", set()):
        return ""
    rates = _by_window(tasks, lambda ts: _mean([r for t in ts if (r := _rate(t)) is not None]))
    learnable = _by_window(
        tasks, lambda ts: _mean([float(0 < r < 1) for t in ts if (r := _rate(t)) is not None])
    )
    valid = [r for r in data.rollouts if r["role"] == "propose" and r["outcome"] in ("valid", "duplicate")]
    quartiles = _learnability_quartiles(valid)
    figures = [
        _per_type("Mean solve rate of proposed tasks, by the step proposed", rates, _UNIT),
        _per_type("Share of proposed tasks that are learnable (solved sometimes)", learnable, _UNIT),
        figure("Learnability reward of valid proposals (median, quartiles dashed)", quartiles, _UNIT),
    ]
    buckets = ("not attempted", "never solved", "solved < half", "solved ≥ half", "always solved")
    counts = {k: Counter(_bucket(_rate(t)) for t in tasks if t["type"] == k) for k in _TYPES}
    head = "<tr><th>type</th>" + "".join(f"<th>{_e(b)}</th>" for b in buckets) + "</tr>"
    body = "".join(
        f"<tr><td>{k}</td>" + "".join(f"<td class='num'>{counts[k][b]}</td>" for b in buckets) + "</tr>"
        for k in _TYPES
        if counts[k]
    )
    return (
        "<section><h2>Difficulty of the proposals</h2>"
        "<p>Solve rate: the real solves each task has had so far (from the buffer statistics).</p>"
        f"<table>{head}{body}</table><div class='charts'>{''.join(f for f in figures if f)}</div></section>"
    )


def _learnability_quartiles(valid: list[dict[str, Any]]) -> dict[Series, list[tuple[float, float]]]:
    window = _windows(r["step"] for r in valid)
    groups: dict[int, list[float]] = defaultdict(list)
    for r in valid:
        if isinstance(r.get("step"), int) and r["reward"] is not None:
            groups[window(r["step"])].append(r["reward"])
    out: dict[Series, list[tuple[float, float]]] = {}
    for i, (label, dashed) in enumerate(
        (("25th percentile", True), ("median", False), ("75th percentile", True))
    ):
        pts = [(float(w), _quantiles(v)[i]) for w, v in sorted(groups.items())]
        out[Series(label, label, "#444", dashed)] = pts
    return out


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return (values[0],) * 3
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def diversity_section(data: StoreData) -> str:
    tasks = [t | {"_shape": program_shape(t["program"])} for t in _proposed(data)]
    tasks = [t for t in tasks if t["_shape"] is not None]
    if not tasks:
        return ""
    length = _by_window(tasks, lambda ts: statistics.median(len(t["program"]) for t in ts))
    node_types = _by_window(tasks, lambda ts: len(frozenset().union(*(t["_shape"][0] for t in ts))))
    shapes = _by_window(tasks, lambda ts: len({t["_shape"][1] for t in ts}) / len(ts))
    figures = [
        _per_type("Median program length (characters)", length),
        _per_type("Distinct AST node types per window", node_types),
        _per_type("Distinct program shapes per task, per window", shapes, _UNIT),
    ]
    return (
        "<section><h2>Diversity of the proposals</h2><p>Windows of steps; a shape is a program with its names "
        f"and constants left out.</p><div class='charts'>{''.join(f for f in figures if f)}</div>"
        + _duplicates(data)
        + "</section>"
    )


def _duplicates(data: StoreData) -> str:
    if "outcome" not in data.columns.get("rollouts", set()):
        return "<p>Duplicate proposals: not recorded in this store (written before schema version 3).</p>"
    valid = [r for r in data.rollouts if r["role"] == "propose" and r["outcome"] in ("valid", "duplicate")]
    if not valid:
        return "<p>Duplicate proposals: no valid proposals logged yet.</p>"
    share = _by_window(valid, lambda rs: _mean([float(r["outcome"] == "duplicate") for r in rs]))
    rows = []
    for k in _TYPES:
        n = [r for r in valid if r["type"] == k]
        d = sum(r["outcome"] == "duplicate" for r in n)
        if n:
            rows.append(f"<tr><td>{k}</td><td class='num'>{len(n)}</td><td class='num'>{d}</td>"
                        f"<td class='num'>{d / len(n):.0%}</td></tr>")  # fmt: skip
    chart = _per_type("Share of valid proposals that duplicate a stored task", share, _UNIT)
    return (
        "<h3>Duplicates</h3><table><tr><th>type</th><th>valid proposals</th><th>duplicates</th><th>share</th></tr>"
        f"{''.join(rows)}</table><div class='charts'>{chart}</div>"
    )


def safety_section(data: StoreData) -> str:
    if not data.rollouts:
        return ""
    if "flags" not in data.columns.get("rollouts", set()):
        return "<section><h2>Safety monitor</h2><p>This store was written before the safety monitor.</p></section>"
    flagged = [(r, f) for r in data.rollouts for f in r["flags"]]
    counts = Counter((f.get("source", "detector"), f.get("category", "?")) for _, f in flagged)
    kinds = [("detector", c) for c in CATEGORIES] + [("sandbox", s) for s in SANDBOX_SIGNALS]
    kinds += sorted(set(counts) - set(kinds))
    rows = "".join(
        f"<tr><td>{_e(src)}</td><td>{_e(cat)}</td><td class='num'>{counts[src, cat]}</td></tr>"
        for src, cat in kinds
    )
    listed = "".join(
        f"<tr><td class='num'>{_e(str(r['step']))}</td><td>{_e(r['type'])}/{_e(r['role'])}</td>"
        f"<td>{_e(str(f.get('source', '')))}</td><td>{_e(str(f.get('category', '')))}</td>"
        f"<td>{_e(str(f.get('rule', '')))}</td><td>{_e(str(f.get('part', '')))}</td>"
        f"<td><code>{_e(str(f.get('excerpt', '')))}</code></td></tr>"
        for r, f in reversed(flagged[-100:])
    )
    table = (
        "<table><tr><th>step</th><th>group</th><th>source</th><th>category</th><th>rule</th><th>part</th>"
        f"<th>excerpt</th></tr>{listed}</table>"
        if listed
        else "<p>No flags.</p>"
    )
    return (
        f"<section id='safety'><h2>Safety monitor</h2><p>Over the {len(data.rollouts)} rollouts included; "
        "browse them with the outcome filter <a href='#rollouts.outcome=flagged'>flagged</a> or "
        "<a href='#rollouts.outcome=sandbox%20signal'>sandbox signal</a>.</p>"
        f"<table><tr><th>source</th><th>category</th><th>flags</th></tr>{rows}</table>"
        f"<h3>Newest flags</h3>{table}</section>"
    )
