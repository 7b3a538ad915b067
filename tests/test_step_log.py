"""azr.selfplay.step_log.copy_metrics: the copy shortcut as it forms in training."""

from __future__ import annotations

import pytest

from azr.rollout import Completion
from azr.selfplay.samples import Sample
from azr.selfplay.step_log import copy_metrics
from azr.tasks.parsing import ParsedSolution, ParseFailure, ParseReason
from azr.types import Role, Task, TaskType

D, A = TaskType.DEDUCTION, TaskType.ABDUCTION
REV = "def f(s):\n    return s[::-1]"


def _sample(kind: TaskType, role: Role, task: Task, answer: str | None, success: bool = False) -> Sample:
    parsed = ParsedSolution(kind, answer) if answer is not None else ParseFailure(ParseReason.NO_ANSWER_TAG)
    reply = Completion("", [], [], [], "stop")
    return Sample(kind, role, "", reply, parsed, answer is not None, success=success, task=task)


def test_copy_rates_of_solves_and_proposals():
    palindrome = Task(D, REV, ("'aba'",), ("'aba'",))
    plain = Task(D, REV, ("'abc'",), ("'cba'",))
    samples = [
        _sample(D, Role.SOLVE, palindrome, "'aba'", success=True),  # copies the input (and is right)
        _sample(D, Role.SOLVE, plain, "'abc'"),  # copies the input (and is wrong)
        _sample(D, Role.SOLVE, plain, "'cba'", success=True),  # reasons
        _sample(D, Role.SOLVE, plain, None),  # no answer: not counted in the copy rate
        _sample(A, Role.SOLVE, Task(A, REV, ("'abc'",), ("'cba'",)), "'cba'"),  # copies the shown output
        _sample(D, Role.PROPOSE, palindrome, None, success=True),
        _sample(D, Role.PROPOSE, plain, None, success=True),
        _sample(D, Role.PROPOSE, plain, None, success=False),  # invalid: not a task
    ]
    m = copy_metrics(samples)
    assert m["solve/copy_rate/deduction"] == pytest.approx(2 / 3)
    assert m["solve/copy_task_rate/deduction"] == pytest.approx(1 / 4)
    assert m["solve/copy_rate/abduction"] == 1.0 and m["solve/copy_task_rate/abduction"] == 0.0
    assert m["propose/copy_task_rate/deduction"] == 0.5
    # the three solves of the copy-proof task: one right (the palindrome's copy does not count)
    assert m["solve/copy_proof_accuracy/deduction"] == pytest.approx(1 / 3)
    assert m["solve/copy_proof_accuracy/abduction"] == 0.0
    assert "propose/copy_task_rate/abduction" not in m and not any("induction" in k for k in m)
