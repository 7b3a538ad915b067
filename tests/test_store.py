"""The SQLite task store: dedup, sampling, the buffer cap and its rewind, rollout log, crash consistency under
SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from azr.store import DB_NAME, RolloutRow, TaskStore, content_hash, store_path
from azr.types import Task, TaskType

D, A, IND = TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION


def tri(i: int, kind: TaskType = D, origin: str = "proposal") -> Task:
    return Task(kind, f"def f(x):\n    return x + {i}", (str(i),), (str(2 * i),), origin=origin)


@pytest.fixture
def store(tmp_path):
    with TaskStore(tmp_path) as s:
        yield s


def test_store_path_and_wal(tmp_path):
    assert store_path(tmp_path) == tmp_path / DB_NAME
    assert store_path(tmp_path / "x.sqlite") == tmp_path / "x.sqlite"
    with TaskStore(tmp_path) as s:
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / DB_NAME).is_file()


def test_round_trip_and_counts(store):
    t = Task(IND, "def f(s):\n    return s", ("'a'", "'b'"), ("'a'", "'b'"), "returns it", origin="seed")
    assert store.add_tasks([t, tri(1), tri(1, A)], step=3) == 3
    got = store.get(1)
    assert (got.type, got.program, got.inputs, got.outputs, got.message) == (
        IND,
        t.program,
        t.inputs,
        t.outputs,
        t.message,
    )
    assert (got.step, got.origin, got.extra["n_solve_attempts"]) == (3, "seed", 0)
    assert store.counts() == {"deduction": 1, "abduction": 1, "induction": 1}
    assert store.count() == 3 and store.count(D) == 1 and store.get(99) is None


def test_dedup_on_normalised_program_and_inputs_within_a_type(store):
    a = Task(D, "def f(x):\n    return x+1", ("[1,2]",), ("[2]",))
    same = Task(D, "def f(x):  # comment\n    return (x + 1)", ("[1, 2]",), ("[2]",))
    other_input = Task(D, a.program, ("[1, 3]",), ("[2]",))
    assert content_hash(D, a.program, a.inputs) == content_hash(D, same.program, same.inputs)
    assert store.add_tasks([a, same], 0) == 1
    assert store.add_tasks([same], 1) == 0 and store.contains(same)
    assert store.add_tasks([other_input, Task(A, *[a.program, a.inputs, a.outputs])], 1) == 2


def test_reference_sampling_is_deterministic_and_distinct(store):
    store.add_tasks([tri(i) for i in range(20)], 0)
    for recency in (False, True):
        one = store.sample_references(D, 6, random.Random(5), recency=recency)
        two = store.sample_references(D, 6, random.Random(5), recency=recency)
        assert [t.id for t in one] == [t.id for t in two] and len({t.id for t in one}) == 6
    assert len(store.sample_references(D, 50, random.Random(0))) == 20
    assert store.sample_references(A, 3, random.Random(0)) == []


def test_recency_sampling_prefers_new_tasks(store):
    store.add_tasks([tri(i) for i in range(40)], 0)
    rng = random.Random(1)
    ids = [t.id for _ in range(200) for t in store.sample_references(D, 1, rng, recency=True)]
    assert sum(i > 20 for i in ids) > 1.5 * sum(i <= 20 for i in ids)


def test_solving_samples_newest_first_then_uniform(store):
    store.add_tasks([tri(i) for i in range(10)], 0)
    store.add_tasks([tri(i) for i in range(10, 13)], 4)
    got = store.sample_for_solving(D, 5, 5, random.Random(0))
    assert {t.step for t in got[:3]} == {4} and {t.step for t in got[3:]} == {0}
    assert len({t.id for t in got}) == 5
    again = store.sample_for_solving(D, 5, 5, random.Random(0))
    assert [t.id for t in again] == [t.id for t in got]
    filled = store.sample_for_solving(D, 30, 5, random.Random(0))  # more than stored: repeats
    assert len(filled) == 30 and {t.step for t in filled[:3]} == {4}
    assert store.sample_for_solving(IND, 4, 5, random.Random(0)) == []


def test_solve_stats_accumulate(store):
    store.add_tasks([tri(1), tri(2)], 0)
    store.record_solve_stats(1, 8, 3)
    store.record_solve_stats_many([(1, 8, 1), (2, 4, 4)])
    assert (store.get(1).extra["n_solve_attempts"], store.get(1).extra["n_solved"]) == (16, 4)
    assert store.get(2).extra["n_solved"] == 4


def live(store: TaskStore, kind: TaskType = D) -> list[int]:
    return [t.id for t in store.iter_tasks(kind)]


def test_cap_keeps_the_newest_tasks_per_type(tmp_path):
    """cap 4: after each addition a type holds its 4 newest tasks (by step, then id); seeds get no exemption."""
    with TaskStore(tmp_path, cap=4) as store:
        store.add_tasks([tri(i, origin="seed") for i in range(3)], 0)  # ids 1-3
        store.add_tasks([tri(i) for i in range(10, 13)], 1)  # ids 4-6
        assert live(store) == [3, 4, 5, 6] and store.count(D) == 4
        assert store.add_tasks([tri(i) for i in range(20, 26)], 2) == 6  # ids 7-12: more than the cap
        assert live(store) == [9, 10, 11, 12] and store.counts()["deduction"] == 4
        assert store.add_tasks([tri(1, A)], 2) == 1 and store.count(A) == 1  # per type
        assert {t.id for t in store.sample_references(D, 50, random.Random(0))} == {9, 10, 11, 12}
        assert {t.id for t in store.sample_for_solving(D, 8, 3, random.Random(0))} == {9, 10, 11, 12}
        assert (store.get(1).extra["evicted_at"], store.get(3).extra["evicted_at"]) == (1, 2)
        assert "evicted_at" not in store.get(9).extra
        assert (
            store.contains(tri(0)) and store.add_tasks([tri(0)], 3) == 0
        )  # an evicted task stays a duplicate
        assert store.count() == 5


def test_rewind_restores_the_buffers_of_that_step(tmp_path):
    """Evicted rows are marked, not deleted: rewinding to step s gives back exactly the live set of step s."""
    with TaskStore(tmp_path, cap=3) as store:
        snapshots = {}
        for step in range(1, 6):
            store.add_tasks([tri(step * 10 + i) for i in range(2)], step)
            snapshots[step] = live(store)
        store.rewind(3)
        assert live(store) == snapshots[3] and store.max_step() == 3
        store.add_tasks([tri(99)], 4)  # the run goes on from step 3 and evicts again (ids are never reused)
        assert live(store) == [*snapshots[3][1:], 11]
        store.rewind(2)
        assert live(store) == snapshots[2]
        store.rewind(0)
        assert live(store) == []


def test_explicit_evict_marks_at_the_given_step(store):
    store.add_tasks([tri(i) for i in range(5)], 0)
    assert store.evict(2, step=7, type=D) == 3
    assert live(store) == [4, 5] and store.get(1).extra["evicted_at"] == 7
    assert store.evict(0, step=8) == 0 and store.evict(5, step=8) == 0
    store.rewind(6)
    assert live(store) == [1, 2, 3, 4, 5]


def test_a_version_1_database_is_migrated(tmp_path):
    """A store written before eviction existed (no evicted_at column) opens with every task live."""
    db = sqlite3.connect(str(tmp_path / DB_NAME))
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, program TEXT NOT NULL,"
        " inputs TEXT NOT NULL, outputs TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', hash TEXT NOT NULL,"
        " step INTEGER NOT NULL, origin TEXT NOT NULL, n_solve_attempts INTEGER NOT NULL DEFAULT 0,"
        " n_solved INTEGER NOT NULL DEFAULT 0, UNIQUE (type, hash));"
        "INSERT INTO tasks (type, program, inputs, outputs, hash, step, origin)"
        " VALUES ('deduction', 'def f(x):\n    return x', '[\"1\"]', '[\"1\"]', 'h', 0, 'seed');"
    )
    db.close()
    with TaskStore(tmp_path, cap=2) as store:
        assert store.count(D) == 1 and store.get(1).program == "def f(x):\n    return x"
        assert store._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
        store.add_tasks([tri(1), tri(2)], 1)
        assert live(store) == [2, 3]


def test_a_version_2_rollout_log_gets_outcome_and_flags(tmp_path):
    """Rollouts logged before the safety monitor (no outcome, no flags) read back as unknown and unflagged."""
    db = sqlite3.connect(str(tmp_path / DB_NAME))
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '2');"
        "CREATE TABLE rollouts (id INTEGER PRIMARY KEY AUTOINCREMENT, step INTEGER NOT NULL, role TEXT NOT NULL,"
        " type TEXT NOT NULL, prompt TEXT NOT NULL, reply TEXT NOT NULL, parse_status TEXT NOT NULL, reward REAL,"
        " advantage REAL, timings TEXT NOT NULL DEFAULT '{}', task_id INTEGER);"
        "INSERT INTO rollouts (step, role, type, prompt, reply, parse_status) VALUES (1, 'solve', 'deduction',"
        " 'p', 'r', 'ok');"
    )
    db.close()
    with TaskStore(tmp_path) as store:
        old = store.rollouts()[0]
        assert (old.outcome, old.flags) == (None, [])
        flag = {"category": "escape_sandbox", "rule": "escape-sandbox", "excerpt": "escape the sandbox"}
        store.log_rollouts(
            [RolloutRow(2, "solve", "deduction", "p", "r", "ok", outcome="wrong", flags=[flag])]
        )
        new = store.rollouts(step=2)[0]
        assert (new.outcome, new.flags) == ("wrong", [flag])
        assert store._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)


def test_rollouts_rewind_and_max_step(store):
    assert store.max_step() is None
    rows = [
        RolloutRow(s, "propose", "deduction", "p", "r", "ok", 0.5, -0.1, {"gen": 1.5}, None)
        for s in (1, 2, 3)
    ]
    assert store.log_rollouts([*rows, dict(step=3, role="solve", type="induction", prompt="q", reply="",
                                            parse_status="no_answer_tag", reward=-1.0)]) == 4  # fmt: skip
    store.add_tasks([tri(1)], 1)
    store.add_tasks([tri(2), tri(3)], 3)
    assert store.max_step() == 3
    assert store.rollouts(1)[0] == rows[0] and len(store.rollouts()) == 4
    assert store.rewind(2) == (2, 2)
    assert store.max_step() == 2 and store.count() == 1 and len(store.rollouts()) == 2


def test_export_jsonl(store, tmp_path):
    store.add_tasks([tri(1), tri(2, A)], 0)
    out = tmp_path / "x.jsonl"
    assert store.export_jsonl(out, type=A) == 1
    row = json.loads(out.read_text())
    assert row["type"] == "abduction" and row["inputs"] == ["2"] and row["n_solved"] == 0


def test_failed_batch_leaves_nothing(store):
    bad = Task(D, "p", ("1",), ("1",), origin=None)  # NOT NULL origin violates the schema
    with pytest.raises(sqlite3.IntegrityError):
        store.add_tasks([tri(1), bad], 0)
    assert store.count() == 0


_WRITER = """
import sys
from azr.store import TaskStore
from azr.types import Task, TaskType
s = TaskStore(sys.argv[1])
step = 0
while True:
    batch = [Task(TaskType.INDUCTION, f"def f(x):\\n    return x * {step}", tuple(str(i) for i in range(50)),
                  tuple(str(i * step) for i in range(50)), "m" * 2000) for _ in range(1)]
    batch += [Task(TaskType.DEDUCTION, f"def f(x):\\n    return x - {step * 100 + i}", ("1",), ("0",)) for i in range(100)]
    s.add_tasks(batch, step)
    step += 1
    if step == 3:
        print("ready", flush=True)
"""


def test_sigkill_during_inserts_leaves_a_consistent_database(tmp_path):
    """A writer inserting 101-task batches in a loop is SIGKILLed; every batch is then all-or-nothing."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_WRITER), str(tmp_path)], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with TaskStore(tmp_path) as s:
        assert s._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        per_step = dict(s._db.execute("SELECT step, COUNT(*) FROM tasks GROUP BY step"))
        assert len(per_step) >= 3
        assert set(per_step.values()) == {101}, per_step  # no partial batch
        for t in s.iter_tasks(IND):
            assert len(t.inputs) == len(t.outputs) == 50 and t.message == "m" * 2000


def test_export_is_atomic_and_rejects_unknown_formats(store, tmp_path, monkeypatch):
    """A failed export leaves the previous file whole; an unknown format is a ValueError naming the known ones."""
    import azr.fsutil

    out = tmp_path / "export" / "tasks.jsonl"
    out.parent.mkdir()
    out.write_text("previous\n")
    with pytest.raises(ValueError, match="azr or reference"):
        store.export_jsonl(out, fmt="csv")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(azr.fsutil.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.export_jsonl(out)
    assert out.read_text() == "previous\n" and [p.name for p in out.parent.iterdir()] == ["tasks.jsonl"]
