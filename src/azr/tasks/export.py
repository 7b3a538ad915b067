"""Tasks as JSON lines: the export formats of ``azr tasks export`` (:meth:`azr.store.TaskStore.export_jsonl`).

- ``azr``: id, type, program, inputs, outputs, message, step, origin and the solve statistics;
- ``reference``: the reference implementation's seed-task format (``snippet``/``input``/``output`` for deduction
  and abduction, ``snippet``/``inputs``/``outputs``/``message`` for induction), which
  :func:`azr.tasks.seed_tasks.import_seed_tasks` reads back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from azr.fsutil import atomic_write_text
from azr.types import Task, TaskType

EXPORT_FORMATS = ("azr", "reference")


def task_to_dict(task: Task) -> dict[str, object]:
    """A task as plain JSON-ready data (the export format)."""
    return {
        "id": task.id,
        "type": str(task.type),
        "program": task.program,
        "inputs": list(task.inputs),
        "outputs": list(task.outputs),
        "message": task.message,
        "step": task.step,
        "origin": task.origin,
        **task.extra,
    }


def task_to_reference(task: Task) -> dict[str, object]:
    """A task in the reference's seed tasks format (JSONL; imports are already inside the snippet)."""
    if task.type is TaskType.INDUCTION:
        return {"snippet": task.program, "inputs": list(task.inputs), "outputs": list(task.outputs),
                "message": task.message, "imports": []}  # fmt: skip
    return {"snippet": task.program, "input": task.input, "output": task.output, "imports": []}


def write_jsonl(tasks: Iterable[Task], path: str | Path, fmt: str = "azr") -> int:
    """Write ``tasks`` to ``path`` as JSON lines in ``fmt``, atomically (a reader never sees half a file); return
    how many. ValueError for an unknown format."""
    converters: dict[str, Callable[[Task], dict[str, object]]] = {
        "azr": task_to_dict,
        "reference": task_to_reference,
    }
    if fmt not in converters:
        raise ValueError(f"unknown export format {fmt!r}: {' or '.join(EXPORT_FORMATS)}")
    lines = [json.dumps(converters[fmt](t), ensure_ascii=False) for t in tasks]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)
