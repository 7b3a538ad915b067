"""Turning parsed proposals into buffer tasks, and checking solver answers, on top of the executor.

A proposal is valid when its program and inputs are within the size limits, the executor's static check passes,
and the program runs within the limits in ``determinism_runs`` separate processes with equal results
(``Executor.validate_many``). The gold output is the ``repr`` the executor returns, never anything the model wrote.
An induction proposal keeps the inputs that run cleanly and is accepted only with at least
``selfplay.induction_min_valid`` distinct ones.

Everything goes through the executor's batched ``*_many`` calls: one call per batch of proposals or solutions.
The executor is only used through its documented methods, so tests may pass a small fake with the same surface.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from azr.config import Config
from azr.executor import ExecResult
from azr.seams import ExecutorLike
from azr.tasks.parsing import ParsedProposal, ParsedSolution, ParseFailure, canonical_input
from azr.tasks.prompts import split_induction
from azr.types import Task, TaskType

__all__ = [
    "RejectReason",
    "ValidatedProposal",
    "score_solutions",
    "validate_proposals",
]


class RejectReason(StrEnum):
    """Why a proposal did not become a task. Executor statuses map onto the members of the same name."""

    PROGRAM_TOO_LONG = "program_too_long"
    INPUT_TOO_LONG = "input_too_long"
    NON_LITERAL_INPUT = "non_literal_input"  # inputs must be literal arguments (no calls, names or code)
    OUTPUT_TOO_LARGE = "output_too_large"
    REJECTED = "rejected"  # the executor's static check refused the program
    ERROR = "error"  # raised an exception
    TIMEOUT = "timeout"
    MEMORY = "memory"
    NONDETERMINISTIC = "nondeterministic"
    NO_RESULT = "no_result"  # the executor returned no value
    TRIVIAL = "trivial"  # f has fewer syntax nodes than selfplay.min_program_nodes
    COPY = "copy"  # f returned its input unchanged (selfplay.reject_copy_tasks)
    TOO_FEW_VALID_INPUTS = "too_few_valid_inputs"
    NO_MESSAGE = "no_message"
    OTHER = "other"


@dataclass(frozen=True)
class ValidatedProposal:
    """The verdict on one proposal: ``task`` when accepted, else the ``reason`` (``detail`` for humans)."""

    proposal: ParsedProposal
    task: Task | None
    reason: RejectReason | None = None
    detail: str = ""
    n_valid_inputs: int = 0

    @property
    def accepted(self) -> bool:
        return self.task is not None


def _gold(result: ExecResult, max_output_chars: int) -> tuple[str, None] | tuple[None, RejectReason]:
    """The run's value when it is usable as a gold output, else why not."""
    if not result.ok:
        try:
            return None, RejectReason[result.status.name]
        except KeyError:
            return None, RejectReason.OTHER
    if result.value is None:
        return None, RejectReason.NO_RESULT
    if len(result.value) > max_output_chars:
        return None, RejectReason.OUTPUT_TOO_LARGE
    return result.value, None


def _detail(result: ExecResult) -> str:
    return ": ".join(p for p in (result.error_type or "", result.message) if p)[:300]


def validate_proposals(
    executor: ExecutorLike,
    kind: TaskType,
    proposals: Sequence[ParsedProposal],
    cfg: Config,
    *,
    step: int = 0,
    origin: str = "proposal",
    min_valid: int | None = None,
) -> list[ValidatedProposal]:
    """Validate a batch of proposals of one task type with one executor call; one verdict per proposal, in order.

    For induction, ``proposal.program`` must hold the program the inputs were proposed for (the caller fills it
    in from the prompt's reference) and ``min_valid`` overrides ``cfg.selfplay.induction_min_valid``.
    """
    kind = TaskType(kind)
    ex_cfg = cfg.executor
    need = cfg.selfplay.induction_min_valid if min_valid is None else min_valid
    pre: list[RejectReason | None] = []
    calls: list[tuple[str, str]] = []
    spans: list[tuple[int, int]] = []
    for p in proposals:
        reason = _size_reason(p, ex_cfg.max_program_chars, ex_cfg.max_input_chars, kind)
        if reason is None and kind is TaskType.INDUCTION and not p.message.strip():
            reason = RejectReason.NO_MESSAGE
        if (
            reason is None
            and kind is not TaskType.INDUCTION
            and origin == "proposal"  # seed tasks files and imports are the user's choice, not the proposer's
            and _trivial(p.program, cfg.selfplay.min_program_nodes)
        ):
            reason = RejectReason.TRIVIAL
        if kind is TaskType.INDUCTION:  # over-long or non-literal inputs are dropped, like inputs that fail
            inputs = [i for i in _distinct(p.inputs) if len(i) <= ex_cfg.max_input_chars and _literal(i)]
        else:
            inputs = list(p.inputs[:1])
            if reason is None and not _literal(inputs[0]):
                reason = RejectReason.NON_LITERAL_INPUT
        pre.append(reason)
        start = len(calls)
        if reason is None:
            calls += [(p.program, inp) for inp in inputs]
        spans.append((start, len(calls)))
    results = list(executor.validate_many(calls)) if calls else []
    out = []
    for p, reason, (a, b) in zip(proposals, pre, spans, strict=True):
        if reason is not None:
            out.append(ValidatedProposal(p, None, reason))
            continue
        pairs = [(calls[i][1], results[i]) for i in range(a, b)]
        if kind is TaskType.INDUCTION:
            out.append(_induction_verdict(p, pairs, need, ex_cfg.max_output_chars, step, origin))
        else:
            copies = cfg.selfplay.reject_copy_tasks and origin == "proposal"
            out.append(_single_verdict(kind, p, pairs[0], ex_cfg.max_output_chars, step, origin, copies))
    return out


def _find_f(program: str) -> ast.FunctionDef | None:
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):
        return None
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "f"), None)


def program_nodes(program: str) -> int:
    """Syntax nodes in the body of the program's top-level ``f`` (``def f(x): return x + 1`` has 6), the size
    ``selfplay.min_program_nodes`` checks; 0 when there is no such function."""
    return _nodes(_find_f(program))


def _nodes(f: ast.FunctionDef | None) -> int:
    return 0 if f is None else sum(1 for stmt in f.body for _ in ast.walk(stmt))


def reads_arguments(program: str) -> bool:
    """Whether the body of the top-level ``f`` reads at least one of its parameters. A function that does not
    (``def f(n): return [1, 2, 3]``) returns the same value for every input: nothing to deduce or abduce."""
    return _reads_arguments(_find_f(program))


def _reads_arguments(f: ast.FunctionDef | None) -> bool:
    if f is None:
        return False
    a = f.args
    params = {p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if p is not None}
    return any(
        isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in params
        for stmt in f.body
        for n in ast.walk(stmt)
    )


def _trivial(program: str, min_nodes: int) -> bool:
    if min_nodes <= 0:
        return False
    f = _find_f(program)  # parsed once for both checks
    return _nodes(f) < min_nodes or not _reads_arguments(f)


def same_literal(a: str, b: str) -> bool:
    """Equal as Python literals (``[1,2]`` and ``[1, 2]``), or as stripped text when either is not a literal."""
    from azr.executor import literals_equal

    return a.strip() == b.strip() or literals_equal(a, b)


def arguments(call_args: str) -> tuple[str, ...]:
    """The source text of each argument in ``"'abc', [1, 2], k=3"`` (keyword values too); () if it does not parse."""
    try:
        call = ast.parse(f"_({call_args}\n)", mode="eval").body
    except (SyntaxError, ValueError):
        return ()
    if not isinstance(call, ast.Call):
        return ()
    nodes = [*call.args, *(k.value for k in call.keywords)]
    return tuple(seg for n in nodes if (seg := ast.get_source_segment(f"_({call_args}\n)", n)) is not None)


def echoes_input(call_args: str, value: str) -> bool:
    """``value`` is the whole argument text or one of its arguments: ``f('abc', 'd') == 'abc'`` echoes its input,
    so a copy of the prompt is the answer (a deduction's output, or an abduction's input built around it)."""
    return same_literal(call_args, value) or any(same_literal(a, value) for a in arguments(call_args))


def is_copy_task(task: Task) -> bool:
    """A deduction/abduction task whose output echoes its input (:func:`echoes_input`): a copy of the prompt
    answers it."""
    return bool(task.inputs and task.outputs) and echoes_input(task.inputs[0], task.outputs[0])


def _literal(text: str) -> bool:
    from azr.executor import parse_arguments

    return parse_arguments(text)[0]


def _size_reason(p: ParsedProposal, max_prog: int, max_inp: int, kind: TaskType) -> RejectReason | None:
    if len(p.program) > max_prog:
        return RejectReason.PROGRAM_TOO_LONG
    if not p.inputs:
        return RejectReason.TOO_FEW_VALID_INPUTS
    if kind is not TaskType.INDUCTION and len(p.inputs[0]) > max_inp:
        return RejectReason.INPUT_TOO_LONG
    return None


def _distinct(inputs: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for inp in inputs:
        key = canonical_input(inp)
        if key not in seen:
            seen.add(key)
            out.append(inp)
    return out


def _single_verdict(
    kind: TaskType,
    p: ParsedProposal,
    pair: tuple[str, ExecResult],
    max_out: int,
    step: int,
    origin: str,
    reject_copies: bool = False,
) -> ValidatedProposal:
    inp, result = pair
    value, reason = _gold(result, max_out)
    if value is None:
        return ValidatedProposal(p, None, reason, _detail(result))
    if reject_copies and echoes_input(inp, value):
        return ValidatedProposal(
            p, None, RejectReason.COPY, "f returned its input (or an argument) unchanged"
        )
    task = Task(kind, p.program, (inp,), (value,), "", None, step, origin)
    return ValidatedProposal(p, task, None, "", 1)


def _induction_verdict(
    p: ParsedProposal, pairs: list[tuple[str, ExecResult]], need: int, max_out: int, step: int, origin: str
) -> ValidatedProposal:
    golds = [(inp, *_gold(r, max_out)) for inp, r in pairs]
    good = [(inp, value) for inp, value, _ in golds if value is not None]
    if len(good) < max(1, need):
        reasons = sorted({str(reason) for _, _, reason in golds if reason is not None})
        detail = (
            f"{len(good)} of {len(pairs)} distinct inputs valid (need {need}); failures: {', '.join(reasons)}"
        )
        return ValidatedProposal(p, None, RejectReason.TOO_FEW_VALID_INPUTS, detail, len(good))
    inputs = tuple(inp for inp, _ in good)
    outputs = tuple(out for _, out in good)
    task = Task(TaskType.INDUCTION, p.program, inputs, outputs, p.message.strip(), None, step, origin)
    return ValidatedProposal(p, task, None, "", len(good))


def score_solutions(
    executor: ExecutorLike,
    kind: TaskType,
    tasks: Sequence[Task],
    solutions: Sequence[ParsedSolution | ParseFailure | None],
    *,
    n_visible: int = 5,
    literals_equal: Callable[[str, str], bool] | None = None,
) -> list[bool]:
    """Whether each solver answer is correct for its task (one executor call for the batch).

    - deduction: ``literals_equal(predicted, gold_output)`` (``azr.executor.literals_equal`` by default);
    - abduction: the executor checks ``f(candidate) == gold`` (``check_abduction_many``);
    - induction: the candidate program must pass every hidden pair (``check_induction_many``), the pairs after
      the first ``n_visible`` as given by :func:`split_induction`.

    A parse failure or None scores False.
    """
    kind = TaskType(kind)
    if len(tasks) != len(solutions):
        raise ValueError(f"{len(tasks)} tasks but {len(solutions)} solutions")
    answers = {i: s.answer for i, s in enumerate(solutions) if isinstance(s, ParsedSolution)}
    live = list(answers)
    scores = [False] * len(tasks)
    if not live:
        return scores
    if kind is TaskType.DEDUCTION:
        same = literals_equal
        if same is None:
            from azr.executor import literals_equal as executor_equal

            same = executor_equal
        for i in live:
            scores[i] = bool(same(answers[i], tasks[i].output))
        return scores
    if kind is TaskType.ABDUCTION:
        results = executor.check_abduction_many(
            [(tasks[i].program, answers[i], tasks[i].output) for i in live]
        )
    else:
        batch: list[tuple[str, list[str], list[str]]] = []
        for i in live:
            visible, hidden = split_induction(tasks[i], n_visible)
            hidden = hidden or visible  # a one-pair task: its only pair is the test
            batch.append((answers[i], [x for x, _ in hidden], [y for _, y in hidden]))
        results = executor.check_induction_many(batch)
    for i, r in zip(live, results, strict=True):
        scores[i] = r.ok
    return scores
