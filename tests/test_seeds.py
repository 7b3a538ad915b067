"""The mean gain over seeds and its two-level bootstrap interval."""

from __future__ import annotations

import pytest

from azr.evaluation.seeds import gain_points, seed_gain


def test_gain_points_by_hand():
    """4 items: one gained, one lost, two right both times: net 0; with the lost one right: +25 points."""
    assert gain_points([(False, True), (True, False), (True, True), (True, True)]) == 0.0
    assert gain_points([(False, True), (True, True), (True, True), (False, False)]) == 25.0


def test_identical_seeds_with_no_discordant_item_have_a_zero_width_interval():
    seeds = [[(True, True)] * 5 + [(False, False)] * 5] * 3
    g = seed_gain(seeds, n_boot=200)
    assert (g.mean, g.low, g.high) == (0.0, 0.0, 0.0)


def test_interval_holds_the_mean_and_widens_with_seed_spread():
    """Three seeds of 100 items gaining 10, 10 and 10 points against 0, 10 and 20: same mean (10), the spread
    between seeds widens the interval."""

    def seed(k: int) -> list[tuple[bool, bool]]:
        return [(False, True)] * k + [(False, False)] * (100 - k)

    same = seed_gain([seed(10)] * 3, n_boot=2000)
    spread = seed_gain([seed(0), seed(10), seed(20)], n_boot=2000)
    assert same.mean == spread.mean == pytest.approx(10.0)
    assert same.low < 10.0 < same.high and spread.low < 10.0 < spread.high
    assert spread.high - spread.low > same.high - same.low
    assert spread.per_seed == (0.0, 10.0, 20.0)


def test_no_seeds_is_an_error():
    with pytest.raises(ValueError):
        seed_gain([])


def test_bench_seeds_end_to_end(tmp_path):
    """bench/seeds.py over two crafted learning runs (base and chosen checkpoint on CRUXEval-O and the probe)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    def results(bench: str, right: list[bool]) -> dict:
        recs = [{"bench": bench, "id": str(i), "gold": "1", "replies": ["r"], "extracted": ["2"],
                 "correct": [ok], "details": [""], "shown": "3", "copy_can_score": i == 0}
                for i, ok in enumerate(right)]  # fmt: skip
        return {"results": {bench: {"score": 0.0}}, "records": recs, "meta": {}}

    runs = []
    for name, gained in (("a", 2), ("b", 4)):
        run = tmp_path / name
        (run / "evals").mkdir(parents=True)
        (run / "learning.json").write_text(json.dumps({"selected": 10}))
        for bench, path in (("probe", "base.json"), ("probe", "step-000010.json")):
            after = path != "base.json"
            (run / "evals" / path).write_text(
                json.dumps(results(bench, [after and i < gained for i in range(10)]))
            )
        base = json.loads((run / "evals" / "base.json").read_text())
        crux = results("cruxeval-o", [False] * 10)
        base["results"] |= crux["results"]
        base["records"] += crux["records"]
        (run / "evals" / "base.json").write_text(json.dumps(base))
        (run / "evals" / "step-000010-cruxeval.json").write_text(
            json.dumps(results("cruxeval-o", [True] * 10))
        )
        runs.append(str(run))
    bench = Path(__file__).resolve().parents[1] / "bench" / "seeds.py"
    out = tmp_path / "seeds.json"
    r = subprocess.run([sys.executable, str(bench), *runs, "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())["results"]["runs"]
    assert result["probe"]["mean"] == pytest.approx(30.0)  # 20 and 40 points
    assert [s["gained"] for s in result["probe"]["seeds"]] == [2, 4]
    assert result["cruxeval-o"]["mean"] == 100.0
    assert result["cruxeval-o (copy cannot score)"]["seeds"][0]["n"] == 9
    # an ablation: each run its own arm, then the arm x benchmark table
    r = subprocess.run([sys.executable, str(bench), f"one={runs[0]}", f"two={runs[1]}", "--out", str(out)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    arms = json.loads(out.read_text())["results"]
    assert [arms[a]["probe"]["mean"] for a in ("one", "two")] == [pytest.approx(20.0), pytest.approx(40.0)]
    assert "per arm" in r.stdout and "+40.00" in r.stdout


def test_bench_seeds_reads_the_trace_form_against_either_base(tmp_path):
    """``--demo-think trace`` reads ``learning-trace.json`` and ``evals-trace/``; ``--base-demo-think sentence``
    takes the base from ``evals/`` instead (the base's best form)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    def results(right: list[bool]) -> str:
        recs = [{"bench": "probe", "id": str(i), "correct": [ok]} for i, ok in enumerate(right)]
        return json.dumps({"results": {"probe": {"score": 0.0}}, "records": recs, "meta": {}})

    run = tmp_path / "run"
    for folder, base_right in (("evals", 5), ("evals-trace", 1)):
        (run / folder).mkdir(parents=True)
        (run / folder / "base.json").write_text(results([i < base_right for i in range(10)]))
    (run / "evals-trace" / "step-000033.json").write_text(results([i < 8 for i in range(10)]))
    (run / "learning-trace.json").write_text(json.dumps({"selected": 33}))
    bench = Path(__file__).resolve().parents[1] / "bench" / "seeds.py"
    means = []
    for extra in ([], ["--base-demo-think", "sentence"]):
        out = tmp_path / "out.json"
        argv = [sys.executable, str(bench), str(run), "--demo-think", "trace", "--out", str(out), *extra]
        r = subprocess.run(argv, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        means.append(json.loads(out.read_text())["results"]["runs"]["probe"]["mean"])
    assert means == [pytest.approx(70.0), pytest.approx(30.0)]  # 1 -> 8 of 10, then 5 -> 8
