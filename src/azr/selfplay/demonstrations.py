"""Worked demonstrations in self-play prompts (``selfplay.n_shots``) and their sandbox traces
(``selfplay.demo_trace``).

Demonstrations are buffer tasks of the prompt's type, drawn once per generation phase for each (type, role), so the
prompts of a group start with the same tokens and the backend and trainer compute that shared prefix once
(:mod:`azr.prefix`). A task never serves as its own demonstration. With ``demo_trace`` the deduction and abduction
solve demonstrations show, in their ``<think>``, a line-by-line trace of the call that the sandbox wrote
(``Executor.trace_many``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from azr.config import SelfPlayConfig
from azr.seams import ExecutorLike, TaskStoreLike
from azr.tasks.prompts import demo_reply, trace_think
from azr.types import Role, Task, TaskType

__all__ = ["Demonstrations"]


class Demonstrations:
    """This phase's demonstrations per (type, role), and a cache of sandbox traces by (program, input)."""

    def __init__(self, cfg: SelfPlayConfig, executor: ExecutorLike) -> None:
        self.cfg = cfg
        self.executor = executor
        self.phase: dict[tuple[TaskType, Role], list[Task]] = {}
        self.traces: dict[tuple[str, str], str | None] = {}

    def new_phase(self) -> None:
        self.phase.clear()

    def draw(
        self,
        kind: TaskType,
        role: Role,
        avoid: Sequence[Task | None],
        store: TaskStoreLike,
        rng: random.Random,
    ) -> None:
        """This phase's demonstrations for (kind, role), none of them a task of the phase (``avoid``) when the
        buffer has enough others: then every prompt of the group gets the same ones."""
        n = self.cfg.n_shots
        programs = {t.program for t in avoid if t is not None}
        pool = store.sample_references(kind, n + len(programs) + 1, rng)
        fresh = [t for t in pool if t.program not in programs]
        self.phase[kind, role] = fresh[:n] + [t for t in pool if t.program in programs]
        if self._traced(kind, role):
            self._trace(self.phase[kind, role])

    def for_task(
        self, kind: TaskType, role: Role, task: Task | None, store: TaskStoreLike, rng: random.Random
    ) -> list[Task]:
        """The demonstrations of a prompt about ``task`` (None: a proposal prompt); [] with ``n_shots = 0``."""
        n = self.cfg.n_shots
        if not n:
            return []
        if (kind, role) not in self.phase:
            self.draw(kind, role, (), store, rng)
        return [t for t in self.phase[kind, role] if task is None or t.program != task.program][:n]

    def thinks(self, kind: TaskType, role: Role, shots: Sequence[Task]) -> list[str | None]:
        """The demonstrations' ``<think>`` blocks: sandbox traces where ``demo_trace`` applies, else the default
        sentence (None)."""
        if not self._traced(kind, role):
            return []
        traces = [self.traces.get((t.program, t.input)) for t in shots]
        return [trace_think(kind, t, tr) if tr else None for t, tr in zip(shots, traces, strict=True)]

    def solve_replies(self, tasks: Sequence[tuple[TaskType, Task]]) -> list[str | None]:
        """The sandbox's own solve reply to each deduction or abduction task: its ``<think>`` holds the trace of the
        call (at most ``demo_trace`` lines), its answer the gold output or input (``algorithm.trace_nll_coef``).
        ``None`` where the task is an induction task or the sandbox wrote no trace (it failed or ran too long)."""
        traced = [t for kind, t in tasks if kind is not TaskType.INDUCTION]
        self._trace(traced)
        out: list[str | None] = []
        for kind, t in tasks:
            trace = self.traces.get((t.program, t.input)) if kind is not TaskType.INDUCTION else None
            out.append(demo_reply(kind, Role.SOLVE, t, think=trace_think(kind, t, trace)) if trace else None)
        return out

    def _traced(self, kind: TaskType, role: Role) -> bool:
        return bool(self.cfg.demo_trace) and role is Role.SOLVE and kind is not TaskType.INDUCTION

    def _trace(self, tasks: Sequence[Task]) -> None:
        """Run the not yet traced demonstrations under the sandbox's tracer, in one batch (a trace depends on the
        program and the input only)."""
        todo = list(
            dict.fromkeys((t.program, t.input) for t in tasks if (t.program, t.input) not in self.traces)
        )
        for key, trace in zip(todo, self.executor.trace_many(todo, self.cfg.demo_trace), strict=True):
            self.traces[key] = trace
