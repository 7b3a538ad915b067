"""Scoring of the code benchmarks in the sandbox: CRUXEval-O/I and HumanEval+/MBPP+ (evalplus style).

- CRUXEval-O (deduction): the predicted output must equal the gold output under ``literals_equal``, the equality
  that training uses for deduction rewards. Nothing runs.
- CRUXEval-I (abduction): ``f(predicted_input)`` runs in the sandbox and must equal the gold output. As in the
  benchmark's own harness the predicted input may be any argument expression (``'ab' * 2``, ``*[1, 2]``,
  ``dict(a=1)``; 13 of the 800 gold inputs are such expressions), evaluated in the sandboxed child; self-play
  abduction accepts literals only. An empty answer block means the call ``f()``.
- HumanEval+/MBPP+: the canonical solution runs once on every base and plus input to get the expected outputs,
  which are cached on disk (``$AZR_CACHE/eval/expected``); a candidate then runs on all inputs of its problem in
  one sandboxed child (one ``Executor.run_jobs`` job) and passes when every output matches (:mod:`.oracles`).
  Inputs on which the canonical solution itself fails are left out and counted in the record.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azr.evaluation.oracles import NOT_NONE, expected_for, outputs_match
from azr.evaluation.values import call_args, parse_value
from azr.seams import ExecutorLike

PRELUDE = "import sys as _azr_sys\n_azr_sys.set_int_max_str_digits(0)\n"
"""Put before every reference and candidate program: Python 3.11 refuses to repr integers over 4,300 digits,
which HumanEval/83 and /139 legitimately produce (evalplus ran on older Pythons without that limit)."""


def run_all_inputs(executor: ExecutorLike, programs: list[tuple[str, CodeProblem]]) -> list[list[Any]]:
    """Each program on every input of its problem, all calls of one program in ONE sandboxed child; the children
    of different programs spread over the executor's pool. Size limits of the executor config do not apply here
    (benchmark programs and inputs are longer than self-play ones); time and memory limits do."""
    jobs = [
        {"code": PRELUDE + code, "calls": [call_args(a) for a in p.inputs], "entry": p.entry}
        for code, p in programs
    ]
    return executor.run_jobs(jobs) if jobs else []


@dataclass(frozen=True)
class CodeProblem:
    """One HumanEval+/MBPP+ problem with its inputs already turned into Python values."""

    task_id: str
    entry: str
    reference: str  # the canonical program (prompt + solution for HumanEval)
    inputs: tuple[tuple[Any, ...], ...]
    atol: float


@dataclass(frozen=True)
class Verdict:
    correct: bool
    detail: str = ""


def literals_equal(a: str, b: str) -> bool:
    """The executor's documented literal equality (imported lazily: the executor pulls in the sandbox)."""
    from azr.executor import literals_equal as equal

    return bool(equal(a, b))


def score_output_predictions(preds: list[str | None], golds: list[str]) -> list[Verdict]:
    """CRUXEval-O: each predicted output literal against the gold output literal."""
    return [
        Verdict(False, "no answer") if p is None else Verdict(literals_equal(p, g), "")
        for p, g in zip(preds, golds, strict=True)
    ]


def score_input_predictions(
    executor: ExecutorLike, programs: list[str], preds: list[str | None], golds: list[str]
) -> list[Verdict]:
    """CRUXEval-I: run ``f(pred)`` in the sandbox for every answered item (``pred`` None: no answer) and compare
    with the gold output outside it; ``pred`` may be any argument expression (``literals_only=False``)."""
    triples = zip(programs, preds, golds, strict=True)
    todo = [(i, (prog, p, g)) for i, (prog, p, g) in enumerate(triples) if p is not None]
    jobs = [job for _, job in todo]
    results = executor.check_abduction_many(jobs, literals_only=False) if todo else []
    verdicts = [Verdict(False, "no answer")] * len(programs)
    for (i, _), r in zip(todo, results, strict=True):
        verdicts[i] = Verdict(bool(r.ok), "" if r.ok else _describe(r))
    return verdicts


def _describe(result: Any) -> str:
    status = _status(result)
    return f"{status}: {result.error_type or ''} {result.message or ''}".strip()[:200]


class ExpectedOutputs:
    """Expected outputs of code problems: the canonical solution's results, computed once and cached as JSON."""

    def __init__(self, executor: ExecutorLike, cache_dir: Path | None = None) -> None:
        self.executor = executor
        self.cache_dir = cache_dir or _default_cache()

    def get_many(self, problems: list[CodeProblem]) -> list[list[tuple[bool, str]]]:
        """``(ok, repr)`` of the canonical output for each input of each problem (``ok`` False: the reference
        failed on that input); missing ones are computed in one batch and cached, unless a run timed out (a
        busy machine should not leave a permanent gap in the tests)."""
        paths = [self.cache_dir / f"{_problem_key(p)}.json" for p in problems]
        out = [json.loads(p.read_text()) if p.is_file() else None for p in paths]
        todo = [k for k, cached in enumerate(out) if cached is None]
        fresh = run_all_inputs(self.executor, [(problems[k].reference, problems[k]) for k in todo])
        for k, results in zip(todo, fresh, strict=True):
            out[k] = [(bool(r.ok), r.value if r.ok else _describe(r)) for r in results]
            if not any(_status(r) == "timeout" for r in results):
                _write_json(paths[k], out[k])
        return [[(bool(ok), text) for ok, text in rows] for rows in out]  # type: ignore[union-attr]


def _status(result: Any) -> str:
    status = getattr(result, "status", "")
    return str(getattr(status, "value", status))


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _default_cache() -> Path:
    from azr.models import cache_dir

    return cache_dir() / "eval" / "expected"


def _problem_key(problem: CodeProblem) -> str:
    blob = json.dumps([problem.task_id, problem.entry, problem.reference, call_args(problem.inputs)])
    safe = problem.task_id.replace("/", "_")
    return f"{safe}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def score_programs(
    executor: ExecutorLike, expected: ExpectedOutputs, problems: list[CodeProblem], codes: list[str | None]
) -> list[Verdict]:
    """Judge each candidate program against its problem's expected outputs: pass iff every input matches."""
    gold = expected.get_many(problems)
    todo = [k for k, code in enumerate(codes) if code]
    runs = run_all_inputs(executor, [(codes[k], problems[k]) for k in todo])  # type: ignore[misc]
    verdicts = [Verdict(False, "no code")] * len(codes)
    for k, results in zip(todo, runs, strict=True):
        verdicts[k] = _judge(problems[k], gold[k], results)
    return verdicts


def _judge(problem: CodeProblem, gold: list[tuple[bool, str]], results: list[Any]) -> Verdict:
    n_bad_gold = sum(not ok for ok, _ in gold)
    note = f" ({n_bad_gold} inputs skipped: the reference fails on them)" if n_bad_gold else ""
    for i, ((gold_ok, exp), r) in enumerate(zip(gold, results, strict=True)):
        if not gold_ok:
            continue
        if not r.ok:
            return Verdict(False, f"input {i}: {_describe(r)}{note}")
        if not _same_output(problem, i, r.value, exp):
            return Verdict(False, f"input {i}: got {str(r.value)[:80]}, expected {exp[:80]}{note}")
    return Verdict(True, f"{len(gold) - n_bad_gold} inputs passed{note}")


def _same_output(problem: CodeProblem, i: int, out_text: str, exp_text: str) -> bool:
    if out_text == exp_text and "nan" not in out_text:  # identical text passes under every rule
        return True
    if problem.entry in NOT_NONE:  # the reference may return a re.Match, which has no literal repr
        if out_text in ("True", "False"):
            return (out_text == "True") == (exp_text != "None")
        return (out_text != "None") == (exp_text != "None")
    ok_out, out = parse_value(out_text)
    ok_exp, exp = parse_value(exp_text)
    if not (ok_out and ok_exp):
        return out_text == exp_text  # an object without a literal repr: compare the text
    args = list(problem.inputs[i])
    return outputs_match(problem.entry, args, out, expected_for(problem.entry, exp), problem.atol)
