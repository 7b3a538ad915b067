"""bench/ablation.py: the arm x seed plan, one shared base evaluation, adopted runs, and the seeds table at the end."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "ablation.py"


@pytest.fixture(scope="module")
def ablation():
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_ablation", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_runs_every_arm_of_a_seed_before_the_next_seed(ablation):
    runs = ablation.plan(["default", "no-nll"], [1, 2])
    assert [name for name, _ in runs] == ["default-seed1", "no-nll-seed1", "default-seed2", "no-nll-seed2"]
    assert runs[0][1] == ("--training.seed=1",)
    assert runs[3][1] == ("--algorithm.solve_nll_coef=0", "--algorithm.trace_nll_coef=0", "--training.seed=2")
    with pytest.raises(SystemExit, match="arms must be some of default, no-pg, no-nll"):
        ablation.plan(["no-rl"], [1])


def test_the_first_base_evaluation_is_shared_with_every_later_run(ablation, tmp_path):
    first, later = tmp_path / "default-seed1", tmp_path / "no-pg-seed1"
    (first / "evals").mkdir(parents=True)
    (first / "evals" / "base.json").write_text('{"from": "first"}')
    ablation.share_base(tmp_path, first, "sentence")  # after the first run: kept in OUT/base
    ablation.share_base(tmp_path, later, "sentence")  # before a later one: copied in
    assert json.loads((later / "evals" / "base.json").read_text()) == {"from": "first"}
    ablation.share_base(tmp_path, later, "trace")  # no trace-form base yet: nothing to share
    assert not (later / "evals-trace").exists()


def test_adopt_links_a_finished_run_and_refuses_anything_else(ablation, tmp_path):
    old = tmp_path / "learning-J"
    old.mkdir()
    (old / "learning.json").write_text("{}")
    out = tmp_path / "campaign"
    out.mkdir()
    assert ablation.adopt(out, [f"default-seed1={old}"], ["default-seed1"], dry=True) == {
        "default-seed1": old
    }
    assert not (out / "default-seed1").exists()  # a dry run only checks
    ablation.adopt(out, [f"default-seed1={old}"], ["default-seed1"])
    ablation.adopt(out, [f"default-seed1={old}"], ["default-seed1"])  # again: the same link, fine
    assert (out / "default-seed1").resolve() == old.resolve()
    with pytest.raises(SystemExit, match="planned name and a finished run"):
        ablation.adopt(out, [f"default-seed9={old}"], ["default-seed1"])
    with pytest.raises(SystemExit, match="planned name and a finished run"):
        ablation.adopt(out, [f"no-pg-seed1={tmp_path}"], ["no-pg-seed1"])


def _finished(run: Path, gained: int) -> None:
    """A crafted finished bench/learning.py run: base and step 33 on the probe, 10 items."""

    def results(right: list[bool]) -> str:
        recs = [{"bench": "probe", "id": str(i), "correct": [ok]} for i, ok in enumerate(right)]
        return json.dumps({"results": {"probe": {"score": sum(right) / 10}}, "records": recs, "meta": {}})

    (run / "evals").mkdir(parents=True, exist_ok=True)
    (run / "evals" / "base.json").write_text(results([False] * 10))
    (run / "evals" / "step-000033.json").write_text(results([i < gained for i in range(10)]))
    (run / "learning.json").write_text(json.dumps({"selected": 33}))


def test_a_finished_campaign_only_tabulates_its_arms(tmp_path):
    """Runs already finished (two trained here, one adopted) are not trained again; the end is bench/seeds.py
    over the arms that have runs, arms grouped by name."""
    out = tmp_path / "campaign"
    _finished(out / "default-seed1", 2)
    _finished(out / "no-pg-seed1", 6)
    _finished(tmp_path / "older", 4)
    argv = [sys.executable, str(BENCH), "--out", str(out), "--seeds", "1,2", "--arms", "default,no-pg"]
    argv += ["--adopt", f"default-seed2={tmp_path / 'older'}", "--config", str(tmp_path / "missing.toml")]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    # no-pg-seed2 is not finished: the campaign trains it, which fails here (no config file) with the resume
    # hint, after giving it the shared base evaluation
    assert r.returncode != 0 and "rerun the same command to resume" in r.stderr + r.stdout
    assert "no-pg-seed2" in r.stdout and "default-seed1 " not in r.stdout
    assert (out / "no-pg-seed2" / "evals" / "base.json").read_text() == (
        out / "base/evals/base.json"
    ).read_text()
    _finished(out / "no-pg-seed2", 6)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "seeds.json").read_text())
    assert set(result["arms"]) == {"default", "no-pg"} and len(result["arms"]["default"]) == 2
    assert result["results"]["default"]["probe"]["mean"] == pytest.approx(30.0)  # 20 and 40 points
    assert result["results"]["no-pg"]["probe"]["mean"] == pytest.approx(60.0)


def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path):
    argv = [sys.executable, str(BENCH), "--out", str(tmp_path / "c"), "--seeds", "3", "--arms", "no-pg"]
    r = subprocess.run([*argv, "--dry-run", "--demo-think", "trace", "--training.lr=2e-6"], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("$ ")]
    assert len(lines) == 4  # learning in both forms, then seeds in both forms
    assert "--algorithm.policy_gradient=false --training.seed=3 --training.lr=2e-6" in lines[0]
    assert "--demo-think trace" in lines[1] and "--base-demo-think sentence" in lines[3]
    assert not (tmp_path / "c").exists()  # nothing written, not even the campaign's directory
