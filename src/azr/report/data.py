"""What the HTML report reads from a run's ``tasks.sqlite``: every task and the newest rollouts, as plain dicts.

The store is opened read-only (``mode=ro``; the running trainer keeps writing in WAL mode) and read defensively:
a missing table or column leaves that field out, so stores of every schema version read, and a store another
process is writing reads as of its last commit. Replies are split into reasoning and answer
(:func:`azr.safety.split_reply`) and long texts are clipped so a long run stays a file a browser opens quickly.
Prompts are not included (they are long and mostly shared); a solve rollout points at its task by ``task``.

Not covered: metrics (``azr.metrics.read_metrics``) and anything the report draws.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azr.safety import split_reply

__all__ = ["MAX_ROLLOUTS", "StoreData", "read_store"]

MAX_ROLLOUTS = 20_000
"""The newest rollouts the report embeds; older ones are counted, not shown."""
_CLIP = 6_000

_TASK_COLUMNS = ("id", "type", "step", "origin", "program", "inputs", "outputs", "message", "n_solve_attempts",
                 "n_solved", "evicted_at")  # fmt: skip
_ROLLOUT_COLUMNS = ("id", "step", "role", "type", "parse_status", "outcome", "reward", "advantage", "task_id",
                    "reply", "flags")  # fmt: skip


@dataclass
class StoreData:
    """The store as the report needs it. ``columns`` holds what each table has (empty: no such table)."""

    tasks: list[dict[str, Any]] = field(default_factory=list)
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    n_rollouts: int = 0
    columns: dict[str, set[str]] = field(default_factory=dict)
    error: str = ""


def read_store(path: Path) -> StoreData:
    """Read ``path`` (a ``tasks.sqlite``) read-only; an unreadable file gives a :class:`StoreData` with ``error``."""
    data = StoreData()
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as e:
        data.error = f"could not open {path.name}: {e}"
        return data
    try:
        for table in ("tasks", "rollouts"):
            data.columns[table] = {r[1] for r in con.execute(f'PRAGMA table_info("{table}")')}
        data.tasks = [_task(r) for r in _rows(con, "tasks", _TASK_COLUMNS, data.columns["tasks"], None)]
        if data.columns["rollouts"]:
            data.n_rollouts = con.execute('SELECT COUNT(*) FROM "rollouts"').fetchone()[0]
        rows = _rows(con, "rollouts", _ROLLOUT_COLUMNS, data.columns["rollouts"], MAX_ROLLOUTS)
        data.rollouts = [_rollout(r) for r in reversed(rows)]
    except sqlite3.Error as e:
        data.error = f"could not read {path.name}: {e}"
    finally:
        con.close()
    return data


def _rows(
    con: sqlite3.Connection, table: str, want: tuple[str, ...], have: set[str], newest: int | None
) -> list[dict[str, Any]]:
    """The columns of ``want`` that ``table`` has, in rowid order, or the ``newest`` rows newest first."""
    pick = [c for c in want if c in have]
    if not pick:
        return []
    columns = ", ".join(f'"{c}"' for c in pick)  # names from the constants above, never from the file
    sql = f'SELECT {columns} FROM "{table}"'
    sql += f" ORDER BY rowid DESC LIMIT {int(newest)}" if newest else " ORDER BY rowid"
    return [dict(zip(pick, r, strict=True)) for r in con.execute(sql)]


def _clip(text: Any, n: int = _CLIP) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= n else s[:n] + f"… [{len(s) - n} more characters]"


def _json_list(value: Any) -> list[Any]:
    if value is None:
        return []
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return [str(value)]
    return parsed if isinstance(parsed, list) else [parsed]


def _task(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row.get("id"),
        "type": str(row.get("type", "?")),
        "step": row.get("step"),
        "origin": str(row.get("origin", "")),
        "program": _clip(row.get("program")),
        "inputs": [_clip(x, 500) for x in _json_list(row.get("inputs"))][:20],
        "outputs": [_clip(x, 500) for x in _json_list(row.get("outputs"))][:20],
        "message": _clip(row.get("message"), 1000),
        "attempts": row.get("n_solve_attempts"),
        "solved": row.get("n_solved"),
        "evicted": row.get("evicted_at"),
    }


def _rollout(row: dict[str, Any]) -> dict[str, Any]:
    think, answer = split_reply(str(row.get("reply") or ""))
    answer = answer.removeprefix("<answer>").removesuffix("</answer>").strip()
    flags = [f for f in _json_list(row.get("flags")) if isinstance(f, dict)]
    return {
        "id": row.get("id"),
        "step": row.get("step"),
        "role": str(row.get("role", "?")),
        "type": str(row.get("type", "?")),
        "status": str(row.get("parse_status", "")),
        "outcome": row.get("outcome"),
        "reward": _number(row.get("reward")),
        "adv": _number(row.get("advantage")),
        "task": row.get("task_id"),
        "think": _clip(think),
        "answer": _clip(answer),
        "flags": [{k: _clip(v, 200) for k, v in f.items()} for f in flags],
    }


def _number(v: Any) -> float | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None  # JSON has no NaN
