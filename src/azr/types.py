"""Small shared value types: task types, roles and the task record.

Every other module may import this one; it imports nothing from azr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class TaskType(StrEnum):
    """The three Absolute Zero reasoning modes."""

    DEDUCTION = "deduction"  # program + input -> predict the output
    ABDUCTION = "abduction"  # program + output -> find an input
    INDUCTION = "induction"  # input/output pairs + message -> write the program


class Role(StrEnum):
    """The two roles the one model plays."""

    PROPOSE = "propose"
    SOLVE = "solve"


TASK_TYPES: tuple[TaskType, ...] = (TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION)
ROLES: tuple[Role, ...] = (Role.PROPOSE, Role.SOLVE)
GROUPS: tuple[tuple[TaskType, Role], ...] = tuple((t, r) for t in TASK_TYPES for r in ROLES)
"""The six (task type x role) groups that TRR++ normalises separately, in a fixed order."""


def group_name(task_type: TaskType, role: Role) -> str:
    """Stable name of a group, e.g. ``"deduction/propose"`` (used in metrics and logs)."""
    return f"{task_type.value}/{role.value}"


@dataclass(frozen=True)
class Task:
    """One validated task in a buffer.

    ``inputs`` are argument texts exactly as they go between the parentheses of a call (``"[1, 2], 'a'"``);
    ``outputs`` are ``repr`` of the results, computed by the executor, never by the model. Deduction and
    abduction tasks have one input and one output; induction tasks have several plus a ``message``.
    """

    type: TaskType
    program: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    message: str = ""
    id: int | None = None
    step: int = 0
    origin: str = "proposal"  # "seed" (a seed task), "proposal" or "imported"
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def input(self) -> str:
        """The single input of a deduction/abduction task."""
        return self.inputs[0]

    @property
    def output(self) -> str:
        """The single output of a deduction/abduction task."""
        return self.outputs[0]
