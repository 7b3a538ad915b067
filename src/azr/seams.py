"""The two seams the self-play step is built on, as structural types: the sandbox and the task store.

Self-play (``azr.selfplay``), task checking (``azr.tasks``) and the benchmark scorers depend on these Protocols,
never on the concrete classes, so a test can hand in a fake and another implementation (a remote sandbox, a store
shared between ranks) needs no subclassing. The concrete ones are :class:`azr.executor.Executor` and
:class:`azr.store.TaskStore`; :class:`azr.distributed.SharedStore` is the multi-process store.
``tests/test_seams.py`` checks that each concrete class satisfies its Protocol.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from azr.executor import ExecResult
    from azr.store import RolloutRow
    from azr.types import Task, TaskType


class ExecutorLike(Protocol):
    """What the trainer side asks of the sandbox. Every method takes many items and returns one typed result
    per item, in order; none of them raises for a bad program (that is a result, not an error)."""

    def run_jobs(
        self, jobs: list[dict[str, Any]], pins: list[int | None] | None = None
    ) -> list[list[ExecResult]]: ...

    def validate_many(self, items: Sequence[tuple[str, str]], entry: str = "f") -> list[ExecResult]: ...

    def check_abduction_many(
        self, items: Sequence[tuple[str, str, str]], entry: str = "f", *, literals_only: bool = True
    ) -> list[ExecResult]: ...

    def check_induction_many(
        self, items: Sequence[tuple[str, Sequence[str], Sequence[str]]], entry: str = "f"
    ) -> list[ExecResult]: ...

    def trace_many(self, items: Sequence[tuple[str, str]], max_lines: int = 12) -> list[str | None]: ...

    def close(self) -> None: ...


class TaskStoreLike(Protocol):
    """What self-play reads from and writes to the task buffers."""

    def add_tasks(self, tasks: Iterable[Task], step: int) -> int: ...

    def contains(self, task: Task) -> bool: ...

    def count(self, type: TaskType | str | None = None) -> int: ...

    def sample_references(
        self, type: TaskType | str, k: int, rng: random.Random, recency: bool = False
    ) -> list[Task]: ...

    def sample_for_solving(
        self, type: TaskType | str, n: int, step: int, rng: random.Random
    ) -> list[Task]: ...

    def record_solve_stats_many(self, stats: Iterable[tuple[int, int, int]]) -> None: ...

    def log_rollouts(self, rows: Iterable[RolloutRow | Mapping[str, object]]) -> int: ...
