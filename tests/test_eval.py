"""``evaluate`` end to end: every benchmark's scoring path with a scripted backend and the real sandbox, the
gold/wrong oracles, pass@k with samples, the report, and the ``azr eval`` command. Benchmark files come from
../shared/data/benchmarks (never copied into the repository)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from azr.evaluation import BENCHMARKS, OracleBackend, evaluate
from azr.evaluation.benchmarks import Item, resolve
from azr.rollout import ScriptedBackend

LOCAL = ["cruxeval-o", "cruxeval-i", "humaneval+", "mbpp+", "gsm8k", "math500", "aime24", "aime25", "amc23",
         "minerva", "olympiadbench"]  # fmt: skip


@pytest.fixture(scope="module")
def executor():
    from azr.executor import Executor

    with Executor() as ex:
        yield ex


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("expected")


@pytest.fixture
def data_dir(shared_data: Path) -> Path:
    return shared_data / "benchmarks"


def _model_like_reply(bench: str, item: Item) -> str:
    """A right answer written the way a model writes it (not the oracle's exact format)."""
    d = item.data
    if bench == "cruxeval-o":
        return f"<think> trace the loop </think>\n<answer>\n```output\n{d['output']}\n```\n</answer>"
    if bench == "cruxeval-i":
        return f"<think> invert it </think>\n<answer>\n```input\n{d['input']}\n```\n</answer>"
    if bench == "humaneval+":  # only the body: the scorer prepends the prompt
        return "Here it is:\n```python\n" + item.gold[len(d["prompt"]) :] + "\n```"
    if bench == "mbpp+":
        return f"```python\n{item.gold}\n```\nThis works."
    return f"Step by step ... so the answer is $\\boxed{{{item.gold}}}$."


def _scripted(bench: str, items: list[Item]) -> ScriptedBackend:
    """Right on the first item, a plausible wrong answer on the others."""
    spec = BENCHMARKS[bench]
    right = {spec.prompt(items[0], None): _model_like_reply(bench, items[0])}
    wrong = {"cruxeval-o": "<answer>\n```output\n[]\n```\n</answer>", "cruxeval-i": "<answer>\n```input\n0\n```",
             "humaneval+": "```python\n    return None\n```", "mbpp+": "I cannot do that."}  # fmt: skip
    return ScriptedBackend(lambda p: right.get(p, wrong.get(bench, "\\boxed{-1}")))


@pytest.mark.parametrize("bench", LOCAL)
def test_scripted_backend_scores_every_benchmark(bench, executor, cache, data_dir):
    items = BENCHMARKS[bench].load(data_dir, 3)
    backend = _scripted(bench, items)
    report = evaluate(backend, None, executor, [bench], limit=3, data_dir=data_dir, expected_cache=cache)
    records = [r for r in report.records if r.bench == bench]
    assert [r.correct for r in records] == [[True], [False], [False]], [r.details for r in records]
    assert report.summary() == {bench: {"score": pytest.approx(1 / 3), "n": 3}}
    assert len(backend.calls) == 3


@pytest.mark.parametrize("wrong", [False, True])
def test_oracle_gold_scores_100_and_wrong_scores_0(wrong, executor, cache, data_dir):
    report = evaluate(
        OracleBackend(wrong), None, executor, LOCAL, limit=4, data_dir=data_dir, expected_cache=cache
    )
    assert set(report.results) == set(LOCAL)
    assert all(r.score == (0.0 if wrong else 1.0) for r in report.results.values()), report.table()


def test_samples_give_unbiased_pass_at_k(executor, cache, data_dir):
    """Alternating right/wrong replies: each item has c=1 of n=2, so pass@1 = 0.5 and pass@2 = 1."""
    items = BENCHMARKS["cruxeval-o"].load(data_dir, 2)
    gold = {BENCHMARKS["cruxeval-o"].prompt(it, None): it.data["output"] for it in items}
    turn = iter(range(1000))
    backend = ScriptedBackend(lambda p: f"<answer>{gold[p] if next(turn) % 2 == 0 else 'None'}</answer>")
    report = evaluate(backend, None, executor, ["cruxeval-o"], limit=2, data_dir=data_dir, samples=2)
    result = report.results["cruxeval-o"]
    assert result.pass_at == {1: pytest.approx(0.5), 2: pytest.approx(1.0)}
    assert report.metrics() == {"eval/cruxeval-o": 0.5, "eval/cruxeval-o/pass@2": 1.0}


def test_unavailable_benchmarks_are_skipped_with_a_reason(executor, tmp_path):
    report = evaluate(OracleBackend(), None, executor, ["gsm8k", "livecodebench"], data_dir=tmp_path)
    assert not report.results
    assert "no file matching" in report.skipped["gsm8k"]
    assert report.skipped["livecodebench"]
    with pytest.raises(ValueError, match="unknown benchmark"):
        resolve(["nope"])


def test_eval_command_with_the_oracle_writes_json(tmp_path, data_dir, capsys, monkeypatch):
    from azr.cli import main

    monkeypatch.setenv("AZR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run.json"
    argv = ["eval", "--model", "oracle", "--bench", "cruxeval-o,mbpp+,amc23", "--limit", "2"]
    assert main([*argv, "--data-dir", str(data_dir), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["summary"] == {b: {"score": 1.0, "n": 2} for b in ("cruxeval-o", "mbpp+", "amc23")}
    assert len(data["records"]) == 6 and "cruxeval-o" in capsys.readouterr().out
    assert main(["eval", "--model", "oracle", "--bench", "bogus"]) == 2
