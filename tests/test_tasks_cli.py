"""``azr tasks``: counts, show, sample, export and import on a small store."""

from __future__ import annotations

import json

import pytest

from azr.cli import main
from azr.store import TaskStore
from azr.tasks.seed_tasks import identity_seed_tasks


@pytest.fixture
def run_dir(tmp_path):
    with TaskStore(tmp_path) as store:
        store.add_tasks(identity_seed_tasks(), 0)
    return tmp_path


def test_counts_show_sample_export(run_dir, capsys, tmp_path):
    assert main(["tasks", "counts", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "deduction  1" in out and "total      3" in out and "max step   0" in out
    assert main(["tasks", "show", "3", "--db", str(run_dir / "tasks.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "#3 induction" in out and "f(42) == 42" in out and "message: returns its input" in out
    assert main(["tasks", "sample", "--type", "abduction", "-n", "3", "--db", str(run_dir)]) == 0
    assert "#2 abduction" in capsys.readouterr().out
    dest = tmp_path / "out.jsonl"
    assert main(["tasks", "export", "--out", str(dest), "--db", str(run_dir), "--type", "induction"]) == 0
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["message"] == "returns its input"


def test_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["tasks", "show", "99", "--db", str(run_dir)]) == 2
    assert main(["tasks", "counts", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no task with id 99" in err and "no task store" in err


def test_import_command(shared_data, tmp_path, capsys):
    lines = (shared_data / "azr_seeds" / "llama_64_seed_io.jsonl").read_text().splitlines()[:12]
    seeds = tmp_path / "s_seed_io.jsonl"
    seeds.write_text("\n".join(lines) + "\n")
    assert main(["tasks", "import", str(seeds), "--db", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "rows 12" in out and "buffers: deduction" in out
    with TaskStore(tmp_path / "run") as store:
        assert 0 < store.count("deduction") == store.count("abduction") < 12  # the eval() row is rejected
