"""bench/learning.py: the paired comparison, the in-loop summary, the curve and resumable training time."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "learning.py"


@pytest.fixture(scope="module")
def learning():
    spec = importlib.util.spec_from_file_location("bench_learning", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(bench: str, verdicts: list[bool], score: float | None = None) -> dict:
    records = [{"bench": bench, "id": f"i{k}", "correct": [v]} for k, v in enumerate(verdicts)]
    score = sum(verdicts) / len(verdicts) if score is None else score
    return {"results": {bench: {"score": score}}, "records": records}


def test_compare_pairs_items_by_id_and_runs_mcnemar(learning):
    base = _results("probe", [False] * 7 + [True] * 3)
    # 6 gained (i0..i5), 1 lost (i7): exact two-sided p = 2 * (1 + 7) / 128
    final = _results("probe", [True] * 6 + [False, False, True, True])
    row = learning.compare(base, final)["probe"]
    assert (row["n"], row["before"], row["after"], row["gained"], row["lost"]) == (10, 3, 8, 6, 1)
    assert row["p_value"] == pytest.approx(0.125)


def test_compare_skips_benchmarks_missing_in_one_run(learning):
    base = _results("cruxeval-o", [True, False])
    final = _results("probe", [True, True])
    assert learning.compare(base, final) == {}


def test_in_loop_means_first_and_last_steps(learning, tmp_path):
    rows = [{"step": s, "solve/accuracy/deduction": s / 10} for s in range(1, 11)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = learning.in_loop(tmp_path)["solve/accuracy/deduction"]
    assert got["first"] == pytest.approx(0.3)  # steps 1-5
    assert got["last"] == pytest.approx(0.8)  # steps 6-10


def test_curve_starts_at_the_base_model(learning, tmp_path):
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "base.json").write_text(json.dumps(_results("probe", [True, False])))
    (evals / "step-000010.json").write_text(json.dumps(_results("probe", [True, True])))
    assert learning.curve(tmp_path, [10, 20]) == {"probe": [(0, 0.5), (10, 1.0)]}


def test_checkpoints_lists_model_directories_in_step_order(learning, tmp_path):
    for step in (20, 10):
        (tmp_path / "checkpoints" / f"step-{step:06d}" / "model").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-000030").mkdir()  # torn save: no model yet
    assert [s for s, _ in learning.checkpoints(tmp_path)] == [10, 20]


def test_select_takes_the_best_probe_checkpoint_earliest_on_a_tie(learning):
    scores = [(5, 0.16), (10, 0.19), (15, 0.19), (20, 0.14)]
    assert learning.select(scores, "best-probe") == 10
    assert learning.select(scores, "last") == 20


def test_load_eval_merges_the_cruxeval_file_of_a_checkpoint(learning, tmp_path):
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "step-000010.json").write_text(json.dumps(_results("probe", [True, False])))
    (evals / "step-000010-cruxeval.json").write_text(json.dumps(_results("cruxeval-o", [False])))
    merged = learning.load_eval(tmp_path, 10)
    assert set(merged["results"]) == {"probe", "cruxeval-o"}
    assert [r["bench"] for r in merged["records"]] == ["probe", "probe", "cruxeval-o"]
    assert learning.load_eval(tmp_path, 20) is None
    base = _results("cruxeval-o", [True])
    assert learning.compare(base, merged)["cruxeval-o"]["lost"] == 1


def test_each_demonstration_form_keeps_its_own_evaluations(learning, tmp_path):
    """``--demo-think trace`` reads and writes ``evals-trace/`` and ``learning-trace.*``, never the default
    protocol's files, so both can sit in one run directory."""
    for think, verdicts in (("sentence", [True, False]), ("trace", [True, True])):
        evals = learning.evals_dir(tmp_path, think)
        evals.mkdir()
        (evals / "base.json").write_text(json.dumps(_results("probe", verdicts)))
    assert learning.evals_dir(tmp_path, "trace") == tmp_path / "evals-trace"
    assert learning.load_eval(tmp_path, 0)["results"]["probe"]["score"] == 0.5
    assert learning.load_eval(tmp_path, 0, "trace")["results"]["probe"]["score"] == 1.0
    assert learning.curve(tmp_path, [], "trace") == {"probe": [(0, 1.0)]}
    assert (learning.result_stem("sentence"), learning.result_stem("trace")) == ("learning", "learning-trace")


def test_the_trace_report_also_compares_with_the_base_in_the_sentence_form(learning, tmp_path):
    import argparse

    from rich.console import Console

    (tmp_path / "run" / "checkpoints" / "step-000033" / "model").mkdir(parents=True)
    for think, verdicts in (("sentence", [True, True, False, False]), ("trace", [False] * 4)):
        learning.evals_dir(tmp_path, think).mkdir()
        (learning.evals_dir(tmp_path, think) / "base.json").write_text(
            json.dumps(_results("probe", verdicts))
        )
    step = learning.evals_dir(tmp_path, "trace") / "step-000033.json"
    step.write_text(json.dumps(_results("probe", [True, True, True, False])))
    args = argparse.Namespace(demo_think="trace", select="last", data_dir=None, minutes=1, max_steps=33,
                              config="c.toml")  # fmt: skip
    result = learning.report(tmp_path, 33, args, Console(file=open(tmp_path / "out.txt", "w")))  # noqa: SIM115
    assert (
        result["tests"]["probe"]["gained"] == 3 and result["tests_vs_sentence_base"]["probe"]["gained"] == 1
    )
    assert json.loads((tmp_path / "learning-trace.json").read_text())["demo_think"] == "trace"
    assert not (tmp_path / "learning.json").exists()
    text = (tmp_path / "out.txt").read_text()
    assert "trace demonstrations, the base with sentence ones" in text


def test_a_run_that_reached_its_step_budget_trains_no_more(learning, tmp_path, monkeypatch):
    """Rerunning a finished run (say, for the trace-form evaluations) must not start training again and add to
    its training minutes; a larger ``--max-steps`` does train on. The trainer here is a process that leaves
    the checkpoint of step 33 and exits 0, as ``azr train --steps 33`` does."""
    import argparse
    import sys

    from rich.console import Console

    calls = []
    last = tmp_path / "run" / "checkpoints" / "step-000033" / "model"
    trainer = [
        sys.executable,
        "-c",
        f"import os; os.makedirs({str(last)!r}, exist_ok=True)",
    ]  # trains to 33, saves, exits 0
    monkeypatch.setattr(learning, "_azr", lambda *a: calls.append(a) or trainer)
    args = argparse.Namespace(minutes=10.0, max_steps=33, config="c.toml", curve_every=8)
    for _ in range(2):
        learning.train(args, [], tmp_path, Console(quiet=True))
    assert len(calls) == 1 and calls[0][:3] == ("train", "--steps", "33")
    args.max_steps = 50
    learning.train(args, [], tmp_path, Console(quiet=True))
    assert len(calls) == 2 and calls[1] == ("train", "--steps", "50")
