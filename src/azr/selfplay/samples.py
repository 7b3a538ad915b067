"""The records a self-play step hands on: one :class:`Sample` per reply and the step's :class:`StepResult`.

They live apart from the step (:mod:`azr.selfplay.step`) so that what reads them (the step's log,
:mod:`azr.selfplay.step_log`; the loop; the distributed gather) imports the records and not the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from azr.rollout.base import Completion
from azr.safety import Flag
from azr.tasks.parsing import ParseReason
from azr.types import Role, Task, TaskType

__all__ = ["Sample", "StepResult"]


@dataclass
class Sample:
    """One generated reply that enters the policy update."""

    task_type: TaskType
    role: Role
    prompt: str
    completion: Completion
    parsed: Any  # a parsed proposal/solution, or a parse failure with a .reason
    format_ok: bool
    success: bool = False  # proposer: the task was valid; solver: the answer was correct
    role_reward: float = 0.0  # learnability (proposer) or accuracy (solver) before the format composite
    reward: float = 0.0
    advantage: float = 0.0
    task: Task | None = None
    temperature: float = 1.0  # what the reply was sampled at; the update scores it at the same temperature
    # Outside TRR++: "mc", a correct Monte-Carlo solve (solve_nll_coef); "trace", a sandbox-written solve (trace_nll_coef)
    auxiliary: str = ""
    verdict: str = ""  # proposer: valid, duplicate (valid, already stored) or the validation reject reason
    flags: list[Flag] = field(default_factory=list)  # the safety monitor's flags and sandbox signals

    @property
    def group(self) -> tuple[TaskType, Role]:
        return (self.task_type, self.role)

    @property
    def valid_task(self) -> Task:
        """The task of an accepted proposal or of a solve; a ValueError on a sample that has none."""
        if self.task is None:
            raise ValueError(f"this {self.role} sample of {self.task_type} has no task")
        return self.task

    @property
    def parser_error(self) -> bool:
        """The parser itself failed on this reply (a bug in azr, not a format failure of the model)."""
        return getattr(self.parsed, "reason", None) == ParseReason.PARSER_ERROR


@dataclass
class StepResult:
    step: int
    samples: list[Sample]
    new_tasks: list[Task]
    metrics: dict[str, float] = field(default_factory=dict)
