"""Seed tasks: the paper's identity triplet, and import of the reference's seed tasks files (JSONL).

Two reference formats are read (``../shared/data/azr_seeds/`` holds real files):

- ``*_seed_io.jsonl``: ``snippet``, ``input``, ``output``, ``imports`` (+ ``original_snippet``,
  ``composite_functions``, ``_input_type``, ...): one deduction/abduction triplet per row;
- ``*_code_f_seed_io.jsonl``: ``snippet``, ``inputs``, ``outputs``, ``message``, ``imports``: one induction task.

The files' outputs are never trusted (the reference truncates them and accepts non-deterministic programs): every
row is re-validated with our executor and the gold outputs are recomputed. The ``imports`` of a row are already
inside its ``snippet`` in every file seen; any that are missing are prepended.
"""

from __future__ import annotations

import ast
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azr.config import Config
from azr.errors import AzrError
from azr.seams import ExecutorLike, TaskStoreLike
from azr.tasks.parsing import ParsedProposal, normalize_input
from azr.tasks.validate import same_literal, validate_proposals
from azr.types import Task, TaskType

__all__ = [
    "IDENTITY_INDUCTION_INPUTS",
    "IDENTITY_PROGRAM",
    "ImportReport",
    "SeedTaskRow",
    "identity_seed_tasks",
    "import_seed_tasks",
    "load_seed_tasks_file",
    "resolve_seed_tasks_file",
]

IDENTITY_PROGRAM = "def f(a):\n    return a"
IDENTITY_INPUT = '"Hello world"'
IDENTITY_MESSAGE = "returns its input"
IDENTITY_INDUCTION_INPUTS = (
    '"Hello world"',
    "42",
    "[3, 1, 2]",
    "{'key': 'value', 'n': 0}",
    "(1.5, -2, None)",
    "True",
)


@dataclass(frozen=True)
class SeedTaskRow:
    """One row of a seed tasks file. ``problem`` is non-empty when the row could not be read."""

    line: int
    program: str = ""
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    message: str = ""
    induction: bool = False
    problem: str = ""


@dataclass
class ImportReport:
    """What :func:`import_seed_tasks` did. ``rejected`` counts rows by reason; ``duplicates`` counts tasks already
    stored (or repeated earlier in the file), a subset of ``accepted``; ``added`` counts new tasks per type (an io row adds two: deduction and
    abduction). ``output_differs`` counts accepted io rows whose recorded output differs from our gold output."""

    rows_read: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    added: Counter[str] = field(default_factory=Counter)
    output_differs: int = 0

    def summary(self) -> str:
        rej = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        add = ", ".join(f"{k} {v}" for k, v in sorted(self.added.items())) or "none"
        return (
            f"rows {self.rows_read}, accepted {self.accepted}, rejected {sum(self.rejected.values())} ({rej}), "
            f"duplicates {self.duplicates}, added: {add}; recorded output differs from ours in {self.output_differs}"
        )


def _identity_outputs(inputs: tuple[str, ...]) -> tuple[str, ...]:
    # For the identity the output is the argument itself; these inputs are plain literals.
    return tuple(repr(ast.literal_eval(i)) for i in inputs)


def identity_seed_tasks(executor: ExecutorLike | None = None, *, step: int = 0) -> list[Task]:
    """The paper's bootstrap: ``def f(a): return a`` on "Hello world" as a deduction and an abduction triplet,
    plus an induction task with six varied inputs and the message "returns its input".

    With an executor the outputs are computed by it (``validate_many``); without one they are the ``repr`` of
    the literal inputs, which is what the identity returns.
    """
    inputs = IDENTITY_INDUCTION_INPUTS
    if executor is not None:
        results = executor.validate_many([(IDENTITY_PROGRAM, i) for i in inputs])
        values = [r.value if r.ok else None for r in results]
        bad = [i for i, v in zip(inputs, values, strict=True) if v is None]
        if bad:
            raise AzrError(f"the executor failed the identity seed tasks on {bad}: check `azr sandbox`")
        outputs = tuple(v for v in values if v is not None)
    else:
        outputs = _identity_outputs(inputs)
    ins, outs = (IDENTITY_INPUT,), (outputs[0],)
    return [
        Task(TaskType.DEDUCTION, IDENTITY_PROGRAM, ins, outs, "", None, step, "seed"),
        Task(TaskType.ABDUCTION, IDENTITY_PROGRAM, ins, outs, "", None, step, "seed"),
        Task(TaskType.INDUCTION, IDENTITY_PROGRAM, inputs, outputs, IDENTITY_MESSAGE, None, step, "seed"),
    ]


def _row(line: int, data: Any) -> SeedTaskRow:
    if not isinstance(data, dict) or not isinstance(data.get("snippet"), str):
        return SeedTaskRow(line, problem="malformed")
    program = data["snippet"]
    imports = [i for i in data.get("imports") or [] if isinstance(i, str) and i.strip() not in program]
    if imports:
        program = "\n".join(i.strip() for i in imports) + "\n\n" + program
    if "inputs" in data:
        inputs, outputs = data.get("inputs"), data.get("outputs") or []
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            return SeedTaskRow(line, program, problem="malformed")
        outs = tuple(str(o) for o in outputs)
        return SeedTaskRow(line, program, tuple(inputs), outs, str(data.get("message") or ""), True)
    if not isinstance(data.get("input"), str):
        return SeedTaskRow(line, program, problem="malformed")
    return SeedTaskRow(line, program, (data["input"],), (str(data.get("output", "")),))


def resolve_seed_tasks_file(path: str | Path) -> Path:
    """Where a configured seed tasks file is: as given (relative to the working directory), else, for a relative
    path, the file of that name shipped in ``azr/recipes/``; raises AzrError naming both places when neither exists."""
    from azr.config import RECIPES_DIR

    p = Path(path)
    if p.is_file():
        return p
    shipped = RECIPES_DIR / p.name
    if not p.is_absolute() and shipped.is_file():
        return shipped
    raise AzrError(
        f"seed tasks file not found: {p} (paths are relative to the working directory, "
        f"or name a file in {RECIPES_DIR})"
    )


def load_seed_tasks_file(path: str | Path) -> list[SeedTaskRow]:
    """Read a seed tasks file (JSONL) in either reference format; unreadable rows come back with ``problem`` set."""
    p = Path(path)
    if not p.is_file():
        raise AzrError(f"seed tasks file not found: {p}")
    rows = []
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(_row(n, json.loads(line)))
            except json.JSONDecodeError:
                rows.append(SeedTaskRow(n, problem="bad_json"))
    return rows


def _proposal(row: SeedTaskRow) -> ParsedProposal | str:
    """The row as a proposal, or the reason it cannot be one."""
    kind = TaskType.INDUCTION if row.induction else TaskType.DEDUCTION
    inputs = tuple(i for i in (normalize_input(x) for x in row.inputs) if i is not None)
    if not row.induction and not inputs:
        return "bad_input"
    return ParsedProposal(kind, row.program, inputs, row.message)


def import_seed_tasks(
    executor: ExecutorLike,
    store: TaskStoreLike,
    path: str | Path,
    cfg: Config,
    *,
    step: int = 0,
    progress: Callable[[int, int], None] | None = None,
    batch: int = 64,
) -> ImportReport:
    """Validate every row of a seed tasks file with ``executor`` and add the accepted ones to ``store`` at ``step``.

    An io row becomes a deduction and an abduction task; an induction row one induction task (with at least
    ``selfplay.induction_min_valid`` distinct valid inputs). Rejected rows are counted by reason. ``progress`` is
    called with (rows done, rows total) after each batch.
    """
    rows = load_seed_tasks_file(path)
    report = ImportReport(rows_read=len(rows))
    for r in rows:
        if r.problem:
            report.rejected[r.problem] += 1
    good = [r for r in rows if not r.problem]
    for start in range(0, len(good), batch):
        chunk = good[start : start + batch]
        for kind in (TaskType.DEDUCTION, TaskType.INDUCTION):
            part = [r for r in chunk if r.induction == (kind is TaskType.INDUCTION)]
            _import_chunk(executor, store, part, kind, cfg, step, report)
        if progress is not None:
            progress(min(start + batch, len(good)) + len(rows) - len(good), len(rows))
    return report


def _import_chunk(
    executor: ExecutorLike,
    store: TaskStoreLike,
    rows: list[SeedTaskRow],
    kind: TaskType,
    cfg: Config,
    step: int,
    report: ImportReport,
) -> None:
    props: list[tuple[SeedTaskRow, ParsedProposal]] = []
    for r in rows:
        p = _proposal(r)
        if isinstance(p, str):
            report.rejected[p] += 1
        elif kind is not TaskType.INDUCTION and _stored(store, p):
            report.accepted += 1  # validated when it was first stored; no need to run it again
            report.duplicates += 1
        else:
            props.append((r, p))
    verdicts = validate_proposals(executor, kind, [p for _, p in props], cfg, step=step, origin="imported")
    for (row, _), v in zip(props, verdicts, strict=True):
        if v.task is None:
            report.rejected[str(v.reason)] += 1
            continue
        report.accepted += 1
        tasks = [v.task]
        if kind is not TaskType.INDUCTION:
            if row.outputs and not same_literal(row.outputs[0], v.task.output):
                report.output_differs += 1
            tasks.append(Task(TaskType.ABDUCTION, *_fields(v.task)))
        added = 0
        for t in tasks:
            n = store.add_tasks([t], step)
            if n:
                report.added[str(t.type)] += n
            added += n
        if not added:
            report.duplicates += 1


def _stored(store: TaskStoreLike, p: ParsedProposal) -> bool:
    probe = [Task(k, p.program, p.inputs, ()) for k in (TaskType.DEDUCTION, TaskType.ABDUCTION)]
    return all(store.contains(t) for t in probe)


def _fields(t: Task) -> tuple[str, tuple[str, ...], tuple[str, ...], str, None, int, str]:
    return (t.program, t.inputs, t.outputs, t.message, None, t.step, t.origin)
