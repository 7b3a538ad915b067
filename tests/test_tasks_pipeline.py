"""One task through the whole task layer with the real executor: reply -> parse -> validate -> store -> solve
prompt -> solver reply -> parse -> score, for the three task types."""

from __future__ import annotations

import dataclasses
import random

import pytest

from azr.config import Config
from azr.store import TaskStore
from azr.tasks.parsing import parse_proposal, parse_solution
from azr.tasks.prompts import build_prompt, split_induction
from azr.tasks.validate import score_solutions, validate_proposals
from azr.types import Role, TaskType

D, A, IND = TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION
PROG = "def f(xs, k):\n    return sorted(xs)[:k]"


def _answer(*blocks: tuple[str, str]) -> str:
    return "<think>ok</think>\n<answer>\n" + "\n".join(
        f"```{a}\n{b}\n```" for a, b in blocks
    )  # stop string cut


def _cfg(min_valid: int) -> Config:
    base = Config()
    return dataclasses.replace(
        base, selfplay=dataclasses.replace(base.selfplay, induction_min_valid=min_valid)
    )


@pytest.mark.parametrize("kind", [D, A])
def test_triplet_pipeline(executor, tmp_path, kind):
    proposal = parse_proposal(kind, _answer(("python", PROG), ("input", "[5, 1, 4, 2], 2")))
    (v,) = validate_proposals(executor, kind, [proposal], Config(), step=1)
    assert v.accepted and v.task.output == "[1, 2]"
    with TaskStore(tmp_path) as store:
        assert store.add_tasks([v.task], 1) == 1
        (task,) = store.sample_for_solving(kind, 1, 2, random.Random(0))
    prompt = build_prompt(kind, Role.SOLVE, task=task)
    assert PROG in prompt
    good = _answer(("output", "[1, 2]")) if kind is D else _answer(("input", "[2, 1, 9], 2"))
    bad = _answer(("output", "[1, 4]")) if kind is D else _answer(("input", "[2, 1, 9], 1"))
    sols = [parse_solution(kind, good), parse_solution(kind, bad), parse_solution(kind, "no tags")]
    assert score_solutions(executor, kind, [task] * 3, sols) == [True, False, False]


def test_induction_pipeline(executor, tmp_path):
    inputs = ["[3, 1], 1", "[9, 8, 7], 2", "[], 3", "[1, 1, 1], 2", "[5], 1", "[4, 2, 6], 3", "[0, -1], 1"]
    reply = _answer(*[("input", x) for x in inputs], ("message", "the smallest few, in order"))
    proposal = dataclasses.replace(parse_proposal(IND, reply), program=PROG)
    (v,) = validate_proposals(executor, IND, [proposal], _cfg(7), step=1)
    assert v.accepted and len(v.task.inputs) == 7
    with TaskStore(tmp_path) as store:
        store.add_tasks([v.task], 1)
        (task,) = store.sample_for_solving(IND, 1, 2, random.Random(0))
    visible, hidden = split_induction(task, 5)
    prompt = build_prompt(IND, Role.SOLVE, task=task, n_visible=5)
    assert all(i in prompt for i, _ in visible) and not any(
        f"```input\n{i}\n```" in prompt for i, _ in hidden
    )
    right = parse_solution(IND, _answer(("python", "def f(a, n):\n    return sorted(a)[:n]")))
    wrong = parse_solution(IND, _answer(("python", "def f(a, n):\n    return a[:n]")))
    assert score_solutions(executor, IND, [task, task], [right, wrong], n_visible=5) == [True, False]
