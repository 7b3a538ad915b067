"""Proposal validation and solver scoring against a fake executor with the real executor's surface."""

from __future__ import annotations

import dataclasses

import pytest

from azr.config import Config
from azr.tasks.parsing import ParsedProposal, ParsedSolution, ParseFailure, ParseReason
from azr.tasks.validate import RejectReason, score_solutions, validate_proposals
from azr.types import Task, TaskType
from fakes import FakeExecutor, literal_eq

D, A, IND = TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION
REV = "def f(s):\n    return s[::-1]"


def cfg(min_valid: int = 3, **executor) -> Config:
    base = Config()
    sp = dataclasses.replace(base.selfplay, induction_min_valid=min_valid, induction_inputs=10)
    return dataclasses.replace(base, selfplay=sp, executor=dataclasses.replace(base.executor, **executor))


def test_triplet_proposals_get_gold_outputs_from_the_executor_in_one_batch():
    ex = FakeExecutor()
    props = [ParsedProposal(D, REV, ("'abc'",)), ParsedProposal(D, "def f(x):\n    return x // 0", ("1",))]
    out = validate_proposals(ex, D, props, cfg(), step=7)
    assert ex.calls == ["validate_many"]
    assert out[0].accepted and out[0].task == Task(D, REV, ("'abc'",), ("'cba'",), "", None, 7, "proposal")
    assert (
        not out[1].accepted and out[1].reason is RejectReason.ERROR and "ZeroDivisionError" in out[1].detail
    )


@pytest.mark.parametrize(
    ("program", "inp", "limits", "reason"),
    [
        ("import random\ndef f(x):\n    return random.random()", "1", {}, RejectReason.REJECTED),
        ("_n = []\ndef f(x):\n    _n.append(1)\n    return id(_n)", "1", {}, RejectReason.NONDETERMINISTIC),
        ("def f(x):\n    return 'a' * x", "50", {"max_output_chars": 20}, RejectReason.OUTPUT_TOO_LARGE),
        (
            "def f(x):\n    return x" + " " * 100,
            "1",
            {"max_program_chars": 50},
            RejectReason.PROGRAM_TOO_LONG,
        ),
        (
            "def f(x):\n    return x",
            "'" + "a" * 60 + "'",
            {"max_input_chars": 50},
            RejectReason.INPUT_TOO_LONG,
        ),
    ],
)
def test_triplet_rejections_are_typed(program, inp, limits, reason):
    (v,) = validate_proposals(FakeExecutor(), A, [ParsedProposal(A, program, (inp,))], cfg(**limits))
    assert not v.accepted and v.reason is reason


def test_induction_keeps_distinct_valid_inputs():
    inputs = ("'ab'", '"ab"', "'xyz'", "1", "''", "'q'")  # '"ab"' duplicates 'ab'; 1 raises
    p = ParsedProposal(IND, REV, inputs, "  reverses  ")
    (v,) = validate_proposals(FakeExecutor(), IND, [p], cfg(min_valid=4))
    assert v.accepted and v.n_valid_inputs == 4
    assert v.task.inputs == ("'ab'", "'xyz'", "''", "'q'")
    assert v.task.outputs == ("'ba'", "'zyx'", "''", "'q'") and v.task.message == "reverses"


def test_induction_needs_min_valid_and_a_message():
    p = ParsedProposal(IND, REV, ("'ab'", "'ab'", "1"), "m")
    (v,) = validate_proposals(FakeExecutor(), IND, [p], cfg(min_valid=2))
    assert v.reason is RejectReason.TOO_FEW_VALID_INPUTS and "error" in v.detail
    (v,) = validate_proposals(FakeExecutor(), IND, [ParsedProposal(IND, REV, ("'a'", "'b'"), " ")], cfg(2))
    assert v.reason is RejectReason.NO_MESSAGE


def test_empty_batch_makes_no_executor_call():
    ex = FakeExecutor()
    assert validate_proposals(ex, D, [], cfg()) == [] and ex.calls == []


TASK_D = Task(D, REV, ("'abc'",), ("'cba'",))
TASK_A = Task(A, "def f(x):\n    return x * 2", ("3",), ("6",))
TASK_I = Task(IND, REV, tuple(f"'{c * 2}x'" for c in "abcdef"), tuple(f"'x{c * 2}'" for c in "abcdef"), "m")


def test_score_deduction_uses_literal_equality():
    sols = [
        ParsedSolution(D, '"cba"'),
        ParsedSolution(D, "'abc'"),
        ParseFailure(ParseReason.NO_ANSWER_TAG),
        None,
    ]
    got = score_solutions(FakeExecutor(), D, [TASK_D] * 4, sols, literals_equal=literal_eq)
    assert got == [True, False, False, False]


def test_score_abduction_runs_the_candidate():
    ex = FakeExecutor()
    sols = [ParsedSolution(A, "3"), ParsedSolution(A, "'ab'"), ParsedSolution(A, "4")]
    assert score_solutions(ex, A, [TASK_A] * 3, sols) == [True, False, False]
    assert ex.calls == ["check_abduction_many"]


def test_score_induction_checks_hidden_pairs_only():
    """Six pairs, five shown: only the sixth ('ffx' -> 'xff') is the test, as in the paper."""
    only_hidden = "def f(s):\n    return 'xff'"  # wrong on every visible pair, right on the hidden one
    only_visible = "def f(s):\n    return s[::-1] if s != 'ffx' else ''"
    sols = [ParsedSolution(IND, REV), ParsedSolution(IND, only_hidden), ParsedSolution(IND, only_visible)]
    ex = FakeExecutor()
    assert score_solutions(ex, IND, [TASK_I] * 3, sols, n_visible=5) == [True, True, False]
    assert ex.calls == ["check_induction_many"]


def test_score_requires_equal_lengths():
    with pytest.raises(ValueError):
        score_solutions(FakeExecutor(), D, [TASK_D], [])


def test_inputs_must_be_literal_arguments():
    (v,) = validate_proposals(FakeExecutor(), D, [ParsedProposal(D, REV, ("str(12)",))], cfg())
    assert v.reason is RejectReason.NON_LITERAL_INPUT
    p = ParsedProposal(IND, REV, ("'ab'", "str(12)", "'cd'"), "m")
    (v,) = validate_proposals(FakeExecutor(), IND, [p], cfg(min_valid=2))
    assert v.accepted and v.task.inputs == ("'ab'", "'cd'")


def test_trivial_programs_are_rejected_only_when_asked():
    from azr.tasks.validate import program_nodes

    one_liner, loop = (
        "def f(x):\n    return x + 1",
        "def f(xs):\n    t = 0\n    for x in xs:\n        t += x * x\n    return t",
    )
    assert program_nodes(one_liner) == 6 and program_nodes(loop) > 10 and program_nodes("x = 1") == 0
    props = [ParsedProposal(D, one_liner, ("1",)), ParsedProposal(D, loop, ("[1, 2]",))]
    assert all(v.accepted for v in validate_proposals(FakeExecutor(), D, props, cfg()))  # off by default
    strict = cfg()
    strict = dataclasses.replace(strict, selfplay=dataclasses.replace(strict.selfplay, min_program_nodes=10))
    ex = FakeExecutor()
    first, second = validate_proposals(ex, D, props, strict)
    assert first.reason is RejectReason.TRIVIAL and second.accepted and second.task.outputs == ("5",)
    # A constant f is trivial whatever its size: its output does not depend on the input.
    constant = "def f(n):\n    return [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]"
    assert program_nodes(constant) > 10
    (c,) = validate_proposals(FakeExecutor(), D, [ParsedProposal(D, constant, ("3",))], strict)
    assert c.reason is RejectReason.TRIVIAL
    # Imported seed rows are the user's, not the proposer's: never rejected as trivial.
    (imp,) = validate_proposals(FakeExecutor(), D, props[:1], strict, origin="imported")
    assert imp.accepted
    # Induction shows a program the proposer did not write: never rejected as trivial.
    ind = ParsedProposal(IND, one_liner, ("1", "2", "3"), message="adds one")
    (v,) = validate_proposals(FakeExecutor(), IND, [ind], strict, min_valid=3)
    assert v.accepted


def test_reads_arguments_sees_every_kind_of_parameter():
    from azr.tasks.validate import reads_arguments

    assert reads_arguments("def f(x):\n    return x + 1")
    assert reads_arguments("def f(a, *rest, k=1, **kw):\n    return len(kw)")
    assert reads_arguments("def f(s):\n    def g():\n        return s\n    return g()")
    assert not reads_arguments("def f(n):\n    return [1, 2, 3]")
    assert not reads_arguments("def f(n):\n    n = 3\n    return 4")  # only stores, never reads
    assert not reads_arguments("def f():\n    return 1")
    assert not reads_arguments("x = 1") and not reads_arguments("def f(:")


def test_copy_tasks_are_rejected_only_when_asked():
    """selfplay.reject_copy_tasks: a deduction or abduction task whose output is its input rewards copying."""
    A = TaskType.ABDUCTION
    srt = "def f(xs):\n    return sorted(xs)"
    props = [
        ParsedProposal(D, REV, ("'aba'",)),
        ParsedProposal(D, REV, ("'abc'",)),
        ParsedProposal(D, srt, ("[1,2]",)),
    ]
    assert all(v.accepted for v in validate_proposals(FakeExecutor(), D, props, cfg()))  # off by default
    on = cfg()
    on = dataclasses.replace(on, selfplay=dataclasses.replace(on.selfplay, reject_copy_tasks=True))
    palindrome, other, already_sorted = validate_proposals(FakeExecutor(), D, props, on)
    assert palindrome.reason is RejectReason.COPY and other.accepted
    assert already_sorted.reason is RejectReason.COPY  # "[1,2]" and "[1, 2]" are the same literal
    (abd,) = validate_proposals(FakeExecutor(), A, [ParsedProposal(A, REV, ("'aba'",))], on)
    assert abd.reason is RejectReason.COPY
    # Seed tasks and imports are the user's choice (the identity seed is a copy task by design).
    (seed,) = validate_proposals(FakeExecutor(), D, props[:1], on, origin="seed")
    assert seed.accepted


def test_a_task_that_returns_one_of_its_arguments_is_a_copy_task():
    from azr.tasks.validate import arguments, echoes_input

    assert arguments("'abc', [1, 2], k=3") == ("'abc'", "[1, 2]", "3") and arguments("(1,") == ()
    assert echoes_input("'abc', 'd'", "'abc'") and echoes_input("[1,2]", "[1, 2]")
    assert not echoes_input("'a', 'b'", "'ab'")
    first = "def f(s, n):\n    return s"
    on = cfg()
    on = dataclasses.replace(on, selfplay=dataclasses.replace(on.selfplay, reject_copy_tasks=True))
    (v,) = validate_proposals(FakeExecutor(), D, [ParsedProposal(D, first, ("'abc', 2",))], on)
    assert v.reason is RejectReason.COPY
