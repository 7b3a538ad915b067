"""Seed tasks: the identity bootstrap, reading the reference's seed tasks files, importing them through validation."""

from __future__ import annotations

import json

import pytest

from azr.config import Config
from azr.errors import AzrError
from azr.store import TaskStore
from azr.tasks.seed_tasks import (
    IDENTITY_PROGRAM,
    identity_seed_tasks,
    import_seed_tasks,
    load_seed_tasks_file,
)
from azr.types import TaskType
from fakes import FakeExecutor

D, A, IND = TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION


def test_identity_seed_tasks_without_executor():
    d, a, i = identity_seed_tasks()
    assert (d.type, a.type, i.type) == (D, A, IND)
    assert d.program == a.program == i.program == IDENTITY_PROGRAM
    assert d.inputs == ('"Hello world"',) and d.outputs == ("'Hello world'",)
    assert len(i.inputs) == 6 and i.message == "returns its input" and i.outputs[1] == "42"
    assert {t.origin for t in (d, a, i)} == {"seed"}


def test_identity_seed_tasks_outputs_match_the_real_executor(executor):
    assert identity_seed_tasks(executor) == identity_seed_tasks()


def test_load_reference_formats(shared_data):
    io = load_seed_tasks_file(shared_data / "azr_seeds" / "7b_seed_io.jsonl")
    code_f = load_seed_tasks_file(shared_data / "azr_seeds" / "7b_code_f_seed_io.jsonl")
    assert len(io) == len(code_f) == 256
    assert not any(r.problem or r.induction for r in io) and all(
        r.induction and not r.problem for r in code_f
    )
    assert io[0].program == IDENTITY_PROGRAM and io[0].inputs == ('"Hello world"',)
    assert len(code_f[1].inputs) == len(code_f[1].outputs) == 10 and code_f[1].message


def _write(tmp_path, rows):
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_import_with_fake_executor_counts_everything(tmp_path):
    rev = "def f(s):\n    return s[::-1]"
    rows = [
        {"snippet": rev, "input": "'abc'", "output": "'cba'", "imports": []},
        {
            "snippet": "def f(s):  # same program\n    return s[::-1]",
            "input": "'abc'",
            "output": "'cba'",
            "imports": [],
        },
        {"snippet": rev, "input": "'xy'", "output": "'WRONG in file'", "imports": []},
        {"snippet": "def f(x):\n    return 1 / x", "input": "0", "output": "", "imports": []},
        {"snippet": "import random\ndef f(x):\n    return x", "input": "1", "output": "1", "imports": []},
        {"snippet": rev, "input": "[1, 2", "output": "", "imports": []},
        "{not json",
        {"no_snippet": 1},
        {
            "snippet": rev,
            "inputs": ["'ab'", "'cd'", "'ef'"],
            "outputs": [],
            "message": "reverses",
            "imports": [],
        },
        {"snippet": rev, "inputs": ["'ab'", "1"], "outputs": [], "message": "reverses", "imports": []},
    ]
    seen = []
    with TaskStore(tmp_path) as store:
        rep = import_seed_tasks(
            FakeExecutor(), store, _write(tmp_path, rows), _cfg(2), progress=lambda a, b: seen.append((a, b))
        )
        assert store.counts() == {"deduction": 2, "abduction": 2, "induction": 1}
        assert {t.origin for t in store.iter_tasks()} == {"imported"}
        assert next(store.iter_tasks(D)).outputs == ("'cba'",)
    assert (rep.rows_read, rep.accepted, rep.duplicates, rep.output_differs) == (10, 4, 1, 1)
    assert dict(rep.rejected) == {"error": 1, "rejected": 1, "bad_input": 1, "bad_json": 1, "malformed": 1,
                                  "too_few_valid_inputs": 1}  # fmt: skip
    assert seen[-1] == (10, 10)
    assert "rows 10, accepted 4" in rep.summary()


def _cfg(min_valid: int) -> Config:
    import dataclasses

    base = Config()
    return dataclasses.replace(
        base, selfplay=dataclasses.replace(base.selfplay, induction_min_valid=min_valid)
    )


def test_missing_seed_tasks_file_is_a_clear_error(tmp_path):
    with pytest.raises(AzrError, match="not found"):
        load_seed_tasks_file(tmp_path / "nope.jsonl")


def test_import_reference_io_file_with_real_executor(executor, shared_data, tmp_path):
    """All 256 rows of 7b_seed_io.jsonl: faulty rows (numpy/cv2 imports, os/open, non-literal inputs, a result
    over the output cap, an exception) are rejected and counted; a second import adds nothing."""
    path = shared_data / "azr_seeds" / "7b_seed_io.jsonl"
    with TaskStore(tmp_path) as store:
        rep = import_seed_tasks(executor, store, path, Config())
        assert rep.rows_read == 256 and rep.accepted + sum(rep.rejected.values()) == 256
        assert rep.accepted >= 230 and rep.rejected["rejected"] >= 2 and rep.rejected["bad_input"] >= 3
        assert store.count(D) == store.count(A) == rep.accepted - rep.duplicates
        again = import_seed_tasks(executor, store, path, Config())
        assert again.duplicates == again.accepted and not again.added
        assert store.count(D) == rep.accepted - rep.duplicates


def test_import_reference_induction_rows_with_real_executor(executor, shared_data, tmp_path):
    lines = (shared_data / "azr_seeds" / "7b_code_f_seed_io.jsonl").read_text().splitlines()
    path = _write(tmp_path, [*lines[:15], lines[41]])  # line 42 has an empty message
    with TaskStore(tmp_path) as store:
        rep = import_seed_tasks(executor, store, path, Config())
        assert rep.rows_read == 16 and rep.accepted >= 12
        assert rep.rejected["no_message"] == 1
        assert rep.rejected["too_few_valid_inputs"] >= 1  # row 1 (the identity, 6 inputs) has fewer than 10
        for t in store.iter_tasks(IND):
            assert len(set(t.inputs)) == len(t.inputs) >= 10 and len(t.outputs) == len(t.inputs) and t.message


@pytest.mark.slow
def test_import_full_reference_induction_file(executor, shared_data, tmp_path):
    with TaskStore(tmp_path) as store:
        rep = import_seed_tasks(
            executor, store, shared_data / "azr_seeds" / "7b_code_f_seed_io.jsonl", Config()
        )
        assert rep.rows_read == 256 and store.count(IND) == rep.accepted - rep.duplicates >= 200


def test_reference_format_export_round_trips_through_import(executor, shared_data, tmp_path):
    """Import reference rows, export them in the reference format, import into a fresh store: same tasks."""
    lines = (shared_data / "azr_seeds" / "7b_seed_io.jsonl").read_text().splitlines()[:30]
    with TaskStore(tmp_path / "a") as first:
        import_seed_tasks(executor, first, _write(tmp_path, lines), Config())
        first.export_jsonl(tmp_path / "d_seed_io.jsonl", type=D, fmt="reference")
        want = [(t.program, t.inputs, t.outputs) for t in first.iter_tasks(D)]
    with TaskStore(tmp_path / "b") as second:
        rep = import_seed_tasks(executor, second, tmp_path / "d_seed_io.jsonl", Config())
        assert not rep.rejected and rep.output_differs == 0
        assert [(t.program, t.inputs, t.outputs) for t in second.iter_tasks(D)] == want


def test_a_bare_seed_tasks_file_name_is_found_in_the_shipped_recipes(tmp_path, monkeypatch):
    from azr.config import RECIPES_DIR
    from azr.tasks.seed_tasks import resolve_seed_tasks_file

    monkeypatch.chdir(tmp_path)  # no cpu-warmstart.jsonl here
    assert resolve_seed_tasks_file("cpu-warmstart.jsonl") == RECIPES_DIR / "cpu-warmstart.jsonl"
    (tmp_path / "cpu-warmstart.jsonl").write_text("")  # the working directory wins
    assert resolve_seed_tasks_file("cpu-warmstart.jsonl").resolve() == tmp_path / "cpu-warmstart.jsonl"
    with pytest.raises(AzrError, match="not found"):
        resolve_seed_tasks_file("nope.jsonl")


def test_azr_seed_takes_the_seed_tasks_file_under_its_old_flag_too():
    import argparse

    from azr.commands import seed

    parser = argparse.ArgumentParser()
    seed.configure(parser)
    for flag in ("--seed-tasks-file", "--seed-file"):
        assert parser.parse_args(["run", flag, "warm.jsonl"]).seed_tasks_file == "warm.jsonl"
