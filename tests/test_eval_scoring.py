"""Pure parts of the evaluation: pass@k, value round-trips, evalplus oracles, math gold extraction, templates."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azr.evaluation import scoring_math as sm
from azr.evaluation import templates as tpl
from azr.evaluation.loaders import BenchmarkUnavailable, Source, find_local, load_rows, read_jsonl
from azr.evaluation.oracles import mbpp_inputs, outputs_match
from azr.evaluation.passk import mean_pass_at_k, pass_at_k
from azr.evaluation.values import call_args, parse_value, to_source


def test_pass_at_k_hand_derived():
    """n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5; n=5, c=2, k=3: 1 - C(3,3)/C(5,3) = 1 - 1/10."""
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(3, 2, 2) == 1.0  # fewer wrong samples than k: some draw always holds a right one
    assert mean_pass_at_k([(4, 1), (4, 0)], 1) == pytest.approx(0.125)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)


@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_the_binomial_formula(nck):
    n, c, k = nck
    exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-9)
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)


@pytest.mark.parametrize(
    "value",
    [[1, (2,), {3: "a"}], {1, 2}, frozenset({1}), set(), (), float("inf"), -math.inf, 1 + 2j, None, b"x"],
)
def test_values_round_trip(value):
    ok, back = parse_value(repr(value))
    assert ok and back == value
    assert parse_value(to_source(value)) == (True, value)


def test_values_nan_and_rejects():
    ok, back = parse_value("[nan]")
    assert ok and math.isnan(back[0])
    assert parse_value("__import__('os')")[0] is False
    assert parse_value("<object at 0x1>")[0] is False
    assert call_args([1, [2, 3], "a", float("nan")]) == "1, [2, 3], 'a', float('nan')"


def test_evalplus_float_rule_and_special_oracles():
    assert outputs_match("f", [], 0.1 + 0.2, 0.3, 0)  # float-shaped expected: atol 1e-6 applies
    assert not outputs_match("f", [], 0.31, 0.3, 0)
    assert not outputs_match("f", [], [1.0, 2.0], (1.0, 2.0), 1e-4)  # types must match under tolerance
    assert outputs_match("f", [], 1, 1.0, 0)  # plain == as in evalplus
    assert not outputs_match("f", [], [1, 2], [2, 1], 0)
    assert outputs_match("similar_elements", [], (2, 1), (1, 2), 0)
    assert outputs_match("check_str", [], "a match object", True, 0)
    assert outputs_match("find_zero", [[-6, 11, -6, 1]], 1.0, 0.0, 1e-6)  # x=1 is a root of the cubic
    assert not outputs_match("find_zero", [[-6, 11, -6, 1]], 1.5, 1.0, 1e-6)


def test_mbpp_inputs_restore_tuples_and_complex():
    assert mbpp_inputs("Mbpp/2", [[3, 4], [5]]) == [(3, 4), (5,)]
    assert mbpp_inputs("Mbpp/124", ["1.5", "1+2j"]) == [1.5, 1 + 2j]
    assert mbpp_inputs("Mbpp/580", [[1, [2, 3]]]) == [(1, (2, 3))]
    assert mbpp_inputs("Mbpp/3", [[1, 2]]) == [[1, 2]]


def test_math_gold_extraction_per_dataset():
    assert sm.gold_gsm8k({"answer": "so 3 * 4 = 12\n#### 1,200"}) == "1200"
    assert sm.gold_field({"answer": 27.0}) == "27"
    assert sm.gold_field({"answer": "\\frac{1}{2}"}) == "\\frac{1}{2}"
    assert sm.gold_minerva({"solution": "x = \\boxed{\\frac{a}{b}} and \\boxed{1.6} cm"}) == "1.6"
    assert sm.gold_olympiad({"final_answer": ["$2$", "$3$"]}) == "2, 3"
    assert sm.last_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert sm.extract_answer("the answer is 1,234.") == "1234"


def test_math_verify_judgement_in_a_worker():
    pytest.importorskip("math_verify")
    assert sm.verify_one("\\frac{1}{2}", "so $\\boxed{0.5}$")
    assert sm.verify_one("\\text{east}", "\\boxed{\\text{ east }}")  # textual fallback
    assert not sm.verify_one("3", "\\boxed{4}")
    with sm.MathJudge(timeout_s=30) as judge:
        assert judge.judge_many([("27", "\\boxed{27.0}"), ("27", "\\boxed{26}")]) == [True, False]


def test_templates_build_runnable_humaneval_programs():
    prompt = 'from typing import List\n\n\ndef g(xs: List[int]) -> int:\n    """Sum."""\n'
    body = "```python\n    return sum(xs)\n```"
    assert tpl.humaneval_program(prompt, "g", body) == prompt + "    return sum(xs)"
    whole = "Sure:\n```python\ndef g(xs: List[int]) -> int:\n    return sum(xs)\n```\nDone."
    program = tpl.humaneval_program(prompt, "g", whole)
    assert program.startswith("from typing import List\ndef g(")
    assert tpl.extract_code("no fences at all") == "no fences at all"
    tricky = 'def h(v):\n    """Round v.\n    from two integers, pick the far one.\n    """\n'
    assert (
        tpl.humaneval_program(tricky, "h", f"```python\n{tricky}    return v\n```") == tricky + "    return v"
    )
    assert "Question?" in tpl.render("sys", tpl.math_message("Question?"), None)


def test_loaders_find_files_by_pattern_and_parse_without_final_newline(tmp_path: Path):
    path = tmp_path / "MbppPlus-v9.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps({"a": 1}) + "\n\n" + json.dumps({"a": 2}))  # no final newline
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert find_local(tmp_path, ("nothing*", "MbppPlus*.jsonl*")) == path
    assert load_rows(Source(("MbppPlus*",), "x/y"), tmp_path, limit=1) == [{"a": 1}]
    with pytest.raises(BenchmarkUnavailable, match="no file matching"):
        find_local(tmp_path, ("gsm8k*",))


def test_expected_outputs_are_cached_except_after_a_timeout(tmp_path: Path):
    from types import SimpleNamespace

    from azr.evaluation.scoring_code import CodeProblem, ExpectedOutputs

    class Jobs:
        def __init__(self, status: str) -> None:
            self.status, self.calls = status, 0

        def run_jobs(self, jobs):
            self.calls += 1
            ok = self.status == "ok"
            row = SimpleNamespace(
                ok=ok, value="2" if ok else None, status=self.status, error_type=None, message=""
            )
            return [[row for _ in job["calls"]] for job in jobs]

    problem = CodeProblem("T/1", "g", "def g(x):\n    return x + 1\n", ((1,),), 0.0)
    for status, runs in (("timeout", 2), ("ok", 1)):
        ex = Jobs(status)
        cache = ExpectedOutputs(ex, tmp_path / status)  # type: ignore[arg-type]
        first = cache.get_many([problem])
        assert cache.get_many([problem]) == first and ex.calls == runs


def test_render_puts_demonstrations_before_the_question():
    assert tpl.render("sys", "Q", None) == "sys\n\nQ\n\n"  # unchanged without shots
    assert (
        tpl.render("sys", "Q", None, [("q1", "a1"), ("q2", "a2")]) == "sys\n\nq1\n\na1\n\nq2\n\na2\n\nQ\n\n"
    )


def test_code_demos_in_the_humaneval_and_mbpp_shapes():
    from azr.evaluation.demos import code_reply, first_demos, humaneval_prompt, mbpp_prompt

    demo = first_demos("code", 1)[0]
    assert humaneval_prompt(demo) == (
        "def count_capitalised(text):\n"
        '    """Count the words of a sentence that start with an uppercase letter.\n'
        "    >>> count_capitalised('The Cat sat on Mat')\n"
        "    3\n"
        '    """\n'
    )
    assert mbpp_prompt(demo).splitlines()[2] == "assert count_capitalised('The Cat sat on Mat') == 3"
    assert code_reply(demo) == f"```python\n{demo.program}\n```"
    assert tpl.extract_code(code_reply(demo)) == demo.program


_CRASH_MARKER = "AZR_TEST_CRASH_MARKER"


def _dies_on(gold: str, reply: str) -> bool:
    """A judge that dies on reply "die" (always) and on "die-once" (only the first time, a marker file tells)."""
    import os

    marker = Path(os.environ[_CRASH_MARKER])
    if reply == "die" or (reply == "die-once" and not marker.exists()):
        marker.touch()
        os._exit(1)
    return gold == reply or reply == "die-once"


def test_math_judge_worker_death_is_retried_and_loud(tmp_path, monkeypatch):
    """A worker that dies once (BrokenProcessPool) used to score its pair and every pair queued behind it as wrong,
    silently; now the pairs are judged again in a fresh worker, with a warning."""
    pytest.importorskip("math_verify")
    monkeypatch.setenv(_CRASH_MARKER, str(tmp_path / "died"))
    monkeypatch.setattr(sm, "verify_one", _dies_on)
    with sm.MathJudge(timeout_s=20) as judge, pytest.warns(RuntimeWarning, match="judging again"):
        verdicts = judge.judge_many([("1", "1"), ("2", "die-once"), ("3", "3"), ("4", "5")])
    assert verdicts == [True, True, True, False]
    assert judge.crashes == 1


def test_math_judge_pair_that_kills_every_worker_is_wrong_with_a_warning(tmp_path, monkeypatch):
    pytest.importorskip("math_verify")
    monkeypatch.setenv(_CRASH_MARKER, str(tmp_path / "died"))
    monkeypatch.setattr(sm, "verify_one", _dies_on)
    with sm.MathJudge(timeout_s=20) as judge, pytest.warns(RuntimeWarning) as record:
        verdicts = judge.judge_many([("1", "1"), ("2", "die"), ("3", "3")])
    assert verdicts == [True, False, True]
    assert ["judging again" in str(w.message) for w in record] == [True, False]
    assert "counts as wrong" in str(record[1].message)
    assert judge.crashes == 2
